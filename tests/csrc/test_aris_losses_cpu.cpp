// C++ test of the CPU kernels of trgnet::aris_losses (run by ctest).
//
// The forward (terms, segment_features, row_lse, max_distance) and the backward (grad_features, grad_logit_scale)
// are compared against a direct double-precision evaluation of the formulas written here
// (trgnet_fast/ops/aris_losses/__init__.py); where the loss is differentiable (no tie of the maximum distance but its
// mirror, no slot on the norm floor) the backward also against central differences of L = grad_terms . terms along a
// random direction. Inputs as the loss builds them: the label runs of every row as slots, padding slots after them,
// frame_segment naming each run's frames ("no slot" as M, -1 or M + 3), an all-ignored row, the KL targets
// row-softmaxed over the valid columns; cases with exact ties of the maximum distance, a zero-feature slot, dmax = 0,
// M = 1, K = 1, D = 1, T = 1. The feature head (features x (N, C, T) with a (D, C) head) against the head applied to
// every frame, then the formulas. float32 and bfloat16 features against float64 on the same values; determinism
// across thread counts (with and without the head); the argument checks. Fresh random inputs each run (the seed is
// printed). Returns nonzero on failure.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "aris_losses.h"
#include "test_util.h"

namespace {

using namespace trgnet_test;  // tests/csrc/test_util.h

constexpr int64_t kIgnored = 255;
constexpr double kTinyDouble = 2.2250738585072014e-308;

struct Problem {
  int64_t N, D, T, K, M = 0;
  std::vector<double> e;                      // (N, D, T)
  std::vector<int64_t> frame_segment;         // (N, T)
  std::vector<int64_t> video, start, label;   // (M)
  std::vector<double> count;                  // (M)
  std::vector<char> valid;                    // (M)
  std::vector<double> U, scale;               // (K, D), (1)
  std::vector<double> wa, lwa, wr, lwr;       // (M, M)
  bool differentiable = true;                 // no engineered tie, no zero slot
};

double lse_of(const std::vector<double>& x) {
  double m = -INFINITY;
  for (double v : x) m = std::max(m, v);
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  return m + std::log(s);
}

// softmax of z(i, j) over the valid columns of each valid row -> w, lw (0 elsewhere).
template <class Z>
void kl_target(const Problem& p, Z z, std::vector<double>& w, std::vector<double>& lw) {
  const int64_t M = p.M;
  w.assign(M * M, 0);
  lw.assign(M * M, 0);
  for (int64_t i = 0; i < M; ++i) {
    if (!p.valid[i]) continue;
    std::vector<double> row;
    for (int64_t j = 0; j < M; ++j)
      if (p.valid[j]) row.push_back(z(i, j));
    const double lse = lse_of(row);
    for (int64_t j = 0; j < M; ++j)
      if (p.valid[j]) lw[i * M + j] = z(i, j) - lse, w[i * M + j] = std::exp(lw[i * M + j]);
  }
}

// Label runs of 1 .. max_run frames (about 1 in 8 ignored; row 1 all ignored) as slots, `extra` padding slots,
// features ~ N(0, 1); `ties`: slot C a copy of slot B (equal counts), slot A shifted away from both, so that
// dmax = d_AB = d_AC; `zero`: slot 0's frames zero (the norm floor).
Problem make_problem(std::mt19937_64& rng, int64_t N, int64_t D, int64_t T, int64_t K, int64_t extra, int64_t max_run,
                     bool ties, bool zero) {
  Problem p{N, D, T, K};
  std::vector<int64_t> labels(N * T, kIgnored);
  for (int64_t n = 0; n < N; ++n) {
    if (n == 1) continue;
    int64_t prev = -1;
    for (int64_t t = 0; t < T;) {
      const int64_t len = 1 + static_cast<int64_t>(rng() % max_run);
      int64_t lab = rng() % 8 == 0 ? kIgnored : static_cast<int64_t>(rng() % K);
      if (lab == prev && K > 1) lab = (lab + 1) % K;
      std::fill(labels.begin() + n * T + t, labels.begin() + n * T + std::min(T, t + len), lab);
      prev = lab;
      t += len;
    }
  }
  p.frame_segment.assign(N * T, -2);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t lab = labels[n * T + t];
      if (lab == kIgnored) continue;
      if (t == 0 || labels[n * T + t - 1] != lab) {
        p.video.push_back(n), p.start.push_back(t), p.label.push_back(lab), p.count.push_back(0);
        p.valid.push_back(1);
      }
      p.frame_segment[n * T + t] = static_cast<int64_t>(p.video.size()) - 1;
      p.count.back() += 1;
    }
  const int64_t real = static_cast<int64_t>(p.video.size());
  for (int64_t i = 0; i < (real == 0 ? std::max<int64_t>(extra, 1) : extra); ++i)
    p.video.push_back(0), p.start.push_back(0), p.label.push_back(0), p.count.push_back(1), p.valid.push_back(0);
  p.M = static_cast<int64_t>(p.video.size());
  for (auto& x : p.frame_segment)
    if (x == -2) x = std::vector<int64_t>{p.M, -1, p.M + 3}[rng() % 3];
  NormalFill fill{rng};
  fill(p.e, N * D * T);
  auto slot = [&](int64_t i, int64_t k, int64_t u) -> double& {
    return p.e[(p.video[i] * D + k) * T + p.start[i] + u];
  };
  if (zero && real >= 1) {
    for (int64_t k = 0; k < D; ++k)
      for (int64_t u = 0; u < p.count[0]; ++u) slot(0, k, u) = 0;
    p.differentiable = false;
  }
  bool tied = !ties;
  for (int64_t b = 1; b < real && !tied; ++b)
    for (int64_t c = b + 1; c < real && !tied; ++c) {
      int64_t a = 1;
      while (a == b || a == c) ++a;
      if (p.count[b] != p.count[c] || a >= real) continue;
      for (int64_t k = 0; k < D; ++k) {
        for (int64_t u = 0; u < p.count[a]; ++u) slot(a, k, u) += 12;
        for (int64_t u = 0; u < p.count[b]; ++u) slot(b, k, u) -= 12, slot(c, k, u) = slot(b, k, u);
      }
      tied = true;
      p.differentiable = false;
    }
  fill(p.U, K * D);
  for (int64_t k = 0; k < K; ++k) {
    double nn = 0;
    for (int64_t x = 0; x < D; ++x) nn += p.U[k * D + x] * p.U[k * D + x];
    for (int64_t x = 0; x < D; ++x) p.U[k * D + x] /= std::sqrt(nn);
  }
  p.scale = {2.659};
  std::vector<double> tag;
  fill(tag, K * K);
  kl_target(p, [&](int64_t i, int64_t j) { return 10.0 * (p.label[i] == p.label[j]); }, p.wa, p.lwa);
  kl_target(p, [&](int64_t i, int64_t j) {
    const int64_t a = p.label[i], b = p.label[j];
    return 10.0 * std::tanh(tag[a * K + b] + tag[b * K + a]);
  }, p.wr, p.lwr);
  return p;
}

// The formulas: the forward's four outputs and, for grad_terms gt, the documented gradients.
struct Eval {
  std::vector<double> terms, f, row_lse, max_distance, grad_e, grad_scale;
  // denominator floors of the gradients' relative errors: a quarter of the root-sum-square of the elementary products
  // each one sums (the rule of reference.py gradient_error_floors: W_i p_ij − w_ij cancels, to exactly 0 with K = 1,
  // and rounding scales with the parts)
  double floor_e = 0, floor_s = 0;
  // how close the loss is to a point where it is not differentiable: the smallest of dmax − the next smaller distance
  // (the maximum switching pairs), the distances between valid slots and the norms of their features (|x| at 0)
  double kink_gap = INFINITY;
};
Eval evaluate(const Problem& p, const std::vector<double>& gt = {}) {
  const int64_t N = p.N, D = p.D, T = p.T, M = p.M;
  const double eps = 1e-12, s = p.scale[0], tiny = kTinyDouble;
  Eval r;
  r.f.assign(M * D, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = p.frame_segment[n * T + t];
      if (i >= 0 && i < M && p.valid[i])
        for (int64_t k = 0; k < D; ++k) r.f[i * D + k] += p.e[(n * D + k) * T + t] / p.count[i];
    }
  double rows = 0;
  for (char v : p.valid) rows += v;
  rows = std::max(rows, 1.0);
  std::vector<double> norm(M), L(M * M), dist(M * M), bias(M * M);
  auto fhat = [&](int64_t i, int64_t k) { return r.f[i * D + k] / std::max(norm[i], eps); };
  auto E = [&](int64_t j, int64_t k) { return p.U[std::clamp<int64_t>(p.label[j], 0, p.K - 1) * D + k]; };
  for (int64_t i = 0; i < M; ++i) {
    double nn = 0;
    for (int64_t k = 0; k < D; ++k) nn += r.f[i * D + k] * r.f[i * D + k];
    norm[i] = std::sqrt(nn);
  }
  double dmax = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < M; ++j) {
      double dot = 0, sq = 0;
      for (int64_t k = 0; k < D; ++k)
        dot += fhat(i, k) * E(j, k), sq += std::pow(r.f[i * D + k] - r.f[j * D + k], 2);
      L[i * M + j] = s * dot;
      dist[i * M + j] = p.valid[i] && p.valid[j] ? std::sqrt(sq) : 0.0;
      bias[i * M + j] = p.valid[i] && !p.valid[j] ? -1e30 : 0.0;
      dmax = std::max(dmax, dist[i * M + j]);
    }
  const double ties = static_cast<double>(std::count(dist.begin(), dist.end(), dmax));
  r.max_distance = {dmax, ties};
  for (int64_t i = 0; i < M; ++i) {
    if (p.valid[i]) r.kink_gap = std::min(r.kink_gap, norm[i]);
    for (int64_t j = 0; j < M; ++j) {
      const double v = dist[i * M + j];
      if (v < dmax) r.kink_gap = std::min(r.kink_gap, dmax - v);
      if (i != j && p.valid[i] && p.valid[j]) r.kink_gap = std::min(r.kink_gap, v);
    }
  }
  auto X = [&](int which, int64_t i, int64_t j) {
    const double x = which == 0 ? L[i * M + j] : which == 1 ? L[j * M + i] : 1 - dist[i * M + j] / (dmax + tiny);
    return x + bias[i * M + j];
  };
  r.row_lse.assign(3 * M, 0);
  double kl[3] = {0, 0, 0};
  for (int which = 0; which < 3; ++which)
    for (int64_t i = 0; i < M; ++i) {
      std::vector<double> row(M);
      for (int64_t j = 0; j < M; ++j) row[j] = X(which, i, j);
      const double lse = r.row_lse[which * M + i] = lse_of(row);
      const std::vector<double>&w = which < 2 ? p.wa : p.wr, &lw = which < 2 ? p.lwa : p.lwr;
      for (int64_t j = 0; j < M; ++j) kl[which] += w[i * M + j] * (lw[i * M + j] - (row[j] - lse));
    }
  r.terms = {(kl[0] + kl[1]) / (2 * rows), kl[2] / rows};
  if (gt.empty()) return r;

  std::vector<double> Wa(M, 0), Wr(M, 0), G(M * M), H(M * M);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < M; ++j) Wa[i] += p.wa[i * M + j], Wr[i] += p.wr[i * M + j];
  std::vector<double> A(M * M), R(M * M);  // the parts of G and of H / (dmax + tiny)
  double grad_s = 0, grad_dmax = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < M; ++j) {
      const int64_t e = i * M + j;
      const double pl = std::exp(X(0, i, j) - r.row_lse[i]), plt = std::exp(X(1, j, i) - r.row_lse[M + j]);
      const double pp = std::exp(X(2, i, j) - r.row_lse[2 * M + i]);
      G[e] = gt[0] / (2 * rows) * ((Wa[i] * pl - p.wa[e]) + (Wa[j] * plt - p.wa[j * M + i]));
      A[e] = std::fabs(gt[0]) / (2 * rows) * (Wa[i] * pl + p.wa[e] + Wa[j] * plt + p.wa[j * M + i]);
      grad_s += G[e] * L[e] / s;
      r.floor_s += std::pow(A[e] * L[e] / s, 2);
      H[e] = gt[1] / rows * (Wr[i] * pp - p.wr[e]);
      R[e] = p.valid[i] && p.valid[j] ? std::fabs(gt[1]) / rows * (Wr[i] * pp + p.wr[e]) / (dmax + tiny) : 0.0;
      grad_dmax += H[e] * dist[e] / ((dmax + tiny) * (dmax + tiny));
    }
  r.floor_s = std::max(0.25 * std::sqrt(r.floor_s), 1e-300);
  for (int64_t i = 0; i < M; ++i) {
    double absolute = 0, relative = 0;
    for (int64_t j = 0; j < M; ++j) {
      absolute += std::pow(s * A[i * M + j], 2);
      relative += std::pow(R[i * M + j] + R[j * M + i], 2);
    }
    r.floor_e += (absolute / std::pow(std::max(norm[i], eps), 2) + relative) / p.count[i];
  }
  r.floor_e = std::max(0.25 * std::sqrt(r.floor_e), 1e-300);
  r.grad_scale = {grad_s};
  auto delta = [&](int64_t i, int64_t j) {
    if (!(p.valid[i] && p.valid[j])) return 0.0;
    return -H[i * M + j] / (dmax + tiny) + (dist[i * M + j] == dmax ? grad_dmax / ties : 0.0);
  };
  std::vector<double> gf(M * D, 0);
  for (int64_t i = 0; i < M; ++i) {
    if (!p.valid[i]) continue;
    std::vector<double> g(D, 0);
    double fg = 0;
    for (int64_t k = 0; k < D; ++k) {
      for (int64_t j = 0; j < M; ++j) g[k] += s * G[i * M + j] * E(j, k);
      fg += fhat(i, k) * g[k];
    }
    for (int64_t k = 0; k < D; ++k) gf[i * D + k] = norm[i] > eps ? (g[k] - fhat(i, k) * fg) / norm[i] : g[k] / eps;
    for (int64_t j = 0; j < M; ++j)
      if (dist[i * M + j] > 0)
        for (int64_t k = 0; k < D; ++k)
          gf[i * D + k] += (delta(i, j) + delta(j, i)) / dist[i * M + j] * (r.f[i * D + k] - r.f[j * D + k]);
  }
  r.grad_e.assign(N * D * T, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = p.frame_segment[n * T + t];
      if (i >= 0 && i < M)
        for (int64_t k = 0; k < D; ++k) r.grad_e[(n * D + k) * T + t] = gf[i * D + k] / p.count[i];
    }
  return r;
}

at::Tensor index_tensor(const std::vector<int64_t>& x, at::IntArrayRef shape) {
  at::Tensor t = at::empty(shape, at::kLong);
  std::copy(x.begin(), x.end(), t.data_ptr<int64_t>());
  return t;
}

// The op's 13 inputs for features of `dtype` (the other floating inputs in its compute dtype).
std::vector<at::Tensor> inputs(const Problem& p, at::ScalarType dtype) {
  const at::ScalarType acc = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t M = p.M;
  at::Tensor valid = at::empty({M}, at::kBool);
  std::copy(p.valid.begin(), p.valid.end(), valid.data_ptr<bool>());
  return {to_tensor(p.e, {p.N, p.D, p.T}, dtype), index_tensor(p.frame_segment, {p.N, p.T}),
          index_tensor(p.video, {M}),             index_tensor(p.start, {M}),
          to_tensor(p.count, {M}, acc),           valid,
          index_tensor(p.label, {M}),             to_tensor(p.U, {p.K, p.D}, acc),
          to_tensor(p.scale, {1}, acc),           to_tensor(p.wa, {M, M}, acc),
          to_tensor(p.lwa, {M, M}, acc),          to_tensor(p.wr, {M, M}, acc),
          to_tensor(p.lwr, {M, M}, acc)};
}

// The op without (head = {}) or with the feature head {weight (D, C), bias (D)}.
struct Head {
  at::Tensor weight, bias;
};
using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
Forward forward(const std::vector<at::Tensor>& x, const Head& head = {}) {
  auto optional = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
  return trgnet::aris_losses_forward_cpu(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], x[9], x[10], x[11],
                                         x[12], optional(head.weight), optional(head.bias));
}
// grad_features, grad_logit_scale, grad_head_weight, grad_head_bias
using Backward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
Backward backward(const at::Tensor& gt, const std::vector<at::Tensor>& x, const Forward& saved, const Head& head = {},
                  at::ScalarType features_dtype = at::ScalarType::Undefined) {
  const auto weight = head.weight.defined() ? std::optional<at::Tensor>(head.weight) : std::nullopt;
  return trgnet::aris_losses_backward_cpu(
      gt, x[1], x[4], x[5], x[6], x[7], x[8], x[9], x[11], std::get<1>(saved), std::get<2>(saved),
      std::get<3>(saved), weight, std::get<4>(saved),
      features_dtype == at::ScalarType::Undefined ? x[0].scalar_type() : features_dtype);
}

std::string title(const Problem& p) {
  int64_t valid = 0;
  for (char v : p.valid) valid += v;
  return "N=" + std::to_string(p.N) + " D=" + std::to_string(p.D) + " T=" + std::to_string(p.T) +
         " K=" + std::to_string(p.K) + " M=" + std::to_string(p.M) + " (" + std::to_string(valid) + " valid)";
}

void test_problem(const Problem& p, std::mt19937_64& rng) {
  const std::string name = title(p);
  NormalFill fill{rng};
  std::vector<double> gt;
  fill(gt, 2);
  const Eval ref = evaluate(p, gt);
  const auto x = inputs(p, at::kDouble);
  const Forward out = forward(x);
  const auto& [terms, f, row_lse, md, means] = out;
  const double e_terms = rel_err(to_vector(terms), ref.terms), e_f = rel_err(to_vector(f), ref.f);
  const double e_lse = rel_err(to_vector(row_lse), ref.row_lse), e_md = rel_err(to_vector(md), ref.max_distance);
  expect(e_terms <= 1e-12 && e_f <= 1e-12 && e_lse <= 1e-12 && e_md <= 1e-12 &&
             to_vector(md)[1] == ref.max_distance[1] && means.numel() == 0,
         name + ": forward vs the formulas: terms " + fmt(e_terms) + " segment_features " + fmt(e_f) + " row_lse " +
             fmt(e_lse) + " max_distance " + fmt(e_md) + " (c = " + fmt(ref.max_distance[1]) + ")");
  const auto [ge, gs, gw, gb] = backward(to_tensor(gt, {2}, at::kDouble), x, out);
  const double e_ge = rel_err(to_vector(ge), ref.grad_e, ref.floor_e);
  const double e_gs = rel_err(to_vector(gs), ref.grad_scale, ref.floor_s);
  expect(e_ge <= 1e-10 && e_gs <= 1e-10 && gw.numel() == 0 && gb.numel() == 0,
         name + ": backward vs the formulas: grad_features " + fmt(e_ge) + " grad_logit_scale " + fmt(e_gs));
  if (p.differentiable) {  // directional derivative vs (fourth-order) central differences of L = gt . terms
    std::vector<double> de, ds;
    fill(de, p.e.size());
    fill(ds, 1);
    const Directional analytic = Directional{}.add(to_vector(ge), de).add(to_vector(gs), ds);
    auto loss_at = [&](double step) {
      Problem q = p;
      for (size_t i = 0; i < q.e.size(); ++i) q.e[i] += step * de[i];
      q.scale[0] += step * ds[0];
      const Eval e = evaluate(q);
      return gt[0] * e.terms[0] + gt[1] * e.terms[1];
    };
    const double err = central_difference_error(analytic, loss_at, 1e-5);
    expect(err <= 1e-6, name + ": directional derivative vs central differences, rel err " + fmt(err));
  }
  // float32 and bfloat16 features on the same values: against float64 on the rounded values
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    const auto xf = inputs(p, dtype);
    Problem pr = p;
    pr.e = to_vector(xf[0]);
    const auto x64 = inputs(pr, at::kDouble);
    const Forward o64 = forward(x64), of = forward(xf);
    const auto [ge64, gs64, gw64, gb64] = backward(to_tensor(gt, {2}, at::kDouble), x64, o64);
    const auto [gef, gsf, gwf, gbf] = backward(to_tensor(gt, {2}, at::kFloat), xf, of);
    const double e1 = rel_err(to_vector(std::get<0>(of)), to_vector(std::get<0>(o64)));
    const double e2 = rel_err(to_vector(gef), to_vector(ge64), ref.floor_e);
    const double e3 = rel_err(to_vector(gsf), to_vector(gs64), ref.floor_s);
    const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
    expect(e1 <= 1e-5 && e2 <= tol && e3 <= 1e-5 && to_vector(std::get<3>(of))[1] == to_vector(std::get<3>(o64))[1],
           name + ": " + (dtype == at::kFloat ? "float32" : "bfloat16") + " vs float64: terms " + fmt(e1) +
               " grad_features " + fmt(e2) + " grad_logit_scale " + fmt(e3) + ", same ties");
  }
}

void test_deterministic(std::mt19937_64& rng, bool with_head) {
  const Problem p = make_problem(rng, 4, 33, 200, 6, 4, 12, true, true);
  const auto x = inputs(p, at::kFloat);
  Head head;
  if (with_head) {  // a (40, 33) head
    NormalFill fill{rng};
    std::vector<double> w, b;
    fill(w, 40 * p.D);
    fill(b, 40);
    head = {to_tensor(w, {40, p.D}, at::kFloat), to_tensor(b, {40}, at::kFloat)};
  }
  auto xs = x;
  if (with_head) xs[7] = at::randn({p.K, 40}, at::kFloat);  // unit_embeddings of D = 40
  const int threads = at::get_num_threads();
  std::vector<std::vector<double>> runs;
  for (int nt : {1, 2, 3}) {
    at::set_num_threads(nt);
    const Forward out = forward(xs, head);
    const auto [ge, gs, gw, gb] = backward(at::tensor({0.7f, -1.2f}), xs, out, head);
    std::vector<double> all;
    for (const at::Tensor& t :
         {std::get<0>(out), std::get<1>(out), std::get<2>(out), std::get<3>(out), std::get<4>(out), ge, gs, gw, gb}) {
      const auto v = to_vector(t);
      all.insert(all.end(), v.begin(), v.end());
    }
    runs.push_back(all);
  }
  at::set_num_threads(threads);
  expect(runs[0] == runs[1] && runs[0] == runs[2], std::string("bitwise-equal results with 1, 2 and 3 threads") +
                                                      (with_head ? " (feature head)" : ""));
}

void test_argument_checks(std::mt19937_64& rng) {
  const Problem p = make_problem(rng, 3, 5, 20, 4, 2, 5, false, false);
  const auto x = inputs(p, at::kDouble);
  auto with = [&](int i, const at::Tensor& t) {
    auto y = x;
    y[i] = t;
    return y;
  };
  throws_naming([&] { forward(with(4, x[4].to(at::kFloat))); }, "'segment_count'", "float32 segment_count refused");
  throws_naming([&] { forward(with(2, x[2].to(at::kInt))); }, "'segment_video'", "int32 segment_video refused");
  throws_naming([&] { forward(with(5, x[5].to(at::kLong))); }, "'segment_valid'", "int64 segment_valid refused");
  throws_naming([&] { forward(with(7, x[7].narrow(1, 0, 2).contiguous())); }, "'unit_embeddings'",
                "unit_embeddings of another D refused");
  throws_naming([&] { forward(with(10, x[10].narrow(0, 0, 1).contiguous())); }, "'absolute_log_weight'",
                "an absolute_log_weight of another M refused");
  throws_naming([&] { forward(with(1, x[1].narrow(1, 0, 3).contiguous())); }, "'frame_segment'",
                "frame_segment of another T refused");
  throws_naming([&] { forward(with(0, x[0].transpose(1, 2).contiguous().transpose(1, 2))); }, "contiguous",
                "non-contiguous features refused");
  throws_naming([&] { forward(with(8, at::ones({2}, at::kDouble))); }, "'logit_scale'", "logit_scale (2,) refused");
  throws_naming([&] { forward(with(0, x[0].narrow(2, 0, 0).contiguous())); }, "T >= 1", "T = 0 refused");
  throws_naming([&] { forward(with(0, x[0].to(at::kInt))); }, "'features'", "int32 features refused");
  const Forward out = forward(x);
  throws_naming([&] { backward(at::ones({2}, at::kFloat), x, out); }, "'grad_terms'", "float32 grad_terms refused");
  throws_naming([&] { backward(at::ones({3}, at::kDouble), x, out); }, "'grad_terms'", "grad_terms (3,) refused");
  auto with_saved = [&](int i, const at::Tensor& t) {
    Forward saved = out;
    if (i == 2) std::get<2>(saved) = t;
    if (i == 4) std::get<4>(saved) = t;
    return saved;
  };
  throws_naming([&] { backward(at::ones({2}, at::kDouble), x, with_saved(2, std::get<2>(out).narrow(0, 0, 2))); },
                "'row_lse'", "row_lse (2, M) refused");
  throws_naming([&] { backward(at::ones({2}, at::kDouble), x, out, {}, at::kFloat); }, "'segment_features'",
                "float64 saved outputs with features_dtype float32 refused");
  throws_naming([&] { backward(at::ones({2}, at::kDouble), x, out, {}, at::kInt); }, "'features_dtype'",
                "features_dtype int32 refused");
  // the feature head: both or neither, its shapes, and its saved means
  const int64_t C = 3;
  const Head head{at::randn({p.D, C}, at::kDouble), at::randn({p.D}, at::kDouble)};
  auto headed = with(0, at::randn({p.N, C, p.T}, at::kDouble));
  throws_naming([&] { forward(headed, {head.weight, at::Tensor()}); }, "'head_weight', 'head_bias'",
                "a head weight without its bias refused");
  throws_naming([&] { forward(headed, {head.weight.narrow(1, 0, 2).contiguous(), head.bias}); }, "'head_weight'",
                "a head weight of another C refused");
  throws_naming([&] { forward(headed, {head.weight, head.bias.narrow(0, 0, 1).contiguous()}); }, "'head_bias'",
                "a head bias of another D refused");
  throws_naming([&] { forward(headed, {head.weight.to(at::kFloat), head.bias}); }, "'head_weight'",
                "a float32 head weight with float64 features refused");
  const Forward headed_out = forward(headed, head);
  throws_naming([&] { backward(at::ones({2}, at::kDouble), headed, headed_out); }, "'segment_means'",
                "saved means of a head without the head refused");
  throws_naming(
      [&] {
        backward(at::ones({2}, at::kDouble), headed, with_saved(4, std::get<4>(headed_out).narrow(1, 0, 2)), head);
      },
      "'segment_means'", "saved means of another C refused");
}

// The feature head against the published order: e0 = W x + b on every frame, then the formulas on e0 (evaluate);
// the op, given x and the head, must give the same terms and segment features, the means of x, and the gradients of
// x (Wᵀ grad e0 per frame), W (Σ over frames of grad e0 xᵀ) and b (Σ over frames of grad e0), float64.
void test_head(std::mt19937_64& rng, int64_t N, int64_t C, int64_t D, int64_t T, int64_t K) {
  NormalFill fill{rng};
  Problem px = make_problem(rng, N, C, T, K, 2, 6, false, false);  // x: the head's input, C channels
  std::vector<double> w, b;
  fill(w, D * C);
  fill(b, D);
  for (double& v : w) v /= std::sqrt(static_cast<double>(C));
  Problem pe = make_problem(rng, N, D, T, K, 0, 1, false, false);  // for its D-wide embeddings only
  Problem p = px;  // x's slots and targets, e0 = W x + b as the features
  p.D = D;
  p.U = pe.U;
  p.e.assign(N * D * T, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t t = 0; t < T; ++t) {
        double v = b[d];
        for (int64_t k = 0; k < C; ++k) v += w[d * C + k] * px.e[(n * C + k) * T + t];
        p.e[(n * D + d) * T + t] = v;
      }
  std::vector<double> gt;
  fill(gt, 2);
  const Eval ref = evaluate(p, gt), means = evaluate(px);
  std::vector<double> grad_x(N * C * T, 0), grad_w(D * C, 0), grad_b(D, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < D; ++d) {
        const double g = ref.grad_e[(n * D + d) * T + t];
        grad_b[d] += g;
        for (int64_t k = 0; k < C; ++k) {
          grad_x[(n * C + k) * T + t] += w[d * C + k] * g;
          grad_w[d * C + k] += g * px.e[(n * C + k) * T + t];
        }
      }
  auto x = inputs(p, at::kDouble);
  x[0] = to_tensor(px.e, {N, C, T}, at::kDouble);
  const Head head{to_tensor(w, {D, C}, at::kDouble), to_tensor(b, {D}, at::kDouble)};
  const Forward out = forward(x, head);
  const auto [ge, gs, gw, gb] = backward(to_tensor(gt, {2}, at::kDouble), x, out, head);
  const double e_terms = rel_err(to_vector(std::get<0>(out)), ref.terms);
  const double e_f = rel_err(to_vector(std::get<1>(out)), ref.f);
  const double e_m = rel_err(to_vector(std::get<4>(out)), means.f);
  const double e_gx = rel_err(to_vector(ge), grad_x, ref.floor_e);
  const double e_gs = rel_err(to_vector(gs), ref.grad_scale, ref.floor_s);
  const double e_gw = rel_err(to_vector(gw), grad_w, ref.floor_e);
  const double e_gb = rel_err(to_vector(gb), grad_b, ref.floor_e);
  expect(e_terms <= 1e-12 && e_f <= 1e-12 && e_m <= 1e-12 && e_gx <= 1e-10 && e_gs <= 1e-10 && e_gw <= 1e-10 &&
             e_gb <= 1e-10,
         "feature head (D, C) = (" + std::to_string(D) + ", " + std::to_string(C) + ") on x " + title(px) +
             " vs the head on every frame: terms " + fmt(e_terms) + " segment_features " + fmt(e_f) +
             " segment_means " + fmt(e_m) + " grad_features " + fmt(e_gx) + " grad_logit_scale " + fmt(e_gs) +
             " grad_head_weight " + fmt(e_gw) + " grad_head_bias " + fmt(e_gb));
}

}  // namespace

int main() {
  std::mt19937_64 rng = seeded_rng();
  struct Shape {
    int64_t N, D, T, K, extra, max_run;
    bool ties, zero;
  };
  const Shape shapes[] = {
      {3, 7, 50, 5, 3, 6, false, false},   // padding, ignored row, single-frame slots
      {3, 7, 50, 5, 3, 6, true, true},     // exact ties of dmax, a zero slot
      {2, 33, 90, 4, 2, 20, true, false},  // ties, longer slots
      {1, 5, 6, 3, 0, 10, false, false},   // M = 1 or a few slots (dmax may be 0)
      {1, 4, 3, 2, 3, 10, false, false},   // one or two valid slots among padding
      {3, 6, 30, 1, 2, 6, false, false},   // K = 1
      {3, 1, 30, 4, 1, 4, false, false},   // D = 1
      {4, 5, 1, 3, 2, 1, false, false},    // T = 1
      {4, 3, 80, 6, 4, 2, false, true},    // many slots (M > 100), a zero slot
  };
  for (const Shape& s : shapes) {
    // no point where the loss is not differentiable within reach of the finite differences' steps: draw again
    test_problem(
        drawn_off_kinks([&] { return make_problem(rng, s.N, s.D, s.T, s.K, s.extra, s.max_run, s.ties, s.zero); },
                        [](const Problem& p) { return p.differentiable && evaluate(p).kink_gap < 1e-3; }),
        rng);
  }
  for (const auto& [N, C, D, T, K] : {std::array<int64_t, 5>{3, 5, 9, 40, 4}, {2, 1, 1, 12, 2},
                                      {3, 11, 4, 30, 3}, {4, 64, 33, 60, 6}})
    test_head(rng, N, C, D, T, K);
  test_deterministic(rng, false);
  test_deterministic(rng, true);
  test_argument_checks(rng);
  return report();
}
