// CUDA kernels of the fused SFI and the launchers of kernels/spatial_feature_injection.h for the four input dtypes
// (passes, recomputation and workspace at the top of spatial_feature_injection.cuh). No torch headers.
//
// The kernels are the AttModule's tile machinery (kernels/att_module_impl.cuh) run on this op's weights: an am::Call
// with h as its x (one head, no values, no cu_seqlens: a row is one sequence of T frames), am::make_block's buffers
// and staged K-slice, am::gemm for the C x C products (ff1, ff2 and the two halves of conv_fusion through strided
// am::WeightView's) and am::weight_grad for their parameter gradients; what is this op's own: the group tile (read
// in group's strides), the rectangular conv_s GEMM (G V -> C, and its transpose C -> G V) and its weight gradient.
// Every tile pass runs am::kThreads threads per block, one block per (row, chunk of frame tiles); every phase ends
// with __syncthreads(); each output element of a phase has one fixed owner thread, so every sum has a fixed order.
#include "spatial_feature_injection.h"

#include "att_module_impl.cuh"
#include "cuda_common.cuh"

namespace trgnet {
namespace sfi {
namespace {

using am::Block;
using am::Call;
using am::kThreads;
using am::WeightView;

// This op's part of a kernel's arguments: group, the 8 weights, where the group tile lies in shared memory and the
// dropout threshold.
template <typename In>
struct Operands {
  const In* group;
  GroupView gv;
  const In* weights[kWeights];
  int64_t group_tile;  // offset of the (tile x G V) group tile, accumulator elements from the shared-memory base
  uint32_t threshold;  // floor(p 2^24)
};

// The block's group tile: g[r][v G + c] = group[n, c, t0 + r, v] for r < rows (consecutive threads: consecutive
// joints, the contiguous dimension of STI's layout).
template <typename In, typename Acc>
__device__ __forceinline__ Acc* load_group_tile(const Operands<In>& op, int64_t n, int64_t t0, int rows) {
  Acc* g = smem_base<Acc>() + op.group_tile;
  const int G = static_cast<int>(op.gv.G), V = static_cast<int>(op.gv.V), K = G * V;
  for (int idx = threadIdx.x; idx < rows * K; idx += kThreads) {
    const int v = idx % V, ch = idx / V % G, r = idx / K;
    g[r * K + v * G + ch] = to_acc(op.group[op.gv.offset(n, ch, t0 + r, v)]);
  }
  return g;
}

// out[r][o] (+)= sum_k A[r][k] W[o so + k si] (+ bias[o] when not accumulating) for r < rows, o < n_out, k < n_in;
// A row stride n_in, out row stride n_out. The weight staged in K-slices of as many rows of n_out as `capacity`
// holds (from `slice`), each thread owning fixed outputs. Starts and ends with a barrier. (am::gemm is the square
// C x C case; conv_s is G V -> C and its transpose C -> G V.)
template <typename In, typename Acc>
__device__ __forceinline__ void gemm_rect(const Acc* A, int rows, int n_in, int n_out, const In* __restrict__ W,
                                          int64_t so, int64_t si, const In* __restrict__ bias, Acc* slice,
                                          int64_t capacity, Acc* out) {
  const int kc = static_cast<int>(capacity / n_out);
  for (int k0 = 0; k0 < n_in; k0 += kc) {
    const int kn = min(kc, n_in - k0);
    __syncthreads();  // A is written, the previous slice consumed
    for (int idx = threadIdx.x; idx < kn * n_out; idx += kThreads) {
      const int kk = idx / n_out, o = idx % n_out;
      slice[idx] = to_acc(W[o * so + (k0 + kk) * si]);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < rows * n_out; idx += kThreads) {
      const int r = idx / n_out, o = idx % n_out;
      Acc a = k0 > 0 ? out[idx] : bias != nullptr ? to_acc(bias[o]) : Acc(0);
      for (int kk = 0; kk < kn; ++kk) a += A[r * n_in + k0 + kk] * slice[kk * n_out + o];
      out[idx] = a;
    }
  }
  __syncthreads();
}

// conv_s's partials: pw[o K + j] += sum_r gs[r][o] g[r][j]; pb[o] += sum_r gs[r][o] (am::weight_grad for C x K).
template <typename Acc>
__device__ __forceinline__ void conv_s_weight_grad(const Acc* gs, const Acc* g, int rows, int C, int K,
                                                   Acc* __restrict__ pw, Acc* __restrict__ pb) {
  for (int idx = threadIdx.x; idx < C * K; idx += kThreads) {
    const int o = idx / K, j = idx % K;
    Acc a = Acc(0);
    for (int r = 0; r < rows; ++r) a += gs[r * C + o] * g[r * K + j];
    pw[idx] += a;
  }
  for (int o = threadIdx.x; o < C; o += kThreads) {
    Acc a = Acc(0);
    for (int r = 0; r < rows; ++r) a += gs[r * C + o];
    pb[o] += a;
  }
}

// Where the rectangular GEMMs stage their weight: from the block's K-slice up to the group tile.
template <typename In, typename Acc>
__device__ __forceinline__ int64_t rect_capacity(const Operands<In>& op, const Block<Acc>& b) {
  return smem_base<Acc>() + op.group_tile - b.slice;
}

// s = conv_s(g) -> s; f = conv_fusion([h; s]) -> f; a = ff1(f) -> a (h in hb). g: the group tile.
template <typename In, typename Acc>
__device__ __forceinline__ void fusion_tile(const Call<In, Acc>& c, const Block<Acc>& b, const Operands<In>& op,
                                            const Acc* g, int rows, const Acc* hb, Acc* s, Acc* f, Acc* a) {
  const int C = static_cast<int>(c.in.C), K = static_cast<int>(op.gv.G * op.gv.V);
  gemm_rect(g, rows, K, C, op.weights[kConvSW], K, 1, op.weights[kConvSB], b.slice, rect_capacity(op, b), s);
  const In* Wf = op.weights[kFusionW];
  am::gemm(c, b, hb, rows, Wf, WeightView{2 * C, 1, 0}, op.weights[kFusionB], false, f);
  am::gemm(c, b, s, rows, Wf, WeightView{2 * C, 1, C}, static_cast<const In*>(nullptr), true, f);
  am::gemm(c, b, f, rows, op.weights[kFf1W], am::linear_view(C), op.weights[kFf1B], false, a);
}

// ---- forward ----------------------------------------------------------------------------------------------

// s, f, a, u = GELU(a) r, out = (ff2(u) + h) m.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads) sfi_forward_kernel(Call<In, Acc> c, Operands<In> op, In* __restrict__ out) {
  const Block<Acc> b = am::make_block(c);
  const int C = static_cast<int>(c.in.C);
  am::for_each_tile(c, b, [&](int64_t t0, int rows, int) {
    if (rows == 0) return;
    Acc *hb = b.buf[0], *s = b.buf[1], *f = b.buf[2], *a = b.buf[3], *y = b.buf[4];
    const Acc* g = load_group_tile<In, Acc>(op, b.n, t0, rows);
    am::load_tile(c.in.x, c, b.span, t0, 0, rows, hb);
    fusion_tile(c, b, op, g, rows, hb, s, f, a);
    for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
      const int r = idx / C, ch = idx % C;
      // the dropout made in this expression, as dr_pre_grad_kernel does (made once per block it spilled there)
      a[idx] = gelu(a[idx]) * am::make_dropout<Acc>(c.in.dropout_seed, kDropoutStream, op.threshold, c.in.dropout)
                                  .factor(am::flat_index(c, b.span, t0, r, ch));
    }
    am::gemm(c, b, a, rows, op.weights[kFf2W], am::linear_view(C), op.weights[kFf2B], false, y);
    const int tile = c.plan.tile;
    for (int idx = threadIdx.x; idx < tile * C; idx += kThreads) {  // consecutive threads: consecutive frames
      const int r = idx % tile, ch = idx / tile;
      if (r >= rows) continue;
      out[am::flat_index(c, b.span, t0, r, ch)] =
          Store<In>::from((y[r * C + ch] + hb[r * C + ch]) * am::mask_at(c, b.span, t0, r));
    }
    __syncthreads();
  });
}

// ---- backward ---------------------------------------------------------------------------------------------

// Recompute s, f, a, u; g' = g m; grad_h, grad_group; the block's partials (flat layout of
// spatial_feature_injection.cuh, zeroed here first) of the 8 parameter gradients.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    sfi_backward_kernel(Call<In, Acc> c, Operands<In> op, const In* __restrict__ grad_out, Acc* __restrict__ partials,
                        In* __restrict__ grad_group, In* __restrict__ grad_h) {
  const Block<Acc> b = am::make_block(c);
  const int C = static_cast<int>(c.in.C), G = static_cast<int>(op.gv.G), V = static_cast<int>(op.gv.V), K = G * V;
  const int64_t T = c.in.T;
  Acc* params = partials + blockIdx.x * param_count(C, K);
  am::zero(params, param_count(C, K));
  __syncthreads();
  am::for_each_tile(c, b, [&](int64_t t0, int rows, int) {
    if (rows == 0) return;
    Acc *hb = b.buf[0], *s = b.buf[1], *f = b.buf[2], *a = b.buf[3], *u = b.buf[4], *gy = b.buf[5];
    Acc* g = load_group_tile<In, Acc>(op, b.n, t0, rows);
    am::load_tile(c.in.x, c, b.span, t0, 0, rows, hb);
    fusion_tile(c, b, op, g, rows, hb, s, f, a);
    const int tile = c.plan.tile;
    for (int idx = threadIdx.x; idx < tile * C; idx += kThreads) {  // consecutive threads: consecutive frames
      const int r = idx % tile, ch = idx / tile;
      if (r >= rows) continue;
      gy[r * C + ch] = to_acc(grad_out[am::flat_index(c, b.span, t0, r, ch)]) * am::mask_at(c, b.span, t0, r);
    }
    // u in a loop of its own: in the loop of gy, the bf16 / f16 kernels spilled registers (sm_90, nvcc 13.0)
    for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
      const int r = idx / C, ch = idx % C;
      u[idx] = gelu(a[idx]) * am::make_dropout<Acc>(c.in.dropout_seed, kDropoutStream, op.threshold, c.in.dropout)
                                  .factor(am::flat_index(c, b.span, t0, r, ch));
    }
    __syncthreads();
    am::weight_grad(c, gy, u, rows, params + part_offset(kFf2W, C, K), am::linear_view(C),
                    params + part_offset(kFf2B, C, K));
    am::gemm(c, b, gy, rows, op.weights[kFf2W], am::linear_transposed(C), static_cast<const In*>(nullptr), false,
             u);  // gu
    for (int idx = threadIdx.x; idx < tile * C; idx += kThreads) {
      const int r = idx % tile, ch = idx / tile;
      if (r >= rows) continue;
      const int j = r * C + ch;
      a[j] = u[j] * gelu_grad(a[j]) *
             am::make_dropout<Acc>(c.in.dropout_seed, kDropoutStream, op.threshold, c.in.dropout)
                 .factor(am::flat_index(c, b.span, t0, r, ch));  // ga
    }
    __syncthreads();
    am::weight_grad(c, a, f, rows, params + part_offset(kFf1W, C, K), am::linear_view(C),
                    params + part_offset(kFf1B, C, K));
    am::gemm(c, b, a, rows, op.weights[kFf1W], am::linear_transposed(C), static_cast<const In*>(nullptr), false,
             u);  // gf
    Acc* pf = params + part_offset(kFusionW, C, K);
    am::weight_grad(c, u, hb, rows, pf, WeightView{2 * C, 1, 0}, params + part_offset(kFusionB, C, K));
    am::weight_grad(c, u, s, rows, pf, WeightView{2 * C, 1, C}, static_cast<Acc*>(nullptr));
    const In* Wf = op.weights[kFusionW];
    am::gemm(c, b, u, rows, Wf, WeightView{1, 2 * C, 0}, static_cast<const In*>(nullptr), true, gy);  // grad_h
    am::gemm(c, b, u, rows, Wf, WeightView{1, 2 * C, C}, static_cast<const In*>(nullptr), false, a);  // gs
    for (int idx = threadIdx.x; idx < tile * C; idx += kThreads) {
      const int r = idx % tile, ch = idx / tile;
      if (r < rows) grad_h[am::flat_index(c, b.span, t0, r, ch)] = Store<In>::from(gy[r * C + ch]);
    }
    conv_s_weight_grad(a, g, rows, C, K, params + part_offset(kConvSW, C, K), params + part_offset(kConvSB, C, K));
    gemm_rect(a, rows, C, K, op.weights[kConvSW], 1, K, static_cast<const In*>(nullptr), b.slice,
              rect_capacity(op, b), g);  // grad_group, flattened channels
    for (int idx = threadIdx.x; idx < rows * K; idx += kThreads) {
      const int v = idx % V, ch = idx / V % G, r = idx / K;
      grad_group[((b.n * G + ch) * T + t0 + r) * V + v] = Store<In>::from(g[r * K + v * G + ch]);
    }
    __syncthreads();
  });
}

template <typename In>
struct GradOutputs {
  In* weights[kWeights];
};

// Fixed-order sum of the programs' parameter-gradient partials (partials + p param_count) -> the 8 gradients.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    sfi_grad_reduce_kernel(const Acc* __restrict__ partials, int64_t programs, int64_t C, int64_t K,
                           GradOutputs<In> out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x, count = param_count(C, K);
  if (idx >= count) return;
  Acc a = Acc(0);
  for (int64_t p = 0; p < programs; ++p) a += partials[p * count + idx];
  int part = 0;
  while (idx >= part_offset(part + 1, C, K)) ++part;
  In* dst;
  switch (part) {  // constant indices: a dynamically indexed parameter array goes to local memory
    case kConvSW: dst = out.weights[kConvSW]; break;
    case kConvSB: dst = out.weights[kConvSB]; break;
    case kFusionW: dst = out.weights[kFusionW]; break;
    case kFusionB: dst = out.weights[kFusionB]; break;
    case kFf1W: dst = out.weights[kFf1W]; break;
    case kFf1B: dst = out.weights[kFf1B]; break;
    case kFf2W: dst = out.weights[kFf2W]; break;
    default: dst = out.weights[kFf2B]; break;
  }
  dst[idx - part_offset(part, C, K)] = Store<In>::from(a);
}

// ---- launch code ---------------------------------------------------------------------------------------------

template <typename In>
bool valid_inputs(const Inputs<In>& in) {
  const int64_t K = in.gv.G * in.gv.V;
  if (in.N < 0 || in.T < 0 || in.C < 1 || in.C > kMaxChannels || in.gv.G < 1 || in.gv.V < 1 || K > kMaxGroupChannels)
    return false;
  for (const In* w : in.weights)
    if (w == nullptr) return false;
  if (!(in.dropout >= 0 && in.dropout < 1) || (in.dropout > 0 && in.dropout_seed == nullptr)) return false;
  return in.N * in.T == 0 || (in.h != nullptr && in.group != nullptr);
}

// The AttModule call of this op's inputs and plan (h as x, one head, no values, no sequences, no dropout of its own).
template <typename In, typename Acc>
Call<In, Acc> make_call(const Inputs<In>& in, bool backward) {
  Call<In, Acc> c{};
  c.in.x = in.h;
  c.in.values = nullptr;
  c.in.mask = in.mask;
  c.in.cu_seqlens = nullptr;
  for (int i = 0; i < am::kWeights; ++i) c.in.weights[i] = nullptr;
  c.in.alpha = nullptr;
  c.in.dropout_seed = in.dropout_seed;
  c.in.B = in.N, c.in.C = in.C, c.in.T = in.T, c.in.N = in.N, c.in.H = 1, c.in.dilation = 1;
  c.in.norm_eps = c.in.attention_eps = c.in.attention_dropout = 0;
  c.in.dropout = in.dropout;
  c.plan = make_plan(in.C, in.gv.G * in.gv.V, in.T, in.N, static_cast<int>(sizeof(Acc)), backward);
  c.D = static_cast<int>(in.C);
  c.threshold1 = c.threshold2 = 0;
  return c;
}

template <typename In, typename Acc>
Operands<In> make_operands(const Inputs<In>& in, const am::Plan& p) {
  Operands<In> op;
  op.group = in.group;
  op.gv = in.gv;
  for (int i = 0; i < kWeights; ++i) op.weights[i] = in.weights[i];
  op.group_tile = group_tile_offset(p.tile, p.slice, in.C, in.gv.G * in.gv.V);
  op.threshold = am::dropout_threshold(in.dropout);
  return op;
}

template <typename In, typename Acc>
cudaError_t forward_impl(const ForwardArgs<In, Acc>& a, cudaStream_t stream) {
  if (!valid_inputs(a.in)) return cudaErrorInvalidValue;
  if (a.in.N * a.in.T == 0) return cudaSuccess;  // no frame: empty output
  if (a.out == nullptr) return cudaErrorInvalidValue;
  const Call<In, Acc> c = make_call<In, Acc>(a.in, false);
  const int64_t programs = c.in.N * c.plan.chunks;
  const size_t smem = c.plan.smem_elems * sizeof(Acc);
  TRGNET_RETURN_IF_ERROR(am::prepare_tiles(sfi_forward_kernel<In, Acc>, programs, smem));
  sfi_forward_kernel<In, Acc><<<static_cast<unsigned>(programs), kThreads, smem, stream>>>(
      c, make_operands<In, Acc>(a.in, c.plan), a.out);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

template <typename In, typename Acc>
cudaError_t backward_impl(const BackwardArgs<In, Acc>& a, cudaStream_t stream) {
  if (!valid_inputs(a.in) || (a.in.N * a.in.T > 0 && (!a.grad_out || !a.grad_h || !a.grad_group)))
    return cudaErrorInvalidValue;
  GradOutputs<In> grads;
  for (int i = 0; i < kWeights; ++i) {
    if (!a.grad_weights[i]) return cudaErrorInvalidValue;
    grads.weights[i] = a.grad_weights[i];
  }
  const Call<In, Acc> c = make_call<In, Acc>(a.in, true);
  const int64_t C = c.in.C, K = a.in.gv.G * a.in.gv.V;
  const int64_t programs = a.in.N * a.in.T > 0 ? c.in.N * c.plan.chunks : 0;
  if (programs > 0) {
    if (a.workspace == nullptr) return cudaErrorInvalidValue;
    const size_t smem = c.plan.smem_elems * sizeof(Acc);
    TRGNET_RETURN_IF_ERROR(am::prepare_tiles(sfi_backward_kernel<In, Acc>, programs, smem));
    sfi_backward_kernel<In, Acc><<<static_cast<unsigned>(programs), kThreads, smem, stream>>>(
        c, make_operands<In, Acc>(a.in, c.plan), a.grad_out, a.workspace, a.grad_group, a.grad_h);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
  }
  // with no frame, the sums are empty: the reduction writes zeros
  const int64_t blocks = (param_count(C, K) + kThreads - 1) / kThreads;
  sfi_grad_reduce_kernel<In, Acc><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a.workspace, programs, C,
                                                                                          K, grads);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

}  // namespace
}  // namespace sfi

#define TRGNET_SFI_DEFINE(T_IN, T_ACC)                                                                      \
  TRGNET_SFI_FORWARD_LAUNCHER(T_IN, T_ACC) { return sfi::forward_impl<T_IN, T_ACC>(args, stream); }          \
  TRGNET_SFI_BACKWARD_LAUNCHER(T_IN, T_ACC) { return sfi::backward_impl<T_IN, T_ACC>(args, stream); }

TRGNET_SFI_DEFINE(float, float)
TRGNET_SFI_DEFINE(double, double)
TRGNET_SFI_DEFINE(__half, float)
TRGNET_SFI_DEFINE(__nv_bfloat16, float)

}  // namespace trgnet
