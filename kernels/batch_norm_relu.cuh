// Math of the fused BatchNorm (batch statistics) + residual + ReLU, SP's tail (trgnet_fast/ops/batch_norm_relu/
// __init__.py has the formula, the shapes and the schemas; docs/kernels.md#batch_norm_relu the kernels): the chunking
// of a channel's positions into pieces and slots, and the per-element math, __host__ __device__, shared by the CPU
// kernels of csrc/batch_norm_relu.cpp and the CUDA kernels of kernels/batch_norm_relu.cu. No torch or CUDA headers.
//
// With m = frame_mask[n, 0, t, 0] (1 without a mask) and, per channel c, sums over every (n, t, v):
//   statistics  count = max(1, sum m); shifted by K = x[0, c, 0, 0] (a one-pass variance free of cancellation):
//               s1 = sum m (x - K), s2 = sum m (x - K)^2, mean = K + s1 / count, var = max(s2 / count - (s1 /
//               count)^2, 0) (biased), invstd = 1 / sqrt(var + eps)
//   forward     out = ReLU((x - mean) invstd weight + bias + residual), x - mean taken as (x - K) - s1 / count
//   backward    g = grad_out [out > 0]; grad_bias = sum g; grad_weight = invstd sum g (x - mean) (every position,
//               the padded frames too); grad_x = weight invstd (g - m (grad_bias + x^ grad_weight) / count),
//               x^ = (x - mean) invstd; grad_residual = g
//
// Chunking: channel c's positions are the N rows of TV = T V contiguous elements, row n at (n C + c) TV. Each row
// is cut into pieces of kPiece elements (the last one shorter); the N pieces_per_row pieces of a channel, numbered
// row by row, are dealt to `slots` slots in contiguous ranges of `per` pieces (the last range shorter). The sums of
// a (channel, slot) are one partial; a channel's partials are added in slot order. The plan depends only on the
// sizes, so both implementations are deterministic for any thread count / thread order.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace trgnet {
namespace bnr {

// Elements of one piece: 256 threads x 8 elements (one 16-byte pack of bf16 / fp16, two of fp32, four of fp64, per
// thread and piece).
constexpr int kPiece = 2048;
// The CUDA kernels' limit on the positions of a row (T V): they index a row in 32 bits (the CPU kernels take any).
constexpr int64_t kMaxRowPositions = 0xffffffffLL;
// Most blocks (channels x slots) the plan makes when C < kTargetBlocks: one wave of 4 blocks (at most 64
// registers a thread, 256 threads) on each of the 132 SMs of an H100 / H200. Every block of a grid has about the
// same work, so a grid just above a wave would take two block-times: the slots are rounded down.
constexpr int64_t kTargetBlocks = 4 * 132;

struct Plan {
  int64_t TV;              // positions of one row (T V)
  int64_t pieces_per_row;  // ceil(TV / kPiece)
  int64_t pieces;          // of one channel: N pieces_per_row
  int64_t per;             // pieces of a slot (the last slot may have fewer)
  int64_t slots;           // slots of one channel (>= 1)
};

// The plan of x (N, C, T, V): at most max(1, kTargetBlocks / C) slots per channel and at most one per piece, each of
// `per` consecutive pieces.
inline Plan make_plan(int64_t N, int64_t C, int64_t T, int64_t V) {
  Plan p{};
  p.TV = T * V;
  p.pieces_per_row = (p.TV + kPiece - 1) / kPiece;
  p.pieces = N * p.pieces_per_row;
  int64_t slots = C > 0 ? kTargetBlocks / C : 1;
  if (slots > p.pieces) slots = p.pieces;
  if (slots < 1) slots = 1;
  p.per = p.pieces > 0 ? (p.pieces + slots - 1) / slots : 1;
  p.slots = p.pieces > 0 ? (p.pieces + p.per - 1) / p.per : 1;
  return p;
}

// Piece `piece` (< plan.pieces) of channel c: its row, its first position within the row (t V + v), its length and
// the offset of its first element in x (N, C, T, V).
struct Piece {
  int64_t row, start, len, offset;
};
TRGNET_HD Piece piece_at(const Plan& p, int64_t C, int64_t c, int64_t piece) {
  Piece r;
  r.row = piece / p.pieces_per_row;
  r.start = (piece - r.row * p.pieces_per_row) * kPiece;
  r.len = p.TV - r.start < kPiece ? p.TV - r.start : kPiece;
  r.offset = (r.row * C + c) * p.TV + r.start;
  return r;
}
// The pieces [first, last) of slot `slot`.
TRGNET_HD int64_t slot_first(const Plan& p, int64_t slot) { return slot * p.per; }
TRGNET_HD int64_t slot_last(const Plan& p, int64_t slot) {
  const int64_t e = (slot + 1) * p.per;
  return e < p.pieces ? e : p.pieces;
}

// ---- statistics -------------------------------------------------------------------------------------------------

// One position's share of a partial: s1 += m d, s2 += m d^2, count += m, with d = x - K.
template <typename Acc>
TRGNET_HD void add_moments(Acc& s1, Acc& s2, Acc& count, Acc d, Acc m) {
  const Acc md = m * d;
  s1 += md;
  s2 += md * d;
  count += m;
}

// 1 / sqrt(var + eps).
template <typename Acc>
TRGNET_HD Acc inv_std(Acc var, Acc eps) {
  return Acc(1) / hd_sqrt(var + eps);
}

template <typename Acc>
struct Statistics {
  Acc mean, var, invstd;
  Acc shift;  // mean - K, unrounded: the forward centres x as (x - K) - shift (x - K is exact near K), so that a
              // channel whose mean is large against its spread keeps its precision
};

// mean, biased var and invstd of a channel from its merged sums (s1, s2 of x - K, the mask sum `count`); a channel
// without a valid position (count 0) has mean 0, var 0 (count taken as 1, as the reference does). NaN stays NaN.
template <typename Acc>
TRGNET_HD Statistics<Acc> statistics(Acc s1, Acc s2, Acc count, Acc K, Acc eps) {
  Statistics<Acc> r;
  if (count >= Acc(1)) {
    r.shift = s1 / count;
    r.mean = K + r.shift;
    r.var = s2 / count - r.shift * r.shift;
  } else {  // count 1: mean = sum m x, var = sum m (x - mean)^2 (all 0 for a 0/1 mask with no valid frame)
    r.mean = s1 + K * count;
    r.shift = r.mean - K;
    r.var = s2 - Acc(2) * r.shift * s1 + r.shift * r.shift * count;
  }
  if (r.var < Acc(0)) r.var = Acc(0);
  r.invstd = inv_std(r.var, eps);
  return r;
}

// Count of the backward (the forward's): max(1, sum m).
template <typename Acc>
TRGNET_HD Acc clamped_count(Acc count) {
  return count >= Acc(1) ? count : Acc(1);
}

// ---- per element ----------------------------------------------------------------------------------------------

// out = ReLU(((x - K) - shift) scale + bias + residual), shift = mean - K (Statistics), scale = invstd weight (NaN
// propagates, as torch.relu).
template <typename Acc>
TRGNET_HD Acc bn_relu(Acc x, Acc K, Acc shift, Acc scale, Acc bias, Acc residual) {
  const Acc pre = ((x - K) - shift) * scale + bias + residual;
  return pre < Acc(0) ? Acc(0) : pre;
}

// g = grad_out where out > 0, else 0.
template <typename Acc>
TRGNET_HD Acc relu_grad(Acc out, Acc grad_out) {
  return out > Acc(0) ? grad_out : Acc(0);
}

// grad_x = w_invstd (g - m (grad_bias + x^ grad_weight) inv_count), w_invstd = weight invstd, inv_count = 1 / count.
template <typename Acc>
TRGNET_HD Acc input_grad(Acc g, Acc x_hat, Acc m, Acc w_invstd, Acc grad_bias, Acc grad_weight, Acc inv_count) {
  return w_invstd * (g - m * (grad_bias + x_hat * grad_weight) * inv_count);
}

}  // namespace bnr
}  // namespace trgnet
