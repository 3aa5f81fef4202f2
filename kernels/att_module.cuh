// Math of the fused AttModule of TRG-Net (trgnet_fast/ops/att_module/__init__.py has the formula, the
// layouts and the schemas): the pieces both implementations share, and the sequence-level host
// implementation that is the CPU kernel of csrc/att_module.cpp (and the emulation tests' yardstick of the
// CUDA kernels). No torch headers.
//
//   * element math (TRGNET_HD, used by the CPU kernel and the CUDA kernels of att_module_impl.cuh):
//     the dropout hash (murmur3 fmix32, bit-exact with reference.dropout_keep_mask), the sequence spans of
//     the three layouts, Chan's combination of (count, mean, M2) statistics, the flat parameter layout;
//   * host only: forward_sequence / backward_sequence, one sequence at a time in the accumulator type
//     (double for double inputs, float otherwise), the per-head linear attention through the frame helpers
//     of linear_attention.cuh.
//
// CUDA kernels (kernels/att_module_impl.cuh; launchers and plan in kernels/att_module.h; forward expanded in
// att_module.cu, backward in att_module_backward.cu): every tile pass runs one block of 256 threads per (sequence n,
// chunk of T-tiles), grid N * chunks from the shapes only (the block reads its span from cu_seqlens on the device;
// tiles past the sequence's end are skipped or zero-filled). A block loops over its chunk's tiles of `tile` frames
// (<= 32, fitting 96 KiB of shared memory), recomputing what it needs from x; per-tile GEMMs (tile x C) @ (C x C)
// with the weight staged in dynamic shared memory K-slice by K-slice (16 KiB slices: C up to 256 does not fit
// whole), conv = three tap GEMMs on the shifted x tile.
//
//   forward, 4 launches:
//     conv_stats_kernel     conv + ReLU -> per-chunk InstanceNorm partials (mean, M2; Chan over the tiles)
//     state_kernel          Chan over the chunks -> mean, rstd (chunk 0 writes norm_stats); q, K, V -> per-chunk
//                           [KV | ksum] partials
//     sum_chunks_kernel     fixed-order sum of the chunk partials -> kv_state, key_sum
//     output_kernel         conv + ReLU, q, Q, a, out-proj, dropout 1, mask, alpha-add, conv_out, dropout 2,
//                           residual, mask -> out (zeros on frames outside every sequence)
//   backward, 6 launches; recomputes o, q, Q, K, V, a, p, u from x, values, the saved norm_stats, kv_state, key_sum
//   and the dropout seed (nothing else is saved); writes two (B, T, C) accumulator intermediates between its
//   passes: g_direct (g_u, then g_pre in place) and g_norm (Wq^T g_Q, then g_q in place):
//     attention_backward_kernel  recompute to u; g_y, g_u (-> g_direct), g_P, g_a, g_Q; per-chunk partials of
//                                [dKV | dksum] and of the Wco, bco, alpha, Wo, bo, Wq, bq gradients;
//                                Wq^T g_Q -> g_norm
//     sum_chunks_kernel          fixed-order sum of the [dKV | dksum] partials -> dS (workspace)
//     key_value_backward_kernel  recompute q, K, V; g_K, g_V from dS; g_q = g_norm + Wk^T g_K (+ Wv^T g_V in the
//                                encoder) -> g_norm; grad_values = Wv^T g_V (decoder); per-chunk partials of the
//                                Wk, bk, Wv, bv gradients and of the InstanceNorm backward sums (sum g_q, sum g_q q)
//     conv_backward_kernel       recompute o, q; g_pre = (g_u + rstd (g_q - mean g_q - q mean g_q q)) relu'(o)
//                                -> g_direct; per-chunk partials of the Wc, bc gradients
//     input_backward_kernel      grad_x = g m + sum_k Wc_k^T g_pre[t - (k - 1) d] (the halo read from g_direct;
//                                zeros on frames outside every sequence)
//     grad_reduce_kernel         fixed-order sum of the per-chunk parameter-gradient partials -> the 13 gradients
//   Deterministic: every sum has a fixed order (each output element has one owner thread, tiles in order within a
//   chunk, chunks in order), no atomics; the chunking depends only on the sizes.
//   Workspace (accumulator elements, att_module.h workspace_elems), P = 8 C^2 + 6 C + 1 parameters,
//   S = C (D + 1): forward N chunks (2 C + S); backward N chunks (S + 2 C + P) + N S + 2 B T C, the chunk count
//   capped so that the partials stay near 32 MB. B = 8, T = 6000, C = 64, H = 4: fp32 216 programs, forward 1.1 MB,
//   backward 54.3 MB (24.6 MB of it the two intermediates); fp64 84.4 MB.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "host_device.h"
#include "linear_attention.cuh"

namespace trgnet {
namespace am {

// Largest channel count of the CUDA kernels (the CPU kernel takes any).
constexpr int kMaxChannels = 256;

// ---- dropout hash (reference.py: dropout_keep_mask) ------------------------------------------------
constexpr int kUniformBits = 24;

TRGNET_HD uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  return h ^ (h >> 16);
}

// Key of one stream (0: attention dropout, 1: module dropout) for an int64 seed (its two's-complement bits).
TRGNET_HD uint32_t dropout_stream_key(int64_t seed, int stream) {
  const uint64_t bits = static_cast<uint64_t>(seed);
  const uint32_t hi = static_cast<uint32_t>(bits >> 32), lo = static_cast<uint32_t>(bits);
  const uint32_t stream_constant = stream == 0 ? 0x9E3779B9u : 0x7F4A7C15u;
  return fmix32(fmix32(hi ^ stream_constant) ^ lo);
}

// floor(p * 2^24) in double, on the host, as every backend computes it.
inline uint32_t dropout_threshold(double p) { return static_cast<uint32_t>(std::floor(p * (1 << kUniformBits))); }

// One dropout stream of a call: off (factor 1), or keep element i iff hash >= threshold, kept scaled.
template <typename Acc>
struct Dropout {
  bool on;
  uint32_t key, threshold;
  Acc scale;  // 1 / (1 - p)
  // Factor of the element with flat index i = (row C + c) T + t (mod 2^32).
  TRGNET_HD Acc factor(int64_t i) const {
    if (!on) return Acc(1);
    const uint32_t bits = fmix32(fmix32(static_cast<uint32_t>(i) + key) ^ key) >> (32 - kUniformBits);
    return bits >= threshold ? scale : Acc(0);
  }
};
template <typename Acc>
TRGNET_HD Dropout<Acc> make_dropout(const int64_t* seed, int stream, uint32_t threshold, double p) {
  Dropout<Acc> d{p > 0.0, 0u, threshold, static_cast<Acc>(1.0 / (1.0 - p))};
  if (d.on) d.key = dropout_stream_key(*seed, stream);
  return d;
}

// ---- sequences ----------------------------------------------------------------------------------
// Sequence n of the call: row `row` of x, frames [start, start + len) of the row; frames [start + len,
// start + cover) belong to no sequence and are written as zeros by the sequence's output passes (padded
// rows: the row's tail; packed: the frames after cu[N], by the last sequence).
struct Span {
  int64_t row, start, len, cover;
};
TRGNET_HD Span sequence_span(const int32_t* cu, int64_t n, int64_t N, int64_t B, int64_t T) {
  if (cu == nullptr) return {n, 0, T, T};
  const int64_t a = cu[n], b = cu[n + 1];
  Span s;
  if (B == N) {  // padded rows (also the one-row, one-sequence case)
    s = {n, 0, b - a, T};
  } else {  // packed: every sequence in row 0
    s = {0, a, b - a, (n == N - 1 ? T : b) - a};
  }
  // malformed offsets must not address memory outside the row
  if (s.start < 0 || s.start > T) s.start = 0, s.cover = 0;
  if (s.cover > T - s.start) s.cover = T - s.start;
  if (s.cover < 0) s.cover = 0;
  if (s.len > s.cover) s.len = s.cover;
  if (s.len < 0) s.len = 0;
  return s;
}

// ---- statistics -----------------------------------------------------------------------------------
// Chan et al.: (n, mean, M2) of a set += the set (nb, mean_b, M2_b).
template <typename Acc>
TRGNET_HD void chan_combine(Acc& n, Acc& mean, Acc& m2, Acc nb, Acc mean_b, Acc m2_b) {
  if (nb == Acc(0)) return;
  const Acc total = n + nb, delta = mean_b - mean;
  mean += delta * (nb / total);
  m2 += m2_b + delta * delta * (n * nb / total);
  n = total;
}
// rstd of the InstanceNorm from M2 over n frames (n = 0: 1 / sqrt(eps)).
template <typename Acc>
TRGNET_HD Acc inverse_std(Acc m2, Acc n, Acc eps) {
  const Acc var = n > Acc(0) ? m2 / n : Acc(0);
  return Acc(1) / sqrt(var + eps);
}

// ---- flat parameter layout --------------------------------------------------------------------------
// The 12 weights and biases and alpha, in the order of the op's gradients, concatenated: the layout of the
// CPU kernel's converted parameters and of every parameter-gradient partial.
enum Part { kConvW, kConvB, kQueryW, kQueryB, kKeyW, kKeyB, kValueW, kValueB, kOutW, kOutB, kConvOutW, kConvOutB,
            kAlpha, kParts };
TRGNET_HD int64_t part_size(int p, int64_t C) {
  return p == kConvW ? 3 * C * C : p == kAlpha ? 1 : p % 2 == 0 ? C * C : C;
}
TRGNET_HD int64_t part_offset(int p, int64_t C) {
  int64_t o = 0;
  for (int i = 0; i < p; ++i) o += part_size(i, C);
  return o;
}
TRGNET_HD int64_t param_count(int64_t C) { return part_offset(kParts, C); }

// ---- host implementation (the CPU kernel) ---------------------------------------------------------------

// One call's inputs: In the storage type; params the flat parameters (above) converted to Acc.
template <typename In, typename Acc>
struct HostProblem {
  const In *x, *values, *mask;  // (B, C, T); values, mask (B, 1, T) may be null
  const int32_t* cu;            // (N + 1) or null
  const Acc* params;
  int64_t B, C, T, N;
  int H, dilation;
  Acc norm_eps, attention_eps;
  Dropout<Acc> drop1, drop2;
};

namespace host {

// out[r][o] = bias[o] + sum_i W[o][i] in[r][i] (transposed: W[i][o]), rows x C, row-major.
template <typename Acc>
void linear(const Acc* in, int64_t rows, int64_t C, const Acc* W, const Acc* bias, bool transposed, Acc* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < C; ++o) {
      Acc a = bias ? bias[o] : Acc(0);
      for (int64_t i = 0; i < C; ++i) a += (transposed ? W[i * C + o] : W[o * C + i]) * in[r * C + i];
      out[r * C + o] = a;
    }
}

// grad[o][i] += sum_r gy[r][o] x[r][i]; gb[o] += sum_r gy[r][o].
template <typename Acc>
void linear_weight_grad(const Acc* gy, const Acc* x, int64_t rows, int64_t C, Acc* grad, Acc* gb) {
  for (int64_t o = 0; o < C; ++o) {
    for (int64_t i = 0; i < C; ++i) {
      Acc a = Acc(0);
      for (int64_t r = 0; r < rows; ++r) a += gy[r * C + o] * x[r * C + i];
      grad[o * C + i] += a;
    }
    Acc b = Acc(0);
    for (int64_t r = 0; r < rows; ++r) b += gy[r * C + o];
    gb[o] += b;
  }
}

// The sequence's (len, C) frame-major copy of a (B, C, T) tensor.
template <typename In, typename Acc>
std::vector<Acc> load_frames(const In* t, const Span& s, int64_t C, int64_t T) {
  std::vector<Acc> out(s.len * C);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t f = 0; f < s.len; ++f) out[f * C + c] = static_cast<Acc>(t[(s.row * C + c) * T + s.start + f]);
  return out;
}

// What forward and backward recompute for one sequence.
template <typename Acc>
struct Activations {
  std::vector<Acc> xs, o, q, Q, K, V, vin, a, p, u;  // (len, C) each; vin: values or a copy of q
};

// xs = the sequence's x frames, o = ReLU(conv(x)).
template <typename In, typename Acc>
void conv_relu(const HostProblem<In, Acc>& P, const Span& s, Activations<Acc>& A) {
  const int64_t C = P.C, L = s.len, dil = P.dilation;
  const Acc* W = P.params;
  A.xs = load_frames<In, Acc>(P.x, s, C, P.T);
  A.o.assign(L * C, Acc(0));
  for (int64_t t = 0; t < L; ++t)
    for (int64_t o = 0; o < C; ++o) {
      Acc a = W[part_offset(kConvB, C) + o];
      for (int k = 0; k < 3; ++k) {
        const int64_t tau = t + (k - 1) * dil;
        if (tau < 0 || tau >= L) continue;
        for (int64_t i = 0; i < C; ++i) a += W[(o * C + i) * 3 + k] * A.xs[tau * C + i];
      }
      A.o[t * C + o] = a > Acc(0) ? a : Acc(0);
    }
}

// stats (2, C) = [mean, rstd] of o over the sequence (two passes).
template <typename In, typename Acc>
void instance_stats(const HostProblem<In, Acc>& P, const Activations<Acc>& A, int64_t L, Acc* stats) {
  const int64_t C = P.C;
  for (int64_t c = 0; c < C; ++c) {
    Acc mean = Acc(0), m2 = Acc(0);
    for (int64_t t = 0; t < L; ++t) mean += A.o[t * C + c];
    mean = L > 0 ? mean / static_cast<Acc>(L) : Acc(0);
    for (int64_t t = 0; t < L; ++t) m2 += (A.o[t * C + c] - mean) * (A.o[t * C + c] - mean);
    stats[c] = mean;
    stats[C + c] = inverse_std(m2, static_cast<Acc>(L), P.norm_eps);
  }
}

// q (InstanceNorm of o with the given stats), vin, Q, K, V.
template <typename In, typename Acc>
void normalize_project(const HostProblem<In, Acc>& P, const Span& s, const Acc* stats, Activations<Acc>& A) {
  const int64_t C = P.C, L = s.len;
  const Acc* W = P.params;
  A.q.resize(L * C);
  for (int64_t t = 0; t < L; ++t)
    for (int64_t c = 0; c < C; ++c) A.q[t * C + c] = (A.o[t * C + c] - stats[c]) * stats[C + c];
  A.vin = P.values ? load_frames<In, Acc>(P.values, s, C, P.T) : A.q;
  A.Q.resize(L * C);
  A.K.resize(L * C);
  A.V.resize(L * C);
  linear(A.q.data(), L, C, W + part_offset(kQueryW, C), W + part_offset(kQueryB, C), false, A.Q.data());
  linear(A.q.data(), L, C, W + part_offset(kKeyW, C), W + part_offset(kKeyB, C), false, A.K.data());
  linear(A.vin.data(), L, C, W + part_offset(kValueW, C), W + part_offset(kValueB, C), false, A.V.data());
}

// a (attention with the given states), p (out-proj, dropout 1, mask), u = alpha p + o.
template <typename In, typename Acc>
void attend(const HostProblem<In, Acc>& P, const Span& s, const Acc* kv, const Acc* ks, Activations<Acc>& A) {
  const int64_t C = P.C, L = s.len;
  const Acc* W = P.params;
  const int H = P.H, D = static_cast<int>(C / H), Wd = D + 1;
  std::vector<Acc> S(D * Wd), scratch(2 * D + 1);
  A.a.resize(L * C);
  for (int h = 0; h < H; ++h) {
    for (int d = 0; d < D; ++d) {
      for (int e = 0; e < D; ++e) S[d * Wd + e] = kv[(h * D + d) * D + e];
      S[d * Wd + D] = ks[h * D + d] + P.attention_eps;
    }
    for (int64_t t = 0; t < L; ++t)
      la::output_frame(A.Q.data() + t * C + h * D, S.data(), D, D, scratch.data(), A.a.data() + t * C + h * D);
  }
  A.p.resize(L * C);
  linear(A.a.data(), L, C, W + part_offset(kOutW, C), W + part_offset(kOutB, C), false, A.p.data());
  A.u.resize(L * C);
  const Acc alpha = W[part_offset(kAlpha, C)];
  for (int64_t t = 0; t < L; ++t) {
    const Acc m = P.mask ? static_cast<Acc>(P.mask[s.row * P.T + s.start + t]) : Acc(1);
    for (int64_t c = 0; c < C; ++c) {
      Acc& p = A.p[t * C + c];
      p *= P.drop1.factor((s.row * C + c) * P.T + s.start + t) * m;
      A.u[t * C + c] = alpha * p + A.o[t * C + c];
    }
  }
}

// The per-head [KV | ksum] state of a sequence from K, V: kv (H, D, D), ks (H, D).
template <typename Acc>
void attention_state(const Activations<Acc>& A, int64_t L, int64_t C, int H, Acc* kv, Acc* ks) {
  const int D = static_cast<int>(C / H), Wd = D + 1;
  std::vector<Acc> S(D * Wd), scratch(2 * D + 1);
  for (int h = 0; h < H; ++h) {
    std::fill(S.begin(), S.end(), Acc(0));
    for (int64_t t = 0; t < L; ++t)
      la::accumulate_frame(A.K.data() + t * C + h * D, A.V.data() + t * C + h * D, true, D, D, S.data(),
                           scratch.data());
    for (int d = 0; d < D; ++d) {
      for (int e = 0; e < D; ++e) kv[(h * D + d) * D + e] = S[d * Wd + e];
      ks[h * D + d] = S[d * Wd + D];
    }
  }
}

// Forward of sequence n: stats (2, C) = [mean, rstd], kv (H, D, D), ks (H, D), out on the sequence's frames
// (the caller zeroes the rest).
template <typename In, typename Acc>
void forward_sequence(const HostProblem<In, Acc>& P, int64_t n, Acc* stats, Acc* kv, Acc* ks, In* out) {
  const int64_t C = P.C, T = P.T;
  const Span s = sequence_span(P.cu, n, P.N, P.B, T);
  Activations<Acc> A;
  conv_relu(P, s, A);
  instance_stats(P, A, s.len, stats);
  normalize_project(P, s, stats, A);
  attention_state(A, s.len, C, P.H, kv, ks);
  attend(P, s, kv, ks, A);
  std::vector<Acc> y(s.len * C);
  linear(A.u.data(), s.len, C, P.params + part_offset(kConvOutW, C), P.params + part_offset(kConvOutB, C), false,
         y.data());
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < s.len; ++t) {
      const int64_t f = s.start + t, i = (s.row * C + c) * T + f;
      const Acc m = P.mask ? static_cast<Acc>(P.mask[s.row * T + f]) : Acc(1);
      out[i] = static_cast<In>((A.xs[t * C + c] + y[t * C + c] * P.drop2.factor(i)) * m);
    }
}

// Backward of sequence n from the saved stats, kv, ks: grad_x (and grad_values) on the sequence's frames,
// the parameter gradients added to grads (flat layout).
template <typename In, typename Acc>
void backward_sequence(const HostProblem<In, Acc>& P, const In* grad_out, int64_t n, const Acc* stats,
                       const Acc* kv, const Acc* ks, In* grad_x, In* grad_values, Acc* grads) {
  const int64_t C = P.C, T = P.T, dil = P.dilation;
  const int H = P.H, D = static_cast<int>(C / H), Wd = D + 1;
  const Span s = sequence_span(P.cu, n, P.N, P.B, T);
  const int64_t L = s.len;
  if (L == 0) return;
  const Acc* W = P.params;
  const Acc alpha = W[part_offset(kAlpha, C)];
  Activations<Acc> A;
  conv_relu(P, s, A);
  normalize_project(P, s, stats, A);
  attend(P, s, kv, ks, A);
  auto mask_at = [&](int64_t t) { return P.mask ? static_cast<Acc>(P.mask[s.row * T + s.start + t]) : Acc(1); };
  auto index = [&](int64_t t, int64_t c) { return (s.row * C + c) * T + s.start + t; };
  std::vector<Acc> gy(L * C), gu(L * C), gP(L * C), ga(L * C), gQ(L * C), gK(L * C), gV(L * C), gq(L * C);
  for (int64_t t = 0; t < L; ++t)
    for (int64_t c = 0; c < C; ++c)
      gy[t * C + c] = static_cast<Acc>(grad_out[index(t, c)]) * mask_at(t) * P.drop2.factor(index(t, c));
  linear_weight_grad(gy.data(), A.u.data(), L, C, grads + part_offset(kConvOutW, C),
                     grads + part_offset(kConvOutB, C));
  linear(gy.data(), L, C, W + part_offset(kConvOutW, C), static_cast<const Acc*>(nullptr), true, gu.data());
  Acc galpha = Acc(0);
  for (int64_t i = 0; i < L * C; ++i) galpha += gu[i] * A.p[i];
  grads[part_offset(kAlpha, C)] += galpha;
  for (int64_t t = 0; t < L; ++t)
    for (int64_t c = 0; c < C; ++c)
      gP[t * C + c] = alpha * gu[t * C + c] * P.drop1.factor(index(t, c)) * mask_at(t);
  linear_weight_grad(gP.data(), A.a.data(), L, C, grads + part_offset(kOutW, C), grads + part_offset(kOutB, C));
  linear(gP.data(), L, C, W + part_offset(kOutW, C), static_cast<const Acc*>(nullptr), true, ga.data());
  // per-head linear attention backward
  std::vector<Acc> S(D * Wd), dS(D * Wd), scratch(2 * D + 2 * Wd);
  for (int h = 0; h < H; ++h) {
    for (int d = 0; d < D; ++d) {
      for (int e = 0; e < D; ++e) S[d * Wd + e] = kv[(h * D + d) * D + e];
      S[d * Wd + D] = ks[h * D + d] + P.attention_eps;
    }
    std::fill(dS.begin(), dS.end(), Acc(0));
    for (int64_t t = 0; t < L; ++t)
      la::backward_query_frame(ga.data() + t * C + h * D, A.Q.data() + t * C + h * D, S.data(), D, D,
                               scratch.data(), dS.data(), gQ.data() + t * C + h * D);
    for (int64_t t = 0; t < L; ++t)
      la::backward_key_frame(A.K.data() + t * C + h * D, A.V.data() + t * C + h * D, true, dS.data(), D, D,
                             scratch.data(), gK.data() + t * C + h * D, gV.data() + t * C + h * D);
  }
  linear_weight_grad(gQ.data(), A.q.data(), L, C, grads + part_offset(kQueryW, C), grads + part_offset(kQueryB, C));
  linear_weight_grad(gK.data(), A.q.data(), L, C, grads + part_offset(kKeyW, C), grads + part_offset(kKeyB, C));
  linear_weight_grad(gV.data(), A.vin.data(), L, C, grads + part_offset(kValueW, C),
                     grads + part_offset(kValueB, C));
  std::vector<Acc> tmp(L * C);
  linear(gQ.data(), L, C, W + part_offset(kQueryW, C), static_cast<const Acc*>(nullptr), true, gq.data());
  linear(gK.data(), L, C, W + part_offset(kKeyW, C), static_cast<const Acc*>(nullptr), true, tmp.data());
  for (int64_t i = 0; i < L * C; ++i) gq[i] += tmp[i];
  linear(gV.data(), L, C, W + part_offset(kValueW, C), static_cast<const Acc*>(nullptr), true, tmp.data());
  if (P.values) {
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < C; ++c) grad_values[index(t, c)] = static_cast<In>(tmp[t * C + c]);
  } else {
    for (int64_t i = 0; i < L * C; ++i) gq[i] += tmp[i];
  }
  // InstanceNorm and ReLU backward: g_pre = (g_u + rstd (g_q - mean g_q - q mean(g_q q))) relu'(o)
  std::vector<Acc>& gpre = gu;
  for (int64_t c = 0; c < C; ++c) {
    Acc sg = Acc(0), sgq = Acc(0);
    for (int64_t t = 0; t < L; ++t) {
      sg += gq[t * C + c];
      sgq += gq[t * C + c] * A.q[t * C + c];
    }
    const Acc mg = sg / static_cast<Acc>(L), mgq = sgq / static_cast<Acc>(L), rstd = stats[C + c];
    for (int64_t t = 0; t < L; ++t) {
      const int64_t i = t * C + c;
      gpre[i] = A.o[i] > Acc(0) ? gu[i] + rstd * (gq[i] - mg - A.q[i] * mgq) : Acc(0);
    }
  }
  Acc* gWc = grads + part_offset(kConvW, C);
  Acc* gbc = grads + part_offset(kConvB, C);
  for (int64_t o = 0; o < C; ++o) {
    Acc b = Acc(0);
    for (int64_t t = 0; t < L; ++t) b += gpre[t * C + o];
    gbc[o] += b;
    for (int64_t i = 0; i < C; ++i)
      for (int k = 0; k < 3; ++k) {
        Acc a = Acc(0);
        for (int64_t t = 0; t < L; ++t) {
          const int64_t tau = t + (k - 1) * dil;
          if (tau >= 0 && tau < L) a += gpre[t * C + o] * A.xs[tau * C + i];
        }
        gWc[(o * C + i) * 3 + k] += a;
      }
  }
  for (int64_t t = 0; t < L; ++t)
    for (int64_t i = 0; i < C; ++i) {
      Acc a = static_cast<Acc>(grad_out[index(t, i)]) * mask_at(t);
      for (int k = 0; k < 3; ++k) {
        const int64_t t_out = t - (k - 1) * dil;
        if (t_out < 0 || t_out >= L) continue;
        for (int64_t o = 0; o < C; ++o) a += W[(o * C + i) * 3 + k] * gpre[t_out * C + o];
      }
      grad_x[index(t, i)] = static_cast<In>(a);
    }
}

}  // namespace host
}  // namespace am
}  // namespace trgnet
