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
#include <ATen/Parallel.h>

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
int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t v : s) n *= v;
  return n;
}

Problem make_problem(std::mt19937_64& rng, int64_t B, int64_t C, int64_t T, int64_t dilation, Layout layout,
                     bool masked, bool dropout, int packed_sequences = 3) {
  Problem p{B, C, T, dilation, layout, masked, dropout, {}, static_cast<int64_t>(rng()), {}, {}, {}};
  NormalFill fill{rng};
  p.in.resize(5);
  fill(p.in[0], B * C * T);
  for (int i = 0; i < 4; ++i) fill(p.in[1 + i], numel(weight_shape(i, C)), i % 2 ? 0.2 : 0.6 / std::sqrt(C));
  fill(p.g, B * C * T);
  p.mask.resize(B * T);
  for (auto& m : p.mask) m = rng() % 4 ? 1.0 : 0.0;
  if (layout == kPadded) {
    p.cu = {0};
    for (int64_t b = 0; b < B; ++b) p.cu.push_back(p.cu.back() + static_cast<int32_t>(rng() % (T + 1)));
  } else if (layout == kPacked) {
    std::vector<int32_t> cuts{0, static_cast<int32_t>(T)};
    for (int i = 1; i < packed_sequences; ++i) cuts.push_back(static_cast<int32_t>(rng() % (T + 1)));
    std::sort(cuts.begin(), cuts.end());
    p.cu = cuts;
  }
  return p;
}

// ---- the direct evaluation ----------------------------------------------------------------------------------

uint32_t fmix(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  return h ^ (h >> 16);
}
// reference.dropout_keep_mask of stream 1 (the AttModule's module dropout), scaled: element i.
double dropout_factor(int64_t seed, int64_t i, double p) {
  const uint64_t bits = static_cast<uint64_t>(seed);
  const uint32_t key = fmix(fmix(static_cast<uint32_t>(bits >> 32) ^ 0x7F4A7C15u) ^ static_cast<uint32_t>(bits));
  const uint32_t h = fmix(fmix(static_cast<uint32_t>(i) + key) ^ key) >> 8;
  return h >= static_cast<uint32_t>(std::floor(p * (1 << 24))) ? 1.0 / (1.0 - p) : 0.0;
}

std::vector<double> direct_forward(const Problem& p, const std::vector<std::vector<double>>& in) {
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
      }
    for (int64_t f = 0; f < L; ++f) {
      const double m = p.masked ? p.mask[row * T + start + f] : 1.0;
      for (int64_t c = 0; c < C; ++c) {
        double z = bo[c];
        for (int64_t i = 0; i < C; ++i) z += Wo[c * C + i] * o[f * C + i];
        const int64_t i = (row * C + c) * T + start + f;
        out[i] = (x[i] + z * (p.dropout ? dropout_factor(p.seed, i, kP) : 1.0)) * m;
      }
    }
  }
  return out;
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

at::Tensor forward(const Problem& p, const Call& c) {
  const auto& t = c.t;
  return trgnet::dilated_residual_forward_cpu(t[0], c.mask, c.cu, t[1], t[2], t[3], t[4], c.seed, p.dilation,
                                              p.dropout ? kP : 0.0);
}

// The 5 gradients in the order of Problem::in.
std::vector<at::Tensor> backward(const Problem& p, const Call& c, const at::Tensor& g) {
  const auto& t = c.t;
  const auto r = trgnet::dilated_residual_backward_cpu(g, t[0], c.mask, c.cu, t[1], t[2], t[3], t[4], c.seed,
                                                       p.dilation, p.dropout ? kP : 0.0);
  return {std::get<0>(r), std::get<1>(r), std::get<2>(r), std::get<3>(r), std::get<4>(r)};
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

// float64: the forward against the direct evaluation, every gradient against central differences along a random
// direction; float32 / bfloat16 against float64 on the same rounded inputs.
void test_problem(const Problem& p, std::mt19937_64& rng) {
  const std::string name = describe(p);
  const Call c64 = make_call(p, p.in, at::kDouble);
  const std::vector<double> ref = direct_forward(p, p.in);
  const double ef = rel_err(to_vector(forward(p, c64)), ref, 1e-12);
  expect(ef < 1e-12, "forward f64 vs direct: " + name + " err " + fmt(ef));
  const at::Tensor g = to_tensor(p.g, {p.B, p.C, p.T}, at::kDouble);
  const std::vector<at::Tensor> grads = backward(p, c64, g);
  NormalFill fill{rng};
  double worst = 0;
  std::string worst_name = "-";
  for (int i = 0; i < 5; ++i) {
    std::vector<double> dir;
    fill(dir, static_cast<int64_t>(p.in[i].size()));
    const double h = 1e-6;  // small: a ReLU kink inside [-h, h] spoils the central difference
    auto loss = [&](double s) {
      auto in = p.in;
      for (size_t k = 0; k < dir.size(); ++k) in[i][k] += s * dir[k];
      const auto out = direct_forward(p, in);
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
    std::vector<std::vector<double>> rounded;
    for (const auto& v : p.in) rounded.push_back(to_vector(to_tensor(v, {static_cast<int64_t>(v.size())}, dt)));
    const at::Tensor g_dt = g.to(dt);
    const Call ref_call = make_call(p, rounded, at::kDouble);
    const at::Tensor ref_out = forward(p, ref_call);
    const std::vector<at::Tensor> ref_grads = backward(p, ref_call, g_dt.to(at::kDouble));
    const Call c = make_call(p, rounded, dt);
    const std::string label = std::string(dt == at::kFloat ? "f32" : "bf16") + " vs f64 on the same inputs: ";
    const double e = rel_err(to_vector(forward(p, c)), to_vector(ref_out), 1e-6);
    expect(e < (dt == at::kFloat ? 1e-5 : 2e-2), "forward " + label + name + " err " + fmt(e));
    const std::vector<at::Tensor> gl = backward(p, c, g_dt);
    double ge = 0;
    for (int i = 0; i < 5; ++i)
      ge = std::max(ge, rel_err(to_vector(gl[i]), to_vector(ref_grads[i]), 1e-3 * std::sqrt(ref_grads[i].numel())));
    expect(ge < (dt == at::kFloat ? 1e-5 : 2e-2), "backward " + label + name + " worst " + fmt(ge));
  }
}

// Frames outside every sequence: out and grad_x zero.
void test_outside_frames(std::mt19937_64& rng) {
  Problem p = make_problem(rng, 3, 4, 9, 2, kPadded, false, false);
  p.cu = {0, 3, 3, 10};  // lengths 3, 0, 7
  const Call c = make_call(p, p.in, at::kDouble);
  const at::Tensor out = forward(p, c);
  const std::vector<at::Tensor> grads = backward(p, c, to_tensor(p.g, {p.B, p.C, p.T}, at::kDouble));
  at::Tensor outside = at::ones({p.B, 1, p.T}, at::kBool);
  outside.index_put_({0, 0, at::indexing::Slice(0, 3)}, false);
  outside.index_put_({2, 0, at::indexing::Slice(0, 7)}, false);
  const at::Tensor sel = outside.expand_as(out);
  expect(out.masked_select(sel).abs().max().item<double>() == 0 &&
             grads[0].masked_select(sel).abs().max().item<double>() == 0 &&
             out.masked_select(sel.logical_not()).abs().max().item<double>() > 0,
         "frames outside every sequence: out, grad_x zero");
}

// The same call with 1 and with 2 threads: bitwise-equal outputs and gradients.
void test_deterministic(std::mt19937_64& rng) {
  const Problem p = make_problem(rng, 1, 8, 60, 3, kPacked, true, true, 7);
  const Call c = make_call(p, p.in, at::kFloat);
  const at::Tensor g = to_tensor(p.g, {p.B, p.C, p.T}, at::kFloat);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor out1 = forward(p, c);
  const std::vector<at::Tensor> g1 = backward(p, c, g);
  at::set_num_threads(std::max(2, threads));
  const at::Tensor out2 = forward(p, c);
  const std::vector<at::Tensor> g2 = backward(p, c, g);
  at::set_num_threads(threads);
  bool same = at::equal(out1, out2);
  for (int i = 0; i < 5; ++i) same = same && at::equal(g1[i], g2[i]);
  expect(same, "1 and 2 threads: bitwise-equal output and gradients");
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
  for (const Shape& s : shapes)
    test_problem(make_problem(rng, s.B, s.C, s.T, s.dilation, s.layout, s.masked, s.dropout), rng);
  test_outside_frames(rng);
  test_deterministic(rng);
  test_argument_checks(rng);
  return report();
}
