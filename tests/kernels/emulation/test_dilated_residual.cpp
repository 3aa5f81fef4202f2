// Emulated run of the CUDA kernels of the fused dilated residual layer (kernels/dilated_residual.cu, compiled by g++
// against shim/ after gen_sources.py) against the op's CPU implementation (the host code of
// kernels/dilated_residual.cuh, run in double on the same rounded inputs; the CPU kernel of
// csrc/dilated_residual.cpp runs that code, and it is checked against trgnet_fast's PyTorch reference by the Python
// tests): out and every gradient of L = sum grad_out * out. Random small cases over the layouts (cu_seqlens none /
// padded rows / packed, with empty sequences), mask, dropout, dilations 1 .. 512 (T < dilation included), one and
// several frame tiles per backward block, C up to kMaxChannels (shared memory above 48 KiB), fp32 / fp64 / bf16 /
// fp16, T = 0, B = 0, and base pointers aligned and misaligned by one element (bitwise-equal results, other thread
// order). The forward must take <= 2 launches, the backward <= 3. Argument: random cases per dtype (40).
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "dilated_residual.cuh"
#include "dilated_residual.h"
#include "test_util.h"

using namespace emu_test;
using trgnet::dr::kWeights;

namespace {

enum Layout { kRows, kPadded, kPacked };
const char* layout_name(Layout l) { return l == kRows ? "rows" : l == kPadded ? "padded" : "packed"; }

struct Shape {
  int B, C, T, dilation;
  Layout layout;
  bool masked, dropout;
  int sequences = 0;  // packed: N
};

struct Expect {
  bool multi_tile = false;  // several frame tiles per backward block
  bool optin = false;       // shared memory above 48 KiB
};

constexpr double kP = 0.3;

// Inputs of one case as doubles (already rounded to the storage type) and the sequence offsets.
struct Data {
  std::vector<double> x, mask, grad_out;
  std::vector<std::vector<double>> weights;
  std::vector<int32_t> cu;
  int64_t seed;
};

int64_t weight_numel(int i, int C) { return trgnet::dr::part_size(i, C); }

// Outputs of the reference: out, grad_x, the flat parameter gradients.
struct Ref {
  std::vector<double> out, gx, grads;
};

Ref reference(const Shape& s, const Data& d, int N) {
  const int64_t C = s.C;
  const std::vector<double> params = join_parts(d.weights, trgnet::dr::param_count(C), trgnet::dr::part_offset, C);
  const auto P = trgnet::dr::host_problem<double, double>(
      d.x.data(), s.masked ? d.mask.data() : nullptr, s.layout == kRows ? nullptr : d.cu.data(), params.data(), s.B,
      C, s.T, N, s.dilation, &d.seed, s.dropout ? kP : 0.0);
  Ref r;
  r.out.assign(d.x.size(), 0);
  r.gx.assign(d.x.size(), 0);
  r.grads.assign(params.size(), 0);
  for (int n = 0; n < N; ++n) trgnet::dr::host::forward_sequence(P, n, r.out.data());
  for (int n = 0; n < N; ++n)
    trgnet::dr::host::backward_sequence(P, d.grad_out.data(), n, r.gx.data(), r.grads.data());
  return r;
}

// The reference's gradients against central differences of L = sum grad_out * out (fp64, small sizes).
void check_reference() {
  for (Layout layout : {kRows, kPacked}) {
    Shape s{layout == kRows ? 2 : 1, 4, 9, 2, layout, true, true, 3};
    std::mt19937_64 rng(11);
    Data d;
    const int64_t n = (int64_t)s.B * s.C * s.T;
    d.x = uniform_values(rng, n);
    d.grad_out = uniform_values(rng, n);
    d.mask = random_frame_mask(rng, s.B * s.T);
    for (int i = 0; i < kWeights; ++i) d.weights.push_back(uniform_values(rng, weight_numel(i, s.C), -0.6, 0.6));
    d.seed = 12345;
    d.cu = layout == kRows ? std::vector<int32_t>{} : std::vector<int32_t>{0, 4, 4, s.T};
    const int N = layout == kRows ? s.B : 3;
    const Ref r = reference(s, d, N);
    auto loss = [&] { return dot(d.grad_out, reference(s, d, N).out); };
    const auto wg = split_parts(r.grads, kWeights, trgnet::dr::part_offset, trgnet::dr::part_size, s.C);
    const std::string title = std::string("reference self-check (") + layout_name(layout) +
                              "): every gradient vs central differences";
    check_gradients(title.c_str(),
                    {{&d.x, &r.gx, "grad_x"}, {&d.weights[0], &wg[0], "conv_w"}, {&d.weights[1], &wg[1], "conv_b"},
                     {&d.weights[2], &wg[2], "conv_out_w"}, {&d.weights[3], &wg[3], "conv_out_b"}},
                    loss, 1e-5, 1e-6);
  }
}

template <class In, class Acc>
std::vector<double> run_case(const std::string& why, Shape s, int offset, Expect ex = {}, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  const int B = s.B, C = s.C, T = s.T;
  Data d;
  const int N = s.layout == kPacked ? s.sequences : B;
  if (s.layout == kPadded) d.cu = padded_offsets(rng, B, T);
  if (s.layout == kPacked) d.cu = packed_offsets(rng, N, T);
  char sizes[200];
  std::snprintf(sizes, sizeof(sizes), "B=%d C=%d T=%d d=%d %s%s%s%s", B, C, T, s.dilation, layout_name(s.layout),
                lengths_note(d.cu).c_str(), s.masked ? " masked" : "", s.dropout ? " dropout" : "");
  Case c(case_title<In>(sizes, offset, why));

  const size_t n = (size_t)B * C * T;
  Buf<In> x(n, offset), mask((size_t)B * T, offset), grad_out(n, offset), out(n, offset), grad_x(n, offset);
  d.x = x.fill(rng, -1.5, 1.5);
  d.grad_out = grad_out.fill(rng, -1, 1);
  d.mask = mask.store(random_frame_mask(rng, mask.n));
  ParameterBufs<In> params(kWeights, [&](int i) { return weight_numel(i, C); }, offset);
  d.weights = params.fill(
      rng, [&](int i) { return 1.7 * (i == 0 ? 0.6 / std::sqrt(C) : i % 2 ? 0.2 : 1.0 / std::sqrt(C)); });
  Buf<int64_t> seed_buf(1);
  d.seed = static_cast<int64_t>(rng());
  seed_buf.p[0] = d.seed;
  Buf<int32_t> cu(d.cu.size());
  std::copy(d.cu.begin(), d.cu.end(), cu.p);

  trgnet::dr::Inputs<In> in{x.p, s.masked ? mask.p : nullptr, s.layout == kRows ? nullptr : cu.p, {},
                            s.dropout ? seed_buf.p : nullptr, B, C, T, N, s.dilation, s.dropout ? kP : 0.0};
  params.weights_into(in.weights);
  Buf<Acc> ws((size_t)trgnet::dr::workspace_elems(B, C, T, N, sizeof(Acc)));
  trgnet::dr::BackwardArgs<In, Acc> ba{in, grad_out.p, grad_x.p, {}, ws.p};
  params.grads_into(ba.grad_weights);
  const Launches launches = launch_forward_backward(
      c, [&] { return trgnet::launch_dilated_residual_forward(trgnet::dr::ForwardArgs<In, Acc>{in, out.p}, nullptr); },
      [&] { return trgnet::launch_dilated_residual_backward(ba, nullptr); });
  c.require(launches.forward <= 2 && launches.backward <= 3, "forward <= 2 and backward <= 3 launches");

  const Ref r = reference(s, d, N);
  const double t = tol<In>();
  Outputs outs;
  outs.check(c, out, r.out, "out", t);
  outs.check(c, grad_x, r.gx, "gx", t);
  static const char* names[kWeights] = {"g_conv_w", "g_conv_b", "g_co_w", "g_co_b"};
  const auto ref_grads = split_parts(r.grads, kWeights, trgnet::dr::part_offset, trgnet::dr::part_size, C);
  for (int i = 0; i < kWeights; ++i)
    outs.check(c, *params.grad[i], ref_grads[i], names[i], t, 1e-3 * std::sqrt((double)ref_grads[i].size()));
  outs.finish(c);
  char b[160];
  const trgnet::am::Plan fp = trgnet::dr::make_plan(C, T, N, sizeof(Acc), false);
  const trgnet::am::Plan bp = trgnet::dr::make_plan(C, T, N, sizeof(Acc), true);
  std::snprintf(b, sizeof(b), "| launches %ld+%ld, tile %d, fwd %lld block(s)/seq, bwd %lld chunk(s) of %lld tiles",
                launches.forward, launches.backward, bp.tile, (long long)fp.chunks, (long long)bp.chunks,
                (long long)bp.per);
  c.note(b);
  if (ex.multi_tile) c.require(bp.per > 1 && (T + bp.tile - 1) / bp.tile > 1, "one tile per backward block");
  if (ex.optin) c.require_optin_launch();
  c.finish();
  return outs.all;
}

// A random small shape of any layout / dilation class, C <= max_c.
Shape random_shape(std::mt19937_64& rng, int max_c) {
  const int dilations[] = {1, 2, 3, 5, 16, 64, 512};
  const int C = 1 + static_cast<int>(rng() % max_c);
  const Layout layout = static_cast<Layout>(rng() % 3);
  return {layout == kPacked ? 1 : 1 + static_cast<int>(rng() % 3), C, 1 + static_cast<int>(rng() % 90),
          dilations[rng() % 7], layout, rng() % 2 == 0, rng() % 2 == 0, 2 + static_cast<int>(rng() % 3)};
}

}  // namespace

int main(int argc, char** argv) {
  const int random_count = argc > 1 ? std::atoi(argv[1]) : 40;
  return run_driver("dilated_residual", check_reference, [&] {
    run_case<float, float>("one row", {1, 8, 20, 1, kRows, false, false}, 0);
    run_case<double, double>("mask, dropout", {2, 8, 37, 3, kRows, true, true}, 0);
    run_case<double, double>("padded rows, several blocks per sequence", {3, 6, 150, 4, kPadded, true, true}, 0);
    run_case<double, double>("packed, several blocks per sequence", {1, 4, 230, 2, kPacked, false, true, 4}, 0);
    // wide layers: the partials' budget leaves few blocks, each summing several tiles
    run_case<float, float>("C = 256 packed, several tiles per block", {1, 256, 300, 5, kPacked, true, true, 3}, 0,
                           {true, true});
    run_case<double, double>("C = 128 fp64, several tiles per block", {1, 128, 600, 40, kPadded, true, true}, 0,
                             {true, true});
    run_case<float, float>("T < dilation", {2, 4, 9, 512, kRows, true, false}, 0);
    run_case<float, float>("dilation of several tiles", {1, 5, 140, 70, kRows, true, true}, 0);
    run_case<float, float>("T = 1", {2, 4, 1, 2, kPadded, false, false}, 0);
    run_case<float, float>("T = 0", {2, 4, 0, 1, kRows, false, false}, 0);
    run_case<float, float>("B = 0 (no sequence: zero parameter gradients)", {0, 4, 5, 1, kRows, true, false}, 0);
    run_case<float, float>("model size, padded", {2, 64, 300, 8, kPadded, true, true}, 0, {false, true});
    run_case<float, float>("C = 256 (opt-in shared memory)", {1, 256, 12, 2, kRows, true, true}, 0, {false, true});
    run_case<double, double>("C = 64, fp64", {1, 64, 40, 8, kPadded, true, false}, 0, {false, true});
    run_case<__nv_bfloat16, float>("bf16", {1, 8, 33, 2, kPacked, true, true, 3}, 0);
    run_case<__half, float>("f16", {2, 8, 33, 1, kRows, false, true}, 0);
    pair_case<float>(run_case<float, float>, Shape{2, 8, 45, 3, kPadded, true, true});
    run_random_cases(run_case<double, double>, random_count, 7, random_shape, 12);
    run_random_cases(run_case<float, float>, random_count, 8, random_shape, 12);
    // wider: several K-slices, smaller tiles
    run_random_cases(run_case<float, float>, random_count / 8, 9, random_shape, 72);
    unsupported_sizes([](Case& c) {
      float dummy[4] = {};
      int64_t seed = 1;
      trgnet::dr::Inputs<float> in{dummy, nullptr, nullptr, {dummy, dummy, dummy, dummy}, nullptr,
                                   1, trgnet::dr::kMaxChannels + 1, 1, 1, 1, 0.0};
      const trgnet::dr::ForwardArgs<float, float> fa{in, dummy};
      c.require_rejected(trgnet::launch_dilated_residual_forward(fa, nullptr), "forward with C > kMaxChannels");
      in.C = 4;
      in.dropout = 0.5;  // without a seed
      trgnet::dr::BackwardArgs<float, float> ba{in, dummy, dummy, {dummy, dummy, dummy, dummy}, dummy};
      c.require_rejected(trgnet::launch_dilated_residual_backward(ba, nullptr), "backward with dropout and no seed");
      in.dropout_seed = &seed;
      in.dilation = 0;
      ba.in = in;
      c.require_rejected(trgnet::launch_dilated_residual_backward(ba, nullptr), "backward with dilation 0");
    });
  });
}
