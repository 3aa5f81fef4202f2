// Plain C++ launchers of the CUDA kernels of the fused multi-scale graph convolution (no torch
// headers; math in multiscale_graph_conv.cuh).
//
// Layout (all contiguous, row-major):
//   x, grad_x: (N, C, T, V)   adjacency, grad_adjacency: (S*V, V)   weight, grad_weight: (O, S*C)
//   bias, grad_bias: (O)      out, grad_out: (N, O, T, V)
// Inputs float, double, __half or __nv_bfloat16; accumulation in float (double for double).
// 1 <= V <= msgc::kMaxJoints. The backward's tile of frames must fit the shared memory:
// msgc::backward_supported(...) says whether it does (C, O up to ~100 for V = 25 in fp32).
//
// Forward: one block per (n, T-tile of 256 / V frames); the X tile sits in shared memory, each
// thread owns one (frame, joint) column and keeps up to 64 (fp64: 32) output channels in registers;
// Z_s = X A_s^T is formed on the fly per scale and channel (never stored), Y += W_s Z_s.
// Backward: one block per (n, chunk of T-tiles); X, G, H_s / Z_s and dX tiles in shared memory;
// dA, dW, db accumulated per block in its own workspace slot (fixed order, no atomics), then summed
// over the slots in slot order. Deterministic: the chunking depends only on the sizes.
//
// Every launcher enqueues on `stream`, checks cudaGetLastError() after each launch and returns the
// first error (cudaErrorInvalidValue for bad sizes / missing pointers).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "host_device.h"

namespace trgnet {
namespace msgc {

constexpr int kThreads = 256;
constexpr int64_t kTargetBackwardBlocks = 512;
constexpr size_t kBackwardSmemBudget = 96 * 1024;  // opt-in dynamic shared memory of the backward
constexpr int kMaxBackwardTile = 16;              // frames per backward tile at most

// Register blocking of the backward: H_s is formed kHBlock channels per thread, dW_s in
// kWBlock x kWBlock (output channel, channel) blocks per thread.
constexpr int kHBlock = 4;
constexpr int kWBlock = 2;

// W_s in shared memory is (O, C rounded up to kHBlock), zero padded.
inline int64_t backward_padded_channels(int64_t C) { return (C + kHBlock - 1) / kHBlock * kHBlock; }

// Frames per backward tile for the sizes (0 when not even one frame fits the shared memory).
inline int backward_tile(int64_t C, int64_t V, int64_t O, size_t acc_bytes) {
  const int64_t fixed = (V * (V | 1) + O * backward_padded_channels(C)) * static_cast<int64_t>(acc_bytes);
  const int64_t row = (3 * C + O) * V * static_cast<int64_t>(acc_bytes);
  const int64_t budget = static_cast<int64_t>(kBackwardSmemBudget);
  if (fixed + row > budget) return 0;
  const int64_t tile = (budget - fixed) / row;
  return static_cast<int>(tile < kMaxBackwardTile ? tile : kMaxBackwardTile);
}

inline bool backward_supported(int64_t C, int64_t V, int64_t O, size_t acc_bytes) {
  return backward_tile(C, V, O, acc_bytes) > 0;
}

// T-tiles per backward block, and the number of blocks (workspace slots) per sample.
inline int64_t backward_tiles_per_chunk(int64_t N, int64_t T, int tile) {
  return tiles_per_chunk(N, T, tile, kTargetBackwardBlocks);
}
inline int64_t backward_chunks(int64_t N, int64_t T, int tile) {
  return num_chunks(T, tile, backward_tiles_per_chunk(N, T, tile));
}

// Accumulators per workspace slot: dA (S*V*V), dW (O*S*C), db (O).
inline int64_t slot_elems(int64_t C, int64_t V, int64_t S, int64_t O) { return S * V * V + O * S * C + O; }

// Accumulator elements (float, or double for double inputs) the backward's workspace must hold
// (0 when the sizes are not supported).
inline int64_t backward_workspace_elems(int64_t N, int64_t C, int64_t T, int64_t V, int64_t S, int64_t O,
                                        size_t acc_bytes) {
  const int tile = backward_tile(C, V, O, acc_bytes);
  if (tile == 0) return 0;
  return N * backward_chunks(N, T, tile) * slot_elems(C, V, S, O);
}

}  // namespace msgc
}  // namespace trgnet

// The launchers, one overload per input dtype (T_IN) and its accumulator (T_ACC). The signature macros
// serve the declarations below and the definitions of kernels/multiscale_graph_conv.cu.
//
// Forward: out.
#define TRGNET_MSGC_FORWARD_LAUNCHER(T_IN, T_ACC)                                                                \
  cudaError_t launch_multiscale_graph_conv_forward(const T_IN* x, const T_IN* adjacency, const T_IN* weight,     \
                                                   const T_IN* bias, int64_t N, int64_t C, int64_t T, int64_t V, \
                                                   int64_t S, int64_t O, T_IN* out, cudaStream_t stream)

// Backward: grad_x, grad_adjacency, grad_weight, grad_bias from grad_out.
// workspace: msgc::backward_workspace_elems(...) accumulators.
#define TRGNET_MSGC_BACKWARD_LAUNCHER(T_IN, T_ACC)                                                          \
  cudaError_t launch_multiscale_graph_conv_backward(                                                        \
      const T_IN* grad_out, const T_IN* x, const T_IN* adjacency, const T_IN* weight, int64_t N, int64_t C, \
      int64_t T, int64_t V, int64_t S, int64_t O, T_IN* grad_x, T_IN* grad_adjacency, T_IN* grad_weight,    \
      T_IN* grad_bias, T_ACC* workspace, cudaStream_t stream)

namespace trgnet {

TRGNET_MSGC_FORWARD_LAUNCHER(float, float);
TRGNET_MSGC_FORWARD_LAUNCHER(double, double);
TRGNET_MSGC_FORWARD_LAUNCHER(__half, float);
TRGNET_MSGC_FORWARD_LAUNCHER(__nv_bfloat16, float);

TRGNET_MSGC_BACKWARD_LAUNCHER(float, float);
TRGNET_MSGC_BACKWARD_LAUNCHER(double, double);
TRGNET_MSGC_BACKWARD_LAUNCHER(__half, float);
TRGNET_MSGC_BACKWARD_LAUNCHER(__nv_bfloat16, float);

}  // namespace trgnet
