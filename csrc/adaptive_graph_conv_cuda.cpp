// CUDA dispatch of trgnet::adaptive_graph_conv: the argument setup of adaptive_graph_conv.h (shared with the
// CPU implementation), the CUDA kernels' size limits and workspace, and a call of the launchers of
// kernels/adaptive_graph_conv.h on the current stream. Compiled in CUDA builds only.
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

// The sizes the CUDA kernels take (the CPU kernels take any).
void check_cuda_limits(const char* op, const at::Tensor& x, int64_t C, int64_t V) {
  // numbers as strings: see checks.h
  TORCH_CHECK(V <= agc::kMaxJoints, op, ": the CUDA kernels support V <= ", std::to_string(agc::kMaxJoints),
              " joints, got V = ", std::to_string(V), " (x)");
  TORCH_CHECK(agc::supported(C, V, acc_bytes(x)), op, ": V = ", std::to_string(V),
              " exceeds the shared memory of the CUDA kernels (", std::to_string(agc::kSmemBudget),
              " bytes) for dtype ", x.scalar_type());
}

at::Tensor adaptive_graph_conv_forward_cuda(const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                                            const at::Tensor& beta, const at::Tensor& channel_graph,
                                            const at::Tensor& joint_graph) {
  AdaptiveGraphConvForwardSetup s =
      adaptive_graph_conv_forward_setup(c10::DeviceType::CUDA, x, p, q, beta, channel_graph, joint_graph);
  check_cuda_limits(s.op, x, s.C, s.V);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adaptive_graph_conv_forward_cuda", [&] {
    err = launch_adaptive_graph_conv_forward(cptr<scalar_t>(x), cptr<scalar_t>(p), cptr<scalar_t>(q),
                                             cptr<scalar_t>(beta), cptr<scalar_t>(channel_graph),
                                             cptr<scalar_t>(joint_graph), s.N, s.C, s.T, s.V, mptr<scalar_t>(s.out),
                                             stream);
  });
  check_launch(s.op, err);
  return s.outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> adaptive_graph_conv_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& p, const at::Tensor& q, const at::Tensor& beta,
    const at::Tensor& channel_graph, const at::Tensor& joint_graph) {
  AdaptiveGraphConvBackwardSetup s =
      adaptive_graph_conv_backward_setup(c10::DeviceType::CUDA, grad_out, x, p, q, beta, channel_graph, joint_graph);
  check_cuda_limits(s.op, x, s.C, s.V);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor ws = at::empty({agc::backward_workspace_elems(s.N, s.C, s.T, s.V, acc_bytes(x))},
                                  x.options().dtype(checks::accumulator_dtype(x.scalar_type())));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adaptive_graph_conv_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = launch_adaptive_graph_conv_backward(
        cptr<scalar_t>(grad_out), cptr<scalar_t>(x), cptr<scalar_t>(p), cptr<scalar_t>(q), cptr<scalar_t>(beta),
        cptr<scalar_t>(channel_graph), cptr<scalar_t>(joint_graph), s.N, s.C, s.T, s.V, mptr<scalar_t>(s.grad_x),
        mptr<scalar_t>(s.grad_p), mptr<scalar_t>(s.grad_q), mptr<scalar_t>(s.grad_beta),
        mptr<scalar_t>(s.grad_channel_graph), mptr<scalar_t>(s.grad_joint_graph), ws.data_ptr<acc_t>(), stream);
  });
  check_launch(s.op, err);
  return s.outputs();
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("adaptive_graph_conv", &trgnet::adaptive_graph_conv_forward_cuda);
  m.impl("adaptive_graph_conv_backward", &trgnet::adaptive_graph_conv_backward_cuda);
}
