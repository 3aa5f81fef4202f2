// Math of the fused spatial feature injection (SFI: STI's per-frame fusion of a spatial group into the temporal
// stream; trgnet_fast/ops/spatial_feature_injection/__init__.py has the formula, the layouts and the schemas):
// the pieces both implementations share and the frame-level host implementation that is the CPU kernel of
// csrc/spatial_feature_injection.cpp (and the emulation tests' yardstick of the CUDA kernels). Built on the
// AttModule's pieces (kernels/att_module.cuh): its dropout hash (stream 0, on u viewed as an (N, C, T) tensor) and
// the strided dot of host_device.h. No torch headers.
//
//   g[t] = flatten_joints(group)[:, t] (channel v G + c);  s = Ws g + bs;  f = Wf [h; s] + bf;
//   a = W1 f + b1;  u = GELU(a) r;  out = (W2 u + b2 + h) m
//
// Backward (g' = grad_out m): grad_h = g' + Wf[:, :C]^T gf; grad W2 = sum_t g' u^T, grad b2 = sum_t g';
// gu = W2^T g'; ga = gu r GELU'(a); grad W1 = sum_t ga f^T, grad b1 = sum_t ga; gf = W1^T ga;
// grad Wf = sum_t gf [h; s]^T, grad bf = sum_t gf; gs = Wf[:, C:]^T gf; grad Ws = sum_t gs g^T, grad bs = sum_t gs;
// grad_group (channel v G + c) = Ws^T gs. s, f, a, u are recomputed from the inputs (nothing is saved).
//
// CUDA kernels (kernels/spatial_feature_injection.cu; launchers and plan in kernels/spatial_feature_injection.h):
// the AttModule's tile machinery of kernels/att_module_impl.cuh (blocks of 256 threads per (row n, chunk of frame
// tiles), the C x C GEMMs with the weight staged K-slice by K-slice in shared memory, block-private
// parameter-gradient partials with one owner thread per entry), plus this op's rectangular GEMM and weight-gradient
// helpers for conv_s (C x G V):
//   forward, 1 launch:   sfi_forward_kernel   group tile (its 4 strides) -> s, f, a, u, out; one tile per block
//   backward, 2 launches, nothing saved but the inputs:
//     sfi_backward_kernel     recompute s, f, a, u; grad_h, grad_group (contiguous (N, G, T, V)) and the block's
//                             partials of the 8 parameter gradients (flat layout below)
//     sfi_grad_reduce_kernel  fixed-order sum of the per-block partials -> the 8 parameter gradients
//   Deterministic: no atomics, every sum in a fixed order, the chunking depends only on the sizes.
//   Backward workspace (accumulator elements): programs (C G V + 4 C^2 + 4 C), the programs (N x chunks) capped so
//   that the partials stay near 32 MB (at least N).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "att_module.cuh"  // am::Dropout, am::make_dropout, am::dropout_threshold
#include "host_device.h"

namespace trgnet {
namespace sfi {

// The AttModule's attention-dropout stream (stream 0 of its hash): the feed-forward dropout of SFI.
constexpr int kDropoutStream = 0;
constexpr int kWeights = 8;  // conv_s_weight, conv_s_bias, fusion_weight, fusion_bias, ff1_w, ff1_b, ff2_w, ff2_b

// ---- GELU (the erf form) ----------------------------------------------------------------------------------
template <typename Acc>
TRGNET_HD Acc gelu(Acc a) {
  return Acc(0.5) * a * (Acc(1) + erf(a * Acc(0.70710678118654752440)));
}
// GELU'(a) = Phi(a) + a phi(a).
template <typename Acc>
TRGNET_HD Acc gelu_grad(Acc a) {
  const Acc cdf = Acc(0.5) * (Acc(1) + erf(a * Acc(0.70710678118654752440)));
  const Acc pdf = Acc(0.39894228040143267794) * exp(Acc(-0.5) * a * a);
  return cdf + a * pdf;
}

// ---- flat parameter layout --------------------------------------------------------------------------------
// The 8 weights and biases in schema order, concatenated (conv_s_weight (C, K) with K = G V, fusion_weight (C, 2C),
// ff1_weight, ff2_weight (C, C), biases (C)): the layout of the CPU kernel's converted parameters and of every
// parameter-gradient partial.
enum Part { kConvSW, kConvSB, kFusionW, kFusionB, kFf1W, kFf1B, kFf2W, kFf2B, kParts };
TRGNET_HD int64_t part_size(int p, int64_t C, int64_t K) {
  return p == kConvSW ? C * K : p == kFusionW ? 2 * C * C : p % 2 == 0 ? C * C : C;
}
TRGNET_HD int64_t part_offset(int p, int64_t C, int64_t K) {
  int64_t o = 0;
  for (int i = 0; i < p; ++i) o += part_size(i, C, K);
  return o;
}
TRGNET_HD int64_t param_count(int64_t C, int64_t K) { return part_offset(kParts, C, K); }

// Element (n, c, t, v) of group in its strides (any; a channel slice of STI's split included).
struct GroupView {
  int64_t G, V;
  int64_t sn, sc, st, sv;
  TRGNET_HD int64_t offset(int64_t n, int64_t c, int64_t t, int64_t v) const {
    return n * sn + c * sc + t * st + v * sv;
  }
};

// ---- host implementation (the CPU kernel) -------------------------------------------------------------------

// One call's inputs: In the storage type; params the flat parameters (above) converted to Acc.
template <typename In, typename Acc>
struct HostProblem {
  const In *group, *h, *mask;  // group in gv's strides; h (N, C, T); mask (N, 1, T) or null
  GroupView gv;
  const Acc* params;
  int64_t N, C, T;
  am::Dropout<Acc> drop;
};

template <typename In, typename Acc>
HostProblem<In, Acc> host_problem(const In* group, const GroupView& gv, const In* h, const In* mask,
                                  const Acc* params, int64_t N, int64_t C, int64_t T, const int64_t* seed,
                                  double dropout) {
  return {group, h, mask, gv, params, N, C, T,
          am::make_dropout<Acc>(seed, kDropoutStream, am::dropout_threshold(dropout), dropout)};
}

namespace host {

// out[o] = bias[o] + sum_i W[o][i] x[i], o < rows, W row stride ld (i in increasing order); bias may be null.
template <typename Acc>
void matvec(const Acc* W, int64_t ld, const Acc* x, int64_t rows, int64_t cols, const Acc* bias, Acc* out) {
  for (int64_t o = 0; o < rows; ++o)
    out[o] = (bias ? bias[o] : Acc(0)) + dot_strided(W + o * ld, 1, x, 1, static_cast<int>(cols));
}
// out[i] (+)= sum_o W[o][i] y[o], i < cols (the transposed product), W row stride ld.
template <typename Acc>
void matvec_t(const Acc* W, int64_t ld, const Acc* y, int64_t rows, int64_t cols, bool accumulate, Acc* out) {
  for (int64_t i = 0; i < cols; ++i)
    out[i] = (accumulate ? out[i] : Acc(0)) + dot_strided(W + i, static_cast<int>(ld), y, 1, static_cast<int>(rows));
}
// grad[o][i] += y[o] x[i] (row stride ld), gb[o] += y[o] (gb may be null).
template <typename Acc>
void outer_add(const Acc* y, const Acc* x, int64_t rows, int64_t cols, int64_t ld, Acc* grad, Acc* gb) {
  for (int64_t o = 0; o < rows; ++o) {
    for (int64_t i = 0; i < cols; ++i) grad[o * ld + i] += y[o] * x[i];
    if (gb) gb[o] += y[o];
  }
}

// One frame's recomputed activations: g (K), hs = [h; s] (2C), f, a, u (C).
template <typename Acc>
struct Frame {
  std::vector<Acc> g, hs, f, a, u;
};

template <typename In, typename Acc>
void forward_frame(const HostProblem<In, Acc>& P, int64_t n, int64_t t, Frame<Acc>& F) {
  const int64_t C = P.C, G = P.gv.G, V = P.gv.V, K = G * V;
  const Acc* W = P.params;
  F.g.resize(K);
  F.hs.resize(2 * C);
  F.f.resize(C);
  F.a.resize(C);
  F.u.resize(C);
  for (int64_t v = 0; v < V; ++v)
    for (int64_t c = 0; c < G; ++c) F.g[v * G + c] = static_cast<Acc>(P.group[P.gv.offset(n, c, t, v)]);
  for (int64_t c = 0; c < C; ++c) F.hs[c] = static_cast<Acc>(P.h[(n * C + c) * P.T + t]);
  matvec(W + part_offset(kConvSW, C, K), K, F.g.data(), C, K, W + part_offset(kConvSB, C, K), F.hs.data() + C);
  matvec(W + part_offset(kFusionW, C, K), 2 * C, F.hs.data(), C, 2 * C, W + part_offset(kFusionB, C, K), F.f.data());
  matvec(W + part_offset(kFf1W, C, K), C, F.f.data(), C, C, W + part_offset(kFf1B, C, K), F.a.data());
  for (int64_t c = 0; c < C; ++c) F.u[c] = gelu(F.a[c]) * P.drop.factor((n * C + c) * P.T + t);
}

template <typename In, typename Acc>
Acc mask_at(const HostProblem<In, Acc>& P, int64_t n, int64_t t) {
  return P.mask ? static_cast<Acc>(P.mask[n * P.T + t]) : Acc(1);
}

// Forward of frames [t0, t1) of row n.
template <typename In, typename Acc>
void forward_frames(const HostProblem<In, Acc>& P, int64_t n, int64_t t0, int64_t t1, In* out) {
  const int64_t C = P.C, K = P.gv.G * P.gv.V;
  Frame<Acc> F;
  std::vector<Acc> y(C);
  for (int64_t t = t0; t < t1; ++t) {
    forward_frame(P, n, t, F);
    matvec(P.params + part_offset(kFf2W, C, K), C, F.u.data(), C, C, P.params + part_offset(kFf2B, C, K), y.data());
    const Acc m = mask_at(P, n, t);
    for (int64_t c = 0; c < C; ++c) out[(n * C + c) * P.T + t] = static_cast<In>((y[c] + F.hs[c]) * m);
  }
}

// Backward of frames [t0, t1) of row n: grad_h, grad_group (contiguous (N, G, T, V)) on those frames, the
// parameter gradients added to grads (flat layout), frame by frame.
template <typename In, typename Acc>
void backward_frames(const HostProblem<In, Acc>& P, const In* grad_out, int64_t n, int64_t t0, int64_t t1,
                     In* grad_group, In* grad_h, Acc* grads) {
  const int64_t C = P.C, G = P.gv.G, V = P.gv.V, K = G * V, T = P.T;
  const Acc* W = P.params;
  Frame<Acc> F;
  std::vector<Acc> gy(C), gu(C), gf(C), gh(C), gs(C), gg(K);
  for (int64_t t = t0; t < t1; ++t) {
    forward_frame(P, n, t, F);
    const Acc m = mask_at(P, n, t);
    for (int64_t c = 0; c < C; ++c) gy[c] = static_cast<Acc>(grad_out[(n * C + c) * T + t]) * m;
    outer_add(gy.data(), F.u.data(), C, C, C, grads + part_offset(kFf2W, C, K), grads + part_offset(kFf2B, C, K));
    matvec_t(W + part_offset(kFf2W, C, K), C, gy.data(), C, C, false, gu.data());
    for (int64_t c = 0; c < C; ++c) gu[c] *= P.drop.factor((n * C + c) * T + t) * gelu_grad(F.a[c]);  // ga
    outer_add(gu.data(), F.f.data(), C, C, C, grads + part_offset(kFf1W, C, K), grads + part_offset(kFf1B, C, K));
    matvec_t(W + part_offset(kFf1W, C, K), C, gu.data(), C, C, false, gf.data());
    outer_add(gf.data(), F.hs.data(), C, 2 * C, 2 * C, grads + part_offset(kFusionW, C, K),
              grads + part_offset(kFusionB, C, K));
    const Acc* Wf = W + part_offset(kFusionW, C, K);
    gh = gy;
    matvec_t(Wf, 2 * C, gf.data(), C, C, true, gh.data());
    matvec_t(Wf + C, 2 * C, gf.data(), C, C, false, gs.data());
    outer_add(gs.data(), F.g.data(), C, K, K, grads + part_offset(kConvSW, C, K), grads + part_offset(kConvSB, C, K));
    matvec_t(W + part_offset(kConvSW, C, K), K, gs.data(), C, K, false, gg.data());
    for (int64_t c = 0; c < C; ++c) grad_h[(n * C + c) * T + t] = static_cast<In>(gh[c]);
    for (int64_t c = 0; c < G; ++c)
      for (int64_t v = 0; v < V; ++v) grad_group[((n * G + c) * T + t) * V + v] = static_cast<In>(gg[v * G + c]);
  }
}

}  // namespace host
}  // namespace sfi
}  // namespace trgnet
