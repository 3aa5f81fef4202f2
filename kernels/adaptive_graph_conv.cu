// CUDA kernels of the fused adaptive graph convolution; math in adaptive_graph_conv.cuh, launchers
// and design summary in adaptive_graph_conv.h. No torch headers.
//
// forward_kernel          block (n, channel block, chunk of T-tiles): Gs = G[n, cblock] + J (CB x V x ld),
//                         per tile bf = beta tanh(p_u - q_v) (TT x V x ld), X tile (CB x TT*V);
//                         y[c, t, u] = sum_v (bf + Gs)[u, v] X[c, t, v].
// frame_backward_kernel   block (n, chunk): per tile dF (TT x V x ld) = sum_c dY^T X over channel
//                         chunks staged in shared memory; dJ (V x V, shared memory) += sum_t dF;
//                         dbeta (per thread in double, then a fixed tree) += dF th; dp, dq stored.
// channel_backward_kernel block (n, channel block, chunk): dX = sum_u (bf + Gs)[u, v] dY[u] stored,
//                         dG (CB x V x V, shared memory) += sum_t dY[u] X[v].
// reduce kernels          per-block partials summed in block order, converted to the input dtype.
// Matrices in shared memory use an odd row stride ld = V | 1 (conflict-free column / row walks).
#include "adaptive_graph_conv.h"

#include "adaptive_graph_conv.cuh"
#include "cuda_common.cuh"

namespace trgnet {
namespace agc {
namespace {

struct Sizes {
  int64_t N, T;
  int C, V;
};

// Block index -> (n, channel block, chunk) for the forward and the channel backward.
struct ChannelBlock {
  int64_t n, chunk;
  int c0, cb;
};
__device__ __forceinline__ ChannelBlock channel_block(const Sizes& sz, int CB, int64_t cblocks, int64_t chunks) {
  const int64_t b = blockIdx.x;
  ChannelBlock r;
  r.n = b / (cblocks * chunks);
  const int64_t rem = b % (cblocks * chunks);
  r.c0 = static_cast<int>((rem / chunks) * CB);
  r.chunk = rem % chunks;
  r.cb = min(CB, sz.C - r.c0);
  return r;
}

// bf[(t*V + u) * ld + v] = beta * tanh(p[t, u] - q[t, v]) for the tile's frames.
template <typename Acc>
__device__ __forceinline__ void build_frame_graphs(const Acc* ps, const Acc* qs, Acc beta, int rows, int V, int ld,
                                                   Acc* bf) {
  for (int i = threadIdx.x; i < rows * V * V; i += blockDim.x) {
    const int r = i / V, v = i % V, t = r / V;
    bf[r * ld + v] = frame_graph(beta, ps[r], qs[t * V + v]);
  }
}

template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const In* __restrict__ x, const In* __restrict__ p, const In* __restrict__ q,
                   const In* __restrict__ beta_ptr, const In* __restrict__ G, const In* __restrict__ J, Sizes sz,
                   int CB, int TT, int64_t per, int64_t chunks, int64_t cblocks, In* __restrict__ y) {
  const int C = sz.C, V = sz.V, ld = odd_stride(V), VV = V * V, TTV = TT * V;
  const int64_t T = sz.T;
  const ChannelBlock blk = channel_block(sz, CB, cblocks, chunks);
  Acc* Gs = smem_base<Acc>();  // CB x V x ld
  Acc* bf = Gs + CB * V * ld;  // TT x V x ld
  Acc* xs = bf + TT * V * ld;  // CB x TTV
  Acc* ps = xs + CB * TTV;     // TTV
  Acc* qs = ps + TTV;          // TTV
  const Acc beta = to_acc(beta_ptr[0]);
  for (int c = 0; c < blk.cb; ++c)
    load_rows<In, Acc>(G + (blk.n * C + blk.c0 + c) * VV, J, V, V, ld, Gs + c * V * ld);

  const int64_t tile_end = chunk_tile_end(T, TT, blk.chunk, per);
  for (int64_t tile = blk.chunk * per; tile < tile_end; ++tile) {
    const int64_t t0 = tile * TT;
    const int rows = static_cast<int>(min(static_cast<int64_t>(TT), T - t0));
    const int P = rows * V;
    __syncthreads();  // previous tile done with ps, qs, xs, bf
    load_segment(p + (blk.n * T + t0) * V, P, ps);
    load_segment(q + (blk.n * T + t0) * V, P, qs);
    for (int c = 0; c < blk.cb; ++c) load_segment(x + ((blk.n * C + blk.c0 + c) * T + t0) * V, P, xs + c * TTV);
    __syncthreads();
    build_frame_graphs(ps, qs, beta, rows, V, ld, bf);
    __syncthreads();
    for (int i = threadIdx.x; i < blk.cb * P; i += blockDim.x) {
      const int c = i / P, col = i % P, t = col / V, u = col % V;
      const Acc out = aggregate(bf + (t * V + u) * ld, Gs + (c * V + u) * ld, 1, xs + c * TTV + t * V, V);
      y[((blk.n * C + blk.c0 + c) * T + t0) * V + col] = Store<In>::from(out);
    }
  }
}

template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    frame_backward_kernel(const In* __restrict__ g, const In* __restrict__ x, const In* __restrict__ p,
                          const In* __restrict__ q, const In* __restrict__ beta_ptr, Sizes sz, int CC, int TT,
                          int64_t per, int64_t chunks, In* __restrict__ dp, In* __restrict__ dq,
                          Acc* __restrict__ partial) {
  const int C = sz.C, V = sz.V, ld = odd_stride(V), VV = V * V, TTV = TT * V;
  const int64_t T = sz.T;
  const int64_t n = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  double* red = smem_base<double>();                // kThreads: dbeta tree
  Acc* dF = reinterpret_cast<Acc*>(red + kThreads);  // TT x V x ld
  Acc* gs = dF + TT * V * ld;                        // CC x TTV
  Acc* xs = gs + CC * TTV;     // CC x TTV
  Acc* ps = xs + CC * TTV;     // TTV
  Acc* qs = ps + TTV;          // TTV
  Acc* dJ = qs + TTV;          // V x V
  const Acc beta = to_acc(beta_ptr[0]);
  for (int i = threadIdx.x; i < VV; i += blockDim.x) dJ[i] = Acc(0);
  double dbeta = 0.0;  // summed in double: the terms largely cancel (see frame_graph_backward)

  const int64_t tile_end = chunk_tile_end(T, TT, chunk, per);
  for (int64_t tile = chunk * per; tile < tile_end; ++tile) {
    const int64_t t0 = tile * TT;
    const int rows = static_cast<int>(min(static_cast<int64_t>(TT), T - t0));
    const int P = rows * V;
    __syncthreads();  // previous tile done with dF, ps, qs
    load_segment(p + (n * T + t0) * V, P, ps);
    load_segment(q + (n * T + t0) * V, P, qs);
    for (int i = threadIdx.x; i < P * V; i += blockDim.x) dF[(i / V) * ld + i % V] = Acc(0);
    for (int c0 = 0; c0 < C; c0 += CC) {
      const int cc = min(CC, C - c0);
      __syncthreads();  // previous channel chunk done with gs, xs
      for (int c = 0; c < cc; ++c) {
        load_segment(g + ((n * C + c0 + c) * T + t0) * V, P, gs + c * TTV);
        load_segment(x + ((n * C + c0 + c) * T + t0) * V, P, xs + c * TTV);
      }
      __syncthreads();
      for (int i = threadIdx.x; i < P * V; i += blockDim.x) {  // dF[t,u,v] += sum_c dY[c,t,u] X[c,t,v]
        const int r = i / V, v = i % V, t = r / V;
        dF[r * ld + v] += dot_strided(gs + r, TTV, xs + t * V + v, TTV, cc);
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < VV; i += blockDim.x) {  // dJ += sum_t dF
      const int u = i / V, v = i % V;
      Acc s = Acc(0);
      for (int t = 0; t < rows; ++t) s += dF[(t * V + u) * ld + v];
      dJ[i] += s;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < P * V; i += blockDim.x) {  // dbeta, and dF -> dF beta (1 - th^2)
      const int r = i / V, v = i % V, t = r / V;
      const Acc th = frame_tanh(ps[r], qs[t * V + v]);
      const Acc d = dF[r * ld + v];
      dbeta += static_cast<double>(d * th);
      dF[r * ld + v] = tanh_input_grad(d, beta, th);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < P; i += blockDim.x) {  // dp[t, u] = sum_v, dq[t, v] = -sum_u
      const int t = i / V, j = i % V;
      dp[(n * T + t0) * V + i] = Store<In>::from(sum_strided(dF + i * ld, 1, V));
      dq[(n * T + t0) * V + i] = Store<In>::from(-sum_strided(dF + t * V * ld + j, ld, V));
    }
  }
  red[threadIdx.x] = dbeta;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {  // fixed-shape tree (blockDim.x a power of two)
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  // workspace: gridDim.x dbeta partials (double), then gridDim.x dJ partials (V*V each)
  if (threadIdx.x == 0) reinterpret_cast<double*>(partial)[blockIdx.x] = red[0];
  Acc* slot = partial + gridDim.x * (sizeof(double) / sizeof(Acc)) + blockIdx.x * static_cast<int64_t>(VV);
  for (int i = threadIdx.x; i < VV; i += blockDim.x) slot[i] = dJ[i];
}

template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    channel_backward_kernel(const In* __restrict__ g, const In* __restrict__ x, const In* __restrict__ p,
                            const In* __restrict__ q, const In* __restrict__ beta_ptr, const In* __restrict__ G,
                            const In* __restrict__ J, Sizes sz, int CB, int TT, int64_t per, int64_t chunks,
                            int64_t cblocks, In* __restrict__ dx, Acc* __restrict__ partial) {
  const int C = sz.C, V = sz.V, ld = odd_stride(V), VV = V * V, TTV = TT * V;
  const int64_t T = sz.T;
  const ChannelBlock blk = channel_block(sz, CB, cblocks, chunks);
  Acc* Gs = smem_base<Acc>();  // CB x V x ld
  Acc* dG = Gs + CB * V * ld;  // CB x V x V
  Acc* bf = dG + CB * VV;      // TT x V x ld
  Acc* xs = bf + TT * V * ld;  // CB x TTV
  Acc* gs = xs + CB * TTV;     // CB x TTV
  Acc* ps = gs + CB * TTV;     // TTV
  Acc* qs = ps + TTV;          // TTV
  const Acc beta = to_acc(beta_ptr[0]);
  for (int c = 0; c < blk.cb; ++c)
    load_rows<In, Acc>(G + (blk.n * C + blk.c0 + c) * VV, J, V, V, ld, Gs + c * V * ld);
  for (int i = threadIdx.x; i < blk.cb * VV; i += blockDim.x) dG[i] = Acc(0);

  const int64_t tile_end = chunk_tile_end(T, TT, blk.chunk, per);
  for (int64_t tile = blk.chunk * per; tile < tile_end; ++tile) {
    const int64_t t0 = tile * TT;
    const int rows = static_cast<int>(min(static_cast<int64_t>(TT), T - t0));
    const int P = rows * V;
    __syncthreads();  // previous tile done with ps, qs, xs, gs, bf
    load_segment(p + (blk.n * T + t0) * V, P, ps);
    load_segment(q + (blk.n * T + t0) * V, P, qs);
    for (int c = 0; c < blk.cb; ++c) {
      load_segment(x + ((blk.n * C + blk.c0 + c) * T + t0) * V, P, xs + c * TTV);
      load_segment(g + ((blk.n * C + blk.c0 + c) * T + t0) * V, P, gs + c * TTV);
    }
    __syncthreads();
    build_frame_graphs(ps, qs, beta, rows, V, ld, bf);
    __syncthreads();
    for (int i = threadIdx.x; i < blk.cb * P; i += blockDim.x) {  // dX[c,t,v] = sum_u (bf + Gs)[u,v] dY[c,t,u]
      const int c = i / P, col = i % P, t = col / V, v = col % V;
      const Acc out = aggregate(bf + t * V * ld + v, Gs + c * V * ld + v, ld, gs + c * TTV + t * V, V);
      dx[((blk.n * C + blk.c0 + c) * T + t0) * V + col] = Store<In>::from(out);
    }
    for (int i = threadIdx.x; i < blk.cb * VV; i += blockDim.x) {  // dG[c,u,v] += sum_t dY[c,t,u] X[c,t,v]
      const int c = i / VV, u = (i % VV) / V, v = i % V;
      dG[i] += dot_strided(gs + c * TTV + u, V, xs + c * TTV + v, V, rows);
    }
  }
  Acc* slot = partial + ((blk.n * chunks + blk.chunk) * C + blk.c0) * static_cast<int64_t>(VV);
  for (int i = threadIdx.x; i < blk.cb * VV; i += blockDim.x) slot[i] = dG[i];
}

// dbeta, dJ: sums of the frame kernel's partials in slot order (dbeta in double).
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    reduce_frame_kernel(const Acc* __restrict__ partial, int64_t slots, int VV, In* __restrict__ dbeta,
                        In* __restrict__ dJ) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i > VV) return;
  if (i == 0) {
    const double* part = reinterpret_cast<const double*>(partial);
    double s = 0.0;
    for (int64_t k = 0; k < slots; ++k) s += part[k];
    dbeta[0] = Store<In>::from(static_cast<Acc>(s));
  } else {
    const Acc* part = partial + slots * static_cast<int64_t>(sizeof(double) / sizeof(Acc));
    Acc s = Acc(0);
    for (int64_t k = 0; k < slots; ++k) s += part[k * VV + i - 1];
    dJ[i - 1] = Store<In>::from(s);
  }
}

// dG[n, c, u, v]: sum over the chunks of sample n, in chunk order.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    reduce_channel_kernel(const Acc* __restrict__ partial, int64_t N, int64_t chunks, int64_t CVV,
                          In* __restrict__ dG) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= N * CVV) return;
  const int64_t n = i / CVV, j = i % CVV;
  Acc s = Acc(0);
  for (int64_t k = 0; k < chunks; ++k) s += partial[(n * chunks + k) * CVV + j];
  dG[i] = Store<In>::from(s);
}

inline bool valid_sizes(int64_t N, int64_t C, int64_t T, int64_t V) {
  return N >= 0 && T >= 0 && C >= 1 && C < (1 << 24) && V >= 1 && V <= kMaxJoints;
}

template <typename In, typename Acc>
cudaError_t forward_impl(const In* x, const In* p, const In* q, const In* beta, const In* G, const In* J, int64_t N,
                         int64_t C, int64_t T, int64_t V, In* y, cudaStream_t stream) {
  if (!valid_sizes(N, C, T, V)) return cudaErrorInvalidValue;
  const Config cfg = pick_config(0, C, V, sizeof(Acc));
  if (cfg.tile == 0) return cudaErrorInvalidValue;
  if (N == 0 || T == 0) return cudaSuccess;
  if (!x || !p || !q || !beta || !G || !J || !y) return cudaErrorInvalidValue;
  const Sizes sz{N, T, static_cast<int>(C), static_cast<int>(V)};
  const int64_t cblocks = (C + cfg.channels - 1) / cfg.channels;
  const int64_t per = tiles_per_chunk(N * cblocks, T, cfg.tile, kTargetForwardBlocks);
  const int64_t chunks = num_chunks(T, cfg.tile, per);
  const int64_t blocks = N * cblocks * chunks;
  if (!grid_fits(blocks)) return cudaErrorInvalidConfiguration;
  TRGNET_RETURN_IF_ERROR(allow_smem(forward_kernel<In, Acc>, cfg.smem));
  forward_kernel<In, Acc><<<static_cast<unsigned>(blocks), kThreads, cfg.smem, stream>>>(
      x, p, q, beta, G, J, sz, cfg.channels, cfg.tile, per, chunks, cblocks, y);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

template <typename In, typename Acc>
cudaError_t backward_impl(const In* g, const In* x, const In* p, const In* q, const In* beta, const In* G,
                          const In* J, int64_t N, int64_t C, int64_t T, int64_t V, In* dx, In* dp, In* dq,
                          In* dbeta, In* dG, In* dJ, Acc* workspace, cudaStream_t stream) {
  if (!valid_sizes(N, C, T, V)) return cudaErrorInvalidValue;
  const BackwardPlan plan = backward_plan(N, C, T, V, sizeof(Acc));
  if (plan.a.tile == 0 || plan.b.tile == 0) return cudaErrorInvalidValue;
  if (!dbeta || !dJ || (N > 0 && !dG)) return cudaErrorInvalidValue;
  const Sizes sz{N, T, static_cast<int>(C), static_cast<int>(V)};
  const int VV = static_cast<int>(V * V);
  Acc* frame_slots = workspace;
  Acc* channel_slots = workspace + plan.frame_slots_elems;
  int64_t frame_slot_count = 0;
  if (N > 0 && T > 0) {
    if (!g || !x || !p || !q || !beta || !G || !J || !dx || !dp || !dq || !workspace) return cudaErrorInvalidValue;
    frame_slot_count = N * plan.chunks_a;
    const int64_t blocks_b = N * plan.cblocks * plan.chunks_b;
    if (!grid_fits(frame_slot_count) || !grid_fits(blocks_b)) return cudaErrorInvalidConfiguration;
    TRGNET_RETURN_IF_ERROR(allow_smem(frame_backward_kernel<In, Acc>, plan.a.smem));
    frame_backward_kernel<In, Acc><<<static_cast<unsigned>(frame_slot_count), kThreads, plan.a.smem, stream>>>(
        g, x, p, q, beta, sz, plan.a.channels, plan.a.tile, plan.per_a, plan.chunks_a, dp, dq, frame_slots);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
    TRGNET_RETURN_IF_ERROR(allow_smem(channel_backward_kernel<In, Acc>, plan.b.smem));
    channel_backward_kernel<In, Acc><<<static_cast<unsigned>(blocks_b), kThreads, plan.b.smem, stream>>>(
        g, x, p, q, beta, G, J, sz, plan.b.channels, plan.b.tile, plan.per_b, plan.chunks_b, plan.cblocks, dx,
        channel_slots);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
  }
  reduce_frame_kernel<In, Acc><<<static_cast<unsigned>((VV + kThreads) / kThreads), kThreads, 0, stream>>>(
      frame_slots, frame_slot_count, VV, dbeta, dJ);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  if (N > 0) {
    const int64_t CVV = C * V * V;
    const int64_t blocks = (N * CVV + kThreads - 1) / kThreads;
    if (!grid_fits(blocks)) return cudaErrorInvalidConfiguration;
    // T == 0: no channel slots were written; chunks = 0 makes the reduction write zeros.
    reduce_channel_kernel<In, Acc><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        channel_slots, N, T > 0 ? plan.chunks_b : 0, CVV, dG);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
  }
  return cudaSuccess;
}

}  // namespace
}  // namespace agc

#define TRGNET_AGC_DEFINE_LAUNCHERS(T_IN, T_ACC)                                                               \
  TRGNET_AGC_FORWARD_LAUNCHER(T_IN, T_ACC) {                                                                   \
    return agc::forward_impl<T_IN, T_ACC>(x, p, q, beta, channel_graph, joint_graph, N, C, T, V, out, stream); \
  }                                                                                                            \
  TRGNET_AGC_BACKWARD_LAUNCHER(T_IN, T_ACC) {                                                                  \
    return agc::backward_impl<T_IN, T_ACC>(grad_out, x, p, q, beta, channel_graph, joint_graph, N, C, T, V,    \
                                           grad_x, grad_p, grad_q, grad_beta, grad_channel_graph,              \
                                           grad_joint_graph, workspace, stream);                               \
  }

TRGNET_AGC_DEFINE_LAUNCHERS(float, float)
TRGNET_AGC_DEFINE_LAUNCHERS(double, double)
TRGNET_AGC_DEFINE_LAUNCHERS(__half, float)
TRGNET_AGC_DEFINE_LAUNCHERS(__nv_bfloat16, float)

}  // namespace trgnet
