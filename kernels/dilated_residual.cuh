// Math of the fused dilated residual layer (MS-TCN's DilatedResidualLayer, the boundary branch of TRG-Net;
// trgnet_fast/ops/dilated_residual/__init__.py has the formula, the layouts and the schemas): the AttModule without
// its attention branch, so it is built from the AttModule's pieces (kernels/att_module.cuh): the sequence spans of
// the three layouts, the dropout hash (stream 1, the AttModule's module dropout), the host conv + ReLU and the
// frame-major linear helpers. What is its own: the flat parameter layout of its 4 weights and biases and the
// sequence-level host implementation (the CPU kernel of csrc/dilated_residual.cpp, and the emulation tests'
// yardstick of the CUDA kernels). No torch headers.
//
//   pre[t] = bc + sum_k Wc[:, :, k] x[t + (k - 1) d];  o = ReLU(pre);  z = Wco o + bco;  out = (x + z r) m
//
// Backward (g = grad_out; zero outside the sequences): g' = g m; gz = g' r; grad Wco = sum_t gz o^T, grad bco =
// sum_t gz; gpre = (Wco^T gz) [pre > 0] (pre, o recomputed from x); grad bc = sum_t gpre; grad Wc[:, :, k] =
// sum_t gpre[t] x[t + (k - 1) d]^T; grad_x = g' + sum_k Wc[:, :, k]^T gpre[t - (k - 1) d].
//
// CUDA kernels (kernels/dilated_residual.cu; launchers and plan in kernels/dilated_residual.h): the AttModule's
// tile machinery of kernels/att_module_impl.cuh (blocks of 256 threads per (sequence, chunk of frame tiles), the
// block's span read from cu_seqlens on the device, the conv as three tap GEMMs on the shifted x tile with the weight
// staged K-slice by K-slice in shared memory, block-private parameter-gradient partials with one owner thread per
// entry):
//   forward, 1 launch:   dr_forward_kernel     conv + ReLU, conv_out, dropout, residual, mask -> out (zeros on the
//                                              frames outside every sequence); one tile per block, no workspace
//   backward, 3 launches, nothing saved but the inputs (pre and o are recomputed from x):
//     dr_pre_grad_kernel      recompute o; gz = g m r; the block's partials of the Wco, bco gradients; gpre =
//                             (Wco^T gz) relu'(pre) -> workspace (B, T, C); the partials of the Wc, bc gradients
//     input_backward_kernel   the AttModule's (att_module_impl.cuh): grad_x = g m + sum_k Wc_k^T gpre[t - (k-1) d]
//     dr_grad_reduce_kernel   fixed-order sum of the per-block partials -> the 4 parameter gradients
//   Deterministic: no atomics, every sum in a fixed order, the chunking depends only on the sizes.
//   Backward workspace (accumulator elements): programs (4 C^2 + 2 C) + B T C, the programs (N x chunks) capped so
//   that the partials stay near 32 MB (B = 8, T = 6000, C = 64: fp32 504 programs, 33.3 + 12.3 MB; fp64 256
//   programs, 33.8 + 24.6 MB).
#pragma once

#include <cstdint>
#include <vector>

#include "att_module.cuh"
#include "host_device.h"

namespace trgnet {
namespace dr {

using am::kMaxChannels;  // the CUDA kernels' channel limit (the CPU kernel takes any C)

// The module dropout of the AttModule (stream 1 of its hash): the one dropout of this layer.
constexpr int kDropoutStream = 1;

// ---- flat parameter layout ----------------------------------------------------------------------------------
// conv_weight (C, C, 3), conv_bias (C), conv_out_weight (C, C, 1), conv_out_bias (C), concatenated: the layout of
// the CPU kernel's converted parameters and of every parameter-gradient partial. conv_weight and conv_bias sit
// where the AttModule's flat layout has them (am::part_offset(am::kConvW / am::kConvB)), so that the AttModule's
// host conv (am::host::conv_relu) reads them from this layout.
enum Part { kConvW, kConvB, kConvOutW, kConvOutB, kParts };
TRGNET_HD int64_t part_size(int p, int64_t C) { return p == kConvW ? 3 * C * C : p == kConvOutW ? C * C : C; }
TRGNET_HD int64_t part_offset(int p, int64_t C) {
  int64_t o = 0;
  for (int i = 0; i < p; ++i) o += part_size(i, C);
  return o;
}
TRGNET_HD int64_t param_count(int64_t C) { return part_offset(kParts, C); }

// ---- host implementation (the CPU kernel) -------------------------------------------------------------------

// One call as the AttModule's host problem (its attention fields unused: no values, H = 1, attention dropout
// off); params: the flat layout above, converted to Acc.
template <typename In, typename Acc>
using HostProblem = am::HostProblem<In, Acc>;

template <typename In, typename Acc>
HostProblem<In, Acc> host_problem(const In* x, const In* mask, const int32_t* cu, const Acc* params, int64_t B,
                                  int64_t C, int64_t T, int64_t N, int dilation, const int64_t* seed, double dropout) {
  return {x,         nullptr, mask,   cu,     params, B, C, T, N, 1, dilation, Acc(0), Acc(0),
          am::make_dropout<Acc>(nullptr, 0, 0u, 0.0),
          am::make_dropout<Acc>(seed, kDropoutStream, am::dropout_threshold(dropout), dropout)};
}

namespace host {

// Forward of sequence n: out on the sequence's frames (the caller zeroes the rest).
template <typename In, typename Acc>
void forward_sequence(const HostProblem<In, Acc>& P, int64_t n, In* out) {
  const int64_t C = P.C, T = P.T;
  const am::Span s = am::sequence_span(P.cu, n, P.N, P.B, T);
  if (s.len == 0) return;
  am::host::Activations<Acc> A;
  am::host::conv_relu(P, s, A);  // xs, o
  std::vector<Acc> z(s.len * C);
  am::host::linear(A.o.data(), s.len, C, P.params + part_offset(kConvOutW, C), P.params + part_offset(kConvOutB, C),
                   false, z.data());
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < s.len; ++t) {
      const int64_t f = s.start + t, i = (s.row * C + c) * T + f;
      const Acc m = P.mask ? static_cast<Acc>(P.mask[s.row * T + f]) : Acc(1);
      out[i] = static_cast<In>((A.xs[t * C + c] + z[t * C + c] * P.drop2.factor(i)) * m);
    }
}

// Backward of sequence n: grad_x on the sequence's frames (the caller zeroes the rest), the parameter gradients
// added to grads (flat layout).
template <typename In, typename Acc>
void backward_sequence(const HostProblem<In, Acc>& P, const In* grad_out, int64_t n, In* grad_x, Acc* grads) {
  const int64_t C = P.C, T = P.T, dil = P.dilation;
  const am::Span s = am::sequence_span(P.cu, n, P.N, P.B, T);
  const int64_t L = s.len;
  if (L == 0) return;
  const Acc* Wc = P.params + part_offset(kConvW, C);
  am::host::Activations<Acc> A;
  am::host::conv_relu(P, s, A);  // xs, o
  auto index = [&](int64_t t, int64_t c) { return (s.row * C + c) * T + s.start + t; };
  auto mask_at = [&](int64_t t) { return P.mask ? static_cast<Acc>(P.mask[s.row * T + s.start + t]) : Acc(1); };
  std::vector<Acc> gm(L * C), gz(L * C), gpre(L * C);  // g m, g m r, then Wco^T gz relu'
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < L; ++t) {
      gm[t * C + c] = static_cast<Acc>(grad_out[index(t, c)]) * mask_at(t);
      gz[t * C + c] = gm[t * C + c] * P.drop2.factor(index(t, c));
    }
  am::host::linear_weight_grad(gz.data(), A.o.data(), L, C, grads + part_offset(kConvOutW, C),
                               grads + part_offset(kConvOutB, C));
  am::host::linear(gz.data(), L, C, P.params + part_offset(kConvOutW, C), static_cast<const Acc*>(nullptr), true,
                   gpre.data());
  for (int64_t j = 0; j < L * C; ++j)
    if (!(A.o[j] > Acc(0))) gpre[j] = Acc(0);  // o > 0 iff pre > 0
  // conv weight and bias: frame by frame, output channel rows of the taps in x's frame rows
  Acc* gW = grads + part_offset(kConvW, C);
  Acc* gb = grads + part_offset(kConvB, C);
  for (int64_t t = 0; t < L; ++t)
    for (int64_t o = 0; o < C; ++o) {
      const Acc gp = gpre[t * C + o];
      gb[o] += gp;
      for (int k = 0; k < 3; ++k) {
        const int64_t tau = t + (k - 1) * dil;
        if (tau < 0 || tau >= L) continue;
        const Acc* xr = A.xs.data() + tau * C;
        for (int64_t i = 0; i < C; ++i) gW[(o * C + i) * 3 + k] += gp * xr[i];
      }
    }
  // grad_x = g m + the transposed conv of gpre
  for (int64_t t = 0; t < L; ++t)
    for (int64_t i = 0; i < C; ++i) {
      Acc a = gm[t * C + i];
      for (int k = 0; k < 3; ++k) {
        const int64_t t_out = t - (k - 1) * dil;
        if (t_out < 0 || t_out >= L) continue;
        a += dot_strided(Wc + i * 3 + k, static_cast<int>(3 * C), gpre.data() + t_out * C, 1, static_cast<int>(C));
      }
      grad_x[index(t, i)] = static_cast<In>(a);
    }
}

}  // namespace host
}  // namespace dr
}  // namespace trgnet
