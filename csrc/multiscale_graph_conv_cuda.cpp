// CUDA dispatch of trgnet::multiscale_graph_conv: checks, allocation, and a call of the plain
// launchers of kernels/multiscale_graph_conv.cu on the current stream. CUDA builds only.
#include "multiscale_graph_conv.h"

#include <string>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../kernels/multiscale_graph_conv.cuh"
#include "../kernels/multiscale_graph_conv.h"
#include "checks.h"
#include "cuda_utils.h"

namespace trgnet {
namespace {

void check_cuda_sizes(const char* op, const at::Tensor& x, const at::Tensor& weight, bool backward) {
  TORCH_CHECK(x.is_cuda(), op, ": argument 'x': expected a CUDA tensor, got device ", x.device());
  // numbers as strings: see checks.h
  TORCH_CHECK(x.size(3) <= msgc::kMaxJoints, op, ": the CUDA kernels support V <= ",
              std::to_string(msgc::kMaxJoints), " joints, got V = ", std::to_string(x.size(3)), " (x)");
  if (backward) {
    const size_t acc = x.scalar_type() == at::kDouble ? sizeof(double) : sizeof(float);
    TORCH_CHECK(msgc::backward_supported(x.size(1), x.size(3), weight.size(0), acc), op,
                ": C = ", std::to_string(x.size(1)), ", C_out = ", std::to_string(weight.size(0)), ", V = ",
                std::to_string(x.size(3)), " exceed the shared memory of the CUDA backward kernel (",
                std::to_string(msgc::kBackwardSmemBudget), " bytes for one frame of X, grad_out and two C x V "
                "buffers plus A_s and W_s)");
  }
}

at::Tensor multiscale_graph_conv_cuda(const at::Tensor& x, const at::Tensor& adjacency, const at::Tensor& weight,
                                      const at::Tensor& bias) {
  const char* op = "trgnet::multiscale_graph_conv";
  check_multiscale_graph_conv_inputs(op, x, adjacency, weight, &bias);
  check_cuda_sizes(op, x, weight, false);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  const int64_t S = adjacency.size(0) / V, O = weight.size(0);
  at::Tensor out = at::empty({N, O, T, V}, x.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "multiscale_graph_conv_cuda", [&] {
    err = multiscale_graph_conv_forward(cptr<scalar_t>(x), cptr<scalar_t>(adjacency), cptr<scalar_t>(weight),
                                        cptr<scalar_t>(bias), N, C, T, V, S, O, mptr<scalar_t>(out), stream);
  });
  check_launch(op, err);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multiscale_graph_conv_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& adjacency, const at::Tensor& weight) {
  const char* op = "trgnet::multiscale_graph_conv_backward";
  check_multiscale_graph_conv_backward_inputs(op, grad_out, x, adjacency, weight);
  check_cuda_sizes(op, x, weight, true);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  const int64_t S = adjacency.size(0) / V, O = weight.size(0);
  const at::ScalarType acc_dtype = checks::accumulator_dtype(x.scalar_type());
  const size_t acc_bytes = acc_dtype == at::kDouble ? sizeof(double) : sizeof(float);
  at::Tensor dx = at::empty(x.sizes(), x.options());
  at::Tensor da = at::empty(adjacency.sizes(), adjacency.options());
  at::Tensor dw = at::empty(weight.sizes(), weight.options());
  at::Tensor db = at::empty({O}, weight.options());
  at::Tensor ws = at::empty({msgc::backward_workspace_elems(N, C, T, V, S, O, acc_bytes)}, x.options().dtype(acc_dtype));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "multiscale_graph_conv_backward_cuda",
                                  [&] {
                                    using acc_t = at::opmath_type<scalar_t>;
                                    err = multiscale_graph_conv_backward(
                                        cptr<scalar_t>(grad_out), cptr<scalar_t>(x), cptr<scalar_t>(adjacency),
                                        cptr<scalar_t>(weight), N, C, T, V, S, O, mptr<scalar_t>(dx),
                                        mptr<scalar_t>(da), mptr<scalar_t>(dw), mptr<scalar_t>(db),
                                        ws.data_ptr<acc_t>(), stream);
                                  });
  check_launch(op, err);
  return {dx, da, dw, db};
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("multiscale_graph_conv", &trgnet::multiscale_graph_conv_cuda);
  m.impl("multiscale_graph_conv_backward", &trgnet::multiscale_graph_conv_backward_cuda);
}
