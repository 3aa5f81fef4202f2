// Device helpers shared by the CUDA kernels of kernels/*.cu (no torch headers): storage <->
// accumulator conversions, the dynamic shared-memory base, coalesced (16-byte where aligned)
// loads of contiguous segments and of strided rows, 16-byte row stores, and the launch bookkeeping (error check after
// every launch, opt-in to more than 48 KiB of dynamic shared memory).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace trgnet {

// ---- storage <-> accumulator conversions -------------------------------------------------------
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
struct Store;
template <>
struct Store<float> {
  __device__ __forceinline__ static float from(float x) { return x; }
};
template <>
struct Store<double> {
  __device__ __forceinline__ static double from(double x) { return x; }
};
template <>
struct Store<__half> {
  __device__ __forceinline__ static __half from(float x) { return __float2half_rn(x); }
};
template <>
struct Store<__nv_bfloat16> {
  __device__ __forceinline__ static __nv_bfloat16 from(float x) { return __float2bfloat16_rn(x); }
};

// Base of the block's dynamic shared memory, 16-byte aligned.
template <typename Acc>
__device__ __forceinline__ Acc* smem_base() {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  return reinterpret_cast<Acc*>(smem_raw);
}

// Elements of T in one 16-byte global access. The helpers below view a uint4 register value as kCount
// elements through a cast pointer: the usual CUDA idiom, which nvcc compiles to register moves (a memcpy
// version put 16-bit element packs into local memory); device code here is only ever compiled by nvcc.
template <typename T>
struct Pack16 {
  static constexpr int kCount = 16 / static_cast<int>(sizeof(T));
};

// dst[i] = to_acc(src[i]) for i < count, by all threads of the block (blockDim.x of them).
// Consecutive threads read consecutive elements; the 16-byte aligned middle of the segment is read
// with 16-byte loads (uint4 = 16 / sizeof(In) elements per thread and load).
template <typename In, typename Acc>
__device__ __forceinline__ void load_segment(const In* __restrict__ src, int64_t count, Acc* __restrict__ dst) {
  constexpr int kVec = Pack16<In>::kCount;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(src);
  int64_t head = static_cast<int64_t>(((16 - (addr & 15)) & 15) / sizeof(In));
  if ((addr % sizeof(In)) != 0 || head > count) head = count;  // misaligned element type: scalar path
  const int64_t body = ((count - head) / kVec) * kVec;
  for (int64_t i = threadIdx.x; i < head; i += blockDim.x) dst[i] = to_acc(src[i]);
  const uint4* vsrc = reinterpret_cast<const uint4*>(src + head);
  for (int64_t j = threadIdx.x; j < body / kVec; j += blockDim.x) {
    const uint4 raw = __ldg(vsrc + j);
    const In* e = reinterpret_cast<const In*>(&raw);
#pragma unroll
    for (int k = 0; k < kVec; ++k) dst[head + j * kVec + k] = to_acc(e[k]);
  }
  for (int64_t i = head + body + threadIdx.x; i < count; i += blockDim.x) dst[i] = to_acc(src[i]);
}

// One 16-byte global store of raw at p (16-byte aligned). Explicit vector store: a plain uint4 assignment
// was split into four 4-byte stores by the optimiser in some kernels (query_backward_kernel, nvcc 13.0).
template <typename T>
__device__ __forceinline__ void store16(T* p, const uint4& raw) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(__cvta_generic_to_global(p)), "r"(raw.x),
               "r"(raw.y), "r"(raw.z), "r"(raw.w)
               : "memory");
}

// Rows of `width` contiguous elements, `row_stride` elements apart (e.g. one head's slice of every frame
// of a (N, T, H, D) tensor): 16-byte accesses are possible when every row start is 16-byte aligned and a
// row is whole 16-byte packs.
template <typename T>
__device__ __forceinline__ bool rows_packable(const T* base, int64_t row_stride, int width) {
  constexpr int kVec = Pack16<T>::kCount;
  return width % kVec == 0 && row_stride % kVec == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0;
}

// op(r, c, to_acc(src[r * row_stride + c])) for r < rows, c < width, by all threads of the block;
// 16-byte loads (consecutive threads take consecutive packs) when rows_packable, else scalar loads.
template <typename In, typename Op>
__device__ __forceinline__ void for_each_row_element(const In* __restrict__ src, int64_t row_stride, int rows,
                                                     int width, Op op) {
  constexpr int kVec = Pack16<In>::kCount;
  if (rows_packable(src, row_stride, width)) {
    const int packs = width / kVec;
    for (int i = threadIdx.x; i < rows * packs; i += blockDim.x) {
      const int r = i / packs, c0 = (i % packs) * kVec;
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(src + r * row_stride + c0));
      const In* e = reinterpret_cast<const In*>(&raw);
#pragma unroll
      for (int k = 0; k < kVec; ++k) op(r, c0 + k, to_acc(e[k]));
    }
  } else {
    for (int i = threadIdx.x; i < rows * width; i += blockDim.x) {
      const int r = i / width, c = i % width;
      op(r, c, to_acc(src[r * row_stride + c]));
    }
  }
}

// dst[r * row_stride + c] = value(r, c) (an accumulator, rounded to Out) for r < rows, c < width, by all
// threads of the block; 16-byte stores when rows_packable, else scalar stores.
template <typename Out, typename Value>
__device__ __forceinline__ void store_rows(Out* __restrict__ dst, int64_t row_stride, int rows, int width,
                                           Value value) {
  constexpr int kVec = Pack16<Out>::kCount;
  if (rows_packable(dst, row_stride, width)) {
    const int packs = width / kVec;
    for (int i = threadIdx.x; i < rows * packs; i += blockDim.x) {
      const int r = i / packs, c0 = (i % packs) * kVec;
      uint4 raw;
      Out* e = reinterpret_cast<Out*>(&raw);
#pragma unroll
      for (int k = 0; k < kVec; ++k) e[k] = Store<Out>::from(value(r, c0 + k));
      store16(dst + r * row_stride + c0, raw);
    }
  } else {
    for (int i = threadIdx.x; i < rows * width; i += blockDim.x) {
      const int r = i / width, c = i % width;
      dst[r * row_stride + c] = Store<Out>::from(value(r, c));
    }
  }
}

// dst[0..DP) = to_acc(src[0..n)), zeros beyond n (n <= DP), by one thread: 16-byte loads when src is
// 16-byte aligned and n whole packs, else scalar loads. DP a multiple of 16 / sizeof(In).
template <int DP, typename In, typename Acc>
__device__ __forceinline__ void load_row_registers(const In* __restrict__ src, int n, Acc (&dst)[DP]) {
  constexpr int kVec = Pack16<In>::kCount;
  static_assert(DP % kVec == 0, "DP must be whole 16-byte packs");
  if (n % kVec == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
#pragma unroll
    for (int p = 0; p < DP / kVec; ++p) {
      if (p * kVec < n) {
        const uint4 raw = __ldg(reinterpret_cast<const uint4*>(src) + p);
        const In* e = reinterpret_cast<const In*>(&raw);
#pragma unroll
        for (int k = 0; k < kVec; ++k) dst[p * kVec + k] = to_acc(e[k]);
      } else {
#pragma unroll
        for (int k = 0; k < kVec; ++k) dst[p * kVec + k] = Acc(0);
      }
    }
  } else {
#pragma unroll
    for (int d = 0; d < DP; ++d) dst[d] = d < n ? to_acc(src[d]) : Acc(0);
  }
}

// dst[0..n) = vals[0..n) rounded to Out (n <= DP), by one thread: 16-byte stores when dst is 16-byte aligned
// and n whole packs, else scalar stores.
template <int DP, typename Out, typename Acc>
__device__ __forceinline__ void store_row_registers(Out* __restrict__ dst, int n, const Acc (&vals)[DP]) {
  constexpr int kVec = Pack16<Out>::kCount;
  static_assert(DP % kVec == 0, "DP must be whole 16-byte packs");
  if (n % kVec == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
#pragma unroll
    for (int p = 0; p < DP / kVec; ++p) {
      if (p * kVec < n) {
        uint4 raw;
        Out* e = reinterpret_cast<Out*>(&raw);
#pragma unroll
        for (int k = 0; k < kVec; ++k) e[k] = Store<Out>::from(vals[p * kVec + k]);
        store16(dst + p * kVec, raw);
      }
    }
  } else {
#pragma unroll
    for (int d = 0; d < DP; ++d)
      if (d < n) dst[d] = Store<Out>::from(vals[d]);
  }
}

// Square matrix rows [0, rows) of length `cols` from a contiguous (rows, cols) source into shared
// memory with row stride `ld` (ld = cols | 1: an odd stride keeps column-parallel reads free of bank
// conflicts). `add`, when not null, is a second matrix of the same layout added element-wise.
template <typename In, typename Acc>
__device__ __forceinline__ void load_rows(const In* __restrict__ src, const In* __restrict__ add, int rows,
                                          int cols, int ld, Acc* __restrict__ dst) {
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x) {
    const int r = i / cols, c = i % cols;
    Acc v = to_acc(src[i]);
    if (add != nullptr) v += to_acc(add[i]);
    dst[r * ld + c] = v;
  }
}

// Row stride of a shared-memory matrix with `cols` columns: odd, so that threads reading one column
// each (consecutive columns or consecutive rows) hit distinct banks.
__host__ __device__ __forceinline__ int odd_stride(int cols) { return cols | 1; }

// Largest dynamic shared memory the kernels of this project ask for (opt-in above 48 KiB; fits
// sm_80 .. sm_90 and leaves room for two blocks per SM on H100 / H200).
constexpr size_t kSmemOptInBudget = 96 * 1024;
constexpr size_t kSmemDefault = 48 * 1024;

// Allows `kernel` to use `bytes` of dynamic shared memory (needed above 48 KiB).
template <typename Kernel>
inline cudaError_t allow_smem(Kernel kernel, size_t bytes) {
  if (bytes <= kSmemDefault) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

// End (exclusive) of the T-tiles of chunk `chunk`, `per` tiles a chunk, clipped to the tiles of T
// frames (TT frames a tile).
__device__ __forceinline__ int64_t chunk_tile_end(int64_t T, int TT, int64_t chunk, int64_t per) {
  const int64_t tiles = (T + TT - 1) / TT;
  const int64_t end = (chunk + 1) * per;
  return end < tiles ? end : tiles;
}

inline bool grid_fits(int64_t blocks) { return blocks > 0 && blocks <= 0x7fffffffLL; }

}  // namespace trgnet

// Returns the launch error (if any) from the enclosing launcher.
#define TRGNET_RETURN_IF_LAUNCH_FAILED()   \
  do {                                     \
    cudaError_t err_ = cudaGetLastError(); \
    if (err_ != cudaSuccess) return err_;  \
  } while (0)
#define TRGNET_RETURN_IF_ERROR(expr)      \
  do {                                    \
    cudaError_t err_ = (expr);            \
    if (err_ != cudaSuccess) return err_; \
  } while (0)
