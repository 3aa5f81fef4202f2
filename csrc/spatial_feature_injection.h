// Host side of trgnet::spatial_feature_injection, the fused SFI (schemas and CPU kernels in
// spatial_feature_injection.cpp, CUDA dispatch in spatial_feature_injection_cuda.cpp, math in
// kernels/spatial_feature_injection.cuh). The argument checks, the size extraction and the output allocation are
// done once, here, for both implementations: they differ only in the kernels they run.
#pragma once

#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

namespace trgnet {

// The 8 weights and biases, in schema order (conv_s_weight, conv_s_bias, fusion_weight, fusion_bias, ff1_weight,
// ff1_bias, ff2_weight, ff2_bias).
constexpr int kSpatialFeatureInjectionWeights = 8;

// What both directions share: the sizes, group's strides and the dropout.
struct SpatialFeatureInjectionSizes {
  const char* op;  // "trgnet::spatial_feature_injection" or "..._backward", for error messages
  int64_t N, C, T, G, V;
  int64_t group_strides[4];  // (N, G, T, V) strides of group, elements
  double dropout;
};

// One backward call: grad_group (contiguous (N, G, T, V)), grad_h and the 8 parameter gradients.
struct SpatialFeatureInjectionBackwardSetup {
  SpatialFeatureInjectionSizes s;
  at::Tensor grad_group, grad_h;
  std::vector<at::Tensor> grad_weights;  // 8, like the weights
};

using SpatialFeatureInjectionGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                                at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
SpatialFeatureInjectionGrads spatial_feature_injection_grads(const SpatialFeatureInjectionBackwardSetup& b);

// Checks the arguments (TORCH_CHECK naming the op, the argument, what is expected and what was received; every
// tensor on a `device` device; every tensor but group contiguous, group any strides) and reads the sizes. The
// forward setup allocates out, the backward setup grad_group, grad_h and the 8 gradients (uninitialised).
std::pair<SpatialFeatureInjectionSizes, at::Tensor> spatial_feature_injection_forward_setup(
    c10::DeviceType device, const at::Tensor& group, const at::Tensor& h, const std::optional<at::Tensor>& mask,
    const std::vector<at::Tensor>& weights, const std::optional<at::Tensor>& dropout_seed, double dropout);
SpatialFeatureInjectionBackwardSetup spatial_feature_injection_backward_setup(
    c10::DeviceType device, const at::Tensor& grad_out, const at::Tensor& group, const at::Tensor& h,
    const std::optional<at::Tensor>& mask, const std::vector<at::Tensor>& weights,
    const std::optional<at::Tensor>& dropout_seed, double dropout);

// CPU implementations (the CPU kernels of the op; also called directly by tests/csrc). Arguments as the schemas of
// spatial_feature_injection.cpp.
at::Tensor spatial_feature_injection_forward_cpu(
    const at::Tensor& group, const at::Tensor& h, const std::optional<at::Tensor>& mask,
    const at::Tensor& conv_s_weight, const at::Tensor& conv_s_bias, const at::Tensor& fusion_weight,
    const at::Tensor& fusion_bias, const at::Tensor& ff1_weight, const at::Tensor& ff1_bias,
    const at::Tensor& ff2_weight, const at::Tensor& ff2_bias, const std::optional<at::Tensor>& dropout_seed,
    double dropout);
SpatialFeatureInjectionGrads spatial_feature_injection_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& group, const at::Tensor& h, const std::optional<at::Tensor>& mask,
    const at::Tensor& conv_s_weight, const at::Tensor& conv_s_bias, const at::Tensor& fusion_weight,
    const at::Tensor& fusion_bias, const at::Tensor& ff1_weight, const at::Tensor& ff1_bias,
    const at::Tensor& ff2_weight, const at::Tensor& ff2_bias, const std::optional<at::Tensor>& dropout_seed,
    double dropout);

}  // namespace trgnet
