// CPU emulation of the CUDA subset used by kernels/*.cu, so that the kernels (copied by
// gen_sources.py, with only the <<<...>>> launches and the one inline-PTX 16-byte store rewritten)
// compile with g++ and run under ASan/UBSan. See ../README.md.
//
// Execution model: a launch runs its blocks one after the other; the threads of a block are fibers
// (own stacks, cooperative switches) on the calling OS thread. A thread runs until it reaches
// __syncthreads() or returns; once every thread of the block has, the next "round" starts. Within a
// round the threads run in a freshly shuffled order (seed: KEMU_SCHED_SEED, default 1), so a read of
// shared memory that another thread writes in the same round (a missing barrier) sees the old value
// in some order. Dynamic shared memory is a heap buffer of exactly the requested size, filled with
// 0xFF bytes (NaN for float / double / bf16) before each block: ASan reports accesses outside it,
// and reads of never-written entries propagate NaN into the outputs.
//
// Checked: launch configuration (1..1024 threads, grid >= 1, dynamic shared memory <= 48 KiB unless
// raised by cudaFuncSetAttribute(MaxDynamicSharedMemorySize), which itself is capped at 227 KiB);
// every thread of a block executing the same number of __syncthreads(); 16-byte alignment of the
// uint4 __ldg loads and of the (rewritten) st.global.v4 stores; the float4 / double2 shared-memory
// reads are 16-byte aligned types, so UBSan's alignment check covers them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <numeric>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define KEMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEMU_ASAN 1
#endif
#endif
#if defined(KEMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if !defined(__x86_64__) || defined(KEMU_USE_UCONTEXT)
#define KEMU_UCONTEXT 1
#include <ucontext.h>
#endif

// ---- CUDA qualifiers and built-ins ---------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n)
// `extern __shared__ __align__(16) unsigned char smem_raw[];` (inside a function of namespace trgnet)
// becomes the declaration of a function returning a pointer to the current block's buffer.
#define smem_raw (*emu_smem_ptr())

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

template <class T>
inline T min(T a, T b) {
  return b < a ? b : a;
}
template <class T>
inline T max(T a, T b) {
  return a < b ? b : a;
}

// ---- runtime API subset ---------------------------------------------------------------------------
typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : e == cudaErrorInvalidValue ? "cudaErrorInvalidValue"
                                                                       : "cudaErrorInvalidConfiguration";
}

namespace kemu {

constexpr size_t kDefaultSmem = 48 * 1024;   // dynamic shared memory without the opt-in
constexpr size_t kMaxOptInSmem = 227 * 1024;  // sm_90 cudaDevAttrMaxSharedMemoryPerBlockOptin
constexpr size_t kStackBytes = 256 * 1024;    // per emulated thread

struct Stats {
  long launches = 0, rejected_launches = 0, optin_launches = 0, blocks = 0, barrier_rounds = 0;
  long barrier_mismatches = 0, vec_loads = 0, vec_stores = 0;
  size_t max_smem = 0;
};
inline Stats& stats() {
  static Stats s;
  return s;
}
struct LaunchRecord {
  std::string name;
  unsigned grid, block;
  size_t smem, limit;
};
inline std::vector<LaunchRecord>& launch_log() {
  static std::vector<LaunchRecord> v;
  return v;
}
inline std::map<const void*, size_t>& smem_limits() {  // per kernel, set by cudaFuncSetAttribute
  static std::map<const void*, size_t> m;
  return m;
}
inline cudaError_t& last_error() {
  static cudaError_t e = cudaSuccess;
  return e;
}

[[noreturn]] inline void fail(const char* what, const void* p) {
  std::fprintf(stderr, "KEMU ERROR: %s at %p (block %u thread %u)\n", what, p, blockIdx.x, threadIdx.x);
  std::fflush(stdout);
  std::abort();
}

// ---- fibers --------------------------------------------------------------------------------------
enum State { kReady, kAtBarrier, kDone, kExited };
struct Fiber {
#if defined(KEMU_UCONTEXT)
  ucontext_t uc;
#endif
  void* sp = nullptr;
  unsigned char* stack = nullptr;  // lowest usable address
  size_t size = 0;
  State state = kReady;
  long syncs = 0;
  void* fake = nullptr;
};
struct Sched {
  std::vector<Fiber> fibers;
  std::vector<unsigned char*> stacks;  // pool, reused across launches
#if defined(KEMU_UCONTEXT)
  ucontext_t main_uc;
#endif
  void* main_sp = nullptr;
  const void* main_bottom = nullptr;
  size_t main_size = 0;
  void* main_fake = nullptr;
  void (*tramp)(void*) = nullptr;
  void* ctx = nullptr;
  bool grid_done = false, in_launch = false;
  unsigned current = 0;
  unsigned char* smem = nullptr;
  uint64_t rng = 0;
};
inline Sched& sched() {
  static Sched s;
  return s;
}

}  // namespace kemu

#if !defined(KEMU_UCONTEXT)
// void kemu_ctx_switch(void** save_sp, void* new_sp): saves the callee-saved registers on the current
// stack, stores the stack pointer in *save_sp, and resumes the context whose stack pointer is new_sp.
// Weak, so that every translation unit including this header may define it.
extern "C" void kemu_ctx_switch(void** save_sp, void* new_sp);
asm(R"(
  .pushsection .text
  .weak kemu_ctx_switch
  .type kemu_ctx_switch, @function
kemu_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size kemu_ctx_switch, .-kemu_ctx_switch
  .popsection
)");
#endif

namespace kemu {

// From the running fiber back to the scheduler; returns when the scheduler resumes this fiber.
inline void yield_to_scheduler(State st) {
  Sched& s = sched();
  Fiber& f = s.fibers[s.current];
  f.state = st;
#if defined(KEMU_ASAN)
  __sanitizer_start_switch_fiber(&f.fake, s.main_bottom, s.main_size);
#endif
#if defined(KEMU_UCONTEXT)
  swapcontext(&f.uc, &s.main_uc);
#else
  kemu_ctx_switch(&f.sp, s.main_sp);
#endif
#if defined(KEMU_ASAN)
  __sanitizer_finish_switch_fiber(f.fake, &s.main_bottom, &s.main_size);
#endif
}

// Body of every fiber: one kernel invocation per block until the grid is done, then back for good.
__attribute__((noinline)) inline void fiber_main() {
  Sched& s = sched();
#if defined(KEMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &s.main_bottom, &s.main_size);
#endif
  while (!s.grid_done) {
    s.tramp(s.ctx);
    yield_to_scheduler(kDone);
  }
  s.fibers[s.current].state = kExited;
#if defined(KEMU_ASAN)
  __sanitizer_start_switch_fiber(nullptr, s.main_bottom, s.main_size);
#endif
#if defined(KEMU_UCONTEXT)
  setcontext(&s.main_uc);
#else
  void* unused;
  kemu_ctx_switch(&unused, s.main_sp);
#endif
  __builtin_trap();  // never resumed
}
extern "C" inline void kemu_fiber_entry() { fiber_main(); }

inline void resume(unsigned t) {
  Sched& s = sched();
  Fiber& f = s.fibers[t];
  s.current = t;
  threadIdx = uint3{t, 0, 0};
#if defined(KEMU_ASAN)
  __sanitizer_start_switch_fiber(&s.main_fake, f.stack, f.size);
#endif
#if defined(KEMU_UCONTEXT)
  swapcontext(&s.main_uc, &f.uc);
#else
  kemu_ctx_switch(&s.main_sp, f.sp);
#endif
#if defined(KEMU_ASAN)
  __sanitizer_finish_switch_fiber(s.main_fake, nullptr, nullptr);
#endif
}

inline void init_fibers(unsigned nt) {
  Sched& s = sched();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  while (s.stacks.size() < nt) {  // kStackBytes usable, one PROT_NONE guard page below
    void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail("mmap of a fiber stack failed", nullptr);
    mprotect(m, page, PROT_NONE);
    s.stacks.push_back(static_cast<unsigned char*>(m) + page);
  }
  s.fibers.assign(nt, Fiber{});
  for (unsigned t = 0; t < nt; ++t) {
    Fiber& f = s.fibers[t];
    f.stack = s.stacks[t];
    f.size = kStackBytes;
#if defined(KEMU_ASAN)
    __asan_unpoison_memory_region(f.stack, f.size);  // leftovers of the previous launch
#endif
#if defined(KEMU_UCONTEXT)
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack;
    f.uc.uc_stack.ss_size = f.size;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, kemu_fiber_entry, 0);
#else
    // kemu_ctx_switch pops 6 registers, then returns into kemu_fiber_entry with the stack pointer
    // 8 mod 16, as after a call (the slot above is its never-used return address).
    uintptr_t* sp = reinterpret_cast<uintptr_t*>(f.stack + f.size);
    *--sp = 0;
    *--sp = reinterpret_cast<uintptr_t>(&kemu_fiber_entry);
    for (int i = 0; i < 6; ++i) *--sp = 0;
    f.sp = sp;
#endif
  }
}

inline unsigned next_random(unsigned bound) {
  uint64_t& x = sched().rng;  // xorshift64*
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  return static_cast<unsigned>(((x * 0x2545F4914F6CDD1DULL) >> 33) % bound);
}

// Runs tramp(ctx) (= the kernel with its arguments) for every thread of every block.
inline void run_grid(const char* name, const void* key, dim3 grid, dim3 block, size_t smem, void (*tramp)(void*),
                     void* ctx) {
  Stats& st = stats();
  Sched& s = sched();
  if (s.in_launch) fail("kernel launch from inside a kernel", nullptr);
  st.launches++;
  const auto it = smem_limits().find(key);
  const size_t limit = it == smem_limits().end() ? kDefaultSmem : it->second;
  launch_log().push_back(LaunchRecord{name, grid.x, block.x, smem, limit});
  if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1) fail("only 1-D grids and blocks are emulated", key);
  const char* why = nullptr;
  cudaError_t err = cudaErrorInvalidConfiguration;
  if (grid.x < 1 || grid.x > 0x7fffffffu) why = "grid size out of range";
  if (block.x < 1 || block.x > 1024) why = "block size out of range";
  if (!why && smem > limit) {
    why = "dynamic shared memory above the kernel's limit (48 KiB unless raised by cudaFuncSetAttribute)";
    err = cudaErrorInvalidValue;
  }
  if (why) {
    std::fprintf(stderr, "KEMU: launch of %s rejected: %s (grid %u, block %u, smem %zu, limit %zu)\n", name, why,
                 grid.x, block.x, smem, limit);
    st.rejected_launches++;
    last_error() = err;
    return;
  }
  if (smem > kDefaultSmem) st.optin_launches++;
  st.max_smem = std::max(st.max_smem, smem);

  const unsigned nt = block.x;
  init_fibers(nt);
  s.tramp = tramp;
  s.ctx = ctx;
  s.grid_done = false;
  s.in_launch = true;
  if (s.rng == 0) {
    const char* e = std::getenv("KEMU_SCHED_SEED");
    s.rng = 0x9E3779B97F4A7C15ULL ^ static_cast<uint64_t>(e ? std::strtoull(e, nullptr, 10) : 1);
  }
  gridDim = grid;
  blockDim = block;
  std::vector<unsigned> order(nt);
  std::iota(order.begin(), order.end(), 0u);
  for (unsigned b = 0; b < grid.x; ++b) {
    blockIdx = uint3{b, 0, 0};
    s.smem = static_cast<unsigned char*>(::operator new(smem, std::align_val_t(16)));
    std::memset(s.smem, 0xFF, smem);
    for (Fiber& f : s.fibers) {
      f.syncs = 0;
      f.state = kReady;
    }
    bool diverged = false;
    for (;;) {
      for (unsigned i = nt; i > 1; --i) std::swap(order[i - 1], order[next_random(i)]);
      for (unsigned t : order)
        if (s.fibers[t].state == kReady) resume(t);
      unsigned waiting = 0, done = 0;
      for (Fiber& f : s.fibers) {
        if (f.state == kAtBarrier) {
          ++waiting;
          ++f.syncs;
          f.state = kReady;
        } else if (f.state == kDone) {
          ++done;
        } else {
          fail("emulated thread in an unexpected state", nullptr);
        }
      }
      if (waiting == 0) break;
      if (done > 0) diverged = true;  // some threads returned while others wait at a barrier
      st.barrier_rounds++;
    }
    long lo = s.fibers[0].syncs, hi = lo;
    for (Fiber& f : s.fibers) {
      lo = std::min(lo, f.syncs);
      hi = std::max(hi, f.syncs);
    }
    if (diverged || lo != hi) {
      std::fprintf(stderr, "KEMU ERROR: %s block %u: threads executed between %ld and %ld __syncthreads()\n", name,
                   b, lo, hi);
      st.barrier_mismatches++;
    }
    ::operator delete(s.smem, std::align_val_t(16));
    s.smem = nullptr;
    st.blocks++;
  }
  s.grid_done = true;
  for (unsigned t = 0; t < nt; ++t) resume(t);
  for (Fiber& f : s.fibers)
    if (f.state != kExited) fail("emulated thread did not exit", nullptr);
  s.in_launch = false;
}

// `kernel<<<grid, block, smem, stream>>>(args...)` is rewritten to
// `::kemu::launch("kernel", kernel, grid, block, smem, stream)(args...)`.
template <class... P>
struct Launch {
  const char* name;
  void (*fn)(P...);
  dim3 grid, block;
  size_t smem;
  template <class... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel argument count");
    using Args = std::tuple<std::decay_t<P>...>;
    struct Ctx {
      void (*fn)(P...);
      Args args;
    } ctx{fn, Args(std::forward<A>(a)...)};
    run_grid(name, reinterpret_cast<const void*>(fn), grid, block, smem,
             [](void* c) { std::apply(static_cast<Ctx*>(c)->fn, static_cast<Ctx*>(c)->args); }, &ctx);
  }
};
template <class... P>
Launch<P...> launch(const char* name, void (*fn)(P...), dim3 grid, dim3 block, size_t smem = 0,
                    cudaStream_t = nullptr) {
  return Launch<P...>{name, fn, grid, block, smem};
}

}  // namespace kemu

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = kemu::last_error();
  kemu::last_error() = cudaSuccess;
  return e;
}
template <class K>
inline cudaError_t cudaFuncSetAttribute(K kernel, cudaFuncAttribute attr, int value) {
  static_assert(std::is_pointer<K>::value, "kernel function pointer expected");
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > kemu::kMaxOptInSmem)
    return cudaErrorInvalidValue;
  kemu::smem_limits()[reinterpret_cast<const void*>(kernel)] = static_cast<size_t>(value);
  return cudaSuccess;
}

inline void __syncthreads() {
  if (!kemu::sched().in_launch) kemu::fail("__syncthreads() outside a kernel", nullptr);
  kemu::yield_to_scheduler(kemu::kAtBarrier);
}

namespace trgnet {
inline unsigned char (*emu_smem_ptr())[] {
  if (kemu::sched().smem == nullptr) kemu::fail("dynamic shared memory used outside a kernel", nullptr);
  return reinterpret_cast<unsigned char(*)[]>(kemu::sched().smem);
}
}  // namespace trgnet

// ---- 16-byte global loads and stores ----------------------------------------------------------------
inline uint4 __ldg(const uint4* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16) kemu::fail("misaligned 16-byte __ldg", p);
  kemu::stats().vec_loads++;
  uint4 r;
  std::memcpy(&r, p, 16);
  return r;
}
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
// Stands in for `asm volatile("st.global.v4.b32 [%0], {...};" :: "l"(__cvta_generic_to_global(addr)), ...)`.
#define KEMU_ST_GLOBAL_V4(addr, raw)                                                          \
  do {                                                                                        \
    void* a_ = (void*)(addr);                                                                 \
    if (reinterpret_cast<uintptr_t>(a_) % 16) kemu::fail("misaligned 16-byte st.global.v4", a_); \
    kemu::stats().vec_stores++;                                                               \
    std::memcpy(a_, &(raw), 16);                                                              \
  } while (0)

// ---- __half / __nv_bfloat16 (bit layouts of IEEE binary16 / bfloat16, round to nearest even) ---------
struct __half {
  unsigned short x;
};
struct __nv_bfloat16 {
  unsigned short x;
};
inline float __half2float(__half h) {
  const uint32_t sign = static_cast<uint32_t>(h.x & 0x8000u) << 16, e = (h.x >> 10) & 0x1fu, m = h.x & 0x3ffu;
  uint32_t u;
  if (e == 0) {  // zero or subnormal: m * 2^-24
    const float f = std::ldexp(static_cast<float>(m), -24);
    std::memcpy(&u, &f, 4);
    u |= sign;
  } else if (e == 31) {
    u = sign | 0x7f800000u | (m << 13);
  } else {
    u = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __half __float2half_rn(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const unsigned short sign = static_cast<unsigned short>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  __half h;
  if (a > 0x7f800000u) {
    h.x = sign | 0x7e00u;  // NaN
  } else if (a >= 0x477ff000u) {
    h.x = sign | 0x7c00u;  // rounds to infinity
  } else if (a < 0x38800000u) {  // below 2^-14: subnormal or zero, in units of 2^-24
    float f;
    std::memcpy(&f, &a, 4);
    h.x = sign | static_cast<unsigned short>(std::nearbyint(f * 16777216.0f));
  } else {
    const uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u;
    h.x = sign | static_cast<unsigned short>(r >> 13);
  }
  return h;
}
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = static_cast<uint32_t>(b.x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  __nv_bfloat16 b;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    b.x = 0x7fc0;
    return b;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  b.x = static_cast<unsigned short>(u >> 16);
  return b;
}
