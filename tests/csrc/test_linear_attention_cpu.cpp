// C++ test of the CPU kernels of trgnet::linear_attention (run by ctest).
//
// The kernels are compared against a naive double-precision O(T^2) evaluation written here:
//   w[l][s] = m[s] * sum_d phi(q[l][d]) phi(k[s][d]),
//   out[l][e] = sum_s w[l][s] v[s][e] / (sum_s w[l][s] + eps * sum_d phi(q[l][d])),
// the backward against central finite differences of that evaluation. Fresh random inputs each
// run (the seed is printed). Returns nonzero on failure.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "linear_attention.h"
#include "test_util.h"

namespace {

using namespace trgnet_test;  // tests/csrc/test_util.h

struct Problem {
  int64_t N, T, H, D, E;
  bool masked;
  double eps;
  std::vector<double> q, k, v, g;  // (N,T,H,D), (N,T,H,D), (N,T,H,E), (N,T,H,E)
  std::vector<char> mask;          // (N,T)
};

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

Problem make_problem(std::mt19937_64& rng, int64_t N, int64_t T, int64_t H, int64_t D, int64_t E, bool masked) {
  std::bernoulli_distribution keep(0.7);
  Problem p{N, T, H, D, E, masked, 1e-6, {}, {}, {}, {}, {}};
  NormalFill fill{rng};
  fill(p.q, N * T * H * D);
  fill(p.k, N * T * H * D);
  fill(p.v, N * T * H * E);
  fill(p.g, N * T * H * E);
  p.mask.resize(N * T);
  for (auto& m : p.mask) m = masked ? keep(rng) : 1;
  return p;
}

// Naive O(T^2) forward in double: out (N,T,H,E).
std::vector<double> naive_forward(const Problem& p, const std::vector<double>& q, const std::vector<double>& k,
                                  const std::vector<double>& v) {
  const int64_t N = p.N, T = p.T, H = p.H, D = p.D, E = p.E;
  std::vector<double> sq(q.size()), sk(k.size()), out(N * T * H * E);
  for (size_t i = 0; i < q.size(); ++i) sq[i] = sig(q[i]);
  for (size_t i = 0; i < k.size(); ++i) sk[i] = sig(k[i]);
  std::vector<double> num(E);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t l = 0; l < T; ++l) {
        const double* ql = &sq[((n * T + l) * H + h) * D];
        double qsum = 0;
        for (int64_t d = 0; d < D; ++d) qsum += ql[d];
        std::fill(num.begin(), num.end(), 0.0);
        double den = p.eps * qsum;
        for (int64_t s = 0; s < T; ++s) {
          if (!p.mask[n * T + s]) continue;
          const double* ks = &sk[((n * T + s) * H + h) * D];
          const double* vs = &v[((n * T + s) * H + h) * E];
          double w = 0;
          for (int64_t d = 0; d < D; ++d) w += ql[d] * ks[d];
          for (int64_t e = 0; e < E; ++e) num[e] += w * vs[e];
          den += w;
        }
        for (int64_t e = 0; e < E; ++e) out[((n * T + l) * H + h) * E + e] = num[e] / den;
      }
  return out;
}

double loss(const Problem& p, const std::vector<double>& q, const std::vector<double>& k,
            const std::vector<double>& v) {
  const auto out = naive_forward(p, q, k, v);
  double L = 0;
  for (size_t i = 0; i < out.size(); ++i) L += out[i] * p.g[i];
  return L;
}


std::string describe(const Problem& p, const char* dtype) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "%s N=%lld T=%lld H=%lld D=%lld E=%lld %s", dtype, (long long)p.N, (long long)p.T,
                (long long)p.H, (long long)p.D, (long long)p.E, p.masked ? "masked" : "unmasked");
  return buf;
}

void test_forward(const Problem& p, at::ScalarType dtype, double tol) {
  const std::string name = describe(p, dtype == at::kFloat ? "float32" : "float64");
  at::Tensor q = to_tensor(p.q, {p.N, p.T, p.H, p.D}, dtype);
  at::Tensor k = to_tensor(p.k, {p.N, p.T, p.H, p.D}, dtype);
  at::Tensor v = to_tensor(p.v, {p.N, p.T, p.H, p.E}, dtype);
  std::optional<at::Tensor> mask;
  if (p.masked) {
    at::Tensor m = at::empty({p.N, p.T}, at::TensorOptions().dtype(at::kBool));
    for (int64_t i = 0; i < p.N * p.T; ++i) m.data_ptr<bool>()[i] = p.mask[i] != 0;
    mask = m;
  }
  auto [out, kv, ks] = trgnet::linear_attention_forward_cpu(q, k, v, mask, p.eps);
  const double err = rel_err(to_vector(out), naive_forward(p, p.q, p.k, p.v));
  expect(err <= tol, "forward " + name + " rel err " + fmt(err));
  expect(kv.sizes() == at::IntArrayRef({p.N, p.H, p.D, p.E}) && ks.sizes() == at::IntArrayRef({p.N, p.H, p.D}) &&
             kv.scalar_type() == (dtype == at::kDouble ? at::kDouble : at::kFloat),
         "state shapes/dtype " + name);

  // key_sum excludes eps: compare with the naive masked sum of phi(k).
  std::vector<double> ks_ref(p.N * p.H * p.D, 0.0);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t t = 0; t < p.T; ++t)
      for (int64_t h = 0; h < p.H; ++h)
        for (int64_t d = 0; d < p.D; ++d)
          if (p.mask[n * p.T + t]) ks_ref[(n * p.H + h) * p.D + d] += sig(p.k[((n * p.T + t) * p.H + h) * p.D + d]);
  expect(rel_err(to_vector(ks), ks_ref) <= tol, "key_sum " + name);

  // Through the dispatcher (registration of the CPU kernel): bitwise the same.
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("trgnet::linear_attention", "")
                .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                      const at::Tensor&,
                                                                      const std::optional<at::Tensor>&, double)>();
  auto [out2, kv2, ks2] = op.call(q, k, v, mask, p.eps);
  expect(at::equal(out, out2) && at::equal(kv, kv2) && at::equal(ks, ks2), "dispatcher call " + name);

  // Backward against central finite differences of the naive double evaluation.
  if (dtype == at::kDouble) {
    at::Tensor g = to_tensor(p.g, {p.N, p.T, p.H, p.E}, dtype);
    auto [dq, dk, dv] = trgnet::linear_attention_backward_cpu(g, q, k, v, mask, kv, ks, p.eps);
    const double h = 1e-5;
    auto numeric = [&](int which) {
      std::vector<double> q2 = p.q, k2 = p.k, v2 = p.v;
      std::vector<double>& x = which == 0 ? q2 : which == 1 ? k2 : v2;
      std::vector<double> grad(x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        const double x0 = x[i];
        x[i] = x0 + h;
        const double lp = loss(p, q2, k2, v2);
        x[i] = x0 - h;
        const double lm = loss(p, q2, k2, v2);
        x[i] = x0;
        grad[i] = (lp - lm) / (2 * h);
      }
      return grad;
    };
    const char* names[3] = {"grad_q", "grad_k", "grad_v"};
    const at::Tensor* got[3] = {&dq, &dk, &dv};
    for (int w = 0; w < 3; ++w) {
      const double e = rel_err(to_vector(*got[w]), numeric(w), 1e-2);
      expect(e <= 1e-6, std::string(names[w]) + " " + name + " rel err " + fmt(e));
    }
  }
}

void test_argument_checks() {
  const auto forward = &trgnet::linear_attention_forward_cpu;
  at::Tensor q = at::rand({2, 5, 3, 4}, at::TensorOptions().dtype(at::kFloat));
  at::Tensor v = at::rand({2, 5, 3, 6}, at::TensorOptions().dtype(at::kFloat));
  throws_naming([&] { forward(q.transpose(1, 2).contiguous().transpose(1, 2), q, v, {}, 1e-6); },
                "argument 'q': expected a contiguous tensor", "non-contiguous q rejected");
  throws_naming([&] { forward(q, q.narrow(3, 0, 3).contiguous(), v, {}, 1e-6); },
                "argument 'k': expected shape", "k shape mismatch rejected");
  throws_naming([&] { forward(q, q, v.to(at::kDouble), {}, 1e-6); },
                "argument 'v': expected dtype Float", "v dtype mismatch rejected");
  throws_naming([&] { forward(q, q, v, at::ones({2, 5}, at::kFloat), 1e-6); },
                "argument 'key_mask': expected dtype Bool", "float key_mask rejected");
}

}  // namespace

int main() {
  std::mt19937_64 rng = trgnet_test::seeded_rng();
  struct Shape {
    int64_t N, T, H, D, E;
  };
  const Shape shapes[] = {{2, 37, 3, 5, 7}, {1, 1, 2, 16, 16}, {2, 7, 1, 3, 2}};
  for (const auto& s : shapes)
    for (bool masked : {false, true}) {
      const Problem p = make_problem(rng, s.N, s.T, s.H, s.D, s.E, masked);
      test_forward(p, at::kFloat, 1e-5);
      test_forward(p, at::kDouble, 1e-12);  // + backward vs finite differences
    }
  test_argument_checks();
  return trgnet_test::report();
}
