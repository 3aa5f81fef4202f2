// C++ test of the CPU kernels of trgnet::att_module (run by ctest).
//
// The forward is compared against a direct double-precision evaluation of the formula written here (per sequence:
// conv + ReLU, InstanceNorm, Q/K/V, the linear attention as its O(T^2) weights w[l][s] = phi(Q_l) . phi(K_s),
// out-proj, dropout (the murmur3 hash written out again), mask, alpha-add, conv_out, residual), over the three
// sequence layouts with empty sequences, encoder / decoder, mask, dropout and dilations with T < dilation; every
// gradient of the backward against central differences of that evaluation along a random direction; float32 and
// bfloat16 against float64, within twice the error of plain PyTorch's float32 (the layer in ATen ops, differentiated
// by autograd); frames outside every sequence; the argument checks. Fresh random inputs each run (the seed is
// printed). Returns nonzero on failure.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "att_module.h"
#include "test_util.h"

namespace {

using namespace trgnet_test;  // tests/csrc/test_util.h

enum Layout { kRows, kPadded, kPacked };

struct Problem {
  int64_t B, C, T, H, dilation;
  Layout layout;
  bool decoder, masked, dropout;
  std::vector<int32_t> cu;
  int64_t seed;
  // x, values, 12 weights, alpha: the differentiable inputs, in schema order
  std::vector<std::vector<double>> in;
  std::vector<double> mask, g;
  int64_t N() const { return layout == kRows ? B : static_cast<int64_t>(cu.size()) - 1; }
};

constexpr double kP1 = 0.3, kP2 = 0.2;

std::vector<int64_t> weight_shape(int i, int64_t C) {
  if (i == 0) return {C, C, 3};
  if (i == 10) return {C, C, 1};
  if (i % 2 == 1) return {C};
  return {C, C};
}

Problem make_problem(std::mt19937_64& rng, int64_t B, int64_t C, int64_t T, int64_t H, int64_t dilation,
                     Layout layout, bool decoder, bool masked, bool dropout) {
  Problem p{B, C, T, H, dilation, layout, decoder, masked, dropout, {}, static_cast<int64_t>(rng()), {}, {}, {}};
  NormalFill fill{rng};
  p.in.resize(15);
  fill(p.in[0], B * C * T);
  fill(p.in[1], B * C * T);
  for (int i = 0; i < 12; ++i) fill(p.in[2 + i], numel_of(weight_shape(i, C)), i % 2 ? 0.2 : 0.5 / std::sqrt(C));
  p.in[14] = {0.7};
  fill(p.g, B * C * T);
  p.mask = random_frame_mask(rng, B * T);
  if (layout == kPadded) {
    p.cu = padded_offsets(rng, B, T);
  } else if (layout == kPacked) {
    p.cu = {0, static_cast<int32_t>(rng() % (T + 1)), 0, static_cast<int32_t>(T)};
    p.cu[2] = p.cu[1] + static_cast<int32_t>(rng() % (T - p.cu[1] + 1));
  }
  return p;
}

// ---- the direct evaluation ----------------------------------------------------------------------------------

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// kink_gap, where given: the smallest |pre-activation| of the first ReLU over the frames of every sequence.
std::vector<double> direct_forward(const Problem& p, const std::vector<std::vector<double>>& in,
                                   double* kink_gap = nullptr) {
  const int64_t B = p.B, C = p.C, T = p.T, D = C / p.H, dil = p.dilation;
  const auto& x = in[0];
  const auto& W = in;  // W[2 + i]: weight i
  const double alpha = in[14][0];
  std::vector<double> out(B * C * T, 0.0);
  for (int64_t n = 0; n < p.N(); ++n) {
    int64_t row = n, start = 0, L = T;
    if (p.layout == kPadded) L = p.cu[n + 1] - p.cu[n];
    if (p.layout == kPacked) row = 0, start = p.cu[n], L = p.cu[n + 1] - p.cu[n];
    auto X = [&](const std::vector<double>& t, int64_t c, int64_t f) { return t[(row * C + c) * T + start + f]; };
    auto lin = [&](int i, const std::vector<double>& v, int64_t f, int64_t o) {
      double a = W[3 + i][o];
      for (int64_t k = 0; k < C; ++k) a += W[2 + i][o * C + k] * v[f * C + k];
      return a;
    };
    std::vector<double> o(L * C), q(L * C), vin(L * C), Q(L * C), K(L * C), V(L * C), a(L * C), u(L * C);
    for (int64_t f = 0; f < L; ++f)
      for (int64_t c = 0; c < C; ++c) {
        double s = W[3][c];
        for (int64_t i = 0; i < C; ++i)
          for (int k = 0; k < 3; ++k) {
            const int64_t tau = f + (k - 1) * dil;
            if (tau >= 0 && tau < L) s += W[2][(c * C + i) * 3 + k] * X(x, i, tau);
          }
        o[f * C + c] = std::max(s, 0.0);
        if (kink_gap) *kink_gap = std::min(*kink_gap, std::abs(s));
      }
    for (int64_t c = 0; c < C; ++c) {
      double mean = 0, var = 0;
      for (int64_t f = 0; f < L; ++f) mean += o[f * C + c] / L;
      for (int64_t f = 0; f < L; ++f) var += (o[f * C + c] - mean) * (o[f * C + c] - mean) / L;
      for (int64_t f = 0; f < L; ++f) {
        q[f * C + c] = (o[f * C + c] - mean) / std::sqrt(var + 1e-5);
        vin[f * C + c] = p.decoder ? X(in[1], c, f) : 0.0;
      }
    }
    if (!p.decoder) vin = q;
    for (int64_t f = 0; f < L; ++f)
      for (int64_t c = 0; c < C; ++c) {
        Q[f * C + c] = sig(lin(2, q, f, c));
        K[f * C + c] = sig(lin(4, q, f, c));
        V[f * C + c] = lin(6, vin, f, c);
      }
    for (int64_t l = 0; l < L; ++l)
      for (int64_t h = 0; h < p.H; ++h) {
        std::vector<double> num(D, 0.0);
        double den = 0;
        for (int64_t d = 0; d < D; ++d) den += 1e-6 * Q[l * C + h * D + d];
        for (int64_t s = 0; s < L; ++s) {
          double w = 0;
          for (int64_t d = 0; d < D; ++d) w += Q[l * C + h * D + d] * K[s * C + h * D + d];
          den += w;
          for (int64_t e = 0; e < D; ++e) num[e] += w * V[s * C + h * D + e];
        }
        for (int64_t e = 0; e < D; ++e) a[l * C + h * D + e] = num[e] / den;
      }
    for (int64_t f = 0; f < L; ++f) {
      const double m = p.masked ? p.mask[row * T + start + f] : 1.0;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = (row * C + c) * T + start + f;
        const double r1 = p.dropout ? dropout_factor(p.seed, 0, i, kP1) : 1.0;
        u[f * C + c] = alpha * lin(8, a, f, c) * r1 * m + o[f * C + c];
      }
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = (row * C + c) * T + start + f;
        const double r2 = p.dropout ? dropout_factor(p.seed, 1, i, kP2) : 1.0;
        out[i] = (x[i] + lin(10, u, f, c) * r2) * m;
      }
    }
  }
  return out;
}

// A pre-activation of the ReLU within 3e-3 of 0: the central differences' steps (h, 2h = 2e-5) move one by 6e-4 at
// most.
bool near_a_kink(const Problem& p) {
  double gap = INFINITY;
  direct_forward(p, p.in, &gap);
  return gap < 3e-3;
}

// ---- calls of the CPU kernels ----------------------------------------------------------------------------------

struct Call {
  std::vector<at::Tensor> t;  // x, values, 12 weights, alpha
  std::optional<at::Tensor> values, mask, cu, seed;
};

Call make_call(const Problem& p, const std::vector<std::vector<double>>& in, at::ScalarType dtype) {
  Call c;
  const at::ScalarType state = dtype == at::kDouble ? at::kDouble : at::kFloat;
  c.t.push_back(to_tensor(in[0], {p.B, p.C, p.T}, dtype));
  c.t.push_back(to_tensor(in[1], {p.B, p.C, p.T}, dtype));
  for (int i = 0; i < 12; ++i) c.t.push_back(to_tensor(in[2 + i], weight_shape(i, p.C), dtype));
  c.t.push_back(to_tensor(in[14], {}, state));
  if (p.decoder) c.values = c.t[1];
  if (p.masked) c.mask = to_tensor(p.mask, {p.B, 1, p.T}, dtype);
  if (p.layout != kRows) c.cu = at::tensor(std::vector<int>(p.cu.begin(), p.cu.end()), at::kInt);
  if (p.dropout) c.seed = at::full({1}, p.seed, at::kLong);
  return c;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const Problem& p, const Call& c) {
  const auto& t = c.t;
  return trgnet::att_module_forward_cpu(t[0], c.values, c.mask, c.cu, t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9],
                                        t[10], t[11], t[12], t[13], t[14], c.seed, p.dilation, p.H, 1e-5, 1e-6,
                                        p.dropout ? kP1 : 0.0, p.dropout ? kP2 : 0.0);
}

// The 15 gradients in the order of Problem::in (grad_values zeros in encoder mode).
std::vector<at::Tensor> backward(const Problem& p, const Inputs& in, at::ScalarType dtype, const at::Tensor& g) {
  const Call c = make_call(p, in, dtype);
  const auto& t = c.t;
  const auto [out, stats, kv, ks] = forward(p, c);
  const auto r = trgnet::att_module_backward_cpu(g, t[0], c.values, c.mask, c.cu, t[2], t[3], t[4], t[5], t[6], t[7],
                                                 t[8], t[9], t[10], t[11], t[12], t[13], t[14], c.seed, stats, kv, ks,
                                                 p.dilation, p.H, 1e-5, 1e-6, p.dropout ? kP1 : 0.0,
                                                 p.dropout ? kP2 : 0.0);
  std::vector<at::Tensor> grads{std::get<0>(r), p.decoder ? std::get<1>(r) : at::zeros_like(t[1]), std::get<2>(r),
                                std::get<3>(r), std::get<4>(r), std::get<5>(r), std::get<6>(r), std::get<7>(r),
                                std::get<8>(r), std::get<9>(r), std::get<10>(r), std::get<11>(r), std::get<12>(r),
                                std::get<13>(r), std::get<14>(r)};
  return grads;
}

// The kernels on p's sizes and options: out; the 15 gradients.
Kernels kernels(const Problem& p) {
  return {[&p](const Inputs& in, at::ScalarType dtype) {
            return std::vector<at::Tensor>{std::get<0>(forward(p, make_call(p, in, dtype)))};
          },
          [&p](const Inputs& in, at::ScalarType dtype, const at::Tensor& g, const std::vector<at::Tensor>&) {
            return backward(p, in, dtype, g);
          }};
}

const char* kInputNames[15] = {"x", "values", "conv_w", "conv_b", "query_w", "query_b", "key_w", "key_b",
                               "value_w", "value_b", "out_w", "out_b", "conv_out_w", "conv_out_b", "alpha"};

std::string describe(const Problem& p) {
  static const char* layouts[] = {"rows", "padded", "packed"};
  std::string cu;
  for (int32_t v : p.cu) cu += std::to_string(v) + " ";
  return "B=" + std::to_string(p.B) + " C=" + std::to_string(p.C) + " T=" + std::to_string(p.T) + " H=" +
         std::to_string(p.H) + " d=" + std::to_string(p.dilation) + " " + layouts[p.layout] +
         (cu.empty() ? "" : " cu=[" + cu + "]") + (p.decoder ? " decoder" : " encoder") + (p.masked ? " masked" : "") +
         (p.dropout ? " dropout" : "");
}

// ---- plain PyTorch (ATen ops, autograd) ------------------------------------------------------------------------

// The layer in ATen ops of `dtype` (the formula of direct_forward, a sequence at a time), differentiated by
// autograd: the 15 gradients of L = g . out in the order of Problem::in (grad_values zeros in encoder mode), as
// float64 tensors. In float32, the yardstick of the float32 / bfloat16 kernels: plain PyTorch's own error.
std::vector<at::Tensor> aten_gradients(const Problem& p, const Inputs& in, at::ScalarType dtype, const at::Tensor& g) {
  using at::indexing::Slice;
  const int64_t C = p.C, T = p.T, D = C / p.H;
  std::vector<at::Tensor> leaves;
  for (size_t i = 0; i < in.size(); ++i) {
    const std::vector<int64_t> shape = i < 2 ? std::vector<int64_t>{p.B, C, T}
                                             : i < 14 ? weight_shape(static_cast<int>(i) - 2, C)
                                                      : std::vector<int64_t>{};
    leaves.push_back(to_tensor(in[i], shape, dtype).set_requires_grad(true));
  }
  const at::Tensor &x = leaves[0], &values = leaves[1], &alpha = leaves[14];
  auto W = [&](int i) { return leaves[2 + i]; };
  std::vector<double> keep1(p.B * C * T, 1.0), keep2(p.B * C * T, 1.0);
  if (p.dropout)
    for (int64_t i = 0; i < p.B * C * T; ++i) keep1[i] = dropout_factor(p.seed, 0, i, kP1),
                                              keep2[i] = dropout_factor(p.seed, 1, i, kP2);
  const at::Tensor r1 = to_tensor(keep1, {p.B, C, T}, dtype), r2 = to_tensor(keep2, {p.B, C, T}, dtype);
  const at::Tensor mask = p.masked ? to_tensor(p.mask, {p.B, 1, T}, dtype) : at::ones({p.B, 1, T}, dtype);
  at::Tensor loss = at::zeros({}, dtype);
  for (int64_t n = 0; n < p.N(); ++n) {
    int64_t row = n, start = 0, L = T;
    if (p.layout == kPadded) L = p.cu[n + 1] - p.cu[n];
    if (p.layout == kPacked) row = 0, start = p.cu[n], L = p.cu[n + 1] - p.cu[n];
    if (L == 0) continue;
    auto part = [&](const at::Tensor& t) { return t.index({row, Slice(), Slice(start, start + L)}); };  // (., L)
    auto lin = [&](int i, const at::Tensor& v) { return at::matmul(W(i), v) + W(i + 1).unsqueeze(1); };
    const at::Tensor xs = part(x);
    const at::Tensor o = at::relu(at::conv1d(xs.unsqueeze(0), W(0), W(1), 1, p.dilation, p.dilation).squeeze(0));
    const at::Tensor centred = o - o.mean(1, true);
    const at::Tensor q = centred / at::sqrt(centred.square().mean(1, true) + 1e-5);
    const at::Tensor Q = at::sigmoid(lin(2, q)), K = at::sigmoid(lin(4, q));
    const at::Tensor V = lin(6, p.decoder ? part(values) : q);
    std::vector<at::Tensor> heads;
    for (int64_t h = 0; h < p.H; ++h) {
      const at::Tensor Qh = Q.narrow(0, h * D, D), Kh = K.narrow(0, h * D, D), Vh = V.narrow(0, h * D, D);
      const at::Tensor w = at::matmul(Qh.t(), Kh);  // (L, L): w[l][s]
      const at::Tensor den = 1e-6 * Qh.sum(0) + w.sum(1);
      heads.push_back(at::matmul(Vh, w.t()) / den);
    }
    const at::Tensor m = part(mask);
    const at::Tensor u = alpha * lin(8, at::cat(heads, 0)) * part(r1) * m + o;
    const at::Tensor out = (xs + (at::matmul(W(10).squeeze(2), u) + W(11).unsqueeze(1)) * part(r2)) * m;
    loss = loss + (out * part(g.to(dtype))).sum();
  }
  if (loss.requires_grad()) loss.backward();  // not when every sequence is empty
  std::vector<at::Tensor> grads;
  for (const at::Tensor& leaf : leaves)
    grads.push_back(leaf.grad().defined() ? leaf.grad().to(at::kDouble) : at::zeros_like(leaf, at::kDouble));
  return grads;
}

// float64: the forward against the direct evaluation, every gradient against central differences along a random
// direction; float32 / bfloat16 against float64, held to twice the error of plain PyTorch in float32 on the same
// (rounded) inputs (aten_gradients, itself checked against the float64 kernels; the kernels compute in float32 for
// both dtypes) or the fixed bound, whichever is larger: InstanceNorm over a 2-frame sequence whose frames nearly
// agree makes any float32 evaluation of it far from float64 (the parity rule of docs/architecture.md#parity).
void test_problem(const Problem& p, std::mt19937_64& rng) {
  const Kernels k = kernels(p);
  const at::Tensor g = to_tensor(p.g, {p.B, p.C, p.T}, at::kDouble);
  const double e64 =
      worst_gradient_error(aten_gradients(p, p.in, at::kDouble, g), k.backward(p.in, at::kDouble, g, {}));
  expect(e64 < 1e-10, "plain PyTorch float64 vs the kernels: " + describe(p) + " worst " + fmt(e64));
  auto backward_bound = [&](at::ScalarType dt, const Inputs& rounded, const at::Tensor& g_dt,
                            const std::vector<at::Tensor>& ref_grads, const std::vector<double>& floors) {
    const double plain = worst_gradient_error(aten_gradients(p, rounded, at::kFloat, g_dt), ref_grads, floors);
    return std::max(dt == at::kFloat ? 1e-4 : 5e-2, 2 * plain);
  };
  // alpha's gradient is one sum over every frame of the products g_u[t] . p[t] (u = alpha p + o), which can cancel
  // to far below them: its floor is a quarter of their root-sum-square (the rule of gradient_error_floors in
  // trgnet_fast/ops/att_module/reference.py), each product the float64 backward's alpha gradient with g kept at
  // frame t (the output at a frame depends on u at that frame alone)
  auto gradient_floors = [&](const Inputs& in, const at::Tensor& g64) {
    double squares = 0;
    for (int64_t b = 0; b < p.B; ++b)
      for (int64_t t = 0; t < p.T; ++t) {
        at::Tensor one_frame = at::zeros_like(g64);
        one_frame.index_put_({b, at::indexing::Slice(), t}, g64.index({b, at::indexing::Slice(), t}));
        const double product = k.backward(in, at::kDouble, one_frame, {})[14].item<double>();
        squares += product * product;
      }
    std::vector<double> floors(in.size(), 0.0);
    floors[14] = 0.25 * std::sqrt(squares);
    return floors;
  };
  // the problem off the ReLU kinks (main); the floor 1e-4 for derivatives that vanish (the key gradients of
  // one-frame sequences are O(attention_eps)), whose central differences are rounding noise of the loss (O(10):
  // about 1e-9 at this step); no grad_values in encoder mode
  const CentralDifferences cd{1e-5, 1e-4, 1e-4, [&](size_t i) { return i == 1 && !p.decoder; }};
  // alpha (input 14) is in the state dtype
  check_fused_op(describe(p), rng, k, p.in, to_tensor(p.g, {p.B, p.C, p.T}, at::kDouble), kInputNames,
                 [&](const Inputs& in) { return std::vector<std::vector<double>>{direct_forward(p, in)}; },
                 {cd, "", {14}, backward_bound, gradient_floors});
}

// Frames outside every sequence: out and grad_x zero.
void test_outside_frames(std::mt19937_64& rng) {
  Problem p = make_problem(rng, 2, 4, 9, 2, 2, kPadded, true, false, false);
  p.cu = {0, 3, 3};  // lengths 3 and 0
  const at::Tensor out = std::get<0>(forward(p, make_call(p, p.in, at::kDouble)));
  const std::vector<at::Tensor> grads = backward(p, p.in, at::kDouble, to_tensor(p.g, {p.B, p.C, p.T}, at::kDouble));
  at::Tensor outside = at::ones({p.B, 1, p.T}, at::kBool);
  outside.index_put_({0, 0, at::indexing::Slice(0, 3)}, false);
  expect(out.masked_select(outside.expand_as(out)).abs().max().item<double>() == 0 &&
             grads[0].masked_select(outside.expand_as(out)).abs().max().item<double>() == 0 &&
             grads[1].masked_select(outside.expand_as(out)).abs().max().item<double>() == 0,
         "frames outside every sequence: out, grad_x, grad_values zero");
}

void test_argument_checks(std::mt19937_64& rng) {
  const Problem p = make_problem(rng, 1, 4, 5, 2, 1, kRows, false, false, false);
  Call c = make_call(p, p.in, at::kFloat);
  auto call = [&](const Call& k, int64_t heads, double dropout) {
    const auto& t = k.t;
    trgnet::att_module_forward_cpu(t[0], k.values, k.mask, k.cu, t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9],
                                   t[10], t[11], t[12], t[13], t[14], k.seed, 1, heads, 1e-5, 1e-6, 0.0, dropout);
  };
  throws_naming([&] { call(c, 3, 0.0); }, "heads", "heads not dividing C is rejected");
  throws_naming([&] { call(c, 2, 0.1); }, "dropout_seed", "dropout without a seed is rejected");
  Call bad = c;
  bad.t[14] = bad.t[14].to(at::kDouble);
  throws_naming([&] { call(bad, 2, 0.0); }, "alpha", "alpha in the wrong dtype is rejected");
  bad = c;
  bad.cu = at::tensor(std::vector<int>{0, 1, 2, 5}, at::kInt);
  bad.t[0] = at::zeros({2, 4, 5}, at::kFloat);
  throws_naming([&] { call(bad, 2, 0.0); }, "cu_seqlens", "cu_seqlens with N != B and B != 1 is rejected");
  bad = c;
  bad.t[4] = at::zeros({4, 3}, at::kFloat);
  throws_naming([&] { call(bad, 2, 0.0); }, "query_weight", "a weight of the wrong shape is rejected");
}

}  // namespace

int main() {
  std::mt19937_64 rng = seeded_rng();
  struct Shape {
    int64_t B, C, T, H, dilation;
    Layout layout;
    bool decoder, masked, dropout;
  };
  const Shape shapes[] = {
      {2, 4, 11, 2, 1, kRows, false, false, false},  {2, 6, 13, 3, 2, kRows, true, true, true},
      {3, 4, 10, 1, 3, kPadded, false, true, true},  {1, 8, 17, 4, 2, kPacked, true, false, true},
      {2, 4, 6, 2, 512, kRows, false, true, false},  {1, 5, 9, 1, 4, kPacked, false, true, false},
      {2, 2, 1, 1, 1, kPadded, true, false, false},
  };
  for (const Shape& s : shapes) {
    auto draw = [&] {
      return make_problem(rng, s.B, s.C, s.T, s.H, s.dilation, s.layout, s.decoder, s.masked, s.dropout);
    };
    test_problem(drawn_off_kinks(draw, near_a_kink), rng);
  }
  test_outside_frames(rng);
  test_argument_checks(rng);
  return report();
}
