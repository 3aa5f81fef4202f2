// Emulated run of the CUDA kernels of the fused ARIS terms (kernels/aris_losses.cu, compiled by g++ against shim/ after
// gen_sources.py) against a double-precision reference written here from the formulas of
// trgnet_fast/ops/aris_losses/__init__.py (forward: terms, segment_features, row_lse, max_distance and, with the
// feature head, segment_means; backward: the documented gradients of the features, logit_scale and the head's weight
// and bias), on the same rounded inputs. The reference's gradients are checked against central differences of L =
// grad_terms . terms, without and with the head (no tie of the maximum distance but its mirror, no feature on the norm
// floor). Inputs are built as the loss builds them: the label runs of every row (corrected rule) as slots, padding
// slots after them, frame_segment naming each run's frames ("no slot" written as M, -1 or M + 3), the KL targets
// row-softmaxed over the valid columns. Cases: padding slots, an all-ignored row, single-frame slots, a zero-feature
// slot (the norm floor; its frames' gradient checked apart, it is 1e12 times the others), exact ties of the maximum
// distance (two slots with copied frames), dmax = 0 (one valid slot among padding: every one of the M^2 entries ties),
// M = 1, K = 1, D = 1, T = 1, odd D and T, D over several pair chunks and slot-gradient passes, M over several pair
// tiles and staged chunks, long slots (many frames per lane), several frame tiles, fp64 / fp32 / bf16 / fp16, base
// pointers aligned and misaligned by one element (bitwise-equal results in another thread order; these kernels have no
// 16-byte path, so the pair shows that neither alignment nor timing moves a bit), and sizes the launchers refuse. With
// the feature head (features (N, C, T), head_weight (D, C)): C = 1, odd C and D, C > D and C < D, C and D over a block
// of threads, padding slots, ties, one valid slot, M over several pair tiles, the same dtypes and the aligned /
// misaligned pair (a zero slot there has f = b: off the norm floor). The forward must take 5 launches (6 with the
// head), the backward 5 (7 with the head). Argument: random cases per dtype and head setting (8).
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "aris_losses.cuh"
#include "aris_losses.h"
#include "test_util.h"

using namespace emu_test;

namespace {

constexpr int64_t kIgnored = 255;

struct Shape {
  int N, D, T, K;
  int extra;            // padding slots after the label runs
  int max_run = 6;      // longest label run
  bool ties = true;     // two slots with copied frames, far from a third: exact ties of dmax
  bool zero = true;     // a slot with zero features: the norm floor
  bool ignored_row = true;  // row 1 (if any) all ignored
  int C = 0;                // with the feature head: the features' channels (head_weight (D, C)); 0: no head
  bool head() const { return C > 0; }
  int channels() const { return head() ? C : D; }  // of the features (N, channels, T)
};

Shape with_head(Shape s, int C) {
  s.C = C;
  return s;
}

struct Expect {};

// Inputs of one case as doubles (already rounded to the storage types).
struct Data {
  int64_t M = 0;
  std::vector<double> e;                         // (N, channels, T)
  std::vector<int64_t> frame_segment;            // (N, T)
  std::vector<int64_t> video, start, label;      // (M)
  std::vector<double> count;                     // (M)
  std::vector<char> valid;                       // (M)
  std::vector<double> U, scale;                  // (K, D), (1)
  std::vector<double> wa, lwa, wr, lwr;          // (M, M)
  std::vector<double> gt;                        // (2)
  std::vector<int64_t> floor_slots;              // slots with zero features
  std::vector<double> W, b;                      // the head: (D, C), (D)
};

struct Ref {
  std::vector<double> terms, f, m, row_lse, max_distance, grad_e, grad_scale, grad_W, grad_b;
};

double lse_of(const std::vector<double>& x) {
  double m = -INFINITY;
  for (double v : x) m = std::max(m, v);
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  return m + std::log(s);
}

// The formulas, in double; tiny: the smallest normal of the compute dtype. Without `backward`, the forward only.
Ref reference(const Shape& sh, const Data& d, double tiny, bool backward = true) {
  const int64_t N = sh.N, D = sh.D, T = sh.T, K = sh.K, M = d.M, C = sh.channels();
  const double eps = 1e-12, s = d.scale[0];
  Ref r;
  std::vector<double> mean(M * C, 0);  // the slots' means of the features: f, or the head's input m
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = d.frame_segment[n * T + t];
      if (i < 0 || i >= M || !d.valid[i]) continue;
      for (int64_t k = 0; k < C; ++k) mean[i * C + k] += d.e[(n * C + k) * T + t];
    }
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < C; ++k) mean[i * C + k] /= d.count[i];
  if (sh.head()) {  // f_i = W m_i + b for valid slots
    r.m = mean;
    r.f.assign(M * D, 0);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t dim = 0; dim < D && d.valid[i]; ++dim) {
        r.f[i * D + dim] = d.b[dim];
        for (int64_t k = 0; k < C; ++k) r.f[i * D + dim] += d.W[dim * C + k] * mean[i * C + k];
      }
  } else {
    r.f = mean;
  }
  int64_t nvalid = 0;
  for (int64_t i = 0; i < M; ++i) nvalid += d.valid[i];
  const double rows = std::max<int64_t>(nvalid, 1);
  std::vector<double> norm(M), fhat(M * D), E(M * D), L(M * M), dist(M * M), bias(M * M);
  for (int64_t i = 0; i < M; ++i) {
    double nn = 0;
    for (int64_t k = 0; k < D; ++k) nn += r.f[i * D + k] * r.f[i * D + k];
    norm[i] = std::sqrt(nn);
    const int64_t lab = std::min<int64_t>(std::max<int64_t>(d.label[i], 0), K - 1);
    for (int64_t k = 0; k < D; ++k) {
      fhat[i * D + k] = r.f[i * D + k] / std::max(norm[i], eps);
      E[i * D + k] = d.U[lab * D + k];
    }
  }
  double dmax = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < M; ++j) {
      double dot = 0, sq = 0;
      for (int64_t k = 0; k < D; ++k) {
        dot += fhat[i * D + k] * E[j * D + k];
        sq += (r.f[i * D + k] - r.f[j * D + k]) * (r.f[i * D + k] - r.f[j * D + k]);
      }
      L[i * M + j] = s * dot;
      dist[i * M + j] = d.valid[i] && d.valid[j] ? std::sqrt(sq) : 0.0;
      bias[i * M + j] = d.valid[i] && !d.valid[j] ? -1e30 : 0.0;
      dmax = std::max(dmax, dist[i * M + j]);
    }
  int64_t ties = 0;
  for (double v : dist) ties += v == dmax;
  r.max_distance = {dmax, double(ties)};
  auto X = [&](int which, int64_t i, int64_t j) {  // row i of L, Lᵀ, P at column j, + bias
    const double x = which == 0 ? L[i * M + j] : which == 1 ? L[j * M + i] : 1 - dist[i * M + j] / (dmax + tiny);
    return x + bias[i * M + j];
  };
  r.row_lse.assign(3 * M, 0);
  double kl[3] = {0, 0, 0};
  for (int which = 0; which < 3; ++which)
    for (int64_t i = 0; i < M; ++i) {
      std::vector<double> row(M);
      for (int64_t j = 0; j < M; ++j) row[j] = X(which, i, j);
      const double lse = lse_of(row);
      r.row_lse[which * M + i] = lse;
      const std::vector<double>& w = which < 2 ? d.wa : d.wr;
      const std::vector<double>& lw = which < 2 ? d.lwa : d.lwr;
      for (int64_t j = 0; j < M; ++j) kl[which] += w[i * M + j] * (lw[i * M + j] - (row[j] - lse));
    }
  r.terms = {(kl[0] + kl[1]) / (2 * rows), kl[2] / rows};
  if (!backward) return r;

  const double ga = d.gt[0], gr = d.gt[1];
  std::vector<double> Wa(M, 0), Wr(M, 0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < M; ++j) Wa[i] += d.wa[i * M + j], Wr[i] += d.wr[i * M + j];
  std::vector<double> G(M * M), H(M * M);
  double grad_s = 0, grad_dmax = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < M; ++j) {
      const double pl = std::exp(X(0, i, j) - r.row_lse[i]);
      const double plt_ji = std::exp(X(1, j, i) - r.row_lse[M + j]);  // p^Lᵀ_ji
      G[i * M + j] = ga / (2 * rows) * ((Wa[i] * pl - d.wa[i * M + j]) + (Wa[j] * plt_ji - d.wa[j * M + i]));
      grad_s += G[i * M + j] * L[i * M + j] / s;
      const double pp = std::exp(X(2, i, j) - r.row_lse[2 * M + i]);
      H[i * M + j] = gr / rows * (Wr[i] * pp - d.wr[i * M + j]);
      grad_dmax += H[i * M + j] * dist[i * M + j] / ((dmax + tiny) * (dmax + tiny));
    }
  r.grad_scale = {grad_s};
  auto delta = [&](int64_t i, int64_t j) {
    if (!(d.valid[i] && d.valid[j])) return 0.0;
    return -H[i * M + j] / (dmax + tiny) + (dist[i * M + j] == dmax ? grad_dmax / ties : 0.0);
  };
  std::vector<double> gf(M * D, 0);
  for (int64_t i = 0; i < M; ++i) {
    if (!d.valid[i]) continue;
    std::vector<double> g(D, 0);
    for (int64_t j = 0; j < M; ++j)
      for (int64_t k = 0; k < D; ++k) g[k] += s * G[i * M + j] * E[j * D + k];
    double fg = 0;
    for (int64_t k = 0; k < D; ++k) fg += fhat[i * D + k] * g[k];
    for (int64_t k = 0; k < D; ++k)
      gf[i * D + k] = norm[i] > eps ? (g[k] - fhat[i * D + k] * fg) / norm[i] : g[k] / eps;
    for (int64_t j = 0; j < M; ++j) {
      if (!(dist[i * M + j] > 0)) continue;
      const double c = (delta(i, j) + delta(j, i)) / dist[i * M + j];
      for (int64_t k = 0; k < D; ++k) gf[i * D + k] += c * (r.f[i * D + k] - r.f[j * D + k]);
    }
  }
  // what each frame of slot i gets: grad f_i / count_i, or with the head Wᵀ γ_i / count_i (γ_i = grad f_i)
  std::vector<double> frame_rows(M * C, 0);
  if (sh.head()) {
    r.grad_W.assign(D * C, 0);
    r.grad_b.assign(D, 0);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t dim = 0; dim < D; ++dim) {
        r.grad_b[dim] += gf[i * D + dim];
        for (int64_t k = 0; k < C; ++k) {
          r.grad_W[dim * C + k] += gf[i * D + dim] * r.m[i * C + k];
          frame_rows[i * C + k] += d.W[dim * C + k] * gf[i * D + dim] / d.count[i];
        }
      }
  } else {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < D; ++k) frame_rows[i * D + k] = gf[i * D + k] / d.count[i];
  }
  r.grad_e.assign(N * C * T, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = d.frame_segment[n * T + t];
      if (i < 0 || i >= M) continue;
      for (int64_t k = 0; k < C; ++k) r.grad_e[(n * C + k) * T + t] = frame_rows[i * C + k];
    }
  return r;
}

// softmax over the valid columns of a valid row of z(i, j) -> w, lw (0 elsewhere).
template <class Z>
void kl_target(const Data& d, Z z, std::vector<double>& w, std::vector<double>& lw) {
  const int64_t M = d.M;
  w.assign(M * M, 0);
  lw.assign(M * M, 0);
  for (int64_t i = 0; i < M; ++i) {
    if (!d.valid[i]) continue;
    std::vector<double> row;
    for (int64_t j = 0; j < M; ++j)
      if (d.valid[j]) row.push_back(z(i, j));
    const double lse = lse_of(row);
    for (int64_t j = 0; j < M; ++j)
      if (d.valid[j]) {
        lw[i * M + j] = z(i, j) - lse;
        w[i * M + j] = std::exp(lw[i * M + j]);
      }
  }
}

// Labels (runs of 1 .. max_run frames, about 1 in 8 runs ignored; row 1 all ignored), their runs as slots, `extra`
// padding slots, frame_segment, features ~ U(-2, 2) (ties and the zero slot as the shape asks), unit embeddings,
// logit_scale and the two KL targets (TAG random symmetric), grad_terms, and with the head its weight and bias
// ~ U(±1/√C) (the model's initialisation). Features not yet rounded.
Data make_data(std::mt19937_64& rng, const Shape& sh) {
  const int64_t N = sh.N, D = sh.D, T = sh.T, K = sh.K, C = sh.channels();
  Data d;
  std::vector<int64_t> labels(N * T, kIgnored);
  for (int64_t n = 0; n < N; ++n) {
    if (sh.ignored_row && n == 1) continue;
    int64_t prev = -1;
    for (int64_t t = 0; t < T;) {
      const int64_t len = 1 + static_cast<int64_t>(rng() % sh.max_run);
      int64_t lab = rng() % 8 == 0 ? kIgnored : static_cast<int64_t>(rng() % K);
      if (lab == prev && K > 1) lab = (lab + 1) % K;
      for (int64_t u = t; u < std::min(T, t + len); ++u) labels[n * T + u] = lab;
      prev = lab;
      t += len;
    }
  }
  d.frame_segment.assign(N * T, -2);  // -2: no slot (written below)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t lab = labels[n * T + t];
      if (lab == kIgnored) continue;
      if (t == 0 || labels[n * T + t - 1] != lab) {
        d.video.push_back(n), d.start.push_back(t), d.label.push_back(lab), d.count.push_back(0);
        d.valid.push_back(1);
      }
      d.frame_segment[n * T + t] = static_cast<int64_t>(d.video.size()) - 1;
      d.count.back() += 1;
    }
  const int64_t real = static_cast<int64_t>(d.video.size());
  for (int i = 0; i < (real == 0 && sh.extra == 0 ? 1 : sh.extra); ++i)  // M >= 1
    d.video.push_back(0), d.start.push_back(0), d.label.push_back(0), d.count.push_back(1), d.valid.push_back(0);
  d.M = static_cast<int64_t>(d.video.size());
  const int64_t M = d.M;
  for (auto& x : d.frame_segment)
    if (x == -2) {
      const int c = static_cast<int>(rng() % 3);
      x = c == 0 ? M : c == 1 ? -1 : M + 3;
    }
  d.e = uniform_values(rng, N * C * T, -2, 2);
  auto fill_slot = [&](int64_t i, auto value) {  // value(k, t_in_slot)
    for (int64_t k = 0; k < C; ++k)
      for (int64_t u = 0; u < d.count[i]; ++u) d.e[(d.video[i] * C + k) * T + d.start[i] + u] = value(k, u);
  };
  if (sh.zero && real >= 1) {
    fill_slot(0, [](int64_t, int64_t) { return 0.0; });
    if (!sh.head()) d.floor_slots.push_back(0);  // with the head f = b
  }
  if (sh.ties && real >= 4) {
    // B and C: equal counts, C a copy of B; A far from both: dmax = d_AB = d_AC (and mirrors)
    for (int64_t b = 1; b < real; ++b)
      for (int64_t c = b + 1; c < real; ++c) {
        if (d.count[b] != d.count[c]) continue;
        int64_t a = 1;
        while (a == b || a == c) ++a;
        if (a >= real) continue;
        fill_slot(a, [&](int64_t k, int64_t u) { return d.e[(d.video[a] * C + k) * T + d.start[a] + u] + 9; });
        fill_slot(b, [&](int64_t k, int64_t u) { return d.e[(d.video[b] * C + k) * T + d.start[b] + u] - 9; });
        fill_slot(c, [&](int64_t k, int64_t u) { return d.e[(d.video[b] * C + k) * T + d.start[b] + u]; });
        b = c = real;  // done
      }
  }
  d.U = uniform_values(rng, K * D, -1, 1);
  for (int64_t k = 0; k < K; ++k) {
    double nn = 0;
    for (int64_t x = 0; x < D; ++x) nn += d.U[k * D + x] * d.U[k * D + x];
    for (int64_t x = 0; x < D; ++x) d.U[k * D + x] /= std::sqrt(nn);
  }
  d.scale = {2.659};
  std::vector<double> tag = uniform_values(rng, K * K, 0, 1);
  kl_target(d, [&](int64_t i, int64_t j) { return 10.0 * (d.label[i] == d.label[j]); }, d.wa, d.lwa);
  kl_target(d, [&](int64_t i, int64_t j) {
    const int64_t a = d.label[i], b = d.label[j];
    return 10.0 * (tag[a * K + b] + tag[b * K + a]) / 2;
  }, d.wr, d.lwr);
  d.gt = {0.8, 1.3};
  if (sh.head()) {
    const double bound = 1 / std::sqrt(static_cast<double>(C));
    d.W = uniform_values(rng, D * C, -bound, bound);
    d.b = uniform_values(rng, D, -bound, bound);
  }
  return d;
}

// An Acc buffer holding `values` rounded to Acc; the rounded values as doubles.
template <class T>
std::vector<double> store(Buf<T>& b, const std::vector<double>& values) {
  for (size_t i = 0; i < b.n; ++i) b.p[i] = from_d<T>(values[i]);
  return b.values();
}
template <class T>
void store_ints(Buf<T>& b, const std::vector<int64_t>& values) {
  for (size_t i = 0; i < b.n; ++i) b.p[i] = static_cast<T>(values[i]);
}

// The reference's gradients vs central differences of L = grad_terms . terms, on cases without ties (but the
// mirror pair) and without the norm floor: without and with the feature head.
void check_reference() {
  const double tiny = 2.2250738585072014e-308;
  {
    const Shape sh{2, 3, 14, 3, 2, 4, false, false, false};
    std::mt19937_64 rng(5);
    Data d = make_data(rng, sh);
    const Ref r = reference(sh, d, tiny);
    auto loss = [&] { return dot(d.gt, reference(sh, d, tiny, false).terms); };
    check_gradients("reference self-check: grad_features, grad_logit_scale vs central differences",
                    {{&d.e, &r.grad_e, "grad_features"}, {&d.scale, &r.grad_scale, "grad_logit_scale"}}, loss, 1e-6,
                    1e-6);
  }
  const Shape sh = with_head({2, 3, 14, 3, 2, 4, false, false, false}, 5);
  std::mt19937_64 rng(6);
  Data d = make_data(rng, sh);
  const Ref r = reference(sh, d, tiny);
  auto loss = [&] { return dot(d.gt, reference(sh, d, tiny, false).terms); };
  check_gradients("reference self-check with the feature head: grad_features, grad_logit_scale, grad_head_weight, "
                  "grad_head_bias vs central differences",
                  {{&d.e, &r.grad_e, "grad_features"},
                   {&d.scale, &r.grad_scale, "grad_logit_scale"},
                   {&d.W, &r.grad_W, "grad_head_weight"},
                   {&d.b, &r.grad_b, "grad_head_bias"}},
                  loss, 1e-6, 1e-6);
}

template <class In, class Acc>
std::vector<double> run_case(const std::string& why, Shape sh, int offset, Expect = {}, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  Data d = make_data(rng, sh);
  const int64_t N = sh.N, D = sh.D, T = sh.T, K = sh.K, M = d.M, C = sh.channels();
  const bool head = sh.head();
  int64_t nvalid = 0;
  for (char v : d.valid) nvalid += v;
  char sizes[200];
  std::snprintf(sizes, sizeof(sizes), "N=%d D=%d T=%d K=%d M=%lld (%lld valid)", sh.N, sh.D, sh.T, sh.K,
                static_cast<long long>(M), static_cast<long long>(nvalid));
  Case c(case_title<In>(sizes + (head ? " head C=" + std::to_string(C) : std::string()), offset, why));

  const size_t nxt = N * C * T, mm = M * M, head_wc = head ? D * C : 0;
  Buf<In> features(nxt, offset), grad_features(nxt, offset);
  Buf<int64_t> frame_segment(N * T, offset), video(M, offset), start(M, offset), label(M, offset);
  Buf<bool> valid(M, offset);
  Buf<Acc> count(M, offset), U(K * D, offset), scale(1, offset), wa(mm, offset), lwa(mm, offset), wr(mm, offset),
      lwr(mm, offset), gt(2, offset);
  Buf<Acc> terms(2, offset), f(M * D, offset), row_lse(3 * M, offset), max_distance(2, offset),
      grad_scale(1, offset);
  Buf<Acc> head_weight(head_wc, offset), head_bias(head ? D : 0, offset), segment_means(head ? M * C : 0, offset),
      grad_head_weight(head_wc, offset), grad_head_bias(head ? D : 0, offset);
  Buf<Acc> ws_f(static_cast<size_t>(trgnet::al::workspace_elems(M, D, 0, false)));
  Buf<Acc> ws_b(static_cast<size_t>(trgnet::al::workspace_elems(M, D, head ? C : 0, true)));
  d.e = store(features, d.e);
  store_ints(frame_segment, d.frame_segment);
  store_ints(video, d.video);
  store_ints(start, d.start);
  store_ints(label, d.label);
  for (int64_t i = 0; i < M; ++i) valid.p[i] = d.valid[i] != 0;
  d.count = store(count, d.count);
  d.U = store(U, d.U);
  d.scale = store(scale, d.scale);
  d.wa = store(wa, d.wa);
  d.lwa = store(lwa, d.lwa);
  d.wr = store(wr, d.wr);
  d.lwr = store(lwr, d.lwr);
  d.gt = store(gt, d.gt);
  if (head) {
    d.W = store(head_weight, d.W);
    d.b = store(head_bias, d.b);
  }
  auto head_ptr = [head](auto& buf) { return head ? buf.p : nullptr; };

  const trgnet::al::Slots<Acc> slots{count.p, valid.p, label.p, U.p, scale.p, wa.p, wr.p, N, D, T, M, K, C};
  const cudaError_t e1 = trgnet::launch_aris_losses_forward(
      trgnet::al::ForwardArgs<In, Acc>{slots, features.p, video.p, start.p, lwa.p, lwr.p, terms.p, f.p, row_lse.p,
                                       max_distance.p, ws_f.p, head_ptr(head_weight), head_ptr(head_bias),
                                       head_ptr(segment_means)},
      nullptr);
  const long launches_f = c.delta(&kemu::Stats::launches);
  const cudaError_t e2 = trgnet::launch_aris_losses_backward(
      trgnet::al::BackwardArgs<In, Acc>{slots, frame_segment.p, gt.p, f.p, row_lse.p, max_distance.p,
                                        grad_features.p, grad_scale.p, ws_b.p, head_ptr(head_weight),
                                        head_ptr(segment_means), head_ptr(grad_head_weight), head_ptr(grad_head_bias)},
      nullptr);
  const long launches_b = c.delta(&kemu::Stats::launches) - launches_f;
  c.require(e1 == cudaSuccess && e2 == cudaSuccess, "launcher returned an error");
  if (head)
    c.require(launches_f == 6 && launches_b == 7, "forward 6 and backward 7 launches with the head");
  else
    c.require(launches_f == 5 && launches_b == 5, "forward 5 and backward 5 launches");

  const Ref r = reference(sh, d, trgnet::al::smallest_normal(Acc()));
  const double t = tol<In>();
  Outputs outs;
  static const char* term_names[2] = {"absolute", "relative"};
  for (int j = 0; j < 2; ++j) {  // each term on its own (one may be much smaller than the other)
    long nans = 0;
    c.err(term_names[j], rel_err({to_d(terms.p[j])}, {r.terms[j]}, nans, 1e-12), t);
    outs.nans += nans;
  }
  outs.check(c, terms, r.terms, "terms", t);
  outs.check(c, f, r.f, "segment_features", t);
  if (head) outs.check(c, segment_means, r.m, "segment_means", t);
  outs.check(c, row_lse, r.row_lse, "row_lse", t);
  outs.check(c, max_distance, r.max_distance, "max_distance", t);
  c.require(to_d(max_distance.p[1]) == r.max_distance[1],
            "ties c = " + std::to_string(to_d(max_distance.p[1])) + ", reference " +
                std::to_string(r.max_distance[1]));
  outs.check(c, grad_scale, r.grad_scale, "grad_logit_scale", t, 1e-12);
  if (head) {
    outs.check(c, grad_head_weight, r.grad_W, "grad_head_weight", t, 1e-12);
    outs.check(c, grad_head_bias, r.grad_b, "grad_head_bias", t, 1e-12);
  }
  // the frames of zero-feature slots carry g / 1e-12: their error apart from the others'
  const auto ge = grad_features.values();
  std::vector<double> floor_x, floor_ref, other_x, other_ref;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < C; ++k)
      for (int64_t u = 0; u < T; ++u) {
        const int64_t i = d.frame_segment[n * T + u], at = (n * C + k) * T + u;
        const bool on_floor = std::find(d.floor_slots.begin(), d.floor_slots.end(), i) != d.floor_slots.end();
        (on_floor ? floor_x : other_x).push_back(ge[at]);
        (on_floor ? floor_ref : other_ref).push_back(r.grad_e[at]);
      }
  c.err("grad_features", rel_err(other_x, other_ref, outs.nans, 1e-12), t);
  if (!floor_x.empty()) c.err("grad_features(norm floor)", rel_err(floor_x, floor_ref, outs.nans, 1e-12), t);
  c.require(grad_features.prefix_intact(), "grad_features written before its start");
  outs.all.insert(outs.all.end(), ge.begin(), ge.end());
  outs.finish(c);
  char b[160];
  std::snprintf(b, sizeof(b), "| dmax %.4g c %g, %lld pair tiles", r.max_distance[0], r.max_distance[1],
                static_cast<long long>(trgnet::al::pair_tiles(M) * trgnet::al::pair_tiles(M)));
  c.note(b);
  c.finish();
  return outs.all;
}

// Random small cases; with `head`, C random in [1, 40].
template <class In, class Acc>
void random_cases(int count, uint64_t seed, bool head = false) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < count; ++i) {
    Shape s{1 + static_cast<int>(rng() % 4), 1 + static_cast<int>(rng() % 40), 1 + static_cast<int>(rng() % 90),
            1 + static_cast<int>(rng() % 6), static_cast<int>(rng() % 5), 1 + static_cast<int>(rng() % 12),
            rng() % 2 == 0, rng() % 2 == 0, rng() % 2 == 0};
    if (head) s.C = 1 + static_cast<int>(rng() % 40);
    run_case<In, Acc>(head ? "random, head" : "random", s, 0, {}, seed * 1000 + i);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int random_count = argc > 1 ? std::atoi(argv[1]) : 8;
  return run_driver("aris_losses", check_reference, [&] {
    run_case<double, double>("padding, ignored row, ties, zero slot", {3, 7, 50, 5, 3}, 0);
    run_case<double, double>("no ties, no zero slot", {3, 7, 50, 5, 3, 6, false, false}, 0);
    run_case<double, double>("M = 1 (dmax = 0)", {1, 5, 4, 3, 0, 8, false, false, false}, 0);
    run_case<double, double>("one valid slot, 3 padding (dmax = 0, M^2 ties)", {1, 5, 4, 3, 3, 8, false, false}, 0);
    run_case<double, double>("M = 1, T = 1, D = 1, K = 1", {1, 1, 1, 1, 0, 1, false, false, false}, 0);
    run_case<double, double>("K = 1 (one label: the whole row a slot)", {3, 6, 20, 1, 2, 4, false, true, false}, 0);
    run_case<double, double>("D = 1", {3, 1, 40, 4, 2}, 0);
    run_case<double, double>("T = 1", {4, 5, 1, 4, 2, 1, false, false, false}, 0);
    run_case<double, double>("odd D over 3 pair chunks and 3 mean groups", {2, 71, 37, 4, 1}, 0);
    run_case<double, double>("D = 257: two slot-gradient passes", {2, 257, 24, 3, 1}, 0);
    run_case<double, double>("M > 256: several pair tiles, staged chunks", {5, 3, 150, 6, 5, 2}, 0);
    run_case<double, double>("long slots, several frame tiles", {2, 9, 700, 3, 1, 300}, 0);
    run_case<double, double>("single-frame slots only", {2, 6, 30, 6, 2, 1}, 0);
    run_case<float, float>("padding, ties, zero slot", {3, 33, 61, 5, 3}, 0);
    run_case<float, float>("M > 256", {5, 5, 150, 6, 5, 2}, 0);
    run_case<float, float>("long slots, several frame tiles", {2, 40, 530, 3, 2, 200}, 0);
    run_case<float, float>("one valid slot (dmax = 0)", {1, 5, 4, 3, 3, 8, false, false}, 0);
    run_case<__nv_bfloat16, float>("bf16", {3, 24, 70, 5, 3}, 0);
    run_case<__nv_bfloat16, float>("bf16, long slots", {2, 17, 300, 4, 2, 100}, 0);
    run_case<__half, float>("f16, no zero slot (its gradient overflows f16)", {3, 24, 70, 5, 3, 6, true, false}, 0);
    pair_case<float>(run_case<float, float>, Shape{3, 37, 90, 5, 4});
    pair_case<double>(run_case<double, double>, Shape{3, 20, 60, 4, 2});
    pair_case<__nv_bfloat16>(run_case<__nv_bfloat16, float>, Shape{2, 16, 64, 4, 3});
    run_case<double, double>("head, C = 1", with_head({3, 5, 40, 4, 3}, 1), 0);
    run_case<double, double>("head, odd C > odd D, padding", with_head({3, 3, 50, 5, 3}, 7), 0);
    run_case<double, double>("head, C < D over 3 pair chunks", with_head({2, 71, 37, 4, 1}, 3), 0);
    run_case<double, double>("head, C = 300: two blocks of channels", with_head({2, 5, 30, 3, 2}, 300), 0);
    run_case<double, double>("head, D = 257: two blocks of outputs", with_head({2, 257, 24, 3, 1}, 9), 0);
    run_case<double, double>("head, one valid slot, 3 padding (dmax = 0)",
                             with_head({1, 5, 4, 3, 3, 8, false, false}, 6), 0);
    run_case<double, double>("head, M = 1, T = 1, D = 1, K = 1", with_head({1, 1, 1, 1, 0, 1, false, false, false}, 1),
                             0);
    run_case<double, double>("head, M > 256", with_head({5, 3, 150, 6, 5, 2}, 4), 0);
    run_case<float, float>("head, padding, ties, zero slot", with_head({3, 33, 61, 5, 3}, 20), 0);
    run_case<float, float>("head, long slots, several frame tiles", with_head({2, 40, 530, 3, 2, 200}, 11), 0);
    run_case<__nv_bfloat16, float>("bf16, head", with_head({3, 24, 70, 5, 3}, 16), 0);
    run_case<__half, float>("f16, head (zero slot: f = b)", with_head({3, 24, 70, 5, 3}, 12), 0);
    pair_case<float>(run_case<float, float>, with_head(Shape{3, 37, 90, 5, 4}, 19));
    pair_case<double>(run_case<double, double>, with_head(Shape{3, 20, 60, 4, 2}, 45));
    pair_case<__half>(run_case<__half, float>, with_head(Shape{2, 16, 64, 4, 3}, 8));
    random_cases<double, double>(random_count, 7);
    random_cases<float, float>(random_count, 8);
    random_cases<double, double>(random_count, 9, true);
    random_cases<float, float>(random_count, 10, true);
    unsupported_sizes([](Case& c) {
      float dummy[8] = {};
      int64_t idx[8] = {};
      bool flags[8] = {};
      const trgnet::al::Slots<float> s{dummy, flags, idx, dummy, dummy, dummy, dummy, 1, 1, 1, 1, 1, 1};
      trgnet::al::ForwardArgs<float, float> fa{s,     dummy, idx,   idx,   dummy, dummy,
                                               dummy, dummy, dummy, dummy, dummy};
      fa.s.M = 0;
      c.require(trgnet::launch_aris_losses_forward(fa, nullptr) == cudaErrorInvalidValue,
                "forward with M = 0 must return cudaErrorInvalidValue");
      fa.s.M = 1;
      fa.s.D = 0;
      c.require(trgnet::launch_aris_losses_forward(fa, nullptr) == cudaErrorInvalidValue,
                "forward with D = 0 must return cudaErrorInvalidValue");
      fa.s.D = 1;
      fa.workspace = nullptr;
      c.require(trgnet::launch_aris_losses_forward(fa, nullptr) == cudaErrorInvalidValue,
                "forward without a workspace must return cudaErrorInvalidValue");
      fa.workspace = dummy;
      fa.s.C = 2;
      c.require(trgnet::launch_aris_losses_forward(fa, nullptr) == cudaErrorInvalidValue,
                "forward without the head with C != D must return cudaErrorInvalidValue");
      fa.head_weight = dummy;
      fa.segment_means = dummy;
      c.require(trgnet::launch_aris_losses_forward(fa, nullptr) == cudaErrorInvalidValue,
                "forward with head_weight without head_bias must return cudaErrorInvalidValue");
      fa.head_bias = dummy;
      fa.s.C = 0;
      c.require(trgnet::launch_aris_losses_forward(fa, nullptr) == cudaErrorInvalidValue,
                "forward with the head and C = 0 must return cudaErrorInvalidValue");
      trgnet::al::BackwardArgs<float, float> ba{s, idx, dummy, dummy, dummy, dummy, dummy, dummy, dummy};
      ba.s.K = 0;
      c.require(trgnet::launch_aris_losses_backward(ba, nullptr) == cudaErrorInvalidValue,
                "backward with K = 0 must return cudaErrorInvalidValue");
      ba.s.K = 1;
      ba.s.T = 0;
      c.require(trgnet::launch_aris_losses_backward(ba, nullptr) == cudaErrorInvalidValue,
                "backward with T = 0 must return cudaErrorInvalidValue");
      ba.s.T = 1;
      ba.frame_segment = nullptr;
      c.require(trgnet::launch_aris_losses_backward(ba, nullptr) == cudaErrorInvalidValue,
                "backward without frame_segment must return cudaErrorInvalidValue");
      ba.frame_segment = idx;
      ba.s.C = 3;
      c.require(trgnet::launch_aris_losses_backward(ba, nullptr) == cudaErrorInvalidValue,
                "backward without the head with C != D must return cudaErrorInvalidValue");
      ba.head_weight = dummy;
      ba.segment_means = dummy;
      ba.grad_head_weight = dummy;
      c.require(trgnet::launch_aris_losses_backward(ba, nullptr) == cudaErrorInvalidValue,
                "backward with the head without grad_head_bias must return cudaErrorInvalidValue");
    });
  });
}
