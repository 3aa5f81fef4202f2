// Plain C++ launchers of the CUDA kernels of the fused AttModule (no torch headers); kernels and pass structure
// in att_module_impl.cuh, math in att_module.cuh, formula and layouts in trgnet_fast/ops/att_module/__init__.py.
//
// Layout (all contiguous): x, values, out, grad_out, grad_x, grad_values (B, C, T); mask (B, 1, T); cu_seqlens
// (N + 1) int32 or null; weights and biases as the op's schema (conv_weight (C, C, 3), Linear (C, C) [out, in],
// conv_out_weight (C, C, 1), biases (C)); alpha a device scalar of the state type; dropout_seed one device
// int64 (null without dropout); norm_stats (N, 2, C), kv_state (N, H, D, D), key_sum (N, H, D).
// Inputs float, double, __half or __nv_bfloat16; the statistics, states, workspace and all accumulation are float
// (double for double inputs). 1 <= C <= kMaxChannels, C % H == 0.
//
// No device value is read on the host: the grids depend on the shapes only, the blocks of a sequence find its
// frames in cu_seqlens themselves. Every launcher enqueues on `stream`, checks cudaGetLastError() after each
// launch and returns the first error (cudaErrorInvalidValue for bad sizes / missing pointers).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "att_module.cuh"  // param_count
#include "host_device.h"

namespace trgnet {
namespace am {

constexpr int kWeights = 12;  // conv_weight .. conv_out_bias, schema order

// Inputs of both directions.
template <typename In, typename Acc>
struct Inputs {
  const In *x, *values, *mask;  // values, mask: null when absent
  const int32_t* cu_seqlens;    // null: N = B rows of T frames
  const In* weights[kWeights];
  const Acc* alpha;
  const int64_t* dropout_seed;  // null when both probabilities are 0
  int64_t B, C, T, N, H, dilation;
  double norm_eps, attention_eps, attention_dropout, dropout;
};

template <typename In, typename Acc>
struct ForwardArgs {
  Inputs<In, Acc> in;
  In* out;
  Acc *norm_stats, *kv_state, *key_sum;
  Acc* workspace;  // workspace_elems(..., false)
};

template <typename In, typename Acc>
struct BackwardArgs {
  Inputs<In, Acc> in;
  const In* grad_out;
  const Acc *norm_stats, *kv_state, *key_sum;
  In *grad_x, *grad_values;  // grad_values null in encoder mode
  In* grad_weights[kWeights];
  Acc* grad_alpha;
  Acc* workspace;  // workspace_elems(..., true)
};

// ---- the plan of a call (host; the same for both directions) -----------------------------------------------
constexpr int kThreads = 256;
constexpr int kMaxTile = 32;                     // frames per tile at most
constexpr int kTileBuffers = 6;                  // (tile x C) accumulator buffers in shared memory
constexpr int64_t kSliceBytes = 16 * 1024;       // a K-slice of a staged weight
constexpr int64_t kSmemBudget = 96 * 1024;       // = kSmemOptInBudget of cuda_common.cuh
constexpr int64_t kPartialBudgetBytes = 32 << 20;  // per-chunk partials, all programs together (soft cap)

struct Plan {
  int tile;            // frames per tile
  int slice;           // weight columns (input channels) per staged K-slice
  int64_t per;         // tiles per chunk
  int64_t chunks;      // chunks per sequence (programs = N * chunks)
  int64_t smem_elems;  // dynamic shared memory, accumulator elements
};

// The per-program partials of each direction: [KV | ksum] (or [dKV | dksum]) state, C (D + 1); InstanceNorm
// partials, 2 C; the parameter gradients, param_count(C) (flat layout of att_module.cuh).
TRGNET_HD int64_t state_elems(int64_t C, int64_t H) { return C * (C / H + 1); }
TRGNET_HD int64_t forward_partial_elems(int64_t C, int64_t H) { return 2 * C + state_elems(C, H); }
TRGNET_HD int64_t backward_partial_elems(int64_t C, int64_t H) { return state_elems(C, H) + 2 * C + param_count(C); }

inline int64_t tile_smem_elems(int tile, int slice, int64_t C, int64_t H) {
  return kTileBuffers * tile * C + slice * C + 4 * C + 2 * tile * H;  // buffers, slice, 4 C stats, den, dden
}

// The tile fits kSmemBudget; the chunks are as many as keep the backward's partials near kPartialBudgetBytes (at
// least one per sequence).
inline Plan make_plan(int64_t C, int64_t T, int64_t N, int64_t H, int acc_bytes) {
  Plan p;
  int64_t slice = kSliceBytes / (C * acc_bytes);
  p.slice = static_cast<int>(slice < 1 ? 1 : slice > C ? C : slice);
  p.tile = kMaxTile;
  while (p.tile > 1 && tile_smem_elems(p.tile, p.slice, C, H) * acc_bytes > kSmemBudget) p.tile /= 2;
  p.smem_elems = tile_smem_elems(p.tile, p.slice, C, H);
  if (p.smem_elems < kThreads) p.smem_elems = kThreads;  // the block sums of the backward
  const int64_t programs = kPartialBudgetBytes / (backward_partial_elems(C, H) * acc_bytes);
  p.per = tiles_per_chunk(N, T, p.tile, programs < N ? N : programs);
  p.chunks = num_chunks(T, p.tile, p.per);
  return p;
}

// Accumulator elements of the workspace of a forward (backward = false) or backward call.
inline int64_t workspace_elems(int64_t B, int64_t C, int64_t T, int64_t N, int64_t H, int acc_bytes,
                               bool backward) {
  const Plan p = make_plan(C, T, N, H, acc_bytes);
  if (!backward) return N * p.chunks * forward_partial_elems(C, H);
  return N * p.chunks * backward_partial_elems(C, H) + N * state_elems(C, H) + 2 * B * T * C;
}

}  // namespace am
}  // namespace trgnet

#define TRGNET_AM_FORWARD_LAUNCHER(T_IN, T_ACC) \
  cudaError_t launch_att_module_forward(const am::ForwardArgs<T_IN, T_ACC>& args, cudaStream_t stream)
#define TRGNET_AM_BACKWARD_LAUNCHER(T_IN, T_ACC) \
  cudaError_t launch_att_module_backward(const am::BackwardArgs<T_IN, T_ACC>& args, cudaStream_t stream)

namespace trgnet {

TRGNET_AM_FORWARD_LAUNCHER(float, float);
TRGNET_AM_FORWARD_LAUNCHER(double, double);
TRGNET_AM_FORWARD_LAUNCHER(__half, float);
TRGNET_AM_FORWARD_LAUNCHER(__nv_bfloat16, float);

TRGNET_AM_BACKWARD_LAUNCHER(float, float);
TRGNET_AM_BACKWARD_LAUNCHER(double, double);
TRGNET_AM_BACKWARD_LAUNCHER(__half, float);
TRGNET_AM_BACKWARD_LAUNCHER(__nv_bfloat16, float);

}  // namespace trgnet
