// Host side of trgnet::batch_norm_relu, the fused BatchNorm (batch statistics) + residual + ReLU (schemas and CPU
// kernels in batch_norm_relu.cpp, CUDA dispatch in batch_norm_relu_cuda.cpp, math in kernels/batch_norm_relu.cuh).
// The argument checks, the size extraction and the output allocation are done once, here, for both
// implementations: they differ only in the kernels they run.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

namespace trgnet {

// What both directions share: the sizes and eps.
struct BatchNormReluSizes {
  const char* op;  // "trgnet::batch_norm_relu" or "trgnet::batch_norm_relu_backward", for error messages
  int64_t N, C, T, V;
  double eps;
  bool empty() const { return N * C * T * V == 0; }  // x has no element: no kernel runs
};

// One forward call: out (N, C, T, V) in x's dtype, mean and var (C,) in the state dtype.
struct BatchNormReluForwardSetup {
  BatchNormReluSizes s;
  at::Tensor out, mean, var;
};

// One backward call: grad_x, grad_residual ((N, C, T, V), or an empty (0,) tensor without residual_grad) in x's
// dtype, grad_weight and grad_bias (C,) in the state dtype.
struct BatchNormReluBackwardSetup {
  BatchNormReluSizes s;
  bool residual_grad;
  at::Tensor grad_x, grad_residual, grad_weight, grad_bias;
};

using BatchNormReluOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using BatchNormReluGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Checks the arguments (TORCH_CHECK naming the op, the argument, what is expected and what was received; every
// tensor on a `device` device, contiguous; the rules of trgnet_fast/ops/batch_norm_relu/validation.py) and reads
// the sizes. The forward setup allocates out, mean and var, the backward setup the 4 gradients (uninitialised; mean,
// var, grad_weight and grad_bias zero-filled when x has no element, which no kernel writes).
BatchNormReluForwardSetup batch_norm_relu_forward_setup(c10::DeviceType device, const at::Tensor& x,
                                                        const std::optional<at::Tensor>& residual,
                                                        const std::optional<at::Tensor>& frame_mask,
                                                        const at::Tensor& weight, const at::Tensor& bias, double eps);
BatchNormReluBackwardSetup batch_norm_relu_backward_setup(c10::DeviceType device, const at::Tensor& grad_out,
                                                          const at::Tensor& out, const at::Tensor& x,
                                                          const std::optional<at::Tensor>& frame_mask,
                                                          const at::Tensor& weight, const at::Tensor& mean,
                                                          const at::Tensor& var, double eps, bool residual_grad);

// CPU implementations (the CPU kernels of the op; also called directly by tests/csrc). Arguments as the schemas of
// batch_norm_relu.cpp.
BatchNormReluOutputs batch_norm_relu_forward_cpu(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                                 const std::optional<at::Tensor>& frame_mask, const at::Tensor& weight,
                                                 const at::Tensor& bias, double eps);
BatchNormReluGrads batch_norm_relu_backward_cpu(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& x,
                                                const std::optional<at::Tensor>& frame_mask, const at::Tensor& weight,
                                                const at::Tensor& mean, const at::Tensor& var, double eps,
                                                bool residual_grad);

}  // namespace trgnet
