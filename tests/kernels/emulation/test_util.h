// What the emulated-kernel drivers (test_<op>.cpp) share: element conversions, exactly sized NaN-filled
// buffers (optionally offset by some elements from a 64-byte aligned allocation) and an op's parameter buffers,
// random frame masks and sequence offsets, the relative error against a double reference, per-case reporting and
// checks (launcher calls, outputs, 16-byte path, launch log, refused sizes), a self-test of the emulator, the
// reference's gradient check, the aligned / misaligned pair, the unsupported-sizes case and the driver's main.
//
// A driver defines, for its op: Shape (the sizes), Ref and reference() (the double-precision reference),
// check_reference(), Expect (the code paths a case must take) and
// run_case<In, Acc>(why, shape, offset, expect, seed) -> all outputs of the case; its main is
//   return run_driver("<op>", check_reference, [] { run_case<...>(...); pair_case<...>(...); ...; });
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_runtime.h>

namespace emu_test {

template <class T>
double to_d(T x) {
  return static_cast<double>(x);
}
template <>
inline double to_d(__half x) {
  return __half2float(x);
}
template <>
inline double to_d(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <class T>
T from_d(double x) {
  return static_cast<T>(x);
}
template <>
inline __half from_d(double x) {
  return __float2half_rn(static_cast<float>(x));
}
template <>
inline __nv_bfloat16 from_d(double x) {
  return __float2bfloat16_rn(static_cast<float>(x));
}
template <class T>
const char* tname() {
  return std::is_same<T, float>::value ? "f32" : std::is_same<T, double>::value ? "f64"
                                             : std::is_same<T, __half>::value  ? "f16"
                                                                               : "bf16";
}
// Relative-error tolerance per input dtype.
template <class T>
double tol() {
  return std::is_same<T, double>::value ? 1e-10 : std::is_same<T, float>::value ? 1e-5 : 2e-2;
}

// count elements at p = base + offset; the whole allocation starts as 0xFF bytes (NaN for float,
// double, bf16, half), so unwritten outputs show up as NaN; the `offset` elements before p must stay so.
template <class T>
struct Buf {
  unsigned char* base = nullptr;
  T* p = nullptr;
  size_t n = 0, off = 0;
  Buf(size_t count, size_t offset = 0) : n(count), off(offset) {
    const size_t bytes = (count + offset) * sizeof(T);
    base = static_cast<unsigned char*>(::operator new(bytes, std::align_val_t(64)));
    std::memset(base, 0xFF, bytes);
    p = reinterpret_cast<T*>(base) + offset;
  }
  ~Buf() { ::operator delete(base, std::align_val_t(64)); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  void poison() { std::memset(base, 0xFF, (n + off) * sizeof(T)); }
  bool prefix_intact() const {
    for (size_t i = 0; i < off * sizeof(T); ++i)
      if (base[i] != 0xFF) return false;
    return true;
  }
  // x[i] = value(i) rounded to T; returns the stored values as doubles.
  template <class Value>
  std::vector<double> fill_with(Value value) {
    std::vector<double> d(n);
    for (size_t i = 0; i < n; ++i) {
      p[i] = from_d<T>(value(i));
      d[i] = to_d(p[i]);
    }
    return d;
  }
  // x[i] = round(uniform(lo, hi)) stored as T; d[i] = the stored value as double.
  template <class Rng>
  std::vector<double> fill(Rng& rng, double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    return fill_with([&](size_t) { return u(rng); });
  }
  // The doubles of `values` stored as T; returns the stored values as doubles.
  std::vector<double> store(const std::vector<double>& values) {
    return fill_with([&](size_t i) { return values[i]; });
  }
  std::vector<double> values() const {
    std::vector<double> d(n);
    for (size_t i = 0; i < n; ++i) d[i] = to_d(p[i]);
    return d;
  }
};

// ||x - ref|| / max(||ref||, floor); NaN entries are counted in `nans` and left out of the norm.
inline double rel_err(const std::vector<double>& x, const std::vector<double>& ref, long& nans, double floor = 0) {
  if (x.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(x[i])) {
      ++nans;
      continue;
    }
    num += (x[i] - ref[i]) * (x[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  const double d = std::max(std::sqrt(den), floor);
  return d > 0 ? std::sqrt(num) / d : std::sqrt(num);
}
inline double norm(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v * v;
  return std::sqrt(s);
}

// n values uniform in [lo, hi).
inline std::vector<double> uniform_values(std::mt19937_64& rng, size_t n, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> U(lo, hi);
  std::vector<double> v(n);
  for (auto& y : v) y = U(rng);
  return v;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// n frame-mask values: 1 (a valid frame) with probability 3/4, else 0.
inline std::vector<double> random_frame_mask(std::mt19937_64& rng, size_t n) {
  std::vector<double> mask(n);
  for (auto& m : mask) m = rng() % 4 ? 1.0 : 0.0;
  return mask;
}

// cu_seqlens of B rows of T frames padded at their ends: random lengths 0 .. T.
inline std::vector<int32_t> padded_offsets(std::mt19937_64& rng, int B, int T) {
  std::vector<int32_t> cu{0};
  for (int b = 0; b < B; ++b) cu.push_back(cu.back() + static_cast<int32_t>(rng() % (T + 1)));
  return cu;
}

// cu_seqlens of N sequences packed in one row of T frames: random cuts, empty sequences included.
inline std::vector<int32_t> packed_offsets(std::mt19937_64& rng, int N, int T) {
  std::vector<int32_t> cuts{0, static_cast<int32_t>(T)};
  for (int i = 1; i < N; ++i) cuts.push_back(static_cast<int32_t>(rng() % (T + 1)));
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

// " lens=a,b,..." (the sequence lengths of cu_seqlens) for a case title; "" without cu_seqlens.
inline std::string lengths_note(const std::vector<int32_t>& cu) {
  std::string lens;
  for (size_t i = 1; i < cu.size(); ++i) lens += (i > 1 ? "," : "") + std::to_string(cu[i] - cu[i - 1]);
  return lens.empty() ? "" : " lens=" + lens;
}

// An op's parameters in one flat vector of `total` values, as its host code takes them, and back: part i (of
// part_size(i, sizes...) values) at part_offset(i, sizes...), the functions of the op's header.
template <class PartOffset, class... Sizes>
std::vector<double> join_parts(const std::vector<std::vector<double>>& parts, int64_t total, PartOffset part_offset,
                               Sizes... sizes) {
  std::vector<double> flat(total);
  for (size_t i = 0; i < parts.size(); ++i)
    std::copy(parts[i].begin(), parts[i].end(), flat.begin() + part_offset(static_cast<int>(i), sizes...));
  return flat;
}
template <class PartOffset, class PartSize, class... Sizes>
std::vector<std::vector<double>> split_parts(const std::vector<double>& flat, int count, PartOffset part_offset,
                                             PartSize part_size, Sizes... sizes) {
  std::vector<std::vector<double>> parts(count);
  for (int i = 0; i < count; ++i) {
    const auto begin = flat.begin() + part_offset(i, sizes...);
    parts[i].assign(begin, begin + part_size(i, sizes...));
  }
  return parts;
}

// The buffers of an op's weights and of their gradients, one of each per part (numel(i) elements, `offset`
// elements from the start of their allocations).
template <class In>
struct ParameterBufs {
  std::vector<std::unique_ptr<Buf<In>>> value, grad;
  template <class Numel>
  ParameterBufs(int count, Numel numel, int offset) {
    for (int i = 0; i < count; ++i) {
      value.push_back(std::make_unique<Buf<In>>(numel(i), offset));
      grad.push_back(std::make_unique<Buf<In>>(numel(i), offset));
    }
  }
  // Weights drawn from U(-half_width(i), half_width(i)), rounded to In; returns them as doubles.
  template <class HalfWidth>
  std::vector<std::vector<double>> fill(std::mt19937_64& rng, HalfWidth half_width) {
    std::vector<std::vector<double>> parts;
    for (size_t i = 0; i < value.size(); ++i) parts.push_back(value[i]->fill(rng, -half_width(i), half_width(i)));
    return parts;
  }
  // The weights' / the gradients' pointers into a launcher's argument array.
  template <class Pointers>
  void weights_into(Pointers& pointers) const {
    for (size_t i = 0; i < value.size(); ++i) pointers[i] = value[i]->p;
  }
  template <class Pointers>
  void grads_into(Pointers& pointers) const {
    for (size_t i = 0; i < grad.size(); ++i) pointers[i] = grad[i]->p;
  }
};

inline int g_pass = 0, g_fail = 0;

// The 16-byte access path a case must take: not checked, taken (16-byte loads and stores), not taken.
enum class Vec { kAny, kUsed, kNone };

// "<dtype> <sizes> offset=<offset> (<why>)": the title of a launcher case.
template <class In>
std::string case_title(const std::string& sizes, int offset, const std::string& why) {
  return std::string(tname<In>()) + " " + sizes + " offset=" + std::to_string(offset) + " (" + why + ")";
}

// One test case: collects errors / conditions and the emulator's counters over its lifetime, and
// prints one "PASS ..." or "FAIL ..." line.
struct Case {
  std::string title, detail;
  bool ok = true;
  kemu::Stats s0;
  size_t log0;
  explicit Case(std::string t) : title(std::move(t)), s0(kemu::stats()), log0(kemu::launch_log().size()) {}
  void err(const char* what, double e, double limit) {
    char b[96];
    const bool good = e <= limit;  // false for NaN
    std::snprintf(b, sizeof(b), " %s %.1e%s", what, e, good ? "" : "(>tol)");
    detail += b;
    ok = ok && good;
  }
  void require(bool cond, const std::string& what) {
    if (!cond) {
      detail += " [" + what + "]";
      ok = false;
    }
  }
  void note(const std::string& what) { detail += " " + what; }
  long delta(long kemu::Stats::*m) const { return kemu::stats().*m - s0.*m; }
  size_t max_smem_since() const {
    size_t m = 0;
    for (size_t i = log0; i < kemu::launch_log().size(); ++i) m = std::max(m, kemu::launch_log()[i].smem);
    return m;
  }
  // Whether kernel `name` was launched since the case began, and the dynamic shared memory of its last
  // launch (0 when it was not).
  bool launched(const std::string& name) const {
    for (size_t i = log0; i < kemu::launch_log().size(); ++i)
      if (kemu::launch_log()[i].name == name) return true;
    return false;
  }
  size_t smem_of(const std::string& name) const {
    size_t s = 0;
    for (size_t i = log0; i < kemu::launch_log().size(); ++i)
      if (kemu::launch_log()[i].name == name) s = kemu::launch_log()[i].smem;
    return s;
  }
  // The launcher's answer to sizes it does not take.
  void require_rejected(cudaError_t e, const std::string& call) {
    require(e == cudaErrorInvalidValue, call + " must return cudaErrorInvalidValue");
  }
  // A launch above 48 KiB of shared memory (with the opt-in) since the case began.
  void require_optin_launch() { require(delta(&kemu::Stats::optin_launches) > 0, "no opt-in shared memory"); }
  void require_vec(Vec vec) {
    const bool loads = delta(&kemu::Stats::vec_loads) > 0, stores = delta(&kemu::Stats::vec_stores) > 0;
    if (vec == Vec::kUsed) require(loads && stores, "16-byte path not taken");
    if (vec == Vec::kNone) require(!loads && !stores, "16-byte access on a misaligned tensor");
  }
  bool finish() {
    require(delta(&kemu::Stats::barrier_mismatches) == 0, "barrier count mismatch");
    require(delta(&kemu::Stats::rejected_launches) == 0, "launch rejected");
    char b[200];
    std::snprintf(b, sizeof(b), " | launches %ld blocks %ld barrier-rounds %ld vec-ld %ld vec-st %ld max-smem %zu%s",
                  delta(&kemu::Stats::launches), delta(&kemu::Stats::blocks), delta(&kemu::Stats::barrier_rounds),
                  delta(&kemu::Stats::vec_loads), delta(&kemu::Stats::vec_stores), max_smem_since(),
                  delta(&kemu::Stats::optin_launches) ? " (opt-in)" : "");
    std::printf("%s %s:%s%s\n", ok ? "PASS" : "FAIL", title.c_str(), detail.c_str(), b);
    std::fflush(stdout);
    (ok ? g_pass : g_fail)++;
    return ok;
  }
};

// Error of one output buffer against its reference (NaNs counted in c's NaN tally, which finish_outputs
// checks), the check that nothing was written before its start, and its values appended to `all`.
struct Outputs {
  long nans = 0;
  std::vector<double> all;
  template <class T>
  void check(Case& c, const Buf<T>& b, const std::vector<double>& ref, const char* name, double limit,
             double floor = 0) {
    const auto x = b.values();
    c.err(name, rel_err(x, ref, nans, floor), limit);
    c.require(b.prefix_intact(), std::string(name) + " written before its start");
    all.insert(all.end(), x.begin(), x.end());
  }
  // check() of buffers of one type against their references, all with one limit.
  template <class T>
  struct Checked {
    const Buf<T>& buf;
    const std::vector<double>& ref;
    const char* name;
  };
  template <class T>
  void check_all(Case& c, std::initializer_list<Checked<T>> outputs, double limit) {
    for (const Checked<T>& o : outputs) check(c, o.buf, o.ref, o.name, limit);
  }
  void finish(Case& c) const {
    c.require(nans == 0, std::to_string(nans) + " NaN outputs (unwritten, or read uninitialised memory)");
  }
};

// The launches a case's forward and backward launchers took.
struct Launches {
  long forward, backward;
};

// Runs forward() then backward() (each -> the launcher's cudaError_t) in case c, requires both to succeed; returns
// how many kernels each launched.
template <class Forward, class Backward>
Launches launch_forward_backward(Case& c, Forward forward, Backward backward) {
  const cudaError_t e1 = forward();
  const long launches_f = c.delta(&kemu::Stats::launches);
  const cudaError_t e2 = backward();
  const long launches_b = c.delta(&kemu::Stats::launches) - launches_f;
  c.require(e1 == cudaSuccess && e2 == cudaSuccess, "launcher returned an error");
  return {launches_f, launches_b};
}

// Compares two runs' outputs bit for bit (e.g. 16-byte vs scalar access paths, two thread orders).
inline bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

inline int report(const char* op) {
  std::printf("RESULT %s: %d passed, %d failed\n", op, g_pass, g_fail);
  return g_fail == 0 && g_pass > 0 ? 0 : 1;
}

// ---- self-test of the emulator (tiny kernels, run through the same launch path) --------------------
namespace selftest {
template <int ID>
__global__ void smem_kernel(int* out) {  // reads the first byte of its dynamic shared memory
  const unsigned char* smem = *trgnet::emu_smem_ptr();
  if (threadIdx.x == 0) out[blockIdx.x] = smem[0] == 0xFF;
}
// With `sync`, every thread writes its slot, then reads its neighbour's; without, the read races.
__global__ void neighbour_kernel(float* out, bool sync) {
  float* s = reinterpret_cast<float*>(*trgnet::emu_smem_ptr());
  s[threadIdx.x] = static_cast<float>(threadIdx.x);
  if (sync) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
__global__ void divergent_kernel(int* out) {
  if (threadIdx.x == 3) return;  // skips the barrier
  __syncthreads();
  out[threadIdx.x] = 1;
}
}  // namespace selftest

inline void emulator_selftest() {
  using namespace selftest;
  Case c("emulator self-test (smem limits, NaN fill, barrier, race and divergence detection)");
  std::fprintf(stderr, "KEMU self-test: the next 4 rejected launches and 1 barrier error are expected\n");
  std::vector<int> flag(2, 0);
  (void)cudaGetLastError();
  auto launch_ok = [&](auto kernel, size_t smem) {
    kemu::launch("smem_kernel", kernel, 2, 32, smem, nullptr)(flag.data());
    return cudaGetLastError() == cudaSuccess;
  };
  const long rejected0 = kemu::stats().rejected_launches;
  c.require(launch_ok(smem_kernel<0>, 48 * 1024), "48 KiB without opt-in must launch");
  c.require(flag[0] == 1 && flag[1] == 1, "shared memory must start as 0xFF bytes");
  c.require(!launch_ok(smem_kernel<1>, 48 * 1024 + 16), "48 KiB + 16 without opt-in must be rejected");
  c.require(cudaFuncSetAttribute(smem_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 * 1024) ==
                cudaSuccess, "opt-in to 96 KiB must succeed");
  c.require(launch_ok(smem_kernel<1>, 96 * 1024), "96 KiB after the opt-in must launch");
  c.require(!launch_ok(smem_kernel<1>, 96 * 1024 + 16), "above the opted-in size must be rejected");
  c.require(cudaFuncSetAttribute(smem_kernel<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024 + 1) ==
                cudaErrorInvalidValue, "opt-in above 227 KiB must fail");
  c.require(!launch_ok(smem_kernel<2>, 100 * 1024), "failed opt-in must leave the 48 KiB limit");
  c.require(cudaFuncSetAttribute(smem_kernel<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024) ==
                cudaSuccess, "opt-in to 227 KiB must succeed");
  c.require(launch_ok(smem_kernel<2>, 227 * 1024), "227 KiB after the opt-in must launch");
  kemu::launch("smem_kernel", smem_kernel<3>, 1, 1025, 0, nullptr)(flag.data());
  c.require(cudaGetLastError() != cudaSuccess, "1025 threads must be rejected");
  const long rejected = kemu::stats().rejected_launches - rejected0;
  c.require(rejected == 4, "4 launches rejected");

  const unsigned nb = 4, nt = 256;
  std::vector<float> out(nb * nt);
  kemu::launch("neighbour_kernel", neighbour_kernel, nb, nt, nt * sizeof(float), nullptr)(out.data(), true);
  bool right = true;
  for (unsigned i = 0; i < nb * nt; ++i) right = right && out[i] == static_cast<float>((i % nt + 1) % nt);
  c.require(right, "with the barrier every thread must read its neighbour's value");
  kemu::launch("neighbour_kernel", neighbour_kernel, nb, nt, nt * sizeof(float), nullptr)(out.data(), false);
  long stale = 0;
  for (float v : out) stale += std::isnan(v);
  c.require(stale > 0 && stale < static_cast<long>(nb * nt), "without the barrier some reads must see NaN");
  char b[64];
  std::snprintf(b, sizeof(b), "race: %ld of %u reads stale", stale, nb * nt);
  c.note(b);

  std::vector<int> o(8, 0);
  const long mism0 = kemu::stats().barrier_mismatches;
  kemu::launch("divergent_kernel", divergent_kernel, 1, 8, 0, nullptr)(o.data());
  c.require(kemu::stats().barrier_mismatches == mism0 + 1, "a skipped __syncthreads must be reported");
  // the expected rejections / mismatch of this self-test do not count against it
  c.s0.rejected_launches += rejected;
  c.s0.barrier_mismatches += kemu::stats().barrier_mismatches - mism0;
  std::fprintf(stderr, "KEMU self-test: done\n");
  c.finish();
}

// An input of a reference, its analytic gradient and the gradient's name.
struct GradientOf {
  std::vector<double>* input;
  const std::vector<double>* gradient;
  const char* name;
};

// The reference self-check: each analytic gradient against central differences (step h) of the scalar
// loss() (which reads the inputs), relative error <= tol; one Case titled `title`.
template <class Loss>
void check_gradients(const char* title, std::initializer_list<GradientOf> grads, Loss loss, double h,
                     double tol) {
  Case c(title);
  for (const GradientOf& g : grads) {
    std::vector<double>& x = *g.input;
    std::vector<double> fd(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double x0 = x[i];
      x[i] = x0 + h;
      const double lp = loss();
      x[i] = x0 - h;
      const double lm = loss();
      x[i] = x0;
      fd[i] = (lp - lm) / (2 * h);
    }
    long nans = 0;
    c.err(g.name, rel_err(fd, *g.gradient, nans), tol);
  }
  c.finish();
}


// The same data through the 16-byte path (base aligned) and the scalar fallback (base misaligned by one
// element), the second in another thread order: the outputs must agree bit for bit.
// run(why, offset) runs one case and returns all its outputs.
template <class In, class Run>
void aligned_vs_misaligned(Run run) {
  kemu::sched().rng ^= 0x5555;
  const auto a = run("pair: 16-byte path", 0);
  kemu::sched().rng ^= 0xAAAA;
  const auto b = run("pair: scalar fallback", 1);
  Case c(std::string(tname<In>()) + " pair: 16-byte vs scalar path (other thread order), same data");
  c.require(same_bits(a, b), "outputs differ bitwise");
  c.finish();
}

// A driver's run_case<In, Acc>: (why, shape, offset, expect, seed) -> all outputs of the case.
template <class Shape, class Expect>
using RunCase = std::vector<double> (*)(const std::string&, Shape, int, Expect, uint64_t);

// aligned_vs_misaligned for one shape of an op (seed 99); `aligned` and `misaligned`: what each run must show.
template <class In, class Shape, class Expect>
void pair_case(RunCase<Shape, Expect> run_case, Shape sh, Expect aligned = {}, Expect misaligned = {}) {
  aligned_vs_misaligned<In>([&](const char* why, int offset) {
    return run_case(why, sh, offset, offset == 0 ? aligned : misaligned, 99);
  });
}

// `count` cases titled "random", of the shapes draw(rng, limits...) takes from a generator seeded with `seed`; case
// i's data comes from seed * 1000 + i.
template <class Shape, class Expect, class Draw, class... Limits>
void run_random_cases(RunCase<Shape, Expect> run_case, int count, uint64_t seed, Draw draw, Limits... limits) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < count; ++i) run_case("random", draw(rng, limits...), 0, {}, seed * 1000 + i);
}

// One case of launcher calls with sizes the kernels do not take: body(c) makes the calls and requires
// their errors; none of them may launch a kernel.
template <class Body>
void unsupported_sizes(Body body) {
  Case c("unsupported sizes are rejected without a launch");
  body(c);
  c.require(c.delta(&kemu::Stats::launches) == 0, "no launch expected");
  c.finish();
}

// A driver's main: the emulator self-test, the reference's own check, the op's cases, the RESULT line;
// returns the exit code.
template <class Cases>
int run_driver(const char* op, void (*check_reference)(), Cases cases) {
  emulator_selftest();
  check_reference();
  cases();
  return report(op);
}

}  // namespace emu_test
