// Helpers of the CUDA dispatch files (csrc/*_cuda.cpp): at:: storage types -> the CUDA types the
// plain launchers of kernels/ take, and the launch-error check. CUDA builds only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace trgnet {

// at:: storage type -> CUDA type the launchers take (same bit layout).
template <typename T>
struct CudaType {
  using type = T;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename scalar_t>
const typename CudaType<scalar_t>::type* cptr(const at::Tensor& t) {
  return reinterpret_cast<const typename CudaType<scalar_t>::type*>(t.data_ptr<scalar_t>());
}
template <typename scalar_t>
typename CudaType<scalar_t>::type* mptr(at::Tensor& t) {
  return reinterpret_cast<typename CudaType<scalar_t>::type*>(t.data_ptr<scalar_t>());
}

// Raises when a launcher returned an error (the launchers check cudaGetLastError() after each
// launch, the equivalent of C10_CUDA_KERNEL_LAUNCH_CHECK).
inline void check_launch(const char* op, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace trgnet
