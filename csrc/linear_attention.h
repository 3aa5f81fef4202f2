// Host side of trgnet::linear_attention (schemas and CPU kernels in linear_attention.cpp, CUDA dispatch in
// linear_attention_cuda.cpp, math in kernels/linear_attention.cuh). The argument checks, the size
// extraction and the output allocation are done once, here, for both implementations: they differ only in
// the kernels they run.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

namespace trgnet {

// One forward call: q, k (N, T, H, D), v (N, T, H, E), key_mask (N, T) bool or none.
struct LinearAttentionForwardSetup {
  const char* op;  // "trgnet::linear_attention", for error messages
  int64_t N, T, H, D, E;
  const bool* key_mask;  // nullptr without a mask
  // outputs, allocated and not initialised: out (N, T, H, E) in q's dtype; kv_state (N, H, D, E) and
  // key_sum (N, H, D) in the state dtype (float64 for float64 inputs, else float32; key_sum excludes eps)
  at::Tensor out, kv_state, key_sum;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> outputs() const { return {out, kv_state, key_sum}; }
};

// One backward call: the forward's arguments plus grad_out (N, T, H, E) and the saved kv_state, key_sum.
struct LinearAttentionBackwardSetup {
  const char* op;  // "trgnet::linear_attention_backward"
  int64_t N, T, H, D, E;
  const bool* key_mask;  // nullptr without a mask
  at::Tensor grad_q, grad_k, grad_v;  // allocated like q, k, v, not initialised
  std::tuple<at::Tensor, at::Tensor, at::Tensor> outputs() const { return {grad_q, grad_k, grad_v}; }
};

// Checks the arguments (TORCH_CHECK naming the op, the argument, what is expected and what was received;
// every tensor on a `device` device), reads the sizes and allocates the outputs.
LinearAttentionForwardSetup linear_attention_forward_setup(c10::DeviceType device, const at::Tensor& q,
                                                           const at::Tensor& k, const at::Tensor& v,
                                                           const std::optional<at::Tensor>& key_mask);
LinearAttentionBackwardSetup linear_attention_backward_setup(c10::DeviceType device, const at::Tensor& grad_out,
                                                             const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v,
                                                             const std::optional<at::Tensor>& key_mask,
                                                             const at::Tensor& kv_state, const at::Tensor& key_sum);

// CPU implementations (the CPU kernels of the op; also called directly by tests/csrc).
// Returns (out (N, T, H, E), kv_state (N, H, D, E), key_sum (N, H, D)); key_sum excludes eps.
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                                                            const at::Tensor& v,
                                                                            const std::optional<at::Tensor>& key_mask,
                                                                            double eps);
// Returns (grad_q, grad_k, grad_v).
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& key_mask, const at::Tensor& kv_state, const at::Tensor& key_sum, double eps);

}  // namespace trgnet
