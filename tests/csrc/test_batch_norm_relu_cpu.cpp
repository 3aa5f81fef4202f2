// C++ test of the CPU kernels of trgnet::batch_norm_relu (run by ctest).
//
// The forward (out, mean, var) is compared against a direct double-precision evaluation of the formula written here
// (two-pass statistics over the valid frames, count = max(1, V sum m)), with and without residual and frame mask
// (padded frames, a fully padded row, an all-zero mask), T = 1, odd V, sizes with several slots per channel and
// uneven slots; every gradient of the backward against central differences of that evaluation along a random
// direction (the statistics recomputed, so the closed form's mean / var terms are checked); float32 and bfloat16
// against float64 on the same inputs; float32 over 360,000 positions a channel with a mean of 20 and 1000; x without
// elements; determinism across thread counts; the argument checks. Fresh random inputs each run (the seed is
// printed). Returns nonzero on failure.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "batch_norm_relu.cuh"
#include "batch_norm_relu.h"
#include "test_util.h"

namespace {

using namespace trgnet_test;  // tests/csrc/test_util.h

enum MaskKind { kNoMask, kPadded, kZeroMask };
constexpr double kEps = 1e-5;

struct Problem {
  int64_t N, C, T, V;
  bool residual;
  MaskKind mask_kind;
  // x, residual, weight, bias: the differentiable inputs, in schema order
  std::vector<std::vector<double>> in;
  std::vector<double> mask, g;
  int64_t numel() const { return N * C * T * V; }
};

const char* kInputNames[4] = {"x", "residual", "weight", "bias"};

Problem make_problem(std::mt19937_64& rng, int64_t N, int64_t C, int64_t T, int64_t V, bool residual,
                     MaskKind mask_kind, double x_offset = 0.5) {
  Problem p{N, C, T, V, residual, mask_kind, {}, {}, {}};
  NormalFill fill{rng};
  p.in.resize(4);
  fill(p.in[0], p.numel(), 1.5);
  for (auto& v : p.in[0]) v += x_offset;
  fill(p.in[1], residual ? p.numel() : 0);
  fill(p.in[2], C);
  fill(p.in[3], C, 0.5);
  fill(p.g, p.numel());
  p.mask.assign(N * T, 1.0);
  if (mask_kind == kZeroMask) p.mask.assign(N * T, 0.0);
  if (mask_kind == kPadded) {
    for (auto& m : p.mask) m = rng() % 4 ? 1.0 : 0.0;
    if (N > 1)
      for (int64_t t = 0; t < T; ++t) p.mask[t] = 0.0;  // row 0 fully padded
    p.mask[(N - 1) * T] = 1.0;                          // at least one valid frame
  }
  return p;
}

// ---- the direct evaluation ----------------------------------------------------------------------------------

struct Direct {
  std::vector<double> out, mean, var;
};

Direct direct_forward(const Problem& p, const std::vector<std::vector<double>>& in) {
  const int64_t N = p.N, C = p.C, T = p.T, V = p.V;
  const auto &x = in[0], &r = in[1], &w = in[2], &b = in[3];
  const bool masked = p.mask_kind != kNoMask;
  double valid = 0;
  for (int64_t i = 0; i < N * T; ++i) valid += masked ? p.mask[i] : 1.0;
  const double count = std::max(1.0, valid * V);
  Direct d{std::vector<double>(p.numel()), std::vector<double>(C), std::vector<double>(C)};
  for (int64_t c = 0; c < C; ++c) {
    double s = 0, q = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t v = 0; v < V; ++v) s += (masked ? p.mask[n * T + t] : 1.0) * x[((n * C + c) * T + t) * V + v];
    const double mean = s / count;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t v = 0; v < V; ++v) {
          const double e = x[((n * C + c) * T + t) * V + v] - mean;
          q += (masked ? p.mask[n * T + t] : 1.0) * e * e;
        }
    const double var = q / count, invstd = 1.0 / std::sqrt(var + kEps);
    d.mean[c] = mean;
    d.var[c] = var;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t tv = 0; tv < T * V; ++tv) {
        const int64_t i = (n * C + c) * T * V + tv;
        const double pre = (x[i] - mean) * invstd * w[c] + b[c] + (p.residual ? r[i] : 0.0);
        d.out[i] = std::max(pre, 0.0);
      }
  }
  return d;
}

// ---- calls of the CPU kernels ----------------------------------------------------------------------------------

struct Call {
  at::Tensor x, weight, bias;
  std::optional<at::Tensor> residual, mask;
};

at::ScalarType state_of(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

Call make_call(const Problem& p, const std::vector<std::vector<double>>& in, at::ScalarType dtype) {
  Call c;
  c.x = to_tensor(in[0], {p.N, p.C, p.T, p.V}, dtype);
  if (p.residual) c.residual = to_tensor(in[1], {p.N, p.C, p.T, p.V}, dtype);
  if (p.mask_kind != kNoMask) c.mask = to_tensor(p.mask, {p.N, 1, p.T, 1}, dtype);
  c.weight = to_tensor(in[2], {p.C}, state_of(dtype));
  c.bias = to_tensor(in[3], {p.C}, state_of(dtype));
  return c;
}

trgnet::BatchNormReluOutputs forward(const Call& c) {
  return trgnet::batch_norm_relu_forward_cpu(c.x, c.residual, c.mask, c.weight, c.bias, kEps);
}

// The gradients in the order of Problem::in (grad_residual empty without a residual).
std::vector<at::Tensor> backward(const Problem& p, const Call& c, const trgnet::BatchNormReluOutputs& f,
                                 const at::Tensor& g) {
  const auto r = trgnet::batch_norm_relu_backward_cpu(g, std::get<0>(f), c.x, c.mask, c.weight, std::get<1>(f),
                                                      std::get<2>(f), kEps, p.residual);
  return {std::get<0>(r), std::get<1>(r), std::get<2>(r), std::get<3>(r)};
}

std::string describe(const Problem& p) {
  static const char* masks[] = {"", " masked (row 0 padded)", " all-zero mask"};
  const trgnet::bnr::Plan plan = trgnet::bnr::make_plan(p.N, p.C, p.T, p.V);
  return "N=" + std::to_string(p.N) + " C=" + std::to_string(p.C) + " T=" + std::to_string(p.T) + " V=" +
         std::to_string(p.V) + (p.residual ? " residual" : "") + masks[p.mask_kind] + " (" +
         std::to_string(plan.slots) + " slot(s) of " + std::to_string(plan.per) + " piece(s), " +
         std::to_string(plan.pieces) + " pieces)";
}

// float64: the forward against the direct evaluation, every gradient against central differences along a random
// direction; float32 / bfloat16 against float64 on the same rounded inputs.
void test_problem(const Problem& p, std::mt19937_64& rng) {
  const std::string name = describe(p);
  const Call c64 = make_call(p, p.in, at::kDouble);
  const Direct ref = direct_forward(p, p.in);
  const auto f64 = forward(c64);
  const double ef = std::max({rel_err(to_vector(std::get<0>(f64)), ref.out, 1e-12),
                              rel_err(to_vector(std::get<1>(f64)), ref.mean, 1e-12),
                              rel_err(to_vector(std::get<2>(f64)), ref.var, 1e-12)});
  expect(ef < 1e-12, "forward f64 (out, mean, var) vs direct: " + name + " err " + fmt(ef));
  const at::Tensor g = to_tensor(p.g, {p.N, p.C, p.T, p.V}, at::kDouble);
  const std::vector<at::Tensor> grads = backward(p, c64, f64, g);
  expect(p.residual ? grads[1].sizes() == c64.x.sizes() : grads[1].sizes() == at::IntArrayRef{0},
         "grad_residual (N, C, T, V) with residual_grad, else (0,): " + name);
  NormalFill fill{rng};
  double worst = 0;
  std::string worst_name = "-";
  for (int i = 0; i < 4; ++i) {
    if (p.in[i].empty()) continue;  // no residual
    std::vector<double> dir;
    fill(dir, static_cast<int64_t>(p.in[i].size()));
    const double h = 1e-6;  // small: a ReLU kink inside [-h, h] spoils the central difference
    auto loss = [&](double s) {
      auto in = p.in;
      for (size_t k = 0; k < dir.size(); ++k) in[i][k] += s * dir[k];
      const auto out = direct_forward(p, in).out;
      double L = 0;
      for (size_t k = 0; k < out.size(); ++k) L += p.g[k] * out[k];
      return L;
    };
    const double fd = (loss(h) - loss(-h)) / (2 * h);
    const std::vector<double> gv = to_vector(grads[i]);
    double an = 0, scale = 0;
    for (size_t k = 0; k < dir.size(); ++k) {
      an += gv[k] * dir[k];
      scale += std::abs(gv[k] * dir[k]);
    }
    const double err = std::abs(an - fd) / std::max({std::abs(fd), 1e-3 * scale, 1e-6});
    if (err > worst) worst = err, worst_name = kInputNames[i];
  }
  expect(worst < 1e-5, "backward f64 vs central differences (every gradient): " + name + " worst " + fmt(worst) +
                           " (" + worst_name + ")");
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    // the float64 kernel on the same inputs rounded to dt is the yardstick: what remains is dt's arithmetic
    std::vector<std::vector<double>> rounded = p.in;
    for (int i = 0; i < 2; ++i)
      rounded[i] = to_vector(to_tensor(p.in[i], {static_cast<int64_t>(p.in[i].size())}, dt));
    const Call c = make_call(p, rounded, dt);
    const Call ref_call = make_call(p, rounded, at::kDouble);
    const std::string label = std::string(dt == at::kFloat ? "f32" : "bf16") + " vs f64 on the same inputs: ";
    const double tol = dt == at::kFloat ? 1e-5 : 2e-2;
    const auto f = forward(c);
    const auto fr = forward(ref_call);
    double e = 0;
    for (int k = 0; k < 3; ++k) {
      const at::Tensor a = k == 0 ? std::get<0>(f) : k == 1 ? std::get<1>(f) : std::get<2>(f);
      const at::Tensor b = k == 0 ? std::get<0>(fr) : k == 1 ? std::get<1>(fr) : std::get<2>(fr);
      e = std::max(e, rel_err(to_vector(a), to_vector(b), 1e-6));
    }
    expect(e < tol, "forward " + label + name + " err " + fmt(e));
    // the backward on dt's own forward results (out decides the ReLU's gradient), the yardstick on the same values
    const at::Tensor g_dt = g.to(dt);
    const std::vector<at::Tensor> gl = backward(p, c, f, g_dt);
    const trgnet::BatchNormReluOutputs f_as64{std::get<0>(f).to(at::kDouble), std::get<1>(f).to(at::kDouble),
                                              std::get<2>(f).to(at::kDouble)};
    const std::vector<at::Tensor> ref_grads = backward(p, ref_call, f_as64, g_dt.to(at::kDouble));
    double ge = 0;
    for (int i = 0; i < 4; ++i)
      if (ref_grads[i].numel())
        ge = std::max(ge, rel_err(to_vector(gl[i]), to_vector(ref_grads[i]), 1e-3 * std::sqrt(ref_grads[i].numel())));
    expect(ge < tol, "backward " + label + name + " worst " + fmt(ge));
  }
}

// float32 over many positions per channel with a mean far from 0 (20, 1000 against a spread of 1.5): the chunked,
// shifted sums keep out, mean and var within 1e-5 of float64 on the same inputs.
void test_float32_accuracy(std::mt19937_64& rng) {
  for (double offset : {20.0, 1000.0}) {
    Problem p = make_problem(rng, 2, 3, 6000, 30, true, kPadded, offset);
    std::vector<std::vector<double>> rounded = p.in;
    for (int i = 0; i < 2; ++i)
      rounded[i] = to_vector(to_tensor(p.in[i], {static_cast<int64_t>(p.in[i].size())}, at::kFloat));
    const auto f = forward(make_call(p, rounded, at::kFloat));
    const auto fr = forward(make_call(p, rounded, at::kDouble));
    const double e = std::max({rel_err(to_vector(std::get<0>(f)), to_vector(std::get<0>(fr))),
                               rel_err(to_vector(std::get<1>(f)), to_vector(std::get<1>(fr))),
                               rel_err(to_vector(std::get<2>(f)), to_vector(std::get<2>(fr)))});
    expect(e < 1e-5, "f32 vs f64, 360000 positions a channel, mean " + fmt(offset) + ": " + describe(p) + " err " +
                         fmt(e));
  }
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out;
  for (int64_t v : s) out += (out.empty() ? "(" : ", ") + std::to_string(v);
  return out + ")";
}

// x without elements: empty out, mean 0, var 0, zero parameter gradients.
void test_empty() {
  for (const auto& shape : {std::vector<int64_t>{0, 3, 4, 5}, std::vector<int64_t>{2, 3, 0, 5},
                            std::vector<int64_t>{2, 0, 4, 5}}) {
    const at::Tensor x = at::empty(shape, at::kFloat);
    const int64_t C = shape[1];
    const at::Tensor w = at::ones({C}, at::kFloat), b = at::ones({C}, at::kFloat);
    const auto f = trgnet::batch_norm_relu_forward_cpu(x, x, std::nullopt, w, b, kEps);
    const auto r = trgnet::batch_norm_relu_backward_cpu(x, std::get<0>(f), x, std::nullopt, w, std::get<1>(f),
                                                        std::get<2>(f), kEps, true);
    auto is_zero = [](const at::Tensor& t) { return t.abs().sum().item<double>() == 0; };
    const bool zero =
        is_zero(std::get<1>(f)) && is_zero(std::get<2>(f)) && is_zero(std::get<2>(r)) && is_zero(std::get<3>(r));
    expect(zero && std::get<0>(f).sizes() == x.sizes() && std::get<1>(f).sizes() == at::IntArrayRef{C} &&
               std::get<0>(r).sizes() == x.sizes() && std::get<1>(r).sizes() == x.sizes(),
           "x of shape " + shape_str(shape) + ": empty out, mean 0, var 0, zero parameter gradients");
  }
}

// The same call with 1 and with 2 threads: bitwise-equal outputs and gradients.
void test_deterministic(std::mt19937_64& rng) {
  const Problem p = make_problem(rng, 5, 7, 130, 25, true, kPadded);
  const Call c = make_call(p, p.in, at::kFloat);
  const at::Tensor g = to_tensor(p.g, {p.N, p.C, p.T, p.V}, at::kFloat);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto f1 = forward(c);
  const std::vector<at::Tensor> g1 = backward(p, c, f1, g);
  at::set_num_threads(std::max(2, threads));
  const auto f2 = forward(c);
  const std::vector<at::Tensor> g2 = backward(p, c, f2, g);
  at::set_num_threads(threads);
  bool same = at::equal(std::get<0>(f1), std::get<0>(f2)) && at::equal(std::get<1>(f1), std::get<1>(f2)) &&
              at::equal(std::get<2>(f1), std::get<2>(f2));
  for (int i = 0; i < 4; ++i) same = same && at::equal(g1[i], g2[i]);
  expect(same, "1 and 2 threads: bitwise-equal outputs and gradients: " + describe(p));
}

void test_argument_checks(std::mt19937_64& rng) {
  const Problem p = make_problem(rng, 2, 4, 5, 3, true, kPadded);
  const Call c = make_call(p, p.in, at::kFloat);
  auto call = [&](const Call& k, double eps) {
    trgnet::batch_norm_relu_forward_cpu(k.x, k.residual, k.mask, k.weight, k.bias, eps);
  };
  throws_naming([&] { call(c, 0.0); }, "'eps'", "eps 0 is rejected");
  throws_naming([&] { call(c, NAN); }, "'eps'", "eps NaN is rejected");
  Call bad = c;
  bad.x = at::zeros({2, 4, 15}, at::kFloat);
  throws_naming([&] { call(bad, kEps); }, "'x': expected a 4-D tensor", "a 3-D x is rejected");
  bad = c;
  bad.x = at::zeros({2, 4, 5, 3}, at::kInt);
  throws_naming([&] { call(bad, kEps); }, "'x': expected dtype float32", "an int x is rejected");
  bad = c;
  bad.x = at::zeros({2, 4, 3, 5}, at::kFloat).transpose(2, 3);
  throws_naming([&] { call(bad, kEps); }, "'x': expected a contiguous tensor", "a non-contiguous x is rejected");
  bad = c;
  bad.residual = at::zeros({2, 4, 5, 2}, at::kFloat);
  throws_naming([&] { call(bad, kEps); }, "'residual': expected shape (N, C, T, V) of x",
                "a residual of the wrong shape is rejected");
  bad = c;
  bad.residual = at::zeros({2, 4, 5, 3}, at::kDouble);
  throws_naming([&] { call(bad, kEps); }, "'residual': expected dtype", "a residual of another dtype is rejected");
  bad = c;
  bad.mask = at::ones({2, 1, 5, 3}, at::kFloat);
  throws_naming([&] { call(bad, kEps); }, "'frame_mask': expected shape (N, 1, T, 1)",
                "a frame_mask of the wrong shape is rejected");
  bad = c;
  bad.mask = at::ones({2, 1, 5, 1}, at::kBool);
  throws_naming([&] { call(bad, kEps); }, "a 0/1 mask in the dtype of x", "a bool frame_mask is rejected");
  bad = c;
  bad.weight = at::ones({5}, at::kFloat);
  throws_naming([&] { call(bad, kEps); }, "'weight': expected shape (C,)", "a weight of the wrong shape is rejected");
  const Call c16 = make_call(p, p.in, at::kBFloat16);
  bad = c16;
  bad.bias = at::ones({4}, at::kBFloat16);
  throws_naming([&] { call(bad, kEps); }, "the state dtype: float64 for float64 x, else float32",
                "a bf16 bias for bf16 x is rejected (state dtype float32)");
  const auto f = forward(c);
  const at::Tensor g = at::zeros({2, 4, 5, 3}, at::kFloat);
  auto bwd = [&](const at::Tensor& grad_out, const at::Tensor& mean, const at::Tensor& var, double eps) {
    trgnet::batch_norm_relu_backward_cpu(grad_out, std::get<0>(f), c.x, c.mask, c.weight, mean, var, eps, true);
  };
  throws_naming([&] { bwd(at::zeros({2, 4, 5, 4}, at::kFloat), std::get<1>(f), std::get<2>(f), kEps); },
                "'grad_out': expected shape", "grad_out of the wrong shape is rejected");
  throws_naming([&] { bwd(g, std::get<1>(f).to(at::kDouble), std::get<2>(f), kEps); }, "'mean': expected dtype",
                "a float64 mean for float32 x is rejected");
  throws_naming([&] { bwd(g, std::get<1>(f), at::ones({3}, at::kFloat), kEps); }, "'var': expected shape (C,)",
                "a var of the wrong shape is rejected");
  throws_naming([&] { bwd(g, std::get<1>(f), std::get<2>(f), -1.0); }, "'eps'", "backward: eps < 0 is rejected");
}

}  // namespace

int main() {
  std::mt19937_64 rng = seeded_rng();
  struct Shape {
    int64_t N, C, T, V;
    bool residual;
    MaskKind mask;
  };
  const Shape shapes[] = {
      {2, 3, 7, 17, false, kNoMask},  {2, 3, 7, 17, true, kNoMask},   {3, 4, 9, 25, true, kPadded},
      {3, 2, 1, 25, false, kPadded},  {2, 3, 1, 17, true, kNoMask},   {2, 3, 6, 5, true, kZeroMask},
      {1, 2, 5, 3, false, kZeroMask}, {21, 40, 3, 17, true, kPadded},  // 21 pieces: 11 slots of 2, the last of 1
      {3, 5, 100, 25, true, kPadded},                                   // rows of 2 pieces (2048 + 452)
  };
  for (const Shape& s : shapes) test_problem(make_problem(rng, s.N, s.C, s.T, s.V, s.residual, s.mask), rng);
  test_float32_accuracy(rng);
  test_empty();
  test_deterministic(rng);
  test_argument_checks(rng);
  return report();
}
