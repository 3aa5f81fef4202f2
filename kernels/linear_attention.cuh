// Per-element math of the non-causal linear attention of TRG-Net (docs/model.md#linear-attention).
//
// Shared by the CUDA kernels (kernels/linear_attention.cu) and the C++ CPU kernels
// (csrc/linear_attention.cpp), so both run the very same arithmetic. No torch headers here.
//
// Notation, per sample n and head h (phi = sigmoid, m[s] = key mask or 1):
//   KV[d][e] = sum_s m[s] phi(k[s][d]) v[s][e]          (D x E)
//   ks[d]    = sum_s m[s] phi(k[s][d])                   (D)
//   out[l][e] = (phi(q[l]) . KV[:, e]) / (phi(q[l]) . (ks + eps))
//
// The state is handled as one "extended" D x W matrix, W = E + 1:
//   S[d][e] = KV[d][e] for e < E,   S[d][E] = ks[d] (+ eps where noted).
// A frame's contribution to S is the rank-1 update phi(k_s) (x) [v_s, 1]; a frame's extended
// numerator num[c] = sum_d phi(q_l)[d] S[d][c] holds the output numerators (c < E) and the
// denominator (c = E). The backward uses the same layout for dS = [dKV, dks] and for the
// extended output gradient dN[l] = [g[l] / den[l], dden[l]].
//
// Backward (g = dL/dout):
//   den[l]   = num[l][E],  dN[l][e] = g[l][e] / den[l],  dN[l][E] = -sum_e g[l][e] num[l][e] / den[l]^2
//   dq[l][d] = phi'(q[l][d]) * sum_c S[d][c] dN[l][c]                      (S with eps)
//   dS[d][c] = sum_l phi(q[l][d]) dN[l][c]
//   dk[s][d] = m[s] phi'(k[s][d]) * sum_c dS[d][c] [v_s, 1][c]
//   dv[s][e] = m[s] sum_d phi(k[s][d]) dS[d][e]
#pragma once

#include <cmath>

#include "host_device.h"  // TRGNET_HD

namespace trgnet {
namespace la {

// Largest head dims D, E supported by the CUDA kernels (the CPU kernels take any size).
constexpr int kMaxHeadDim = 64;

// ---------------------------------------------------------------------------------------------
// Element math.

TRGNET_HD float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
TRGNET_HD double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

// d sigmoid(x) / dx expressed through s = sigmoid(x).
template <typename Acc>
TRGNET_HD Acc sigmoid_grad(Acc s) { return s * (Acc(1) - s); }

// Feature of one key element: m * phi(x) (exactly 0 for a masked frame).
template <typename Acc>
TRGNET_HD Acc key_feature(Acc x, bool m) { return m ? sigmoid(x) : Acc(0); }

// sum_d phi[d] * S[d * W + c]: column c of the extended state seen by one frame's features.
template <typename Acc>
TRGNET_HD Acc feature_dot_column(const Acc* phi, const Acc* S, int D, int W, int c) {
  Acc a = Acc(0);
  for (int d = 0; d < D; ++d) a += phi[d] * S[d * W + c];
  return a;
}

// sum_c row[c] * x[c] over W entries (one row of an extended state against an extended vector).
template <typename Acc>
TRGNET_HD Acc row_dot(const Acc* row, const Acc* x, int W) {
  Acc a = Acc(0);
  for (int c = 0; c < W; ++c) a += row[c] * x[c];
  return a;
}

// Output element from the extended numerator: num / den.
template <typename Acc>
TRGNET_HD Acc output_value(Acc num, Acc den) { return num / den; }

// dL/dden for one frame from g_dot_num = sum_e g[e] * num[e]: -g_dot_num / den^2.
template <typename Acc>
TRGNET_HD Acc grad_den_from_dot(Acc g_dot_num, Acc den) { return -g_dot_num / (den * den); }

// dL/dden for one frame: -sum_e g[e] * num[e] / den^2.
template <typename Acc>
TRGNET_HD Acc grad_den(const Acc* g, const Acc* num, int E, Acc den) {
  Acc a = Acc(0);
  for (int e = 0; e < E; ++e) a += g[e] * num[e];
  return grad_den_from_dot(a, den);
}

// dq[l][d] from phi(q[l][d]), row d of S (with eps) and the frame's extended output gradient dN.
template <typename Acc>
TRGNET_HD Acc grad_query_value(Acc phiq_d, const Acc* S_row_d, const Acc* dN, int W) {
  return sigmoid_grad(phiq_d) * row_dot(S_row_d, dN, W);
}

// dk[s][d] from sigmoid(k[s][d]) (unmasked), row d of dS and the frame's extended value [v_s, 1].
template <typename Acc>
TRGNET_HD Acc grad_key_value(Acc sk_d, bool m, const Acc* dS_row_d, const Acc* vext, int W) {
  return m ? sigmoid_grad(sk_d) * row_dot(dS_row_d, vext, W) : Acc(0);
}

// dv[s][e] from sigmoid(k[s]) (unmasked) and column e of dS.
template <typename Acc>
TRGNET_HD Acc grad_value_value(const Acc* sk, bool m, const Acc* dS, int D, int W, int e) {
  return m ? feature_dot_column(sk, dS, D, W, e) : Acc(0);
}

// ---------------------------------------------------------------------------------------------
// Frame-level helpers (one frame of one (n, h)); `In` is the storage type of the tensors
// (converted with static_cast), `Acc` the accumulation type. Used by the CPU kernels.

// Accumulate frame s into the extended state S (D x (E+1)): S += phi(k_s) (x) [v_s, 1].
// scratch: D + E + 1 Acc.
template <typename Acc, typename In>
TRGNET_HD void accumulate_frame(const In* k, const In* v, bool m, int D, int E, Acc* S, Acc* scratch) {
  if (!m) return;
  const int W = E + 1;
  Acc* phik = scratch;
  Acc* vext = scratch + D;
  for (int d = 0; d < D; ++d) phik[d] = key_feature(static_cast<Acc>(k[d]), true);
  for (int e = 0; e < E; ++e) vext[e] = static_cast<Acc>(v[e]);
  vext[E] = Acc(1);
  for (int d = 0; d < D; ++d)
    for (int c = 0; c < W; ++c) S[d * W + c] += phik[d] * vext[c];
}

// One frame's output from the extended state S whose last column already includes eps.
// scratch: D + E + 1 Acc.
template <typename Acc, typename In>
TRGNET_HD void output_frame(const In* q, const Acc* S, int D, int E, Acc* scratch, In* out) {
  const int W = E + 1;
  Acc* phiq = scratch;
  Acc* num = scratch + D;
  for (int d = 0; d < D; ++d) phiq[d] = sigmoid(static_cast<Acc>(q[d]));
  for (int c = 0; c < W; ++c) num[c] = feature_dot_column(phiq, S, D, W, c);
  for (int e = 0; e < E; ++e) out[e] = static_cast<In>(output_value(num[e], num[E]));
}

// Backward, query side of one frame l: writes dq[l] and accumulates dS += phi(q_l) (x) dN[l].
// S includes eps. scratch: D + 2 * (E + 1) + E Acc.
template <typename Acc, typename In>
TRGNET_HD void backward_query_frame(const In* g, const In* q, const Acc* S, int D, int E, Acc* scratch,
                                Acc* dS, In* dq) {
  const int W = E + 1;
  Acc* phiq = scratch;
  Acc* num = phiq + D;
  Acc* dN = num + W;
  Acc* gl = dN + W;
  for (int d = 0; d < D; ++d) phiq[d] = sigmoid(static_cast<Acc>(q[d]));
  for (int e = 0; e < E; ++e) gl[e] = static_cast<Acc>(g[e]);
  for (int c = 0; c < W; ++c) num[c] = feature_dot_column(phiq, S, D, W, c);
  const Acc den = num[E];
  for (int e = 0; e < E; ++e) dN[e] = gl[e] / den;
  dN[E] = grad_den(gl, num, E, den);
  for (int d = 0; d < D; ++d) {
    dq[d] = static_cast<In>(grad_query_value(phiq[d], S + d * W, dN, W));
    for (int c = 0; c < W; ++c) dS[d * W + c] += phiq[d] * dN[c];
  }
}

// Backward, key/value side of one frame s given the reduced dS. scratch: D + E + 1 Acc.
template <typename Acc, typename In>
TRGNET_HD void backward_key_frame(const In* k, const In* v, bool m, const Acc* dS, int D, int E,
                              Acc* scratch, In* dk, In* dv) {
  const int W = E + 1;
  Acc* sk = scratch;
  Acc* vext = scratch + D;
  for (int d = 0; d < D; ++d) sk[d] = sigmoid(static_cast<Acc>(k[d]));
  for (int e = 0; e < E; ++e) vext[e] = static_cast<Acc>(v[e]);
  vext[E] = Acc(1);
  for (int d = 0; d < D; ++d) dk[d] = static_cast<In>(grad_key_value(sk[d], m, dS + d * W, vext, W));
  for (int e = 0; e < E; ++e) dv[e] = static_cast<In>(grad_value_value(sk, m, dS, D, W, e));
}

}  // namespace la
}  // namespace trgnet
