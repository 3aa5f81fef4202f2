// Host-side declarations of the trgnet::adaptive_graph_conv ops (schemas in adaptive_graph_conv.cpp,
// math in kernels/adaptive_graph_conv.cuh).
#pragma once

#include <tuple>

#include <ATen/core/Tensor.h>

namespace trgnet {

// Argument checks shared by the CPU and CUDA implementations (TORCH_CHECK naming the argument,
// expected and received shape / dtype / device / contiguity).
// x (N, C, T, V), p, q (N, T, V), beta (1,), channel_graph (N, C, V, V), joint_graph (V, V).
void check_adaptive_graph_conv_inputs(const char* op, const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                                      const at::Tensor& beta, const at::Tensor& channel_graph,
                                      const at::Tensor& joint_graph);
// The backward's checks: those of the inputs, and grad_out of x's shape, device and dtype.
void check_adaptive_graph_conv_backward_inputs(const char* op, const at::Tensor& grad_out, const at::Tensor& x,
                                               const at::Tensor& p, const at::Tensor& q, const at::Tensor& beta,
                                               const at::Tensor& channel_graph, const at::Tensor& joint_graph);

// The backward's outputs, each of its input's shape and dtype.
struct AdaptiveGraphConvGrads {
  at::Tensor x, p, q, beta, channel_graph, joint_graph;
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> tuple() const {
    return {x, p, q, beta, channel_graph, joint_graph};
  }
};
// Uninitialized gradients (at::empty like each input), shared by the CPU and CUDA implementations.
AdaptiveGraphConvGrads empty_adaptive_graph_conv_grads(const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                                                       const at::Tensor& beta, const at::Tensor& channel_graph,
                                                       const at::Tensor& joint_graph);

// CPU implementations (also callable directly from C++, e.g. the ctest).
at::Tensor adaptive_graph_conv_cpu(const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                                   const at::Tensor& beta, const at::Tensor& channel_graph,
                                   const at::Tensor& joint_graph);
// Returns (grad_x, grad_p, grad_q, grad_beta, grad_channel_graph, grad_joint_graph), each of its
// input's shape and dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> adaptive_graph_conv_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& p, const at::Tensor& q, const at::Tensor& beta,
    const at::Tensor& channel_graph, const at::Tensor& joint_graph);

}  // namespace trgnet
