// CUDA dispatch of trgnet::adaptive_graph_conv: checks, allocation, and a call of the plain
// launchers of kernels/adaptive_graph_conv.cu on the current stream. CUDA builds only.
#include "adaptive_graph_conv.h"

#include <string>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../kernels/adaptive_graph_conv.cuh"
#include "../kernels/adaptive_graph_conv.h"
#include "checks.h"
#include "cuda_utils.h"

namespace trgnet {
namespace {

size_t acc_bytes(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? sizeof(double) : sizeof(float); }

void check_cuda_sizes(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), op, ": argument 'x': expected a CUDA tensor, got device ", x.device());
  // numbers as strings: see checks.h
  TORCH_CHECK(x.size(3) <= agc::kMaxJoints, op, ": the CUDA kernels support V <= ", std::to_string(agc::kMaxJoints),
              " joints, got V = ", std::to_string(x.size(3)), " (x)");
  TORCH_CHECK(agc::supported(x.size(1), x.size(3), acc_bytes(x)), op, ": V = ", std::to_string(x.size(3)),
              " exceeds the shared memory of the CUDA kernels (", std::to_string(agc::kSmemBudget),
              " bytes) for dtype ", x.scalar_type());
}

at::Tensor adaptive_graph_conv_cuda(const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                                    const at::Tensor& beta, const at::Tensor& channel_graph,
                                    const at::Tensor& joint_graph) {
  const char* op = "trgnet::adaptive_graph_conv";
  check_adaptive_graph_conv_inputs(op, x, p, q, beta, channel_graph, joint_graph);
  check_cuda_sizes(op, x);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  at::Tensor out = at::empty(x.sizes(), x.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adaptive_graph_conv_cuda", [&] {
    err = adaptive_graph_conv_forward(cptr<scalar_t>(x), cptr<scalar_t>(p), cptr<scalar_t>(q), cptr<scalar_t>(beta),
                                      cptr<scalar_t>(channel_graph), cptr<scalar_t>(joint_graph), N, C, T, V,
                                      mptr<scalar_t>(out), stream);
  });
  check_launch(op, err);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> adaptive_graph_conv_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& p, const at::Tensor& q, const at::Tensor& beta,
    const at::Tensor& channel_graph, const at::Tensor& joint_graph) {
  const char* op = "trgnet::adaptive_graph_conv_backward";
  check_adaptive_graph_conv_backward_inputs(op, grad_out, x, p, q, beta, channel_graph, joint_graph);
  check_cuda_sizes(op, x);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  const at::ScalarType acc_dtype = checks::accumulator_dtype(x.scalar_type());
  AdaptiveGraphConvGrads d = empty_adaptive_graph_conv_grads(x, p, q, beta, channel_graph, joint_graph);
  at::Tensor ws = at::empty({agc::backward_workspace_elems(N, C, T, V, acc_bytes(x))}, x.options().dtype(acc_dtype));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adaptive_graph_conv_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = adaptive_graph_conv_backward(cptr<scalar_t>(grad_out), cptr<scalar_t>(x), cptr<scalar_t>(p),
                                       cptr<scalar_t>(q), cptr<scalar_t>(beta), cptr<scalar_t>(channel_graph),
                                       cptr<scalar_t>(joint_graph), N, C, T, V, mptr<scalar_t>(d.x),
                                       mptr<scalar_t>(d.p), mptr<scalar_t>(d.q), mptr<scalar_t>(d.beta),
                                       mptr<scalar_t>(d.channel_graph), mptr<scalar_t>(d.joint_graph),
                                       ws.data_ptr<acc_t>(), stream);
  });
  check_launch(op, err);
  return d.tuple();
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("adaptive_graph_conv", &trgnet::adaptive_graph_conv_cuda);
  m.impl("adaptive_graph_conv_backward", &trgnet::adaptive_graph_conv_backward_cuda);
}
