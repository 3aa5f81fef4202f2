// Host-side declarations of the trgnet::linear_attention ops (schemas in linear_attention.cpp).
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace trgnet {

// Largest head dims the CUDA kernels take (kernels/linear_attention.cuh: la::kMaxHeadDim).
constexpr int64_t kLinearAttentionMaxHeadDim = 64;

// Accumulator / state dtype for an input dtype: double for double, float otherwise.
at::ScalarType linear_attention_state_dtype(at::ScalarType input);

// Argument checks shared by the CPU and CUDA implementations (TORCH_CHECK naming the argument,
// expected and received shape / dtype / device / contiguity).
void check_linear_attention_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const std::optional<at::Tensor>& key_mask);
void check_linear_attention_backward_inputs(const char* op, const at::Tensor& grad_out, const at::Tensor& q,
                                            const at::Tensor& k, const at::Tensor& v,
                                            const std::optional<at::Tensor>& key_mask, const at::Tensor& kv_state,
                                            const at::Tensor& key_sum);

// CPU implementations (also callable directly from C++, e.g. the ctest).
// Returns (out (N,T,H,E), kv_state (N,H,D,E), key_sum (N,H,D)); key_sum excludes eps.
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_cpu(const at::Tensor& q, const at::Tensor& k,
                                                                    const at::Tensor& v,
                                                                    const std::optional<at::Tensor>& key_mask,
                                                                    double eps);
// Returns (grad_q, grad_k, grad_v).
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& key_mask, const at::Tensor& kv_state, const at::Tensor& key_sum, double eps);

}  // namespace trgnet
