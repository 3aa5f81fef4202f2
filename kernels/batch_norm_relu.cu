// CUDA kernels of the fused BatchNorm + residual + ReLU and the launchers of kernels/batch_norm_relu.h for the four
// input dtypes (passes and grids at the top of batch_norm_relu.h, chunking and per-element math in
// batch_norm_relu.cuh, docs/kernels.md#batch_norm_relu). No torch headers.
//
// Every kernel runs one block per (channel, slot) over the slot's pieces: within a piece, thread i takes the packs
// i, i + kThreads, ... (a pack: the 16 / sizeof(In) elements of one 16-byte access), consecutive threads reading
// consecutive packs. A block's sums are a fixed-order tree in shared memory, written to the workspace slot of its
// (channel, slot); the second pass of each direction adds a channel's slots in slot order: no atomics, the same
// result on every run.
#include "batch_norm_relu.h"

#include <cmath>

#include "cuda_common.cuh"

namespace trgnet {
namespace bnr {
namespace {

// Blocks per SM the kernels are compiled for (at most 64 registers a thread): a plan's grid of at most
// kTargetBlocks = 4 x 132 blocks is one wave on an H100 / H200.
constexpr int kMinBlocks = 4;

// Fixed-order tree sum of 3 arrays of kThreads values (v[j * kThreads + thread]) into v[j * kThreads]; every thread
// of the block must call it (it ends with __syncthreads()).
template <typename Acc>
__device__ __forceinline__ void block_sum3(Acc* v) {
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w)
      for (int j = 0; j < 3; ++j) v[j * kThreads + threadIdx.x] += v[j * kThreads + threadIdx.x + w];
    __syncthreads();
  }
}

// The block's 3 sums -> its workspace slot (3 blockIdx.x + j: (channel, slot) order).
template <typename Acc>
__device__ __forceinline__ void store_partials(Acc* smem, Acc a0, Acc a1, Acc a2, Acc* __restrict__ workspace) {
  smem[threadIdx.x] = a0;
  smem[kThreads + threadIdx.x] = a1;
  smem[2 * kThreads + threadIdx.x] = a2;
  block_sum3(smem);
  if (threadIdx.x < 3) workspace[3 * static_cast<int64_t>(blockIdx.x) + threadIdx.x] = smem[threadIdx.x * kThreads];
}

// Channel c's partials added in slot order, one of the 3 sums per thread 0..2 -> merged[0..3); every thread of the
// block must call it (it ends with __syncthreads()).
template <typename Acc>
__device__ __forceinline__ void merge_partials(const Acc* __restrict__ workspace, int64_t c, int64_t slots,
                                               Acc* merged) {
  if (threadIdx.x < 3) {
    Acc a = Acc(0);
    for (int64_t s = 0; s < slots; ++s) a += workspace[3 * (c * slots + s) + threadIdx.x];
    merged[threadIdx.x] = a;
  }
  __syncthreads();
}

// ---- packs ----------------------------------------------------------------------------------------------------

template <typename In>
constexpr int kVec = Pack16<In>::kCount;

// v[k] = p[k] for k < n (n = kVec but at the end of a piece on the scalar path), 0 beyond: one 16-byte load with
// `vec` (p 16-byte aligned, n = kVec), else scalar loads.
template <typename In, typename Acc>
__device__ __forceinline__ void load_pack(const In* __restrict__ p, int n, bool vec, Acc (&v)[kVec<In>]) {
  if (vec) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const In* e = reinterpret_cast<const In*>(&raw);
#pragma unroll
    for (int k = 0; k < kVec<In>; ++k) v[k] = to_acc(e[k]);
  } else {
#pragma unroll
    for (int k = 0; k < kVec<In>; ++k) v[k] = k < n ? to_acc(p[k]) : Acc(0);
  }
}

// p[k] = v[k] rounded to Out for k < n: one 16-byte store with `vec`, else scalar stores.
template <typename Out, typename Acc>
__device__ __forceinline__ void store_pack(Out* __restrict__ p, int n, bool vec, const Acc (&v)[kVec<Out>]) {
  if (vec) {
    uint4 raw;
    Out* e = reinterpret_cast<Out*>(&raw);
#pragma unroll
    for (int k = 0; k < kVec<Out>; ++k) e[k] = Store<Out>::from(v[k]);
    store16(p, raw);
  } else {
#pragma unroll
    for (int k = 0; k < kVec<Out>; ++k)
      if (k < n) p[k] = Store<Out>::from(v[k]);
  }
}

// m[k] = the frame mask of position tv + k of a row (mask_row = frame_mask + n T; 1 without a mask), 0 beyond n.
template <typename In, typename Acc>
__device__ __forceinline__ void mask_pack(const In* __restrict__ mask_row, int64_t tv, int n, int64_t V,
                                          Acc (&m)[kVec<In>]) {
  if (mask_row == nullptr) {
#pragma unroll
    for (int k = 0; k < kVec<In>; ++k) m[k] = Acc(1);
    return;
  }
  // 32-bit division: TV <= kMaxRowPositions (checked by the launchers)
  uint32_t t = static_cast<uint32_t>(tv) / static_cast<uint32_t>(V);
  uint32_t v = static_cast<uint32_t>(tv) - t * static_cast<uint32_t>(V);
#pragma unroll
  for (int k = 0; k < kVec<In>; ++k) {
    m[k] = k < n ? to_acc(mask_row[t]) : Acc(0);
    if (++v == static_cast<uint32_t>(V)) v = 0, ++t;
  }
}

// body(piece, e0, n) for every pack [e0, e0 + n) of this thread in the pieces of slot `slot` of channel c.
template <typename In, typename Body>
__device__ __forceinline__ void for_each_pack(const Plan& plan, int64_t C, int64_t c, int64_t slot, Body body) {
  constexpr int kV = kVec<In>;
  const int64_t last = slot_last(plan, slot);
  for (int64_t piece = slot_first(plan, slot); piece < last; ++piece) {
    const Piece pc = piece_at(plan, C, c, piece);
    for (int64_t e0 = static_cast<int64_t>(threadIdx.x) * kV; e0 < pc.len; e0 += static_cast<int64_t>(kThreads) * kV)
      body(pc, e0, pc.len - e0 < kV ? static_cast<int>(pc.len - e0) : kV);
  }
}

// ---- forward ----------------------------------------------------------------------------------------------------

// Per (channel, slot): s1 = sum m (x - K), s2 = sum m (x - K)^2, sum m over the slot's pieces -> workspace.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads, kMinBlocks) bnr_stats_kernel(ForwardArgs<In, Acc> a, Plan plan, bool vec) {
  Acc* smem = smem_base<Acc>();  // 3 kThreads
  const int64_t c = blockIdx.x / plan.slots, slot = blockIdx.x % plan.slots;
  const Acc K = to_acc(a.x[c * plan.TV]);  // x[0, c, 0, 0]
  Acc s1 = Acc(0), s2 = Acc(0), count = Acc(0);
  for_each_pack<In>(plan, a.C, c, slot, [&](const Piece& pc, int64_t e0, int n) {
    Acc xv[kVec<In>], m[kVec<In>];
    load_pack(a.x + pc.offset + e0, n, vec, xv);
    mask_pack(a.frame_mask ? a.frame_mask + pc.row * a.T : nullptr, pc.start + e0, n, a.V, m);
#pragma unroll
    for (int k = 0; k < kVec<In>; ++k)
      if (k < n) add_moments(s1, s2, count, xv[k] - K, m[k]);
  });
  store_partials(smem, s1, s2, count, a.workspace);
}

// Per (channel, slot): the channel's statistics from its partials (slot order); block (c, 0) stores mean[c] and
// var[c]; out over the slot's pieces.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads, kMinBlocks) bnr_apply_kernel(ForwardArgs<In, Acc> a, Plan plan, bool vec) {
  Acc* merged = smem_base<Acc>();  // 3
  const int64_t c = blockIdx.x / plan.slots, slot = blockIdx.x % plan.slots;
  merge_partials(a.workspace, c, plan.slots, merged);
  const Acc K = to_acc(a.x[c * plan.TV]);
  const Statistics<Acc> st = statistics(merged[0], merged[1], merged[2], K, static_cast<Acc>(a.eps));
  if (slot == 0 && threadIdx.x == 0) {
    a.mean[c] = st.mean;
    a.var[c] = st.var;
  }
  const Acc scale = st.invstd * a.weight[c], bias = a.bias[c];
  for_each_pack<In>(plan, a.C, c, slot, [&](const Piece& pc, int64_t e0, int n) {
    Acc xv[kVec<In>], r[kVec<In>];
    load_pack(a.x + pc.offset + e0, n, vec, xv);
    if (a.residual) {
      load_pack(a.residual + pc.offset + e0, n, vec, r);
    } else {
#pragma unroll
      for (int k = 0; k < kVec<In>; ++k) r[k] = Acc(0);
    }
#pragma unroll
    for (int k = 0; k < kVec<In>; ++k) xv[k] = bn_relu(xv[k], K, st.shift, scale, bias, r[k]);
    store_pack(a.out + pc.offset + e0, n, vec, xv);
  });
}

// ---- backward ---------------------------------------------------------------------------------------------------

// The backward's inputs at one pack of a piece: grad_out, out, x and the frame mask.
template <typename In, typename Acc>
__device__ __forceinline__ void load_backward_pack(const BackwardArgs<In, Acc>& a, const Piece& pc, int64_t e0, int n,
                                                   bool vec, Acc (&go)[kVec<In>], Acc (&o)[kVec<In>],
                                                   Acc (&xv)[kVec<In>], Acc (&m)[kVec<In>]) {
  load_pack(a.grad_out + pc.offset + e0, n, vec, go);
  load_pack(a.out + pc.offset + e0, n, vec, o);
  load_pack(a.x + pc.offset + e0, n, vec, xv);
  mask_pack(a.frame_mask ? a.frame_mask + pc.row * a.T : nullptr, pc.start + e0, n, a.V, m);
}

// Per (channel, slot): sum g, sum g (x - mean), sum m over the slot's pieces -> workspace.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    bnr_grad_stats_kernel(BackwardArgs<In, Acc> a, Plan plan, bool vec) {
  Acc* smem = smem_base<Acc>();  // 3 kThreads
  const int64_t c = blockIdx.x / plan.slots, slot = blockIdx.x % plan.slots;
  const Acc mean = a.mean[c];
  Acc sg = Acc(0), sgx = Acc(0), count = Acc(0);
  for_each_pack<In>(plan, a.C, c, slot, [&](const Piece& pc, int64_t e0, int n) {
    Acc go[kVec<In>], o[kVec<In>], xv[kVec<In>], m[kVec<In>];
    load_backward_pack(a, pc, e0, n, vec, go, o, xv, m);
#pragma unroll
    for (int k = 0; k < kVec<In>; ++k)
      if (k < n) {
        const Acc g = relu_grad(o[k], go[k]);
        sg += g;
        sgx += g * (xv[k] - mean);
        count += m[k];
      }
  });
  store_partials(smem, sg, sgx, count, a.workspace);
}

// Per (channel, slot): grad_bias, grad_weight from the channel's partials (slot order), stored by block (c, 0);
// grad_x (and grad_residual) over the slot's pieces.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    bnr_grad_apply_kernel(BackwardArgs<In, Acc> a, Plan plan, bool vec) {
  Acc* merged = smem_base<Acc>();  // 3
  const int64_t c = blockIdx.x / plan.slots, slot = blockIdx.x % plan.slots;
  merge_partials(a.workspace, c, plan.slots, merged);
  const Acc mean = a.mean[c], invstd = inv_std(a.var[c], static_cast<Acc>(a.eps));
  const Acc grad_bias = merged[0], grad_weight = invstd * merged[1];
  const Acc inv_count = Acc(1) / clamped_count(merged[2]), w_invstd = a.weight[c] * invstd;
  if (slot == 0 && threadIdx.x == 0) {
    a.grad_weight[c] = grad_weight;
    a.grad_bias[c] = grad_bias;
  }
  for_each_pack<In>(plan, a.C, c, slot, [&](const Piece& pc, int64_t e0, int n) {
    Acc go[kVec<In>], o[kVec<In>], xv[kVec<In>], m[kVec<In>];
    load_backward_pack(a, pc, e0, n, vec, go, o, xv, m);
#pragma unroll
    for (int k = 0; k < kVec<In>; ++k) {
      go[k] = relu_grad(o[k], go[k]);  // g
      xv[k] = input_grad(go[k], (xv[k] - mean) * invstd, m[k], w_invstd, grad_bias, grad_weight, inv_count);
    }
    store_pack(a.grad_x + pc.offset + e0, n, vec, xv);
    if (a.grad_residual) store_pack(a.grad_residual + pc.offset + e0, n, vec, go);
  });
}

// ---- launch code ---------------------------------------------------------------------------------------------

template <typename T>
bool aligned16(const T* p) {  // null (an absent tensor) counts as aligned
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

bool valid_sizes(int64_t N, int64_t C, int64_t T, int64_t V, double eps) {
  return N >= 0 && C >= 0 && T >= 0 && V >= 0 && T * V <= kMaxRowPositions && eps > 0 && std::isfinite(eps);
}

bool empty_problem(int64_t N, int64_t C, int64_t T, int64_t V) { return C == 0 || N * T * V == 0; }

template <typename In, typename Acc>
cudaError_t forward_impl(const ForwardArgs<In, Acc>& a, cudaStream_t stream) {
  if (!valid_sizes(a.N, a.C, a.T, a.V, a.eps)) return cudaErrorInvalidValue;
  if (empty_problem(a.N, a.C, a.T, a.V)) return cudaSuccess;  // nothing to launch (docs in batch_norm_relu.h)
  if (!a.x || !a.weight || !a.bias || !a.out || !a.mean || !a.var || !a.workspace) return cudaErrorInvalidValue;
  const Plan plan = make_plan(a.N, a.C, a.T, a.V);
  const int64_t blocks = a.C * plan.slots;
  if (!grid_fits(blocks)) return cudaErrorInvalidValue;
  const bool vec = plan.TV % kVec<In> == 0 && aligned16(a.x) && aligned16(a.residual) && aligned16(a.out);
  const unsigned grid = static_cast<unsigned>(blocks);
  bnr_stats_kernel<In, Acc><<<grid, kThreads, 3 * kThreads * sizeof(Acc), stream>>>(a, plan, vec);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  bnr_apply_kernel<In, Acc><<<grid, kThreads, 3 * sizeof(Acc), stream>>>(a, plan, vec);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

template <typename In, typename Acc>
cudaError_t backward_impl(const BackwardArgs<In, Acc>& a, cudaStream_t stream) {
  if (!valid_sizes(a.N, a.C, a.T, a.V, a.eps)) return cudaErrorInvalidValue;
  if (empty_problem(a.N, a.C, a.T, a.V)) return cudaSuccess;
  if (!a.grad_out || !a.out || !a.x || !a.weight || !a.mean || !a.var || !a.grad_x || !a.grad_weight ||
      !a.grad_bias || !a.workspace)
    return cudaErrorInvalidValue;
  const Plan plan = make_plan(a.N, a.C, a.T, a.V);
  const int64_t blocks = a.C * plan.slots;
  if (!grid_fits(blocks)) return cudaErrorInvalidValue;
  const bool vec = plan.TV % kVec<In> == 0 && aligned16(a.grad_out) && aligned16(a.out) && aligned16(a.x) &&
                   aligned16(a.grad_x) && aligned16(a.grad_residual);
  const unsigned grid = static_cast<unsigned>(blocks);
  bnr_grad_stats_kernel<In, Acc><<<grid, kThreads, 3 * kThreads * sizeof(Acc), stream>>>(a, plan, vec);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  bnr_grad_apply_kernel<In, Acc><<<grid, kThreads, 3 * sizeof(Acc), stream>>>(a, plan, vec);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

}  // namespace
}  // namespace bnr

#define TRGNET_BNR_DEFINE(T_IN, T_ACC)                                                                     \
  TRGNET_BNR_FORWARD_LAUNCHER(T_IN, T_ACC) { return bnr::forward_impl<T_IN, T_ACC>(args, stream); }        \
  TRGNET_BNR_BACKWARD_LAUNCHER(T_IN, T_ACC) { return bnr::backward_impl<T_IN, T_ACC>(args, stream); }

TRGNET_BNR_DEFINE(float, float)
TRGNET_BNR_DEFINE(double, double)
TRGNET_BNR_DEFINE(__half, float)
TRGNET_BNR_DEFINE(__nv_bfloat16, float)

}  // namespace trgnet
