// Plain C++ launchers of the CUDA kernels of the fused per-frame loss terms (no torch headers); kernels in
// frame_losses.cu, per-frame math in frame_losses.cuh, formulas and layouts in
// trgnet_fast/ops/frame_losses/__init__.py.
//
// Layout (all contiguous): logits, grad_logits (S, N, K, T); boundary_logits, grad_boundary_logits (R, N, T);
// labels, next_frame, previous_frame (N, T) int64; ce_weight, pair_weight, boundary, boundary_weight (N, T) and
// pos_weight (1) in Acc; terms (3) Acc; time_lse (S, N, 2, K) Acc = [lse2, lse1] per row (time axis only, else
// unused); grad_terms (3) Acc. Inputs float, double, __half or __nv_bfloat16; Acc float (double for double inputs).
// S, N, T, R >= 1, 1 <= K <= kMaxClasses.
//
// Passes (256 threads a block; every sum in a fixed order, no atomics: deterministic):
//   forward:  fl_time_lse_kernel (time axis)  one block per (row (s, n), group of 8 classes), a warp per class,
//                                             its lanes over the frames -> lse1, lse2 -> time_lse
//             fl_forward_kernel               one block per (row of max(S, R) N, tile of 256 frames), one thread
//                                             per frame: CE, GS-TMSE (logits rows), BCE (boundary rows) ->
//                                             the block's 3 sums -> workspace
//             fl_reduce_kernel                one block: the blocks' sums in order -> terms (scaled)
//   backward: fl_q_sum_kernel (time axis)     as fl_time_lse_kernel: Q_k = sum_u q_k(u) -> workspace (S, N, K)
//             fl_backward_kernel              as fl_forward_kernel: grad_logits column t, grad_boundary_logits
// No device value is read on the host (grad_terms and pos_weight are read by the kernels). Every launcher enqueues
// on `stream`, checks cudaGetLastError() after each launch and returns the first error (cudaErrorInvalidValue for
// bad sizes / missing pointers, before any launch).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "frame_losses.cuh"
#include "host_device.h"

namespace trgnet {
namespace fl {

constexpr int kThreads = 256;
constexpr int kLanes = 32;                         // threads of one class in the per-row reductions
constexpr int kClassesPerBlock = kThreads / kLanes;  // classes of one block of the per-row reductions
constexpr int kFrameTile = kThreads;               // frames of one block of the per-frame kernels

// Inputs of both directions.
template <typename In, typename Acc>
struct Inputs {
  const In* logits;                                     // (S, N, K, T)
  const int64_t *labels, *next_frame, *previous_frame;  // (N, T)
  const Acc *ce_weight, *pair_weight;                   // (N, T)
  const In* boundary_logits;                            // (R, N, T)
  const Acc *boundary, *boundary_weight, *pos_weight;   // (N, T), (N, T), (1)
  int64_t S, N, K, T, R;
  double threshold;
  bool time_axis;
};

template <typename In, typename Acc>
struct ForwardArgs {
  Inputs<In, Acc> in;
  Acc* terms;     // (3)
  Acc* time_lse;  // (S, N, 2, K); null without time_axis
  Acc* workspace;  // forward_workspace_elems(...)
};

template <typename In, typename Acc>
struct BackwardArgs {
  Inputs<In, Acc> in;
  const Acc* grad_terms;  // (3)
  const Acc* time_lse;    // (S, N, 2, K); null without time_axis
  In* grad_logits;        // (S, N, K, T)
  In* grad_boundary_logits;  // (R, N, T)
  Acc* workspace;         // backward_workspace_elems(...) (may be null when that is 0)
};

// ---- grids (host) ------------------------------------------------------------------------------------------
// The per-frame kernels' rows (max(S, R) N) and frame tiles; the per-row reductions' class groups.
inline int64_t frame_rows(int64_t S, int64_t R, int64_t N) { return (S > R ? S : R) * N; }
TRGNET_HD int64_t frame_tiles(int64_t T) { return (T + kFrameTile - 1) / kFrameTile; }
TRGNET_HD int64_t class_groups(int64_t K) { return (K + kClassesPerBlock - 1) / kClassesPerBlock; }

// Accumulator elements of the forward's workspace: 3 sums per block of fl_forward_kernel.
inline int64_t forward_workspace_elems(int64_t S, int64_t N, int64_t T, int64_t R) {
  return 3 * frame_rows(S, R, N) * frame_tiles(T);
}
// Accumulator elements of the backward's workspace: Q (S, N, K) with time_axis, else none.
inline int64_t backward_workspace_elems(int64_t S, int64_t N, int64_t K, bool time_axis) {
  return time_axis ? S * N * K : 0;
}

}  // namespace fl
}  // namespace trgnet

#define TRGNET_FL_FORWARD_LAUNCHER(T_IN, T_ACC) \
  cudaError_t launch_frame_losses_forward(const fl::ForwardArgs<T_IN, T_ACC>& args, cudaStream_t stream)
#define TRGNET_FL_BACKWARD_LAUNCHER(T_IN, T_ACC) \
  cudaError_t launch_frame_losses_backward(const fl::BackwardArgs<T_IN, T_ACC>& args, cudaStream_t stream)

namespace trgnet {

TRGNET_FL_FORWARD_LAUNCHER(float, float);
TRGNET_FL_FORWARD_LAUNCHER(double, double);
TRGNET_FL_FORWARD_LAUNCHER(__half, float);
TRGNET_FL_FORWARD_LAUNCHER(__nv_bfloat16, float);

TRGNET_FL_BACKWARD_LAUNCHER(float, float);
TRGNET_FL_BACKWARD_LAUNCHER(double, double);
TRGNET_FL_BACKWARD_LAUNCHER(__half, float);
TRGNET_FL_BACKWARD_LAUNCHER(__nv_bfloat16, float);

}  // namespace trgnet
