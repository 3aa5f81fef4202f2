// Per-element math of the fused adaptive graph convolution of TRG-Net (CTRGC aggregation with the
// text-derived joint graph J):
//
//   th[t, u, v] = tanh(p[t, u] - q[t, v])
//   F[t, u, v]  = beta * th[t, u, v] + J[u, v]                        (frame graph, never stored)
//   Y[c, t, u]  = sum_v (F[t, u, v] + G[c, u, v]) X[c, t, v]
//
// Backward (dY = dL/dY), per sample:
//   dF[t, u, v] = sum_c dY[c, t, u] X[c, t, v]
//   dX[c, t, v] = sum_u (F[t, u, v] + G[c, u, v]) dY[c, t, u]
//   dG[c, u, v] = sum_t dY[c, t, u] X[c, t, v]
//   dJ[u, v]    = sum_{n, t} dF[t, u, v]          dbeta = sum_{n, t, u, v} dF th
//   dp[t, u]    = sum_v dF beta (1 - th^2)         dq[t, v] = -sum_u dF beta (1 - th^2)
//
// The kernels fold J into the per-channel graph, (F + G)[u, v] = beta th[u, v] + (G + J)[u, v].
// Shared by the CUDA kernels (kernels/adaptive_graph_conv.cu) and the C++ CPU kernels
// (csrc/adaptive_graph_conv.cpp). No torch headers here.
#pragma once

#include <cmath>

#include "host_device.h"  // TRGNET_HD, dot_strided

namespace trgnet {
namespace agc {

// Largest number of joints V the CUDA kernels take (the CPU kernels take any V).
constexpr int kMaxJoints = 64;

TRGNET_HD float tanh_acc(float x) { return tanhf(x); }
TRGNET_HD double tanh_acc(double x) { return tanh(x); }

// th = tanh(p_u - q_v).
template <typename Acc>
TRGNET_HD Acc frame_tanh(Acc p_u, Acc q_v) {
  return tanh_acc(p_u - q_v);
}

// beta * th: the frame graph without J.
template <typename Acc>
TRGNET_HD Acc frame_graph(Acc beta, Acc p_u, Acc q_v) {
  return beta * frame_tanh(p_u, q_v);
}

// dL/dp_u contribution of one entry (the dL/dq_v contribution is its negative): dF beta (1 - th^2).
template <typename Acc>
TRGNET_HD Acc tanh_input_grad(Acc dF, Acc beta, Acc th) {
  return dF * beta * (Acc(1) - th * th);
}

// sum_i (a[i * s] + b[i * s]) * x[i], i in increasing order: one output (a = F row / column, b =
// the same row / column of G + J, x = X[c, t, :] or dY[c, t, :]).
template <typename Acc>
TRGNET_HD Acc aggregate(const Acc* a, const Acc* b, int s, const Acc* x, int n) {
  Acc acc = Acc(0);
  for (int i = 0; i < n; ++i) acc += (a[i * s] + b[i * s]) * x[i];
  return acc;
}

// dot_strided(a, sa, b, sb, n) = sum_i a[i * sa] * b[i * sb]: host_device.h.

// sum_i a[i * s], i in increasing order.
template <typename Acc>
TRGNET_HD Acc sum_strided(const Acc* a, int s, int n) {
  Acc acc = Acc(0);
  for (int i = 0; i < n; ++i) acc += a[i * s];
  return acc;
}

// ---------------------------------------------------------------------------------------------
// Frame-level helpers (one frame t of one sample) in the accumulation type, used by the CPU
// kernels. Matrices are V x V with row stride V.

// bf (V x V) = beta * tanh(p_u - q_v) and th (V x V) = tanh(p_u - q_v) (th may be null).
template <typename Acc>
TRGNET_HD void build_frame_graph(const Acc* p, const Acc* q, Acc beta, int V, Acc* bf, Acc* th) {
  for (int u = 0; u < V; ++u)
    for (int v = 0; v < V; ++v) {
      const Acc h = frame_tanh(p[u], q[v]);
      if (th != nullptr) th[u * V + v] = h;
      bf[u * V + v] = beta * h;
    }
}

// y[u] = sum_v (bf + gj)[u, v] x[v]  (gj = G[c] + J).
template <typename Acc>
TRGNET_HD void aggregate_frame(const Acc* bf, const Acc* gj, const Acc* x, int V, Acc* y) {
  for (int u = 0; u < V; ++u) y[u] = aggregate(bf + u * V, gj + u * V, 1, x, V);
}

// dx[v] = sum_u (bf + gj)[u, v] dy[u].
template <typename Acc>
TRGNET_HD void aggregate_frame_transposed(const Acc* bf, const Acc* gj, const Acc* dy, int V, Acc* dx) {
  for (int v = 0; v < V; ++v) dx[v] = aggregate(bf + v, gj + v, V, dy, V);
}

// From dF and th of one frame: dp[u], dq[v] (written), and the frame's dbeta (returned, summed in
// double: dbeta adds N*T*V*V terms of both signs that largely cancel, so it is accumulated in double
// everywhere, on the GPU too, whatever the input dtype).
template <typename Acc>
TRGNET_HD double frame_graph_backward(const Acc* dF, const Acc* th, Acc beta, int V, Acc* dp, Acc* dq) {
  double dbeta = 0.0;
  for (int v = 0; v < V; ++v) dq[v] = Acc(0);
  for (int u = 0; u < V; ++u) {
    Acc a = Acc(0);
    for (int v = 0; v < V; ++v) {
      const Acc d = dF[u * V + v], h = th[u * V + v];
      const Acc g = tanh_input_grad(d, beta, h);
      a += g;
      dq[v] -= g;
      dbeta += static_cast<double>(d * h);
    }
    dp[u] = a;
  }
  return dbeta;
}

}  // namespace agc
}  // namespace trgnet
