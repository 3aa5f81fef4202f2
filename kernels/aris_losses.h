// Plain C++ launchers of the CUDA kernels of the fused ARIS terms (no torch headers); kernels in aris_losses.cu,
// shared math in aris_losses.cuh, formulas and layouts in trgnet_fast/ops/aris_losses/__init__.py.
//
// Layout (all contiguous): features, grad_features (N, D, T) In; frame_segment (N, T) int64; segment_video,
// segment_start, segment_label (M) int64; segment_count (M) Acc; segment_valid (M) bool; unit_embeddings (K, D),
// logit_scale (1), the four weights (M, M) Acc; terms (2), segment_features (M, D), row_lse (3, M),
// max_distance (2) = [dmax, c], grad_terms (2), grad_logit_scale (1) Acc. In float, double, __half or
// __nv_bfloat16; Acc float (double for double features). N, D, T, M, K >= 1.
//
// Passes (256 threads a block; every sum in a fixed order, no atomics: deterministic):
//   forward:  al_segment_mean_kernel  one block per (slot, group of kMeanRows rows of D): 8 lane groups, one row
//                                     each at a time, their 32 lanes over the slot's frames -> segment_features
//             al_pairs_kernel         one block per kPairTile x kPairTile tile of pairs, D staged through shared
//                                     memory kPairChunk at a time: cos_ij, d_ij, ‖f_i‖ and (forward only) the
//                                     tile's largest d with its number of ties -> workspace
//             al_stats_kernel         one block: rows; dmax and c from the tiles -> max_distance
//             al_rows_kernel          one block per row i: the logsumexps of row i of L, Lᵀ and P (+ bias) ->
//                                     row_lse, the row's three KL sums -> workspace
//             al_terms_kernel         one block: the rows' KL sums in row order -> terms
//   backward: al_pairs_kernel         as in the forward (the same d_ij, bit for bit)
//             al_weight_sums_kernel   one block per row i: Wa_i, Wr_i (block 0 also rows) -> workspace
//             al_pair_grad_kernel     one thread per pair: G_ij, H_ij -> workspace, the block's Σ G cos and Σ H d
//             al_slot_grad_kernel     one block per slot i: grad f_i / count_i -> workspace (block 0 also
//                                     grad_logit_scale)
//             al_frame_grad_kernel    one thread per frame, kGradRows rows of D a block: grad_features
// No device value is read on the host. Every launcher enqueues on `stream`, checks cudaGetLastError() after each
// launch and returns the first error (cudaErrorInvalidValue for bad sizes / missing pointers, before any launch).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "aris_losses.cuh"
#include "host_device.h"

namespace trgnet {
namespace al {

constexpr int kThreads = 256;
constexpr int kLanes = 32;                       // threads of one row in the segment means
constexpr int kLaneGroups = kThreads / kLanes;   // rows of D read at once by a segment-mean block
constexpr int kRowsPerGroup = 4;                 // rows of D per lane group (loads in flight per lane)
constexpr int kMeanRows = kLaneGroups * kRowsPerGroup;  // rows of D of one segment-mean block
constexpr int kPairTile = 16;                    // kPairTile^2 = kThreads pairs per block
constexpr int kPairChunk = 32;                   // D elements of the pair rows staged at a time
constexpr int kFrameTile = kThreads;             // frames of one grad_features block
constexpr int kGradRows = 32;                    // rows of D of one grad_features block

static_assert(kPairTile * kPairTile == kThreads, "one thread per pair of a tile");

// What both directions read.
template <typename Acc>
struct Slots {
  const Acc* segment_count;        // (M)
  const bool* segment_valid;       // (M)
  const int64_t* segment_label;    // (M)
  const Acc* unit_embeddings;      // (K, D)
  const Acc* logit_scale;          // (1)
  const Acc *absolute_weight, *relative_weight;  // (M, M)
  int64_t N, D, T, M, K;
};

template <typename In, typename Acc>
struct ForwardArgs {
  Slots<Acc> s;
  const In* features;                            // (N, D, T)
  const int64_t *segment_video, *segment_start;  // (M)
  const Acc *absolute_log_weight, *relative_log_weight;  // (M, M)
  Acc* terms;             // (2)
  Acc* segment_features;  // (M, D)
  Acc* row_lse;           // (3, M)
  Acc* max_distance;      // (2)
  Acc* workspace;         // workspace_elems(M, D, false)
};

template <typename In, typename Acc>
struct BackwardArgs {
  Slots<Acc> s;
  const int64_t* frame_segment;  // (N, T)
  const Acc* grad_terms;         // (2)
  const Acc* segment_features;   // (M, D)
  const Acc* row_lse;            // (3, M)
  const Acc* max_distance;       // (2)
  In* grad_features;             // (N, D, T)
  Acc* grad_logit_scale;         // (1)
  Acc* workspace;                // workspace_elems(M, D, true)
};

// ---- grids and workspace (host) -------------------------------------------------------------------------------
TRGNET_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
TRGNET_HD int64_t pair_tiles(int64_t M) { return ceil_div(M, kPairTile); }  // per side
TRGNET_HD int64_t mean_groups(int64_t D) { return ceil_div(D, kMeanRows); }
TRGNET_HD int64_t grad_groups(int64_t D) { return ceil_div(D, kGradRows); }
TRGNET_HD int64_t frame_tiles(int64_t T) { return ceil_div(T, kFrameTile); }
inline int64_t pair_grad_blocks(int64_t M) { return ceil_div(M * M, kThreads); }

// Offsets (in Acc elements) of the workspace's parts; `total` its size. Both directions: cos (M, M), dist (M, M),
// norm (M), rows (1). Forward: tile_stats (2 per pair tile: largest d, its ties), kl (M, 3). Backward:
// weight_sums (2, M) = [Wa, Wr], grad_l = G (M, M), grad_p = H (M, M), grad_partials (2 per al_pair_grad_kernel
// block: Σ G cos, Σ H d), slot_grad (M, D).
struct Layout {
  int64_t cos, dist, norm, tile_stats, rows, kl, weight_sums, grad_l, grad_p, grad_partials, slot_grad, total;
};
inline Layout layout(int64_t M, int64_t D, bool backward) {
  Layout l{};
  int64_t at = 0;
  auto take = [&at](int64_t n) {
    const int64_t here = at;
    at += n;
    return here;
  };
  l.cos = take(M * M);
  l.dist = take(M * M);
  l.norm = take(M);
  l.rows = take(1);
  if (backward) {
    l.weight_sums = take(2 * M);
    l.grad_l = take(M * M);
    l.grad_p = take(M * M);
    l.grad_partials = take(2 * pair_grad_blocks(M));
    l.slot_grad = take(M * D);
  } else {
    l.tile_stats = take(2 * pair_tiles(M) * pair_tiles(M));
    l.kl = take(3 * M);
  }
  l.total = at;
  return l;
}
inline int64_t workspace_elems(int64_t M, int64_t D, bool backward) { return layout(M, D, backward).total; }

}  // namespace al
}  // namespace trgnet

#define TRGNET_AL_FORWARD_LAUNCHER(T_IN, T_ACC) \
  cudaError_t launch_aris_losses_forward(const al::ForwardArgs<T_IN, T_ACC>& args, cudaStream_t stream)
#define TRGNET_AL_BACKWARD_LAUNCHER(T_IN, T_ACC) \
  cudaError_t launch_aris_losses_backward(const al::BackwardArgs<T_IN, T_ACC>& args, cudaStream_t stream)

namespace trgnet {

TRGNET_AL_FORWARD_LAUNCHER(float, float);
TRGNET_AL_FORWARD_LAUNCHER(double, double);
TRGNET_AL_FORWARD_LAUNCHER(__half, float);
TRGNET_AL_FORWARD_LAUNCHER(__nv_bfloat16, float);

TRGNET_AL_BACKWARD_LAUNCHER(float, float);
TRGNET_AL_BACKWARD_LAUNCHER(double, double);
TRGNET_AL_BACKWARD_LAUNCHER(__half, float);
TRGNET_AL_BACKWARD_LAUNCHER(__nv_bfloat16, float);

}  // namespace trgnet
