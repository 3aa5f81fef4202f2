// Emulated run of the CUDA linear-attention kernels (kernels/linear_attention.cu, compiled by g++
// against shim/ after gen_sources.py) against a double-precision reference written from the formulas:
//   phi = sigmoid, m = key mask (1 without one)
//   KV[n,h,d,e] = sum_s m phi(k[n,s,h,d]) v[n,s,h,e]      ks[n,h,d] = sum_s m phi(k[n,s,h,d])
//   out[n,l,h,e] = sum_d phi(q) KV[d,e] / sum_d phi(q) (ks[d] + eps)
// and its gradients dq, dk, dv of L = sum grad_out * out (checked against central differences).
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "linear_attention.cuh"  // kMaxHeadDim
#include "linear_attention.h"
#include "test_util.h"

using namespace emu_test;

namespace {

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

struct Ref {
  std::vector<double> out, kv, ks, dq, dk, dv;
};

Ref reference(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
              const std::vector<double>& g, const std::vector<char>* mask, int N, int T, int H, int D, int E,
              double eps, bool grads) {
  Ref r;
  r.out.assign((size_t)N * T * H * E, 0);
  r.kv.assign((size_t)N * H * D * E, 0);
  r.ks.assign((size_t)N * H * D, 0);
  r.dq.assign((size_t)N * T * H * D, 0);
  r.dk = r.dq;
  r.dv.assign((size_t)N * T * H * E, 0);
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      auto QI = [&](int t, int d) { return (((size_t)n * T + t) * H + h) * D + d; };
      auto VI = [&](int t, int e) { return (((size_t)n * T + t) * H + h) * E + e; };
      auto M = [&](int s) { return mask ? ((*mask)[(size_t)n * T + s] ? 1.0 : 0.0) : 1.0; };
      std::vector<double> KV(D * E, 0), ks(D, 0), dKV(D * E, 0), dks(D, 0);
      for (int s = 0; s < T; ++s)
        for (int d = 0; d < D; ++d) {
          const double f = M(s) * sig(k[QI(s, d)]);
          ks[d] += f;
          for (int e = 0; e < E; ++e) KV[d * E + e] += f * v[VI(s, e)];
        }
      for (int d = 0; d < D; ++d) {
        r.ks[((size_t)n * H + h) * D + d] = ks[d];
        for (int e = 0; e < E; ++e) r.kv[(((size_t)n * H + h) * D + d) * E + e] = KV[d * E + e];
      }
      for (int l = 0; l < T; ++l) {
        std::vector<double> pq(D), num(E, 0);
        double den = 0;
        for (int d = 0; d < D; ++d) {
          pq[d] = sig(q[QI(l, d)]);
          den += pq[d] * (ks[d] + eps);
        }
        for (int e = 0; e < E; ++e) {
          for (int d = 0; d < D; ++d) num[e] += pq[d] * KV[d * E + e];
          r.out[VI(l, e)] = num[e] / den;
        }
        if (!grads) continue;
        // out_e = num_e / den: d out_e / d pq_d = KV[d,e] / den - num_e (ks_d + eps) / den^2
        double dden = 0;
        for (int e = 0; e < E; ++e) dden -= g[VI(l, e)] * num[e] / (den * den);
        for (int d = 0; d < D; ++d) {
          double a = (ks[d] + eps) * dden;
          for (int e = 0; e < E; ++e) a += KV[d * E + e] * g[VI(l, e)] / den;
          r.dq[QI(l, d)] = pq[d] * (1 - pq[d]) * a;
          dks[d] += pq[d] * dden;
          for (int e = 0; e < E; ++e) dKV[d * E + e] += pq[d] * g[VI(l, e)] / den;
        }
      }
      if (!grads) continue;
      for (int s = 0; s < T; ++s) {
        for (int d = 0; d < D; ++d) {
          const double sk = sig(k[QI(s, d)]);
          double a = dks[d];
          for (int e = 0; e < E; ++e) a += dKV[d * E + e] * v[VI(s, e)];
          r.dk[QI(s, d)] = M(s) * sk * (1 - sk) * a;
        }
        for (int e = 0; e < E; ++e) {
          double a = 0;
          for (int d = 0; d < D; ++d) a += sig(k[QI(s, d)]) * dKV[d * E + e];
          r.dv[VI(s, e)] = M(s) * a;
        }
      }
    }
  return r;
}

// The analytic gradients of the reference against central differences of L = sum g * out.
void check_reference() {
  const int N = 2, T = 5, H = 2, D = 3, E = 4;
  const double eps = 1e-3;
  std::mt19937_64 rng(7);
  auto q = uniform_values(rng, N * T * H * D, -2, 2), k = uniform_values(rng, q.size(), -2, 2);
  auto v = uniform_values(rng, N * T * H * E, -2, 2), g = uniform_values(rng, v.size(), -2, 2);
  std::vector<char> mask(N * T);
  for (auto& m : mask) m = (rng() % 3) != 0;
  mask[0] = mask[T] = 1;
  const Ref r = reference(q, k, v, g, &mask, N, T, H, D, E, eps, true);
  check_gradients("reference self-check: dq, dk, dv vs central differences",
                  {{&q, &r.dq, "dq"}, {&k, &r.dk, "dk"}, {&v, &r.dv, "dv"}},
                  [&] { return dot(g, reference(q, k, v, g, &mask, N, T, H, D, E, eps, false).out); },
                  1e-5, 1e-7);
}

struct Shape {
  int N, T, H, D, E;
  bool masked;
};

struct Expect {
  bool multi_tile = false;  // several tiles of the state pass per reduction chunk
  Vec vec = Vec::kAny;
};

template <class In, class Acc>
std::vector<double> run_case(const std::string& why, Shape sh, int offset, Expect ex = {}, uint64_t seed = 1) {
  const int N = sh.N, T = sh.T, H = sh.H, D = sh.D, E = sh.E;
  const bool masked = sh.masked;
  const double eps = 1e-6;
  char sizes[120];
  std::snprintf(sizes, sizeof(sizes), "N=%d T=%d H=%d D=%d E=%d %s", N, T, H, D, E, masked ? "masked" : "unmasked");
  Case c(case_title<In>(sizes, offset, why));
  const size_t nq = (size_t)N * T * H * D, nv = (size_t)N * T * H * E;
  Buf<In> q(nq, offset), k(nq, offset), v(nv, offset), g(nv, offset), out(nv, offset), dq(nq, offset),
      dk(nq, offset), dv(nv, offset);
  Buf<bool> mask((size_t)N * T);
  Buf<Acc> kv((size_t)N * H * D * E), ks((size_t)N * H * D),
      ws((size_t)trgnet::la::workspace_elems(N, T, H, D, E));
  std::mt19937_64 rng(seed);
  const auto qd = q.fill(rng, -2, 2), kd = k.fill(rng, -2, 2), vd = v.fill(rng, -2, 2), gd = g.fill(rng, -2, 2);
  std::vector<char> mv((size_t)N * T);
  for (size_t i = 0; i < mv.size(); ++i) mv[i] = (rng() % 4) != 0;
  for (int n = 0; n < N && T > 0; ++n) mv[(size_t)n * T] = 1;  // every sample has a key (well-conditioned dq, dk)
  for (size_t i = 0; i < mv.size(); ++i) mask.p[i] = mv[i];
  const bool* mp = masked ? mask.p : nullptr;

  launch_forward_backward(
      c,
      [&] {
        return trgnet::launch_linear_attention_forward(q.p, k.p, v.p, mp, N, T, H, D, E, eps, out.p, kv.p, ks.p, ws.p,
                                                       nullptr);
      },
      [&] {
        ws.poison();  // the backward must not rely on what the forward left in the workspace
        return trgnet::launch_linear_attention_backward(g.p, q.p, k.p, v.p, mp, kv.p, ks.p, N, T, H, D, E, eps, dq.p,
                                                        dk.p, dv.p, ws.p, nullptr);
      });
  const Ref r = reference(qd, kd, vd, gd, masked ? &mv : nullptr, N, T, H, D, E, eps, true);
  Outputs outs;
  outs.check_all<In>(c, {{out, r.out, "out"}, {dq, r.dq, "dq"}, {dk, r.dk, "dk"}, {dv, r.dv, "dv"}}, tol<In>());
  outs.check_all<Acc>(c, {{kv, r.kv, "kv_state"}, {ks, r.ks, "key_sum"}}, tol<Acc>());
  outs.finish(c);
  c.require_vec(ex.vec);
  if (T > 0) {  // frames per state_partial tile vs frames per chunk
    c.require(c.launched("state_partial_kernel"), "state_partial_kernel not launched");
    const size_t ptile = trgnet::la::state_pass_tile(D, E, sizeof(Acc));
    const long long chunk = trgnet::la::reduction_chunk_len(T), chunks = trgnet::la::reduction_chunks(T);
    char b[96];
    std::snprintf(b, sizeof(b), "| chunks %lld of %lld frames, %zu frames per tile", chunks, chunk, ptile);
    c.note(b);
    if (ex.multi_tile)
      c.require(ptile > 0 && (long long)ptile < chunk && T > (long long)ptile, "one tile per chunk");
  }
  c.finish();
  return outs.all;
}

}  // namespace

int main() {
  return run_driver("linear_attention", check_reference, [] {
    const Expect vec{false, Vec::kUsed}, scalar{false, Vec::kNone}, multi_tile{true, Vec::kUsed};
    run_case<float, float>("16-byte path", {2, 37, 3, 16, 16, false}, 0, vec);
    run_case<float, float>("16-byte path", {2, 37, 3, 16, 16, true}, 0, vec);
    run_case<double, double>("16-byte path, 2 chunks", {2, 129, 2, 16, 16, true}, 0, vec);
    run_case<double, double>("scalar fallback", {1, 129, 2, 16, 16, true}, 1, scalar);
    run_case<float, float>("odd sizes, 2 chunks", {2, 129, 3, 5, 7, true}, 0);
    run_case<float, float>("odd sizes", {1, 45, 1, 3, 1, false}, 0);
    run_case<float, float>("q/k rows 16-byte, v rows scalar", {1, 200, 2, 16, 7, true}, 0, vec);
    run_case<float, float>("head dims 17..32 (32-wide register rows)", {2, 70, 2, 24, 32, true}, 0, vec);
    run_case<__nv_bfloat16, float>("head dims 17..32 (32-wide register rows)", {1, 33, 3, 32, 20, false}, 0, vec);
    run_case<float, float>("several tiles per chunk", {1, 300, 1, 64, 64, true}, 0, multi_tile);
    run_case<double, double>("several tiles per chunk", {1, 260, 1, 64, 63, false}, 0, multi_tile);
    // query backward: 2 thread groups, whose scratch takes the shared memory above 48 KiB (opt-in)
    run_case<double, double>("opt-in shared memory", {1, 150, 1, 64, 28, true}, 0, vec);
    pair_case<float>(run_case<float, float>, Shape{2, 130, 2, 16, 16, true}, vec, scalar);
    run_case<__nv_bfloat16, float>("16-byte path", {2, 150, 2, 16, 16, true}, 0, vec);
    run_case<__nv_bfloat16, float>("scalar fallback", {1, 70, 2, 8, 8, false}, 1, scalar);
    run_case<float, float>("T = 0", {2, 0, 2, 4, 3, true}, 0);
    unsupported_sizes([](Case& c) {
      float dummy[4] = {};
      const int D = trgnet::la::kMaxHeadDim + 1;
      c.require_rejected(trgnet::launch_linear_attention_forward(dummy, dummy, dummy, nullptr, 1, 1, 1, D, 1, 1e-6,
                                                                 dummy, dummy, dummy, dummy, nullptr),
                         "forward with D > kMaxHeadDim");
      c.require_rejected(trgnet::launch_linear_attention_backward(dummy, dummy, dummy, dummy, nullptr, dummy, dummy, 1,
                                                                  1, 1, 1, D, 1e-6, dummy, dummy, dummy, dummy,
                                                                  nullptr),
                         "backward with E > kMaxHeadDim");
    });
  });
}
