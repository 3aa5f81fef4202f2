// Emulated run of the CUDA kernels of the fused BatchNorm + residual + ReLU (kernels/batch_norm_relu.cu, compiled by
// g++ against shim/ after gen_sources.py) against a double-precision reference written here from the formula of
// trgnet_fast/ops/batch_norm_relu/__init__.py (forward: two-pass statistics over the valid frames, count =
// max(1, V sum m); backward: the closed form, on the kernels' own out, mean and var, which decide the ReLU's gate),
// on the same rounded inputs. The reference's gradients are checked against central differences of
// L = sum grad_out * out (statistics recomputed). Cases: with / without residual and frame mask (padded frames, a
// fully padded row, an all-zero mask), T = 1, odd V (17, 25), several slots per channel with a shorter last slot,
// rows of several pieces (the last one short), fp64 / fp32 / bf16 / fp16, the 16-byte path and the scalar path (T V
// not whole packs), base pointers aligned and misaligned by one element (bitwise-equal results, other thread order),
// x without elements (no launch, nothing written), and sizes the launchers refuse. Each direction must take exactly
// 2 launches. Argument: random cases per dtype (6).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "batch_norm_relu.cuh"
#include "batch_norm_relu.h"
#include "test_util.h"

using namespace emu_test;
namespace bnr = trgnet::bnr;

namespace {

enum MaskKind { kNoMask, kPadded, kZeroMask };
const char* mask_name(MaskKind m) { return m == kNoMask ? "" : m == kPadded ? " masked" : " all-zero mask"; }

constexpr double kEps = 1e-5;

struct Shape {
  int N, C, T, V;
  bool residual;
  MaskKind mask;
};

struct Expect {
  Vec vec = Vec::kAny;
  bool several_slots = false;  // slots > 1 with a shorter last slot
  bool several_pieces = false;  // rows of several pieces
};

// Inputs of one case as doubles (already rounded to the storage types).
struct Data {
  std::vector<double> x, residual, mask, weight, bias, grad_out;  // mask (N T); residual empty when absent
};

struct Ref {
  std::vector<double> out, mean, var;
};
struct RefGrad {
  std::vector<double> gx, gr, gw, gb;
  double floor_w = 0, floor_b = 0;  // denominators' floors of gw, gb (reference.gradient_error_floors' rule)
};

double frame_mask(const Shape& s, const Data& d, int n, int t) { return s.mask == kNoMask ? 1.0 : d.mask[n * s.T + t]; }
double count_of(const Shape& s, const Data& d) {
  double valid = 0;
  for (int n = 0; n < s.N; ++n)
    for (int t = 0; t < s.T; ++t) valid += frame_mask(s, d, n, t);
  return std::max(1.0, valid * s.V);
}
size_t index(const Shape& s, int n, int c, int t, int v) { return ((size_t(n) * s.C + c) * s.T + t) * s.V + v; }

// The forward by the formula, in double (two-pass statistics).
Ref reference(const Shape& s, const Data& d) {
  const double count = count_of(s, d);
  Ref r{std::vector<double>(d.x.size()), std::vector<double>(s.C), std::vector<double>(s.C)};
  for (int c = 0; c < s.C; ++c) {
    double sum = 0, sq = 0;
    for (int n = 0; n < s.N; ++n)
      for (int t = 0; t < s.T; ++t)
        for (int v = 0; v < s.V; ++v) sum += frame_mask(s, d, n, t) * d.x[index(s, n, c, t, v)];
    const double mean = sum / count;
    for (int n = 0; n < s.N; ++n)
      for (int t = 0; t < s.T; ++t)
        for (int v = 0; v < s.V; ++v) {
          const double e = d.x[index(s, n, c, t, v)] - mean;
          sq += frame_mask(s, d, n, t) * e * e;
        }
    const double var = sq / count, invstd = 1 / std::sqrt(var + kEps);
    r.mean[c] = mean;
    r.var[c] = var;
    for (int n = 0; n < s.N; ++n)
      for (int tv = 0; tv < s.T * s.V; ++tv) {
        const size_t i = index(s, n, c, 0, 0) + tv;
        const double pre = (d.x[i] - mean) * invstd * d.weight[c] + d.bias[c] + (s.residual ? d.residual[i] : 0.0);
        r.out[i] = std::max(pre, 0.0);
      }
  }
  return r;
}

// The closed-form backward, in double, given out, mean and var.
RefGrad reference_backward(const Shape& s, const Data& d, const std::vector<double>& out,
                           const std::vector<double>& mean, const std::vector<double>& var) {
  const double count = count_of(s, d);
  RefGrad r{std::vector<double>(d.x.size()), std::vector<double>(d.x.size()), std::vector<double>(s.C),
            std::vector<double>(s.C)};
  double rss_b = 0, rss_w = 0;
  for (int c = 0; c < s.C; ++c) {
    const double invstd = 1 / std::sqrt(var[c] + kEps);
    double gb = 0, gw = 0;
    for (int n = 0; n < s.N; ++n)
      for (int tv = 0; tv < s.T * s.V; ++tv) {
        const size_t i = index(s, n, c, 0, 0) + tv;
        const double g = out[i] > 0 ? d.grad_out[i] : 0.0, x_hat = (d.x[i] - mean[c]) * invstd;
        gb += g;
        gw += g * x_hat;
        rss_b += g * g;
        rss_w += g * x_hat * g * x_hat;
      }
    r.gb[c] = gb;
    r.gw[c] = gw;
    for (int n = 0; n < s.N; ++n)
      for (int tv = 0; tv < s.T * s.V; ++tv) {
        const size_t i = index(s, n, c, 0, 0) + tv;
        const double g = out[i] > 0 ? d.grad_out[i] : 0.0, x_hat = (d.x[i] - mean[c]) * invstd;
        const double m = frame_mask(s, d, n, tv / s.V);
        r.gx[i] = d.weight[c] * invstd * (g - m * (gb + x_hat * gw) / count);
        r.gr[i] = g;
      }
  }
  r.floor_b = 0.25 * std::sqrt(rss_b);
  r.floor_w = 0.25 * std::sqrt(rss_w);
  return r;
}

// Random inputs of a shape (x with a per-channel offset and scale, so that the statistics matter).
Data make_data(const Shape& s, std::mt19937_64& rng) {
  Data d;
  const size_t n = size_t(s.N) * s.C * s.T * s.V;
  std::vector<double> offset = uniform_values(rng, s.C, -2, 2), scale = uniform_values(rng, s.C, 0.5, 2);
  d.x = uniform_values(rng, n, -1.5, 1.5);
  for (size_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(i / (size_t(s.T) * s.V) % s.C);
    d.x[i] = offset[c] + scale[c] * d.x[i];
  }
  if (s.residual) d.residual = uniform_values(rng, n);
  d.mask.assign(size_t(s.N) * s.T, s.mask == kZeroMask ? 0.0 : 1.0);
  if (s.mask == kPadded) {
    for (auto& m : d.mask) m = rng() % 4 ? 1.0 : 0.0;
    if (s.N > 1)
      for (int t = 0; t < s.T; ++t) d.mask[t] = 0.0;  // row 0 fully padded
    if (s.N * s.T > 0) d.mask.back() = 1.0;            // at least one valid frame
  }
  d.weight = uniform_values(rng, s.C, 0.5, 1.5);
  d.bias = uniform_values(rng, s.C, -0.5, 0.5);
  d.grad_out = uniform_values(rng, n);
  return d;
}

// The reference's gradients against central differences of L = sum grad_out * out (fp64, small sizes).
void check_reference() {
  for (MaskKind mask : {kNoMask, kPadded}) {
    const Shape s{3, 2, 4, 5, true, mask};
    std::mt19937_64 rng(11);
    Data d = make_data(s, rng);
    const Ref r = reference(s, d);
    const RefGrad g = reference_backward(s, d, r.out, r.mean, r.var);
    auto loss = [&] { return dot(d.grad_out, reference(s, d).out); };
    const std::string title = std::string("reference self-check (residual") + mask_name(mask) +
                              "): every gradient vs central differences";
    check_gradients(title.c_str(),
                    {{&d.x, &g.gx, "grad_x"}, {&d.residual, &g.gr, "grad_residual"}, {&d.weight, &g.gw, "grad_w"},
                     {&d.bias, &g.gb, "grad_b"}},
                    loss, 1e-5, 1e-6);
  }
}

template <class In, class Acc>
std::vector<double> run_case(const std::string& why, Shape s, int offset, Expect ex = {}, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  const bnr::Plan plan = bnr::make_plan(s.N, s.C, s.T, s.V);
  char sizes[160];
  std::snprintf(sizes, sizeof(sizes), "N=%d C=%d T=%d V=%d%s%s", s.N, s.C, s.T, s.V, s.residual ? " residual" : "",
                mask_name(s.mask));
  Case c(case_title<In>(sizes, offset, why));

  Data d = make_data(s, rng);
  const size_t n = d.x.size();
  Buf<In> x(n, offset), residual(s.residual ? n : 0, offset), mask(size_t(s.N) * s.T, offset), out(n, offset),
      grad_out(n, offset), grad_x(n, offset), grad_residual(s.residual ? n : 0, offset);
  Buf<Acc> weight(s.C, offset), bias(s.C, offset), mean(s.C, offset), var(s.C, offset), grad_weight(s.C, offset),
      grad_bias(s.C, offset);
  d.x = x.store(d.x);
  if (s.residual) d.residual = residual.store(d.residual);
  d.mask = mask.store(d.mask);
  d.weight = weight.store(d.weight);
  d.bias = bias.store(d.bias);
  d.grad_out = grad_out.store(d.grad_out);
  Buf<Acc> ws(static_cast<size_t>(bnr::workspace_elems(s.N, s.C, s.T, s.V)));

  const bnr::ForwardArgs<In, Acc> fa{x.p,      s.residual ? residual.p : nullptr, s.mask == kNoMask ? nullptr : mask.p,
                                     weight.p, bias.p, out.p, mean.p, var.p, ws.p, s.N, s.C, s.T, s.V, kEps};
  const bnr::BackwardArgs<In, Acc> ba{grad_out.p, out.p, x.p, fa.frame_mask, weight.p, mean.p, var.p, grad_x.p,
                                      s.residual ? grad_residual.p : nullptr, grad_weight.p, grad_bias.p, ws.p,
                                      s.N, s.C, s.T, s.V, kEps};
  const Launches launches = launch_forward_backward(
      c, [&] { return trgnet::launch_batch_norm_relu_forward(fa, nullptr); },
      [&] {
        ws.poison();  // the backward must not read the forward's partials
        return trgnet::launch_batch_norm_relu_backward(ba, nullptr);
      });
  c.require(launches.forward == 2 && launches.backward == 2, "2 launches each way");

  const Ref r = reference(s, d);
  // the backward's yardstick on the kernels' own forward results (out decides the ReLU's gradient)
  const RefGrad g = reference_backward(s, d, out.values(), mean.values(), var.values());
  const double t = tol<In>();
  Outputs outs;
  outs.check(c, out, r.out, "out", t);
  outs.check(c, mean, r.mean, "mean", t);
  outs.check(c, var, r.var, "var", t);
  outs.check(c, grad_x, g.gx, "gx", t);
  if (s.residual) outs.check(c, grad_residual, g.gr, "gres", t);
  outs.check(c, grad_weight, g.gw, "gw", t, g.floor_w);
  outs.check(c, grad_bias, g.gb, "gb", t, g.floor_b);
  outs.finish(c);
  char b[160];
  std::snprintf(b, sizeof(b), "| %lld slot(s) of %lld piece(s), %lld piece(s) a row", (long long)plan.slots,
                (long long)plan.per, (long long)plan.pieces_per_row);
  c.note(b);
  if (ex.several_slots)
    c.require(plan.slots > 1 && plan.per > 1 && plan.pieces % plan.per != 0, "several slots, a shorter last one");
  if (ex.several_pieces) c.require(plan.pieces_per_row > 1 && plan.slots > 1, "rows of several pieces, slots > 1");
  c.require_vec(ex.vec);
  c.finish();
  return outs.all;
}

// x without elements (N = 0, T = 0 or C = 0): both launchers succeed without a launch and write nothing (the caller
// zero-fills the statistics and the parameter gradients).
void empty_cases() {
  Case c("x without elements: no launch, nothing written (N = 0, T = 0, C = 0)");
  for (const Shape& s : {Shape{0, 3, 4, 5, true, kPadded}, Shape{2, 3, 0, 5, true, kPadded},
                         Shape{2, 0, 4, 5, false, kNoMask}}) {
    Buf<float> mean(s.C), var(s.C), gw(s.C), gb(s.C), w(s.C), b(s.C);
    float dummy[4] = {};
    const bnr::ForwardArgs<float, float> fa{nullptr, nullptr, nullptr, w.p,  b.p, nullptr, mean.p,
                                            var.p,   nullptr, s.N,     s.C, s.T, s.V, kEps};
    c.require(trgnet::launch_batch_norm_relu_forward(fa, nullptr) == cudaSuccess, "forward must succeed");
    const bnr::BackwardArgs<float, float> ba{dummy, dummy, dummy, nullptr, w.p, mean.p, var.p, dummy, nullptr,
                                             gw.p,  gb.p,  nullptr, s.N, s.C, s.T, s.V, kEps};
    c.require(trgnet::launch_batch_norm_relu_backward(ba, nullptr) == cudaSuccess, "backward must succeed");
    c.require(std::isnan(s.C ? mean.p[0] + var.p[0] + gw.p[0] + gb.p[0] : NAN), "nothing written");
  }
  c.require(c.delta(&kemu::Stats::launches) == 0, "no launch expected");
  c.finish();
}

// A random small shape (odd V, T = 1 now and then, any mask kind, at least 16 positions a channel).
Shape random_shape(std::mt19937_64& rng) {
  const int joints[] = {1, 3, 17, 19, 25};
  Shape s{1 + static_cast<int>(rng() % 4), 1 + static_cast<int>(rng() % 9),
          rng() % 4 == 0 ? 1 : 1 + static_cast<int>(rng() % 120), joints[rng() % 5], rng() % 2 == 0,
          static_cast<MaskKind>(rng() % 3)};
  // at least 16 positions a channel: with very few (2 positions: grad_x is 0 up to eps) the relative errors
  // measure the conditioning of the problem, not the kernels
  while (s.N * s.T * s.V < 16) s.N += 1;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const int random_count = argc > 1 ? std::atoi(argv[1]) : 6;
  return run_driver("batch_norm_relu", check_reference, [&] {
    const Expect vec{Vec::kUsed}, scalar{Vec::kNone};
    run_case<double, double>("no residual, no mask, scalar path", {2, 3, 7, 17, false, kNoMask}, 0, scalar);
    run_case<double, double>("padded frames, a fully padded row, 16-byte path", {3, 4, 8, 25, true, kPadded}, 0, vec);
    run_case<double, double>("all-zero mask (mean 0, var 0)", {2, 3, 6, 5, true, kZeroMask}, 0);
    run_case<float, float>("T = 1, V = 17", {3, 5, 1, 17, true, kPadded}, 0, scalar);
    run_case<float, float>("T = 1, V = 25, no mask", {4, 3, 1, 25, false, kNoMask}, 0, scalar);
    run_case<float, float>("several slots, shorter last slot", {21, 40, 3, 17, true, kPadded}, 0,
                           {Vec::kNone, true, false});
    run_case<float, float>("rows of 2 pieces (2048 + 452), slots > 1", {3, 5, 100, 25, true, kPadded}, 0,
                           {Vec::kUsed, false, true});
    run_case<__nv_bfloat16, float>("rows of 3 pieces, several slots, shorter last slot",
                                   {3, 100, 184, 25, true, kPadded}, 0, {Vec::kUsed, true, true});
    run_case<double, double>("rows of 3 pieces, fp64, all-zero mask", {2, 7, 240, 25, false, kZeroMask}, 0,
                             {Vec::kUsed, false, true});
    run_case<__nv_bfloat16, float>("bf16, residual, padded frames", {3, 6, 9, 25, true, kPadded}, 0);
    run_case<__nv_bfloat16, float>("bf16, no mask, 16-byte path", {2, 4, 16, 25, false, kNoMask}, 0, vec);
    run_case<__half, float>("f16, residual, padded frames", {2, 5, 11, 19, true, kPadded}, 0);
    pair_case<float>(run_case<float, float>, Shape{3, 6, 8, 25, true, kPadded}, vec, scalar);
    pair_case<__nv_bfloat16>(run_case<__nv_bfloat16, float>, Shape{2, 5, 16, 25, true, kPadded}, vec, scalar);
    pair_case<double>(run_case<double, double>, Shape{2, 5, 90, 25, false, kPadded}, vec, scalar);
    run_random_cases(run_case<double, double>, random_count, 7, random_shape);
    run_random_cases(run_case<float, float>, random_count, 8, random_shape);
    run_random_cases(run_case<__nv_bfloat16, float>, random_count / 2, 9, random_shape);
    empty_cases();
    unsupported_sizes([](Case& c) {
      float dummy[4] = {};
      bnr::ForwardArgs<float, float> fa{dummy, nullptr, nullptr, dummy, dummy, dummy, dummy, dummy, dummy,
                                        1,     1,       2,       2,     0.0};
      c.require_rejected(trgnet::launch_batch_norm_relu_forward(fa, nullptr), "forward with eps 0");
      fa.eps = NAN;
      c.require_rejected(trgnet::launch_batch_norm_relu_forward(fa, nullptr), "forward with eps NaN");
      fa.eps = kEps;
      fa.T = 70000, fa.V = 70000;  // T V above kMaxRowPositions
      c.require_rejected(trgnet::launch_batch_norm_relu_forward(fa, nullptr), "forward with T V > kMaxRowPositions");
      fa.T = fa.V = 2;
      fa.workspace = nullptr;
      c.require_rejected(trgnet::launch_batch_norm_relu_forward(fa, nullptr), "forward without a workspace");
      fa.workspace = dummy;
      fa.N = -1;
      c.require_rejected(trgnet::launch_batch_norm_relu_forward(fa, nullptr), "forward with N < 0");
      bnr::BackwardArgs<float, float> ba{dummy, dummy, dummy, nullptr, dummy, dummy, dummy, nullptr, nullptr,
                                         dummy, dummy, dummy, 1,       1,     2,     2,     kEps};
      c.require_rejected(trgnet::launch_batch_norm_relu_backward(ba, nullptr), "backward without grad_x");
      ba.grad_x = dummy;
      ba.eps = -1;
      c.require_rejected(trgnet::launch_batch_norm_relu_backward(ba, nullptr), "backward with eps < 0");
    });
  });
}
