// Host side of trgnet::att_module, the fused AttModule (schemas and CPU kernels in att_module.cpp, CUDA dispatch
// in att_module_cuda.cpp, math in kernels/att_module.cuh). The argument checks, the size extraction and the
// output allocation are done once, here, for both implementations: they differ only in the kernels they run.
#pragma once

#include <optional>
#include <tuple>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

namespace trgnet {

// The 12 weights and biases of the module, in schema order (conv_weight .. conv_out_bias).
constexpr int kAttModuleWeights = 12;

// What both directions share: the sizes, the scalars and the optional inputs (null when absent).
struct AttModuleSizes {
  const char* op;  // "trgnet::att_module" or "trgnet::att_module_backward", for error messages
  int64_t B, C, T, N, H, D;  // N sequences (B without cu_seqlens)
  int64_t dilation;
  double norm_eps, attention_eps, attention_dropout, dropout;
  bool decoder;  // values given
};

// One forward call; outputs allocated (out zero-filled for the CPU kernel, which writes sequence frames only).
struct AttModuleForwardSetup {
  AttModuleSizes s;
  at::Tensor out, norm_stats, kv_state, key_sum;  // (B, C, T); (N, 2, C), (N, H, D, D), (N, H, D) state dtype
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> outputs() const {
    return {out, norm_stats, kv_state, key_sum};
  }
};

// One backward call: grad_x, grad_values ((0,) in encoder mode), the 12 parameter gradients, grad_alpha.
struct AttModuleBackwardSetup {
  AttModuleSizes s;
  at::Tensor grad_x, grad_values;
  std::vector<at::Tensor> grad_weights;  // 12, like the weights
  at::Tensor grad_alpha;                 // 0-dim, state dtype
};

using AttModuleGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                  at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                  at::Tensor>;
AttModuleGrads att_module_grads(const AttModuleBackwardSetup& s);

// Checks the arguments (TORCH_CHECK naming the op, the argument, what is expected and what was received; every
// tensor on a `device` device, contiguous), reads the sizes and allocates the outputs (`zero_outputs`: out,
// grad_x, grad_values zero-filled).
AttModuleForwardSetup att_module_forward_setup(
    c10::DeviceType device, bool zero_outputs, const at::Tensor& x, const std::optional<at::Tensor>& values,
    const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& cu_seqlens,
    const std::vector<at::Tensor>& weights, const at::Tensor& alpha, const std::optional<at::Tensor>& dropout_seed,
    int64_t dilation, int64_t heads, double norm_eps, double attention_eps, double attention_dropout, double dropout);
AttModuleBackwardSetup att_module_backward_setup(
    c10::DeviceType device, bool zero_outputs, const at::Tensor& grad_out, const at::Tensor& x,
    const std::optional<at::Tensor>& values, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& cu_seqlens, const std::vector<at::Tensor>& weights, const at::Tensor& alpha,
    const std::optional<at::Tensor>& dropout_seed, const at::Tensor& norm_stats, const at::Tensor& kv_state,
    const at::Tensor& key_sum, int64_t dilation, int64_t heads, double norm_eps, double attention_eps,
    double attention_dropout, double dropout);

// CPU implementations (the CPU kernels of the op; also called directly by tests/csrc). Arguments as the schemas
// of att_module.cpp.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> att_module_forward_cpu(
    const at::Tensor& x, const std::optional<at::Tensor>& values, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight, const at::Tensor& conv_bias,
    const at::Tensor& query_weight, const at::Tensor& query_bias, const at::Tensor& key_weight,
    const at::Tensor& key_bias, const at::Tensor& value_weight, const at::Tensor& value_bias,
    const at::Tensor& out_weight, const at::Tensor& out_bias, const at::Tensor& conv_out_weight,
    const at::Tensor& conv_out_bias, const at::Tensor& alpha, const std::optional<at::Tensor>& dropout_seed,
    int64_t dilation, int64_t heads, double norm_eps, double attention_eps, double attention_dropout, double dropout);
AttModuleGrads att_module_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const std::optional<at::Tensor>& values,
    const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight,
    const at::Tensor& conv_bias, const at::Tensor& query_weight, const at::Tensor& query_bias,
    const at::Tensor& key_weight, const at::Tensor& key_bias, const at::Tensor& value_weight,
    const at::Tensor& value_bias, const at::Tensor& out_weight, const at::Tensor& out_bias,
    const at::Tensor& conv_out_weight, const at::Tensor& conv_out_bias, const at::Tensor& alpha,
    const std::optional<at::Tensor>& dropout_seed, const at::Tensor& norm_stats, const at::Tensor& kv_state,
    const at::Tensor& key_sum, int64_t dilation, int64_t heads, double norm_eps, double attention_eps,
    double attention_dropout, double dropout);

}  // namespace trgnet
