// Host + device helpers shared by the per-element math headers (kernels/*.cuh, compiled by nvcc and
// by the C++ CPU kernels of csrc/) and the launcher headers (kernels/*.h). No CUDA or torch headers.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TRGNET_HD __host__ __device__ __forceinline__
#else
#define TRGNET_HD inline
#endif

namespace trgnet {

// exp, log, log1p and sqrt of a float or double: CUDA's overloads on the device, std:: on the host.
#if defined(__CUDA_ARCH__)
template <typename Acc>
TRGNET_HD Acc hd_exp(Acc x) {
  return exp(x);
}
template <typename Acc>
TRGNET_HD Acc hd_log(Acc x) {
  return log(x);
}
template <typename Acc>
TRGNET_HD Acc hd_log1p(Acc x) {
  return log1p(x);
}
template <typename Acc>
TRGNET_HD Acc hd_sqrt(Acc x) {
  return sqrt(x);
}
#else
template <typename Acc>
TRGNET_HD Acc hd_exp(Acc x) {
  return std::exp(x);
}
template <typename Acc>
TRGNET_HD Acc hd_log(Acc x) {
  return std::log(x);
}
template <typename Acc>
TRGNET_HD Acc hd_log1p(Acc x) {
  return std::log1p(x);
}
template <typename Acc>
TRGNET_HD Acc hd_sqrt(Acc x) {
  return std::sqrt(x);
}
#endif

// sum_i a[i * sa] * b[i * sb], i in increasing order.
template <typename Acc>
TRGNET_HD Acc dot_strided(const Acc* a, int sa, const Acc* b, int sb, int n) {
  Acc acc = Acc(0);
  for (int i = 0; i < n; ++i) acc += a[i * sa] * b[i * sb];
  return acc;
}

// Chunking of T into tiles of `tile` frames for `units` independent blocks (e.g. samples): T-tiles
// per chunk so that units * chunks is about `target` blocks, and the number of chunks. Both depend
// only on the sizes (the deterministic reductions over the chunks rely on it).
inline int64_t tiles_per_chunk(int64_t units, int64_t T, int tile, int64_t target) {
  const int64_t tiles = (T + tile - 1) / tile;
  int64_t chunks = (target + units - 1) / (units > 0 ? units : 1);
  if (chunks > tiles) chunks = tiles;
  if (chunks < 1) chunks = 1;
  const int64_t per = (tiles + chunks - 1) / chunks;
  return per > 0 ? per : 1;
}
inline int64_t num_chunks(int64_t T, int tile, int64_t per) {
  const int64_t tiles = (T + tile - 1) / tile;
  const int64_t c = (tiles + per - 1) / per;
  return c > 0 ? c : 1;
}

}  // namespace trgnet
