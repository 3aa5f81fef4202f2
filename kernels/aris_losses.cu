// CUDA kernels of the fused ARIS terms and the launchers of kernels/aris_losses.h for the four feature dtypes
// (passes and grids at the top of aris_losses.h, shared math in aris_losses.cuh). No torch headers.
//
// The two passes over (N, C, T) are the memory-bound part: the segment means read each slot's frames once (a row of
// C at a time, 32 consecutive frames per load instruction of a lane group), and grad_features is written once,
// every element, one thread per frame with consecutive threads on consecutive frames, gathering its slot's row of
// grad f / count (with the feature head Wᵀ γ / count). The M x M parts are small: tiles of pairs for the sums over
// D, a block per row for the row reductions; so are the head's (M, C) x (C, D) products, which never touch the
// (N, C, T) features: a thread per output entry, its sum in index order. Every reduction is a fixed-order tree in
// shared memory (block_reduce) and every cross-block sum goes through per-block partials summed in block order: no
// atomics, the same bits on every run. d_ij comes from al_pairs_kernel alone, in both directions, so that the
// backward finds the forward's ties of dmax by equality.
#include "aris_losses.h"

#include <initializer_list>

#include "cuda_common.cuh"

namespace trgnet {
namespace al {
namespace {

struct Sum {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct Max {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return nan_max(a, b);
  }
};

// x[c] <- op over the block's threads of x[c], c < C, as a fixed-order tree (the same bits whatever the timing);
// scratch: C kThreads elements of shared memory, free again on return. Every thread of the block must call it.
template <int C, typename T, typename Op>
__device__ __forceinline__ void block_reduce(T* scratch, T (&x)[C], Op op) {
  const int tid = static_cast<int>(threadIdx.x);
  for (int c = 0; c < C; ++c) scratch[c * kThreads + tid] = x[c];
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (tid < w)
      for (int c = 0; c < C; ++c) {
        T* v = scratch + c * kThreads;
        v[tid] = op(v[tid], v[tid + w]);
      }
    __syncthreads();
  }
  for (int c = 0; c < C; ++c) x[c] = scratch[c * kThreads];
  __syncthreads();  // everyone has read the result before the scratch is written again
}

// rows = max(Σ valid, 1), for every thread of the block; scratch: kThreads int64.
template <typename Acc>
__device__ __forceinline__ Acc valid_rows(const bool* __restrict__ valid, int64_t M, int64_t* scratch) {
  int64_t n[1] = {0};
  for (int64_t i = threadIdx.x; i < M; i += kThreads) n[0] += valid[i] ? 1 : 0;
  block_reduce<1>(scratch, n, Sum());
  return n[0] > 0 ? static_cast<Acc>(n[0]) : Acc(1);
}

// ---- forward ---------------------------------------------------------------------------------------------------

// The slots' means of the (N, C, T) features -> means (M, C) (segment_features without the head, segment_means
// with it), entries (i, d) for the kMeanRows rows d of block (i, group): lane group g sums rows d0 + g kRowsPerGroup
// + k (k < kRowsPerGroup) over the slot's frames, lane l taking frames lo + l, lo + l + kLanes, ...; the lanes'
// partials are added in lane order. Padding slots: 0.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads) al_segment_mean_kernel(ForwardArgs<In, Acc> a, Acc* __restrict__ means) {
  const Slots<Acc>& s = a.s;
  const int64_t groups = mean_groups(s.C), i = blockIdx.x / groups, d0 = (blockIdx.x % groups) * kMeanRows;
  const int group = static_cast<int>(threadIdx.x) / kLanes, lane = static_cast<int>(threadIdx.x) % kLanes;
  Acc* out = means + i * s.C;
  if (!s.segment_valid[i]) {  // the same for the whole block: no barrier is skipped by part of it
    if (threadIdx.x < kMeanRows && d0 + threadIdx.x < s.C) out[d0 + threadIdx.x] = Acc(0);
    return;
  }
  const Acc count = s.segment_count[i];
  const Range r = slot_range(a.segment_start[i], count, s.T);
  const In* rows = a.features + (clamp_index(a.segment_video[i], s.N) * s.C + d0) * s.T;
  const int first = group * kRowsPerGroup;
  Acc acc[kRowsPerGroup];
  bool inside[kRowsPerGroup];
#pragma unroll
  for (int k = 0; k < kRowsPerGroup; ++k) {
    acc[k] = Acc(0);
    inside[k] = d0 + first + k < s.C;
  }
  for (int64_t t = r.lo + lane; t < r.hi; t += kLanes) {
#pragma unroll
    for (int k = 0; k < kRowsPerGroup; ++k)
      if (inside[k]) acc[k] += to_acc(rows[(first + k) * s.T + t]);
  }
  Acc* partial = smem_base<Acc>();  // kMeanRows x kLanes: the lanes' partials of each row
#pragma unroll
  for (int k = 0; k < kRowsPerGroup; ++k) partial[(first + k) * kLanes + lane] = acc[k];
  __syncthreads();
  if (threadIdx.x < kMeanRows && d0 + threadIdx.x < s.C) {
    Acc sum = Acc(0);
    for (int l = 0; l < kLanes; ++l) sum += partial[threadIdx.x * kLanes + l];
    out[d0 + threadIdx.x] = sum / count;
  }
}

// The feature head, one thread per entry (i, d) of f (M, D): f_i[d] = b[d] + Σ_k W[d, k] m_i[k], k in order (the
// CPU kernel's order); 0 for padding slots.
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    al_head_kernel(const Acc* __restrict__ means, const Acc* __restrict__ weight, const Acc* __restrict__ bias,
                   const bool* __restrict__ valid, int64_t D, int64_t C, Acc* __restrict__ f) {
  const int64_t groups = thread_groups(D), i = blockIdx.x / groups;
  const int64_t d = (blockIdx.x % groups) * kThreads + threadIdx.x;
  if (d >= D) return;
  if (!valid[i]) {
    f[i * D + d] = Acc(0);
    return;
  }
  const Acc* w = weight + d * C;
  const Acc* m = means + i * C;
  Acc sum = bias[d];
  for (int64_t k = 0; k < C; ++k) sum = mul_add(w[k], m[k], sum);
  f[i * D + d] = sum;
}

// One kPairTile x kPairTile tile of pairs (i, j), a thread per pair: PairSums over D (rows of f for i and j and of
// the unit embeddings for j staged kPairChunk elements at a time) -> cos_ij, d_ij, ‖f_i‖ (from the first tile
// column); with tile_stats (forward), the tile's largest d and the number of its entries equal to it.
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    al_pairs_kernel(Slots<Acc> s, const Acc* __restrict__ f, Acc* __restrict__ cos, Acc* __restrict__ dist,
                    Acc* __restrict__ norm, Acc* __restrict__ tile_stats) {
  constexpr int ld = kPairChunk + 1;  // odd: the threads of a warp read distinct banks of fj / ej
  Acc* fi = smem_base<Acc>();         // kPairTile x ld each
  Acc* fj = fi + kPairTile * ld;
  Acc* ej = fj + kPairTile * ld;
  Acc* scratch = ej + kPairTile * ld;  // kThreads
  const int64_t M = s.M, D = s.D, tiles = pair_tiles(M);
  const int64_t i0 = (blockIdx.x / tiles) * kPairTile, j0 = (blockIdx.x % tiles) * kPairTile;
  const int ty = static_cast<int>(threadIdx.x) / kPairTile, tx = static_cast<int>(threadIdx.x) % kPairTile;
  PairSums<Acc> sums{Acc(0), Acc(0), Acc(0)};
  for (int64_t c0 = 0; c0 < D; c0 += kPairChunk) {
    const int n = D - c0 < kPairChunk ? static_cast<int>(D - c0) : kPairChunk;
    for (int e = threadIdx.x; e < kPairTile * kPairChunk; e += kThreads) {
      const int r = e / kPairChunk, k = e % kPairChunk;
      const int64_t i = i0 + r, j = j0 + r;
      fi[r * ld + k] = k < n && i < M ? f[i * D + c0 + k] : Acc(0);
      fj[r * ld + k] = k < n && j < M ? f[j * D + c0 + k] : Acc(0);
      ej[r * ld + k] = k < n && j < M ? s.unit_embeddings[clamp_index(s.segment_label[j], s.K) * D + c0 + k] : Acc(0);
    }
    __syncthreads();
    for (int k = 0; k < n; ++k) sums.add(fi[ty * ld + k], fj[tx * ld + k], ej[tx * ld + k]);
    __syncthreads();
  }
  const int64_t i = i0 + ty, j = j0 + tx;
  const bool inside = i < M && j < M;
  Acc d = Acc(-1);  // below every distance: pairs outside the matrix take no part in the tile's maximum
  if (inside) {
    const Acc n = hd_sqrt(sums.nn);
    d = s.segment_valid[i] && s.segment_valid[j] ? distance_of(sums.sq) : Acc(0);
    cos[i * M + j] = sums.dot / floored_norm(n);
    dist[i * M + j] = d;
    if (j == 0) norm[i] = n;
  }
  if (tile_stats != nullptr) {  // a kernel argument: the same for the whole block
    Acc top[1] = {d};
    block_reduce<1>(scratch, top, Max());
    Acc ties[1] = {inside && d == top[0] ? Acc(1) : Acc(0)};
    block_reduce<1>(scratch, ties, Sum());
    if (threadIdx.x == 0) {
      tile_stats[2 * blockIdx.x] = top[0];
      tile_stats[2 * blockIdx.x + 1] = ties[0];
    }
  }
}

// One block: rows = max(Σ valid, 1) -> workspace; dmax = the tiles' largest d, c = the ties of the tiles whose
// largest d is dmax -> max_distance.
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    al_stats_kernel(Slots<Acc> s, const Acc* __restrict__ tile_stats, int64_t tiles, Acc* __restrict__ rows,
                    Acc* __restrict__ max_distance) {
  Acc* scratch = smem_base<Acc>();                                       // kThreads
  int64_t* counts = reinterpret_cast<int64_t*>(scratch + kThreads);  // kThreads
  const Acc valid = valid_rows<Acc>(s.segment_valid, s.M, counts);
  Acc top[1] = {Acc(-1)};
  for (int64_t b = threadIdx.x; b < tiles; b += kThreads) top[0] = nan_max(top[0], tile_stats[2 * b]);
  block_reduce<1>(scratch, top, Max());
  int64_t ties[1] = {0};  // counted exactly whatever Acc
  for (int64_t b = threadIdx.x; b < tiles; b += kThreads)
    if (tile_stats[2 * b] == top[0]) ties[0] += static_cast<int64_t>(tile_stats[2 * b + 1]);
  block_reduce<1>(counts, ties, Sum());
  if (threadIdx.x == 0) {
    *rows = valid;
    max_distance[0] = top[0];
    max_distance[1] = static_cast<Acc>(ties[0]);
  }
}

// What the row kernel reads besides the slots.
template <typename Acc>
struct RowInputs {
  const Acc *absolute_log_weight, *relative_log_weight, *cos, *dist, *max_distance;
};

// One block per row i: lse of row i of L + b, of Lᵀ + b and of P + b (max, then the sum of exp, each a block
// reduction) -> row_lse; the row's KL sums Σ_j w (lw − log_softmax) -> kl[3 i + 0..2].
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    al_rows_kernel(Slots<Acc> s, RowInputs<Acc> in, Acc* __restrict__ row_lse, Acc* __restrict__ kl) {
  Acc* scratch = smem_base<Acc>();  // 3 kThreads
  const int64_t i = blockIdx.x, M = s.M;
  const bool valid_i = s.segment_valid[i];
  const Acc scale = s.logit_scale[0], dmax = in.max_distance[0];
  auto predictions = [&](int64_t j, Acc (&x)[3]) {
    row_predictions(scale, in.cos[i * M + j], in.cos[j * M + i], in.dist[i * M + j], dmax,
                    bias_of<Acc>(valid_i, s.segment_valid[j]), x);
  };
  Acc top[3] = {-static_cast<Acc>(INFINITY), -static_cast<Acc>(INFINITY), -static_cast<Acc>(INFINITY)};
  for (int64_t j = threadIdx.x; j < M; j += kThreads) {
    Acc x[3];
    predictions(j, x);
    for (int c = 0; c < 3; ++c) top[c] = nan_max(top[c], x[c]);
  }
  block_reduce<3>(scratch, top, Max());
  Acc lse[3] = {Acc(0), Acc(0), Acc(0)};
  for (int64_t j = threadIdx.x; j < M; j += kThreads) {
    Acc x[3];
    predictions(j, x);
    for (int c = 0; c < 3; ++c) lse[c] += hd_exp(x[c] - top[c]);
  }
  block_reduce<3>(scratch, lse, Sum());
  for (int c = 0; c < 3; ++c) lse[c] = top[c] + hd_log(lse[c]);
  Acc sums[3] = {Acc(0), Acc(0), Acc(0)};
  for (int64_t j = threadIdx.x; j < M; j += kThreads) {
    Acc x[3];
    predictions(j, x);
    const int64_t e = i * M + j;
    sums[0] += kl_entry(s.absolute_weight[e], in.absolute_log_weight[e], x[0], lse[0]);
    sums[1] += kl_entry(s.absolute_weight[e], in.absolute_log_weight[e], x[1], lse[1]);
    sums[2] += kl_entry(s.relative_weight[e], in.relative_log_weight[e], x[2], lse[2]);
  }
  block_reduce<3>(scratch, sums, Sum());
  if (threadIdx.x == 0)
    for (int c = 0; c < 3; ++c) {
      row_lse[c * M + i] = lse[c];
      kl[3 * i + c] = sums[c];
    }
}

// One block: the rows' KL sums in row order -> terms = [(KL(L) + KL(Lᵀ)) / 2, KL(P)], each over rows.
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    al_terms_kernel(const Acc* __restrict__ kl, int64_t M, const Acc* __restrict__ rows, Acc* __restrict__ terms) {
  Acc* scratch = smem_base<Acc>();  // 3 kThreads
  Acc sums[3] = {Acc(0), Acc(0), Acc(0)};
  for (int64_t i = threadIdx.x; i < M; i += kThreads)
    for (int c = 0; c < 3; ++c) sums[c] += kl[3 * i + c];
  block_reduce<3>(scratch, sums, Sum());
  if (threadIdx.x == 0) {
    const Acc r = *rows;
    terms[0] = (sums[0] / r + sums[1] / r) / Acc(2);
    terms[1] = sums[2] / r;
  }
}

// ---- backward --------------------------------------------------------------------------------------------------

// One block per row i: Wa_i = Σ_j wa_ij, Wr_i = Σ_j wr_ij -> weight_sums [Wa, Wr]; block 0 also rows.
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    al_weight_sums_kernel(Slots<Acc> s, Acc* __restrict__ weight_sums, Acc* __restrict__ rows) {
  Acc* scratch = smem_base<Acc>();                                           // 2 kThreads
  int64_t* counts = reinterpret_cast<int64_t*>(scratch + 2 * kThreads);  // kThreads
  const int64_t i = blockIdx.x, M = s.M;
  Acc w[2] = {Acc(0), Acc(0)};
  for (int64_t j = threadIdx.x; j < M; j += kThreads) {
    w[0] += s.absolute_weight[i * M + j];
    w[1] += s.relative_weight[i * M + j];
  }
  block_reduce<2>(scratch, w, Sum());
  if (threadIdx.x == 0) {
    weight_sums[i] = w[0];
    weight_sums[M + i] = w[1];
  }
  if (blockIdx.x == 0) {  // the same for the whole block
    const Acc r = valid_rows<Acc>(s.segment_valid, M, counts);
    if (threadIdx.x == 0) *rows = r;
  }
}

// What the pair-gradient kernel reads besides the slots.
template <typename Acc>
struct PairGradInputs {
  const Acc *grad_terms, *row_lse, *max_distance, *cos, *dist, *weight_sums, *rows;
};

// One thread per pair (i, j): G_ij and H_ij -> grad_l, grad_p; the block's Σ G_ij cos_ij (grad s) and Σ H_ij d_ij
// (grad dmax up to its factor) -> partials[2 block + 0..1].
// (The explicit minimum of one block per SM here and in al_slot_grad_kernel: without it ptxas kept the values live
// across the division slow-path calls in too few registers and spilled them.)
template <typename Acc>
__global__ void __launch_bounds__(kThreads, 1)
    al_pair_grad_kernel(Slots<Acc> s, PairGradInputs<Acc> in, Acc* __restrict__ grad_l, Acc* __restrict__ grad_p,
                        Acc* __restrict__ partials) {
  Acc* scratch = smem_base<Acc>();  // 2 kThreads
  const int64_t M = s.M, e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  Acc part[2] = {Acc(0), Acc(0)};
  if (e < M * M) {
    const int64_t i = e / M, j = e % M;
    const bool valid_i = s.segment_valid[i], valid_j = s.segment_valid[j];
    const Acc rows = *in.rows, c = in.cos[e], d = in.dist[e];
    const AbsoluteEntry<Acc> entry{s.logit_scale[0] * c, bias_of<Acc>(valid_i, valid_j), bias_of<Acc>(valid_j, valid_i),
                                   in.row_lse[i], in.row_lse[M + j]};
    const Acc G = absolute_grad(entry, in.weight_sums[i], in.weight_sums[j], s.absolute_weight[e],
                                s.absolute_weight[j * M + i], in.grad_terms[0] / (Acc(2) * rows));
    const Acc H = relative_grad(similarity(d, in.max_distance[0]), entry.bias_ij, in.row_lse[2 * M + i],
                                in.weight_sums[M + i], s.relative_weight[e], in.grad_terms[1] / rows);
    grad_l[e] = G;
    grad_p[e] = H;
    part[0] = G * c;
    part[1] = H * d;
  }
  block_reduce<2>(scratch, part, Sum());
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = part[0];
    partials[2 * blockIdx.x + 1] = part[1];
  }
}

// What the slot-gradient kernel reads besides the slots.
template <typename Acc>
struct SlotGradInputs {
  const Acc *f, *max_distance, *norm, *dist, *grad_l, *grad_p, *partials;
  int64_t blocks;  // of al_pair_grad_kernel
  bool per_frame;  // divide by count_i: each frame's share (without the head; with it the head's kernels divide)
};

// One block per slot i, a thread per element d of D (kThreads at a time): g_i = s Σ_j G_ij ê_j (kept in slot_grad
// until f̂_i·g_i is reduced), then grad f_i = through_normalize(g_i) + Σ_j coef_ij (f_i − f_j), / count_i when
// per_frame -> slot_grad row i (0 for padding). The j of each sum are staged kThreads at a time (their coefficient
// and row). Block 0 also sums the pair blocks' Σ G cos -> grad_logit_scale.
template <typename Acc>
__global__ void __launch_bounds__(kThreads, 1)
    al_slot_grad_kernel(Slots<Acc> s, SlotGradInputs<Acc> in, Acc* __restrict__ slot_grad,
                        Acc* __restrict__ grad_logit_scale) {
  Acc* scratch = smem_base<Acc>();                                  // 2 kThreads
  Acc* coef = scratch + 2 * kThreads;                               // kThreads
  int64_t* row = reinterpret_cast<int64_t*>(coef + kThreads);   // kThreads: offset of ê_j or f_j
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t i = blockIdx.x, M = s.M, D = s.D;
  Acc sums[2] = {Acc(0), Acc(0)};
  for (int64_t b = tid; b < in.blocks; b += kThreads) {
    sums[0] += in.partials[2 * b];
    sums[1] += in.partials[2 * b + 1];
  }
  block_reduce<2>(scratch, sums, Sum());
  if (blockIdx.x == 0 && tid == 0) *grad_logit_scale = sums[0];
  Acc* out = slot_grad + i * D;
  if (!s.segment_valid[i]) {  // the same for the whole block
    for (int64_t d = tid; d < D; d += kThreads) out[d] = Acc(0);
    return;
  }
  const DistanceGrad<Acc> dg = distance_grad(in.max_distance[0], in.max_distance[1], sums[1]);
  const Acc scale = s.logit_scale[0], norm = in.norm[i];
  const Acc* fi = in.f + i * D;
  Acc fhat_dot_g[1] = {Acc(0)};
  for (int64_t d0 = 0; d0 < D; d0 += kThreads) {
    const int64_t d = d0 + tid;
    Acc g = Acc(0);
    for (int64_t j0 = 0; j0 < M; j0 += kThreads) {
      if (j0 + tid < M) {
        coef[tid] = in.grad_l[i * M + j0 + tid];
        row[tid] = clamp_index(s.segment_label[j0 + tid], s.K) * D;
      }
      __syncthreads();
      const int n = M - j0 < kThreads ? static_cast<int>(M - j0) : kThreads;
      if (d < D)
        for (int k = 0; k < n; ++k) g = mul_add(coef[k], s.unit_embeddings[row[k] + d], g);
      __syncthreads();
    }
    if (d < D) {
      g *= scale;
      out[d] = g;
      fhat_dot_g[0] += unit_of(fi[d], norm) * g;
    }
  }
  block_reduce<1>(scratch, fhat_dot_g, Sum());
  const Acc share = in.per_frame ? s.segment_count[i] : Acc(1);
  for (int64_t d0 = 0; d0 < D; d0 += kThreads) {
    const int64_t d = d0 + tid;
    Acc rel = Acc(0);
    for (int64_t j0 = 0; j0 < M; j0 += kThreads) {
      const int64_t j = j0 + tid;
      if (j < M) {
        coef[tid] = pair_coefficient(in.grad_p[i * M + j], in.grad_p[j * M + i], in.dist[i * M + j], dg);
        row[tid] = j * D;
      }
      __syncthreads();
      const int n = M - j0 < kThreads ? static_cast<int>(M - j0) : kThreads;
      if (d < D) {
        const Acc x = fi[d];
        for (int k = 0; k < n; ++k) rel = mul_add(coef[k], x - in.f[row[k] + d], rel);
      }
      __syncthreads();
    }
    if (d < D) out[d] = (through_normalize(out[d], unit_of(fi[d], norm), fhat_dot_g[0], norm) + rel) / share;
  }
}

// The head's parameter gradients from γ = slot_grad (M, D) and the means (M, C), one thread per entry: entries
// e < D C of grad W (e = d C + k): Σ_i γ_i[d] m_i[k]; the D entries after them of grad b: Σ_i γ_i[d]; the slots in
// order (padding slots' γ is 0).
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    al_head_params_grad_kernel(const Acc* __restrict__ slot_grad, const Acc* __restrict__ means, int64_t M,
                               int64_t D, int64_t C, Acc* __restrict__ grad_weight, Acc* __restrict__ grad_bias) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (e < D * C) {
    const int64_t d = e / C, k = e % C;
    Acc sum = Acc(0);
    for (int64_t i = 0; i < M; ++i) sum = mul_add(slot_grad[i * D + d], means[i * C + k], sum);
    grad_weight[e] = sum;
  } else if (e < D * C + D) {
    const int64_t d = e - D * C;
    Acc sum = Acc(0);
    for (int64_t i = 0; i < M; ++i) sum += slot_grad[i * D + d];
    grad_bias[d] = sum;
  }
}

// What each frame of slot i gets with the head, one thread per entry (i, k) of head_rows (M, C):
// Σ_d W[d, k] γ_i[d] (d in order) / count_i.
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    al_head_input_grad_kernel(const Acc* __restrict__ slot_grad, const Acc* __restrict__ weight,
                              const Acc* __restrict__ count, int64_t D, int64_t C, Acc* __restrict__ head_rows) {
  const int64_t groups = thread_groups(C), i = blockIdx.x / groups;
  const int64_t k = (blockIdx.x % groups) * kThreads + threadIdx.x;
  if (k >= C) return;
  const Acc* g = slot_grad + i * D;
  Acc sum = Acc(0);
  for (int64_t d = 0; d < D; ++d) sum = mul_add(weight[d * C + k], g[d], sum);
  head_rows[i * C + k] = sum / count[i];
}

// One thread per frame t of row n, kGradRows rows of C per block: grad_features[n, k, t] = rows[i, k] for
// i = frame_segment[n, t] in [0, M), else 0 (rows (M, C): slot_grad without the head, head_rows with it). Every
// element is written once.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    al_frame_grad_kernel(const int64_t* __restrict__ frame_segment, const Acc* __restrict__ rows, int64_t N,
                         int64_t C, int64_t T, int64_t M, In* __restrict__ grad_features) {
  const int64_t groups = grad_groups(C), tiles = frame_tiles(T);
  const int64_t k0 = (blockIdx.x % groups) * kGradRows, rest = blockIdx.x / groups;
  const int64_t n = rest / tiles, t = (rest % tiles) * kFrameTile + threadIdx.x;
  if (t >= T) return;
  const int64_t i = frame_segment[n * T + t];
  const Acc* src = i >= 0 && i < M ? rows + i * C : nullptr;
  const int64_t k1 = C - k0 < kGradRows ? C : k0 + kGradRows;
  In* out = grad_features + (n * C + k0) * T + t;
  for (int64_t k = k0; k < k1; ++k, out += T) *out = Store<In>::from(src != nullptr ? src[k] : Acc(0));
}

// ---- launch code -------------------------------------------------------------------------------------------------

// The sizes and the slot pointers; `head`: whether the head's pointers are given (C = D without it).
template <typename Acc>
bool valid_slots(const Slots<Acc>& s, bool head) {
  if (s.N < 1 || s.D < 1 || s.T < 1 || s.M < 1 || s.K < 1 || s.C < 1 || (!head && s.C != s.D)) return false;
  return s.segment_count && s.segment_valid && s.segment_label && s.unit_embeddings && s.logit_scale &&
         s.absolute_weight && s.relative_weight;
}

// Whether a set of the head's pointers is all given (true) or all null (false); `mixed` when neither.
struct HeadPointers {
  bool head, mixed;
};
inline HeadPointers head_pointers(std::initializer_list<const void*> pointers) {
  int given = 0;
  for (const void* p : pointers) given += p != nullptr ? 1 : 0;
  return {given > 0, given > 0 && given < static_cast<int>(pointers.size())};
}

// Shared memory of the kernels (bytes).
template <typename Acc>
size_t pairs_smem() {
  return (3 * kPairTile * (kPairChunk + 1) + kThreads) * sizeof(Acc);
}

template <typename Acc>
cudaError_t launch_pairs(const Slots<Acc>& s, const Acc* f, const Layout& l, Acc* ws, Acc* tile_stats,
                         cudaStream_t stream) {
  const int64_t tiles = pair_tiles(s.M) * pair_tiles(s.M);
  al_pairs_kernel<Acc><<<static_cast<unsigned>(tiles), kThreads, pairs_smem<Acc>(), stream>>>(
      s, f, ws + l.cos, ws + l.dist, ws + l.norm, tile_stats);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

template <typename In, typename Acc>
cudaError_t forward_impl(const ForwardArgs<In, Acc>& a, cudaStream_t stream) {
  const Slots<Acc>& s = a.s;
  const HeadPointers hp = head_pointers({a.head_weight, a.head_bias, a.segment_means});
  if (hp.mixed || !valid_slots(s, hp.head) || !a.features || !a.segment_video || !a.segment_start ||
      !a.absolute_log_weight || !a.relative_log_weight || !a.terms || !a.segment_features || !a.row_lse ||
      !a.max_distance || !a.workspace)
    return cudaErrorInvalidValue;
  const int64_t mean_blocks = s.M * mean_groups(s.C), head_blocks = s.M * thread_groups(s.D);
  const int64_t tiles = pair_tiles(s.M) * pair_tiles(s.M);
  if (!grid_fits(mean_blocks) || (hp.head && !grid_fits(head_blocks)) || !grid_fits(tiles) || !grid_fits(s.M))
    return cudaErrorInvalidValue;
  const Layout l = layout(s.M, s.D, 0, false);
  Acc* ws = a.workspace;
  al_segment_mean_kernel<In, Acc><<<static_cast<unsigned>(mean_blocks), kThreads, kMeanRows * kLanes * sizeof(Acc),
                                    stream>>>(a, hp.head ? a.segment_means : a.segment_features);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  if (hp.head) {
    al_head_kernel<Acc><<<static_cast<unsigned>(head_blocks), kThreads, 0, stream>>>(
        a.segment_means, a.head_weight, a.head_bias, s.segment_valid, s.D, s.C, a.segment_features);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
  }
  TRGNET_RETURN_IF_ERROR(
      launch_pairs(s, static_cast<const Acc*>(a.segment_features), l, ws, ws + l.tile_stats, stream));
  al_stats_kernel<Acc><<<1, kThreads, kThreads * (sizeof(Acc) + sizeof(int64_t)), stream>>>(
      s, ws + l.tile_stats, tiles, ws + l.rows, a.max_distance);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  const RowInputs<Acc> rows{a.absolute_log_weight, a.relative_log_weight, ws + l.cos, ws + l.dist, a.max_distance};
  al_rows_kernel<Acc><<<static_cast<unsigned>(s.M), kThreads, 3 * kThreads * sizeof(Acc), stream>>>(
      s, rows, a.row_lse, ws + l.kl);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  al_terms_kernel<Acc><<<1, kThreads, 3 * kThreads * sizeof(Acc), stream>>>(ws + l.kl, s.M, ws + l.rows, a.terms);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

template <typename In, typename Acc>
cudaError_t backward_impl(const BackwardArgs<In, Acc>& a, cudaStream_t stream) {
  const Slots<Acc>& s = a.s;
  const HeadPointers hp = head_pointers({a.head_weight, a.segment_means, a.grad_head_weight, a.grad_head_bias});
  if (hp.mixed || !valid_slots(s, hp.head) || !a.frame_segment || !a.grad_terms || !a.segment_features ||
      !a.row_lse || !a.max_distance || !a.grad_features || !a.grad_logit_scale || !a.workspace)
    return cudaErrorInvalidValue;
  const int64_t tiles = pair_tiles(s.M) * pair_tiles(s.M), pair_blocks = pair_grad_blocks(s.M);
  const int64_t frame_blocks = s.N * frame_tiles(s.T) * grad_groups(s.C);
  const int64_t param_blocks = thread_groups(s.D * s.C + s.D), input_blocks = s.M * thread_groups(s.C);
  if (!grid_fits(tiles) || !grid_fits(s.M) || !grid_fits(pair_blocks) || !grid_fits(frame_blocks) ||
      (hp.head && (!grid_fits(param_blocks) || !grid_fits(input_blocks))))
    return cudaErrorInvalidValue;
  const Layout l = layout(s.M, s.D, hp.head ? s.C : 0, true);
  Acc* ws = a.workspace;
  TRGNET_RETURN_IF_ERROR(launch_pairs(s, a.segment_features, l, ws, static_cast<Acc*>(nullptr), stream));
  al_weight_sums_kernel<Acc><<<static_cast<unsigned>(s.M), kThreads, kThreads * (2 * sizeof(Acc) + sizeof(int64_t)),
                               stream>>>(s, ws + l.weight_sums, ws + l.rows);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  const PairGradInputs<Acc> pg{a.grad_terms, a.row_lse, a.max_distance, ws + l.cos, ws + l.dist, ws + l.weight_sums,
                               ws + l.rows};
  al_pair_grad_kernel<Acc><<<static_cast<unsigned>(pair_blocks), kThreads, 2 * kThreads * sizeof(Acc), stream>>>(
      s, pg, ws + l.grad_l, ws + l.grad_p, ws + l.grad_partials);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  const SlotGradInputs<Acc> sg{a.segment_features, a.max_distance, ws + l.norm, ws + l.dist, ws + l.grad_l,
                               ws + l.grad_p, ws + l.grad_partials, pair_blocks, !hp.head};
  al_slot_grad_kernel<Acc><<<static_cast<unsigned>(s.M), kThreads, kThreads * (3 * sizeof(Acc) + sizeof(int64_t)),
                             stream>>>(s, sg, ws + l.slot_grad, a.grad_logit_scale);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  if (hp.head) {  // slot_grad holds γ: the head's gradients, then the frames' rows Wᵀ γ_i / count_i
    al_head_params_grad_kernel<Acc><<<static_cast<unsigned>(param_blocks), kThreads, 0, stream>>>(
        ws + l.slot_grad, a.segment_means, s.M, s.D, s.C, a.grad_head_weight, a.grad_head_bias);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
    al_head_input_grad_kernel<Acc><<<static_cast<unsigned>(input_blocks), kThreads, 0, stream>>>(
        ws + l.slot_grad, a.head_weight, s.segment_count, s.D, s.C, ws + l.head_rows);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
  }
  al_frame_grad_kernel<In, Acc><<<static_cast<unsigned>(frame_blocks), kThreads, 0, stream>>>(
      a.frame_segment, ws + (hp.head ? l.head_rows : l.slot_grad), s.N, s.C, s.T, s.M, a.grad_features);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

}  // namespace
}  // namespace al

#define TRGNET_AL_DEFINE(T_IN, T_ACC)                                                                     \
  TRGNET_AL_FORWARD_LAUNCHER(T_IN, T_ACC) { return al::forward_impl<T_IN, T_ACC>(args, stream); }         \
  TRGNET_AL_BACKWARD_LAUNCHER(T_IN, T_ACC) { return al::backward_impl<T_IN, T_ACC>(args, stream); }

TRGNET_AL_DEFINE(float, float)
TRGNET_AL_DEFINE(double, double)
TRGNET_AL_DEFINE(__half, float)
TRGNET_AL_DEFINE(__nv_bfloat16, float)

}  // namespace trgnet
