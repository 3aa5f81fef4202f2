// CUDA kernels of the fused per-frame loss terms and the launchers of kernels/frame_losses.h for the four input
// dtypes (passes and grids at the top of frame_losses.h, per-frame math in frame_losses.cuh). No torch headers.
//
// The per-frame kernels run one thread per frame: its column z[:, t] (and those of next(t), prev(t), next(prev(t)))
// is read straight from the (K, T) row, k by k, consecutive threads reading consecutive frames. The per-row
// reductions (lse1 / lse2 of the forward, Q_k of the backward) give each class a warp's worth of lanes over the
// frames and combine the lanes' partials in lane order. Every block sum is a fixed-order tree in shared memory and
// every block's partials have one slot of the workspace, summed in block order by one block: no atomics, the same
// result on every run.
#include "frame_losses.h"

#include "cuda_common.cuh"

namespace trgnet {
namespace fl {
namespace {

// The logits of one frame (column t of a (K, T) row): col[k] = z[k, t], in Acc.
template <typename In, typename Acc>
struct Column {
  const In* p;  // &z[0, t]
  int64_t stride;
  __device__ __forceinline__ Acc operator[](int64_t k) const { return to_acc(p[k * stride]); }
};

// Fixed-order tree sum of `count` arrays of kThreads values (v[j * kThreads + thread]) into v[j * kThreads]; every
// thread of the block must call it (it ends with __syncthreads()).
template <typename Acc>
__device__ __forceinline__ void block_sum(Acc* v, int count) {
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w)
      for (int j = 0; j < count; ++j) v[j * kThreads + threadIdx.x] += v[j * kThreads + threadIdx.x + w];
    __syncthreads();
  }
}

// ---- forward ----------------------------------------------------------------------------------------------

// lse1[k] (frames with pair()) and lse2[k] (frames with prev()) of one row and group of kClassesPerBlock classes:
// a class per kLanes threads, the lanes' online logsumexps merged in lane order -> time_lse [lse2, lse1].
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads) fl_time_lse_kernel(Inputs<In, Acc> in, Acc* __restrict__ time_lse) {
  Acc* smem = smem_base<Acc>();  // 4 kThreads: (m1, s1, m2, s2) per thread
  const int64_t K = in.K, T = in.T, groups = class_groups(K), block = blockIdx.x;
  const int64_t row = block / groups, n = row % in.N;
  const int64_t k = (block % groups) * kClassesPerBlock + threadIdx.x / kLanes;
  const int lane = threadIdx.x % kLanes;
  Lse<Acc> l1 = Lse<Acc>::empty(), l2 = Lse<Acc>::empty();
  if (k < K) {
    const In* z = in.logits + (row * K + k) * T;
    const int64_t *next = in.next_frame + n * T, *prev = in.previous_frame + n * T;
    for (int64_t t = lane; t < T; t += kLanes) {
      const bool pair = partner(next[t], t, T) >= 0, ends = partner(prev[t], t, T) >= 0;
      if (!pair && !ends) continue;
      const Acc x = to_acc(z[t]);
      if (pair) l1.add(x);
      if (ends) l2.add(x);
    }
  }
  Acc* mine = smem + 4 * threadIdx.x;
  mine[0] = l1.m, mine[1] = l1.s, mine[2] = l2.m, mine[3] = l2.s;
  __syncthreads();
  if (lane == 0 && k < K) {
    Lse<Acc> a1 = Lse<Acc>::empty(), a2 = Lse<Acc>::empty();
    for (int i = 0; i < kLanes; ++i) {
      const Acc* o = smem + 4 * (threadIdx.x + i);
      a1.merge(Lse<Acc>{o[0], o[1]});
      a2.merge(Lse<Acc>{o[2], o[3]});
    }
    Acc* out = time_lse + row * 2 * K;
    out[k] = a2.value(Acc(0));
    out[K + k] = a1.value(Acc(0));
  }
}

// One thread per frame of a row of max(S, R) N: CE and GS-TMSE of logits row (s, n) (row < S N), BCE of boundary
// row (r, n) (row < R N); the block's 3 sums -> partials[3 block + j].
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    fl_forward_kernel(Inputs<In, Acc> in, const Acc* __restrict__ time_lse, Acc thr2, Acc* __restrict__ partials) {
  Acc* smem = smem_base<Acc>();  // 3 kThreads
  const int64_t K = in.K, T = in.T, tiles = frame_tiles(T), block = blockIdx.x;
  const int64_t row = block / tiles, t = (block % tiles) * kFrameTile + threadIdx.x;
  const int64_t n = row % in.N, i = n * T + t;
  Acc ce = Acc(0), gs = Acc(0), bce = Acc(0);
  if (t < T) {
    if (row < in.S * in.N) {
      const int64_t v = partner(in.next_frame[i], t, T);
      const In* z = in.logits + row * K * T;
      const Acc* lse = in.time_axis ? time_lse + row * 2 * K : nullptr;
      const Frame<Acc> f{K,    in.labels[i],       in.ce_weight[i],           v >= 0, in.pair_weight[i],
                         in.time_axis, thr2, lse, lse ? lse + K : nullptr};
      const FrameTerms<Acc> r = frame_forward(f, Column<In, Acc>{z + t, T}, Column<In, Acc>{z + (v >= 0 ? v : t), T});
      ce = r.ce;
      gs = r.gs;
    }
    if (row < in.R * in.N)
      bce = in.boundary_weight[i] * bce_loss(to_acc(in.boundary_logits[row * T + t]), in.boundary[i], in.pos_weight[0]);
  }
  smem[threadIdx.x] = ce;
  smem[kThreads + threadIdx.x] = gs;
  smem[2 * kThreads + threadIdx.x] = bce;
  block_sum(smem, 3);
  if (threadIdx.x == 0)
    for (int j = 0; j < 3; ++j) partials[3 * block + j] = smem[j * kThreads];
}

// One block: the `blocks` partial triples summed in a fixed order -> terms = [CE / S, GS / (S K), BCE / R].
template <typename Acc>
__global__ void __launch_bounds__(kThreads) fl_reduce_kernel(const Acc* __restrict__ partials, int64_t blocks,
                                                             int64_t S, int64_t K, int64_t R, Acc* __restrict__ terms) {
  Acc* smem = smem_base<Acc>();  // 3 kThreads
  for (int j = 0; j < 3; ++j) {
    Acc a = Acc(0);
    for (int64_t b = threadIdx.x; b < blocks; b += kThreads) a += partials[3 * b + j];
    smem[j * kThreads + threadIdx.x] = a;
  }
  block_sum(smem, 3);
  if (threadIdx.x == 0) {
    terms[0] = smem[0] / static_cast<Acc>(S);
    terms[1] = smem[kThreads] / static_cast<Acc>(S * K);
    terms[2] = smem[2 * kThreads] / static_cast<Acc>(R);
  }
}

// ---- backward ---------------------------------------------------------------------------------------------

// Q_k = sum_u q_k(u) of one row (time axis), a class per kLanes threads as fl_time_lse_kernel -> Q[row K + k].
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    fl_q_sum_kernel(Inputs<In, Acc> in, const Acc* __restrict__ time_lse, Acc thr2, Acc* __restrict__ Q) {
  Acc* smem = smem_base<Acc>();  // kThreads
  const int64_t K = in.K, T = in.T, groups = class_groups(K), block = blockIdx.x;
  const int64_t row = block / groups, n = row % in.N;
  const int64_t k = (block % groups) * kClassesPerBlock + threadIdx.x / kLanes;
  const int lane = threadIdx.x % kLanes;
  Acc a = Acc(0);
  if (k < K) {
    const In* z = in.logits + (row * K + k) * T;
    const int64_t* next = in.next_frame + n * T;
    const Acc* w = in.pair_weight + n * T;
    const Acc lse2 = time_lse[row * 2 * K + k], lse1 = time_lse[row * 2 * K + K + k];
    for (int64_t u = lane; u < T; u += kLanes) {
      const int64_t v = partner(next[u], u, T);
      if (v >= 0) a += q_of(d_time(to_acc(z[u]), to_acc(z[v]), lse2, lse1), w[u], thr2);
    }
  }
  smem[threadIdx.x] = a;
  __syncthreads();
  if (lane == 0 && k < K) {
    Acc sum = Acc(0);
    for (int i = 0; i < kLanes; ++i) sum += smem[threadIdx.x + i];
    Q[row * K + k] = sum;
  }
}

// One thread per frame of a row of max(S, R) N: grad_logits[s, n, :, t] (row < S N), grad_boundary_logits[r, n, t]
// (row < R N).
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    fl_backward_kernel(Inputs<In, Acc> in, const Acc* __restrict__ grad_terms, const Acc* __restrict__ time_lse,
                       const Acc* __restrict__ Q, Acc thr2, In* __restrict__ grad_logits, In* __restrict__ grad_b) {
  const int64_t K = in.K, T = in.T, tiles = frame_tiles(T), block = blockIdx.x;
  const int64_t row = block / tiles, t = (block % tiles) * kFrameTile + threadIdx.x;
  if (t >= T) return;
  const int64_t n = row % in.N, i = n * T + t;
  if (row < in.S * in.N) {
    const int64_t v = partner(in.next_frame[i], t, T), p = partner(in.previous_frame[i], t, T);
    const int64_t pv = p >= 0 ? partner(in.next_frame[n * T + p], p, T) : -1;
    const Acc* lse = in.time_axis ? time_lse + row * 2 * K : nullptr;
    const Frame<Acc> f{K,    in.labels[i],       in.ce_weight[i],           v >= 0, in.pair_weight[i],
                       in.time_axis, thr2, lse, lse ? lse + K : nullptr};
    const FrameGrad<Acc> g{p >= 0,
                           pv >= 0,
                           pv == t,
                           p >= 0 ? in.pair_weight[n * T + p] : Acc(0),
                           grad_terms[0] / static_cast<Acc>(in.S),
                           grad_terms[1] / static_cast<Acc>(in.S * K),
                           in.time_axis ? Q + row * K : nullptr};
    const In* z = in.logits + row * K * T;
    In* gz = grad_logits + row * K * T + t;
    auto col = [&](int64_t frame) { return Column<In, Acc>{z + (frame >= 0 ? frame : t), T}; };
    frame_backward(f, g, col(t), col(v), col(p), col(pv),
                   [&](int64_t k, Acc value) { gz[k * T] = Store<In>::from(value); });
  }
  if (row < in.R * in.N) {
    const Acc gb = grad_terms[2] / static_cast<Acc>(in.R);
    const Acc x = to_acc(in.boundary_logits[row * T + t]);
    grad_b[row * T + t] =
        Store<In>::from(gb * in.boundary_weight[i] * bce_grad(x, in.boundary[i], in.pos_weight[0]));
  }
}

// ---- launch code ---------------------------------------------------------------------------------------------

template <typename In, typename Acc>
bool valid_inputs(const Inputs<In, Acc>& in) {
  if (in.S < 1 || in.N < 1 || in.K < 1 || in.K > kMaxClasses || in.T < 1 || in.R < 1) return false;
  if (!(in.threshold > 0) || !(in.threshold < INFINITY)) return false;
  return in.logits && in.labels && in.next_frame && in.previous_frame && in.ce_weight && in.pair_weight &&
         in.boundary_logits && in.boundary && in.boundary_weight && in.pos_weight;
}

// The grids: per-frame blocks and per-row class-group blocks (0 when a grid does not fit).
template <typename In, typename Acc>
int64_t frame_blocks(const Inputs<In, Acc>& in) {
  const int64_t b = frame_rows(in.S, in.R, in.N) * frame_tiles(in.T);
  return grid_fits(b) ? b : 0;
}
template <typename In, typename Acc>
int64_t row_blocks(const Inputs<In, Acc>& in) {
  const int64_t b = in.S * in.N * class_groups(in.K);
  return grid_fits(b) ? b : 0;
}

template <typename Acc>
Acc threshold_squared(double threshold) {
  return static_cast<Acc>(threshold * threshold);
}

template <typename In, typename Acc>
cudaError_t forward_impl(const ForwardArgs<In, Acc>& a, cudaStream_t stream) {
  const Inputs<In, Acc>& in = a.in;
  if (!valid_inputs(in) || !a.terms || !a.workspace || (in.time_axis && !a.time_lse)) return cudaErrorInvalidValue;
  const int64_t blocks = frame_blocks(in), rblocks = row_blocks(in);
  if (blocks == 0 || rblocks == 0) return cudaErrorInvalidValue;
  const Acc thr2 = threshold_squared<Acc>(in.threshold);
  if (in.time_axis) {
    fl_time_lse_kernel<In, Acc><<<static_cast<unsigned>(rblocks), kThreads, 4 * kThreads * sizeof(Acc), stream>>>(
        in, a.time_lse);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
  }
  fl_forward_kernel<In, Acc><<<static_cast<unsigned>(blocks), kThreads, 3 * kThreads * sizeof(Acc), stream>>>(
      in, a.time_lse, thr2, a.workspace);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  fl_reduce_kernel<Acc><<<1, kThreads, 3 * kThreads * sizeof(Acc), stream>>>(a.workspace, blocks, in.S, in.K, in.R,
                                                                              a.terms);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

template <typename In, typename Acc>
cudaError_t backward_impl(const BackwardArgs<In, Acc>& a, cudaStream_t stream) {
  const Inputs<In, Acc>& in = a.in;
  if (!valid_inputs(in) || !a.grad_terms || !a.grad_logits || !a.grad_boundary_logits ||
      (in.time_axis && (!a.time_lse || !a.workspace)))
    return cudaErrorInvalidValue;
  const int64_t blocks = frame_blocks(in), rblocks = row_blocks(in);
  if (blocks == 0 || rblocks == 0) return cudaErrorInvalidValue;
  const Acc thr2 = threshold_squared<Acc>(in.threshold);
  if (in.time_axis) {
    fl_q_sum_kernel<In, Acc><<<static_cast<unsigned>(rblocks), kThreads, kThreads * sizeof(Acc), stream>>>(
        in, a.time_lse, thr2, a.workspace);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
  }
  fl_backward_kernel<In, Acc><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      in, a.grad_terms, a.time_lse, a.workspace, thr2, a.grad_logits, a.grad_boundary_logits);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

}  // namespace
}  // namespace fl

#define TRGNET_FL_DEFINE(T_IN, T_ACC)                                                                      \
  TRGNET_FL_FORWARD_LAUNCHER(T_IN, T_ACC) { return fl::forward_impl<T_IN, T_ACC>(args, stream); }          \
  TRGNET_FL_BACKWARD_LAUNCHER(T_IN, T_ACC) { return fl::backward_impl<T_IN, T_ACC>(args, stream); }

TRGNET_FL_DEFINE(float, float)
TRGNET_FL_DEFINE(double, double)
TRGNET_FL_DEFINE(__half, float)
TRGNET_FL_DEFINE(__nv_bfloat16, float)

}  // namespace trgnet
