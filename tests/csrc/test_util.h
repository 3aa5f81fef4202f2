// Helpers shared by the C++ tests of tests/csrc/ (run by ctest): the pass/fail tally, the random
// seed, double <-> tensor conversions, the relative error against a reference and the check that a
// call raises a c10::Error naming what it should.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace trgnet_test {

inline int failures = 0;

inline void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// A generator with a fresh seed, printed so that a failing run can be repeated.
inline std::mt19937_64 seeded_rng() {
  const uint64_t seed = std::random_device{}();
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

}  // namespace trgnet_test
