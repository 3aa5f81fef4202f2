// Emulated run of the CUDA adaptive graph-convolution kernels (kernels/adaptive_graph_conv.cu,
// compiled by g++ against shim/ after gen_sources.py) against a double-precision reference written
// from the formula (x: (N,C,T,V), p, q: (N,T,V), beta: (1), G: (N,C,V,V), J: (V,V)):
//   F[n,t,u,v] = beta tanh(p[n,t,u] - q[n,t,v]) + J[u,v]
//   Y[n,c,t,u] = sum_v (F[n,t,u,v] + G[n,c,u,v]) X[n,c,t,v]
// and its gradients dX, dp, dq, dbeta, dG, dJ of L = sum grad_out * Y (checked against central
// differences).
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "adaptive_graph_conv.cuh"  // kMaxJoints
#include "adaptive_graph_conv.h"
#include "test_util.h"

using namespace emu_test;
namespace agc = trgnet::agc;

namespace {

struct Shape {
  int N, C, T, V;
};

struct Ref {
  std::vector<double> y, dx, dp, dq, dbeta, dG, dJ;
};

Ref reference(const std::vector<double>& x, const std::vector<double>& p, const std::vector<double>& q, double beta,
              const std::vector<double>& G, const std::vector<double>& J, const std::vector<double>& gy, Shape sh,
              bool grads) {
  const int N = sh.N, C = sh.C, T = sh.T, V = sh.V;
  auto XI = [&](int n, int c, int t, int v) { return (((size_t)n * C + c) * T + t) * V + v; };
  auto GI = [&](int n, int c, int u, int v) { return (((size_t)n * C + c) * V + u) * V + v; };
  Ref r;
  r.y.assign(x.size(), 0);
  r.dx.assign(x.size(), 0);
  r.dp.assign(p.size(), 0);
  r.dq.assign(q.size(), 0);
  r.dbeta.assign(1, 0);
  r.dG.assign(G.size(), 0);
  r.dJ.assign(J.size(), 0);
  std::vector<double> th((size_t)V * V), F((size_t)V * V), dF((size_t)V * V);
  for (int n = 0; n < N; ++n)
    for (int t = 0; t < T; ++t) {
      for (int u = 0; u < V; ++u)
        for (int v = 0; v < V; ++v) {
          th[u * V + v] = std::tanh(p[((size_t)n * T + t) * V + u] - q[((size_t)n * T + t) * V + v]);
          F[u * V + v] = beta * th[u * V + v] + J[u * V + v];
        }
      for (int c = 0; c < C; ++c)
        for (int u = 0; u < V; ++u) {
          double y = 0;
          for (int v = 0; v < V; ++v) y += (F[u * V + v] + G[GI(n, c, u, v)]) * x[XI(n, c, t, v)];
          r.y[XI(n, c, t, u)] = y;
        }
      if (!grads) continue;
      std::fill(dF.begin(), dF.end(), 0.0);
      for (int c = 0; c < C; ++c)
        for (int u = 0; u < V; ++u) {
          const double gu = gy[XI(n, c, t, u)];
          for (int v = 0; v < V; ++v) {
            const double xv = x[XI(n, c, t, v)];
            r.dx[XI(n, c, t, v)] += (F[u * V + v] + G[GI(n, c, u, v)]) * gu;  // dY/dX
            dF[u * V + v] += gu * xv;
            r.dG[GI(n, c, u, v)] += gu * xv;
          }
        }
      for (int u = 0; u < V; ++u)
        for (int v = 0; v < V; ++v) {
          const double d = dF[u * V + v], h = th[u * V + v], dz = d * beta * (1 - h * h);  // dz: d/d(p_u - q_v)
          r.dJ[u * V + v] += d;
          r.dbeta[0] += d * h;
          r.dp[((size_t)n * T + t) * V + u] += dz;
          r.dq[((size_t)n * T + t) * V + v] -= dz;
        }
    }
  return r;
}

void check_reference() {
  const Shape sh{2, 3, 2, 4};
  std::mt19937_64 rng(13);
  const size_t nx = (size_t)sh.N * sh.C * sh.T * sh.V, np = (size_t)sh.N * sh.T * sh.V;
  auto x = uniform_values(rng, nx), p = uniform_values(rng, np), q = uniform_values(rng, np);
  auto beta = uniform_values(rng, 1), G = uniform_values(rng, (size_t)sh.N * sh.C * sh.V * sh.V);
  auto J = uniform_values(rng, (size_t)sh.V * sh.V), gy = uniform_values(rng, nx);
  const Ref r = reference(x, p, q, beta[0], G, J, gy, sh, true);
  check_gradients("reference self-check: dX, dp, dq, dbeta, dG, dJ vs central differences",
                  {{&x, &r.dx, "dX"}, {&p, &r.dp, "dp"}, {&q, &r.dq, "dq"}, {&beta, &r.dbeta, "dbeta"},
                   {&G, &r.dG, "dG"}, {&J, &r.dJ, "dJ"}},
                  [&] { return dot(gy, reference(x, p, q, beta[0], G, J, gy, sh, false).y); }, 1e-5, 1e-8);
}

struct Expect {
  bool optin = false;         // some kernel needs > 48 KiB of shared memory
  bool multi_tile = false;    // several T-tiles per block in all three kernels
  bool multi_cblock = false;  // several channel blocks in the forward and the channel backward
  bool frame_chunks = false;  // several channel chunks in the frame backward
};

template <class In, class Acc>
std::vector<double> run_case(const std::string& why, Shape sh, int offset, Expect ex = {}, uint64_t seed = 1) {
  const int N = sh.N, C = sh.C, T = sh.T, V = sh.V;
  char sizes[120];
  std::snprintf(sizes, sizeof(sizes), "N=%d C=%d T=%d V=%d", N, C, T, V);
  Case c(case_title<In>(sizes, offset, why));
  const size_t nx = (size_t)N * C * T * V, np = (size_t)N * T * V, nG = (size_t)N * C * V * V;
  Buf<In> x(nx, offset), p(np, offset), q(np, offset), beta(1, offset), G(nG, offset), J((size_t)V * V, offset),
      y(nx, offset), gy(nx, offset), dx(nx, offset), dp(np, offset), dq(np, offset), dbeta(1, offset),
      dG(nG, offset), dJ((size_t)V * V, offset);
  Buf<Acc> ws((size_t)agc::backward_workspace_elems(N, C, T, V, sizeof(Acc)));
  std::mt19937_64 rng(seed);
  const auto xd = x.fill(rng, -1, 1), pd = p.fill(rng, -1, 1), qd = q.fill(rng, -1, 1), bd = beta.fill(rng, 0.3, 1.2),
             Gd = G.fill(rng, -0.3, 0.3), Jd = J.fill(rng, -0.3, 0.3), gd = gy.fill(rng, -1, 1);

  launch_forward_backward(
      c,
      [&] {
        return trgnet::launch_adaptive_graph_conv_forward(x.p, p.p, q.p, beta.p, G.p, J.p, N, C, T, V, y.p, nullptr);
      },
      [&] {
        return trgnet::launch_adaptive_graph_conv_backward(gy.p, x.p, p.p, q.p, beta.p, G.p, J.p, N, C, T, V, dx.p,
                                                           dp.p, dq.p, dbeta.p, dG.p, dJ.p, ws.p, nullptr);
      });
  const Ref r = reference(xd, pd, qd, bd[0], Gd, Jd, gd, sh, true);
  Outputs out;
  out.check_all<In>(c,
                    {{y, r.y, "Y"}, {dx, r.dx, "dX"}, {dp, r.dp, "dp"}, {dq, r.dq, "dq"}, {dbeta, r.dbeta, "dbeta"},
                     {dG, r.dG, "dG"}, {dJ, r.dJ, "dJ"}},
                    tol<In>());
  out.finish(c);

  const agc::Config f = agc::pick_config(0, C, V, sizeof(Acc));
  const agc::BackwardPlan plan = agc::backward_plan(N, C, T, V, sizeof(Acc));
  const int64_t fcblocks = (C + f.channels - 1) / f.channels;
  const int64_t fper = trgnet::tiles_per_chunk(N * fcblocks, T, f.tile, agc::kTargetForwardBlocks);
  char b[300];
  std::snprintf(b, sizeof(b),
                "| fwd: %d ch x %d frames/tile, %lld cblock(s), %lld tile(s)/chunk, smem %zu; frame bwd: %d ch/chunk, "
                "%lld tile(s)/chunk, smem %zu; channel bwd: %lld cblock(s), %lld tile(s)/chunk, smem %zu",
                f.channels, f.tile, (long long)fcblocks, (long long)fper, f.smem, plan.a.channels,
                (long long)plan.per_a, plan.a.smem, (long long)plan.cblocks, (long long)plan.per_b, plan.b.smem);
  c.note(b);
  if (ex.optin) c.require(c.max_smem_since() > 48 * 1024, "a launch above 48 KiB expected");
  if (ex.multi_tile) c.require(fper > 1 && plan.per_a > 1 && plan.per_b > 1, "several tiles per chunk expected");
  if (ex.multi_cblock) c.require(fcblocks > 1 && plan.cblocks > 1, "several channel blocks expected");
  if (ex.frame_chunks) c.require(plan.a.channels < C, "several channel chunks in the frame backward expected");
  c.finish();
  return out.all;
}

}  // namespace

int main() {
  return run_driver("adaptive_graph_conv", check_reference, [] {
    run_case<float, float>("odd sizes", {2, 3, 7, 5}, 0);
    run_case<float, float>("channel blocks and chunks, opt-in backward", {1, 19, 21, 25}, 0,
                           {true, false, true, true});
    run_case<double, double>("opt-in forward and backward", {1, 10, 13, 25}, 0, {true, false, true});
    run_case<float, float>("several tiles per chunk", {64, 3, 260, 5}, 0, {false, true, false});
    pair_case<float>(run_case<float, float>, Shape{2, 5, 11, 7});
    run_case<double, double>("misaligned by one element", {1, 4, 9, 25}, 1, {true, false, false});
    run_case<__nv_bfloat16, float>("bf16, channel blocks", {2, 9, 10, 25}, 0, {true, false, true});
    run_case<float, float>("V = kMaxJoints", {1, 3, 5, agc::kMaxJoints}, 0, {true, false, false});
    run_case<float, float>("T = 0: zero parameter gradients", {2, 3, 0, 5}, 0);
    unsupported_sizes([](Case& c) {
      float dummy[4] = {};
      c.require_rejected(trgnet::launch_adaptive_graph_conv_forward(dummy, dummy, dummy, dummy, dummy, dummy, 1, 1, 1,
                                                                    agc::kMaxJoints + 1, dummy, nullptr),
                         "V > kMaxJoints");
    });
  });
}
