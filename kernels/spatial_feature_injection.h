// Plain C++ launchers of the CUDA kernels of the fused SFI (no torch headers); kernels in
// spatial_feature_injection.cu, math and pass structure in spatial_feature_injection.cuh, formula and layouts in
// trgnet_fast/ops/spatial_feature_injection/__init__.py.
//
// Layout: group (N, G, T, V) in any strides (GroupView, elements); h, out, grad_out, grad_h (N, C, T) contiguous;
// mask (N, 1, T) or null; conv_s_weight (C, G V, 1), conv_s_bias (C), fusion_weight (C, 2C, 1), fusion_bias (C),
// ff1_weight, ff2_weight (C, C), ff1_bias, ff2_bias (C) (schema order, contiguous); grad_group contiguous
// (N, G, T, V); dropout_seed one device int64 (null without dropout). Inputs float, double, __half or
// __nv_bfloat16; the workspace and all accumulation are float (double for double inputs). 1 <= C <= kMaxChannels,
// 1 <= G V <= kMaxGroupChannels.
//
// No device value is read on the host: the grids depend on the shapes only. Every launcher enqueues on `stream`,
// checks cudaGetLastError() after each launch and returns the first error (cudaErrorInvalidValue for bad sizes /
// missing pointers).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "att_module.h"  // am::Plan, am::make_plan, am::tile_smem_elems, am::kThreads
#include "host_device.h"
#include "spatial_feature_injection.cuh"

namespace trgnet {
namespace sfi {

using am::kMaxChannels;                  // C
constexpr int kMaxGroupChannels = 512;  // G V (validation.MAX_GROUP_CHANNELS)

// Inputs of both directions.
template <typename In>
struct Inputs {
  const In *group, *h, *mask;  // mask: null when absent
  GroupView gv;                // G, V and group's strides
  const In* weights[kWeights];
  const int64_t* dropout_seed;  // null when dropout is 0
  int64_t N, C, T;
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
  In *grad_group, *grad_h;
  In* grad_weights[kWeights];
  Acc* workspace;  // workspace_elems(...)
};

// ---- the plan of a call (host) ----------------------------------------------------------------------------
// Shared memory (accumulator elements): the AttModule's tile layout with one head (am::make_block: 6 (tile x C)
// buffers, the staged weight K-slice, then its statistics, unused here), `extra` elements so that the region from
// the K-slice to the group tile holds at least one G V row of a staged weight (the rectangular conv_s GEMMs), then
// the (tile x G V) group tile. The tile is the largest power of two <= am::kMaxTile that fits am::kSmemBudget.
inline int64_t extra_elems(int slice, int64_t C, int64_t K) {
  const int64_t have = slice * C;
  return K > have ? K - have : 0;
}
inline int64_t smem_elems(int tile, int slice, int64_t C, int64_t K) {
  return am::tile_smem_elems(tile, slice, C, 1) + extra_elems(slice, C, K) + tile * K;
}
inline int64_t group_tile_offset(int tile, int slice, int64_t C, int64_t K) { return smem_elems(tile, slice, C, K) - tile * K; }

// The forward: one tile per block; the backward: as many chunks as keep its parameter-gradient partials
// (param_count each) near am::kPartialBudgetBytes, at least one per row.
inline am::Plan make_plan(int64_t C, int64_t K, int64_t T, int64_t N, int acc_bytes, bool backward) {
  am::Plan p = am::make_plan(C, T, N, 1, acc_bytes);  // the K-slice of the C x C GEMMs
  p.tile = am::kMaxTile;
  while (p.tile > 1 && smem_elems(p.tile, p.slice, C, K) * acc_bytes > am::kSmemBudget) p.tile /= 2;
  p.smem_elems = smem_elems(p.tile, p.slice, C, K);
  if (backward) {
    const int64_t programs = am::kPartialBudgetBytes / (param_count(C, K) * acc_bytes);
    p.per = tiles_per_chunk(N, T, p.tile, programs < N ? N : programs);
  } else {
    p.per = 1;
  }
  p.chunks = num_chunks(T, p.tile, p.per);
  return p;
}

// Accumulator elements of the backward's workspace: the per-block partials of the parameter gradients.
inline int64_t workspace_elems(int64_t N, int64_t C, int64_t K, int64_t T, int acc_bytes) {
  const am::Plan p = make_plan(C, K, T, N, acc_bytes, true);
  return N * p.chunks * param_count(C, K);
}

}  // namespace sfi
}  // namespace trgnet

#define TRGNET_SFI_FORWARD_LAUNCHER(T_IN, T_ACC) \
  cudaError_t launch_spatial_feature_injection_forward(const sfi::ForwardArgs<T_IN, T_ACC>& args, cudaStream_t stream)
#define TRGNET_SFI_BACKWARD_LAUNCHER(T_IN, T_ACC)                                                        \
  cudaError_t launch_spatial_feature_injection_backward(const sfi::BackwardArgs<T_IN, T_ACC>& args, \
                                                        cudaStream_t stream)

namespace trgnet {

TRGNET_SFI_FORWARD_LAUNCHER(float, float);
TRGNET_SFI_FORWARD_LAUNCHER(double, double);
TRGNET_SFI_FORWARD_LAUNCHER(__half, float);
TRGNET_SFI_FORWARD_LAUNCHER(__nv_bfloat16, float);

TRGNET_SFI_BACKWARD_LAUNCHER(float, float);
TRGNET_SFI_BACKWARD_LAUNCHER(double, double);
TRGNET_SFI_BACKWARD_LAUNCHER(__half, float);
TRGNET_SFI_BACKWARD_LAUNCHER(__nv_bfloat16, float);

}  // namespace trgnet
