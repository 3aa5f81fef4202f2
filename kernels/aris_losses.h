// Plain C++ launchers of the CUDA kernels of the fused ARIS terms (no torch headers); kernels in aris_losses.cu,
// shared math in aris_losses.cuh, formulas and layouts in trgnet_fast/ops/aris_losses/__init__.py.
//
// Layout (all contiguous): features, grad_features (N, C, T) In; frame_segment (N, T) int64; segment_video,
// segment_start, segment_label (M) int64; segment_count (M) Acc; segment_valid (M) bool; unit_embeddings (K, D),
// logit_scale (1), the four weights (M, M) Acc; terms (2), segment_features (M, D), row_lse (3, M),
// max_distance (2) = [dmax, c], grad_terms (2), grad_logit_scale (1) Acc; with the feature head, head_weight and
// grad_head_weight (D, C), head_bias and grad_head_bias (D), segment_means (M, C) Acc. In float, double, __half or
// __nv_bfloat16; Acc float (double for double features). N, D, T, M, K, C >= 1; C = D without the head.
//
// Passes (256 threads a block; every sum in a fixed order, no atomics: deterministic):
//   forward:  al_segment_mean_kernel  one block per (slot, group of kMeanRows rows of C): 8 lane groups, one row
//                                     each at a time, their 32 lanes over the slot's frames -> segment_features
//                                     (with the head: segment_means)
//             al_head_kernel          (head only) one thread per (slot, d): f_i = W m_i + b -> segment_features
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
//             al_slot_grad_kernel     one block per slot i: grad f_i / count_i (with the head γ_i = grad f_i)
//                                     -> workspace (block 0 also grad_logit_scale)
//             al_head_params_grad_kernel  (head only) one thread per entry of grad W and of grad b, the slots in
//                                     order: grad_head_weight, grad_head_bias
//             al_head_input_grad_kernel   (head only) one thread per (slot, channel): Wᵀ γ_i / count_i -> workspace
//             al_frame_grad_kernel    one thread per frame, kGradRows rows of C a block: grad_features
// Launches: forward 5 (6 with the head), backward 5 (7 with the head).
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
constexpr int kLaneGroups = kThreads / kLanes;   // rows of C read at once by a segment-mean block
constexpr int kRowsPerGroup = 4;                 // rows of C per lane group (loads in flight per lane)
constexpr int kMeanRows = kLaneGroups * kRowsPerGroup;  // rows of C of one segment-mean block
constexpr int kPairTile = 16;                    // kPairTile^2 = kThreads pairs per block
constexpr int kPairChunk = 32;                   // D elements of the pair rows staged at a time
constexpr int kFrameTile = kThreads;             // frames of one grad_features block
constexpr int kGradRows = 32;                    // rows of C of one grad_features block

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
  int64_t C;  // channels of the features: the head's input, or D without the head
};

template <typename In, typename Acc>
struct ForwardArgs {
  Slots<Acc> s;
  const In* features;                            // (N, C, T)
  const int64_t *segment_video, *segment_start;  // (M)
  const Acc *absolute_log_weight, *relative_log_weight;  // (M, M)
  Acc* terms;             // (2)
  Acc* segment_features;  // (M, D)
  Acc* row_lse;           // (3, M)
  Acc* max_distance;      // (2)
  Acc* workspace;         // workspace_elems(M, D, 0, false)
  // the feature head: all null without it, all set with it
  const Acc* head_weight;  // (D, C)
  const Acc* head_bias;    // (D)
  Acc* segment_means;      // (M, C)
};

template <typename In, typename Acc>
struct BackwardArgs {
  Slots<Acc> s;
  const int64_t* frame_segment;  // (N, T)
  const Acc* grad_terms;         // (2)
  const Acc* segment_features;   // (M, D)
  const Acc* row_lse;            // (3, M)
  const Acc* max_distance;       // (2)
  In* grad_features;             // (N, C, T)
  Acc* grad_logit_scale;         // (1)
  Acc* workspace;                // workspace_elems(M, D, head ? C : 0, true)
  // the feature head: all null without it, all set with it
  const Acc* head_weight;        // (D, C)
  const Acc* segment_means;      // (M, C)
  Acc* grad_head_weight;         // (D, C)
  Acc* grad_head_bias;           // (D)
};

// ---- grids and workspace (host) -------------------------------------------------------------------------------
TRGNET_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
TRGNET_HD int64_t pair_tiles(int64_t M) { return ceil_div(M, kPairTile); }  // per side
TRGNET_HD int64_t mean_groups(int64_t C) { return ceil_div(C, kMeanRows); }
TRGNET_HD int64_t grad_groups(int64_t C) { return ceil_div(C, kGradRows); }
TRGNET_HD int64_t frame_tiles(int64_t T) { return ceil_div(T, kFrameTile); }
TRGNET_HD int64_t thread_groups(int64_t n) { return ceil_div(n, kThreads); }  // blocks of one thread per element
inline int64_t pair_grad_blocks(int64_t M) { return ceil_div(M * M, kThreads); }

// Offsets (in Acc elements) of the workspace's parts; `total` its size; head_channels: C with the feature head, 0
// without. Both directions: cos (M, M), dist (M, M), norm (M), rows (1). Forward: tile_stats (2 per pair tile:
// largest d, its ties), kl (M, 3). Backward: weight_sums (2, M) = [Wa, Wr], grad_l = G (M, M), grad_p = H (M, M),
// grad_partials (2 per al_pair_grad_kernel block: Σ G cos, Σ H d), slot_grad (M, D) (grad f / count, or γ with the
// head), head_rows (M, head_channels) = Wᵀ γ_i / count_i.
struct Layout {
  int64_t cos, dist, norm, tile_stats, rows, kl, weight_sums, grad_l, grad_p, grad_partials, slot_grad, head_rows,
      total;
};
inline Layout layout(int64_t M, int64_t D, int64_t head_channels, bool backward) {
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
    l.head_rows = take(M * head_channels);
  } else {
    l.tile_stats = take(2 * pair_tiles(M) * pair_tiles(M));
    l.kl = take(3 * M);
  }
  l.total = at;
  return l;
}
inline int64_t workspace_elems(int64_t M, int64_t D, int64_t head_channels, bool backward) {
  return layout(M, D, head_channels, backward).total;
}

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
