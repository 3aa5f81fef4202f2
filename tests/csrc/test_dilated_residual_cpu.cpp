// C++ test of the CPU kernels of trgnet::dilated_residual (run by ctest).
//
// The forward is compared against a direct double-precision evaluation of the formula written here (per sequence:
// the dilated conv with zero padding at the sequence's ends, ReLU, conv_out, dropout (the murmur3 hash of the
// AttModule's stream 1 written out again), residual, mask), over the three sequence layouts with empty sequences,
// mask, dropout and dilations with T < dilation; every gradient of the backward against central differences of that
// evaluation along a random direction; float32 and bfloat16 against float64 on the same inputs; frames outside every
// sequence; determinism across thread counts; the argument checks. Fresh random inputs each run (the seed is
// printed). Returns nonzero on failure.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "dilated_residual.h"
#include "test_util.h"

namespace {

using namespace trgnet_test;  // tests/csrc/test_util.h

enum Layout { kRows, kPadded, kPacked };

struct Problem {
  int64_t B, C, T, dilation;
  Layout layout;
  bool masked, dropout;
  std::vector<int32_t> cu;
  int64_t seed;
  // x and the 4 weights and biases: the differentiable inputs, in schema order
  std::vector<std::vector<double>> in;
  std::vector<double> mask, g;
  int64_t N() const { return layout == kRows ? B : static_cast<int64_t>(cu.size()) - 1; }
};

constexpr double kP = 0.3;

std::vector<int64_t> weight_shape(int i, int64_t C) {
  if (i == 0) return {C, C, 3};
  if (i == 2) return {C, C, 1};
  return {C};
}

Problem make_problem(std::mt19937_64& rng, int64_t B, int64_t C, int64_t T, int64_t dilation, Layout layout,
                     bool masked, bool dropout, int packed_sequences = 3) {
  Problem p{B, C, T, dilation, layout, masked, dropout, {}, static_cast<int64_t>(rng()), {}, {}, {}};
  NormalFill fill{rng};
  p.in.resize(5);
  fill(p.in[0], B * C * T);
  for (int i = 0; i < 4; ++i) fill(p.in[1 + i], numel_of(weight_shape(i, C)), i % 2 ? 0.2 : 0.6 / std::sqrt(C));
  fill(p.g, B * C * T);
  p.mask = random_frame_mask(rng, B * T);
  if (layout == kPadded) {
    p.cu = padded_offsets(rng, B, T);
  } else if (layout == kPacked) {
    std::vector<int32_t> cuts{0, static_cast<int32_t>(T)};
    for (int i = 1; i < packed_sequences; ++i) cuts.push_back(static_cast<int32_t>(rng() % (T + 1)));
    std::sort(cuts.begin(), cuts.end());
    p.cu = cuts;
  }
  return p;
}

// ---- the direct evaluation ----------------------------------------------------------------------------------

// kink_gap, where given: the smallest |pre-activation| of the ReLU over the frames of every sequence.
std::vector<double> direct_forward(const Problem& p, const std::vector<std::vector<double>>& in,
                                   double* kink_gap = nullptr) {
  const int64_t B = p.B, C = p.C, T = p.T, dil = p.dilation;
  const auto& x = in[0];
  const auto &Wc = in[1], &bc = in[2], &Wo = in[3], &bo = in[4];
  std::vector<double> out(B * C * T, 0.0);
  for (int64_t n = 0; n < p.N(); ++n) {
    int64_t row = n, start = 0, L = T;
    if (p.layout == kPadded) L = p.cu[n + 1] - p.cu[n];
    if (p.layout == kPacked) row = 0, start = p.cu[n], L = p.cu[n + 1] - p.cu[n];
    auto X = [&](int64_t c, int64_t f) { return x[(row * C + c) * T + start + f]; };
    std::vector<double> o(L * C);
    for (int64_t f = 0; f < L; ++f)
      for (int64_t c = 0; c < C; ++c) {
        double s = bc[c];
        for (int k = 0; k < 3; ++k) {
          const int64_t tau = f + (k - 1) * dil;
          if (tau < 0 || tau >= L) continue;
          for (int64_t i = 0; i < C; ++i) s += Wc[(c * C + i) * 3 + k] * X(i, tau);
        }
        o[f * C + c] = std::max(s, 0.0);
        if (kink_gap) *kink_gap = std::min(*kink_gap, std::abs(s));
      }
    for (int64_t f = 0; f < L; ++f) {
      const double m = p.masked ? p.mask[row * T + start + f] : 1.0;
      for (int64_t c = 0; c < C; ++c) {
        double z = bo[c];
        for (int64_t i = 0; i < C; ++i) z += Wo[c * C + i] * o[f * C + i];
        const int64_t i = (row * C + c) * T + start + f;
        // dropout stream 1: the AttModule's module dropout
        out[i] = (x[i] + z * (p.dropout ? dropout_factor(p.seed, 1, i, kP) : 1.0)) * m;
      }
    }
  }
  return out;
}

// A pre-activation of the ReLU within 1e-3 of 0: the central differences' steps (h, 2h = 2e-6) move one by 6e-5 at
// most.
bool near_a_kink(const Problem& p) {
  double gap = INFINITY;
  direct_forward(p, p.in, &gap);
  return gap < 1e-3;
}

// ---- calls of the CPU kernels ----------------------------------------------------------------------------------

struct Call {
  std::vector<at::Tensor> t;  // x, 4 weights
  std::optional<at::Tensor> mask, cu, seed;
};

Call make_call(const Problem& p, const std::vector<std::vector<double>>& in, at::ScalarType dtype) {
  Call c;
  c.t.push_back(to_tensor(in[0], {p.B, p.C, p.T}, dtype));
  for (int i = 0; i < 4; ++i) c.t.push_back(to_tensor(in[1 + i], weight_shape(i, p.C), dtype));
  if (p.masked) c.mask = to_tensor(p.mask, {p.B, 1, p.T}, dtype);
  if (p.layout != kRows) c.cu = at::tensor(std::vector<int>(p.cu.begin(), p.cu.end()), at::kInt);
  if (p.dropout) c.seed = at::full({1}, p.seed, at::kLong);
  return c;
}

const char* kInputNames[5] = {"x", "conv_w", "conv_b", "conv_out_w", "conv_out_b"};

std::string describe(const Problem& p) {
  static const char* layouts[] = {"rows", "padded", "packed"};
  std::string cu;
  for (int32_t v : p.cu) cu += std::to_string(v) + " ";
  return "B=" + std::to_string(p.B) + " C=" + std::to_string(p.C) + " T=" + std::to_string(p.T) + " d=" +
         std::to_string(p.dilation) + " " + layouts[p.layout] + (cu.empty() ? "" : " cu=[" + cu + "]") +
         (p.masked ? " masked" : "") + (p.dropout ? " dropout" : "");
}

// The kernels on p's sizes and options: out; the 5 gradients in the order of Problem::in.
Kernels kernels(const Problem& p) {
  auto forward = [&p](const Inputs& in, at::ScalarType dtype) -> std::vector<at::Tensor> {
    const Call c = make_call(p, in, dtype);
    const auto& t = c.t;
    return {trgnet::dilated_residual_forward_cpu(t[0], c.mask, c.cu, t[1], t[2], t[3], t[4], c.seed, p.dilation,
                                                 p.dropout ? kP : 0.0)};
  };
  auto backward = [&p](const Inputs& in, at::ScalarType dtype, const at::Tensor& g,
                       const std::vector<at::Tensor>&) -> std::vector<at::Tensor> {
    const Call c = make_call(p, in, dtype);
    const auto& t = c.t;
    const auto r = trgnet::dilated_residual_backward_cpu(g, t[0], c.mask, c.cu, t[1], t[2], t[3], t[4], c.seed,
                                                         p.dilation, p.dropout ? kP : 0.0);
    return {std::get<0>(r), std::get<1>(r), std::get<2>(r), std::get<3>(r), std::get<4>(r)};
  };
  return {forward, backward};
}

// float64: the forward against the direct evaluation, every gradient against central differences along a random
// direction; float32 / bfloat16 against float64 on the same rounded inputs.
void test_problem(const Problem& p, std::mt19937_64& rng) {
  auto direct = [&](const Inputs& in) { return std::vector<std::vector<double>>{direct_forward(p, in)}; };
  // a small step, the problem off the ReLU kinks (main)
  check_fused_op(describe(p), rng, kernels(p), p.in, to_tensor(p.g, {p.B, p.C, p.T}, at::kDouble), kInputNames, direct,
                 {{1e-6, 1e-6, 1e-5}});
}

// Frames outside every sequence: out and grad_x zero.
void test_outside_frames(std::mt19937_64& rng) {
  Problem p = make_problem(rng, 3, 4, 9, 2, kPadded, false, false);
  p.cu = {0, 3, 3, 10};  // lengths 3, 0, 7
  const Kernels k = kernels(p);
  const at::Tensor out = k.forward(p.in, at::kDouble)[0];
  const at::Tensor grad_x = k.backward(p.in, at::kDouble, to_tensor(p.g, {p.B, p.C, p.T}, at::kDouble), {})[0];
  at::Tensor outside = at::ones({p.B, 1, p.T}, at::kBool);
  outside.index_put_({0, 0, at::indexing::Slice(0, 3)}, false);
  outside.index_put_({2, 0, at::indexing::Slice(0, 7)}, false);
  const at::Tensor sel = outside.expand_as(out);
  expect(out.masked_select(sel).abs().max().item<double>() == 0 &&
             grad_x.masked_select(sel).abs().max().item<double>() == 0 &&
             out.masked_select(sel.logical_not()).abs().max().item<double>() > 0,
         "frames outside every sequence: out, grad_x zero");
}

// The same call with 1 and with 2 threads: bitwise-equal outputs and gradients.
void test_deterministic(std::mt19937_64& rng) {
  const Problem p = make_problem(rng, 1, 8, 60, 3, kPacked, true, true, 7);
  expect_deterministic_across_threads(describe(p), kernels(p), p.in, to_tensor(p.g, {p.B, p.C, p.T}, at::kFloat));
}

void test_argument_checks(std::mt19937_64& rng) {
  const Problem p = make_problem(rng, 1, 4, 5, 1, kRows, false, false);
  const Call c = make_call(p, p.in, at::kFloat);
  auto call = [&](const Call& k, int64_t dilation, double dropout) {
    const auto& t = k.t;
    trgnet::dilated_residual_forward_cpu(t[0], k.mask, k.cu, t[1], t[2], t[3], t[4], k.seed, dilation, dropout);
  };
  throws_naming([&] { call(c, 0, 0.0); }, "dilation", "dilation 0 is rejected");
  throws_naming([&] { call(c, 1, 0.1); }, "dropout_seed", "dropout without a seed is rejected");
  throws_naming([&] { call(c, 1, 1.0); }, "dropout", "dropout 1 is rejected");
  Call bad = c;
  bad.cu = at::tensor(std::vector<int>{0, 1, 2, 5}, at::kInt);
  bad.t[0] = at::zeros({2, 4, 5}, at::kFloat);
  throws_naming([&] { call(bad, 1, 0.0); }, "cu_seqlens", "cu_seqlens with N != B and B != 1 is rejected");
  bad = c;
  bad.t[3] = at::zeros({4, 4}, at::kFloat);
  throws_naming([&] { call(bad, 1, 0.0); }, "conv_out_weight", "a weight of the wrong shape is rejected");
  bad = c;
  bad.t[2] = at::zeros({4}, at::kDouble);
  throws_naming([&] { call(bad, 1, 0.0); }, "conv_bias", "a weight of another dtype is rejected");
  bad = c;
  bad.mask = at::ones({1, 1, 4}, at::kFloat);
  throws_naming([&] { call(bad, 1, 0.0); }, "mask", "a mask of the wrong shape is rejected");
  const at::Tensor g = at::zeros({1, 4, 6}, at::kFloat);
  throws_naming(
      [&] {
        trgnet::dilated_residual_backward_cpu(g, c.t[0], c.mask, c.cu, c.t[1], c.t[2], c.t[3], c.t[4], c.seed, 1, 0.0);
      },
      "grad_out", "grad_out of the wrong shape is rejected");
}

}  // namespace

int main() {
  std::mt19937_64 rng = seeded_rng();
  struct Shape {
    int64_t B, C, T, dilation;
    Layout layout;
    bool masked, dropout;
  };
  const Shape shapes[] = {
      {2, 4, 11, 1, kRows, false, false},  {2, 6, 13, 2, kRows, true, true},    {3, 4, 10, 3, kPadded, true, true},
      {1, 8, 17, 2, kPacked, false, true}, {2, 4, 6, 512, kRows, true, false},  {1, 5, 9, 4, kPacked, true, false},
      {2, 2, 1, 1, kPadded, false, false}, {1, 12, 40, 64, kRows, true, true},  {1, 7, 30, 8, kPacked, true, true},
  };
  for (const Shape& s : shapes) {
    auto draw = [&] { return make_problem(rng, s.B, s.C, s.T, s.dilation, s.layout, s.masked, s.dropout); };
    test_problem(drawn_off_kinks(draw, near_a_kink), rng);
  }
  test_outside_frames(rng);
  test_deterministic(rng);
  test_argument_checks(rng);
  return report();
}
