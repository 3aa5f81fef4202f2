// C++ test of the CPU kernels of trgnet::frame_losses (run by ctest).
//
// The forward (terms and time_lse) is compared against a direct double-precision evaluation of the formulas
// written here (trgnet_fast/ops/frame_losses/__init__.py), on both GS-TMSE axes, with ignored labels, rows with one
// valid frame and with none, "no partner" written as the frame itself, -1 or T + 2, and small thresholds (clamped
// squares); both gradients of the backward against central differences of L = grad_terms . terms along a random
// direction; float32 and bfloat16 against float64 on the same inputs; random non-inverse / out-of-range pair
// indices (finite results, forward as the formulas); determinism across thread counts; the argument checks. Fresh
// random inputs each run (the seed is printed). Returns nonzero on failure.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "frame_losses.h"
#include "test_util.h"

namespace {

using namespace trgnet_test;  // tests/csrc/test_util.h

struct Problem {
  int64_t S, N, K, T, R;
  bool time_axis;
  double threshold;
  std::vector<int64_t> labels, next, prev;                          // (N, T)
  std::vector<double> z, b;                                         // (S, N, K, T), (R, N, T)
  std::vector<double> ce_w, pair_w, boundary, boundary_w, pos_w;  // (N, T), (1)
};

int64_t partner(int64_t idx, int64_t t, int64_t T) { return idx != t && idx >= 0 && idx < T ? idx : -1; }

double lse_of(const std::vector<double>& x) {
  if (x.empty()) return 0;
  double m = -INFINITY;
  for (double v : x) m = std::max(m, v);
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  return m + std::log(s);
}

Problem make_problem(std::mt19937_64& rng, int64_t S, int64_t N, int64_t K, int64_t T, int64_t R, bool time_axis,
                     double threshold, bool random_indices = false) {
  Problem p{S, N, K, T, R, time_axis, threshold, {}, {}, {}, {}, {}, {}, {}, {}, {}, {2.5}};
  std::uniform_real_distribution<double> U(0, 1);
  p.labels.resize(N * T);
  p.next.resize(N * T);
  p.prev.resize(N * T);
  auto none = [&](int64_t t) -> int64_t {
    const int c = static_cast<int>(rng() % 3);
    return c == 0 ? t : c == 1 ? -1 : T + 2;
  };
  for (int64_t n = 0; n < N; ++n) {
    std::vector<int64_t> valid;
    for (int64_t t = 0; t < T; ++t) {
      int64_t y = static_cast<int64_t>(rng() % K);
      if (rng() % 5 == 0) y = rng() % 2 ? 255 : -100;
      if (n == 1) y = t == T / 2 ? y % K : 255;  // a row with a single valid frame
      if (n == 2) y = -100;                      // and one without
      p.labels[n * T + t] = y;
      if (y >= 0 && y < K) valid.push_back(t);
      p.next[n * T + t] = none(t);
      p.prev[n * T + t] = none(t);
    }
    for (size_t i = 0; i + 1 < valid.size(); ++i) {
      p.next[n * T + valid[i]] = valid[i + 1];
      p.prev[n * T + valid[i + 1]] = valid[i];
    }
    if (random_indices)
      for (int64_t t = 0; t < T; ++t) {
        p.next[n * T + t] = static_cast<int64_t>(rng() % (T + 6)) - 3;
        p.prev[n * T + t] = static_cast<int64_t>(rng() % (T + 6)) - 3;
      }
  }
  NormalFill fill{rng};
  fill(p.z, S * N * K * T, 2.0);
  fill(p.b, R * N * T, 2.0);
  for (int64_t i = 0; i < N * T; ++i) {
    p.ce_w.push_back(U(rng) / T);
    p.pair_w.push_back(0.1 + U(rng));
    p.boundary.push_back(rng() % 3 == 0 ? 1.0 : 0.0);
    p.boundary_w.push_back(U(rng) / T);
  }
  return p;
}

// The formulas: terms (3) and time_lse ((S, N, 2, K) or empty).
struct Eval {
  std::vector<double> terms, time_lse;
  double kink_gap = INFINITY;  // min |d_k(u)^2 - threshold^2|: how close a clamp is to switching
};
Eval evaluate(const Problem& p) {
  const int64_t S = p.S, N = p.N, K = p.K, T = p.T;
  const double thr2 = p.threshold * p.threshold;
  Eval e{{0, 0, 0}, std::vector<double>(p.time_axis ? S * N * 2 * K : 0)};
  for (int64_t row = 0; row < S * N; ++row) {
    const int64_t n = row % N;
    auto z = [&](int64_t k, int64_t t) { return p.z[(row * K + k) * T + t]; };
    std::vector<double> lse_c(T), lse1(K, 0), lse2(K, 0);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> col(K);
      for (int64_t k = 0; k < K; ++k) col[k] = z(k, t);
      lse_c[t] = lse_of(col);
    }
    if (p.time_axis)
      for (int64_t k = 0; k < K; ++k) {
        std::vector<double> a, b;
        for (int64_t t = 0; t < T; ++t) {
          if (partner(p.next[n * T + t], t, T) >= 0) a.push_back(z(k, t));
          if (partner(p.prev[n * T + t], t, T) >= 0) b.push_back(z(k, t));
        }
        lse1[k] = lse_of(a);
        lse2[k] = lse_of(b);
        e.time_lse[row * 2 * K + k] = lse2[k];
        e.time_lse[row * 2 * K + K + k] = lse1[k];
      }
    for (int64_t t = 0; t < T; ++t) {
      const int64_t y = p.labels[n * T + t], v = partner(p.next[n * T + t], t, T);
      e.terms[0] += p.ce_w[n * T + t] * (y >= 0 && y < K ? lse_c[t] - z(y, t) : 0.0);
      if (v < 0) continue;
      double sum = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double d = p.time_axis ? z(k, v) - z(k, t) - (lse2[k] - lse1[k])
                                     : (z(k, v) - lse_c[v]) - (z(k, t) - lse_c[t]);
        sum += std::min(d * d, thr2);
        e.kink_gap = std::min(e.kink_gap, std::fabs(d * d - thr2));
      }
      e.terms[1] += p.pair_w[n * T + t] * sum;
    }
  }
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t i = 0; i < N * T; ++i) {
      const double x = p.b[r * N * T + i], yb = p.boundary[i], lw = 1 + (p.pos_w[0] - 1) * yb;
      e.terms[2] += p.boundary_w[i] * ((1 - yb) * x + lw * (std::log1p(std::exp(-std::fabs(x))) + std::max(-x, 0.0)));
    }
  e.terms[0] /= S;
  e.terms[1] /= double(S) * K;
  e.terms[2] /= p.R;
  return e;
}

at::Tensor index_tensor(const std::vector<int64_t>& x, int64_t N, int64_t T) {
  at::Tensor t = at::empty({N, T}, at::kLong);
  std::copy(x.begin(), x.end(), t.data_ptr<int64_t>());
  return t;
}

// The op's inputs for logits of `dtype` (the per-frame floats in its compute dtype).
std::vector<at::Tensor> inputs(const Problem& p, at::ScalarType dtype) {
  const at::ScalarType acc = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t N = p.N, T = p.T;
  return {to_tensor(p.z, {p.S, N, p.K, T}, dtype), index_tensor(p.labels, N, T), to_tensor(p.ce_w, {N, T}, acc),
          index_tensor(p.next, N, T),           index_tensor(p.prev, N, T),   to_tensor(p.pair_w, {N, T}, acc),
          to_tensor(p.b, {p.R, N, T}, dtype),   to_tensor(p.boundary, {N, T}, acc),
          to_tensor(p.boundary_w, {N, T}, acc), to_tensor(p.pos_w, {1}, acc)};
}

// The problem on its logits rounded to `dtype`: the yardstick of the lower-precision runs.
Problem rounded_to(const Problem& p, at::ScalarType dtype) {
  const auto x = inputs(p, dtype);
  Problem r = p;
  r.z = to_vector(x[0]);
  r.b = to_vector(x[6]);
  return r;
}

std::tuple<at::Tensor, at::Tensor> forward(const std::vector<at::Tensor>& x, const Problem& p) {
  return trgnet::frame_losses_forward_cpu(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], x[9], p.threshold,
                                          p.time_axis);
}
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& gt, const std::vector<at::Tensor>& x,
                                            const at::Tensor& time_lse, const Problem& p) {
  return trgnet::frame_losses_backward_cpu(gt, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], x[9], time_lse,
                                           p.threshold, p.time_axis);
}

std::string title(const Problem& p) {
  return "S=" + std::to_string(p.S) + " N=" + std::to_string(p.N) + " K=" + std::to_string(p.K) +
         " T=" + std::to_string(p.T) + " R=" + std::to_string(p.R) + (p.time_axis ? " time" : " class") +
         " axis thr=" + fmt(p.threshold);
}

void test_problem(Problem p, std::mt19937_64& rng) {
  const std::string name = title(p);
  const Eval ref = evaluate(p);
  const auto x = inputs(p, at::kDouble);
  const auto [terms, time_lse] = forward(x, p);
  for (int j = 0; j < 3; ++j) {
    const double err = rel_err({to_vector(terms)[j]}, {ref.terms[j]}, 1e-300);
    expect(err <= 1e-12, name + ": term " + std::to_string(j) + " vs the formulas, rel err " + fmt(err));
  }
  if (p.time_axis) {
    const double err = rel_err(to_vector(time_lse), ref.time_lse);
    expect(err <= 1e-12, name + ": time_lse vs the formulas, rel err " + fmt(err));
  } else {
    expect(time_lse.numel() == 0, name + ": time_lse empty without time_axis");
  }
  // gradients vs (fourth-order) central differences of L = gt . terms along a random direction
  NormalFill fill{rng};
  std::vector<double> gt, dz, db;
  fill(gt, 3);
  fill(dz, p.z.size());
  fill(db, p.b.size());
  const auto [gl, gb] = backward(to_tensor(gt, {3}, at::kDouble), x, time_lse, p);
  const Directional analytic = Directional{}.add(to_vector(gl), dz).add(to_vector(gb), db);
  auto loss_at = [&](double s) {
    Problem q = p;
    for (size_t i = 0; i < q.z.size(); ++i) q.z[i] += s * dz[i];
    for (size_t i = 0; i < q.b.size(); ++i) q.b[i] += s * db[i];
    const Eval e = evaluate(q);
    return gt[0] * e.terms[0] + gt[1] * e.terms[1] + gt[2] * e.terms[2];
  };
  // a fourth-order stencil: the truncation error is far below the rounding error
  const double err = central_difference_error(analytic, loss_at, 1e-5);
  expect(err <= 1e-6, name + ": directional derivative vs central differences, rel err " + fmt(err));
  // float32 and bfloat16 logits on the same values
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    const auto xf = inputs(p, dtype);
    const Problem pr = rounded_to(p, dtype);  // the reference on the rounded logits
    const Eval er = evaluate(pr);
    const auto [tf, lf] = forward(xf, p);
    const double e1 = rel_err(to_vector(tf), er.terms);
    const auto [glf, gbf] = backward(to_tensor(gt, {3}, at::kFloat), xf, lf, p);
    const auto [gl64, gb64] = backward(to_tensor(gt, {3}, at::kDouble), inputs(pr, at::kDouble),
                                       std::get<1>(forward(inputs(pr, at::kDouble), p)), p);
    const double e2 = rel_err(to_vector(glf), to_vector(gl64)), e3 = rel_err(to_vector(gbf), to_vector(gb64));
    const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
    expect(e1 <= 1e-5 && e2 <= tol && e3 <= tol,
           name + ": " + (dtype == at::kFloat ? "float32" : "bfloat16") + " vs float64: terms " + fmt(e1) +
               " grad_logits " + fmt(e2) + " grad_boundary " + fmt(e3));
  }
}

void test_random_indices(std::mt19937_64& rng) {
  for (bool time_axis : {true, false}) {
    const Problem p = make_problem(rng, 2, 4, 6, 37, 2, time_axis, 1.0, true);
    const auto x = inputs(p, at::kDouble);
    const auto [terms, time_lse] = forward(x, p);
    const double err = rel_err(to_vector(terms), evaluate(p).terms);
    const auto [gl, gb] = backward(at::ones({3}, at::kDouble), x, time_lse, p);
    expect(err <= 1e-12 && at::isfinite(gl).all().item<bool>() && at::isfinite(gb).all().item<bool>(),
           title(p) + ": random non-inverse / out-of-range indices: terms rel err " + fmt(err) + ", finite gradients");
  }
}

void test_deterministic(std::mt19937_64& rng) {
  const Problem p = make_problem(rng, 3, 5, 17, 200, 2, true, 2.0);
  const auto x = inputs(p, at::kFloat);
  const bool same = bitwise_equal_across_threads({1, 2, 3}, [&] {
    const auto [terms, time_lse] = forward(x, p);
    const auto [gl, gb] = backward(at::tensor({1.0f, 2.0f, 3.0f}), x, time_lse, p);
    return std::vector<at::Tensor>{terms, time_lse, gl, gb};
  });
  expect(same, "bitwise-equal results with 1, 2 and 3 threads");
}

void test_argument_checks(std::mt19937_64& rng) {
  const Problem p = make_problem(rng, 2, 3, 4, 9, 2, true, 4.0);
  const auto x = inputs(p, at::kDouble);
  auto with = [&](int i, const at::Tensor& t) {
    auto y = x;
    y[i] = t;
    return y;
  };
  throws_naming([&] { forward(with(2, x[2].to(at::kFloat)), p); }, "'ce_weight'", "ce_weight in float32 refused");
  throws_naming([&] { forward(with(3, x[3].to(at::kInt)), p); }, "'next_frame'", "int32 next_frame refused");
  throws_naming([&] { forward(with(6, x[6].narrow(2, 0, 4).contiguous()), p); }, "'boundary_logits'",
                "boundary_logits of another T refused");
  throws_naming([&] { forward(with(0, x[0].transpose(2, 3)), p); }, "contiguous", "non-contiguous logits refused");
  throws_naming([&] { forward(with(9, at::ones({2}, at::kDouble)), p); }, "'pos_weight'", "pos_weight (2,) refused");
  throws_naming([&] { forward(with(0, x[0].narrow(3, 0, 0).contiguous()), p); }, "nonempty", "T = 0 refused");
  Problem bad = p;
  bad.threshold = -1;
  throws_naming([&] { forward(x, bad); }, "'threshold'", "threshold <= 0 refused");
  const auto [terms, time_lse] = forward(x, p);
  throws_naming([&] { backward(at::ones({3}, at::kFloat), x, time_lse, p); }, "'grad_terms'",
                "float32 grad_terms refused");
  Problem cls = p;
  cls.time_axis = false;
  throws_naming([&] { backward(at::ones({3}, at::kDouble), x, time_lse, cls); }, "'time_lse'",
                "an (S, N, 2, K) time_lse without time_axis refused");
}

}  // namespace

int main() {
  std::mt19937_64 rng = seeded_rng();
  struct Shape {
    int64_t S, N, K, T, R;
    bool time_axis;
    double threshold;
  };
  const Shape shapes[] = {
      {2, 3, 7, 23, 3, true, 4.0},  {2, 3, 7, 23, 3, false, 4.0}, {1, 4, 5, 31, 2, true, 0.7},
      {3, 4, 5, 31, 1, false, 0.7}, {1, 1, 1, 5, 1, true, 4.0},   {2, 2, 9, 1, 2, false, 4.0},
      {2, 3, 40, 64, 2, true, 2.0},
  };
  for (const Shape& s : shapes) {
    // no clamp within reach of the finite differences' steps or of float32 rounding (a switching clamp makes the
    // loss non-differentiable there), on the drawn logits nor on them rounded to bfloat16 (the yardstick of that
    // run): draw again
    auto near_a_kink = [](const Problem& p) {
      return evaluate(p).kink_gap < 5e-4 || evaluate(rounded_to(p, at::kBFloat16)).kink_gap < 5e-4;
    };
    const Problem p =
        drawn_off_kinks([&] { return make_problem(rng, s.S, s.N, s.K, s.T, s.R, s.time_axis, s.threshold); },
                        near_a_kink);
    test_problem(p, rng);
  }
  test_random_indices(rng);
  test_deterministic(rng);
  test_argument_checks(rng);
  return report();
}
