// Plain C++ launchers of the CUDA kernels of the fused dilated residual layer (no torch headers); kernels in
// dilated_residual.cu, math and pass structure in dilated_residual.cuh, formula and layouts in
// trgnet_fast/ops/dilated_residual/__init__.py.
//
// Layout (all contiguous): x, out, grad_out, grad_x (B, C, T); mask (B, 1, T); cu_seqlens (N + 1) int32 or null;
// conv_weight (C, C, 3), conv_bias (C), conv_out_weight (C, C, 1), conv_out_bias (C) (schema order); dropout_seed
// one device int64 (null without dropout). Inputs float, double, __half or __nv_bfloat16; the workspace and all
// accumulation are float (double for double inputs). 1 <= C <= kMaxChannels.
//
// No device value is read on the host: the grids depend on the shapes only, the blocks of a sequence find its
// frames in cu_seqlens themselves. Every launcher enqueues on `stream`, checks cudaGetLastError() after each
// launch and returns the first error (cudaErrorInvalidValue for bad sizes / missing pointers).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "att_module.h"  // am::Plan, am::make_plan, am::kThreads
#include "dilated_residual.cuh"
#include "host_device.h"

namespace trgnet {
namespace dr {

constexpr int kWeights = 4;  // conv_weight, conv_bias, conv_out_weight, conv_out_bias

// Inputs of both directions.
template <typename In>
struct Inputs {
  const In *x, *mask;          // mask: null when absent
  const int32_t* cu_seqlens;   // null: N = B rows of T frames
  const In* weights[kWeights];
  const int64_t* dropout_seed;  // null when dropout is 0
  int64_t B, C, T, N, dilation;
  double dropout;
};

template <typename In, typename Acc>
struct ForwardArgs {
  Inputs<In> in;
  In* out;
};

template <typename In, typename Acc>
struct BackwardArgs {
  Inputs<In> in;
  const In* grad_out;
  In* grad_x;
  In* grad_weights[kWeights];
  Acc* workspace;  // workspace_elems(...)
};

// ---- the plan of a call (host) ----------------------------------------------------------------------------
// The AttModule's tiles (am::make_plan with one head: the frames per tile and the weight K-slice that fit its
// shared-memory layout, which the shared tile helpers assume); the chunking is this op's own: the forward has no
// reduction, one tile per block; the backward as many chunks as keep its parameter-gradient partials (param_count
// each) near am::kPartialBudgetBytes, at least one per sequence.
inline am::Plan make_plan(int64_t C, int64_t T, int64_t N, int acc_bytes, bool backward) {
  am::Plan p = am::make_plan(C, T, N, 1, acc_bytes);
  if (backward) {
    const int64_t programs = am::kPartialBudgetBytes / (param_count(C) * acc_bytes);
    p.per = tiles_per_chunk(N, T, p.tile, programs < N ? N : programs);
  } else {
    p.per = 1;
  }
  p.chunks = num_chunks(T, p.tile, p.per);
  return p;
}

// Accumulator elements of the backward's workspace: the per-block partials, then g_pre (B, T, C).
inline int64_t workspace_elems(int64_t B, int64_t C, int64_t T, int64_t N, int acc_bytes) {
  const am::Plan p = make_plan(C, T, N, acc_bytes, true);
  return N * p.chunks * param_count(C) + B * T * C;
}

}  // namespace dr
}  // namespace trgnet

#define TRGNET_DR_FORWARD_LAUNCHER(T_IN, T_ACC) \
  cudaError_t launch_dilated_residual_forward(const dr::ForwardArgs<T_IN, T_ACC>& args, cudaStream_t stream)
#define TRGNET_DR_BACKWARD_LAUNCHER(T_IN, T_ACC) \
  cudaError_t launch_dilated_residual_backward(const dr::BackwardArgs<T_IN, T_ACC>& args, cudaStream_t stream)

namespace trgnet {

TRGNET_DR_FORWARD_LAUNCHER(float, float);
TRGNET_DR_FORWARD_LAUNCHER(double, double);
TRGNET_DR_FORWARD_LAUNCHER(__half, float);
TRGNET_DR_FORWARD_LAUNCHER(__nv_bfloat16, float);

TRGNET_DR_BACKWARD_LAUNCHER(float, float);
TRGNET_DR_BACKWARD_LAUNCHER(double, double);
TRGNET_DR_BACKWARD_LAUNCHER(__half, float);
TRGNET_DR_BACKWARD_LAUNCHER(__nv_bfloat16, float);

}  // namespace trgnet
