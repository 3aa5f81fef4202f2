// CUDA kernels of the fused dilated residual layer and the launchers of kernels/dilated_residual.h for the four
// input dtypes (passes, recomputation and workspace at the top of dilated_residual.cuh). No torch headers.
//
// The kernels are the AttModule's tile machinery (kernels/att_module_impl.cuh) run on this op's four weights: an
// am::Call whose weights table holds conv_weight, conv_bias, conv_out_weight, conv_out_bias at the AttModule's
// slots of those weights (the others null, never read), one head, no values, the module dropout only. Every tile
// pass runs am::kThreads threads per block, one block per (sequence, chunk of frame tiles); every phase ends with
// __syncthreads(); each output element of a phase has one fixed owner thread, so every sum has a fixed order.
#include "dilated_residual.h"

#include "att_module_impl.cuh"
#include "cuda_common.cuh"

namespace trgnet {
namespace dr {
namespace {

using am::Block;
using am::Call;
using am::kThreads;
// The AttModule's grad_x pass (grad_x = g m + sum_k Wc_k^T g_pre[t - (k - 1) d]), launched as is.
using am::input_backward_kernel;

// The AttModule's slot of each of this op's weights (Part order).
constexpr int kSlot[kWeights] = {am::kConvW, am::kConvB, am::kConvOutW, am::kConvOutB};

// ---- forward ----------------------------------------------------------------------------------------------

// conv + ReLU, conv_out, dropout, residual, mask -> out; zeros on the cover's frames outside the sequence.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads) dr_forward_kernel(Call<In, Acc> c, In* __restrict__ out) {
  const Block<Acc> b = am::make_block(c);
  const int C = static_cast<int>(c.in.C);
  const am::Dropout<Acc> drop = am::make_dropout<Acc>(c.in.dropout_seed, kDropoutStream, c.threshold2, c.in.dropout);
  am::for_each_tile(c, b, [&](int64_t t0, int rows, int cover) {
    Acc *xin = b.buf[0], *o = b.buf[1], *z = b.buf[2];
    if (rows > 0) {
      am::conv_relu_tile(c, b, t0, rows, xin, o);
      am::gemm(c, b, o, rows, c.in.weights[am::kConvOutW], am::linear_view(C), c.in.weights[am::kConvOutB], false, z);
    }
    const int tile = c.plan.tile;
    for (int idx = threadIdx.x; idx < tile * C; idx += kThreads) {  // consecutive threads: consecutive frames
      const int r = idx % tile, ch = idx / tile;
      if (r >= cover) continue;
      const int64_t i = am::flat_index(c, b.span, t0, r, ch);
      const Acc y =
          r < rows ? (to_acc(c.in.x[i]) + z[r * C + ch] * drop.factor(i)) * am::mask_at(c, b.span, t0, r) : Acc(0);
      out[i] = Store<In>::from(y);
    }
    __syncthreads();
  });
}

// ---- backward ---------------------------------------------------------------------------------------------

// Recompute o; gz = g m r; the block's partials (flat layout of dilated_residual.cuh, zeroed here first) of the Wco,
// bco gradients; gpre = (Wco^T gz) relu'(pre) -> g_pre (B, T, C); the partials of the Wc, bc gradients.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    dr_pre_grad_kernel(Call<In, Acc> c, const In* __restrict__ grad_out, Acc* __restrict__ partials,
                       Acc* __restrict__ g_pre) {
  const Block<Acc> b = am::make_block(c);
  const int C = static_cast<int>(c.in.C);
  Acc* params = partials + blockIdx.x * param_count(C);
  am::zero(params, param_count(C));
  __syncthreads();
  am::for_each_tile(c, b, [&](int64_t t0, int rows, int) {
    if (rows == 0) return;
    Acc *xin = b.buf[0], *o = b.buf[1], *gz = b.buf[2], *gpre = b.buf[3];
    am::conv_relu_tile(c, b, t0, rows, xin, o);
    for (int idx = threadIdx.x; idx < rows * C; idx += kThreads) {
      const int r = idx / C, ch = idx % C;
      const int64_t i = am::flat_index(c, b.span, t0, r, ch);
      // the dropout made in this expression: made once per block (before the tile loop), per tile or before the
      // load, it spilled registers (sm_90, nvcc 13.0)
      gz[idx] = to_acc(grad_out[i]) * am::mask_at(c, b.span, t0, r) *
                am::make_dropout<Acc>(c.in.dropout_seed, kDropoutStream, c.threshold2, c.in.dropout).factor(i);
    }
    __syncthreads();
    am::weight_grad(c, gz, o, rows, params + part_offset(kConvOutW, C), am::linear_view(C),
                    params + part_offset(kConvOutB, C));
    am::gemm(c, b, gz, rows, c.in.weights[am::kConvOutW], am::linear_transposed(C), static_cast<const In*>(nullptr),
             false, gpre);
    for (int idx = threadIdx.x; idx < rows * C; idx += kThreads)
      if (!(o[idx] > Acc(0))) gpre[idx] = Acc(0);  // o > 0 iff pre > 0
    __syncthreads();
    am::store_frames(gpre, c, b.span, t0, rows, g_pre);
    for (int k = 0; k < 3; ++k) {
      am::load_tile(c.in.x, c, b.span, t0, (k - 1) * c.in.dilation, rows, xin);
      __syncthreads();
      am::weight_grad(c, gpre, xin, rows, params + part_offset(kConvW, C), am::conv_tap(C, k),
                      k == 0 ? params + part_offset(kConvB, C) : nullptr);
      __syncthreads();
    }
  });
}

template <typename In>
struct GradOutputs {
  In* weights[kWeights];
};

// Fixed-order sum of the programs' parameter-gradient partials (partials + p param_count) -> the 4 gradients.
template <typename In, typename Acc>
__global__ void __launch_bounds__(kThreads)
    dr_grad_reduce_kernel(const Acc* __restrict__ partials, int64_t programs, int64_t C, GradOutputs<In> out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x, count = param_count(C);
  if (idx >= count) return;
  Acc a = Acc(0);
  for (int64_t p = 0; p < programs; ++p) a += partials[p * count + idx];
  int part = 0;
  while (idx >= part_offset(part + 1, C)) ++part;
  // a select, not out.weights[part]: a dynamically indexed parameter array goes to local memory
  In* dst = part == kConvW ? out.weights[kConvW] : part == kConvB ? out.weights[kConvB]
            : part == kConvOutW ? out.weights[kConvOutW] : out.weights[kConvOutB];
  dst[idx - part_offset(part, C)] = Store<In>::from(a);
}

// ---- launch code ---------------------------------------------------------------------------------------------

template <typename In>
bool valid_inputs(const Inputs<In>& in) {
  if (in.B < 0 || in.T < 0 || in.C < 1 || in.C > kMaxChannels || in.dilation < 1 || in.N < 0) return false;
  if (in.N != (in.cu_seqlens ? in.N : in.B)) return false;
  if (in.cu_seqlens && in.B != in.N && in.B != 1) return false;
  for (const In* w : in.weights)
    if (w == nullptr) return false;
  if (!(in.dropout >= 0 && in.dropout < 1) || (in.dropout > 0 && in.dropout_seed == nullptr)) return false;
  return in.B * in.T == 0 || in.x != nullptr;
}

// The AttModule call of this op's inputs and plan (one head, no values, no attention dropout).
template <typename In, typename Acc>
Call<In, Acc> make_call(const Inputs<In>& in, bool backward) {
  Call<In, Acc> c{};
  c.in.x = in.x;
  c.in.values = nullptr;
  c.in.mask = in.mask;
  c.in.cu_seqlens = in.cu_seqlens;
  for (int i = 0; i < am::kWeights; ++i) c.in.weights[i] = nullptr;
  for (int i = 0; i < kWeights; ++i) c.in.weights[kSlot[i]] = in.weights[i];
  c.in.alpha = nullptr;
  c.in.dropout_seed = in.dropout_seed;
  c.in.B = in.B, c.in.C = in.C, c.in.T = in.T, c.in.N = in.N, c.in.H = 1, c.in.dilation = in.dilation;
  c.in.norm_eps = c.in.attention_eps = c.in.attention_dropout = 0;
  c.in.dropout = in.dropout;
  c.plan = make_plan(in.C, in.T, in.N, static_cast<int>(sizeof(Acc)), backward);
  c.D = static_cast<int>(in.C);
  c.threshold1 = 0;
  c.threshold2 = am::dropout_threshold(in.dropout);
  return c;
}

template <typename In, typename Acc>
cudaError_t forward_impl(const ForwardArgs<In, Acc>& a, cudaStream_t stream) {
  if (!valid_inputs(a.in)) return cudaErrorInvalidValue;
  const Call<In, Acc> c = make_call<In, Acc>(a.in, false);
  const int64_t programs = c.in.N * c.plan.chunks;
  if (programs == 0 || c.in.B * c.in.T == 0) return cudaSuccess;  // no frame: empty output
  if (a.out == nullptr) return cudaErrorInvalidValue;
  const size_t smem = c.plan.smem_elems * sizeof(Acc);
  TRGNET_RETURN_IF_ERROR(am::prepare_tiles(dr_forward_kernel<In, Acc>, programs, smem));
  dr_forward_kernel<In, Acc><<<static_cast<unsigned>(programs), kThreads, smem, stream>>>(c, a.out);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

template <typename In, typename Acc>
cudaError_t backward_impl(const BackwardArgs<In, Acc>& a, cudaStream_t stream) {
  if (!valid_inputs(a.in) || (a.in.B * a.in.T > 0 && (!a.grad_out || !a.grad_x))) return cudaErrorInvalidValue;
  GradOutputs<In> grads;
  for (int i = 0; i < kWeights; ++i) {
    if (!a.grad_weights[i]) return cudaErrorInvalidValue;
    grads.weights[i] = a.grad_weights[i];
  }
  const Call<In, Acc> c = make_call<In, Acc>(a.in, true);
  const int64_t C = c.in.C, programs = c.in.N * c.plan.chunks;
  if (programs > 0 && a.workspace == nullptr) return cudaErrorInvalidValue;
  Acc* partials = a.workspace;
  Acc* g_pre = programs > 0 ? partials + programs * param_count(C) : nullptr;
  if (programs > 0) {
    const unsigned grid = static_cast<unsigned>(programs);
    const size_t smem = c.plan.smem_elems * sizeof(Acc);
    TRGNET_RETURN_IF_ERROR(am::prepare_tiles(dr_pre_grad_kernel<In, Acc>, programs, smem));
    dr_pre_grad_kernel<In, Acc><<<grid, kThreads, smem, stream>>>(c, a.grad_out, partials, g_pre);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
    TRGNET_RETURN_IF_ERROR(am::prepare_tiles(input_backward_kernel<In, Acc>, programs, smem));
    input_backward_kernel<In, Acc><<<grid, kThreads, smem, stream>>>(c, a.grad_out, g_pre, a.grad_x);
    TRGNET_RETURN_IF_LAUNCH_FAILED();
  }
  const int64_t blocks = (param_count(C) + kThreads - 1) / kThreads;
  dr_grad_reduce_kernel<In, Acc><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(partials, programs, C, grads);
  TRGNET_RETURN_IF_LAUNCH_FAILED();
  return cudaSuccess;
}

}  // namespace
}  // namespace dr

#define TRGNET_DR_DEFINE(T_IN, T_ACC)                                                                      \
  TRGNET_DR_FORWARD_LAUNCHER(T_IN, T_ACC) { return dr::forward_impl<T_IN, T_ACC>(args, stream); }          \
  TRGNET_DR_BACKWARD_LAUNCHER(T_IN, T_ACC) { return dr::backward_impl<T_IN, T_ACC>(args, stream); }

TRGNET_DR_DEFINE(float, float)
TRGNET_DR_DEFINE(double, double)
TRGNET_DR_DEFINE(__half, float)
TRGNET_DR_DEFINE(__nv_bfloat16, float)

}  // namespace trgnet
