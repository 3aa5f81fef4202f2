// C++ test of the CPU kernels of trgnet::multiscale_graph_conv (run by ctest).
//
// The kernels are compared against naive double-precision loops written here from the formulas
//   Y[n,o,t,v]      = b[o] + sum_{s,c,u} W[o, s*C+c] A[s*V+v, u] X[n,c,t,u]
//   dX[n,c,t,u]     = sum_{s,v,o} A[s*V+v, u] W[o, s*C+c] G[n,o,t,v]
//   dA[s*V+v, u]    = sum_{n,c,t,o} W[o, s*C+c] G[n,o,t,v] X[n,c,t,u]
//   dW[o, s*C+c]    = sum_{n,t,v,u} G[n,o,t,v] A[s*V+v, u] X[n,c,t,u]
//   db[o]           = sum_{n,t,v} G[n,o,t,v]
// Fresh random inputs each run (the seed is printed). Returns nonzero on failure.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "multiscale_graph_conv.h"
#include "test_util.h"

namespace {

using namespace trgnet_test;  // tests/csrc/test_util.h

struct Problem {
  int64_t N, C, T, V, S, O;
  std::vector<double> x, a, w, b, g;  // (N,C,T,V), (S*V,V), (O,S*C), (O), (N,O,T,V)
};

Problem make_problem(std::mt19937_64& rng, int64_t N, int64_t C, int64_t T, int64_t V, int64_t S, int64_t O) {
  Problem p{N, C, T, V, S, O, {}, {}, {}, {}, {}};
  NormalFill fill{rng};
  fill(p.x, N * C * T * V, 1.0);
  fill(p.a, S * V * V, 1.0 / std::sqrt(double(V)));
  fill(p.w, O * S * C, 1.0 / std::sqrt(double(S * C)));
  fill(p.b, O, 1.0);
  fill(p.g, N * O * T * V, 1.0);
  return p;
}

struct Naive {
  std::vector<double> y, dx, da, dw, db;
};

Naive naive(const Problem& p) {
  const int64_t N = p.N, C = p.C, T = p.T, V = p.V, S = p.S, O = p.O;
  Naive r{std::vector<double>(N * O * T * V), std::vector<double>(N * C * T * V, 0.0),
          std::vector<double>(S * V * V, 0.0), std::vector<double>(O * S * C, 0.0), std::vector<double>(O, 0.0)};
  auto X = [&](int64_t n, int64_t c, int64_t t, int64_t u) { return p.x[((n * C + c) * T + t) * V + u]; };
  auto G = [&](int64_t n, int64_t o, int64_t t, int64_t v) { return p.g[((n * O + o) * T + t) * V + v]; };
  auto A = [&](int64_t s, int64_t v, int64_t u) { return p.a[(s * V + v) * V + u]; };
  auto W = [&](int64_t o, int64_t s, int64_t c) { return p.w[o * S * C + s * C + c]; };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t v = 0; v < V; ++v) {
          double y = p.b[o];
          for (int64_t s = 0; s < S; ++s)
            for (int64_t c = 0; c < C; ++c)
              for (int64_t u = 0; u < V; ++u) y += W(o, s, c) * A(s, v, u) * X(n, c, t, u);
          r.y[((n * O + o) * T + t) * V + v] = y;
          r.db[o] += G(n, o, t, v);
          for (int64_t s = 0; s < S; ++s)
            for (int64_t c = 0; c < C; ++c)
              for (int64_t u = 0; u < V; ++u) {
                const double gw = G(n, o, t, v) * W(o, s, c);
                r.dx[((n * C + c) * T + t) * V + u] += A(s, v, u) * gw;
                r.da[(s * V + v) * V + u] += gw * X(n, c, t, u);
                r.dw[o * S * C + s * C + c] += G(n, o, t, v) * A(s, v, u) * X(n, c, t, u);
              }
        }
  return r;
}


void test_problem(const Problem& p, at::ScalarType dtype, double tol) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "%s N=%lld C=%lld T=%lld V=%lld S=%lld O=%lld",
                dtype == at::kFloat ? "float32" : "float64", (long long)p.N, (long long)p.C, (long long)p.T,
                (long long)p.V, (long long)p.S, (long long)p.O);
  const std::string name = buf;
  const Naive ref = naive(p);
  at::Tensor x = to_tensor(p.x, {p.N, p.C, p.T, p.V}, dtype);
  at::Tensor a = to_tensor(p.a, {p.S * p.V, p.V}, dtype);
  at::Tensor w = to_tensor(p.w, {p.O, p.S * p.C}, dtype);
  at::Tensor b = to_tensor(p.b, {p.O}, dtype);
  at::Tensor g = to_tensor(p.g, {p.N, p.O, p.T, p.V}, dtype);

  at::Tensor y = trgnet::multiscale_graph_conv_forward_cpu(x, a, w, b);
  expect(y.sizes() == at::IntArrayRef({p.N, p.O, p.T, p.V}) && y.scalar_type() == dtype, "output shape/dtype " + name);
  const double ey = rel_err(to_vector(y), ref.y);
  expect(ey <= tol, "forward " + name + " rel err " + fmt(ey));

  auto [dx, da, dw, db] = trgnet::multiscale_graph_conv_backward_cpu(g, x, a, w);
  const std::pair<const at::Tensor*, const std::vector<double>*> grads[] = {
      {&dx, &ref.dx}, {&da, &ref.da}, {&dw, &ref.dw}, {&db, &ref.db}};
  const char* names[] = {"grad_x", "grad_adjacency", "grad_weight", "grad_bias"};
  for (int i = 0; i < 4; ++i) {
    const double e = rel_err(to_vector(*grads[i].first), *grads[i].second);
    expect(e <= tol && grads[i].first->scalar_type() == dtype, std::string(names[i]) + " " + name + " rel err " + fmt(e));
  }

  // Through the dispatcher (registration of the CPU kernels): bitwise the same.
  auto fwd = c10::Dispatcher::singleton()
                 .findSchemaOrThrow("trgnet::multiscale_graph_conv", "")
                 .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  expect(at::equal(fwd.call(x, a, w, b), y), "dispatcher forward " + name);
  auto bwd = c10::Dispatcher::singleton()
                 .findSchemaOrThrow("trgnet::multiscale_graph_conv_backward", "")
                 .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                     const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  auto [dx2, da2, dw2, db2] = bwd.call(g, x, a, w);
  expect(at::equal(dx, dx2) && at::equal(da, da2) && at::equal(dw, dw2) && at::equal(db, db2),
         "dispatcher backward (deterministic) " + name);
}

void test_argument_checks() {
  const auto forward = &trgnet::multiscale_graph_conv_forward_cpu;
  const auto backward = &trgnet::multiscale_graph_conv_backward_cpu;
  const auto f = at::TensorOptions().dtype(at::kFloat);
  at::Tensor x = at::rand({2, 3, 5, 4}, f), a = at::rand({8, 4}, f), w = at::rand({6, 6}, f), b = at::rand({6}, f);
  throws_naming([&] { forward(x.transpose(2, 3).contiguous().transpose(2, 3), a, w, b); },
                "argument 'x': expected a contiguous tensor", "non-contiguous x rejected");
  throws_naming([&] { forward(x, a.narrow(0, 0, 6).contiguous(), w, b); },
                "argument 'adjacency': expected shape (S*V, V)", "adjacency rows rejected");
  throws_naming([&] { forward(x, a, w.narrow(1, 0, 5).contiguous(), b); },
                "argument 'weight': expected shape (C_out, S*C) = (C_out, 6)", "weight columns rejected");
  throws_naming([&] { forward(x, a, w, b.to(at::kDouble)); },
                "argument 'bias': expected dtype Float", "bias dtype rejected");
  throws_naming([&] { backward(at::rand({2, 5, 5, 4}, f), x, a, w); },
                "argument 'grad_out': expected shape (N, C_out, T, V) of the output = [2, 6, 5, 4]",
                "grad_out shape rejected");
}

}  // namespace

int main() {
  std::mt19937_64 rng = trgnet_test::seeded_rng();
  struct Shape {
    int64_t N, C, T, V, S, O;
  };
  const Shape shapes[] = {{2, 3, 5, 17, 2, 7}, {1, 4, 1, 19, 3, 5}, {2, 2, 70, 25, 2, 3}};
  for (const auto& s : shapes) {
    const Problem p = make_problem(rng, s.N, s.C, s.T, s.V, s.S, s.O);
    test_problem(p, at::kFloat, 1e-5);
    test_problem(p, at::kDouble, 1e-12);
  }
  test_argument_checks();
  return trgnet_test::report();
}
