// CUDA dispatch of trgnet::multiscale_graph_conv: the argument setup of multiscale_graph_conv.h (shared with
// the CPU implementation), the CUDA kernels' size limits and workspace, and a call of the launchers of
// kernels/multiscale_graph_conv.h on the current stream. Compiled in CUDA builds only.
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

size_t acc_bytes(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? sizeof(double) : sizeof(float); }

// The sizes the CUDA kernels take (the CPU kernels take any).
void check_cuda_limits(const char* op, const at::Tensor& x, int64_t C, int64_t V, int64_t O, bool backward) {
  // numbers as strings: see checks.h
  TORCH_CHECK(V <= msgc::kMaxJoints, op, ": the CUDA kernels support V <= ", std::to_string(msgc::kMaxJoints),
              " joints, got V = ", std::to_string(V), " (x)");
  if (backward) {
    TORCH_CHECK(msgc::backward_supported(C, V, O, acc_bytes(x)), op, ": C = ", std::to_string(C), ", C_out = ",
                std::to_string(O), ", V = ", std::to_string(V),
                " exceed the shared memory of the CUDA backward kernel (", std::to_string(msgc::kBackwardSmemBudget),
                " bytes for one frame of X, grad_out and two C x V buffers plus A_s and W_s)");
  }
}

at::Tensor multiscale_graph_conv_forward_cuda(const at::Tensor& x, const at::Tensor& adjacency,
                                              const at::Tensor& weight, const at::Tensor& bias) {
  MultiscaleGraphConvForwardSetup s =
      multiscale_graph_conv_forward_setup(c10::DeviceType::CUDA, x, adjacency, weight, bias);
  check_cuda_limits(s.op, x, s.C, s.V, s.O, false);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "multiscale_graph_conv_forward_cuda", [&] {
    err = launch_multiscale_graph_conv_forward(cptr<scalar_t>(x), cptr<scalar_t>(adjacency), cptr<scalar_t>(weight),
                                               cptr<scalar_t>(bias), s.N, s.C, s.T, s.V, s.S, s.O,
                                               mptr<scalar_t>(s.out), stream);
  });
  check_launch(s.op, err);
  return s.outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multiscale_graph_conv_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& adjacency, const at::Tensor& weight) {
  MultiscaleGraphConvBackwardSetup s =
      multiscale_graph_conv_backward_setup(c10::DeviceType::CUDA, grad_out, x, adjacency, weight);
  check_cuda_limits(s.op, x, s.C, s.V, s.O, true);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor ws =
      at::empty({msgc::backward_workspace_elems(s.N, s.C, s.T, s.V, s.S, s.O, acc_bytes(x))},
                x.options().dtype(checks::accumulator_dtype(x.scalar_type())));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "multiscale_graph_conv_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = launch_multiscale_graph_conv_backward(
        cptr<scalar_t>(grad_out), cptr<scalar_t>(x), cptr<scalar_t>(adjacency), cptr<scalar_t>(weight), s.N, s.C, s.T,
        s.V, s.S, s.O, mptr<scalar_t>(s.grad_x), mptr<scalar_t>(s.grad_adjacency), mptr<scalar_t>(s.grad_weight),
        mptr<scalar_t>(s.grad_bias), ws.data_ptr<acc_t>(), stream);
  });
  check_launch(s.op, err);
  return s.outputs();
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("multiscale_graph_conv", &trgnet::multiscale_graph_conv_forward_cuda);
  m.impl("multiscale_graph_conv_backward", &trgnet::multiscale_graph_conv_backward_cuda);
}
