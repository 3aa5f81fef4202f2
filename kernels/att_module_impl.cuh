// CUDA kernels of the fused AttModule and their launch code (the pass structure, launch counts, what the
// backward recomputes and writes, and the workspace are listed at the top of att_module.cuh; launchers declared in
// att_module.h). No torch headers. Expanded by att_module.cu (forward) and att_module_backward.cu (backward).
//
// Every tile pass runs kThreads threads per block, one block per (sequence n, chunk) (grid flattened:
// blockIdx.x = n * chunks + chunk); the block finds its sequence in cu_seqlens and loops over its chunk's tiles.
// Shared memory: kTileBuffers (tile x C) accumulator buffers (frame-major rows), the staged K-slice of a weight,
// 4 C per-channel statistics, and per-(frame, head) den / dden. Every phase ends with __syncthreads(); each
// output element of a phase has one fixed owner thread, so every sum has a fixed order.
#pragma once

#include "att_module.h"

#include "att_module.cuh"
#include "cuda_common.cuh"
#include "linear_attention.cuh"  // la::sigmoid, la::sigmoid_grad

namespace trgnet {
namespace am {

// What every kernel of a call gets (by value).
template <typename In, typename Acc>
struct Call {
  Inputs<In, Acc> in;
  Plan plan;
  int D;
  uint32_t threshold1, threshold2;  // dropout thresholds, floor(p 2^24)
};

namespace {

// w(o, i) = W[off + o * so + i * si]: a Linear weight (so = C, si = 1), its transpose (1, C), or one tap k of the
// conv weight (3 C, 3, k) and its transpose (3, 3 C, k).
struct WeightView {
  int64_t so, si, off;
};
__host__ __device__ __forceinline__ WeightView linear_view(int64_t C) { return {C, 1, 0}; }
__host__ __device__ __forceinline__ WeightView linear_transposed(int64_t C) { return {1, C, 0}; }
__host__ __device__ __forceinline__ WeightView conv_tap(int64_t C, int k) { return {3 * C, 3, k}; }
__host__ __device__ __forceinline__ WeightView conv_tap_transposed(int64_t C, int k) { return {3, 3 * C, k}; }

// The block's sequence, chunk and shared memory.
template <typename Acc>
struct Block {
  Span span;
  int64_t n, chunk;
  Acc* buf[kTileBuffers];
  Acc *slice, *stats, *den, *dden;  // stats: 4 C
};

template <typename In, typename Acc>
__device__ __forceinline__ Block<Acc> make_block(const Call<In, Acc>& c) {
  Block<Acc> b;
  b.n = blockIdx.x / c.plan.chunks;
  b.chunk = blockIdx.x % c.plan.chunks;
  b.span = sequence_span(c.in.cu_seqlens, b.n, c.in.N, c.in.B, c.in.T);
  const int64_t tc = c.plan.tile * c.in.C;
  Acc* p = smem_base<Acc>();
  for (int i = 0; i < kTileBuffers; ++i) b.buf[i] = p + i * tc;
  b.slice = p + kTileBuffers * tc;
  b.stats = b.slice + c.plan.slice * c.in.C;
  b.den = b.stats + 4 * c.in.C;
  b.dden = b.den + c.plan.tile * c.in.H;
  return b;
}

// body(t0, rows, cover) for the tiles of the block's chunk that start inside the sequence's cover: t0 the tile's
// first frame (sequence-relative), rows its frames inside the sequence, cover its frames inside the cover.
template <typename In, typename Acc, typename Body>
__device__ __forceinline__ void for_each_tile(const Call<In, Acc>& c, const Block<Acc>& b, Body body) {
  const int tile = c.plan.tile;
  const int64_t tiles = (c.in.T + tile - 1) / tile;
  const int64_t last = min((b.chunk + 1) * c.plan.per, tiles);
  for (int64_t k = b.chunk * c.plan.per; k < last; ++k) {
    const int64_t t0 = k * tile;
    if (t0 >= b.span.cover) break;
    const int rows = static_cast<int>(max(int64_t(0), min(static_cast<int64_t>(tile), b.span.len - t0)));
    body(t0, rows, static_cast<int>(min(static_cast<int64_t>(tile), b.span.cover - t0)));
  }
}

// Frames of the sequence in chunk `chunk` (the count of its InstanceNorm partial).
template <typename In, typename Acc>
__device__ __forceinline__ int64_t chunk_frames(const Call<In, Acc>& c, int64_t len, int64_t chunk) {
  const int64_t span = c.plan.per * c.plan.tile;
  return max(int64_t(0), min(len, (chunk + 1) * span) - chunk * span);
}

// dst[r][ch] = src at frame t0 + r + shift of channel ch of a (B, C, T) tensor (zero outside [0, len) and for
// r >= rows), r < tile. Consecutive threads read consecutive frames.
template <typename In, typename Acc>
__device__ __forceinline__ void load_tile(const In* __restrict__ src, const Call<In, Acc>& c, const Span& s,
                                          int64_t t0, int64_t shift, int rows, Acc* dst) {
  const int tile = c.plan.tile, C = static_cast<int>(c.in.C);
  for (int idx = threadIdx.x; idx < tile * C; idx += kThreads) {
    const int r = idx % tile, ch = idx / tile;
    const int64_t t = t0 + r + shift;
    dst[r * C + ch] =
        r < rows && t >= 0 && t < s.len ? to_acc(src[(s.row * C + ch) * c.in.T + s.start + t]) : Acc(0);
  }
}

// The same for a (B, T, C) accumulator intermediate of the backward (consecutive threads: consecutive channels).
template <typename In, typename Acc>
__device__ __forceinline__ void load_frames(const Acc* __restrict__ src, const Call<In, Acc>& c, const Span& s,
                                            int64_t t0, int64_t shift, int rows, Acc* dst) {
  const int tile = c.plan.tile, C = static_cast<int>(c.in.C);
  for (int idx = threadIdx.x; idx < tile * C; idx += kThreads) {
    const int r = idx / C, ch = idx % C;
    const int64_t t = t0 + r + shift;
    dst[idx] = r < rows && t >= 0 && t < s.len ? src[(s.row * c.in.T + s.start + t) * C + ch] : Acc(0);
  }
  __syncthreads();
}
template <typename In, typename Acc>
__device__ __forceinline__ void store_frames(const Acc* src, const Call<In, Acc>& c, const Span& s, int64_t t0,
                                             int rows, Acc* __restrict__ dst) {
  const int C = static_cast<int>(c.in.C);
  for (int idx = threadIdx.x; idx < rows * C; idx += kThreads)
    dst[(s.row * c.in.T + s.start + t0 + idx / C) * C + idx % C] = src[idx];
}

// out[r][o] (+)= sum_i A[r][i] w(o, i) (+ bias[o] when not accumulating) for r < rows: the weight staged in
// K-slices of c.plan.slice input channels, each thread owning fixed outputs. Starts and ends with a barrier.
template <typename In, typename Acc>
__device__ __forceinline__ void gemm(const Call<In, Acc>& c, const Block<Acc>& b, const Acc* A, int rows,
                                     const In* __restrict__ W, WeightView v, const In* __restrict__ bias,
                                     bool accumulate, Acc* out) {
  const int C = static_cast<int>(c.in.C), kc = c.plan.slice;
  for (int k0 = 0; k0 < C; k0 += kc) {
    const int kn = min(kc, C - k0);
    __syncthreads();  // A is written, the previous slice consumed
    for (int idx = threadIdx.x; idx < kn * C; idx += kThreads) {
      const int kk = idx / C, o = idx % C;
      b.slice[idx] = to_acc(W[v.off + o * v.so + (k0 + kk) * v.si]);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
      const int r = idx / C, o = idx % C;
      Acc a = k0 > 0 || accumulate ? out[idx] : bias != nullptr ? to_acc(bias[o]) : Acc(0);
      for (int kk = 0; kk < kn; ++kk) a += A[r * C + k0 + kk] * b.slice[kk * C + o];
      out[idx] = a;
    }
  }
  __syncthreads();
}

// The block's parameter-gradient partial: pw[w(o, i)] += sum_r gy[r][o] x[r][i]; pb[o] += sum_r gy[r][o] (pb may
// be null). Global, block-private, one owner thread per entry.
template <typename In, typename Acc>
__device__ __forceinline__ void weight_grad(const Call<In, Acc>& c, const Acc* gy, const Acc* x, int rows,
                                            Acc* __restrict__ pw, WeightView v, Acc* __restrict__ pb) {
  const int C = static_cast<int>(c.in.C);
  for (int idx = threadIdx.x; idx < C * C; idx += kThreads) {
    const int o = idx / C, i = idx % C;
    Acc a = Acc(0);
    for (int r = 0; r < rows; ++r) a += gy[r * C + o] * x[r * C + i];
    pw[v.off + o * v.so + i * v.si] += a;
  }
  if (pb == nullptr) return;
  for (int o = threadIdx.x; o < C; o += kThreads) {
    Acc a = Acc(0);
    for (int r = 0; r < rows; ++r) a += gy[r * C + o];
    pb[o] += a;
  }
}

template <typename Acc>
__device__ __forceinline__ void zero(Acc* p, int64_t n) {
  for (int64_t i = threadIdx.x; i < n; i += kThreads) p[i] = Acc(0);
}

// o = ReLU(conv(x)) of the tile's rows, xin the staging buffer of the taps.
template <typename In, typename Acc>
__device__ __forceinline__ void conv_relu_tile(const Call<In, Acc>& c, const Block<Acc>& b, int64_t t0, int rows,
                                               Acc* xin, Acc* o) {
  for (int k = 0; k < 3; ++k) {
    load_tile(c.in.x, c, b.span, t0, (k - 1) * c.in.dilation, rows, xin);
    gemm(c, b, xin, rows, c.in.weights[kConvW], conv_tap(c.in.C, k), c.in.weights[kConvB], k > 0, o);
  }
  for (int idx = threadIdx.x; idx < rows * c.in.C; idx += kThreads) o[idx] = o[idx] > Acc(0) ? o[idx] : Acc(0);
  __syncthreads();
}

// q = (o - mean) rstd with the block's statistics (stats[0, C) mean, [C, 2C) rstd).
template <typename In, typename Acc>
__device__ __forceinline__ void normalize(const Call<In, Acc>& c, const Block<Acc>& b, int rows, const Acc* o,
                                          Acc* q) {
  const int C = static_cast<int>(c.in.C);
  for (int idx = threadIdx.x; idx < rows * C; idx += kThreads)
    q[idx] = (o[idx] - b.stats[idx % C]) * b.stats[C + idx % C];
  __syncthreads();
}

// The saved statistics of sequence n into stats[0, 2C).
template <typename In, typename Acc>
__device__ __forceinline__ void load_stats(const Call<In, Acc>& c, const Block<Acc>& b, const Acc* norm_stats) {
  for (int i = threadIdx.x; i < 2 * c.in.C; i += kThreads) b.stats[i] = norm_stats[b.n * 2 * c.in.C + i];
  __syncthreads();
}

// In place: x = sigmoid(x) for the tile's rows.
template <typename In, typename Acc>
__device__ __forceinline__ void sigmoid_rows(const Call<In, Acc>& c, int rows, Acc* x) {
  for (int idx = threadIdx.x; idx < rows * c.in.C; idx += kThreads) x[idx] = la::sigmoid(x[idx]);
  __syncthreads();
}

// From phi(Q) (phiq): den[r][h] = phi(Q) . (ksum + eps), then a = phi(Q) KV / den.
template <typename In, typename Acc>
__device__ __forceinline__ void attention_rows(const Call<In, Acc>& c, const Block<Acc>& b, int rows,
                                               const Acc* phiq, const Acc* __restrict__ kv,
                                               const Acc* __restrict__ ks, Acc* a) {
  const int C = static_cast<int>(c.in.C), H = static_cast<int>(c.in.H), D = c.D;
  const Acc eps = static_cast<Acc>(c.in.attention_eps);
  const Acc* ksn = ks + b.n * C;
  const Acc* kvn = kv + b.n * C * D;
  for (int idx = threadIdx.x; idx < rows * H; idx += kThreads) {
    const int r = idx / H, h = idx % H;
    Acc den = Acc(0);
    for (int d = 0; d < D; ++d) den += phiq[r * C + h * D + d] * (ksn[h * D + d] + eps);
    b.den[idx] = den;
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
    const int r = idx / C, h = idx % C / D, e = idx % D;
    Acc num = Acc(0);
    for (int d = 0; d < D; ++d) num += phiq[r * C + h * D + d] * kvn[(h * D + d) * D + e];
    a[idx] = la::output_value(num, b.den[r * H + h]);
  }
  __syncthreads();
}

// Mask and dropout of frame t0 + r, channel ch of the block's sequence.
// One tile's normalised conv output q, phi(K) and V as the forward computes them (the forward's state pass and
// the backward's key/value pass); xin is scratch (the conv input, then the decoder's values).
template <typename In, typename Acc>
__device__ __forceinline__ void key_value_tile(const Call<In, Acc>& c, const Block<Acc>& b, int64_t t0, int rows,
                                               Acc* xin, Acc* q, Acc* K, Acc* V) {
  const int C = static_cast<int>(c.in.C);
  conv_relu_tile(c, b, t0, rows, xin, q);
  normalize(c, b, rows, q, q);
  const Acc* vin = q;
  if (c.in.values) {
    load_tile(c.in.values, c, b.span, t0, 0, rows, xin);
    vin = xin;
  }
  gemm(c, b, q, rows, c.in.weights[kKeyW], linear_view(C), c.in.weights[kKeyB], false, K);
  gemm(c, b, vin, rows, c.in.weights[kValueW], linear_view(C), c.in.weights[kValueB], false, V);
  sigmoid_rows(c, rows, K);
}

template <typename In, typename Acc>
__device__ __forceinline__ int64_t flat_index(const Call<In, Acc>& c, const Span& s, int64_t t0, int r, int ch) {
  return (s.row * c.in.C + ch) * c.in.T + s.start + t0 + r;
}
template <typename In, typename Acc>
__device__ __forceinline__ Acc mask_at(const Call<In, Acc>& c, const Span& s, int64_t t0, int r) {
  return c.in.mask ? to_acc(c.in.mask[s.row * c.in.T + s.start + t0 + r]) : Acc(1);
}

// P = out-proj(a) -> p = P r1 m (in P's buffer); u = alpha p + o (in o's buffer).
template <typename In, typename Acc>
__device__ __forceinline__ void project_residual(const Call<In, Acc>& c, const Block<Acc>& b, int64_t t0, int rows,
                                                 const Acc* a, Acc* p, Acc* o_to_u) {
  const int C = static_cast<int>(c.in.C);
  gemm(c, b, a, rows, c.in.weights[kOutW], linear_view(C), c.in.weights[kOutB], false, p);
  const Dropout<Acc> drop1 = make_dropout<Acc>(c.in.dropout_seed, 0, c.threshold1, c.in.attention_dropout);
  const Acc alpha = *c.in.alpha;
  for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
    const int r = idx / C, ch = idx % C;
    p[idx] *= drop1.factor(flat_index(c, b.span, t0, r, ch)) * mask_at(c, b.span, t0, r);
    o_to_u[idx] = alpha * p[idx] + o_to_u[idx];
  }
  __syncthreads();
}

// ---- forward ---------------------------------------------------------------------------------------------

// conv + ReLU -> the chunk's InstanceNorm partial (mean, M2 per channel; Chan over the tiles) at part[0, 2C).
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads) conv_stats_kernel(Call<In, Acc> c, Acc* __restrict__ partials) {
  const Block<Acc> b = make_block(c);
  const int C = static_cast<int>(c.in.C), ch = threadIdx.x;
  Acc count = Acc(0), mean = Acc(0), m2 = Acc(0);
  for_each_tile(c, b, [&](int64_t t0, int rows, int) {
    if (rows == 0) return;
    conv_relu_tile(c, b, t0, rows, b.buf[0], b.buf[1]);
    if (ch < C) {
      const Acc* o = b.buf[1];
      Acc tm = Acc(0), t2 = Acc(0);
      for (int r = 0; r < rows; ++r) tm += o[r * C + ch];
      tm /= static_cast<Acc>(rows);
      for (int r = 0; r < rows; ++r) t2 += (o[r * C + ch] - tm) * (o[r * C + ch] - tm);
      chan_combine(count, mean, m2, static_cast<Acc>(rows), tm, t2);
    }
    __syncthreads();
  });
  Acc* part = partials + blockIdx.x * forward_partial_elems(c.in.C, c.in.H);
  if (ch < C) {
    part[ch] = mean;
    part[C + ch] = m2;
  }
}

// Chan over the chunks -> mean, rstd (chunk 0 writes norm_stats); q, K, V -> the chunk's [KV | ksum] partial at
// part[2C, 2C + C (D + 1)) (row h D + d: KV[h][d][0..D), ksum[h][d]).
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    state_kernel(Call<In, Acc> c, Acc* __restrict__ partials, Acc* __restrict__ norm_stats) {
  const Block<Acc> b = make_block(c);
  const int C = static_cast<int>(c.in.C), D = c.D, ch = threadIdx.x;
  const int64_t stride = forward_partial_elems(c.in.C, c.in.H);
  if (ch < C) {
    Acc count = Acc(0), mean = Acc(0), m2 = Acc(0);
    for (int64_t j = 0; j < c.plan.chunks; ++j) {
      const Acc* pj = partials + (b.n * c.plan.chunks + j) * stride;
      chan_combine(count, mean, m2, static_cast<Acc>(chunk_frames(c, b.span.len, j)), pj[ch], pj[C + ch]);
    }
    b.stats[ch] = mean;
    b.stats[C + ch] = inverse_std(m2, count, static_cast<Acc>(c.in.norm_eps));
    if (b.chunk == 0) {
      norm_stats[b.n * 2 * C + ch] = b.stats[ch];
      norm_stats[b.n * 2 * C + C + ch] = b.stats[C + ch];
    }
  }
  Acc* state = partials + blockIdx.x * stride + 2 * C;
  zero(state, C * (D + 1));
  __syncthreads();
  for_each_tile(c, b, [&](int64_t t0, int rows, int) {
    if (rows == 0) return;
    Acc *xin = b.buf[0], *q = b.buf[1], *K = b.buf[2], *V = b.buf[3];
    key_value_tile(c, b, t0, rows, xin, q, K, V);
    for (int idx = threadIdx.x; idx < C * (D + 1); idx += kThreads) {
      const int hd = idx / (D + 1), e = idx % (D + 1), h = hd / D;
      Acc a = Acc(0);
      for (int r = 0; r < rows; ++r) a += K[r * C + hd] * (e < D ? V[r * C + h * D + e] : Acc(1));
      state[idx] += a;
    }
    __syncthreads();
  });
}

// Fixed-order sum over the chunks of sequence n of the partial at base + (n chunks + j) stride, `entries` = rows
// x cols elements. With out_last: columns [0, cols - 1) to out_main (n, rows, cols - 1), the last to out_last
// (n, rows); else all to out_main (n, entries). Grid: N x ceil(entries / kThreads).
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    sum_chunks_kernel(const Acc* __restrict__ base, int64_t stride, int64_t chunks, int64_t entries, int cols,
                      Acc* __restrict__ out_main, Acc* __restrict__ out_last) {
  const int64_t blocks = (entries + kThreads - 1) / kThreads;
  const int64_t n = blockIdx.x / blocks, idx = (blockIdx.x % blocks) * kThreads + threadIdx.x;
  if (idx >= entries) return;
  Acc a = Acc(0);
  for (int64_t j = 0; j < chunks; ++j) a += base[(n * chunks + j) * stride + idx];
  if (out_last == nullptr) {
    out_main[n * entries + idx] = a;
    return;
  }
  const int64_t rows = entries / cols, row = idx / cols, col = idx % cols;
  if (col < cols - 1)
    out_main[(n * rows + row) * (cols - 1) + col] = a;
  else
    out_last[n * rows + row] = a;
}

// conv, q, Q, a, out-proj, dropout 1, mask, alpha-add, conv_out, dropout 2, residual, mask -> out; zeros on the
// cover's frames outside the sequence.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    output_kernel(Call<In, Acc> c, const Acc* __restrict__ norm_stats, const Acc* __restrict__ kv,
                  const Acc* __restrict__ ks, In* __restrict__ out) {
  const Block<Acc> b = make_block(c);
  const int C = static_cast<int>(c.in.C);
  load_stats(c, b, norm_stats);
  const Dropout<Acc> drop2 = make_dropout<Acc>(c.in.dropout_seed, 1, c.threshold2, c.in.dropout);
  for_each_tile(c, b, [&](int64_t t0, int rows, int cover) {
    Acc *xin = b.buf[0], *o = b.buf[1], *q = b.buf[2], *Q = b.buf[3];
    if (rows > 0) {
      conv_relu_tile(c, b, t0, rows, xin, o);
      normalize(c, b, rows, o, q);
      gemm(c, b, q, rows, c.in.weights[kQueryW], linear_view(C), c.in.weights[kQueryB], false, Q);
      sigmoid_rows(c, rows, Q);
      Acc* a = q;
      attention_rows(c, b, rows, Q, kv, ks, a);
      project_residual(c, b, t0, rows, a, Q, o);
      gemm(c, b, o, rows, c.in.weights[kConvOutW], linear_view(C), c.in.weights[kConvOutB], false, xin);
    }
    const int tile = c.plan.tile;
    for (int idx = threadIdx.x; idx < tile * C; idx += kThreads) {
      const int r = idx % tile, ch = idx / tile;
      if (r >= cover) continue;
      const int64_t i = flat_index(c, b.span, t0, r, ch);
      const Acc y = r < rows ? (to_acc(c.in.x[i]) + xin[r * C + ch] * drop2.factor(i)) * mask_at(c, b.span, t0, r)
                             : Acc(0);
      out[i] = Store<In>::from(y);
    }
    __syncthreads();
  });
}

// ---- backward ----------------------------------------------------------------------------------------------

// Offsets in a backward program's partial: [dKV | dksum] state, InstanceNorm sums, parameter gradients.
__host__ __device__ __forceinline__ int64_t bwd_state_offset() { return 0; }
__host__ __device__ __forceinline__ int64_t bwd_norm_offset(int64_t C, int64_t H) { return state_elems(C, H); }
__host__ __device__ __forceinline__ int64_t bwd_param_offset(int64_t C, int64_t H) {
  return state_elems(C, H) + 2 * C;
}

// Recompute to u; g_y, g_u (-> g_direct), g_P, g_a, g_Q; the chunk's partials of [dKV | dksum] and of the Wco,
// bco, alpha, Wo, bo, Wq, bq gradients (the parameter partial zeroed here first); Wq^T g_Q -> g_norm.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    attention_backward_kernel(Call<In, Acc> c, const In* __restrict__ grad_out, const Acc* __restrict__ norm_stats,
                              const Acc* __restrict__ kv, const Acc* __restrict__ ks, Acc* __restrict__ partials,
                              Acc* __restrict__ g_direct, Acc* __restrict__ g_norm) {
  const Block<Acc> b = make_block(c);
  const int C = static_cast<int>(c.in.C), H = static_cast<int>(c.in.H), D = c.D;
  Acc* part = partials + blockIdx.x * backward_partial_elems(C, H);
  Acc* dstate = part + bwd_state_offset();
  Acc* params = part + bwd_param_offset(C, H);
  zero(dstate, C * (D + 1));
  zero(params, param_count(C));
  load_stats(c, b, norm_stats);
  const Dropout<Acc> drop1 = make_dropout<Acc>(c.in.dropout_seed, 0, c.threshold1, c.in.attention_dropout);
  const Dropout<Acc> drop2 = make_dropout<Acc>(c.in.dropout_seed, 1, c.threshold2, c.in.dropout);
  const Acc alpha = *c.in.alpha, eps = static_cast<Acc>(c.in.attention_eps);
  const Acc* kvn = kv + b.n * C * D;
  const Acc* ksn = ks + b.n * C;
  Acc alpha_grad = Acc(0);
  for_each_tile(c, b, [&](int64_t t0, int rows, int) {
    if (rows == 0) return;
    Acc *o = b.buf[0], *q = b.buf[1], *phiq = b.buf[2], *a = b.buf[3], *p = b.buf[4], *gy = b.buf[5];
    conv_relu_tile(c, b, t0, rows, gy, o);
    normalize(c, b, rows, o, q);
    gemm(c, b, q, rows, c.in.weights[kQueryW], linear_view(C), c.in.weights[kQueryB], false, phiq);
    sigmoid_rows(c, rows, phiq);
    attention_rows(c, b, rows, phiq, kv, ks, a);
    project_residual(c, b, t0, rows, a, p, o);
    Acc* u = o;
    for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
      const int r = idx / C, ch = idx % C;
      const int64_t i = flat_index(c, b.span, t0, r, ch);
      gy[idx] = to_acc(grad_out[i]) * mask_at(c, b.span, t0, r) * drop2.factor(i);
    }
    __syncthreads();
    weight_grad(c, gy, u, rows, params + part_offset(kConvOutW, C), linear_view(C), params + part_offset(kConvOutB, C));
    Acc* gu = o;
    gemm(c, b, gy, rows, c.in.weights[kConvOutW], linear_transposed(C), static_cast<const In*>(nullptr), false, gu);
    store_frames(gu, c, b.span, t0, rows, g_direct);
    Acc* gP = p;
    for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
      const int r = idx / C, ch = idx % C;
      alpha_grad += gu[idx] * p[idx];
      gP[idx] = alpha * gu[idx] * drop1.factor(flat_index(c, b.span, t0, r, ch)) * mask_at(c, b.span, t0, r);
    }
    __syncthreads();
    weight_grad(c, gP, a, rows, params + part_offset(kOutW, C), linear_view(C), params + part_offset(kOutB, C));
    Acc* dn = gy;  // g_a, then dN = g_a / den in place
    gemm(c, b, gP, rows, c.in.weights[kOutW], linear_transposed(C), static_cast<const In*>(nullptr), false, dn);
    for (int idx = threadIdx.x; idx < rows * H; idx += kThreads) {
      const int r = idx / H, h = idx % H;
      Acc dot = Acc(0);
      for (int e = 0; e < D; ++e) dot += dn[r * C + h * D + e] * a[r * C + h * D + e];
      b.dden[idx] = -dot / b.den[idx];
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) dn[idx] /= b.den[idx / C * H + idx % C / D];
    __syncthreads();
    Acc* gQ = a;
    for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
      const int r = idx / C, hd = idx % C, h = hd / D;
      Acc s = (ksn[hd] + eps) * b.dden[r * H + h];
      for (int e = 0; e < D; ++e) s += kvn[hd * D + e] * dn[r * C + h * D + e];
      gQ[idx] = la::sigmoid_grad(phiq[idx]) * s;
    }
    for (int idx = threadIdx.x; idx < C * (D + 1); idx += kThreads) {
      const int hd = idx / (D + 1), e = idx % (D + 1), h = hd / D;
      Acc s = Acc(0);
      for (int r = 0; r < rows; ++r) s += phiq[r * C + hd] * (e < D ? dn[r * C + h * D + e] : b.dden[r * H + h]);
      dstate[idx] += s;
    }
    __syncthreads();
    weight_grad(c, gQ, q, rows, params + part_offset(kQueryW, C), linear_view(C), params + part_offset(kQueryB, C));
    gemm(c, b, gQ, rows, c.in.weights[kQueryW], linear_transposed(C), static_cast<const In*>(nullptr), false, phiq);
    store_frames(phiq, c, b.span, t0, rows, g_norm);
    __syncthreads();
  });
  // alpha's partial: the threads' sums added in thread order
  Acc* sums = smem_base<Acc>();  // the plan keeps >= kThreads elements
  sums[threadIdx.x] = alpha_grad;
  __syncthreads();
  if (threadIdx.x == 0) {
    Acc s = Acc(0);
    for (int i = 0; i < kThreads; ++i) s += sums[i];
    params[part_offset(kAlpha, C)] = s;
  }
}

// Recompute q, K, V; g_K, g_V from dS = [dKV | dksum]; the Wk, bk, Wv, bv gradient partials; g_q = g_norm +
// Wk^T g_K (+ Wv^T g_V in the encoder) -> g_norm; grad_values = Wv^T g_V (decoder; zeros on the cover's frames
// outside the sequence); the chunk's InstanceNorm backward sums (sum g_q, sum g_q q per channel).
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    key_value_backward_kernel(Call<In, Acc> c, const Acc* __restrict__ norm_stats, const Acc* __restrict__ dS,
                              Acc* __restrict__ partials, Acc* __restrict__ g_norm, In* __restrict__ grad_values) {
  const Block<Acc> b = make_block(c);
  const int C = static_cast<int>(c.in.C), H = static_cast<int>(c.in.H), D = c.D, ch = threadIdx.x;
  Acc* part = partials + blockIdx.x * backward_partial_elems(C, H);
  Acc* params = part + bwd_param_offset(C, H);
  const Acc* dSn = dS + b.n * C * (D + 1);
  load_stats(c, b, norm_stats);
  Acc sum_g = Acc(0), sum_gq = Acc(0);
  for_each_tile(c, b, [&](int64_t t0, int rows, int cover) {
    Acc *xin = b.buf[0], *q = b.buf[1], *K = b.buf[2], *V = b.buf[3], *gV = b.buf[4];
    if (rows > 0) {
      key_value_tile(c, b, t0, rows, xin, q, K, V);
      const Acc* vin = c.in.values ? xin : q;  // the value projection's input, as key_value_tile left it
      for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
        const int r = idx / C, h = idx % C / D, e = idx % D;
        Acc s = Acc(0);
        for (int d = 0; d < D; ++d) s += K[r * C + h * D + d] * dSn[(h * D + d) * (D + 1) + e];
        gV[idx] = s;
      }
      __syncthreads();
      Acc* gK = K;
      for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
        const int r = idx / C, hd = idx % C, h = hd / D;
        const Acc* row = dSn + hd * (D + 1);
        Acc s = row[D];
        for (int e = 0; e < D; ++e) s += row[e] * V[r * C + h * D + e];
        gK[idx] = la::sigmoid_grad(K[idx]) * s;
      }
      __syncthreads();
      weight_grad(c, gK, q, rows, params + part_offset(kKeyW, C), linear_view(C), params + part_offset(kKeyB, C));
      weight_grad(c, gV, vin, rows, params + part_offset(kValueW, C), linear_view(C),
                  params + part_offset(kValueB, C));
      Acc* gq = V;
      load_frames(g_norm, c, b.span, t0, 0, rows, gq);
      gemm(c, b, gK, rows, c.in.weights[kKeyW], linear_transposed(C), static_cast<const In*>(nullptr), true, gq);
      if (c.in.values)
        gemm(c, b, gV, rows, c.in.weights[kValueW], linear_transposed(C), static_cast<const In*>(nullptr), false,
             xin);
      else
        gemm(c, b, gV, rows, c.in.weights[kValueW], linear_transposed(C), static_cast<const In*>(nullptr), true, gq);
      if (ch < C)
        for (int r = 0; r < rows; ++r) {
          sum_g += gq[r * C + ch];
          sum_gq += gq[r * C + ch] * q[r * C + ch];
        }
      store_frames(gq, c, b.span, t0, rows, g_norm);
    }
    if (c.in.values) {
      const int tile = c.plan.tile;
      for (int idx = threadIdx.x; idx < tile * C; idx += kThreads) {
        const int r = idx % tile, k = idx / tile;
        if (r < cover) grad_values[flat_index(c, b.span, t0, r, k)] = Store<In>::from(r < rows ? xin[r * C + k] : Acc(0));
      }
    }
    __syncthreads();
  });
  if (ch < C) {
    part[bwd_norm_offset(C, H) + ch] = sum_g;
    part[bwd_norm_offset(C, H) + C + ch] = sum_gq;
  }
}

// Recompute o, q; g_pre = (g_u + rstd (g_q - mean g_q - q mean(g_q q))) relu'(o) -> g_direct (in place of g_u);
// the Wc, bc gradient partials.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    conv_backward_kernel(Call<In, Acc> c, const Acc* __restrict__ norm_stats, Acc* __restrict__ partials,
                         Acc* __restrict__ g_direct, const Acc* __restrict__ g_norm) {
  const Block<Acc> b = make_block(c);
  const int C = static_cast<int>(c.in.C), H = static_cast<int>(c.in.H), ch = threadIdx.x;
  const int64_t stride = backward_partial_elems(C, H);
  Acc* params = partials + blockIdx.x * stride + bwd_param_offset(C, H);
  load_stats(c, b, norm_stats);
  if (ch < C) {  // stats[2C, 4C): mean g_q, mean g_q q over the sequence (chunk sums in chunk order)
    Acc sg = Acc(0), sgq = Acc(0);
    for (int64_t j = 0; j < c.plan.chunks; ++j) {
      const Acc* pj = partials + (b.n * c.plan.chunks + j) * stride + bwd_norm_offset(C, H);
      sg += pj[ch];
      sgq += pj[C + ch];
    }
    const Acc len = static_cast<Acc>(b.span.len > 0 ? b.span.len : 1);
    b.stats[2 * C + ch] = sg / len;
    b.stats[3 * C + ch] = sgq / len;
  }
  __syncthreads();
  for_each_tile(c, b, [&](int64_t t0, int rows, int) {
    if (rows == 0) return;
    Acc *xin = b.buf[0], *o = b.buf[1], *gq = b.buf[2], *gpre = b.buf[3];
    conv_relu_tile(c, b, t0, rows, xin, o);
    load_frames(g_norm, c, b.span, t0, 0, rows, gq);
    load_frames(g_direct, c, b.span, t0, 0, rows, gpre);
    for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
      const int k = idx % C;
      const Acc q = (o[idx] - b.stats[k]) * b.stats[C + k];
      gpre[idx] = o[idx] > Acc(0) ? gpre[idx] + b.stats[C + k] * (gq[idx] - b.stats[2 * C + k] - q * b.stats[3 * C + k])
                                  : Acc(0);
    }
    __syncthreads();
    store_frames(gpre, c, b.span, t0, rows, g_direct);
    for (int k = 0; k < 3; ++k) {
      load_tile(c.in.x, c, b.span, t0, (k - 1) * c.in.dilation, rows, xin);
      __syncthreads();
      weight_grad(c, gpre, xin, rows, params + part_offset(kConvW, C), conv_tap(C, k),
                  k == 0 ? params + part_offset(kConvB, C) : nullptr);
      __syncthreads();
    }
  });
}

// grad_x = g m + sum_k Wc_k^T g_pre[t - (k - 1) d]; zeros on the cover's frames outside the sequence.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    input_backward_kernel(Call<In, Acc> c, const In* __restrict__ grad_out, const Acc* __restrict__ g_pre,
                          In* __restrict__ grad_x) {
  const Block<Acc> b = make_block(c);
  const int C = static_cast<int>(c.in.C);
  for_each_tile(c, b, [&](int64_t t0, int rows, int cover) {
    Acc *window = b.buf[0], *gx = b.buf[1];
    if (rows > 0)
      for (int k = 0; k < 3; ++k) {
        load_frames(g_pre, c, b.span, t0, -(k - 1) * c.in.dilation, rows, window);
        gemm(c, b, window, rows, c.in.weights[kConvW], conv_tap_transposed(C, k), static_cast<const In*>(nullptr),
             k > 0, gx);
      }
    const int tile = c.plan.tile;
    for (int idx = threadIdx.x; idx < tile * C; idx += kThreads) {
      const int r = idx % tile, k = idx / tile;
      if (r >= cover) continue;
      const int64_t i = flat_index(c, b.span, t0, r, k);
      grad_x[i] = Store<In>::from(
          r < rows ? to_acc(grad_out[i]) * mask_at(c, b.span, t0, r) + gx[r * C + k] : Acc(0));
    }
    __syncthreads();
  });
}

// The 12 parameter gradients and alpha's.
template <typename In, typename Acc>
struct GradOutputs {
  In* weights[kWeights];
  Acc* alpha;
};

// Fixed-order sum of the programs' parameter-gradient partials (base + p stride) -> the gradients.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    grad_reduce_kernel(const Acc* __restrict__ base, int64_t stride, int64_t programs, int64_t C,
                       GradOutputs<In, Acc> out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= param_count(C)) return;
  Acc a = Acc(0);
  for (int64_t p = 0; p < programs; ++p) a += base[p * stride + idx];
  int part = 0;
  while (idx >= part_offset(part + 1, C)) ++part;
  if (part == kAlpha)
    *out.alpha = a;
  else
    out.weights[part][idx - part_offset(part, C)] = Store<In>::from(a);
}

// ---- launch code ---------------------------------------------------------------------------------------------

template <typename In, typename Acc>
bool valid_inputs(const Inputs<In, Acc>& in) {
  if (in.B < 0 || in.T < 0 || in.C < 1 || in.C > kMaxChannels || in.H < 1 || in.C % in.H != 0 || in.dilation < 1)
    return false;
  if (in.N != (in.cu_seqlens ? in.N : in.B) || in.N < 0) return false;
  if (in.cu_seqlens && in.B != in.N && in.B != 1) return false;
  for (const In* w : in.weights)
    if (w == nullptr) return false;
  if (in.alpha == nullptr || ((in.attention_dropout > 0 || in.dropout > 0) && in.dropout_seed == nullptr)) return false;
  return in.B * in.T == 0 || in.x != nullptr;
}

template <typename In, typename Acc>
Call<In, Acc> make_call(const Inputs<In, Acc>& in) {
  return {in, make_plan(in.C, in.T, in.N, in.H, sizeof(Acc)), static_cast<int>(in.C / in.H),
          dropout_threshold(in.attention_dropout), dropout_threshold(in.dropout)};
}

// The grid and shared-memory checks of a tile pass (one block per (sequence, chunk), the plan's shared memory).
template <typename Kernel>
cudaError_t prepare_tiles(Kernel kernel, int64_t programs, size_t smem) {
  if (!grid_fits(programs)) return cudaErrorInvalidConfiguration;
  return allow_smem(kernel, smem);
}

template <typename In, typename Acc>
cudaError_t forward_impl(const ForwardArgs<In, Acc>& a, cudaStream_t stream) {
  if (!valid_inputs(a.in)) return cudaErrorInvalidValue;
  const Call<In, Acc> c = make_call(a.in);
  const int64_t programs = c.in.N * c.plan.chunks;
  if (programs == 0) return cudaSuccess;  // no sequence: empty outputs
  if (!a.norm_stats || !a.kv_state || !a.key_sum || !a.workspace || (a.in.B * a.in.T > 0 && !a.out))
    return cudaErrorInvalidValue;
  const size_t smem = c.plan.smem_elems * sizeof(Acc);
  const unsigned grid = static_cast<unsigned>(programs);
  TRGNET_RETURN_IF_ERROR(prepare_tiles(conv_stats_kernel<In, Acc>, programs, smem));
  conv_stats_kernel<In, Acc><<<grid, kThreads, smem, stream>>>(c, a.workspace);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  TRGNET_RETURN_IF_ERROR(prepare_tiles(state_kernel<In, Acc>, programs, smem));
  state_kernel<In, Acc><<<grid, kThreads, smem, stream>>>(c, a.workspace, a.norm_stats);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  const int64_t entries = state_elems(c.in.C, c.in.H);
  const int64_t blocks = c.in.N * ((entries + kThreads - 1) / kThreads);
  if (!grid_fits(blocks)) return cudaErrorInvalidConfiguration;
  sum_chunks_kernel<Acc><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      a.workspace + 2 * c.in.C, forward_partial_elems(c.in.C, c.in.H), c.plan.chunks, entries, c.D + 1, a.kv_state,
      a.key_sum);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  TRGNET_RETURN_IF_ERROR(prepare_tiles(output_kernel<In, Acc>, programs, smem));
  output_kernel<In, Acc><<<grid, kThreads, smem, stream>>>(c, a.norm_stats, a.kv_state, a.key_sum, a.out);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

template <typename In, typename Acc>
cudaError_t backward_impl(const BackwardArgs<In, Acc>& a, cudaStream_t stream) {
  const bool has_frames = a.in.B * a.in.T > 0, has_sequences = a.in.N > 0;
  if (!valid_inputs(a.in) || !a.grad_alpha ||
      (has_sequences && (!a.norm_stats || !a.kv_state || !a.key_sum || !a.workspace)) ||
      (has_frames && (!a.grad_out || !a.grad_x || (a.in.values && !a.grad_values))))
    return cudaErrorInvalidValue;
  GradOutputs<In, Acc> grads;
  for (int i = 0; i < kWeights; ++i) {
    if (!a.grad_weights[i]) return cudaErrorInvalidValue;
    grads.weights[i] = a.grad_weights[i];
  }
  grads.alpha = a.grad_alpha;
  const Call<In, Acc> c = make_call(a.in);
  const int64_t C = c.in.C, H = c.in.H, programs = c.in.N * c.plan.chunks;
  const int64_t stride = backward_partial_elems(C, H), entries = state_elems(C, H);
  Acc* partials = a.workspace;
  Acc* dS = partials + programs * stride;
  Acc* g_direct = dS + c.in.N * entries;
  Acc* g_norm = g_direct + c.in.B * c.in.T * C;
  const size_t smem = c.plan.smem_elems * sizeof(Acc);
  if (programs > 0) {
    const unsigned grid = static_cast<unsigned>(programs);
    TRGNET_RETURN_IF_ERROR(prepare_tiles(attention_backward_kernel<In, Acc>, programs, smem));
    attention_backward_kernel<In, Acc><<<grid, kThreads, smem, stream>>>(c, a.grad_out, a.norm_stats, a.kv_state,
                                                                         a.key_sum, partials, g_direct, g_norm);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
    const int64_t blocks = c.in.N * ((entries + kThreads - 1) / kThreads);
    if (!grid_fits(blocks)) return cudaErrorInvalidConfiguration;
    sum_chunks_kernel<Acc><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        partials + bwd_state_offset(), stride, c.plan.chunks, entries, c.D + 1, dS, static_cast<Acc*>(nullptr));
    TRGNET_RETURN_IF_LAUNCH_FAILED();
    TRGNET_RETURN_IF_ERROR(prepare_tiles(key_value_backward_kernel<In, Acc>, programs, smem));
    key_value_backward_kernel<In, Acc><<<grid, kThreads, smem, stream>>>(c, a.norm_stats, dS, partials, g_norm,
                                                                         a.grad_values);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
    TRGNET_RETURN_IF_ERROR(prepare_tiles(conv_backward_kernel<In, Acc>, programs, smem));
    conv_backward_kernel<In, Acc><<<grid, kThreads, smem, stream>>>(c, a.norm_stats, partials, g_direct, g_norm);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
    TRGNET_RETURN_IF_ERROR(prepare_tiles(input_backward_kernel<In, Acc>, programs, smem));
    input_backward_kernel<In, Acc><<<grid, kThreads, smem, stream>>>(c, a.grad_out, g_direct, a.grad_x);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
  }
  const int64_t blocks = (param_count(C) + kThreads - 1) / kThreads;
  grad_reduce_kernel<In, Acc><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      partials + bwd_param_offset(C, H), stride, programs, C, grads);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

}  // namespace
}  // namespace am

#define TRGNET_AM_DEFINE_FORWARD(T_IN, T_ACC) \
  TRGNET_AM_FORWARD_LAUNCHER(T_IN, T_ACC) { return am::forward_impl<T_IN, T_ACC>(args, stream); }
#define TRGNET_AM_DEFINE_BACKWARD(T_IN, T_ACC) \
  TRGNET_AM_BACKWARD_LAUNCHER(T_IN, T_ACC) { return am::backward_impl<T_IN, T_ACC>(args, stream); }

}  // namespace trgnet
