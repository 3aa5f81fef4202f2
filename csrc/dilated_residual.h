// Host side of trgnet::dilated_residual, the fused dilated residual layer (schemas and CPU kernels in
// dilated_residual.cpp, CUDA dispatch in dilated_residual_cuda.cpp, math in kernels/dilated_residual.cuh). The
// argument checks, the size extraction and the output allocation are done once, here, for both implementations:
// they differ only in the kernels they run.
#pragma once

#include <optional>
#include <tuple>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

namespace trgnet {

// The 4 weights and biases, in schema order (conv_weight, conv_bias, conv_out_weight, conv_out_bias).
constexpr int kDilatedResidualWeights = 4;

// What both directions share: the sizes and the scalars.
struct DilatedResidualSizes {
  const char* op;  // "trgnet::dilated_residual" or "trgnet::dilated_residual_backward", for error messages
  int64_t B, C, T, N;  // N sequences (B without cu_seqlens)
  int64_t dilation;
  double dropout;
};

// One backward call: grad_x and the 4 parameter gradients.
struct DilatedResidualBackwardSetup {
  DilatedResidualSizes s;
  at::Tensor grad_x;
  std::vector<at::Tensor> grad_weights;  // 4, like the weights
};

using DilatedResidualGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
DilatedResidualGrads dilated_residual_grads(const DilatedResidualBackwardSetup& b);

// Checks the arguments (TORCH_CHECK naming the op, the argument, what is expected and what was received; every
// tensor on a `device` device, contiguous) and reads the sizes. The forward setup allocates out, the backward
// setup grad_x and the 4 gradients (`zero_outputs`: out, grad_x zero-filled).
std::pair<DilatedResidualSizes, at::Tensor> dilated_residual_forward_setup(
    c10::DeviceType device, bool zero_outputs, const at::Tensor& x, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& cu_seqlens, const std::vector<at::Tensor>& weights,
    const std::optional<at::Tensor>& dropout_seed, int64_t dilation, double dropout);
DilatedResidualBackwardSetup dilated_residual_backward_setup(
    c10::DeviceType device, bool zero_outputs, const at::Tensor& grad_out, const at::Tensor& x,
    const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& cu_seqlens,
    const std::vector<at::Tensor>& weights, const std::optional<at::Tensor>& dropout_seed, int64_t dilation,
    double dropout);

// CPU implementations (the CPU kernels of the op; also called directly by tests/csrc). Arguments as the schemas of
// dilated_residual.cpp.
at::Tensor dilated_residual_forward_cpu(const at::Tensor& x, const std::optional<at::Tensor>& mask,
                                        const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight,
                                        const at::Tensor& conv_bias, const at::Tensor& conv_out_weight,
                                        const at::Tensor& conv_out_bias, const std::optional<at::Tensor>& dropout_seed,
                                        int64_t dilation, double dropout);
DilatedResidualGrads dilated_residual_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight, const at::Tensor& conv_bias,
    const at::Tensor& conv_out_weight, const at::Tensor& conv_out_bias, const std::optional<at::Tensor>& dropout_seed,
    int64_t dilation, double dropout);

}  // namespace trgnet
