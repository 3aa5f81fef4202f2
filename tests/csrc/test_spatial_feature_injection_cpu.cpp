// C++ test of the CPU kernels of trgnet::spatial_feature_injection (run by ctest).
//
// The forward is compared against a direct double-precision evaluation of the formula written here (per frame:
// the joint-major flattening of the group, conv_s, conv_fusion on [h; s], ff1, the erf GELU, dropout (the murmur3
// hash of the AttModule's stream 0 written out again, on u as an (N, C, T) tensor), ff2, residual, mask) with group
// contiguous, a channel slice of a wider tensor and permuted strides; every gradient of the backward against
// central differences of that evaluation along a random direction; grad_group contiguous whatever group's strides;
// float32 and bfloat16 against float64 on the same inputs; determinism across thread counts; the argument checks.
// Fresh random inputs each run (the seed is printed). Returns nonzero on failure.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "spatial_feature_injection.h"
#include "test_util.h"

namespace {

using namespace trgnet_test;  // tests/csrc/test_util.h

enum GroupLayout { kContiguous, kSlice, kPermuted };
constexpr int kInputs = 10;  // group, h, the 8 weights and biases
constexpr double kP = 0.3;

struct Problem {
  int64_t N, C, T, G, V;
  GroupLayout layout;
  bool masked, dropout;
  int64_t seed;
  // group (N, G, T, V) values, h and the 8 weights and biases: the differentiable inputs, in schema order
  std::vector<std::vector<double>> in;
  std::vector<double> mask, g;
  int64_t K() const { return G * V; }
};

std::vector<int64_t> input_shape(const Problem& p, int i) {
  const int64_t C = p.C;
  switch (i) {
    case 0: return {p.N, p.G, p.T, p.V};
    case 1: return {p.N, C, p.T};
    case 2: return {C, p.K(), 1};
    case 4: return {C, 2 * C, 1};
    case 6:
    case 8: return {C, C};
    default: return {C};
  }
}

Problem make_problem(std::mt19937_64& rng, int64_t N, int64_t C, int64_t T, int64_t G, int64_t V,
                     GroupLayout layout, bool masked, bool dropout) {
  Problem p{N, C, T, G, V, layout, masked, dropout, static_cast<int64_t>(rng()), {}, {}, {}};
  NormalFill fill{rng};
  p.in.resize(kInputs);
  const double fan[kInputs] = {1, 1, double(p.K()), double(p.K()), 2.0 * C, 2.0 * C, double(C), double(C),
                               double(C), double(C)};
  for (int i = 0; i < kInputs; ++i) fill(p.in[i], numel_of(input_shape(p, i)), i < 2 ? 1.0 : 1.0 / std::sqrt(fan[i]));
  fill(p.g, N * C * T);
  p.mask = random_frame_mask(rng, N * T);
  return p;
}

// ---- the direct evaluation ----------------------------------------------------------------------------------

std::vector<double> direct_forward(const Problem& p, const std::vector<std::vector<double>>& in) {
  const int64_t N = p.N, C = p.C, T = p.T, G = p.G, V = p.V, K = p.K();
  const auto &grp = in[0], &h = in[1], &Ws = in[2], &bs = in[3], &Wf = in[4], &bf = in[5], &W1 = in[6],
             &b1 = in[7], &W2 = in[8], &b2 = in[9];
  std::vector<double> out(N * C * T);
  std::vector<double> g(K), hs(2 * C), f(C), u(C);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t c = 0; c < G; ++c)
        for (int64_t v = 0; v < V; ++v) g[v * G + c] = grp[((n * G + c) * T + t) * V + v];
      for (int64_t c = 0; c < C; ++c) {
        hs[c] = h[(n * C + c) * T + t];
        double s = bs[c];
        for (int64_t j = 0; j < K; ++j) s += Ws[c * K + j] * g[j];
        hs[C + c] = s;
      }
      for (int64_t c = 0; c < C; ++c) {
        double s = bf[c];
        for (int64_t j = 0; j < 2 * C; ++j) s += Wf[c * 2 * C + j] * hs[j];
        f[c] = s;
      }
      for (int64_t c = 0; c < C; ++c) {
        double a = b1[c];
        for (int64_t j = 0; j < C; ++j) a += W1[c * C + j] * f[j];
        // dropout stream 0, on u as an (N, C, T) tensor
        u[c] = 0.5 * a * (1 + std::erf(a / std::sqrt(2.0))) *
               (p.dropout ? dropout_factor(p.seed, 0, (n * C + c) * T + t, kP) : 1.0);
      }
      const double m = p.masked ? p.mask[n * T + t] : 1.0;
      for (int64_t c = 0; c < C; ++c) {
        double y = b2[c];
        for (int64_t j = 0; j < C; ++j) y += W2[c * C + j] * u[j];
        out[(n * C + c) * T + t] = (y + hs[c]) * m;
      }
    }
  return out;
}

// ---- calls of the CPU kernels ----------------------------------------------------------------------------------

struct Call {
  std::vector<at::Tensor> t;  // group (in the problem's layout), h, 8 weights
  std::optional<at::Tensor> mask, seed;
};

at::Tensor group_tensor(const Problem& p, const std::vector<double>& values, at::ScalarType dtype) {
  const at::Tensor dense = to_tensor(values, {p.N, p.G, p.T, p.V}, dtype);
  if (p.layout == kSlice) {
    at::Tensor wide = at::zeros({p.N, 3 * p.G, p.T, p.V}, dense.options());
    wide.narrow(1, p.G, p.G).copy_(dense);
    return wide.narrow(1, p.G, p.G);
  }
  if (p.layout == kPermuted) return dense.permute({0, 3, 1, 2}).contiguous().permute({0, 2, 3, 1});  // (N, V, G, T)
  return dense;
}

Call make_call(const Problem& p, const std::vector<std::vector<double>>& in, at::ScalarType dtype) {
  Call c;
  c.t.push_back(group_tensor(p, in[0], dtype));
  for (int i = 1; i < kInputs; ++i) c.t.push_back(to_tensor(in[i], input_shape(p, i), dtype));
  if (p.masked) c.mask = to_tensor(p.mask, {p.N, 1, p.T}, dtype);
  if (p.dropout) c.seed = at::full({1}, p.seed, at::kLong);
  return c;
}

const char* kInputNames[kInputs] = {"group",       "h",          "conv_s_w", "conv_s_b", "fusion_w",
                                    "fusion_b",    "ff1_w",      "ff1_b",    "ff2_w",    "ff2_b"};

std::string describe(const Problem& p) {
  static const char* layouts[] = {"contiguous", "slice", "permuted"};
  return "N=" + std::to_string(p.N) + " C=" + std::to_string(p.C) + " T=" + std::to_string(p.T) + " G=" +
         std::to_string(p.G) + " V=" + std::to_string(p.V) + " group " + layouts[p.layout] +
         (p.masked ? " masked" : "") + (p.dropout ? " dropout" : "");
}

// The kernels on p's sizes and options: out; the 10 gradients in the order of Problem::in.
Kernels kernels(const Problem& p) {
  auto forward = [&p](const Inputs& in, at::ScalarType dtype) -> std::vector<at::Tensor> {
    const Call c = make_call(p, in, dtype);
    const auto& t = c.t;
    return {trgnet::spatial_feature_injection_forward_cpu(t[0], t[1], c.mask, t[2], t[3], t[4], t[5], t[6], t[7],
                                                          t[8], t[9], c.seed, p.dropout ? kP : 0.0)};
  };
  auto backward = [&p](const Inputs& in, at::ScalarType dtype, const at::Tensor& g,
                       const std::vector<at::Tensor>&) -> std::vector<at::Tensor> {
    const Call c = make_call(p, in, dtype);
    const auto& t = c.t;
    const auto r = trgnet::spatial_feature_injection_backward_cpu(g, t[0], t[1], c.mask, t[2], t[3], t[4], t[5],
                                                                  t[6], t[7], t[8], t[9], c.seed, p.dropout ? kP : 0.0);
    return {std::get<0>(r), std::get<1>(r), std::get<2>(r), std::get<3>(r), std::get<4>(r),
            std::get<5>(r), std::get<6>(r), std::get<7>(r), std::get<8>(r), std::get<9>(r)};
  };
  return {forward, backward};
}

// float64: the forward against the direct evaluation, every gradient against central differences along a random
// direction; float32 / bfloat16 against float64 on the same rounded inputs; grad_group contiguous.
void test_problem(const Problem& p, std::mt19937_64& rng) {
  const std::string name = describe(p);
  auto direct = [&](const Inputs& in) { return std::vector<std::vector<double>>{direct_forward(p, in)}; };
  const std::vector<at::Tensor> grads = check_fused_op(name, rng, kernels(p), p.in,
                                                       to_tensor(p.g, {p.N, p.C, p.T}, at::kDouble), kInputNames,
                                                       direct, {{1e-5, 1e-6, 1e-6}});
  expect(grads[0].is_contiguous() && grads[0].sizes() == at::IntArrayRef(input_shape(p, 0)),
         "grad_group contiguous (N, G, T, V): " + name);
}

// The same call with 1 and with 2 threads: bitwise-equal outputs and gradients.
void test_deterministic(std::mt19937_64& rng) {
  const Problem p = make_problem(rng, 3, 8, 150, 4, 5, kSlice, true, true);
  expect_deterministic_across_threads(describe(p), kernels(p), p.in, to_tensor(p.g, {p.N, p.C, p.T}, at::kFloat));
}

void test_argument_checks(std::mt19937_64& rng) {
  const Problem p = make_problem(rng, 1, 4, 5, 2, 3, kContiguous, false, false);
  const Call c = make_call(p, p.in, at::kFloat);
  auto call = [&](const Call& k, double dropout) {
    const auto& t = k.t;
    trgnet::spatial_feature_injection_forward_cpu(t[0], t[1], k.mask, t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9],
                                                  k.seed, dropout);
  };
  throws_naming([&] { call(c, 0.1); }, "dropout_seed", "dropout without a seed is rejected");
  throws_naming([&] { call(c, 1.0); }, "dropout", "dropout 1 is rejected");
  Call bad = c;
  bad.t[0] = at::zeros({1, 2, 4, 3}, at::kFloat);
  throws_naming([&] { call(bad, 0.0); }, "group", "a group of another T is rejected");
  bad = c;
  bad.t[2] = at::zeros({4, 5, 1}, at::kFloat);
  throws_naming([&] { call(bad, 0.0); }, "conv_s_weight", "conv_s_weight not (C, G V, 1) is rejected");
  bad = c;
  bad.t[4] = at::zeros({4, 4, 1}, at::kFloat);
  throws_naming([&] { call(bad, 0.0); }, "fusion_weight", "fusion_weight not (C, 2C, 1) is rejected");
  bad = c;
  bad.t[7] = at::zeros({4}, at::kDouble);
  throws_naming([&] { call(bad, 0.0); }, "ff1_bias", "a weight of another dtype is rejected");
  bad = c;
  bad.t[0] = c.t[0].to(at::kDouble);
  throws_naming([&] { call(bad, 0.0); }, "group", "a group of another dtype is rejected");
  bad = c;
  bad.t[1] = at::zeros({1, 5, 4}, at::kFloat).transpose(1, 2);
  throws_naming([&] { call(bad, 0.0); }, "contiguous", "a non-contiguous h is rejected");
  bad = c;
  bad.mask = at::ones({1, 1, 4}, at::kFloat);
  throws_naming([&] { call(bad, 0.0); }, "mask", "a mask of the wrong shape is rejected");
  const at::Tensor g = at::zeros({1, 4, 6}, at::kFloat);
  throws_naming(
      [&] {
        const auto& t = c.t;
        trgnet::spatial_feature_injection_backward_cpu(g, t[0], t[1], c.mask, t[2], t[3], t[4], t[5], t[6], t[7],
                                                       t[8], t[9], c.seed, 0.0);
      },
      "grad_out", "grad_out of the wrong shape is rejected");
}

}  // namespace

int main() {
  std::mt19937_64 rng = seeded_rng();
  struct Shape {
    int64_t N, C, T, G, V;
    GroupLayout layout;
    bool masked, dropout;
  };
  const Shape shapes[] = {
      {2, 4, 11, 2, 3, kContiguous, false, false}, {2, 6, 13, 2, 5, kSlice, true, true},
      {1, 8, 40, 4, 3, kPermuted, true, false},    {2, 12, 1, 3, 2, kSlice, false, true},
      {1, 5, 33, 1, 7, kPermuted, true, true},     {1, 3, 0, 2, 2, kContiguous, true, true},
  };
  for (const Shape& s : shapes)
    test_problem(make_problem(rng, s.N, s.C, s.T, s.G, s.V, s.layout, s.masked, s.dropout), rng);
  test_deterministic(rng);
  test_argument_checks(rng);
  return report();
}
