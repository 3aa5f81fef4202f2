// Helpers shared by the C++ tests of tests/csrc/ (run by ctest): the pass/fail tally, the random
// seed, double <-> tensor conversions, the relative error against a reference, the check that a
// call raises a c10::Error naming what it should, the dropout mask of the reference, and the checks
// every fused op runs: its gradients against central differences, float32 / bfloat16 against float64
// on the same rounded inputs, bitwise-equal results across thread counts.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace trgnet_test {

inline int failures = 0;

inline void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// A generator with a fresh seed, printed so that a failing run can be repeated: TRGNET_TEST_SEED=<seed> reruns it.
inline std::mt19937_64 seeded_rng() {
  const char* given = std::getenv("TRGNET_TEST_SEED");
  const uint64_t seed = given ? std::strtoull(given, nullptr, 10) : std::random_device{}();
  std::printf("seed %llu\n", (unsigned long long)seed);
  return std::mt19937_64(seed);
}

// The summary line; the exit code of the test (nonzero on failure).
inline int report() {
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}

// fill(x, n, scale): x resized to n entries drawn from N(0, scale^2), one normal stream per fill.
struct NormalFill {
  std::mt19937_64& rng;
  std::normal_distribution<double> normal{0.0, 1.0};
  void operator()(std::vector<double>& x, int64_t n, double scale = 1.0) {
    x.resize(n);
    for (auto& y : x) y = normal(rng) * scale;
  }
};

inline at::Tensor to_tensor(const std::vector<double>& x, at::IntArrayRef shape, at::ScalarType dtype) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kDouble));
  std::copy(x.begin(), x.end(), t.data_ptr<double>());
  return t.to(dtype);
}

inline std::vector<double> to_vector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// ||a - ref|| / max(||ref||, floor); a floor above 0 keeps noise on near-zero references (e.g.
// finite differences of gradients ~ eps) from counting as relative error.
inline double rel_err(const std::vector<double>& a, const std::vector<double>& ref, double floor = 1e-300) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), floor);
}

inline std::string fmt(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", x);
  return buf;
}

// expect: fn() raises a c10::Error whose message contains needle.
template <typename Fn>
void throws_naming(Fn fn, const std::string& needle, const std::string& what) {
  try {
    fn();
  } catch (const c10::Error& e) {
    const std::string msg = e.what();
    expect(msg.find(needle) != std::string::npos, what + " (message: " + msg.substr(0, msg.find('\n')) + ")");
    return;
  }
  expect(false, what + " (no error raised)");
}

// n frame-mask values: 1 (a valid frame) with probability 3/4, else 0.
inline std::vector<double> random_frame_mask(std::mt19937_64& rng, int64_t n) {
  std::vector<double> mask(n);
  for (auto& m : mask) m = rng() % 4 ? 1.0 : 0.0;
  return mask;
}

// cu_seqlens of B rows of T frames padded at their ends: random lengths 0 .. T.
inline std::vector<int32_t> padded_offsets(std::mt19937_64& rng, int64_t B, int64_t T) {
  std::vector<int32_t> cu(B + 1, 0);
  for (int64_t b = 0; b < B; ++b) cu[b + 1] = cu[b] + static_cast<int32_t>(rng() % (T + 1));
  return cu;
}

// The element count of a shape.
inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t v : shape) n *= v;
  return n;
}

// ---- the reference's dropout ---------------------------------------------------------------------------

// murmur3's finalizer, the hash of the ops' dropout.
inline uint32_t murmur_fmix(uint32_t h) {
  h = (h ^ (h >> 16)) * 0x85EBCA6Bu;
  h = (h ^ (h >> 13)) * 0xC2B2AE35u;
  return h ^ (h >> 16);
}

// reference.dropout_keep_mask written out again, scaled: element i of dropout stream 0 (the AttModule's attention
// dropout, SFI's) or 1 (the AttModule's module dropout, dilated_residual's).
inline double dropout_factor(int64_t seed, int stream, int64_t i, double p) {
  const uint64_t bits = static_cast<uint64_t>(seed);
  const uint32_t stream_key = stream ? 0x7F4A7C15u : 0x9E3779B9u;
  const uint32_t key =
      murmur_fmix(murmur_fmix(static_cast<uint32_t>(bits >> 32) ^ stream_key) ^ static_cast<uint32_t>(bits));
  const uint32_t h = murmur_fmix(murmur_fmix(static_cast<uint32_t>(i) + key) ^ key) >> 8;
  return h >= static_cast<uint32_t>(std::floor(p * (1 << 24))) ? 1.0 / (1.0 - p) : 0.0;
}

// ---- checks of a fused op's kernels ----------------------------------------------------------------------

// An op's differentiable inputs as flat float64 values, in schema order.
using Inputs = std::vector<std::vector<double>>;

// draw() again, up to 20 times, while near_a_kink(problem): a point where the function is not differentiable
// (a ReLU's or a clamp's switch) within reach of the central differences' steps would spoil them.
template <class Draw, class Near>
auto drawn_off_kinks(Draw draw, Near near_a_kink) {
  auto problem = draw();
  for (int i = 0; i < 20 && near_a_kink(problem); ++i) problem = draw();
  return problem;
}

// A directional derivative sum_k g_k d_k over one or more inputs (gradient g, direction d), and the size of its
// contributions sum_k |g_k d_k|.
struct Directional {
  double value = 0, size = 0;
  Directional& add(const std::vector<double>& g, const std::vector<double>& d) {
    for (size_t k = 0; k < g.size(); ++k) value += g[k] * d[k], size += std::abs(g[k] * d[k]);
    return *this;
  }
};

// The fourth-order central difference of loss(s) at 0 with step h (its truncation error far below the rounding
// error): the derivative along the direction loss moves the inputs.
template <class Loss>
double fourth_order_difference(Loss loss, double h) {
  return (8 * (loss(h) - loss(-h)) - (loss(2 * h) - loss(-2 * h))) / (12 * h);
}

// The error of `analytic` against the fourth-order central difference of loss_at(s) = L(inputs + s d) with step h,
// relative to the larger of the difference and the contributions' size (they can cancel to a derivative near 0,
// where the difference is the loss's rounding noise), at least 1e-8.
template <class Loss>
double central_difference_error(const Directional& analytic, Loss loss_at, double h) {
  const double fd = fourth_order_difference(loss_at, h);
  return std::abs(fd - analytic.value) / std::max({std::abs(fd), analytic.size, 1e-8});
}

// Settings of expect_gradients_match_central_differences.
struct CentralDifferences {
  double step;       // h of the fourth-order central difference (L(in ± h dir), L(in ± 2h dir))
  double floor;      // the smallest denominator of an error (where the derivative vanishes, fd is rounding noise)
  double tolerance;  // of the worst input's error
  std::function<bool(size_t)> skip = nullptr;  // inputs without a gradient to check
};

// Every gradient of the float64 backward (grads[i] of input i) against the central difference of
// L(in) = g . direct(in) along a random direction dir of that input: error |<grads[i], dir> - fd| /
// max(|fd|, 1e-3 sum |grads[i] dir|, floor). One check, on the worst input (named in the message).
template <class Direct>
void expect_gradients_match_central_differences(const std::string& name, std::mt19937_64& rng, const Inputs& in,
                                                const std::vector<double>& g, const std::vector<at::Tensor>& grads,
                                                const char* const input_names[], Direct direct,
                                                const CentralDifferences& cd) {
  NormalFill fill{rng};
  double worst = 0;
  std::string worst_name = "-";
  for (size_t i = 0; i < in.size(); ++i) {
    if (cd.skip && cd.skip(i)) continue;
    std::vector<double> dir;
    fill(dir, static_cast<int64_t>(in[i].size()));
    auto loss = [&](double s) {
      Inputs moved = in;
      for (size_t k = 0; k < dir.size(); ++k) moved[i][k] += s * dir[k];
      const std::vector<double> out = direct(moved);
      double L = 0;
      for (size_t k = 0; k < out.size(); ++k) L += g[k] * out[k];
      return L;
    };
    const double fd = fourth_order_difference(loss, cd.step);
    const std::vector<double> gv = to_vector(grads[i]);
    double an = 0, scale = 0;
    for (size_t k = 0; k < dir.size(); ++k) {
      an += gv[k] * dir[k];
      scale += std::abs(gv[k] * dir[k]);
    }
    const double err = std::abs(an - fd) / std::max({std::abs(fd), 1e-3 * scale, cd.floor});
    if (std::isnan(err) || err > worst) worst = err, worst_name = input_names[i];
  }
  expect(worst < cd.tolerance, "backward f64 vs central differences (every gradient): " + name + " worst " +
                                   fmt(worst) + " (" + worst_name + ")");
}

// The inputs rounded to dtype (those listed in `kept` left in float64: parameters in the state dtype).
inline Inputs rounded_to(const Inputs& in, at::ScalarType dtype, const std::vector<size_t>& kept = {}) {
  Inputs rounded = in;
  for (size_t i = 0; i < in.size(); ++i)
    if (std::find(kept.begin(), kept.end(), i) == kept.end())
      rounded[i] = to_vector(to_tensor(in[i], {static_cast<int64_t>(in[i].size())}, dtype));
  return rounded;
}

// The larger of two errors; NaN (a NaN output) once seen stays the worst.
inline double worse(double worst, double err) { return std::isnan(worst) || err <= worst ? worst : err; }

// The worst relative error of tensors a[k] against ref[k], each with the same floor.
inline double worst_rel_err(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& ref, double floor) {
  double worst = 0;
  for (size_t k = 0; k < ref.size(); ++k) worst = worse(worst, rel_err(to_vector(a[k]), to_vector(ref[k]), floor));
  return worst;
}

// The worst relative error of gradients against reference gradients, each with the floor 1e-3 sqrt(numel) (entries
// that are rounding noise around 0 must not dominate), or floors[i] where that is larger; gradients without elements
// have no error.
inline double worst_gradient_error(const std::vector<at::Tensor>& grads, const std::vector<at::Tensor>& ref,
                                   const std::vector<double>& floors = {}) {
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    if (ref[i].numel()) {
      const double floor = std::max(1e-3 * std::sqrt(ref[i].numel()), i < floors.size() ? floors[i] : 0.0);
      worst = worse(worst, rel_err(to_vector(grads[i]), to_vector(ref[i]), floor));
    }
  return worst;
}

// A fused op's CPU kernels on one problem. forward(in, dtype) -> the outputs (those the checks compare);
// backward(in, dtype, g, outs) -> the gradients of the inputs, given forward outputs `outs` (for an op whose
// backward takes the forward's results; the others ignore them).
struct Kernels {
  using Tensors = std::vector<at::Tensor>;
  std::function<Tensors(const Inputs&, at::ScalarType)> forward;
  std::function<Tensors(const Inputs&, at::ScalarType, const at::Tensor&, const Tensors&)> backward;
};

// The bound of the backward's worst error for a dtype, given the rounded inputs, the gradient of the outputs in
// that dtype, the float64 reference gradients and the gradients' floors (GradientFloors); printed with the error.
using BackwardBound = std::function<double(at::ScalarType, const Inputs&, const at::Tensor&,
                                           const std::vector<at::Tensor>&, const std::vector<double>&)>;

// Floors of the gradients' relative errors (worst_gradient_error), by input, given the inputs and the gradient of
// the outputs (float64): for a gradient that sums terms which can cancel, a floor on the scale of those terms.
using GradientFloors = std::function<std::vector<double>(const Inputs&, const at::Tensor&)>;

// float32 and bfloat16 against the float64 kernels on the same inputs rounded to their dtype (those in `kept` left in
// float64), so that what remains is the dtype's arithmetic: the forward's outputs (worst error, floor 1e-6) and every
// gradient (worst_gradient_error, with gradient_floors' floors where given), one check each, within 1e-5 (float32) /
// 2e-2 (bfloat16) or the bound backward_bound gives. Both backwards run on the forward outputs of the dtype under
// test.
inline void expect_dtypes_match_f64(const std::string& name, const Kernels& kernels, const Inputs& in,
                                    const at::Tensor& g, const std::vector<size_t>& kept = {},
                                    const BackwardBound& backward_bound = nullptr,
                                    const GradientFloors& gradient_floors = nullptr) {
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    const Inputs rounded = rounded_to(in, dt, kept);
    const std::string label = std::string(dt == at::kFloat ? "f32" : "bf16") + " vs f64 on the same inputs: ";
    const double tol = dt == at::kFloat ? 1e-5 : 2e-2;
    const std::vector<at::Tensor> outs = kernels.forward(rounded, dt);
    const double e = worst_rel_err(outs, kernels.forward(rounded, at::kDouble), 1e-6);
    expect(e < tol, "forward " + label + name + " err " + fmt(e));
    const at::Tensor g_dt = g.to(dt);
    const std::vector<at::Tensor> ref_grads = kernels.backward(rounded, at::kDouble, g_dt.to(at::kDouble), outs);
    const std::vector<double> floors =
        gradient_floors ? gradient_floors(rounded, g_dt.to(at::kDouble)) : std::vector<double>{};
    const double ge = worst_gradient_error(kernels.backward(rounded, dt, g_dt, outs), ref_grads, floors);
    if (!backward_bound) {
      expect(ge < tol, "backward " + label + name + " worst " + fmt(ge));
      continue;
    }
    const double bound = backward_bound(dt, rounded, g_dt, ref_grads, floors);
    expect(ge < bound, "backward " + label + name + " worst " + fmt(ge) + " (bound " + fmt(bound) + ")");
  }
}

// How check_fused_op judges an op.
struct FusedOpSettings {
  CentralDifferences central_differences;
  std::string outputs;              // the outputs compared, for the messages ("" for the op's one output)
  std::vector<size_t> kept_in_f64;  // inputs the kernels take in the state dtype whatever the dtype
  BackwardBound backward_bound;     // of the float32 / bfloat16 backward's error (nullptr: the fixed tolerance)
  GradientFloors gradient_floors;   // of its relative errors (nullptr: the default floor)
};

// The checks of a fused op's kernels on one problem, one expect each, in this order: the float64 forward's outputs
// against direct(in), the formula's outputs in the same order (worst relative error within 1e-12); every float64
// gradient against central differences of L = g . direct(in)[0] (expect_gradients_match_central_differences);
// float32 and bfloat16 against float64 (expect_dtypes_match_f64). Returns the float64 gradients.
template <class Direct>
std::vector<at::Tensor> check_fused_op(const std::string& name, std::mt19937_64& rng, const Kernels& kernels,
                                       const Inputs& in, const at::Tensor& g, const char* const input_names[],
                                       Direct direct, const FusedOpSettings& settings) {
  const std::vector<at::Tensor> out = kernels.forward(in, at::kDouble);
  const std::vector<std::vector<double>> ref = direct(in);
  double ef = 0;
  for (size_t k = 0; k < ref.size(); ++k) ef = worse(ef, rel_err(to_vector(out[k]), ref[k], 1e-12));
  const std::string outputs = settings.outputs.empty() ? "" : " (" + settings.outputs + ")";
  expect(ef < 1e-12, "forward f64" + outputs + " vs direct: " + name + " err " + fmt(ef));
  const std::vector<at::Tensor> grads = kernels.backward(in, at::kDouble, g, out);
  expect_gradients_match_central_differences(name, rng, in, to_vector(g), grads, input_names,
                                             [&](const Inputs& moved) { return direct(moved)[0]; },
                                             settings.central_differences);
  expect_dtypes_match_f64(name, kernels, in, g, settings.kept_in_f64, settings.backward_bound,
                          settings.gradient_floors);
  return grads;
}

// run() (-> tensors) once with each thread count: whether all runs return bitwise-equal tensors. The thread count
// is restored afterwards.
template <class Run>
bool bitwise_equal_across_threads(const std::vector<int>& thread_counts, Run run) {
  const int threads = at::get_num_threads();
  std::vector<std::vector<at::Tensor>> runs;
  for (int n : thread_counts) {
    at::set_num_threads(n);
    runs.push_back(run());
  }
  at::set_num_threads(threads);
  bool same = true;
  for (const auto& r : runs)
    for (size_t k = 0; k < r.size(); ++k) same = same && at::equal(r[k], runs[0][k]);
  return same;
}

// The kernels' forward and backward (on its outputs) in float32 with 1 thread and with 2 (or the default count, if
// larger): bitwise-equal outputs and gradients.
inline void expect_deterministic_across_threads(const std::string& name, const Kernels& kernels, const Inputs& in,
                                                const at::Tensor& g) {
  const bool same = bitwise_equal_across_threads({1, std::max(2, at::get_num_threads())}, [&] {
    std::vector<at::Tensor> results = kernels.forward(in, at::kFloat);
    const std::vector<at::Tensor> grads = kernels.backward(in, at::kFloat, g.to(at::kFloat), results);
    results.insert(results.end(), grads.begin(), grads.end());
    return results;
  });
  expect(same, "1 and 2 threads: bitwise-equal outputs and gradients: " + name);
}

}  // namespace trgnet_test
