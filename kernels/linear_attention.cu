// CUDA kernels of the non-causal linear attention (sigmoid features); math in
// linear_attention.cuh, launchers declared in linear_attention.h. No torch headers.
//
// Forward:   state_partial (per (n,h) and T-chunk: partial [KV | ks])
//            -> state_reduce (fixed-order sum of the chunk partials -> kv_state, key_sum)
//            -> output (per (n,h) and T-tile: out = phi(q) KV / phi(q) (ks + eps)).
// Backward:  query (per (n,h) and T-chunk: dq, partial [dKV | dks])
//            -> state_reduce (-> dKV, dks in the workspace)
//            -> key (per (n,h) and T-tile: dk, dv).
// One block per (n,h) x chunk/tile, grid flattened to 1-D (x = nh * tiles + tile).
// Tiles of frames are staged in shared memory as Acc; each thread of a reduction kernel owns a
// fixed set of entries of the extended D x (E+1) state and accumulates them over the frames of
// its chunk in frame order, so the result does not depend on scheduling.
#include "linear_attention.h"

#include <type_traits>

#include "cuda_common.cuh"
#include "linear_attention.cuh"

namespace trgnet {
namespace la {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxEntries = (kMaxHeadDim * (kMaxHeadDim + 1) + kThreads - 1) / kThreads;
constexpr int kSmemBudget = 48 * 1024;  // default dynamic shared-memory limit, no opt-in needed

struct Dims {
  int64_t N, T, H;
  int D, E;
};

// Flat index of frame t of (n, h) in a (N, T, H, *) tensor, in rows.
__device__ __forceinline__ int64_t frame_row(const Dims& s, int64_t nh, int64_t t) {
  const int64_t n = nh / s.H, h = nh % s.H;
  return (n * s.T + t) * s.H + h;
}
__device__ __forceinline__ bool mask_at(const bool* mask, const Dims& s, int64_t nh, int64_t t) {
  return mask == nullptr || mask[(nh / s.H) * s.T + t];
}

// Each thread owns entries idx = tid + j * kThreads of the D x W state.
template <typename Acc>
__device__ __forceinline__ void accumulate_rows(Acc (&acc)[kMaxEntries], const Acc* a, const Acc* b,
                                                int rows, int D, int W) {
  const int entries = D * W;
#pragma unroll
  for (int j = 0; j < kMaxEntries; ++j) {
    const int idx = threadIdx.x + j * kThreads;
    if (idx < entries) {
      const int d = idx / W, c = idx % W;
      Acc x = acc[j];
      for (int r = 0; r < rows; ++r) x += a[r * D + d] * b[r * W + c];
      acc[j] = x;
    }
  }
}

template <typename Acc>
__device__ __forceinline__ void zero_entries(Acc (&acc)[kMaxEntries]) {
#pragma unroll
  for (int j = 0; j < kMaxEntries; ++j) acc[j] = Acc(0);
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

template <typename Acc>
__device__ __forceinline__ void store_partial(const Acc (&acc)[kMaxEntries], Acc* partial, int entries) {
#pragma unroll
  for (int j = 0; j < kMaxEntries; ++j) {
    const int idx = threadIdx.x + j * kThreads;
    if (idx < entries) partial[idx] = acc[j];
  }
}

// ---- forward -----------------------------------------------------------------------------------

// partial[(nh * chunks + chunk) * D*W + d*W + c] = sum over the chunk's frames of
// m * phi(k[d]) * [v, 1][c].
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    state_partial_kernel(const In* __restrict__ k, const In* __restrict__ v, const bool* __restrict__ mask,
                         Dims s, int64_t chunk_len, int64_t chunks, int tile, Acc* __restrict__ partial) {
  const int D = s.D, E = s.E, W = E + 1;
  const int64_t nh = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  Acc* phik = smem_base<Acc>();  // tile x D
  Acc* vext = phik + tile * D;   // tile x W

  Acc acc[kMaxEntries];
  zero_entries(acc);
  for_each_chunk_tile(s, nh, chunk, chunk_len, tile, [&](int64_t t0, int rows, int64_t row0) {
    for_each_row_element(k + row0 * D, s.H * D, rows, D, [&](int r, int d, Acc x) {
      phik[r * D + d] = key_feature(x, mask_at(mask, s, nh, t0 + r));
    });
    for_each_row_element(v + row0 * E, s.H * E, rows, E, [&](int r, int c, Acc x) { vext[r * W + c] = x; });
    for (int r = threadIdx.x; r < rows; r += kThreads) vext[r * W + E] = Acc(1);
    __syncthreads();
    accumulate_rows(acc, phik, vext, rows, D, W);
    __syncthreads();
  });
  store_partial(acc, partial + (nh * chunks + chunk) * D * W, D * W);
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

// Loads the extended state [X | x + add] of one (n, h) into shared memory.
template <typename Acc>
__device__ __forceinline__ void load_state(Acc* S, const Acc* X, const Acc* x, Acc add, int64_t nh, int D,
                                           int E) {
  const int W = E + 1;
  for (int idx = threadIdx.x; idx < D * W; idx += kThreads) {
    const int d = idx / W, c = idx % W;
    S[idx] = c < E ? X[(nh * D + d) * E + c] : x[nh * D + d] + add;
  }
}

// Column layout of a state in shared memory for the one-frame-per-thread kernels: KV (or dKV) in columns
// [0, E), zeros up to EP = E rounded up to 16 (so 16-column chunks never leave the row), ks + eps (or dks)
// in column EP, row stride EP + 4 (16-byte aligned rows, for 16-byte shared loads).
__host__ __device__ __forceinline__ int padded_state_cols(int E) { return (E + 15) / 16 * 16; }
__host__ __device__ __forceinline__ int padded_state_stride(int E) { return padded_state_cols(E) + 4; }

// Acc values srow[0..16) from 16-byte aligned shared memory: 16-byte loads (all lanes of a warp read the same
// row: one broadcast wavefront per load).
template <typename Acc>
__device__ __forceinline__ void load16_shared(const Acc* srow, Acc (&v)[16]) {
  constexpr int kVec = Pack16<Acc>::kCount;
#pragma unroll
  for (int p = 0; p < 16 / kVec; ++p) {
    const uint4 raw = reinterpret_cast<const uint4*>(srow)[p];
    const Acc* e = reinterpret_cast<const Acc*>(&raw);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[p * kVec + k] = e[k];
  }
}

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
      load16_shared(S + d * WP + e0, sv);
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

// dq for the chunk's frames, and partial dS = sum_l phi(q_l) (x) dN_l.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    query_backward_kernel(const In* __restrict__ g, const In* __restrict__ q, const Acc* __restrict__ kv,
                          const Acc* __restrict__ ks, Acc eps, Dims s, int64_t chunk_len, int64_t chunks,
                          int tile, In* __restrict__ dq, Acc* __restrict__ partial) {
  const int D = s.D, E = s.E, W = E + 1;
  const int64_t nh = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  Acc* S = smem_base<Acc>();      // D x W (eps included)
  Acc* phiq = S + D * W;          // tile x D
  Acc* gt = phiq + tile * D;      // tile x E
  Acc* num = gt + tile * E;       // tile x W, then dN
  Acc* den = num + tile * W;      // tile
  Acc* dden = den + tile;         // tile

  load_state(S, kv, ks, eps, nh, D, E);
  Acc acc[kMaxEntries];
  zero_entries(acc);
  for_each_chunk_tile(s, nh, chunk, chunk_len, tile, [&](int64_t t0, int rows, int64_t row0) {
    for_each_row_element(q + row0 * D, s.H * D, rows, D, [&](int r, int d, Acc x) { phiq[r * D + d] = sigmoid(x); });
    for_each_row_element(g + row0 * E, s.H * E, rows, E, [&](int r, int e, Acc x) { gt[r * E + e] = x; });
    __syncthreads();  // also orders the previous tile's reads of num/dN before the writes below
    for (int i = threadIdx.x; i < rows * W; i += kThreads) {
      const int r = i / W, c = i % W;
      num[i] = feature_dot_column(phiq + r * D, S, D, W, c);
    }
    __syncthreads();
    for (int r = threadIdx.x; r < rows; r += kThreads) {
      den[r] = num[r * W + E];
      dden[r] = grad_den(gt + r * E, num + r * W, E, den[r]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < rows * W; i += kThreads) {  // num -> dN (reads gt, den, dden only)
      const int r = i / W, c = i % W;
      num[i] = c < E ? gt[r * E + c] / den[r] : dden[r];
    }
    __syncthreads();
    const Acc* dN = num;
    store_rows(dq + row0 * D, s.H * D, rows, D,
               [&](int r, int d) { return grad_query_value(phiq[r * D + d], S + d * W, dN + r * W, W); });
    accumulate_rows(acc, phiq, dN, rows, D, W);
    __syncthreads();
  });
  store_partial(acc, partial + (nh * chunks + chunk) * D * W, D * W);
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
  const int D = s.D, E = s.E, EP = padded_state_cols(E), WP = padded_state_stride(E);
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
    Acc a = Acc(0);
    if (d < D) {
      a = dS[d * WP + EP];  // the key-sum column times the 1 of [v, 1]
#pragma unroll
      for (int c0 = 0; c0 < DP; c0 += 16) {
        if (c0 < E) {
          Acc sv[16];
          load16_shared(dS + d * WP + c0, sv);
#pragma unroll
          for (int j = 0; j < 16; ++j) a += sv[j] * vr[c0 + j];
        }
      }
    }
    out[d] = m ? sigmoid_grad(sk[d]) * a : Acc(0);
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

// Largest power-of-two tile <= max_tile whose shared memory fits the budget.
inline int pick_tile(int max_tile, size_t fixed_bytes, size_t row_bytes) {
  int tile = max_tile;
  while (tile > 1 && fixed_bytes + tile * row_bytes > static_cast<size_t>(kSmemBudget)) tile /= 2;
  return tile;
}

inline bool valid_sizes(int64_t N, int64_t T, int64_t H, int64_t D, int64_t E) {
  return N >= 0 && T >= 0 && H >= 0 && D >= 1 && E >= 1 && D <= kMaxHeadDim && E <= kMaxHeadDim;
}

inline bool grid_ok(int64_t blocks) { return blocks > 0 && blocks <= 0x7fffffffLL; }

// Launch of a one-frame-per-thread kernel over (n, h) x T frames: blocks of kThreads frames, a padded D-row
// state in shared memory, and the register row width DP (16, 32 or 64, the smallest >= width) as a
// compile-time constant: launch(std::integral_constant<int, DP>, grid, smem bytes, blocks per (n, h)).
template <typename Acc, typename Launch>
cudaError_t launch_frame_rows(int64_t NH, int64_t T, int64_t D, int64_t E, int64_t width, Launch launch) {
  const int64_t tiles = (T + kThreads - 1) / kThreads;
  if (!grid_ok(NH * tiles)) return cudaErrorInvalidConfiguration;
  const size_t smem = static_cast<size_t>(D) * padded_state_stride(static_cast<int>(E)) * sizeof(Acc);
  const dim3 grid(static_cast<unsigned>(NH * tiles));
  if (width <= 16)
    launch(std::integral_constant<int, 16>(), grid, smem, tiles);
  else if (width <= 32)
    launch(std::integral_constant<int, 32>(), grid, smem, tiles);
  else
    launch(std::integral_constant<int, 64>(), grid, smem, tiles);
  return cudaSuccess;
}

#define TRGNET_LA_CHECK_LAUNCH()                 \
  do {                                           \
    cudaError_t err_ = cudaGetLastError();       \
    if (err_ != cudaSuccess) return err_;        \
  } while (0)

template <typename In, typename Acc>
cudaError_t forward_impl(const In* q, const In* k, const In* v, const bool* mask, int64_t N, int64_t T, int64_t H,
                         int64_t D, int64_t E, double eps, In* out, Acc* kv_state, Acc* key_sum, Acc* workspace,
                         cudaStream_t stream) {
  if (!valid_sizes(N, T, H, D, E)) return cudaErrorInvalidValue;
  const int64_t NH = N * H;
  if (NH == 0) return cudaSuccess;
  if (!kv_state || !key_sum || !workspace || (T > 0 && (!q || !k || !v || !out))) return cudaErrorInvalidValue;
  const Dims s{N, T, H, static_cast<int>(D), static_cast<int>(E)};
  const int64_t W = E + 1;
  const int64_t chunk_len = reduction_chunk_len(T), chunks = reduction_chunks(T);
  if (!grid_ok(NH * chunks)) return cudaErrorInvalidConfiguration;

  const int ptile = pick_tile(128, 0, (D + W) * sizeof(Acc));
  state_partial_kernel<In, Acc><<<static_cast<unsigned>(NH * chunks), kThreads, ptile * (D + W) * sizeof(Acc),
                                  stream>>>(k, v, mask, s, chunk_len, chunks, ptile, workspace);
  TRGNET_LA_CHECK_LAUNCH();
  state_reduce_kernel<Acc><<<static_cast<unsigned>(NH), kThreads, 0, stream>>>(workspace, chunks, s.D, s.E,
                                                                              kv_state, key_sum);
  TRGNET_LA_CHECK_LAUNCH();
  if (T == 0) return cudaSuccess;

  TRGNET_RETURN_IF_ERROR(launch_frame_rows<Acc>(NH, T, D, E, D, [&](auto dp, dim3 grid, size_t smem, int64_t tiles) {
    output_kernel<In, Acc, decltype(dp)::value><<<grid, kThreads, smem, stream>>>(q, kv_state, key_sum,
                                                                                 static_cast<Acc>(eps), s, tiles, out);
  }));
  TRGNET_LA_CHECK_LAUNCH();
  return cudaSuccess;
}

template <typename In, typename Acc>
cudaError_t backward_impl(const In* g, const In* q, const In* k, const In* v, const bool* mask, const Acc* kv_state,
                          const Acc* key_sum, int64_t N, int64_t T, int64_t H, int64_t D, int64_t E, double eps,
                          In* dq, In* dk, In* dv, Acc* workspace, cudaStream_t stream) {
  if (!valid_sizes(N, T, H, D, E)) return cudaErrorInvalidValue;
  const int64_t NH = N * H;
  if (NH == 0 || T == 0) return cudaSuccess;
  if (!g || !q || !k || !v || !kv_state || !key_sum || !dq || !dk || !dv || !workspace)
    return cudaErrorInvalidValue;
  const Dims s{N, T, H, static_cast<int>(D), static_cast<int>(E)};
  const int64_t W = E + 1;
  const int64_t chunk_len = reduction_chunk_len(T), chunks = reduction_chunks(T);
  if (!grid_ok(NH * chunks)) return cudaErrorInvalidConfiguration;
  Acc* partial = workspace;
  Acc* dkv = workspace + NH * chunks * D * W;
  Acc* dks = dkv + NH * D * E;

  const size_t qfixed = D * W * sizeof(Acc), qrow = (D + E + W + 2) * sizeof(Acc);
  const int qtile = pick_tile(128, qfixed, qrow);
  query_backward_kernel<In, Acc><<<static_cast<unsigned>(NH * chunks), kThreads, qfixed + qtile * qrow, stream>>>(
      g, q, kv_state, key_sum, static_cast<Acc>(eps), s, chunk_len, chunks, qtile, dq, partial);
  TRGNET_LA_CHECK_LAUNCH();
  state_reduce_kernel<Acc><<<static_cast<unsigned>(NH), kThreads, 0, stream>>>(partial, chunks, s.D, s.E, dkv, dks);
  TRGNET_LA_CHECK_LAUNCH();

  TRGNET_RETURN_IF_ERROR(launch_frame_rows<Acc>(NH, T, D, E, D > E ? D : E,
                                                [&](auto dp, dim3 grid, size_t smem, int64_t tiles) {
    key_backward_kernel<In, Acc, decltype(dp)::value><<<grid, kThreads, smem, stream>>>(k, v, mask, dkv, dks, s,
                                                                                       tiles, dk, dv);
  }));
  TRGNET_LA_CHECK_LAUNCH();
  return cudaSuccess;
}

}  // namespace
}  // namespace la

#define TRGNET_LA_DEFINE(T_IN, T_ACC)                                                                      \
  cudaError_t linear_attention_forward(const T_IN* q, const T_IN* k, const T_IN* v, const bool* key_mask,   \
                                       int64_t N, int64_t T, int64_t H, int64_t D, int64_t E, double eps,   \
                                       T_IN* out, T_ACC* kv_state, T_ACC* key_sum, T_ACC* workspace,        \
                                       cudaStream_t stream) {                                               \
    return la::forward_impl<T_IN, T_ACC>(q, k, v, key_mask, N, T, H, D, E, eps, out, kv_state, key_sum,     \
                                         workspace, stream);                                                \
  }                                                                                                         \
  cudaError_t linear_attention_backward(const T_IN* grad_out, const T_IN* q, const T_IN* k, const T_IN* v,  \
                                        const bool* key_mask, const T_ACC* kv_state, const T_ACC* key_sum,  \
                                        int64_t N, int64_t T, int64_t H, int64_t D, int64_t E, double eps,  \
                                        T_IN* grad_q, T_IN* grad_k, T_IN* grad_v, T_ACC* workspace,         \
                                        cudaStream_t stream) {                                              \
    return la::backward_impl<T_IN, T_ACC>(grad_out, q, k, v, key_mask, kv_state, key_sum, N, T, H, D, E,    \
                                          eps, grad_q, grad_k, grad_v, workspace, stream);                  \
  }

TRGNET_LA_DEFINE(float, float)
TRGNET_LA_DEFINE(double, double)
TRGNET_LA_DEFINE(__half, float)
TRGNET_LA_DEFINE(__nv_bfloat16, float)

}  // namespace trgnet
