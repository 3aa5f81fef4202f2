// Host side of trgnet::adaptive_graph_conv (schemas and CPU kernels in adaptive_graph_conv.cpp, CUDA
// dispatch in adaptive_graph_conv_cuda.cpp, math in kernels/adaptive_graph_conv.cuh). The argument checks,
// the size extraction and the output allocation are done once, here, for both implementations: they differ
// only in the kernels they run.
#pragma once

#include <tuple>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

namespace trgnet {

// One forward call: x (N, C, T, V), p, q (N, T, V), beta (1,), channel_graph (N, C, V, V),
// joint_graph (V, V).
struct AdaptiveGraphConvForwardSetup {
  const char* op;  // "trgnet::adaptive_graph_conv", for error messages
  int64_t N, C, T, V;
  at::Tensor out;  // (N, C, T, V) in x's dtype, allocated and not initialised
  at::Tensor outputs() const { return out; }
};

// One backward call: grad_out (N, C, T, V) and the forward's inputs.
struct AdaptiveGraphConvBackwardSetup {
  const char* op;  // "trgnet::adaptive_graph_conv_backward"
  int64_t N, C, T, V;
  // each allocated like its input, not initialised
  at::Tensor grad_x, grad_p, grad_q, grad_beta, grad_channel_graph, grad_joint_graph;
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> outputs() const {
    return {grad_x, grad_p, grad_q, grad_beta, grad_channel_graph, grad_joint_graph};
  }
};

// Checks the arguments (TORCH_CHECK naming the op, the argument, what is expected and what was received;
// every tensor on a `device` device), reads the sizes and allocates the outputs.
AdaptiveGraphConvForwardSetup adaptive_graph_conv_forward_setup(c10::DeviceType device, const at::Tensor& x,
                                                                const at::Tensor& p, const at::Tensor& q,
                                                                const at::Tensor& beta,
                                                                const at::Tensor& channel_graph,
                                                                const at::Tensor& joint_graph);
AdaptiveGraphConvBackwardSetup adaptive_graph_conv_backward_setup(c10::DeviceType device, const at::Tensor& grad_out,
                                                                  const at::Tensor& x, const at::Tensor& p,
                                                                  const at::Tensor& q, const at::Tensor& beta,
                                                                  const at::Tensor& channel_graph,
                                                                  const at::Tensor& joint_graph);

// CPU implementations (the CPU kernels of the op; also called directly by tests/csrc).
at::Tensor adaptive_graph_conv_forward_cpu(const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                                           const at::Tensor& beta, const at::Tensor& channel_graph,
                                           const at::Tensor& joint_graph);
// Returns (grad_x, grad_p, grad_q, grad_beta, grad_channel_graph, grad_joint_graph), each of its
// input's shape and dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> adaptive_graph_conv_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& p, const at::Tensor& q, const at::Tensor& beta,
    const at::Tensor& channel_graph, const at::Tensor& joint_graph);

}  // namespace trgnet
