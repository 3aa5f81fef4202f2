// CUDA dispatch of trgnet::linear_attention: the argument setup of linear_attention.h (shared with the CPU
// implementation), the CUDA kernels' size limits and workspace, and a call of the launchers of
// kernels/linear_attention.h on the current stream. Compiled in CUDA builds only.
#include "linear_attention.h"

#include <string>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../kernels/linear_attention.cuh"
#include "../kernels/linear_attention.h"
#include "cuda_utils.h"

namespace trgnet {
namespace {

// The sizes the CUDA kernels take (the CPU kernels take any).
void check_cuda_limits(const char* op, int64_t D, int64_t E) {
  // numbers as strings: see checks.h
  TORCH_CHECK(D <= la::kMaxHeadDim && E <= la::kMaxHeadDim, op, ": the CUDA kernels support head dims D, E <= ",
              std::to_string(la::kMaxHeadDim), ", got D = ", std::to_string(D), " (q), E = ", std::to_string(E),
              " (v)");
}

// The launchers' workspace (both passes), in the state dtype.
at::Tensor workspace(int64_t N, int64_t T, int64_t H, int64_t D, int64_t E, const at::Tensor& state) {
  return at::empty({la::workspace_elems(N, T, H, D, E)}, state.options());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_forward_cuda(const at::Tensor& q, const at::Tensor& k,
                                                                             const at::Tensor& v,
                                                                             const std::optional<at::Tensor>& key_mask,
                                                                             double eps) {
  LinearAttentionForwardSetup s = linear_attention_forward_setup(c10::DeviceType::CUDA, q, k, v, key_mask);
  check_cuda_limits(s.op, s.D, s.E);
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor ws = workspace(s.N, s.T, s.H, s.D, s.E, s.kv_state);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "linear_attention_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = launch_linear_attention_forward(cptr<scalar_t>(q), cptr<scalar_t>(k), cptr<scalar_t>(v), s.key_mask, s.N,
                                          s.T, s.H, s.D, s.E, eps, mptr<scalar_t>(s.out), s.kv_state.data_ptr<acc_t>(),
                                          s.key_sum.data_ptr<acc_t>(), ws.data_ptr<acc_t>(), stream);
  });
  check_launch(s.op, err);
  return s.outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& key_mask, const at::Tensor& kv_state, const at::Tensor& key_sum, double eps) {
  LinearAttentionBackwardSetup s =
      linear_attention_backward_setup(c10::DeviceType::CUDA, grad_out, q, k, v, key_mask, kv_state, key_sum);
  check_cuda_limits(s.op, s.D, s.E);
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor ws = workspace(s.N, s.T, s.H, s.D, s.E, kv_state);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "linear_attention_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = launch_linear_attention_backward(cptr<scalar_t>(grad_out), cptr<scalar_t>(q), cptr<scalar_t>(k),
                                           cptr<scalar_t>(v), s.key_mask, kv_state.data_ptr<acc_t>(),
                                           key_sum.data_ptr<acc_t>(), s.N, s.T, s.H, s.D, s.E, eps,
                                           mptr<scalar_t>(s.grad_q), mptr<scalar_t>(s.grad_k), mptr<scalar_t>(s.grad_v),
                                           ws.data_ptr<acc_t>(), stream);
  });
  check_launch(s.op, err);
  return s.outputs();
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("linear_attention", &trgnet::linear_attention_forward_cuda);
  m.impl("linear_attention_backward", &trgnet::linear_attention_backward_cuda);
}
