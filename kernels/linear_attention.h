// Plain C++ launchers of the CUDA linear-attention kernels (no torch headers).
//
// Layout (all contiguous, row-major):
//   q, k: (N, T, H, D)   v, out, grad_out: (N, T, H, E)   key_mask: (N, T) bool or nullptr
//   kv_state: (N, H, D, E)   key_sum: (N, H, D)   (key_sum does NOT include eps)
// Inputs float, double, __half or __nv_bfloat16; the state, the workspace and all accumulation
// are float (double for double inputs). 1 <= D, E <= 64.
//
// Deterministic: the sums over T are split into fixed chunks of frames, each reduced in a fixed
// order by one block, then the chunk partials are summed in chunk order (no atomics). The
// chunking depends only on T, so results are bitwise reproducible for a given shape and GPU.
//
// Every launcher enqueues on `stream`, checks cudaGetLastError() after each launch and returns
// the first error (cudaErrorInvalidValue for bad sizes / missing pointers).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "host_device.h"

namespace trgnet {
namespace la {

// Frames per chunk of the T reduction, and the number of chunks (>= 1 even for T == 0).
inline int64_t reduction_chunk_len(int64_t T) {
  const int64_t max_chunks = 1024;
  const int64_t min_len = 128;
  const int64_t len = (T + max_chunks - 1) / max_chunks;
  return len > min_len ? len : min_len;
}
inline int64_t reduction_chunks(int64_t T) {
  const int64_t len = reduction_chunk_len(T);
  const int64_t c = (T + len - 1) / len;
  return c > 0 ? c : 1;
}

// Largest power of two tile <= max_tile with fixed_bytes + tile * row_bytes <= budget_bytes (1 if none).
inline int fitting_tile(int max_tile, int64_t fixed_bytes, int64_t row_bytes, int64_t budget_bytes) {
  int tile = max_tile;
  while (tile > 1 && fixed_bytes + tile * row_bytes > budget_bytes) tile /= 2;
  return tile;
}

// Row stride (elements) of a factor with n columns that the T-reduction kernels stage in shared memory
// (acc_bytes = sizeof of the accumulator): whole 4-element blocks, 16-byte aligned rows, and an odd number
// of 16-byte units, so that 16-byte stores of consecutive rows by consecutive threads hit distinct banks.
TRGNET_HD int staged_stride(int n, int acc_bytes) {
  const int per16 = 16 / acc_bytes;
  const int s = (n + 3) / 4 * 4;
  return (s / per16) % 2 == 0 ? s + per16 : s;
}

// Frames per shared-memory tile of the forward state pass: the largest power of two <= 128 whose staged
// m phi(k) and [v, 1] rows fit the default 48 KiB of dynamic shared memory.
inline int state_pass_tile(int64_t D, int64_t E, int acc_bytes) {
  const int64_t row_bytes = (staged_stride(static_cast<int>(D), acc_bytes) +
                             staged_stride(static_cast<int>(E) + 1, acc_bytes)) * acc_bytes;
  return fitting_tile(128, 0, row_bytes, 48 * 1024);
}

// Number of accumulator elements (float, or double for double inputs) the workspace of
// launch_linear_attention_forward / launch_linear_attention_backward must hold.
inline int64_t workspace_elems(int64_t N, int64_t T, int64_t H, int64_t D, int64_t E) {
  const int64_t NH = N * H, W = E + 1;
  return NH * reduction_chunks(T) * D * W  // per-chunk partial states
         + NH * D * E + NH * D;            // reduced dKV and dks (backward)
}

}  // namespace la
}  // namespace trgnet

// The launchers, one overload per input dtype (T_IN) and its accumulator (T_ACC). The signature macros
// serve the declarations below and the definitions of kernels/linear_attention_impl.cuh.
//
// Forward: out, kv_state, key_sum. workspace: la::workspace_elems(...) accumulators.
#define TRGNET_LA_FORWARD_LAUNCHER(T_IN, T_ACC)                                                           \
  cudaError_t launch_linear_attention_forward(                                                            \
      const T_IN* q, const T_IN* k, const T_IN* v, const bool* key_mask, int64_t N, int64_t T, int64_t H, \
      int64_t D, int64_t E, double eps, T_IN* out, T_ACC* kv_state, T_ACC* key_sum, T_ACC* workspace,     \
      cudaStream_t stream)

// Backward: grad_q, grad_k, grad_v from grad_out and the saved kv_state / key_sum.
// workspace: la::workspace_elems(...) accumulators.
#define TRGNET_LA_BACKWARD_LAUNCHER(T_IN, T_ACC)                                                          \
  cudaError_t launch_linear_attention_backward(                                                           \
      const T_IN* grad_out, const T_IN* q, const T_IN* k, const T_IN* v, const bool* key_mask,            \
      const T_ACC* kv_state, const T_ACC* key_sum, int64_t N, int64_t T, int64_t H, int64_t D, int64_t E, \
      double eps, T_IN* grad_q, T_IN* grad_k, T_IN* grad_v, T_ACC* workspace, cudaStream_t stream)

namespace trgnet {

TRGNET_LA_FORWARD_LAUNCHER(float, float);
TRGNET_LA_FORWARD_LAUNCHER(double, double);
TRGNET_LA_FORWARD_LAUNCHER(__half, float);
TRGNET_LA_FORWARD_LAUNCHER(__nv_bfloat16, float);

TRGNET_LA_BACKWARD_LAUNCHER(float, float);
TRGNET_LA_BACKWARD_LAUNCHER(double, double);
TRGNET_LA_BACKWARD_LAUNCHER(__half, float);
TRGNET_LA_BACKWARD_LAUNCHER(__nv_bfloat16, float);

}  // namespace trgnet
