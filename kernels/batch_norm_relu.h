// Plain C++ launchers of the CUDA kernels of the fused BatchNorm + residual + ReLU (no torch headers); kernels in
// batch_norm_relu.cu, chunking and per-element math in batch_norm_relu.cuh, formula and shapes in
// trgnet_fast/ops/batch_norm_relu/__init__.py (docs/kernels.md#batch_norm_relu).
//
// Layout (all contiguous): x, residual, out, grad_out, grad_x, grad_residual (N, C, T, V) In; frame_mask (N, 1, T, 1)
// In (0/1); weight, bias, mean, var, grad_weight, grad_bias (C) Acc. In float, double, __half or __nv_bfloat16; Acc
// float (double for double inputs), the dtype of every sum and of the workspace.
//
// Passes (kThreads threads a block, grid C x slots flattened as block = c slots + slot, bnr::make_plan):
//   forward:  bnr_stats_kernel        per (channel, slot): s1, s2 of x - K and the mask sum over the slot's pieces,
//                                     a fixed-order tree over the block -> workspace (C, slots, 3)
//             bnr_apply_kernel        per (channel, slot): the channel's partials added in slot order -> mean, var,
//                                     invstd (block (c, 0) stores mean[c], var[c]); out over the slot's pieces
//   backward: bnr_grad_stats_kernel   per (channel, slot): sum g, sum g (x - mean), the mask sum -> workspace
//             bnr_grad_apply_kernel   per (channel, slot): partials in slot order -> grad_bias, grad_weight (stored by
//                                     block (c, 0)); grad_x (and grad_residual) over the slot's pieces
// 16-byte loads and stores when every (N, C, T, V) tensor of the pass is 16-byte aligned and T V is whole packs (then
// every piece is); otherwise scalar accesses. Each thread takes the same elements in the same order on both paths,
// so both give the same bits. Deterministic: no atomics, every sum in a fixed order, the plan from the sizes only.
//
// x with no element (N T V = 0) or C = 0: no launch and nothing written (the caller zero-fills mean, var,
// grad_weight and grad_bias; csrc/batch_norm_relu.cpp allocates them so). No device value is read on the host.
// Every launcher enqueues on `stream`, checks cudaGetLastError() after each launch and returns the first error
// (cudaErrorInvalidValue for negative sizes, T V > kMaxRowPositions, missing pointers or eps not a finite float > 0,
// before any launch).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "batch_norm_relu.cuh"
#include "host_device.h"

namespace trgnet {
namespace bnr {

constexpr int kThreads = 256;
static_assert(kPiece % kThreads == 0, "a piece is whole elements per thread");

template <typename In, typename Acc>
struct ForwardArgs {
  const In *x, *residual, *frame_mask;  // residual, frame_mask: null when absent
  const Acc *weight, *bias;
  In* out;
  Acc *mean, *var;
  Acc* workspace;  // workspace_elems(N, C, T, V)
  int64_t N, C, T, V;
  double eps;
};

template <typename In, typename Acc>
struct BackwardArgs {
  const In *grad_out, *out, *x, *frame_mask;  // frame_mask: null when absent
  const Acc *weight, *mean, *var;
  In* grad_x;
  In* grad_residual;  // null: not computed
  Acc *grad_weight, *grad_bias;
  Acc* workspace;  // workspace_elems(N, C, T, V)
  int64_t N, C, T, V;
  double eps;
};

// Accumulator elements of either direction's workspace: 3 per (channel, slot).
inline int64_t workspace_elems(int64_t N, int64_t C, int64_t T, int64_t V) {
  return 3 * C * make_plan(N, C, T, V).slots;
}

}  // namespace bnr
}  // namespace trgnet

#define TRGNET_BNR_FORWARD_LAUNCHER(T_IN, T_ACC) \
  cudaError_t launch_batch_norm_relu_forward(const bnr::ForwardArgs<T_IN, T_ACC>& args, cudaStream_t stream)
#define TRGNET_BNR_BACKWARD_LAUNCHER(T_IN, T_ACC) \
  cudaError_t launch_batch_norm_relu_backward(const bnr::BackwardArgs<T_IN, T_ACC>& args, cudaStream_t stream)

namespace trgnet {

TRGNET_BNR_FORWARD_LAUNCHER(float, float);
TRGNET_BNR_FORWARD_LAUNCHER(double, double);
TRGNET_BNR_FORWARD_LAUNCHER(__half, float);
TRGNET_BNR_FORWARD_LAUNCHER(__nv_bfloat16, float);

TRGNET_BNR_BACKWARD_LAUNCHER(float, float);
TRGNET_BNR_BACKWARD_LAUNCHER(double, double);
TRGNET_BNR_BACKWARD_LAUNCHER(__half, float);
TRGNET_BNR_BACKWARD_LAUNCHER(__nv_bfloat16, float);

}  // namespace trgnet
