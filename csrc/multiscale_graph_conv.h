// Host side of trgnet::multiscale_graph_conv (schemas and CPU kernels in multiscale_graph_conv.cpp, CUDA
// dispatch in multiscale_graph_conv_cuda.cpp, math in kernels/multiscale_graph_conv.cuh). The argument
// checks, the size extraction and the output allocation are done once, here, for both implementations: they
// differ only in the kernels they run.
#pragma once

#include <tuple>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

namespace trgnet {

// One forward call: x (N, C, T, V), adjacency (S*V, V), weight (O, S*C), bias (O) (O = C_out).
struct MultiscaleGraphConvForwardSetup {
  const char* op;  // "trgnet::multiscale_graph_conv", for error messages
  int64_t N, C, T, V, S, O;
  at::Tensor out;  // (N, O, T, V) in x's dtype, allocated and not initialised
  at::Tensor outputs() const { return out; }
};

// One backward call: grad_out (N, O, T, V), x, adjacency, weight.
struct MultiscaleGraphConvBackwardSetup {
  const char* op;  // "trgnet::multiscale_graph_conv_backward"
  int64_t N, C, T, V, S, O;
  // allocated like x, adjacency, weight and (O,) in weight's dtype, not initialised
  at::Tensor grad_x, grad_adjacency, grad_weight, grad_bias;
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> outputs() const {
    return {grad_x, grad_adjacency, grad_weight, grad_bias};
  }
};

// Checks the arguments (TORCH_CHECK naming the op, the argument, what is expected and what was received;
// every tensor on a `device` device), reads the sizes and allocates the outputs.
MultiscaleGraphConvForwardSetup multiscale_graph_conv_forward_setup(c10::DeviceType device, const at::Tensor& x,
                                                                    const at::Tensor& adjacency,
                                                                    const at::Tensor& weight, const at::Tensor& bias);
MultiscaleGraphConvBackwardSetup multiscale_graph_conv_backward_setup(c10::DeviceType device,
                                                                      const at::Tensor& grad_out, const at::Tensor& x,
                                                                      const at::Tensor& adjacency,
                                                                      const at::Tensor& weight);

// CPU implementations (the CPU kernels of the op; also called directly by tests/csrc).
// Returns out (N, C_out, T, V).
at::Tensor multiscale_graph_conv_forward_cpu(const at::Tensor& x, const at::Tensor& adjacency,
                                             const at::Tensor& weight, const at::Tensor& bias);
// Returns (grad_x, grad_adjacency, grad_weight, grad_bias), each of its input's shape and dtype
// (grad_bias: (C_out,), dtype of weight).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multiscale_graph_conv_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& adjacency, const at::Tensor& weight);

}  // namespace trgnet
