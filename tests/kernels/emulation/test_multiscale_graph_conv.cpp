// Emulated run of the CUDA multi-scale graph-convolution kernels (kernels/multiscale_graph_conv.cu,
// compiled by g++ against shim/ after gen_sources.py) against a double-precision reference written
// from the formula (x: (N,C,T,V), A: (S*V,V), W: (O,S*C), b: (O)):
//   Y[n,o,t,v] = b[o] + sum_{s,c,u} W[o, s*C+c] A[s*V+v, u] X[n,c,t,u]
// and its gradients dX, dA, dW, db of L = sum grad_out * Y (checked against central differences).
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "multiscale_graph_conv.cuh"  // kMaxJoints
#include "multiscale_graph_conv.h"
#include "test_util.h"

using namespace emu_test;
namespace msgc = trgnet::msgc;

namespace {

struct Shape {
  int N, C, T, V, S, O;
};

struct Ref {
  std::vector<double> y, dx, da, dw, db;
};

Ref reference(const std::vector<double>& x, const std::vector<double>& A, const std::vector<double>& W,
              const std::vector<double>& b, const std::vector<double>& g, Shape sh, bool grads) {
  const int N = sh.N, C = sh.C, T = sh.T, V = sh.V, S = sh.S, O = sh.O, SC = S * C;
  auto X = [&](int n, int c, int t, int u) { return x[(((size_t)n * C + c) * T + t) * V + u]; };
  auto G = [&](int n, int o, int t, int v) { return g[(((size_t)n * O + o) * T + t) * V + v]; };
  Ref r;
  r.y.assign((size_t)N * O * T * V, 0);
  r.dx.assign((size_t)N * C * T * V, 0);
  r.da.assign((size_t)S * V * V, 0);
  r.dw.assign((size_t)O * SC, 0);
  r.db.assign(O, 0);
  // Z[s,c,v] = sum_u A[s*V+v, u] X[n,c,t,u] and H[s,c,v] = sum_o W[o, s*C+c] G[n,o,t,v], per (n, t)
  std::vector<double> Z((size_t)S * C * V), H((size_t)S * C * V);
  for (int n = 0; n < N; ++n)
    for (int t = 0; t < T; ++t) {
      for (int s = 0; s < S; ++s)
        for (int c = 0; c < C; ++c)
          for (int v = 0; v < V; ++v) {
            double z = 0, h = 0;
            for (int u = 0; u < V; ++u) z += A[((size_t)s * V + v) * V + u] * X(n, c, t, u);
            for (int o = 0; o < O && grads; ++o) h += W[(size_t)o * SC + s * C + c] * G(n, o, t, v);
            Z[((size_t)s * C + c) * V + v] = z;
            H[((size_t)s * C + c) * V + v] = h;
          }
      for (int o = 0; o < O; ++o)
        for (int v = 0; v < V; ++v) {
          double y = b[o];
          for (int s = 0; s < S; ++s)
            for (int c = 0; c < C; ++c) y += W[(size_t)o * SC + s * C + c] * Z[((size_t)s * C + c) * V + v];
          r.y[(((size_t)n * O + o) * T + t) * V + v] = y;
        }
      if (!grads) continue;
      for (int o = 0; o < O; ++o)
        for (int v = 0; v < V; ++v) r.db[o] += G(n, o, t, v);
      for (int s = 0; s < S; ++s)
        for (int c = 0; c < C; ++c) {
          const double* h = &H[((size_t)s * C + c) * V];
          const double* z = &Z[((size_t)s * C + c) * V];
          for (int u = 0; u < V; ++u) {  // dX[n,c,t,u] += sum_v A[s*V+v, u] H[s,c,v]
            double a = 0;
            for (int v = 0; v < V; ++v) a += A[((size_t)s * V + v) * V + u] * h[v];
            r.dx[(((size_t)n * C + c) * T + t) * V + u] += a;
          }
          for (int v = 0; v < V; ++v)  // dA[s*V+v, u] += H[s,c,v] X[n,c,t,u]
            for (int u = 0; u < V; ++u) r.da[((size_t)s * V + v) * V + u] += h[v] * X(n, c, t, u);
          for (int o = 0; o < O; ++o) {  // dW[o, s*C+c] += sum_v G[n,o,t,v] Z[s,c,v]
            double a = 0;
            for (int v = 0; v < V; ++v) a += G(n, o, t, v) * z[v];
            r.dw[(size_t)o * SC + s * C + c] += a;
          }
        }
    }
  return r;
}

void check_reference() {
  const Shape sh{2, 3, 2, 4, 2, 3};
  std::mt19937_64 rng(11);
  auto x = uniform_values(rng, (size_t)sh.N * sh.C * sh.T * sh.V), A = uniform_values(rng, (size_t)sh.S * sh.V * sh.V);
  auto W = uniform_values(rng, (size_t)sh.O * sh.S * sh.C), b = uniform_values(rng, sh.O);
  auto g = uniform_values(rng, (size_t)sh.N * sh.O * sh.T * sh.V);
  const Ref r = reference(x, A, W, b, g, sh, true);
  check_gradients("reference self-check: dX, dA, dW, db vs central differences",
                  {{&x, &r.dx, "dX"}, {&A, &r.da, "dA"}, {&W, &r.dw, "dW"}, {&b, &r.db, "db"}},
                  [&] { return dot(g, reference(x, A, W, b, g, sh, false).y); }, 1e-5, 1e-8);
}

struct Expect {
  bool backward_optin = false;       // backward needs > 48 KiB of shared memory
  bool backward_multi_tile = false;  // several T-tiles per backward block
  bool small_backward_tile = false;  // fewer frames per backward tile than kMaxBackwardTile
};

template <class In, class Acc>
std::vector<double> run_case(const std::string& why, Shape sh, int offset, Expect ex = {}, uint64_t seed = 1) {
  const int N = sh.N, C = sh.C, T = sh.T, V = sh.V, S = sh.S, O = sh.O;
  constexpr int OB = std::is_same<Acc, double>::value ? 32 : 64;  // forward: output channels per thread
  char sizes[120];
  std::snprintf(sizes, sizeof(sizes), "N=%d C=%d T=%d V=%d S=%d O=%d", N, C, T, V, S, O);
  Case c(case_title<In>(sizes, offset, why));
  const size_t nx = (size_t)N * C * T * V, ny = (size_t)N * O * T * V;
  Buf<In> x(nx, offset), A((size_t)S * V * V, offset), W((size_t)O * S * C, offset), b(O, offset), y(ny, offset),
      g(ny, offset), dx(nx, offset), dA((size_t)S * V * V, offset), dW((size_t)O * S * C, offset), db(O, offset);
  Buf<Acc> ws((size_t)msgc::backward_workspace_elems(N, C, T, V, S, O, sizeof(Acc)));
  std::mt19937_64 rng(seed);
  const auto xd = x.fill(rng, -1, 1), Ad = A.fill(rng, -0.5, 0.5), Wd = W.fill(rng, -0.5, 0.5), bd = b.fill(rng, -1, 1),
             gd = g.fill(rng, -1, 1);

  launch_forward_backward(
      c,
      [&] {
        return trgnet::launch_multiscale_graph_conv_forward(x.p, A.p, W.p, b.p, N, C, T, V, S, O, y.p, nullptr);
      },
      [&] {
        return trgnet::launch_multiscale_graph_conv_backward(g.p, x.p, A.p, W.p, N, C, T, V, S, O, dx.p, dA.p, dW.p,
                                                             db.p, ws.p, nullptr);
      });
  const Ref r = reference(xd, Ad, Wd, bd, gd, sh, true);
  Outputs out;
  out.check_all<In>(c, {{y, r.y, "Y"}, {dx, r.dx, "dX"}, {dA, r.da, "dA"}, {dW, r.dw, "dW"}, {db, r.db, "db"}},
                    tol<In>());
  out.finish(c);

  const size_t fsmem = c.smem_of("forward_kernel"), bsmem = c.smem_of("backward_kernel");
  const int tile = msgc::backward_tile(C, V, O, sizeof(Acc));
  const long long per = T > 0 ? msgc::backward_tiles_per_chunk(N, T, tile) : 0;
  const long long chunks = T > 0 ? msgc::backward_chunks(N, T, tile) : 0;
  char b2[240];
  std::snprintf(b2, sizeof(b2),
                "| fwd: %d o-block(s) of %d, smem %zu; bwd: tile %d frames, %lld tile(s) x %lld chunk(s), smem %zu",
                (O + OB - 1) / OB, OB, fsmem, tile, per, chunks, bsmem);
  c.note(b2);
  if (ex.backward_optin) c.require(bsmem > 48 * 1024, "backward expected above 48 KiB");
  if (ex.backward_multi_tile) c.require(per > 1, "backward expected several tiles per chunk");
  if (ex.small_backward_tile) c.require(tile < msgc::kMaxBackwardTile, "backward tile expected below the maximum");
  c.finish();
  return out.all;
}

}  // namespace

int main() {
  return run_driver("multiscale_graph_conv", check_reference, [] {
    run_case<float, float>("odd sizes", {2, 3, 7, 5, 3, 5}, 0);
    run_case<float, float>("2 o-blocks, 2 channel chunks, opt-in backward", {1, 20, 23, 25, 2, 70}, 0,
                           {true, false, true});
    run_case<double, double>("2 o-blocks, 2 channel chunks, opt-in backward", {1, 20, 23, 25, 2, 40}, 0,
                             {true, false, true});
    run_case<float, float>("several tiles per backward chunk", {64, 2, 150, 5, 2, 3}, 0, {false, true, false});
    pair_case<float>(run_case<float, float>, Shape{2, 5, 19, 7, 2, 9});
    run_case<double, double>("misaligned by one element", {2, 4, 11, 25, 3, 6}, 1);
    run_case<__nv_bfloat16, float>("bf16, opt-in backward", {2, 8, 21, 25, 3, 10}, 0, {true, false, false});
    run_case<float, float>("V = kMaxJoints", {1, 4, 9, msgc::kMaxJoints, 1, 6}, 0, {true, false, false});
    run_case<float, float>("T = 0: zero parameter gradients", {2, 3, 0, 5, 2, 4}, 0);
    unsupported_sizes([](Case& c) {
      float dummy[4] = {};
      c.require(!msgc::backward_supported(200, 25, 200, sizeof(float)), "C = O = 200, V = 25 expected unsupported");
      c.require_rejected(trgnet::launch_multiscale_graph_conv_backward(dummy, dummy, dummy, dummy, 1, 200, 4, 25, 1,
                                                                       200, dummy, dummy, dummy, dummy, dummy, nullptr),
                         "backward with a tile that does not fit");
      c.require_rejected(trgnet::launch_multiscale_graph_conv_forward(dummy, dummy, dummy, dummy, 1, 1, 1,
                                                                      msgc::kMaxJoints + 1, 1, 1, dummy, nullptr),
                         "V > kMaxJoints");
    });
  });
}
