// Host side of trgnet::frame_losses, the fused per-frame loss terms (schemas and CPU kernels in frame_losses.cpp,
// CUDA dispatch in frame_losses_cuda.cpp, per-frame math in kernels/frame_losses.cuh). The argument checks, the
// size extraction and the output allocation are done once, here, for both implementations: they differ only in
// the kernels they run.
#pragma once

#include <tuple>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

namespace trgnet {

// The 10 tensor inputs of both directions, in schema order.
struct FrameLossesInputs {
  at::Tensor logits, labels, ce_weight, next_frame, previous_frame, pair_weight, boundary_logits, boundary,
      boundary_weight, pos_weight;
};

// What both directions share: the sizes and the scalars.
struct FrameLossesSizes {
  const char* op;  // "trgnet::frame_losses" or "trgnet::frame_losses_backward", for error messages
  int64_t S, N, K, T, R;
  double threshold;
  bool time_axis;
};

// One forward call: terms (3,) and time_lse ((S, N, 2, K), or (0,) without time_axis), in the compute dtype.
struct FrameLossesForwardSetup {
  FrameLossesSizes s;
  at::Tensor terms, time_lse;
};

// One backward call: grad_logits like logits, grad_boundary_logits like boundary_logits.
struct FrameLossesBackwardSetup {
  FrameLossesSizes s;
  at::Tensor grad_logits, grad_boundary_logits;
};

// Checks the arguments (TORCH_CHECK naming the op, the argument, what is expected and what was received; every
// tensor on a `device` device, contiguous, every size >= 1) and reads the sizes. The forward setup allocates
// terms and time_lse, the backward setup (which also checks grad_terms and time_lse) the two gradients.
FrameLossesForwardSetup frame_losses_forward_setup(c10::DeviceType device, const FrameLossesInputs& in,
                                                   double threshold, bool time_axis);
FrameLossesBackwardSetup frame_losses_backward_setup(c10::DeviceType device, const at::Tensor& grad_terms,
                                                     const FrameLossesInputs& in, const at::Tensor& time_lse,
                                                     double threshold, bool time_axis);

// CPU implementations (the CPU kernels of the op; also called directly by tests/csrc). Arguments as the schemas of
// frame_losses.cpp.
std::tuple<at::Tensor, at::Tensor> frame_losses_forward_cpu(
    const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& ce_weight, const at::Tensor& next_frame,
    const at::Tensor& previous_frame, const at::Tensor& pair_weight, const at::Tensor& boundary_logits,
    const at::Tensor& boundary, const at::Tensor& boundary_weight, const at::Tensor& pos_weight, double threshold,
    bool time_axis);
std::tuple<at::Tensor, at::Tensor> frame_losses_backward_cpu(
    const at::Tensor& grad_terms, const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& ce_weight,
    const at::Tensor& next_frame, const at::Tensor& previous_frame, const at::Tensor& pair_weight,
    const at::Tensor& boundary_logits, const at::Tensor& boundary, const at::Tensor& boundary_weight,
    const at::Tensor& pos_weight, const at::Tensor& time_lse, double threshold, bool time_axis);

}  // namespace trgnet
