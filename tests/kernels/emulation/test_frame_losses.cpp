// Emulated run of the CUDA kernels of the fused per-frame loss terms (kernels/frame_losses.cu, compiled by g++
// against shim/ after gen_sources.py) against a double-precision reference written here from the formulas of
// trgnet_fast/ops/frame_losses/__init__.py (forward: terms and time_lse; backward: the documented gradient, with
// q_k(prev(t)) evaluated on prev(t)'s own partner), on the same rounded inputs. The reference's gradients are
// checked against central differences of L = grad_terms . terms (inverse pair indices, both axes). Cases: both
// GS-TMSE axes, ignored labels (255, -100), rows with one valid frame or none, pair indices "none" written as the
// frame itself, -1 or T + 2, NaN pair weights on frames without a pair (they must not leak), random non-inverse and
// out-of-range next_frame / previous_frame, S > R and R > S, several frame tiles, K = 1 .. kMaxClasses (several
// class groups), T = 1, a small threshold (clamped squares), fp32 / fp64 / bf16 / fp16, base pointers aligned and
// misaligned by one element (bitwise-equal results, other thread order), and sizes the launchers refuse. The
// forward must take <= 3 launches, the backward <= 2. Argument: random cases per dtype (8).
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "frame_losses.cuh"
#include "frame_losses.h"
#include "test_util.h"

using namespace emu_test;

namespace {

struct Shape {
  int S, N, K, T, R;
  bool time_axis;
  double threshold = 4.0;
  bool random_indices = false;  // next_frame / previous_frame random (non-inverse, some out of range)
};

struct Expect {};

// Inputs of one case as doubles (already rounded to the storage types).
struct Data {
  std::vector<double> z, b;                                        // logits (S, N, K, T), boundary_logits (R, N, T)
  std::vector<int64_t> labels, next, prev;                         // (N, T)
  std::vector<double> ce_w, pair_w, boundary, boundary_w, pos_w;  // (N, T) and (1)
  std::vector<double> gt;                                          // grad_terms (3)
};

struct Ref {
  std::vector<double> terms, time_lse, gl, gb;
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

// The formulas, in double. Without `backward`, only terms and time_lse.
Ref reference(const Shape& sh, const Data& d, bool backward = true) {
  const int S = sh.S, N = sh.N, K = sh.K, T = sh.T, R = sh.R;
  const double thr2 = sh.threshold * sh.threshold;
  const double gc = d.gt[0] / S, gg = d.gt[1] / (double(S) * K), gb = d.gt[2] / R;
  Ref r;
  r.terms.assign(3, 0);
  r.time_lse.assign(sh.time_axis ? size_t(S) * N * 2 * K : 0, 0);
  r.gl.assign(d.z.size(), 0);
  r.gb.assign(d.b.size(), 0);
  for (int s = 0; s < S; ++s)
    for (int n = 0; n < N; ++n) {
      const int64_t row = int64_t(s) * N + n;
      auto z = [&](int k, int64_t t) { return d.z[(row * K + k) * T + t]; };
      std::vector<double> lse_c(T), lse1(K, 0), lse2(K, 0);
      for (int t = 0; t < T; ++t) {
        std::vector<double> col(K);
        for (int k = 0; k < K; ++k) col[k] = z(k, t);
        lse_c[t] = lse_of(col);
      }
      std::vector<int64_t> nx(T), pv(T);
      for (int t = 0; t < T; ++t) {
        nx[t] = partner(d.next[n * T + t], t, T);
        pv[t] = partner(d.prev[n * T + t], t, T);
      }
      if (sh.time_axis) {
        for (int k = 0; k < K; ++k) {
          std::vector<double> a, b;
          for (int t = 0; t < T; ++t) {
            if (nx[t] >= 0) a.push_back(z(k, t));
            if (pv[t] >= 0) b.push_back(z(k, t));
          }
          lse1[k] = lse_of(a);
          lse2[k] = lse_of(b);
          r.time_lse[row * 2 * K + k] = lse2[k];
          r.time_lse[row * 2 * K + K + k] = lse1[k];
        }
      }
      auto dk = [&](int k, int64_t u) {
        const int64_t v = nx[u];
        return sh.time_axis ? z(k, v) - z(k, u) - (lse2[k] - lse1[k]) : (z(k, v) - lse_c[v]) - (z(k, u) - lse_c[u]);
      };
      std::vector<double> q(size_t(K) * T, 0), Q(K, 0);
      for (int t = 0; t < T; ++t) {
        const int64_t y = d.labels[n * T + t];
        const bool in_range = y >= 0 && y < K;
        r.terms[0] += d.ce_w[n * T + t] * (in_range ? lse_c[t] - z(int(y), t) : 0.0);
        if (nx[t] >= 0) {
          double sum = 0;
          for (int k = 0; k < K; ++k) {
            const double dd = dk(k, t);
            sum += std::min(dd * dd, thr2);
            q[size_t(k) * T + t] = dd * dd <= thr2 ? 2 * d.pair_w[n * T + t] * dd : 0.0;
            Q[k] += q[size_t(k) * T + t];
          }
          r.terms[1] += d.pair_w[n * T + t] * sum;
        }
      }
      if (!backward) continue;
      for (int t = 0; t < T; ++t) {
        const int64_t y = d.labels[n * T + t];
        const bool in_range = y >= 0 && y < K;
        const int64_t p = pv[t];
        std::vector<double> e(K);
        double sum_e = 0;
        for (int k = 0; k < K; ++k) {
          const double qp = p >= 0 ? q[size_t(k) * T + p] : 0.0, qt = q[size_t(k) * T + t];
          e[k] = gg * (qp - qt);
          sum_e += e[k];
        }
        for (int k = 0; k < K; ++k) {
          const double soft = std::exp(z(k, t) - lse_c[t]);
          double g = in_range ? gc * d.ce_w[n * T + t] * (soft - (k == y ? 1.0 : 0.0)) : 0.0;
          if (sh.time_axis) {
            g += e[k] + gg * Q[k] *
                            ((nx[t] >= 0 ? std::exp(z(k, t) - lse1[k]) : 0.0) -
                             (p >= 0 ? std::exp(z(k, t) - lse2[k]) : 0.0));
          } else {
            g += e[k] - soft * sum_e;
          }
          r.gl[(row * K + k) * T + t] = g;
        }
      }
    }
  for (int rr = 0; rr < R; ++rr)
    for (int n = 0; n < N; ++n)
      for (int t = 0; t < T; ++t) {
        const int64_t i = n * T + t, j = (int64_t(rr) * N + n) * T + t;
        const double x = d.b[j], yb = d.boundary[i], lw = 1 + (d.pos_w[0] - 1) * yb;
        r.terms[2] += d.boundary_w[i] * ((1 - yb) * x + lw * (std::log1p(std::exp(-std::fabs(x))) + std::max(-x, 0.0)));
        r.gb[j] = gb * d.boundary_w[i] * ((1 - yb) - lw / (1 + std::exp(x)));
      }
  r.terms[0] /= S;
  r.terms[1] /= double(S) * K;
  r.terms[2] /= R;
  return r;
}

// Labels (about 1 in 5 ignored, as 255 or -100; row 1 (if any) with a single valid frame, row 2 with none), the
// GS-TMSE pairs of consecutive valid frames (inverse indices; "none" as the frame itself, -1 or T + 2), or random
// indices; weights; NaN pair weights on the frames without a pair.
void make_frames(std::mt19937_64& rng, const Shape& sh, Data& d) {
  const int N = sh.N, K = sh.K, T = sh.T;
  d.labels.assign(size_t(N) * T, 0);
  d.next.assign(size_t(N) * T, 0);
  d.prev.assign(size_t(N) * T, 0);
  auto none = [&](int64_t t) -> int64_t {
    const int c = static_cast<int>(rng() % 3);
    return c == 0 ? t : c == 1 ? -1 : T + 2;
  };
  for (int n = 0; n < N; ++n) {
    std::vector<int64_t> valid;
    for (int t = 0; t < T; ++t) {
      int64_t y = static_cast<int64_t>(rng() % K);
      if (rng() % 5 == 0) y = rng() % 2 ? 255 : -100;
      if (n == 1) y = t == T / 2 ? y % K : 255;  // one valid frame
      if (n == 2) y = -100;                      // none
      d.labels[n * T + t] = y;
      if (y >= 0 && y < K) valid.push_back(t);
    }
    for (int t = 0; t < T; ++t) {
      d.next[n * T + t] = none(t);
      d.prev[n * T + t] = none(t);
    }
    for (size_t i = 0; i + 1 < valid.size(); ++i) {
      d.next[n * T + valid[i]] = valid[i + 1];
      d.prev[n * T + valid[i + 1]] = valid[i];
    }
    if (sh.random_indices)
      for (int t = 0; t < T; ++t) {
        d.next[n * T + t] = static_cast<int64_t>(rng() % (T + 6)) - 3;
        d.prev[n * T + t] = static_cast<int64_t>(rng() % (T + 6)) - 3;
      }
  }
}

// The reference's gradients vs central differences of L = grad_terms . terms (inverse pairs: there the documented
// backward is the true gradient), both axes.
void check_reference() {
  for (bool time_axis : {true, false}) {
    const Shape sh{2, 3, 4, 9, 2, time_axis, 1.5};
    std::mt19937_64 rng(11);
    Data d;
    make_frames(rng, sh, d);
    d.z = uniform_values(rng, size_t(sh.S) * sh.N * sh.K * sh.T, -2, 2);
    d.b = uniform_values(rng, size_t(sh.R) * sh.N * sh.T, -3, 3);
    d.ce_w = uniform_values(rng, size_t(sh.N) * sh.T, 0, 1);
    d.pair_w = uniform_values(rng, size_t(sh.N) * sh.T, 0.1, 1);
    d.boundary.resize(size_t(sh.N) * sh.T);
    for (auto& v : d.boundary) v = rng() % 3 == 0;
    d.boundary_w = uniform_values(rng, size_t(sh.N) * sh.T, 0, 1);
    d.pos_w = {2.5};
    d.gt = {0.7, 1.3, -0.4};
    const Ref r = reference(sh, d);
    auto loss = [&] {
      const Ref f = reference(sh, d, false);
      return dot(d.gt, f.terms);
    };
    const std::string title = std::string("reference self-check (") + (time_axis ? "time" : "class") +
                              " axis): grad_logits, grad_boundary_logits vs central differences";
    check_gradients(title.c_str(), {{&d.z, &r.gl, "grad_logits"}, {&d.b, &r.gb, "grad_boundary"}}, loss, 1e-6, 1e-6);
  }
}

template <class In, class Acc>
std::vector<double> run_case(const std::string& why, Shape sh, int offset, Expect = {}, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  const int S = sh.S, N = sh.N, K = sh.K, T = sh.T, R = sh.R;
  char sizes[200];
  std::snprintf(sizes, sizeof(sizes), "S=%d N=%d K=%d T=%d R=%d %s axis thr=%g%s", S, N, K, T, R,
                sh.time_axis ? "time" : "class", sh.threshold, sh.random_indices ? " random indices" : "");
  Case c(case_title<In>(sizes, offset, why));

  Data d;
  make_frames(rng, sh, d);
  const size_t nt = size_t(N) * T, nz = size_t(S) * N * K * T, nb = size_t(R) * N * T;
  Buf<In> logits(nz, offset), bl(nb, offset), gl(nz, offset), gb(nb, offset);
  Buf<int64_t> labels(nt, offset), next(nt, offset), prev(nt, offset);
  Buf<Acc> ce_w(nt, offset), pair_w(nt, offset), boundary(nt, offset), boundary_w(nt, offset), pos_w(1, offset);
  Buf<Acc> terms(3, offset), gt(3, offset);
  Buf<Acc> time_lse(sh.time_axis ? size_t(S) * N * 2 * K : 0, offset);
  d.z = logits.fill(rng, -3, 3);
  d.b = bl.fill(rng, -4, 4);
  std::copy(d.labels.begin(), d.labels.end(), labels.p);
  std::copy(d.next.begin(), d.next.end(), next.p);
  std::copy(d.prev.begin(), d.prev.end(), prev.p);
  std::uniform_real_distribution<double> U(0, 1);
  d.ce_w = ce_w.fill_with([&](size_t) { return U(rng) / T; });
  // a pair weight only where the frame starts a pair: NaN elsewhere must not reach any output
  d.pair_w = pair_w.fill_with([&](size_t i) {
    const int64_t t = static_cast<int64_t>(i % T);
    return partner(d.next[i], t, T) >= 0 ? 0.1 + U(rng) : NAN;
  });
  d.boundary = boundary.fill_with([&](size_t) { return rng() % 3 == 0 ? 1.0 : 0.0; });
  d.boundary_w = boundary_w.fill_with([&](size_t) { return U(rng) / T; });
  d.pos_w = pos_w.store({2.5});
  d.gt = gt.store({0.7, 1.3, -0.4});

  trgnet::fl::Inputs<In, Acc> in{logits.p, labels.p, next.p,  prev.p, ce_w.p, pair_w.p, bl.p, boundary.p,
                                 boundary_w.p, pos_w.p, S, N, K, T, R, sh.threshold, sh.time_axis};
  Buf<Acc> ws_f(static_cast<size_t>(trgnet::fl::forward_workspace_elems(S, N, T, R)));
  const int64_t wb = trgnet::fl::backward_workspace_elems(S, N, K, sh.time_axis);
  Buf<Acc> ws_b(static_cast<size_t>(wb));
  const Launches launches = launch_forward_backward(
      c,
      [&] {
        return trgnet::launch_frame_losses_forward(
            trgnet::fl::ForwardArgs<In, Acc>{in, terms.p, sh.time_axis ? time_lse.p : nullptr, ws_f.p}, nullptr);
      },
      [&] {
        return trgnet::launch_frame_losses_backward(
            trgnet::fl::BackwardArgs<In, Acc>{in, gt.p, sh.time_axis ? time_lse.p : nullptr, gl.p, gb.p,
                                              wb > 0 ? ws_b.p : nullptr},
            nullptr);
      });
  c.require(launches.forward == (sh.time_axis ? 3 : 2) && launches.backward == (sh.time_axis ? 2 : 1),
            "forward 3 (2 without time_axis) and backward 2 (1) launches");

  const Ref r = reference(sh, d);
  const double t = tol<In>();
  Outputs outs;
  static const char* term_names[3] = {"CE", "GS", "BCE"};
  for (int j = 0; j < 3; ++j) {  // each term on its own (one may be much smaller than the others)
    long nans = 0;
    c.err(term_names[j], rel_err({to_d(terms.p[j])}, {r.terms[j]}, nans, 1e-12), t);
    outs.nans += nans;
  }
  outs.check(c, terms, r.terms, "terms", t);
  if (sh.time_axis) outs.check(c, time_lse, r.time_lse, "time_lse", t);
  outs.check(c, gl, r.gl, "grad_logits", t);
  outs.check(c, gb, r.gb, "grad_boundary", t);
  outs.finish(c);
  char b[160];
  std::snprintf(b, sizeof(b), "| launches %ld+%ld, %lld frame blocks, %lld class groups", launches.forward,
                launches.backward,
                (long long)(trgnet::fl::frame_rows(S, R, N) * trgnet::fl::frame_tiles(T)),
                (long long)trgnet::fl::class_groups(K));
  c.note(b);
  c.finish();
  return outs.all;
}

// A random small shape of either axis and pair index kind, K <= max_k.
Shape random_shape(std::mt19937_64& rng, int max_k) {
  return {1 + static_cast<int>(rng() % 3), 1 + static_cast<int>(rng() % 4), 1 + static_cast<int>(rng() % max_k),
          1 + static_cast<int>(rng() % 300), 1 + static_cast<int>(rng() % 3), rng() % 2 == 0,
          rng() % 3 == 0 ? 0.5 : 4.0, rng() % 4 == 0};
}

}  // namespace

int main(int argc, char** argv) {
  const int random_count = argc > 1 ? std::atoi(argv[1]) : 8;
  using trgnet::fl::kMaxClasses;
  return run_driver("frame_losses", check_reference, [&] {
    run_case<double, double>("time axis", {2, 3, 7, 23, 3, true}, 0);
    run_case<double, double>("class axis", {2, 3, 7, 23, 3, false}, 0);
    run_case<double, double>("time axis, small threshold (clamped squares)", {2, 4, 9, 61, 1, true, 0.4}, 0);
    run_case<double, double>("class axis, small threshold (clamped squares)", {1, 4, 9, 61, 2, false, 0.4}, 0);
    run_case<float, float>("S > R, several frame tiles", {4, 3, 19, 600, 2, true}, 0);
    run_case<float, float>("R > S, several frame tiles, class axis", {1, 3, 19, 530, 3, false}, 0);
    const int kmax = static_cast<int>(kMaxClasses);
    run_case<double, double>("K = kMaxClasses (128 class groups)", {1, 1, kmax, 40, 1, true}, 0);
    run_case<double, double>("K = kMaxClasses, class axis", {1, 2, kmax, 20, 1, false}, 0);
    run_case<double, double>("K = 1", {2, 3, 1, 30, 2, true}, 0);
    run_case<double, double>("T = 1", {2, 3, 5, 1, 2, true}, 0);
    run_case<double, double>("random non-inverse / out-of-range indices", {2, 4, 6, 47, 2, true, 1.0, true}, 0);
    run_case<double, double>("random indices, class axis", {2, 4, 6, 47, 2, false, 1.0, true}, 0);
    run_case<__nv_bfloat16, float>("bf16", {2, 3, 11, 70, 2, true}, 0);
    run_case<__half, float>("f16", {2, 3, 11, 70, 2, false}, 0);
    pair_case<float>(run_case<float, float>, Shape{2, 3, 13, 290, 3, true});
    pair_case<double>(run_case<double, double>, Shape{2, 3, 13, 100, 1, false, 0.8});
    run_random_cases(run_case<double, double>, random_count, 7, random_shape, 40);
    run_random_cases(run_case<float, float>, random_count, 8, random_shape, 40);
    unsupported_sizes([](Case& c) {
      float dummy[8] = {};
      int64_t idx[8] = {};
      trgnet::fl::Inputs<float, float> in{dummy, idx, idx, idx, dummy, dummy, dummy, dummy, dummy, dummy,
                                          1, 1, kMaxClasses + 1, 1, 1, 4.0, true};
      trgnet::fl::ForwardArgs<float, float> fa{in, dummy, dummy, dummy};
      c.require_rejected(trgnet::launch_frame_losses_forward(fa, nullptr), "forward with K > kMaxClasses");
      fa.in.K = 4;
      fa.in.T = 0;
      c.require_rejected(trgnet::launch_frame_losses_forward(fa, nullptr), "forward with T = 0");
      fa.in.T = 2;
      fa.time_lse = nullptr;
      c.require_rejected(trgnet::launch_frame_losses_forward(fa, nullptr), "forward with time_axis and no time_lse");
      trgnet::fl::BackwardArgs<float, float> ba{in, dummy, dummy, dummy, dummy, dummy};
      ba.in.K = 4;
      ba.in.threshold = 0;
      c.require_rejected(trgnet::launch_frame_losses_backward(ba, nullptr), "backward with threshold 0");
      ba.in.threshold = 4.0;
      ba.workspace = nullptr;
      c.require_rejected(trgnet::launch_frame_losses_backward(ba, nullptr), "backward with time_axis and no workspace");
      ba.in.R = 0;
      c.require_rejected(trgnet::launch_frame_losses_backward(ba, nullptr), "backward with R = 0");
    });
  });
}
