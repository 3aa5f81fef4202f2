// Math of the fused ARIS terms (absolute and relative alignment of the segment features; formulas, shapes and
// schemas in trgnet_fast/ops/aris_losses/__init__.py): the per-slot, per-pair and per-entry pieces both
// implementations share, __host__ __device__ and templated on the accumulator Acc (float, or double for double
// features). The CPU kernels of csrc/aris_losses.cpp and the CUDA kernels of kernels/aris_losses.cu call the same
// functions. No torch or CUDA headers.
//
// Notation: f_i the mean feature of slot i (0 for padding), ê_j = unit_embeddings[label_j], s = logit_scale,
// cos_ij = f̂_i·ê_j (so L_ij = s cos_ij), d_ij the distance of a pair of valid slots (else 0), dmax = max d_ij,
// P_ij = 1 − d_ij / (dmax + tiny), b_ij the dropped-column bias, lse the logsumexp of a biased prediction row.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace trgnet {
namespace al {

// F.normalize's floor of ‖f_i‖ (reference.py NORM_EPS) and the bias of a padding column in a valid row
// (reference.py DROPPED_BIAS: its exp underflows to exactly 0).
constexpr double kNormEps = 1e-12;
constexpr double kDroppedBias = -1e30;

// acc + x y. On the device with one rounding, written out so that no contraction choice of the compiler can make two
// evaluations of the same sum differ (the ties of the maximum distance are found by equality); the host build has no
// FMA instruction to contract to (x86-64 baseline): rounded twice, every time.
#if defined(__CUDA_ARCH__)
template <typename Acc>
TRGNET_HD Acc mul_add(Acc x, Acc y, Acc acc) {
  return fma(x, y, acc);
}
#else
template <typename Acc>
TRGNET_HD Acc mul_add(Acc x, Acc y, Acc acc) {
  return acc + x * y;
}
#endif

// The smallest normal number of the compute dtype (torch.finfo(dtype).tiny).
TRGNET_HD float smallest_normal(float) { return 1.17549435082228750797e-38F; }
TRGNET_HD double smallest_normal(double) { return 2.2250738585072013830902e-308; }

template <typename Acc>
TRGNET_HD Acc nan_max(Acc a, Acc b) {
  return a > b || a != a ? a : b;  // a NaN wins, as torch's max
}

// x clamped to [0, n − 1] (n >= 1): where a slot's label and video are read.
TRGNET_HD int64_t clamp_index(int64_t x, int64_t n) { return x < 0 ? 0 : x >= n ? n - 1 : x; }

// The frames [lo, hi) of a slot's mean: [start, start + count) clipped to [0, T). The contract keeps ranges inside
// the row; this only keeps a broken one from reading outside it (a count below 1 or NaN reads nothing).
struct Range {
  int64_t lo, hi;
};
template <typename Acc>
TRGNET_HD Range slot_range(int64_t start, Acc count, int64_t T) {
  const int64_t lo = start < 0 ? 0 : start > T ? T : start;
  const int64_t n = count >= Acc(1) ? (count < static_cast<Acc>(T) ? static_cast<int64_t>(count) : T) : 0;
  return {lo, n < T - lo ? lo + n : T};
}

// ---- pairs ---------------------------------------------------------------------------------------------------
// The sums over D of one pair (i, j), taken d = 0, 1, ..., D − 1 in this order by every kernel that forms them:
// sq = ‖f_i − f_j‖², dot = f_i·ê_j, nn = ‖f_i‖². sq of (i, j) and of (j, i) are equal bit for bit ((a − b)² and
// (b − a)² are the same number), and the forward and the backward form them with the same code.
template <typename Acc>
struct PairSums {
  Acc sq, dot, nn;
  TRGNET_HD void add(Acc fi, Acc fj, Acc ej) {
    const Acc x = fi - fj;
    sq = mul_add(x, x, sq);
    dot = mul_add(fi, ej, dot);
    nn = mul_add(fi, fi, nn);
  }
};

// ‖f_i‖ floored as F.normalize does.
template <typename Acc>
TRGNET_HD Acc floored_norm(Acc norm) {
  return norm > Acc(kNormEps) ? norm : Acc(kNormEps);
}

// d from the squared distance: 0 at 0, the floor sqrt(tiny) below tiny (the reference's clamp before sqrt).
template <typename Acc>
TRGNET_HD Acc distance_of(Acc sq) {
  const Acc tiny = smallest_normal(Acc());
  return sq > Acc(0) ? hd_sqrt(sq < tiny ? tiny : sq) : Acc(0);
}

// b_ij: a valid row drops its padding columns.
template <typename Acc>
TRGNET_HD Acc bias_of(bool valid_i, bool valid_j) {
  return valid_i && !valid_j ? static_cast<Acc>(kDroppedBias) : Acc(0);
}

template <typename Acc>
TRGNET_HD Acc similarity(Acc d, Acc dmax) {
  return Acc(1) - d / (dmax + smallest_normal(Acc()));
}

// The biased predictions of entry (i, j) of the three KLs: row i of L, of Lᵀ (L_ji) and of P, each + b_ij.
template <typename Acc>
TRGNET_HD void row_predictions(Acc scale, Acc cos_ij, Acc cos_ji, Acc d_ij, Acc dmax, Acc bias_ij, Acc (&x)[3]) {
  x[0] = scale * cos_ij + bias_ij;
  x[1] = scale * cos_ji + bias_ij;
  x[2] = similarity(d_ij, dmax) + bias_ij;
}

// One entry of a KL row: w (lw − log_softmax), x the biased prediction, lse its row's logsumexp.
template <typename Acc>
TRGNET_HD Acc kl_entry(Acc w, Acc lw, Acc x, Acc lse) {
  return w * (lw - (x - lse));
}

// ---- backward ------------------------------------------------------------------------------------------------
// The biased absolute logits of pair (i, j) seen from both KLs: row i of L (bias b_ij) and row j of Lᵀ (bias b_ji).
template <typename Acc>
struct AbsoluteEntry {
  Acc l;             // L_ij = s cos_ij
  Acc bias_ij, bias_ji;
  Acc lse_row_i;     // row_lse[0][i]: row i of L + bias
  Acc lse_trans_j;   // row_lse[1][j]: row j of Lᵀ + bias
};

// G_ij = coef [(Wa_i p^L_ij − wa_ij) + (Wa_j p^Lᵀ_ji − wa_ji)], coef = ga / (2 rows).
template <typename Acc>
TRGNET_HD Acc absolute_grad(const AbsoluteEntry<Acc>& e, Acc Wa_i, Acc Wa_j, Acc wa_ij, Acc wa_ji, Acc coef) {
  const Acc p = hd_exp(e.l + e.bias_ij - e.lse_row_i), pt = hd_exp(e.l + e.bias_ji - e.lse_trans_j);
  return coef * ((Wa_i * p - wa_ij) + (Wa_j * pt - wa_ji));
}

// H_ij = coef (Wr_i p^P_ij − wr_ij), coef = gr / rows.
template <typename Acc>
TRGNET_HD Acc relative_grad(Acc P, Acc bias_ij, Acc lse_i, Acc Wr_i, Acc wr_ij, Acc coef) {
  return coef * (Wr_i * hd_exp(P + bias_ij - lse_i) - wr_ij);
}

// What every pair's distance gradient shares: 1 / (dmax + tiny), dmax, and dmax's gradient over its c ties.
template <typename Acc>
struct DistanceGrad {
  Acc dmax, inv, tie_share;
};
// grad dmax = Σ H_ij d_ij / (dmax + tiny)², handed evenly to the c entries equal to dmax.
template <typename Acc>
TRGNET_HD DistanceGrad<Acc> distance_grad(Acc dmax, Acc ties, Acc sum_h_d) {
  const Acc inv = Acc(1) / (dmax + smallest_normal(Acc()));
  return {dmax, inv, sum_h_d * inv * inv / ties};
}

// (δ_ij + δ_ji) / d_ij, the weight of f_i − f_j in grad f_i (relative); 0 at distance 0 (every pair with d > 0 is a
// pair of valid slots, δ's own condition).
template <typename Acc>
TRGNET_HD Acc pair_coefficient(Acc h_ij, Acc h_ji, Acc d, const DistanceGrad<Acc>& g) {
  if (!(d > Acc(0))) return Acc(0);
  const Acc tie = d == g.dmax ? g.tie_share : Acc(0);
  return ((tie - h_ij * g.inv) + (tie - h_ji * g.inv)) / d;
}

// f̂_i[d] with the floored norm.
template <typename Acc>
TRGNET_HD Acc unit_of(Acc f, Acc norm) {
  return f / floored_norm(norm);
}

// grad f_i[d] through f̂_i = f_i / max(‖f_i‖, eps) of the gradient g = g_i[d] of f̂_i[d]: (g − f̂ (f̂·g)) / ‖f_i‖ above
// the floor, g / eps at or below it.
template <typename Acc>
TRGNET_HD Acc through_normalize(Acc g, Acc fhat, Acc fhat_dot_g, Acc norm) {
  return norm > Acc(kNormEps) ? (g - fhat * fhat_dot_g) / norm : g / Acc(kNormEps);
}

}  // namespace al
}  // namespace trgnet
