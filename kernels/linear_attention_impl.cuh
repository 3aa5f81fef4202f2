// CUDA kernels of the non-causal linear attention (sigmoid features) and their launch code; math in
// linear_attention.cuh, launchers declared in linear_attention.h. No torch headers.
//
// Compiled in several translation units, which expand the TRGNET_LA_DEFINE_* macros at the end of this file,
// so that no single nvcc run takes much more than half a minute (one file took four):
//   linear_attention.cu                      the launchers: the forward passes (all dtypes, with their kernels)
//                                            and the backward's checks, state reduction and dispatch
//   linear_attention_backward_<dtype>.cu     the backward's query and key passes of one dtype, every width
//   linear_attention_backward_f64_query64.cu the fp64 query pass at register width 64 (alone: the largest)
//
// Forward:   state_partial (per (n,h) and T-chunk: partial [KV | ks])
//            -> state_reduce (fixed-order sum of the chunk partials -> kv_state, key_sum)
//            -> output (per (n,h) and T-tile: out = phi(q) KV / phi(q) (ks + eps)).
// Backward:  query (per (n,h) and T-chunk: dq, partial [dKV | dks])
//            -> state_reduce (-> dKV, dks in the workspace)
//            -> key (per (n,h) and T-tile: dk, dv).
// One block per (n,h) x chunk/tile, grid flattened to 1-D (x = nh * tiles + tile).
// The per-frame work runs one frame per thread with the frame's rows in registers; the reductions over T
// stage tiles of frames in shared memory as Acc and give each thread fixed 4 x 4 blocks of the extended
// D x (E+1) state and a fixed subset of the frames (accumulate_outer), so the result does not depend on
// scheduling.
#pragma once

#include "linear_attention.h"

#include <type_traits>

#include "cuda_common.cuh"
#include "linear_attention.cuh"

namespace trgnet {
namespace la {

struct Dims {
  int64_t N, T, H;
  int D, E;
};

// The arguments of launch_linear_attention_backward (linear_attention.h).
template <typename In, typename Acc>
struct BackwardArgs {
  const In *grad_out, *q, *k, *v;
  const bool* key_mask;
  const Acc *kv_state, *key_sum;
  int64_t N, T, H, D, E;
  double eps;
  In *grad_q, *grad_k, *grad_v;
  Acc* workspace;
};

// What the backward's passes share, worked out once by backward_impl: the sizes, the T-chunks of the query
// pass with its tile of frames and shared memory, and the workspace's parts (the per-chunk partial states,
// then the reduced dKV and dks).
template <typename Acc>
struct BackwardPlan {
  Dims s;
  int64_t chunk_len, chunks;
  int tile;
  size_t smem;
  Acc *partial, *dkv, *dks;
};

namespace {

constexpr int kThreads = 256;

// Flat index of frame t of (n, h) in a (N, T, H, *) tensor, in rows.
__device__ __forceinline__ int64_t frame_row(const Dims& s, int64_t nh, int64_t t) {
  const int64_t n = nh / s.H, h = nh % s.H;
  return (n * s.T + t) * s.H + h;
}
__device__ __forceinline__ bool mask_at(const bool* mask, const Dims& s, int64_t nh, int64_t t) {
  return mask == nullptr || mask[(nh / s.H) * s.T + t];
}

// body(t0, rows, row0) for the consecutive tiles of `tile` frames of reduction chunk `chunk` of (n, h) = nh:
// t0 the tile's first frame, rows its number of frames, row0 = frame_row(s, nh, t0).
template <typename Body>
__device__ __forceinline__ void for_each_chunk_tile(const Dims& s, int64_t nh, int64_t chunk, int64_t chunk_len,
                                                    int tile, Body body) {
  const int64_t t_begin = chunk * chunk_len;
  const int64_t t_end = min(s.T, t_begin + chunk_len);
  for (int64_t t0 = t_begin; t0 < t_end; t0 += tile)
    body(t0, static_cast<int>(min(static_cast<int64_t>(tile), t_end - t0)), frame_row(s, nh, t0));
}

// K values v[0..K) from / to 16-byte aligned shared memory with 16-byte accesses (K * sizeof(Acc) a multiple
// of 16). When all lanes of a warp read the same address the load is one broadcast wavefront.
template <int K, typename Acc>
__device__ __forceinline__ void load_shared_vec(const Acc* src, Acc (&v)[K]) {
  constexpr int kVec = Pack16<Acc>::kCount;
  static_assert(K % kVec == 0, "whole 16-byte packs");
#pragma unroll
  for (int p = 0; p < K / kVec; ++p) {
    const uint4 raw = reinterpret_cast<const uint4*>(src)[p];
    const Acc* e = reinterpret_cast<const Acc*>(&raw);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[p * kVec + k] = e[k];
  }
}
template <int K, typename Acc>
__device__ __forceinline__ void store_shared_vec(Acc* dst, const Acc (&v)[K]) {
  constexpr int kVec = Pack16<Acc>::kCount;
  static_assert(K % kVec == 0, "whole 16-byte packs");
#pragma unroll
  for (int p = 0; p < K / kVec; ++p) {
    uint4 raw;
    Acc* e = reinterpret_cast<Acc*>(&raw);
#pragma unroll
    for (int k = 0; k < kVec; ++k) e[k] = v[p * kVec + k];
    reinterpret_cast<uint4*>(dst)[p] = raw;
  }
}

// ---- register-blocked reductions over T ----------------------------------------------------------
//
// The state pass and the query backward both reduce an outer product over the frames of a chunk:
// S[d][c] = sum_r a[r][d] b[r][c] (a = m phi(k), b = [v, 1]; or a = phi(q), b = dN), D x W with W = E + 1.
// Both factors are staged in shared memory per tile of frames (rows staged_stride() apart, zeros in the
// padding); each thread owns kBlock x kBlock blocks of S in registers and per frame reads kBlock elements of
// a and of b (one 16-byte shared load each in fp32) for kBlock^2 multiply-adds -- instead of two shared loads
// per multiply-add of a thread-per-entry layout. A 16 x 17 state has only 20 blocks, so the threads form
// `groups` groups, group g taking frames g, g + groups, ... of every tile; at the end of the chunk the groups'
// sums are added in group order. The split depends only on the sizes: deterministic.
constexpr int kBlock = 4;
constexpr int kBlockElems = kBlock * kBlock;

// Blocks of S each thread owns at most, for head dims up to DP (D <= DP, W <= DP + 1).
__host__ __device__ constexpr int outer_blocks_per_thread(int DP) {
  return ((DP / kBlock) * (DP / kBlock + 1) + kThreads - 1) / kThreads;
}

struct OuterShape {
  int D, W;             // S is D x W
  int col_blocks;       // blocks along W
  int blocks;           // blocks of S
  int groups;           // thread groups splitting the frames
};
__host__ __device__ __forceinline__ OuterShape outer_shape(int D, int W) {
  OuterShape o;
  o.D = D;
  o.W = W;
  o.col_blocks = (W + kBlock - 1) / kBlock;
  o.blocks = (D + kBlock - 1) / kBlock * o.col_blocks;
  o.groups = o.blocks >= kThreads ? 1 : kThreads / o.blocks;
  return o;
}
// Shared-memory elements store_outer needs to add up the groups' sums (none for one group).
__host__ __device__ __forceinline__ int64_t outer_scratch_elems(const OuterShape& o) {
  return o.groups > 1 ? static_cast<int64_t>(o.groups) * o.blocks * kBlockElems : 0;
}
// This thread's group (>= o.groups: idle) and its j-th block of S (>= o.blocks: none).
__device__ __forceinline__ int outer_group(const OuterShape& o) {
  return o.blocks >= kThreads ? 0 : static_cast<int>(threadIdx.x) / o.blocks;
}
__device__ __forceinline__ int outer_block(const OuterShape& o, int j) {
  return (o.blocks >= kThreads ? static_cast<int>(threadIdx.x) : static_cast<int>(threadIdx.x) % o.blocks) +
         j * kThreads;
}

// acc += this thread's blocks of sum_r a[r] (x) b[r] over `rows` staged frames (a: rows x as, b: rows x bs).
template <int BPT, typename Acc>
__device__ __forceinline__ void accumulate_outer(Acc (&acc)[BPT][kBlockElems], const OuterShape& o, const Acc* a,
                                                 int as, const Acc* b, int bs, int rows) {
  const int group = outer_group(o);
  if (group >= o.groups) return;
#pragma unroll
  for (int j = 0; j < BPT; ++j) {
    const int blk = outer_block(o, j);
    if (blk >= o.blocks) continue;
    const int d0 = blk / o.col_blocks * kBlock, c0 = blk % o.col_blocks * kBlock;
    for (int r = group; r < rows; r += o.groups) {
      Acc x[kBlock], y[kBlock];
      load_shared_vec(a + r * as + d0, x);
      load_shared_vec(b + r * bs + c0, y);
#pragma unroll
      for (int i = 0; i < kBlock; ++i)
#pragma unroll
        for (int k = 0; k < kBlock; ++k) acc[j][i * kBlock + k] += x[i] * y[k];
    }
  }
}

// partial[d * W + c] = S[d][c], the groups' sums added in group order through `scratch`
// (outer_scratch_elems(o) elements; the caller has synchronised, so it may alias the staged factors).
// All threads of the block call it.
template <int BPT, typename Acc>
__device__ __forceinline__ void store_outer(const Acc (&acc)[BPT][kBlockElems], const OuterShape& o, Acc* scratch,
                                            Acc* partial) {
  const int group = outer_group(o);
  const bool one_group = o.groups == 1;  // every block has one owner: stored straight from its registers
#pragma unroll
  for (int j = 0; j < BPT; ++j) {
    const int blk = outer_block(o, j);
    if (group >= o.groups || blk >= o.blocks) continue;
    const int d0 = blk / o.col_blocks * kBlock, c0 = blk % o.col_blocks * kBlock;
#pragma unroll
    for (int e = 0; e < kBlockElems; ++e) {
      const int d = d0 + e / kBlock, c = c0 + e % kBlock;
      if (!one_group)
        scratch[(group * o.blocks + blk) * kBlockElems + e] = acc[j][e];
      else if (d < o.D && c < o.W)
        partial[d * o.W + c] = acc[j][e];
    }
  }
  if (one_group) return;  // uniform over the block
  __syncthreads();
  for (int idx = threadIdx.x; idx < o.D * o.W; idx += kThreads) {
    const int d = idx / o.W, c = idx % o.W;
    const int at = (d / kBlock * o.col_blocks + c / kBlock) * kBlockElems + d % kBlock * kBlock + c % kBlock;
    Acc sum = Acc(0);
    for (int g = 0; g < o.groups; ++g) sum += scratch[g * o.blocks * kBlockElems + at];
    partial[idx] = sum;
  }
}

// Row tails of a staged factor: column `from` of each of `rows` rows set to `first`, the columns after it up
// to the row stride to zero.
template <typename Acc>
__device__ __forceinline__ void fill_row_tails(Acc* rows_base, int rows, int stride, int from, Acc first) {
  const int n = stride - from;
  for (int i = threadIdx.x; i < rows * n; i += kThreads) {
    const int r = i / n, c = i % n;
    rows_base[r * stride + from + c] = c == 0 ? first : Acc(0);
  }
}

// ---- forward -----------------------------------------------------------------------------------

// partial[(nh * chunks + chunk) * D*W + d*W + c] = sum over the chunk's frames of m * phi(k[d]) * [v, 1][c],
// register-blocked (see accumulate_outer). DP >= D, E (16, 32 or 64) sizes the accumulators.
template <typename In, typename Acc, int DP>
__global__ void __launch_bounds__(kThreads)
    state_partial_kernel(const In* __restrict__ k, const In* __restrict__ v, const bool* __restrict__ mask,
                         Dims s, int64_t chunk_len, int64_t chunks, int tile, Acc* __restrict__ partial) {
  const int D = s.D, E = s.E, W = E + 1;
  const int as = staged_stride(D, sizeof(Acc)), bs = staged_stride(W, sizeof(Acc));
  const OuterShape o = outer_shape(D, W);
  const int64_t nh = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  Acc* phik = smem_base<Acc>();  // tile x as: m phi(k), zero padding
  Acc* vext = phik + tile * as;  // tile x bs: [v | 1 | 0 ...]

  Acc acc[outer_blocks_per_thread(DP)][kBlockElems] = {};
  for_each_chunk_tile(s, nh, chunk, chunk_len, tile, [&](int64_t t0, int rows, int64_t row0) {
    for_each_row_element(k + row0 * D, s.H * D, rows, D, [&](int r, int d, Acc x) {
      phik[r * as + d] = key_feature(x, mask_at(mask, s, nh, t0 + r));
    });
    // a masked frame's v is zeroed, not multiplied by its zero key feature: a NaN there must take no part
    for_each_row_element(v + row0 * E, s.H * E, rows, E, [&](int r, int c, Acc x) {
      vext[r * bs + c] = mask_at(mask, s, nh, t0 + r) ? x : Acc(0);
    });
    fill_row_tails(phik, rows, as, D, Acc(0));
    fill_row_tails(vext, rows, bs, E, Acc(1));
    __syncthreads();
    accumulate_outer(acc, o, phik, as, vext, bs, rows);
    __syncthreads();
  });
  store_outer(acc, o, phik, partial + (nh * chunks + chunk) * D * W);
}

// Fixed-order sum of the chunk partials; splits [X | x] into kv (nh, D, E) and ks (nh, D).
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    state_reduce_kernel(const Acc* __restrict__ partial, int64_t chunks, int D, int E,
                        Acc* __restrict__ kv, Acc* __restrict__ ks) {
  const int W = E + 1, entries = D * W;
  const int64_t nh = blockIdx.x;
  const Acc* p = partial + nh * chunks * entries;
  for (int idx = threadIdx.x; idx < entries; idx += kThreads) {
    Acc a = Acc(0);
    for (int64_t c = 0; c < chunks; ++c) a += p[c * entries + idx];
    const int d = idx / W, e = idx % W;
    if (e < E)
      kv[(nh * D + d) * E + e] = a;
    else
      ks[nh * D + d] = a;
  }
}

// Column layout of a state in shared memory for the one-frame-per-thread kernels: KV (or dKV) in columns
// [0, E), zeros up to EP = E rounded up to 16 (so 16-column chunks never leave the row), ks + eps (or dks)
// in column EP, row stride EP + 4 (16-byte aligned rows, for 16-byte shared loads).
__host__ __device__ __forceinline__ int padded_state_cols(int E) { return (E + 15) / 16 * 16; }
__host__ __device__ __forceinline__ int padded_state_stride(int E) { return padded_state_cols(E) + 4; }

// Loads [X | 0 | x + add | 0 0 0] of one (n, h) into shared memory in that padded layout.
template <typename Acc>
__device__ __forceinline__ void load_padded_state(Acc* S, const Acc* X, const Acc* x, Acc add, int64_t nh, int D,
                                                  int E) {
  const int EP = padded_state_cols(E), WP = padded_state_stride(E);
  for (int idx = threadIdx.x; idx < D * WP; idx += kThreads) {
    const int d = idx / WP, c = idx % WP;
    S[idx] = c < E ? X[(nh * D + d) * E + c] : c == EP ? x[nh * D + d] + add : Acc(0);
  }
}

// num[j] = sum_d f[d] S[d][e0 + j] (j < 16) over the padded state rows: 16-byte shared broadcasts.
template <int DP, typename Acc>
__device__ __forceinline__ void features_times_state(const Acc (&f)[DP], const Acc* S, int D, int WP, int e0,
                                                     Acc (&num)[16]) {
#pragma unroll
  for (int j = 0; j < 16; ++j) num[j] = Acc(0);
#pragma unroll
  for (int d = 0; d < DP; ++d) {
    if (d < D) {
      Acc sv[16];
      load_shared_vec(S + d * WP + e0, sv);
#pragma unroll
      for (int j = 0; j < 16; ++j) num[j] += f[d] * sv[j];
    }
  }
}

// out[l] = phi(q_l) KV / phi(q_l) (ks + eps), one frame l per thread (DP >= D, a power of two >= 16):
// phi(q_l) lives in registers (the row read with 16-byte loads when aligned); the state is read from shared
// memory as warp-wide broadcasts, 16 output columns at a time, and each thread writes its own output row
// (16-byte stores when aligned). Per multiply-add this needs a quarter of a shared-memory load instead of
// the two of a thread-per-output layout.
template <typename In, typename Acc, int DP>
__global__ void __launch_bounds__(kThreads)
    output_kernel(const In* __restrict__ q, const Acc* __restrict__ kv, const Acc* __restrict__ ks, Acc eps,
                  Dims s, int64_t tiles, In* __restrict__ out) {
  const int D = s.D, E = s.E, EP = padded_state_cols(E), WP = padded_state_stride(E);
  const int64_t nh = blockIdx.x / tiles, t = (blockIdx.x % tiles) * kThreads + threadIdx.x;
  Acc* S = smem_base<Acc>();  // D x WP: [KV | 0 | ks + eps | 0 0 0]
  load_padded_state(S, kv, ks, eps, nh, D, E);
  __syncthreads();
  if (t >= s.T) return;  // no barrier below
  const int64_t row = frame_row(s, nh, t);
  Acc phi[DP];
  load_row_registers(q + row * D, D, phi);
  Acc den = Acc(0);
#pragma unroll
  for (int d = 0; d < DP; ++d) {
    phi[d] = d < D ? sigmoid(phi[d]) : Acc(0);
    if (d < D) den += phi[d] * S[d * WP + EP];
  }
  for (int e0 = 0; e0 < E; e0 += 16) {
    Acc num[16];
    features_times_state(phi, S, D, WP, e0, num);
#pragma unroll
    for (int j = 0; j < 16; ++j) num[j] = output_value(num[j], den);
    store_row_registers(out + row * E + e0, min(16, E - e0), num);
  }
}

// ---- backward ----------------------------------------------------------------------------------

// S[d][EP] * last + sum_{c < E} S[d][c] x[c] for one padded state row (16-byte shared broadcasts; x zero
// beyond E): a state row against an extended vector [x, last].
template <int DP, typename Acc>
__device__ __forceinline__ Acc state_row_dot(const Acc* srow, const Acc (&x)[DP], int E, Acc last) {
  Acc a = srow[padded_state_cols(E)] * last;
#pragma unroll
  for (int c0 = 0; c0 < DP; c0 += 16) {
    if (c0 < E) {
      Acc sv[16];
      load_shared_vec(srow + c0, sv);
#pragma unroll
      for (int j = 0; j < 16; ++j) a += sv[j] * x[c0 + j];
    }
  }
  return a;
}

// The per-frame part of the query backward for the frame in row `row`: dq, and the frame's factors of
// dS = sum_l phi(q_l) (x) dN_l staged for accumulate_outer: phi(q) in phi_row (columns up to D rounded to
// kBlock), dN = [g / den, dden] in dn_row (columns up to E + 1 rounded to kBlock). S: the padded state with
// eps. One thread per frame, everything in registers (DP >= D, E).
template <int DP, typename In, typename Acc>
__device__ __forceinline__ void query_backward_frame(const In* __restrict__ g, const In* __restrict__ q,
                                                     const Acc* S, int D, int E, int64_t row, Acc* phi_row,
                                                     Acc* dn_row, In* __restrict__ dq) {
  const int EP = padded_state_cols(E), WP = padded_state_stride(E);
  Acc phi[DP], gn[DP];
  load_row_registers(q + row * D, D, phi);
  load_row_registers(g + row * E, E, gn);  // zeros beyond E, like the padding of S
  Acc den = Acc(0);
#pragma unroll
  for (int d = 0; d < DP; ++d) {
    phi[d] = d < D ? sigmoid(phi[d]) : Acc(0);
    if (d < D) den += phi[d] * S[d * WP + EP];
  }
  Acc g_dot_num = Acc(0);
#pragma unroll
  for (int e0 = 0; e0 < DP; e0 += 16) {
    if (e0 < E) {
      Acc num[16];
      features_times_state(phi, S, D, WP, e0, num);
#pragma unroll
      for (int j = 0; j < 16; ++j) g_dot_num += gn[e0 + j] * num[j];
    }
  }
  const Acc dden = grad_den_from_dot(g_dot_num, den);
#pragma unroll
  for (int e = 0; e < DP; ++e) gn[e] = gn[e] / den;  // dN[:E] (zeros stay zeros)

  const int d_cols = (D + kBlock - 1) / kBlock * kBlock, dn_cols = (E + 1 + kBlock - 1) / kBlock * kBlock;
#pragma unroll
  for (int c0 = 0; c0 < DP; c0 += kBlock) {
    if (c0 < d_cols) {
      Acc part[kBlock];
#pragma unroll
      for (int i = 0; i < kBlock; ++i) part[i] = phi[c0 + i];
      store_shared_vec(phi_row + c0, part);
    }
  }
#pragma unroll
  for (int c0 = 0; c0 < DP + kBlock; c0 += kBlock) {  // dn_cols <= DP + kBlock
    if (c0 < dn_cols) {
      Acc part[kBlock];
#pragma unroll
      for (int i = 0; i < kBlock; ++i) {
        const int c = c0 + i;
        part[i] = c < E ? gn[c < DP ? c : 0] : c == E ? dden : Acc(0);
      }
      store_shared_vec(dn_row + c0, part);
    }
  }
  // dq[d] = phi'(q[d]) (S[d, :E] . dN[:E] + S[d, EP] dden), into phi in place (its staged copy is written)
#pragma unroll
  for (int d = 0; d < DP; ++d) phi[d] = d < D ? sigmoid_grad(phi[d]) * state_row_dot(S + d * WP, gn, E, dden) : Acc(0);
  store_row_registers(dq + row * D, D, phi);
}

// dq for the chunk's frames (one frame per thread, query_backward_frame) and the chunk's partial
// dS = sum_l phi(q_l) (x) dN_l (register-blocked, accumulate_outer).
template <typename In, typename Acc, int DP>
__global__ void __launch_bounds__(kThreads)
    query_backward_kernel(const In* __restrict__ g, const In* __restrict__ q, const Acc* __restrict__ kv,
                          const Acc* __restrict__ ks, Acc eps, Dims s, int64_t chunk_len, int64_t chunks,
                          int tile, In* __restrict__ dq, Acc* __restrict__ partial) {
  const int D = s.D, E = s.E, W = E + 1;
  const int as = staged_stride(D, sizeof(Acc)), bs = staged_stride(W, sizeof(Acc));
  const OuterShape o = outer_shape(D, W);
  const int64_t nh = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  Acc* S = smem_base<Acc>();                           // D x WP: [KV | 0 | ks + eps | 0 0 0]
  Acc* phiq = S + D * padded_state_stride(E);          // tile x as
  Acc* dn = phiq + tile * as;                          // tile x bs

  load_padded_state(S, kv, ks, eps, nh, D, E);
  Acc acc[outer_blocks_per_thread(DP)][kBlockElems] = {};
  for_each_chunk_tile(s, nh, chunk, chunk_len, tile, [&](int64_t, int rows, int64_t row0) {
    __syncthreads();  // the state is loaded, and the previous tile's staged factors are consumed
    for (int r = threadIdx.x; r < rows; r += kThreads)
      query_backward_frame<DP>(g, q, S, D, E, row0 + r * s.H, phiq + r * as, dn + r * bs, dq);
    __syncthreads();
    accumulate_outer(acc, o, phiq, as, dn, bs, rows);
  });
  __syncthreads();
  store_outer(acc, o, phiq, partial + (nh * chunks + chunk) * D * W);
}

// dk, dv from the reduced dS = [dKV | dks], one frame per thread (DP >= D, E: a power of two >= 16): sigmoid(k)
// and v of the frame in registers (rows read with 16-byte loads when aligned), dS in shared memory in the
// padded layout read as warp-wide broadcasts, dk and dv rows written by their thread (16-byte stores when
// aligned). dk[d] = m sk'(d) (dS[d, :E] . v + dks[d]); dv[e] = m sum_d sk[d] dS[d, e].
template <typename In, typename Acc, int DP>
__global__ void __launch_bounds__(kThreads)
    key_backward_kernel(const In* __restrict__ k, const In* __restrict__ v, const bool* __restrict__ mask,
                        const Acc* __restrict__ dkv, const Acc* __restrict__ dks, Dims s, int64_t tiles,
                        In* __restrict__ dk, In* __restrict__ dv) {
  const int D = s.D, E = s.E, WP = padded_state_stride(E);
  const int64_t nh = blockIdx.x / tiles, t = (blockIdx.x % tiles) * kThreads + threadIdx.x;
  Acc* dS = smem_base<Acc>();  // D x WP: [dKV | 0 | dks | 0 0 0]
  load_padded_state(dS, dkv, dks, Acc(0), nh, D, E);
  __syncthreads();
  if (t >= s.T) return;  // no barrier below
  const int64_t row = frame_row(s, nh, t);
  const bool m = mask_at(mask, s, nh, t);
  Acc sk[DP], vr[DP], out[DP];
  load_row_registers(k + row * D, D, sk);
  load_row_registers(v + row * E, E, vr);  // zeros beyond E, like the padding of dS
#pragma unroll
  for (int d = 0; d < DP; ++d) {
    sk[d] = d < D ? sigmoid(sk[d]) : Acc(0);
    // last = 1: the dks column meets the 1 of [v, 1]
    out[d] = m && d < D ? sigmoid_grad(sk[d]) * state_row_dot(dS + d * WP, vr, E, Acc(1)) : Acc(0);
  }
  store_row_registers(dk + row * D, D, out);
  for (int e0 = 0; e0 < E; e0 += 16) {
    Acc num[16];
    features_times_state(sk, dS, D, WP, e0, num);
#pragma unroll
    for (int j = 0; j < 16; ++j) num[j] = m ? num[j] : Acc(0);
    store_row_registers(dv + row * E + e0, min(16, E - e0), num);
  }
}

// ---- launch helpers ----------------------------------------------------------------------------

inline bool valid_sizes(int64_t N, int64_t T, int64_t H, int64_t D, int64_t E) {
  return N >= 0 && T >= 0 && H >= 0 && D >= 1 && E >= 1 && D <= kMaxHeadDim && E <= kMaxHeadDim;
}

// f(std::integral_constant<int, DP>()) with the register row width DP = 16, 32 or 64, the smallest >= width.
template <typename F>
void with_register_width(int64_t width, F f) {
  if (width <= 16)
    f(std::integral_constant<int, 16>());
  else if (width <= 32)
    f(std::integral_constant<int, 32>());
  else
    f(std::integral_constant<int, 64>());
}

// Launch of a one-frame-per-thread kernel over (n, h) x T frames: blocks of kThreads frames, a padded D-row
// state in shared memory: launch(grid, smem bytes, blocks per (n, h)).
template <typename Acc, typename Launch>
cudaError_t launch_frame_rows(int64_t NH, int64_t T, int64_t D, int64_t E, Launch launch) {
  const int64_t tiles = (T + kThreads - 1) / kThreads;
  if (!grid_fits(NH * tiles)) return cudaErrorInvalidConfiguration;
  const size_t smem = static_cast<size_t>(D) * padded_state_stride(static_cast<int>(E)) * sizeof(Acc);
  launch(dim3(static_cast<unsigned>(NH * tiles)), smem, tiles);
  return cudaSuccess;
}

// Dynamic shared memory of a T-reduction kernel: `fixed` bytes, then `tile` staged rows of `row` bytes that
// store_outer reuses as its scratch.
template <typename Acc>
size_t reduction_smem(size_t fixed, int tile, size_t row, int D, int W) {
  const size_t scratch = static_cast<size_t>(outer_scratch_elems(outer_shape(D, W))) * sizeof(Acc);
  const size_t staged = tile * row;
  return fixed + (staged > scratch ? staged : scratch);
}

template <typename In, typename Acc>
cudaError_t forward_impl(const In* q, const In* k, const In* v, const bool* mask, int64_t N, int64_t T, int64_t H,
                         int64_t D, int64_t E, double eps, In* out, Acc* kv_state, Acc* key_sum, Acc* workspace,
                         cudaStream_t stream) {
  if (!valid_sizes(N, T, H, D, E)) return cudaErrorInvalidValue;
  const int64_t NH = N * H;
  if (NH == 0) return cudaSuccess;
  if (!kv_state || !key_sum || !workspace || (T > 0 && (!q || !k || !v || !out))) return cudaErrorInvalidValue;
  const Dims s{N, T, H, static_cast<int>(D), static_cast<int>(E)};
  const int W = s.E + 1;
  const int64_t chunk_len = reduction_chunk_len(T), chunks = reduction_chunks(T);
  if (!grid_fits(NH * chunks)) return cudaErrorInvalidConfiguration;

  const int tile = state_pass_tile(D, E, sizeof(Acc));
  const size_t row = (staged_stride(s.D, sizeof(Acc)) + staged_stride(W, sizeof(Acc))) * sizeof(Acc);
  const size_t smem = reduction_smem<Acc>(0, tile, row, s.D, W);
  with_register_width(D > E ? D : E, [&](auto dp) {
    state_partial_kernel<In, Acc, decltype(dp)::value><<<static_cast<unsigned>(NH * chunks), kThreads, smem,
                                                         stream>>>(k, v, mask, s, chunk_len, chunks, tile, workspace);
  });
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  state_reduce_kernel<Acc><<<static_cast<unsigned>(NH), kThreads, 0, stream>>>(workspace, chunks, s.D, s.E,
                                                                              kv_state, key_sum);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  if (T == 0) return cudaSuccess;

  cudaError_t err = cudaSuccess;
  with_register_width(D, [&](auto dp) {
    err = launch_frame_rows<Acc>(NH, T, D, E, [&](dim3 grid, size_t smem, int64_t tiles) {
      output_kernel<In, Acc, decltype(dp)::value><<<grid, kThreads, smem, stream>>>(
          q, kv_state, key_sum, static_cast<Acc>(eps), s, tiles, out);
    });
  });
  TRGNET_RETURN_IF_ERROR(err);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

// The backward's per-frame passes at register width DP (>= D, E), for arguments that backward_impl has checked:
// dq and the per-chunk partial dS (query pass), then dk and dv from the reduced dS (key pass).
template <typename In, typename Acc, int DP>
cudaError_t query_backward_pass(const BackwardArgs<In, Acc>& a, const BackwardPlan<Acc>& p, cudaStream_t stream) {
  TRGNET_RETURN_IF_ERROR(allow_smem(query_backward_kernel<In, Acc, DP>, p.smem));
  query_backward_kernel<In, Acc, DP><<<static_cast<unsigned>(a.N * a.H * p.chunks), kThreads, p.smem, stream>>>(
      a.grad_out, a.q, a.kv_state, a.key_sum, static_cast<Acc>(a.eps), p.s, p.chunk_len, p.chunks, p.tile,
      a.grad_q, p.partial);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

template <typename In, typename Acc, int DP>
cudaError_t key_backward_pass(const BackwardArgs<In, Acc>& a, const BackwardPlan<Acc>& p, cudaStream_t stream) {
  TRGNET_RETURN_IF_ERROR(launch_frame_rows<Acc>(a.N * a.H, a.T, a.D, a.E, [&](dim3 grid, size_t smem, int64_t tiles) {
    key_backward_kernel<In, Acc, DP><<<grid, kThreads, smem, stream>>>(a.k, a.v, a.key_mask, p.dkv, p.dks, p.s, tiles,
                                                                       a.grad_k, a.grad_v);
  }));
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

}  // namespace

// la::query_backward(DP, ...) / la::key_backward(DP, ...): query_backward_pass / key_backward_pass at register
// width DP, one overload per input dtype, width and pass, each compiled in one translation unit
// (TRGNET_LA_DEFINE_BACKWARD_PASS) and called by backward_impl in another: the backward's kernels are what
// takes nvcc long, so they can be spread over several files.
#define TRGNET_LA_BACKWARD_PASS(PASS, T_IN, T_ACC, DP)                                                \
  cudaError_t PASS##_backward(std::integral_constant<int, DP>, const BackwardArgs<T_IN, T_ACC>& args, \
                              const BackwardPlan<T_ACC>& plan, cudaStream_t stream)
#define TRGNET_LA_DECLARE_BACKWARD_PASSES(T_IN, T_ACC) \
  TRGNET_LA_BACKWARD_PASS(query, T_IN, T_ACC, 16);     \
  TRGNET_LA_BACKWARD_PASS(query, T_IN, T_ACC, 32);     \
  TRGNET_LA_BACKWARD_PASS(query, T_IN, T_ACC, 64);     \
  TRGNET_LA_BACKWARD_PASS(key, T_IN, T_ACC, 16);       \
  TRGNET_LA_BACKWARD_PASS(key, T_IN, T_ACC, 32);       \
  TRGNET_LA_BACKWARD_PASS(key, T_IN, T_ACC, 64);
TRGNET_LA_DECLARE_BACKWARD_PASSES(float, float)
TRGNET_LA_DECLARE_BACKWARD_PASSES(double, double)
TRGNET_LA_DECLARE_BACKWARD_PASSES(__half, float)
TRGNET_LA_DECLARE_BACKWARD_PASSES(__nv_bfloat16, float)

namespace {

template <typename In, typename Acc>
cudaError_t backward_impl(const BackwardArgs<In, Acc>& a, cudaStream_t stream) {
  const int64_t N = a.N, T = a.T, H = a.H, D = a.D, E = a.E;
  if (!valid_sizes(N, T, H, D, E)) return cudaErrorInvalidValue;
  const int64_t NH = N * H;
  if (NH == 0 || T == 0) return cudaSuccess;
  if (!a.grad_out || !a.q || !a.k || !a.v || !a.kv_state || !a.key_sum || !a.grad_q || !a.grad_k || !a.grad_v ||
      !a.workspace)
    return cudaErrorInvalidValue;
  BackwardPlan<Acc> p;
  p.s = Dims{N, T, H, static_cast<int>(D), static_cast<int>(E)};
  const int W = p.s.E + 1;
  p.chunk_len = reduction_chunk_len(T);
  p.chunks = reduction_chunks(T);
  if (!grid_fits(NH * p.chunks)) return cudaErrorInvalidConfiguration;
  p.partial = a.workspace;
  p.dkv = a.workspace + NH * p.chunks * D * W;
  p.dks = p.dkv + NH * D * E;

  // up to one frame per thread; the staged rows within the default 48 KiB (more only for the scratch of
  // store_outer at large head dims in fp64, with the opt-in)
  const size_t fixed = static_cast<size_t>(D) * padded_state_stride(p.s.E) * sizeof(Acc);
  const size_t row = (staged_stride(p.s.D, sizeof(Acc)) + staged_stride(W, sizeof(Acc))) * sizeof(Acc);
  p.tile = fitting_tile(kThreads, fixed, row, kSmemDefault);
  p.smem = reduction_smem<Acc>(fixed, p.tile, row, p.s.D, W);
  const int64_t width = D > E ? D : E;
  cudaError_t err = cudaSuccess;
  with_register_width(width, [&](auto dp) { err = query_backward(dp, a, p, stream); });
  TRGNET_RETURN_IF_ERROR(err);
  state_reduce_kernel<Acc><<<static_cast<unsigned>(NH), kThreads, 0, stream>>>(p.partial, p.chunks, p.s.D, p.s.E,
                                                                              p.dkv, p.dks);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  with_register_width(width, [&](auto dp) { err = key_backward(dp, a, p, stream); });
  return err;
}

}  // namespace
}  // namespace la

// Definitions for one input dtype (T_IN) and its accumulator (T_ACC), expanded inside namespace trgnet by the
// kernels/linear_attention*.cu files (see the top of this file):
//   TRGNET_LA_DEFINE_FORWARD                 the forward launcher, with all its kernels
//   TRGNET_LA_DEFINE_BACKWARD                the backward launcher: its checks, the state reduction and the
//                                            dispatch of the passes
//   TRGNET_LA_DEFINE_BACKWARD_PASS(PASS, DP) the kernels of one backward pass (query or key) at one register
//                                            width DP (16, 32 or 64)
//   TRGNET_LA_DEFINE_BACKWARD_PASSES         both passes at every width
#define TRGNET_LA_DEFINE_FORWARD(T_IN, T_ACC)                                                           \
  TRGNET_LA_FORWARD_LAUNCHER(T_IN, T_ACC) {                                                             \
    return la::forward_impl<T_IN, T_ACC>(q, k, v, key_mask, N, T, H, D, E, eps, out, kv_state, key_sum, \
                                         workspace, stream);                                            \
  }
#define TRGNET_LA_DEFINE_BACKWARD(T_IN, T_ACC)                                                            \
  TRGNET_LA_BACKWARD_LAUNCHER(T_IN, T_ACC) {                                                              \
    return la::backward_impl<T_IN, T_ACC>({grad_out, q, k, v, key_mask, kv_state, key_sum, N, T, H, D, E, \
                                           eps, grad_q, grad_k, grad_v, workspace},                       \
                                          stream);                                                        \
  }
#define TRGNET_LA_DEFINE_BACKWARD_PASS(PASS, T_IN, T_ACC, DP)         \
  namespace la {                                                      \
  TRGNET_LA_BACKWARD_PASS(PASS, T_IN, T_ACC, DP) {                    \
    return PASS##_backward_pass<T_IN, T_ACC, DP>(args, plan, stream); \
  }                                                                   \
  }
#define TRGNET_LA_DEFINE_BACKWARD_PASSES(T_IN, T_ACC)    \
  TRGNET_LA_DEFINE_BACKWARD_PASS(query, T_IN, T_ACC, 16) \
  TRGNET_LA_DEFINE_BACKWARD_PASS(query, T_IN, T_ACC, 32) \
  TRGNET_LA_DEFINE_BACKWARD_PASS(query, T_IN, T_ACC, 64) \
  TRGNET_LA_DEFINE_BACKWARD_PASS(key, T_IN, T_ACC, 16)   \
  TRGNET_LA_DEFINE_BACKWARD_PASS(key, T_IN, T_ACC, 32)   \
  TRGNET_LA_DEFINE_BACKWARD_PASS(key, T_IN, T_ACC, 64)

}  // namespace trgnet
