// Math of the fused per-frame loss terms (cross-entropy, GS-TMSE, boundary BCE of every stage;
// trgnet_fast/ops/frame_losses/__init__.py has the formulas, the layouts and the schemas): the per-frame pieces both
// implementations share, __host__ __device__ and templated on the accumulator Acc and on a column accessor Col
// (col[k] -> Acc: the K logits of one frame, whatever their storage: the CPU kernels of csrc/frame_losses.cpp pass
// a row converted to Acc and transposed to (T, K), the CUDA kernels of kernels/frame_losses.cu read the (K, T) row
// of global memory with stride T). No torch or CUDA headers.
//
// With z = logits[s, n] (K, T), frame t, y = labels[n, t], v = next(t), p = prev(t) (partner(): -1 without one):
//   CE(t)   = ce_weight[t] (0 <= y < K ? lse_c(t) - z[y, t] : 0)            lse_c(t) = logsumexp_k z[k, t]
//   GS(u)   = pair(u) ? pair_weight[u] sum_k min(d_k(u)^2, thr^2) : 0
//             time axis:  d_k(u) = z[k, v] - z[k, u] - (lse2[k] - lse1[k])   (lse1 over the frames with pair(),
//                                                                              lse2 over those with prev(); 0 empty)
//             class axis: d_k(u) = (z[k, v] - lse_c(v)) - (z[k, u] - lse_c(u))
//   BCE(t)  = boundary_weight[t] ((1 - yb) x + (1 + (pw - 1) yb) (log1p(exp(-|x|)) + max(-x, 0)))
// Backward (gc = grad_terms[0] / S, gg = grad_terms[1] / (S K), gb = grad_terms[2] / R):
//   q_k(u)  = pair(u) ? 2 pair_weight[u] d_k(u) [d_k(u)^2 <= thr^2] : 0
//   grad_z[k, t] = (0 <= y < K ? gc ce_weight[t] (softmax_c[k, t] - [k == y]) : 0)
//     time axis:  + gg (q_k(p) - q_k(t) + Q_k ((pair(t) ? exp(z[k, t] - lse1[k]) : 0)
//                                             - (prev(t) ? exp(z[k, t] - lse2[k]) : 0))),  Q_k = sum_u q_k(u)
//     class axis: + e_k - softmax_c[k, t] sum_k' e_k',  e_k = gg (q_k(p) - q_k(t))
//   (q_k(p) is 0 without prev(t); it is evaluated as written, with p's own partner next(p), which is t when
//   next_frame and previous_frame are each other's inverse)
//   grad_b[r, n, t] = gb boundary_weight[t] ((1 - yb) - (1 + (pw - 1) yb) sigmoid(-x))
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace trgnet {
namespace fl {

// The CUDA kernels hold one frame's K logits (trgnet_fast/ops/frame_losses/validation.py MAX_CLASSES); the CPU
// kernels take any K.
constexpr int64_t kMaxClasses = 1024;


// The partner index idx of frame t when it is another frame of the row (0 <= idx < T, idx != t), else -1.
TRGNET_HD int64_t partner(int64_t idx, int64_t t, int64_t T) { return idx != t && idx >= 0 && idx < T ? idx : -1; }

// ---- online logsumexp ----------------------------------------------------------------------------------------
// (m, s): the running max and sum of exp(x - m). Empty: (-inf, 0); after any element s >= 1 (or NaN), so
// nonempty() tells the sets apart (a set of -inf elements included). A NaN element makes s NaN.
template <typename Acc>
struct Lse {
  Acc m, s;
  TRGNET_HD static Lse empty() { return {-static_cast<Acc>(INFINITY), Acc(0)}; }
  TRGNET_HD bool nonempty() const { return !(s == Acc(0)); }
  // exp(mi - m) for mi <= m, 1 when equal (both infinite included)
  TRGNET_HD static Acc scale(Acc mi, Acc m) { return mi == m ? Acc(1) : hd_exp(mi - m); }
  TRGNET_HD void add(Acc x) {
    if (x > m) {
      s = s * scale(m, x) + Acc(1);
      m = x;
    } else {
      s += scale(x, m);
    }
  }
  TRGNET_HD void merge(const Lse& o) {
    if (o.m > m) {
      s = s * scale(m, o.m) + o.s;
      m = o.m;
    } else {
      s += o.s * scale(o.m, m);
    }
  }
  // logsumexp of the set (-inf for a set of -inf elements), `if_empty` for the empty set
  TRGNET_HD Acc value(Acc if_empty) const { return nonempty() ? m + hd_log(s) : if_empty; }
};

// lse_c of one frame: logsumexp_k col[k], K >= 1.
template <typename Acc, typename Col>
TRGNET_HD Acc column_lse(const Col& col, int64_t K) {
  Lse<Acc> l = Lse<Acc>::empty();
  for (int64_t k = 0; k < K; ++k) l.add(col[k]);
  return l.value(Acc(0));
}

// min(d^2, thr2), NaN for a NaN d (as clamp(max=) does).
template <typename Acc>
TRGNET_HD Acc clamped_square(Acc d, Acc thr2) {
  const Acc d2 = d * d;
  return thr2 < d2 ? thr2 : d2;
}

// q = 2 w d [d^2 <= thr2]: the derivative of w min(d^2, thr2) with respect to d.
template <typename Acc>
TRGNET_HD Acc q_of(Acc d, Acc w, Acc thr2) {
  return d * d <= thr2 ? Acc(2) * w * d : Acc(0);
}

// d_k(u) of the two axes: zu, zv = z[k, u], z[k, v].
template <typename Acc>
TRGNET_HD Acc d_time(Acc zu, Acc zv, Acc lse2_k, Acc lse1_k) {
  return zv - zu - (lse2_k - lse1_k);
}
template <typename Acc>
TRGNET_HD Acc d_class(Acc zu, Acc zv, Acc lse_u, Acc lse_v) {
  return (zv - lse_v) - (zu - lse_u);
}

// ---- BCE with logits and pos_weight ----------------------------------------------------------------------------
template <typename Acc>
TRGNET_HD Acc bce_loss(Acc x, Acc yb, Acc pw) {
  const Acc lw = Acc(1) + (pw - Acc(1)) * yb;
  const Acc ax = x < Acc(0) ? -x : x;
  return (Acc(1) - yb) * x + lw * (hd_log1p(hd_exp(-ax)) + (-x > Acc(0) ? -x : Acc(0)));
}
// d bce_loss / dx = (1 - yb) - lw sigmoid(-x)
template <typename Acc>
TRGNET_HD Acc bce_grad(Acc x, Acc yb, Acc pw) {
  const Acc lw = Acc(1) + (pw - Acc(1)) * yb;
  return (Acc(1) - yb) - lw / (Acc(1) + hd_exp(x));
}

// ---- forward of one frame of a logits row ---------------------------------------------------------------------
template <typename Acc>
struct FrameTerms {
  Acc ce, gs;
};

// The per-frame scalars of a logits row's frame t (both directions).
template <typename Acc>
struct Frame {
  int64_t K, y;     // classes, label
  Acc ce_w;         // ce_weight[n, t]
  bool pair;        // pair(t): zv is column next(t)
  Acc pair_w;       // pair_weight[n, t]
  bool time_axis;
  Acc thr2;         // threshold^2
  const Acc *lse2, *lse1;  // the row's time_lse (time axis; K each), else null
};

// CE(t) and GS(t) of frame t: zt its column, zv the column of next(t) (read only with f.pair).
template <typename Acc, typename Col>
TRGNET_HD FrameTerms<Acc> frame_forward(const Frame<Acc>& f, const Col& zt, const Col& zv) {
  const int64_t K = f.K;
  const bool in_range = f.y >= 0 && f.y < K;
  const bool class_gs = f.pair && !f.time_axis;
  const Acc lse_t = in_range || class_gs ? column_lse<Acc>(zt, K) : Acc(0);
  FrameTerms<Acc> r{f.ce_w * (in_range ? lse_t - zt[f.y] : Acc(0)), Acc(0)};
  if (f.pair) {
    const Acc lse_v = class_gs ? column_lse<Acc>(zv, K) : Acc(0);
    Acc sum = Acc(0);
    for (int64_t k = 0; k < K; ++k) {
      const Acc d = f.time_axis ? d_time(zt[k], zv[k], f.lse2[k], f.lse1[k]) : d_class(zt[k], zv[k], lse_t, lse_v);
      sum += clamped_square(d, f.thr2);
    }
    r.gs = f.pair_w * sum;
  }
  return r;
}

// ---- backward of one frame of a logits row ---------------------------------------------------------------------
// What the backward of frame t needs beyond Frame (f: frame t itself; pair_w, pair its own).
template <typename Acc>
struct FrameGrad {
  bool prev;        // prev(t): zp is column p = prev(t)
  bool prev_pair;   // prev(t) and pair(p): zpv is column next(p)
  bool pv_is_t;     // next(p) == t (then zpv is zt and lse_c(next(p)) = lse_c(t))
  Acc prev_pair_w;  // pair_weight[n, p]
  Acc gc, gg;       // grad_terms[0] / S, grad_terms[1] / (S K)
  const Acc* Q;     // time axis: the row's Q_k (K), else null
};

// grad_z[k, t] for every k, handed to out(k, value): zt, zv, zp, zpv the columns of t, next(t), p = prev(t) and
// next(p) (each read only when the flags say it exists).
template <typename Acc, typename Col, typename Out>
TRGNET_HD void frame_backward(const Frame<Acc>& f, const FrameGrad<Acc>& g, const Col& zt, const Col& zv,
                              const Col& zp, const Col& zpv, Out out) {
  const int64_t K = f.K;
  const bool in_range = f.y >= 0 && f.y < K;
  const bool cls = !f.time_axis;
  const Acc lse_t = in_range || cls ? column_lse<Acc>(zt, K) : Acc(0);
  const Acc gce = g.gc * f.ce_w;
  if (f.time_axis) {
    for (int64_t k = 0; k < K; ++k) {
      const Acc z = zt[k];
      const Acc ce = in_range ? gce * (hd_exp(z - lse_t) - (k == f.y ? Acc(1) : Acc(0))) : Acc(0);
      const Acc qt = f.pair ? q_of(d_time(z, zv[k], f.lse2[k], f.lse1[k]), f.pair_w, f.thr2) : Acc(0);
      const Acc qp =
          g.prev_pair ? q_of(d_time(zp[k], zpv[k], f.lse2[k], f.lse1[k]), g.prev_pair_w, f.thr2) : Acc(0);
      const Acc soft = (f.pair ? hd_exp(z - f.lse1[k]) : Acc(0)) - (g.prev ? hd_exp(z - f.lse2[k]) : Acc(0));
      out(k, ce + g.gg * (qp - qt + g.Q[k] * soft));
    }
    return;
  }
  // class axis: the log-softmax of each frame's classes
  const Acc lse_v = f.pair ? column_lse<Acc>(zv, K) : Acc(0);
  const Acc lse_p = g.prev_pair ? column_lse<Acc>(zp, K) : Acc(0);
  const Acc lse_pv = g.prev_pair ? (g.pv_is_t ? lse_t : column_lse<Acc>(zpv, K)) : Acc(0);
  auto e_at = [&](int64_t k) {
    const Acc qt = f.pair ? q_of(d_class(zt[k], zv[k], lse_t, lse_v), f.pair_w, f.thr2) : Acc(0);
    const Acc qp = g.prev_pair ? q_of(d_class(zp[k], zpv[k], lse_p, lse_pv), g.prev_pair_w, f.thr2) : Acc(0);
    return g.gg * (qp - qt);
  };
  Acc sum_e = Acc(0);
  if (f.pair || g.prev_pair)
    for (int64_t k = 0; k < K; ++k) sum_e += e_at(k);
  for (int64_t k = 0; k < K; ++k) {
    const Acc soft = hd_exp(zt[k] - lse_t);
    const Acc ce = in_range ? gce * (soft - (k == f.y ? Acc(1) : Acc(0))) : Acc(0);
    const Acc e = f.pair || g.prev_pair ? e_at(k) - soft * sum_e : Acc(0);
    out(k, ce + e);
  }
}

}  // namespace fl
}  // namespace trgnet
