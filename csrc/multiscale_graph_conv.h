// Host-side declarations of the trgnet::multiscale_graph_conv ops (schemas in
// multiscale_graph_conv.cpp, math in kernels/multiscale_graph_conv.cuh).
#pragma once

#include <tuple>

#include <ATen/core/Tensor.h>

namespace trgnet {

// Argument checks shared by the CPU and CUDA implementations (TORCH_CHECK naming the argument,
// expected and received shape / dtype / device / contiguity).
// x (N, C, T, V), adjacency (S*V, V), weight (C_out, S*C), bias (C_out).
void check_multiscale_graph_conv_inputs(const char* op, const at::Tensor& x, const at::Tensor& adjacency,
                                        const at::Tensor& weight, const at::Tensor* bias);
void check_multiscale_graph_conv_backward_inputs(const char* op, const at::Tensor& grad_out, const at::Tensor& x,
                                                 const at::Tensor& adjacency, const at::Tensor& weight);

// CPU implementations (also callable directly from C++, e.g. the ctest).
// Returns out (N, C_out, T, V).
at::Tensor multiscale_graph_conv_cpu(const at::Tensor& x, const at::Tensor& adjacency, const at::Tensor& weight,
                                     const at::Tensor& bias);
// Returns (grad_x, grad_adjacency, grad_weight, grad_bias), each of its input's shape and dtype
// (grad_bias: (C_out,), dtype of weight).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multiscale_graph_conv_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& adjacency, const at::Tensor& weight);

}  // namespace trgnet
