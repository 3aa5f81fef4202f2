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
  if (mask_kind == kZeroMask) {
    // no valid frame: mean 0, var 0, so x / sqrt(eps) is the normalised value; x at the scale of sqrt(eps) keeps it
    // O(1) as in the other problems (at 300 times that, central differences drown in the rounding of the outputs)
    p.mask.assign(N * T, 0.0);
    for (auto& v : p.in[0]) v *= std::sqrt(kEps);
  }
  if (mask_kind == kPadded) {
    p.mask = random_frame_mask(rng, N * T);
    if (N > 1)
      for (int64_t t = 0; t < T; ++t) p.mask[t] = 0.0;  // row 0 fully padded
    p.mask[(N - 1) * T] = 1.0;                          // at least one valid frame
  }
  return p;
}

// ---- the direct evaluation ----------------------------------------------------------------------------------

struct Direct {
  std::vector<double> out, mean, var;
  std::vector<double> pre;  // before the ReLU
};

Direct direct_forward(const Problem& p, const std::vector<std::vector<double>>& in) {
  const int64_t N = p.N, C = p.C, T = p.T, V = p.V;
  const auto &x = in[0], &r = in[1], &w = in[2], &b = in[3];
  const bool masked = p.mask_kind != kNoMask;
  double valid = 0;
  for (int64_t i = 0; i < N * T; ++i) valid += masked ? p.mask[i] : 1.0;
  const double count = std::max(1.0, valid * V);
  Direct d{std::vector<double>(p.numel()), std::vector<double>(C), std::vector<double>(C),
           std::vector<double>(p.numel())};
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
        d.pre[i] = (x[i] - mean) * invstd * w[c] + b[c] + (p.residual ? r[i] : 0.0);
        d.out[i] = std::max(d.pre[i], 0.0);
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

// The kernels on p's sizes and options: out, mean, var; the gradients in the order of Problem::in, the backward on
// the given forward results (out decides the ReLU's gradient).
Kernels kernels(const Problem& p) {
  return {[&p](const Inputs& in, at::ScalarType dtype) {
            const auto f = forward(make_call(p, in, dtype));
            return std::vector<at::Tensor>{std::get<0>(f), std::get<1>(f), std::get<2>(f)};
          },
          [&p](const Inputs& in, at::ScalarType dtype, const at::Tensor& g, const std::vector<at::Tensor>& outs) {
            const trgnet::BatchNormReluOutputs f{outs[0].to(dtype), outs[1].to(state_of(dtype)),
                                                 outs[2].to(state_of(dtype))};
            return backward(p, make_call(p, in, dtype), f, g);
          }};
}

std::string describe(const Problem& p) {
  static const char* masks[] = {"", " masked (row 0 padded)", " all-zero mask"};
  const trgnet::bnr::Plan plan = trgnet::bnr::make_plan(p.N, p.C, p.T, p.V);
  return "N=" + std::to_string(p.N) + " C=" + std::to_string(p.C) + " T=" + std::to_string(p.T) + " V=" +
         std::to_string(p.V) + (p.residual ? " residual" : "") + masks[p.mask_kind] + " (" +
         std::to_string(plan.slots) + " slot(s) of " + std::to_string(plan.per) + " piece(s), " +
         std::to_string(plan.pieces) + " pieces)";
}

// The central differences of steps h and 2h along normal directions (test_problem) move the pre-activation at
// position i of channel c by at most about 10 h (3 + invstd |w_c| + |xhat_i|); one within 10 times that of 0 (a ReLU
// kink) could be crossed and would spoil them: a few positions in the larger problems. Each such position's residual
// (which leaves the statistics alone), else its x, moves so that the pre-activation sits twice that gap from 0 on its
// side; a move of x shifts the statistics a little, so this repeats until no position is that close. The inputs stay
// the random draw everywhere else.
constexpr double kStep = 1e-6;

Problem off_kinks(Problem p) {
  const int64_t TV = p.T * p.V;
  for (int round = 0; round < 8; ++round) {
    const Direct d = direct_forward(p, p.in);
    int moved = 0;
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t c = 0; c < p.C; ++c) {
        const double invstd = 1.0 / std::sqrt(d.var[c] + kEps), w = p.in[2][c];
        for (int64_t tv = 0; tv < TV; ++tv) {
          const int64_t i = (n * p.C + c) * TV + tv;
          const double xhat = (p.in[0][i] - d.mean[c]) * invstd;
          const double gap = 100 * kStep * (3 + invstd * std::abs(w) + std::abs(xhat));
          if (std::abs(d.pre[i]) >= gap) continue;
          const double shift = (d.pre[i] >= 0 ? 2 : -2) * gap - d.pre[i];
          if (p.residual)
            p.in[1][i] += shift;
          else
            p.in[0][i] += shift / (invstd * w);
          ++moved;
        }
      }
    if (!moved) return p;
  }
  expect(false, "pre-activations moved off the ReLU kink: " + describe(p));
  return p;
}

// float64: the forward against the direct evaluation, every gradient against central differences along a random
// direction; float32 / bfloat16 against float64 on the same rounded inputs (the backward on the lower-precision
// forward's results, the yardstick on the same values); grad_residual's shape.
void test_problem(const Problem& p, std::mt19937_64& rng) {
  const std::string name = describe(p);
  auto direct = [&](const Inputs& in) {
    const Direct d = direct_forward(p, in);
    return std::vector<std::vector<double>>{d.out, d.mean, d.var};
  };
  // the inputs off the ReLU kinks (off_kinks); no residual, no grad_residual to check; weight and bias are in the
  // state dtype
  const CentralDifferences cd{kStep, 1e-6, 1e-5, [&](size_t i) { return p.in[i].empty(); }};
  const std::vector<at::Tensor> grads = check_fused_op(
      name, rng, kernels(p), p.in, to_tensor(p.g, {p.N, p.C, p.T, p.V}, at::kDouble), kInputNames, direct,
      {cd, "out, mean, var", {2, 3}});
  const std::vector<int64_t> residual_shape{p.N, p.C, p.T, p.V};
  expect(grads[1].sizes() == (p.residual ? at::IntArrayRef(residual_shape) : at::IntArrayRef{0}),
         "grad_residual (N, C, T, V) with residual_grad, else (0,): " + name);
}

// float32 over many positions per channel with a mean far from 0 (20, 1000 against a spread of 1.5): the chunked,
// shifted sums keep out, mean and var within 1e-5 of float64 on the same inputs.
void test_float32_accuracy(std::mt19937_64& rng) {
  for (double offset : {20.0, 1000.0}) {
    Problem p = make_problem(rng, 2, 3, 6000, 30, true, kPadded, offset);
    const Inputs rounded = rounded_to(p.in, at::kFloat, {2, 3});
    const Kernels k = kernels(p);
    const double e = worst_rel_err(k.forward(rounded, at::kFloat), k.forward(rounded, at::kDouble), 1e-300);
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
  expect_deterministic_across_threads(describe(p), kernels(p), p.in, to_tensor(p.g, {p.N, p.C, p.T, p.V}, at::kFloat));
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
  for (const Shape& s : shapes)
    test_problem(off_kinks(make_problem(rng, s.N, s.C, s.T, s.V, s.residual, s.mask)), rng);
  test_float32_accuracy(rng);
  test_empty();
  test_deterministic(rng);
  test_argument_checks(rng);
  return report();
}
