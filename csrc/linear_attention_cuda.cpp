// CUDA dispatch of trgnet::linear_attention: checks, allocation, and a call of the plain
// launchers of kernels/linear_attention.cu on the current stream. Compiled in CUDA builds only.
#include "linear_attention.h"

#include <string>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../kernels/linear_attention.h"
#include "cuda_utils.h"

namespace trgnet {
namespace {

void check_cuda_sizes(const char* op, const at::Tensor& q, const at::Tensor& v) {
  TORCH_CHECK(q.is_cuda(), op, ": argument 'q': expected a CUDA tensor, got device ", q.device());
  // numbers as strings: see checks.h
  TORCH_CHECK(q.size(3) <= kLinearAttentionMaxHeadDim && v.size(3) <= kLinearAttentionMaxHeadDim, op,
              ": the CUDA kernels support head dims D, E <= ", std::to_string(kLinearAttentionMaxHeadDim),
              ", got D = ", std::to_string(q.size(3)), " (q), E = ", std::to_string(v.size(3)), " (v)");
}

at::Tensor workspace(const at::Tensor& q, const at::Tensor& v) {
  const int64_t elems = la::workspace_elems(q.size(0), q.size(1), q.size(2), q.size(3), v.size(3));
  return at::empty({elems}, q.options().dtype(linear_attention_state_dtype(q.scalar_type())));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_cuda(const at::Tensor& q, const at::Tensor& k,
                                                                     const at::Tensor& v,
                                                                     const std::optional<at::Tensor>& key_mask,
                                                                     double eps) {
  const char* op = "trgnet::linear_attention";
  check_linear_attention_inputs(op, q, k, v, key_mask);
  check_cuda_sizes(op, q, v);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t N = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), E = v.size(3);
  const auto state_opts = q.options().dtype(linear_attention_state_dtype(q.scalar_type()));
  at::Tensor out = at::empty({N, T, H, E}, q.options());
  at::Tensor kv = at::empty({N, H, D, E}, state_opts);
  at::Tensor ks = at::empty({N, H, D}, state_opts);
  at::Tensor ws = workspace(q, v);
  const bool* mask = key_mask.has_value() ? key_mask->data_ptr<bool>() : nullptr;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "linear_attention_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = linear_attention_forward(cptr<scalar_t>(q), cptr<scalar_t>(k), cptr<scalar_t>(v), mask, N, T, H, D, E, eps,
                                   mptr<scalar_t>(out), kv.data_ptr<acc_t>(), ks.data_ptr<acc_t>(),
                                   ws.data_ptr<acc_t>(), stream);
  });
  check_launch(op, err);
  return {out, kv, ks};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& key_mask, const at::Tensor& kv_state, const at::Tensor& key_sum, double eps) {
  const char* op = "trgnet::linear_attention_backward";
  check_linear_attention_backward_inputs(op, grad_out, q, k, v, key_mask, kv_state, key_sum);
  check_cuda_sizes(op, q, v);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t N = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), E = v.size(3);
  at::Tensor dq = at::empty(q.sizes(), q.options());
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  at::Tensor ws = workspace(q, v);
  const bool* mask = key_mask.has_value() ? key_mask->data_ptr<bool>() : nullptr;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "linear_attention_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = linear_attention_backward(cptr<scalar_t>(grad_out), cptr<scalar_t>(q), cptr<scalar_t>(k),
                                    cptr<scalar_t>(v), mask, kv_state.data_ptr<acc_t>(), key_sum.data_ptr<acc_t>(),
                                    N, T, H, D, E, eps, mptr<scalar_t>(dq), mptr<scalar_t>(dk), mptr<scalar_t>(dv),
                                    ws.data_ptr<acc_t>(), stream);
  });
  check_launch(op, err);
  return {dq, dk, dv};
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("linear_attention", &trgnet::linear_attention_cuda);
  m.impl("linear_attention_backward", &trgnet::linear_attention_backward_cuda);
}
