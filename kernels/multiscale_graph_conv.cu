// CUDA kernels of the fused multi-scale graph convolution; math in multiscale_graph_conv.cuh,
// launchers and design summary in multiscale_graph_conv.h. No torch headers.
//
// forward_kernel   one block per (n, T-tile of TT = 256 / V frames). Thread `col` owns the column
//                  (t, v) = (col / V, col % V) of the tile and keeps OB output channels in registers.
//                  Per o-block, per chunk of CB input channels: the X chunk (CB, TT*V) is staged in
//                  shared memory; per scale s: A_s (V x V, odd row stride) and the W_s chunk (stored
//                  transposed, CB x OB, read with 16-byte broadcast loads) are staged, each thread forms z = Z_s[c, t, v] = A_s[v, :] . X[c, t, :] and adds
//                  W_s[:, c] z to its registers. The (N, S*C, T, V) support never exists.
// backward_kernel  one block per (n, chunk of backward T-tiles): tiles of X, G, H_s (then Z_s) and dX
//                  in shared memory; H_s formed kHBlock channels per thread, dW_s in kWBlock x kWBlock
//                  register blocks; dA, dW, db accumulated in the block's workspace slot (each entry
//                  by one thread, frames in order).
// reduce_kernel    sums the slots in slot order and converts to the input dtype.
#include "multiscale_graph_conv.h"

#include "cuda_common.cuh"
#include "multiscale_graph_conv.cuh"

namespace trgnet {
namespace msgc {
namespace {

template <typename Acc>
struct Blocking;
template <>
struct Blocking<float> {
  static constexpr int kOB = 64;  // output channels per thread (registers)
  using Vec = float4;             // 16-byte shared-memory reads of W_s
};
template <>
struct Blocking<double> {
  static constexpr int kOB = 32;
  using Vec = double2;
};

// acc[0 .. 16 / sizeof(Acc)) += w * z
__device__ __forceinline__ void fma_vec(float* acc, const float4& w, float z) {
  acc[0] += w.x * z;
  acc[1] += w.y * z;
  acc[2] += w.z * z;
  acc[3] += w.w * z;
}
__device__ __forceinline__ void fma_vec(double* acc, const double2& w, double z) {
  acc[0] += w.x * z;
  acc[1] += w.y * z;
}

struct Sizes {
  int64_t N, T;
  int C, V, S, O;
};

inline int forward_frames(int V) { return V >= kThreads ? 1 : kThreads / V; }

// Shared-memory layout of the forward (in Acc elements): X chunk (CB x TT*V), A_s (V x ld), then,
// 16-byte aligned, W_s chunk transposed (CB x OB).
__host__ __device__ __forceinline__ int forward_ws_offset(int CB, int TT, int V, int vec) {
  const int off = CB * TT * V + V * odd_stride(V);
  return (off + vec - 1) / vec * vec;
}
template <typename Acc>
inline size_t forward_smem_bytes(int CB, int TT, int V) {
  constexpr int vec = 16 / static_cast<int>(sizeof(Acc));
  return (static_cast<size_t>(forward_ws_offset(CB, TT, V, vec)) + static_cast<size_t>(CB) * Blocking<Acc>::kOB) *
         sizeof(Acc);
}

// Input channels per forward chunk so that the shared memory fits 48 KiB.
template <typename Acc>
inline int forward_channel_chunk(int V, int C) {
  const int TT = forward_frames(V);
  int cb = 16;
  while (cb > 1 && forward_smem_bytes<Acc>(cb, TT, V) > kSmemDefault) --cb;
  return cb < C ? cb : C;
}

template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const In* __restrict__ x, const In* __restrict__ a, const In* __restrict__ w,
                   const In* __restrict__ b, Sizes sz, int64_t tiles, int TT, int CB, In* __restrict__ y) {
  constexpr int OB = Blocking<Acc>::kOB;
  using Vec = typename Blocking<Acc>::Vec;
  constexpr int kVec = static_cast<int>(sizeof(Vec) / sizeof(Acc));
  const int C = sz.C, V = sz.V, S = sz.S, O = sz.O, ld = odd_stride(V);
  const int64_t T = sz.T;
  const int64_t n = blockIdx.x / tiles;
  const int64_t t0 = (blockIdx.x % tiles) * static_cast<int64_t>(TT);
  const int rows = static_cast<int>(min(static_cast<int64_t>(TT), T - t0));
  const int P = rows * V, TTV = TT * V;
  Acc* xs = smem_base<Acc>();                         // CB x TTV
  Acc* as = xs + CB * TTV;                            // V x ld
  Acc* ws = xs + forward_ws_offset(CB, TT, V, kVec);  // CB x OB (W_s transposed), 16-byte aligned

  const int col = threadIdx.x;
  const bool active = col < P;
  const int v = active ? col % V : 0, t = active ? col / V : 0;

  for (int o0 = 0; o0 < O; o0 += OB) {
    Acc acc[OB];
#pragma unroll
    for (int j = 0; j < OB; ++j) acc[j] = (o0 + j < O) ? to_acc(b[o0 + j]) : Acc(0);
    for (int c0 = 0; c0 < C; c0 += CB) {
      const int cb = min(CB, C - c0);
      __syncthreads();  // previous users of xs are done
      for (int c = 0; c < cb; ++c) load_segment(x + ((n * C + c0 + c) * T + t0) * V, P, xs + c * TTV);
      for (int s = 0; s < S; ++s) {
        __syncthreads();  // previous scale is done with as / ws
        load_rows<In, Acc>(a + static_cast<int64_t>(s) * V * V, nullptr, V, V, ld, as);
        for (int i = threadIdx.x; i < OB * cb; i += blockDim.x) {
          const int o = i / cb, c = i % cb;  // consecutive threads: consecutive W columns
          ws[c * OB + o] = (o0 + o < O) ? to_acc(w[static_cast<int64_t>(o0 + o) * S * C + s * C + c0 + c]) : Acc(0);
        }
        __syncthreads();
        if (active) {
          for (int c = 0; c < cb; ++c) {
            const Acc z = aggregate_joint(as + v * ld, xs + c * TTV + t * V, V);
            const Vec* wc = reinterpret_cast<const Vec*>(ws + c * OB);  // broadcast 16-byte reads
#pragma unroll
            for (int j = 0; j < OB / kVec; ++j) fma_vec(acc + j * kVec, wc[j], z);
          }
        }
      }
    }
    if (active) {
#pragma unroll
      for (int j = 0; j < OB; ++j)
        if (o0 + j < O) y[((n * O + o0 + j) * T + t0) * V + col] = Store<In>::from(acc[j]);
    }
  }
}

template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const In* __restrict__ g, const In* __restrict__ x, const In* __restrict__ a,
                    const In* __restrict__ w, Sizes sz, int TT, int64_t tiles_per_chunk, int64_t chunks,
                    In* __restrict__ dx, Acc* __restrict__ partial) {
  const int C = sz.C, V = sz.V, S = sz.S, O = sz.O, ld = odd_stride(V), VV = V * V, SC = S * C;
  const int64_t T = sz.T;
  const int64_t n = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int TTV = TT * V;
  Acc* xs = smem_base<Acc>();  // C x TTV
  Acc* gs = xs + C * TTV;      // O x TTV
  Acc* hs = gs + O * TTV;      // C x TTV: H_s, then Z_s
  Acc* dxs = hs + C * TTV;     // C x TTV
  Acc* as = dxs + C * TTV;     // V x ld
  Acc* ws = as + V * ld;       // O x Cp (W_s, zero padded to Cp = C rounded up to kHBlock)
  const int Cp = (C + kHBlock - 1) / kHBlock * kHBlock;

  const int64_t E = static_cast<int64_t>(S) * VV + static_cast<int64_t>(O) * SC + O;  // slot_elems
  Acc* slot = partial + blockIdx.x * E;
  Acc* dA = slot;              // (S*V, V)
  Acc* dW = dA + S * VV;       // (O, S*C)
  Acc* db = dW + O * SC;       // (O)
  for (int64_t i = threadIdx.x; i < E; i += blockDim.x) slot[i] = Acc(0);

  const int64_t tile_end = chunk_tile_end(T, TT, chunk, tiles_per_chunk);
  for (int64_t tile = chunk * tiles_per_chunk; tile < tile_end; ++tile) {
    const int64_t t0 = tile * TT;
    const int rows = static_cast<int>(min(static_cast<int64_t>(TT), T - t0));
    const int P = rows * V;
    __syncthreads();  // previous tile done (and the slot zeroed)
    for (int c = 0; c < C; ++c) load_segment(x + ((n * C + c) * T + t0) * V, P, xs + c * TTV);
    for (int o = 0; o < O; ++o) load_segment(g + ((n * O + o) * T + t0) * V, P, gs + o * TTV);
    for (int i = threadIdx.x; i < C * P; i += blockDim.x) dxs[(i / P) * TTV + i % P] = Acc(0);
    __syncthreads();
    for (int o = threadIdx.x; o < O; o += blockDim.x) {
      Acc s = Acc(0);
      for (int i = 0; i < P; ++i) s += gs[o * TTV + i];
      db[o] += s;
    }
    for (int s = 0; s < S; ++s) {
      __syncthreads();  // previous scale done with as / ws / hs
      load_rows<In, Acc>(a + static_cast<int64_t>(s) * VV, nullptr, V, V, ld, as);
      for (int i = threadIdx.x; i < O * Cp; i += blockDim.x) {
        const int o = i / Cp, c = i % Cp;
        ws[i] = c < C ? to_acc(w[static_cast<int64_t>(o) * SC + s * C + c]) : Acc(0);
      }
      __syncthreads();
      for (int i = threadIdx.x; i < (Cp / kHBlock) * P; i += blockDim.x) {  // H_s = W_s^T G, kHBlock channels
        const int c0 = (i / P) * kHBlock, col = i % P;
        Acc h[kHBlock];
#pragma unroll
        for (int k = 0; k < kHBlock; ++k) h[k] = Acc(0);
        for (int o = 0; o < O; ++o) {  // sum over o in order, as dot_strided
          const Acc gv = gs[o * TTV + col];
#pragma unroll
          for (int k = 0; k < kHBlock; ++k) h[k] += ws[o * Cp + c0 + k] * gv;
        }
#pragma unroll
        for (int k = 0; k < kHBlock; ++k)
          if (c0 + k < C) hs[(c0 + k) * TTV + col] = h[k];
      }
      __syncthreads();
      for (int i = threadIdx.x; i < C * P; i += blockDim.x) {  // dX += H_s A_s (over joints)
        const int c = i / P, col = i % P, t = col / V, u = col % V;
        dxs[c * TTV + col] += scatter_joint(as + u, ld, hs + c * TTV + t * V, V);
      }
      for (int i = threadIdx.x; i < VV; i += blockDim.x) {  // dA_s += sum_{c,t} H_s[c,t,v] X[c,t,u]
        const int v = i / V, u = i % V;
        Acc acc = Acc(0);
        for (int c = 0; c < C; ++c)
          for (int t = 0; t < rows; ++t) acc += hs[c * TTV + t * V + v] * xs[c * TTV + t * V + u];
        dA[static_cast<int64_t>(s) * VV + i] += acc;
      }
      __syncthreads();
      for (int i = threadIdx.x; i < C * P; i += blockDim.x) {  // Z_s = X A_s^T (into hs)
        const int c = i / P, col = i % P, t = col / V, v = col % V;
        hs[c * TTV + col] = aggregate_joint(as + v * ld, xs + c * TTV + t * V, V);
      }
      __syncthreads();
      const int og = (O + kWBlock - 1) / kWBlock, cg = (C + kWBlock - 1) / kWBlock;
      for (int i = threadIdx.x; i < og * cg; i += blockDim.x) {  // dW_s += G Z_s^T, kWBlock^2 entries
        const int o0 = (i / cg) * kWBlock, c0 = (i % cg) * kWBlock;
        const Acc* g_rows[kWBlock];
        const Acc* z_rows[kWBlock];
#pragma unroll
        for (int k = 0; k < kWBlock; ++k) {  // rows past the end repeat the last one (not stored)
          g_rows[k] = gs + min(o0 + k, O - 1) * TTV;
          z_rows[k] = hs + min(c0 + k, C - 1) * TTV;
        }
        Acc acc[kWBlock][kWBlock];
#pragma unroll
        for (int a = 0; a < kWBlock; ++a)
#pragma unroll
          for (int b = 0; b < kWBlock; ++b) acc[a][b] = Acc(0);
        for (int col = 0; col < P; ++col) {  // sum over the tile's columns in order
          Acc gv[kWBlock], zv[kWBlock];
#pragma unroll
          for (int k = 0; k < kWBlock; ++k) {
            gv[k] = g_rows[k][col];
            zv[k] = z_rows[k][col];
          }
#pragma unroll
          for (int a = 0; a < kWBlock; ++a)
#pragma unroll
            for (int b = 0; b < kWBlock; ++b) acc[a][b] += gv[a] * zv[b];
        }
#pragma unroll
        for (int a = 0; a < kWBlock; ++a)
#pragma unroll
          for (int b = 0; b < kWBlock; ++b)
            if (o0 + a < O && c0 + b < C) dW[static_cast<int64_t>(o0 + a) * SC + s * C + c0 + b] += acc[a][b];
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < C * P; i += blockDim.x) {
      const int c = i / P, col = i % P;
      dx[((n * C + c) * T + t0) * V + col] = Store<In>::from(dxs[c * TTV + col]);
    }
  }
}

// Sum of the slots in slot order -> grad_adjacency, grad_weight, grad_bias (input dtype).
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(const Acc* __restrict__ partial, int64_t slots, int64_t E, int64_t nA, int64_t nW,
                  In* __restrict__ dA, In* __restrict__ dW, In* __restrict__ db) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= E) return;
  Acc s = Acc(0);
  for (int64_t k = 0; k < slots; ++k) s += partial[k * E + i];
  if (i < nA)
    dA[i] = Store<In>::from(s);
  else if (i < nA + nW)
    dW[i - nA] = Store<In>::from(s);
  else
    db[i - nA - nW] = Store<In>::from(s);
}

inline bool valid_sizes(int64_t N, int64_t C, int64_t T, int64_t V, int64_t S, int64_t O) {
  return N >= 0 && T >= 0 && C >= 1 && S >= 1 && O >= 1 && V >= 1 && V <= kMaxJoints && C * S < (1 << 24) &&
         O < (1 << 24);
}

template <typename In, typename Acc>
cudaError_t forward_impl(const In* x, const In* a, const In* w, const In* b, int64_t N, int64_t C, int64_t T,
                         int64_t V, int64_t S, int64_t O, In* y, cudaStream_t stream) {
  if (!valid_sizes(N, C, T, V, S, O)) return cudaErrorInvalidValue;
  if (N == 0 || T == 0) return cudaSuccess;
  if (!x || !a || !w || !b || !y) return cudaErrorInvalidValue;
  const Sizes sz{N, T, static_cast<int>(C), static_cast<int>(V), static_cast<int>(S), static_cast<int>(O)};
  const int TT = forward_frames(sz.V);
  const int CB = forward_channel_chunk<Acc>(sz.V, sz.C);
  const int64_t tiles = (T + TT - 1) / TT;
  if (!grid_fits(N * tiles)) return cudaErrorInvalidConfiguration;
  const size_t smem = forward_smem_bytes<Acc>(CB, TT, sz.V);
  forward_kernel<In, Acc><<<static_cast<unsigned>(N * tiles), kThreads, smem, stream>>>(x, a, w, b, sz, tiles, TT,
                                                                                       CB, y);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

template <typename In, typename Acc>
cudaError_t backward_impl(const In* g, const In* x, const In* a, const In* w, int64_t N, int64_t C, int64_t T,
                          int64_t V, int64_t S, int64_t O, In* dx, In* dA, In* dW, In* db, Acc* workspace,
                          cudaStream_t stream) {
  if (!valid_sizes(N, C, T, V, S, O)) return cudaErrorInvalidValue;
  const int TT = backward_tile(C, V, O, sizeof(Acc));
  if (TT == 0) return cudaErrorInvalidValue;
  if (!dA || !dW || !db) return cudaErrorInvalidValue;
  const Sizes sz{N, T, static_cast<int>(C), static_cast<int>(V), static_cast<int>(S), static_cast<int>(O)};
  const int64_t E = slot_elems(C, V, S, O);
  int64_t slots = 0;
  if (N > 0 && T > 0) {
    if (!g || !x || !a || !w || !dx || !workspace) return cudaErrorInvalidValue;
    const int64_t per = backward_tiles_per_chunk(N, T, TT), chunks = backward_chunks(N, T, TT);
    slots = N * chunks;
    if (!grid_fits(slots)) return cudaErrorInvalidConfiguration;
    const size_t smem = (static_cast<size_t>(3 * C + O) * TT * V + V * odd_stride(sz.V) +
                         O * backward_padded_channels(C)) * sizeof(Acc);
    TRGNET_RETURN_IF_ERROR(allow_smem(backward_kernel<In, Acc>, smem));
    backward_kernel<In, Acc><<<static_cast<unsigned>(slots), kThreads, smem, stream>>>(g, x, a, w, sz, TT, per,
                                                                                      chunks, dx, workspace);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
  }
  const int64_t blocks = (E + kThreads - 1) / kThreads;
  if (!grid_fits(blocks)) return cudaErrorInvalidConfiguration;
  reduce_kernel<In, Acc><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(workspace, slots, E, S * V * V,
                                                                                 O * S * C, dA, dW, db);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

}  // namespace
}  // namespace msgc

#define TRGNET_MSGC_DEFINE_LAUNCHERS(T_IN, T_ACC)                                                       \
  TRGNET_MSGC_FORWARD_LAUNCHER(T_IN, T_ACC) {                                                           \
    return msgc::forward_impl<T_IN, T_ACC>(x, adjacency, weight, bias, N, C, T, V, S, O, out, stream);  \
  }                                                                                                     \
  TRGNET_MSGC_BACKWARD_LAUNCHER(T_IN, T_ACC) {                                                          \
    return msgc::backward_impl<T_IN, T_ACC>(grad_out, x, adjacency, weight, N, C, T, V, S, O, grad_x,   \
                                            grad_adjacency, grad_weight, grad_bias, workspace, stream); \
  }

TRGNET_MSGC_DEFINE_LAUNCHERS(float, float)
TRGNET_MSGC_DEFINE_LAUNCHERS(double, double)
TRGNET_MSGC_DEFINE_LAUNCHERS(__half, float)
TRGNET_MSGC_DEFINE_LAUNCHERS(__nv_bfloat16, float)

}  // namespace trgnet
