// C++ test of the CPU kernels of trgnet::adaptive_graph_conv (run by ctest).
//
// The kernels are compared against naive double-precision loops written here from the formulas
//   th = tanh(p[n,t,u] - q[n,t,v]),  F = beta th + J[u,v]
//   Y[n,c,t,u]  = sum_v (F[n,t,u,v] + G[n,c,u,v]) X[n,c,t,v]
//   dX[n,c,t,v] = sum_u (F + G)[u,v] dY[n,c,t,u]       dG[n,c,u,v] = sum_t dY[n,c,t,u] X[n,c,t,v]
//   dF[n,t,u,v] = sum_c dY[n,c,t,u] X[n,c,t,v]           dJ = sum_{n,t} dF     dbeta = sum dF th
//   dp[n,t,u]   = sum_v dF beta (1 - th^2)                dq[n,t,v] = -sum_u dF beta (1 - th^2)
// grad_beta is one sum of N*T*V*V terms dF th of both signs that now and then nearly cancels: its
// error is measured against max(|ref|, ||dF th||_2), the size of the sum without cancellation.
// Fresh random inputs each run (the seed is printed). Returns nonzero on failure.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "adaptive_graph_conv.h"
#include "test_util.h"

namespace {

using namespace trgnet_test;  // tests/csrc/test_util.h

struct Problem {
  int64_t N, C, T, V;
  std::vector<double> x, p, q, beta, G, J, g;
};

Problem make_problem(std::mt19937_64& rng, int64_t N, int64_t C, int64_t T, int64_t V) {
  Problem pr{N, C, T, V, {}, {}, {}, {}, {}, {}, {}};
  NormalFill fill{rng};
  fill(pr.x, N * C * T * V, 1.0);
  fill(pr.p, N * T * V, 1.0);
  fill(pr.q, N * T * V, 1.0);
  fill(pr.beta, 1, 1.0);
  fill(pr.G, N * C * V * V, 1.0 / std::sqrt(double(V)));
  fill(pr.J, V * V, 1.0 / std::sqrt(double(V)));
  fill(pr.g, N * C * T * V, 1.0);
  return pr;
}

struct Naive {
  std::vector<double> y, dx, dp, dq, dbeta, dG, dJ;
  double dbeta_scale = 0;  // ||dF th||_2
};

Naive naive(const Problem& pr) {
  const int64_t N = pr.N, C = pr.C, T = pr.T, V = pr.V;
  Naive r{std::vector<double>(N * C * T * V, 0.0), std::vector<double>(N * C * T * V, 0.0),
          std::vector<double>(N * T * V, 0.0),     std::vector<double>(N * T * V, 0.0),
          std::vector<double>(1, 0.0),             std::vector<double>(N * C * V * V, 0.0),
          std::vector<double>(V * V, 0.0)};
  const double beta = pr.beta[0];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t u = 0; u < V; ++u)
        for (int64_t v = 0; v < V; ++v) {
          const double th = std::tanh(pr.p[(n * T + t) * V + u] - pr.q[(n * T + t) * V + v]);
          const double F = beta * th + pr.J[u * V + v];
          double dF = 0;
          for (int64_t c = 0; c < C; ++c) {
            const int64_t row = ((n * C + c) * T + t) * V;
            const double Gv = pr.G[((n * C + c) * V + u) * V + v];
            r.y[row + u] += (F + Gv) * pr.x[row + v];
            r.dx[row + v] += (F + Gv) * pr.g[row + u];
            r.dG[((n * C + c) * V + u) * V + v] += pr.g[row + u] * pr.x[row + v];
            dF += pr.g[row + u] * pr.x[row + v];
          }
          r.dJ[u * V + v] += dF;
          r.dbeta[0] += dF * th;
          r.dbeta_scale += dF * th * dF * th;
          r.dp[(n * T + t) * V + u] += dF * beta * (1 - th * th);
          r.dq[(n * T + t) * V + v] -= dF * beta * (1 - th * th);
        }
  r.dbeta_scale = std::sqrt(r.dbeta_scale);
  return r;
}


void test_problem(const Problem& pr, at::ScalarType dtype, double tol) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "%s N=%lld C=%lld T=%lld V=%lld", dtype == at::kFloat ? "float32" : "float64",
                (long long)pr.N, (long long)pr.C, (long long)pr.T, (long long)pr.V);
  const std::string name = buf;
  const Naive ref = naive(pr);
  const int64_t N = pr.N, C = pr.C, T = pr.T, V = pr.V;
  at::Tensor x = to_tensor(pr.x, {N, C, T, V}, dtype);
  at::Tensor p = to_tensor(pr.p, {N, T, V}, dtype);
  at::Tensor q = to_tensor(pr.q, {N, T, V}, dtype);
  at::Tensor beta = to_tensor(pr.beta, {1}, dtype);
  at::Tensor G = to_tensor(pr.G, {N, C, V, V}, dtype);
  at::Tensor J = to_tensor(pr.J, {V, V}, dtype);
  at::Tensor g = to_tensor(pr.g, {N, C, T, V}, dtype);

  at::Tensor y = trgnet::adaptive_graph_conv_forward_cpu(x, p, q, beta, G, J);
  expect(y.sizes() == x.sizes() && y.scalar_type() == dtype, "output shape/dtype " + name);
  const double ey = rel_err(to_vector(y), ref.y);
  expect(ey <= tol, "forward " + name + " rel err " + fmt(ey));

  auto grads = trgnet::adaptive_graph_conv_backward_cpu(g, x, p, q, beta, G, J);
  const at::Tensor* got[] = {&std::get<0>(grads), &std::get<1>(grads), &std::get<2>(grads),
                             &std::get<3>(grads), &std::get<4>(grads), &std::get<5>(grads)};
  const std::vector<double>* want[] = {&ref.dx, &ref.dp, &ref.dq, &ref.dbeta, &ref.dG, &ref.dJ};
  const at::Tensor* inputs[] = {&x, &p, &q, &beta, &G, &J};
  const char* names[] = {"grad_x", "grad_p", "grad_q", "grad_beta", "grad_channel_graph", "grad_joint_graph"};
  for (int i = 0; i < 6; ++i) {
    const double e = rel_err(to_vector(*got[i]), *want[i], i == 3 ? ref.dbeta_scale : 1e-300);
    expect(e <= tol && got[i]->sizes() == inputs[i]->sizes() && got[i]->scalar_type() == dtype,
           std::string(names[i]) + " " + name + " rel err " + fmt(e));
  }

  // Through the dispatcher (registration of the CPU kernels): bitwise the same.
  using T6 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
  auto fwd = c10::Dispatcher::singleton()
                 .findSchemaOrThrow("trgnet::adaptive_graph_conv", "")
                 .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, const at::Tensor&)>();
  expect(at::equal(fwd.call(x, p, q, beta, G, J), y), "dispatcher forward " + name);
  auto bwd = c10::Dispatcher::singleton()
                 .findSchemaOrThrow("trgnet::adaptive_graph_conv_backward", "")
                 .typed<T6(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  const T6 again = bwd.call(g, x, p, q, beta, G, J);
  expect(at::equal(std::get<0>(again), std::get<0>(grads)) && at::equal(std::get<3>(again), std::get<3>(grads)) &&
             at::equal(std::get<5>(again), std::get<5>(grads)),
         "dispatcher backward (deterministic) " + name);
}

void test_argument_checks() {
  const auto forward = &trgnet::adaptive_graph_conv_forward_cpu;
  const auto backward = &trgnet::adaptive_graph_conv_backward_cpu;
  const auto f = at::TensorOptions().dtype(at::kFloat);
  at::Tensor x = at::rand({2, 3, 5, 4}, f), p = at::rand({2, 5, 4}, f), beta = at::rand({1}, f);
  at::Tensor G = at::rand({2, 3, 4, 4}, f), J = at::rand({4, 4}, f);
  throws_naming([&] { forward(x.transpose(2, 3).contiguous().transpose(2, 3), p, p, beta, G, J); },
                "argument 'x': expected a contiguous tensor", "non-contiguous x rejected");
  throws_naming([&] { forward(x, p.narrow(1, 0, 4).contiguous(), p, beta, G, J); },
                "argument 'p': expected shape (N, T, V) = [2, 5, 4], got [2, 4, 4]", "p shape rejected");
  throws_naming([&] { forward(x, p, p, beta.reshape({}), G, J); },
                "argument 'beta': expected shape (1,)", "0-d beta rejected by the raw op");
  throws_naming([&] { forward(x, p, p, beta, G.to(at::kDouble), J); },
                "argument 'channel_graph': expected dtype Float", "channel_graph dtype rejected");
  throws_naming([&] { forward(x, p, p, beta, G, J.t().contiguous().t().narrow(0, 0, 4)); },
                "argument 'joint_graph': expected a contiguous tensor", "non-contiguous joint_graph rejected");
  throws_naming([&] { backward(x.narrow(1, 0, 2).contiguous(), x, p, p, beta, G, J); },
                "argument 'grad_out': expected shape", "grad_out shape rejected");
}

}  // namespace

int main() {
  std::mt19937_64 rng = trgnet_test::seeded_rng();
  struct Shape {
    int64_t N, C, T, V;
  };
  const Shape shapes[] = {{2, 5, 7, 17}, {1, 3, 1, 19}, {2, 4, 70, 25}};
  for (const auto& s : shapes) {
    const Problem pr = make_problem(rng, s.N, s.C, s.T, s.V);
    test_problem(pr, at::kFloat, 1e-5);
    test_problem(pr, at::kDouble, 1e-12);
  }
  test_argument_checks();
  return trgnet_test::report();
}
