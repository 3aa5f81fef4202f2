// Per-element math of the fused multi-scale graph convolution of TRG-Net (SP block front end):
//
//   Z_s[c, t, v]  = sum_u A[s*V + v, u] X[c, t, u]                 (joint aggregation, scale s)
//   Y[o, t, v]    = b[o] + sum_s sum_c W[o, s*C + c] Z_s[c, t, v]   (scale-major stacking + 1x1 conv)
//
// Backward (G = dL/dY):
//   H_s[c, t, v]   = sum_o W[o, s*C + c] G[o, t, v]
//   dX[c, t, u]    = sum_s sum_v A[s*V + v, u] H_s[c, t, v]
//   dA[s*V + v, u] = sum_{n, c, t} H_s[c, t, v] X[c, t, u]
//   dW[o, s*C + c] = sum_{n, t, v} G[o, t, v] Z_s[c, t, v]
//   db[o]          = sum_{n, t, v} G[o, t, v]
//
// Shared by the CUDA kernels (kernels/multiscale_graph_conv.cu) and the C++ CPU kernels
// (csrc/multiscale_graph_conv.cpp). No torch headers here.
#pragma once

#include "host_device.h"  // TRGNET_HD, dot_strided

namespace trgnet {
namespace msgc {

// Largest number of joints V the CUDA kernels take (the CPU kernels take any V).
constexpr int kMaxJoints = 64;

// dot_strided(a, sa, b, sb, n) = sum_i a[i * sa] * b[i * sb], i in increasing order: host_device.h.

// Z_s[c, t, v] from row v of A_s (stride 1) and the frame's row X[c, t, :].
template <typename Acc>
TRGNET_HD Acc aggregate_joint(const Acc* a_row_v, const Acc* x_row, int V) {
  return dot_strided(a_row_v, 1, x_row, 1, V);
}

// dX contribution of one scale: sum_v A_s[v, u] H_s[c, t, v]; a_col_u = &A_s[0][u], rows lda apart.
template <typename Acc>
TRGNET_HD Acc scatter_joint(const Acc* a_col_u, int lda, const Acc* h_row, int V) {
  return dot_strided(a_col_u, lda, h_row, 1, V);
}

// ---------------------------------------------------------------------------------------------
// Frame-level helpers (one frame t of one sample), all arrays in the accumulation type, used by
// the CPU kernels. xt: X[:, t, :] as (C, V) rows; gt: G[:, t, :] as (O, V); A: (S*V, V);
// W: (O, S*C); b: (O).

// y (O, V) = the frame's output. z: C*V scratch.
template <typename Acc>
TRGNET_HD void forward_frame(const Acc* xt, const Acc* A, const Acc* W, const Acc* b, int C, int V, int S, int O,
                           Acc* z, Acc* y) {
  for (int o = 0; o < O; ++o)
    for (int v = 0; v < V; ++v) y[o * V + v] = b[o];
  for (int s = 0; s < S; ++s) {
    const Acc* As = A + static_cast<long long>(s) * V * V;
    for (int c = 0; c < C; ++c)
      for (int v = 0; v < V; ++v) z[c * V + v] = aggregate_joint(As + v * V, xt + c * V, V);
    for (int o = 0; o < O; ++o)
      for (int c = 0; c < C; ++c) {
        const Acc w = W[static_cast<long long>(o) * S * C + s * C + c];
        for (int v = 0; v < V; ++v) y[o * V + v] += w * z[c * V + v];
      }
  }
}

// dx (C, V) = the frame's input gradient; accumulates the frame's share of dA (S*V, V),
// dW (O, S*C) and db (O). h, z: C*V scratch each.
template <typename Acc>
TRGNET_HD void backward_frame(const Acc* xt, const Acc* gt, const Acc* A, const Acc* W, int C, int V, int S, int O,
                            Acc* h, Acc* z, Acc* dx, Acc* dA, Acc* dW, Acc* db) {
  for (int o = 0; o < O; ++o) {
    Acc sum = Acc(0);
    for (int v = 0; v < V; ++v) sum += gt[o * V + v];
    db[o] += sum;
  }
  for (int i = 0; i < C * V; ++i) dx[i] = Acc(0);
  for (int s = 0; s < S; ++s) {
    const Acc* As = A + static_cast<long long>(s) * V * V;
    Acc* dAs = dA + static_cast<long long>(s) * V * V;
    const Acc* Ws = W + s * C;
    const int ldw = S * C;
    for (int c = 0; c < C; ++c)
      for (int v = 0; v < V; ++v) h[c * V + v] = dot_strided(Ws + c, ldw, gt + v, V, O);
    for (int c = 0; c < C; ++c)
      for (int u = 0; u < V; ++u) dx[c * V + u] += scatter_joint(As + u, V, h + c * V, V);
    for (int v = 0; v < V; ++v)
      for (int u = 0; u < V; ++u) dAs[v * V + u] += dot_strided(h + v, V, xt + u, V, C);
    for (int c = 0; c < C; ++c)
      for (int v = 0; v < V; ++v) z[c * V + v] = aggregate_joint(As + v * V, xt + c * V, V);
    for (int o = 0; o < O; ++o)
      for (int c = 0; c < C; ++c) dW[static_cast<long long>(o) * ldw + s * C + c] += dot_strided(gt + o * V, 1, z + c * V, 1, V);
  }
}

}  // namespace msgc
}  // namespace trgnet
