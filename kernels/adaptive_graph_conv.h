// Plain C++ launchers of the CUDA kernels of the fused adaptive graph convolution (no torch
// headers; math in adaptive_graph_conv.cuh).
//
// Layout (all contiguous, row-major):
//   x, out, grad_out, grad_x: (N, C, T, V)   p, q, grad_p, grad_q: (N, T, V)   beta, grad_beta: (1)
//   channel_graph G, grad_channel_graph: (N, C, V, V)   joint_graph J, grad_joint_graph: (V, V)
// Inputs float, double, __half or __nv_bfloat16; accumulation in float (double for double).
// 1 <= V <= agc::kMaxJoints, and the tiles must fit the shared memory (agc::supported).
//
// Forward: one block per (n, block of CB channels, chunk of T-tiles). G[n, cblock] + J sits in
// shared memory for the whole chunk; per tile of TT frames beta * tanh(p_u - q_v) is built in shared
// memory (never in global memory) and each thread computes outputs (c, t, u) = sum_v (F + G) X.
// Backward: (a) per (n, chunk of T-tiles), over all C in channel chunks: dF tile in shared memory,
// then dp, dq (stored), and dbeta / dJ partials per block; (b) per (n, channel block, chunk):
// dX = sum_u (F + G)[u, v] dY[u] (stored) and dG partials per block. Partials are summed over the
// blocks in block order (no atomics): deterministic, the chunking depends only on the sizes.
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
namespace agc {

constexpr int kThreads = 256;
constexpr size_t kSmemBudget = 96 * 1024;  // opt-in dynamic shared memory per block
constexpr int kMaxTile = 8;                // frames per tile at most
constexpr int64_t kTargetForwardBlocks = 2048;
constexpr int64_t kTargetFrameBlocks = 512;
constexpr int64_t kTargetChannelBlocks = 1024;

struct Config {
  int channels = 0;  // channels per block (forward, backward b) or per chunk (backward a)
  int tile = 0;      // frames per tile; 0 = the sizes do not fit the shared memory
  size_t smem = 0;   // dynamic shared memory bytes
};

inline int64_t odd_ld(int64_t V) { return V | 1; }

// kind 0: forward, 1: backward (a) (frame graph), 2: backward (b) (channels).
inline size_t smem_bytes(int kind, int64_t ch, int64_t tt, int64_t V, size_t acc) {
  const int64_t ld = odd_ld(V), TTV = tt * V;
  int64_t elems = 0;
  if (kind == 0) elems = ch * V * ld + tt * V * ld + ch * TTV + 2 * TTV;
  if (kind == 1) elems = tt * V * ld + 2 * ch * TTV + 2 * TTV + V * V;  // + kThreads doubles (dbeta tree)
  if (kind == 2) elems = ch * V * ld + ch * V * V + tt * V * ld + 2 * ch * TTV + 2 * TTV;
  return static_cast<size_t>(elems) * acc + (kind == 1 ? kThreads * sizeof(double) : 0);
}

inline Config pick_config(int kind, int64_t C, int64_t V, size_t acc) {
  const int64_t max_ch = kind == 1 ? 16 : 8;
  const int64_t ch0 = C < max_ch ? C : max_ch;
  for (int tt = kMaxTile; tt >= 1; --tt)
    for (int64_t ch = ch0; ch >= 1; --ch) {
      const size_t bytes = smem_bytes(kind, ch, tt, V, acc);
      if (bytes <= kSmemBudget) return Config{static_cast<int>(ch), tt, bytes};
    }
  return Config{};
}

inline bool supported(int64_t C, int64_t V, size_t acc) {
  return pick_config(0, C, V, acc).tile > 0 && pick_config(1, C, V, acc).tile > 0 &&
         pick_config(2, C, V, acc).tile > 0;
}

// T-tiles per chunk (tiles_per_chunk) and the number of chunks (num_chunks): host_device.h.

// Layout of the backward's workspace (accumulator elements, float or double): the frame kernel's
// dbeta partials (N * chunks_a doubles, dbeta is accumulated in double), its dJ partials
// (N * chunks_a * V*V), then the channel kernel's dG partials (N * chunks_b * C * V*V).
struct BackwardPlan {
  Config a, b;
  int64_t per_a = 1, chunks_a = 1, per_b = 1, chunks_b = 1, cblocks = 1;
  int64_t frame_slots_elems = 0, channel_slots_elems = 0;
};

inline BackwardPlan backward_plan(int64_t N, int64_t C, int64_t T, int64_t V, size_t acc) {
  BackwardPlan p;
  p.a = pick_config(1, C, V, acc);
  p.b = pick_config(2, C, V, acc);
  if (p.a.tile == 0 || p.b.tile == 0) return p;
  p.per_a = tiles_per_chunk(N, T, p.a.tile, kTargetFrameBlocks);
  p.chunks_a = num_chunks(T, p.a.tile, p.per_a);
  p.cblocks = (C + p.b.channels - 1) / p.b.channels;
  p.per_b = tiles_per_chunk(N * p.cblocks, T, p.b.tile, kTargetChannelBlocks);
  p.chunks_b = num_chunks(T, p.b.tile, p.per_b);
  p.frame_slots_elems = N * p.chunks_a * (V * V + static_cast<int64_t>(sizeof(double) / acc));
  p.channel_slots_elems = N * p.chunks_b * C * V * V;
  return p;
}

inline int64_t backward_workspace_elems(int64_t N, int64_t C, int64_t T, int64_t V, size_t acc) {
  const BackwardPlan p = backward_plan(N, C, T, V, acc);
  return p.frame_slots_elems + p.channel_slots_elems;
}

}  // namespace agc
}  // namespace trgnet

// The launchers, one overload per input dtype (T_IN) and its accumulator (T_ACC). The signature macros
// serve the declarations below and the definitions of kernels/adaptive_graph_conv.cu.
//
// Forward: out.
#define TRGNET_AGC_FORWARD_LAUNCHER(T_IN, T_ACC)                                                                \
  cudaError_t launch_adaptive_graph_conv_forward(const T_IN* x, const T_IN* p, const T_IN* q, const T_IN* beta, \
                                                 const T_IN* channel_graph, const T_IN* joint_graph, int64_t N, \
                                                 int64_t C, int64_t T, int64_t V, T_IN* out, cudaStream_t stream)

// Backward: grad_x, grad_p, grad_q, grad_beta, grad_channel_graph, grad_joint_graph from grad_out.
// workspace: agc::backward_workspace_elems(...) accumulators.
#define TRGNET_AGC_BACKWARD_LAUNCHER(T_IN, T_ACC)                                                     \
  cudaError_t launch_adaptive_graph_conv_backward(                                                    \
      const T_IN* grad_out, const T_IN* x, const T_IN* p, const T_IN* q, const T_IN* beta,            \
      const T_IN* channel_graph, const T_IN* joint_graph, int64_t N, int64_t C, int64_t T, int64_t V, \
      T_IN* grad_x, T_IN* grad_p, T_IN* grad_q, T_IN* grad_beta, T_IN* grad_channel_graph,            \
      T_IN* grad_joint_graph, T_ACC* workspace, cudaStream_t stream)

namespace trgnet {

TRGNET_AGC_FORWARD_LAUNCHER(float, float);
TRGNET_AGC_FORWARD_LAUNCHER(double, double);
TRGNET_AGC_FORWARD_LAUNCHER(__half, float);
TRGNET_AGC_FORWARD_LAUNCHER(__nv_bfloat16, float);

TRGNET_AGC_BACKWARD_LAUNCHER(float, float);
TRGNET_AGC_BACKWARD_LAUNCHER(double, double);
TRGNET_AGC_BACKWARD_LAUNCHER(__half, float);
TRGNET_AGC_BACKWARD_LAUNCHER(__nv_bfloat16, float);

}  // namespace trgnet
