// Host side of trgnet::aris_losses, the fused ARIS terms of the loss (schemas and CPU kernels in aris_losses.cpp,
// CUDA dispatch in aris_losses_cuda.cpp, shared math in kernels/aris_losses.cuh). The argument checks, the size
// extraction and the output allocation are done once, here, for both implementations: they differ only in the
// kernels they run.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace trgnet {

// The slot inputs both directions take, in schema order (the forward's segment_video, segment_start and log weights
// apart).
struct ArisLossesSlots {
  at::Tensor frame_segment, segment_count, segment_valid, segment_label, unit_embeddings, logit_scale,
      absolute_weight, relative_weight;
};

// The tensor inputs of the forward, in schema order; head_weight (D, C) and head_bias (D,) are undefined tensors
// without the feature head.
struct ArisLossesInputs {
  at::Tensor features;
  ArisLossesSlots slots;
  at::Tensor segment_video, segment_start, absolute_log_weight, relative_log_weight, head_weight, head_bias;
};

// The saved outputs of the forward the backward takes, and the head's weight (undefined without the head; then
// segment_means is an empty (0,) tensor).
struct ArisLossesSaved {
  at::Tensor segment_features, row_lse, max_distance, head_weight, segment_means;
};

// What both directions share: the sizes. C: the channels of the (N, C, T) features the op reads (C = D without the
// feature head).
struct ArisLossesSizes {
  const char* op;  // "trgnet::aris_losses" or "trgnet::aris_losses_backward", for error messages
  int64_t N, D, T, M, K, C;
  bool head;
};

// One forward call: terms (2,), segment_features (M, D), row_lse (3, M), max_distance (2,), segment_means (M, C)
// (with the head; else (0,)), in the compute dtype.
struct ArisLossesForwardSetup {
  ArisLossesSizes s;
  at::Tensor terms, segment_features, row_lse, max_distance, segment_means;
};

// One backward call: grad_features (N, C, T) in features_dtype; grad_logit_scale (1,), grad_head_weight (D, C) and
// grad_head_bias (D,) (with the head; else (0,) each) in the compute dtype.
struct ArisLossesBackwardSetup {
  ArisLossesSizes s;
  at::Tensor grad_features, grad_logit_scale, grad_head_weight, grad_head_bias;
};

// An optional schema argument (Tensor?) as a tensor, undefined when absent.
inline at::Tensor defined_or_empty(const std::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); }

// Checks the arguments (TORCH_CHECK naming the op, the argument, what is expected and what was received; every
// tensor on a `device` device, contiguous, every size >= 1; the head's weight and bias both given or neither) and
// reads the sizes. The forward setup allocates its five outputs, the backward setup (which takes the forward's saved
// outputs and the features' dtype) the four gradients.
ArisLossesForwardSetup aris_losses_forward_setup(c10::DeviceType device, const ArisLossesInputs& in);
ArisLossesBackwardSetup aris_losses_backward_setup(c10::DeviceType device, const at::Tensor& grad_terms,
                                                   const ArisLossesSlots& slots, const ArisLossesSaved& saved,
                                                   at::ScalarType features_dtype);

// CPU implementations (the CPU kernels of the op; also called directly by tests/csrc). Arguments as the schemas of
// aris_losses.cpp.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> aris_losses_forward_cpu(
    const at::Tensor& features, const at::Tensor& frame_segment, const at::Tensor& segment_video,
    const at::Tensor& segment_start, const at::Tensor& segment_count, const at::Tensor& segment_valid,
    const at::Tensor& segment_label, const at::Tensor& unit_embeddings, const at::Tensor& logit_scale,
    const at::Tensor& absolute_weight, const at::Tensor& absolute_log_weight, const at::Tensor& relative_weight,
    const at::Tensor& relative_log_weight, const std::optional<at::Tensor>& head_weight,
    const std::optional<at::Tensor>& head_bias);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> aris_losses_backward_cpu(
    const at::Tensor& grad_terms, const at::Tensor& frame_segment, const at::Tensor& segment_count,
    const at::Tensor& segment_valid, const at::Tensor& segment_label, const at::Tensor& unit_embeddings,
    const at::Tensor& logit_scale, const at::Tensor& absolute_weight, const at::Tensor& relative_weight,
    const at::Tensor& segment_features, const at::Tensor& row_lse, const at::Tensor& max_distance,
    const std::optional<at::Tensor>& head_weight, const at::Tensor& segment_means, at::ScalarType features_dtype);

}  // namespace trgnet
