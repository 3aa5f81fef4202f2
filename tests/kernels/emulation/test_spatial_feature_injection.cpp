// Emulated run of the CUDA kernels of the fused SFI (kernels/spatial_feature_injection.cu, compiled by g++ against
// shim/ after gen_sources.py) against the op's CPU implementation (the host code of
// kernels/spatial_feature_injection.cuh, run in double on the same rounded inputs; the CPU kernel of
// csrc/spatial_feature_injection.cpp runs that code, and it is checked against trgnet_fast's PyTorch reference by
// the Python tests): out and every gradient of L = sum grad_out * out. Random small cases over group's strides
// (contiguous, a channel slice of a wider tensor, permuted), mask, dropout, one and several frame tiles per backward
// block, C up to kMaxChannels and G V up to kMaxGroupChannels (shared memory above 48 KiB, several K-slices),
// fp32 / fp64 / bf16 / fp16, T = 0, N = 0, and base pointers aligned and misaligned by one element (bitwise-equal
// results, other thread order). The forward must take 1 launch, the backward <= 2. Argument: random cases per
// dtype (40).
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "spatial_feature_injection.cuh"
#include "spatial_feature_injection.h"
#include "test_util.h"

using namespace emu_test;
using trgnet::sfi::kWeights;

namespace {

enum GroupLayout { kContiguous, kSlice, kPermuted };
const char* layout_name(GroupLayout l) { return l == kContiguous ? "contiguous" : l == kSlice ? "slice" : "permuted"; }

struct Shape {
  int N, C, T, G, V;
  GroupLayout layout;
  bool masked, dropout;
};

struct Expect {
  bool multi_tile = false;  // several frame tiles per backward block
  bool optin = false;       // shared memory above 48 KiB
};

constexpr double kP = 0.3;

// group's storage elements and strides for a layout.
struct GroupStorage {
  size_t elems;
  trgnet::sfi::GroupView gv;
};
GroupStorage group_storage(const Shape& s) {
  const int64_t N = s.N, G = s.G, T = s.T, V = s.V;
  if (s.layout == kSlice)  // (N, 3G, T, V), channels [G, 2G): the offset goes into the base pointer
    return {(size_t)(N * 3 * G * T * V), {G, V, 3 * G * T * V, T * V, V, 1}};
  if (s.layout == kPermuted)  // (N, V, G, T) storage
    return {(size_t)(N * V * G * T), {G, V, V * G * T, T, 1, G * T}};
  return {(size_t)(N * G * T * V), {G, V, G * T * V, T * V, V, 1}};
}
int64_t group_base(const Shape& s) { return s.layout == kSlice ? (int64_t)s.G * s.T * s.V : 0; }

// Inputs of one case as doubles (already rounded to the storage type).
struct Data {
  std::vector<double> group, h, mask, grad_out;  // group: its whole storage
  std::vector<std::vector<double>> weights;
  int64_t seed;
};

int64_t weight_numel(int i, int C, int K) { return trgnet::sfi::part_size(i, C, K); }

// Outputs of the reference: out, grad_group (contiguous), grad_h, the flat parameter gradients.
struct Ref {
  std::vector<double> out, gg, gh, grads;
};

Ref reference(const Shape& s, const Data& d) {
  const int64_t C = s.C, K = (int64_t)s.G * s.V;
  const std::vector<double> params =
      join_parts(d.weights, trgnet::sfi::param_count(C, K), trgnet::sfi::part_offset, C, K);
  const GroupStorage st = group_storage(s);
  const auto P = trgnet::sfi::host_problem<double, double>(d.group.data() + group_base(s), st.gv, d.h.data(),
                                                           s.masked ? d.mask.data() : nullptr, params.data(), s.N, C,
                                                           s.T, &d.seed, s.dropout ? kP : 0.0);
  Ref r;
  const size_t n = (size_t)s.N * C * s.T;
  r.out.assign(n, 0);
  r.gh.assign(n, 0);
  r.gg.assign((size_t)s.N * K * s.T, 0);
  r.grads.assign(params.size(), 0);
  for (int b = 0; b < s.N; ++b) {
    trgnet::sfi::host::forward_frames(P, b, 0, s.T, r.out.data());
    trgnet::sfi::host::backward_frames(P, d.grad_out.data(), b, 0, s.T, r.gg.data(), r.gh.data(), r.grads.data());
  }
  return r;
}

// The reference's gradients against central differences of L = sum grad_out * out (fp64, small sizes).
void check_reference() {
  for (bool dropout : {false, true}) {
    Shape s{2, 4, 5, 2, 3, kContiguous, true, dropout};
    const int K = s.G * s.V;
    std::mt19937_64 rng(11);
    Data d;
    d.group = uniform_values(rng, group_storage(s).elems);
    d.h = uniform_values(rng, (size_t)s.N * s.C * s.T);
    d.grad_out = uniform_values(rng, (size_t)s.N * s.C * s.T);
    d.mask = random_frame_mask(rng, (size_t)s.N * s.T);
    for (int i = 0; i < kWeights; ++i) d.weights.push_back(uniform_values(rng, weight_numel(i, s.C, K), -0.6, 0.6));
    d.seed = 12345;
    const Ref r = reference(s, d);
    auto loss = [&] { return dot(d.grad_out, reference(s, d).out); };
    const auto wg = split_parts(r.grads, kWeights, trgnet::sfi::part_offset, trgnet::sfi::part_size, s.C, K);
    check_gradients(dropout ? "reference self-check (mask, dropout): every gradient vs central differences"
                            : "reference self-check (mask): every gradient vs central differences",
                    {{&d.group, &r.gg, "grad_group"}, {&d.h, &r.gh, "grad_h"}, {&d.weights[0], &wg[0], "conv_s_w"},
                     {&d.weights[1], &wg[1], "conv_s_b"}, {&d.weights[2], &wg[2], "fusion_w"},
                     {&d.weights[3], &wg[3], "fusion_b"}, {&d.weights[4], &wg[4], "ff1_w"},
                     {&d.weights[5], &wg[5], "ff1_b"}, {&d.weights[6], &wg[6], "ff2_w"},
                     {&d.weights[7], &wg[7], "ff2_b"}},
                    loss, 1e-5, 1e-6);
  }
}

template <class In, class Acc>
std::vector<double> run_case(const std::string& why, Shape s, int offset, Expect ex = {}, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  const int N = s.N, C = s.C, T = s.T, K = s.G * s.V;
  char sizes[200];
  std::snprintf(sizes, sizeof(sizes), "N=%d C=%d T=%d G=%d V=%d group %s%s%s", N, C, T, s.G, s.V,
                layout_name(s.layout), s.masked ? " masked" : "", s.dropout ? " dropout" : "");
  Case c(case_title<In>(sizes, offset, why));

  const size_t n = (size_t)N * C * T;
  const GroupStorage st = group_storage(s);
  Data d;
  Buf<In> group(st.elems, offset), h(n, offset), mask((size_t)N * T, offset), grad_out(n, offset), out(n, offset),
      grad_h(n, offset), grad_group((size_t)N * K * T, offset);
  d.group = group.fill(rng, -1.5, 1.5);
  d.h = h.fill(rng, -1.5, 1.5);
  d.grad_out = grad_out.fill(rng, -1, 1);
  d.mask = mask.store(random_frame_mask(rng, mask.n));
  ParameterBufs<In> params(kWeights, [&](int i) { return weight_numel(i, C, K); }, offset);
  const double fan[kWeights] = {double(K), double(K), 2.0 * C, 2.0 * C, double(C), double(C), double(C), double(C)};
  d.weights = params.fill(rng, [&](int i) { return 1.7 / std::sqrt(fan[i]); });
  Buf<int64_t> seed_buf(1);
  d.seed = static_cast<int64_t>(rng());
  seed_buf.p[0] = d.seed;

  trgnet::sfi::Inputs<In> in{group.p + group_base(s), h.p, s.masked ? mask.p : nullptr, st.gv, {},
                             s.dropout ? seed_buf.p : nullptr, N, C, T, s.dropout ? kP : 0.0};
  params.weights_into(in.weights);
  Buf<Acc> ws((size_t)trgnet::sfi::workspace_elems(N, C, K, T, sizeof(Acc)));
  trgnet::sfi::BackwardArgs<In, Acc> ba{in, grad_out.p, grad_group.p, grad_h.p, {}, ws.p};
  params.grads_into(ba.grad_weights);
  const Launches launches = launch_forward_backward(
      c,
      [&] {
        return trgnet::launch_spatial_feature_injection_forward(trgnet::sfi::ForwardArgs<In, Acc>{in, out.p}, nullptr);
      },
      [&] { return trgnet::launch_spatial_feature_injection_backward(ba, nullptr); });
  c.require(launches.forward <= 1 && launches.backward <= 2, "forward 1 and backward <= 2 launches");

  const Ref r = reference(s, d);
  const double t = tol<In>();
  Outputs outs;
  outs.check(c, out, r.out, "out", t);
  outs.check(c, grad_h, r.gh, "gh", t);
  outs.check(c, grad_group, r.gg, "gg", t);
  static const char* names[kWeights] = {"g_cs_w", "g_cs_b", "g_fu_w", "g_fu_b", "g_f1_w", "g_f1_b", "g_f2_w", "g_f2_b"};
  const auto ref_grads = split_parts(r.grads, kWeights, trgnet::sfi::part_offset, trgnet::sfi::part_size, C, K);
  for (int i = 0; i < kWeights; ++i)
    outs.check(c, *params.grad[i], ref_grads[i], names[i], t, 1e-3 * std::sqrt((double)ref_grads[i].size()));
  outs.finish(c);
  char b[200];
  const trgnet::am::Plan fp = trgnet::sfi::make_plan(C, K, T, N, sizeof(Acc), false);
  const trgnet::am::Plan bp = trgnet::sfi::make_plan(C, K, T, N, sizeof(Acc), true);
  std::snprintf(b, sizeof(b), "| launches %ld+%ld, tile %d, smem %lld B, fwd %lld block(s)/row, bwd %lld chunk(s) of %lld tiles",
                launches.forward, launches.backward, bp.tile, (long long)(bp.smem_elems * sizeof(Acc)),
                (long long)fp.chunks, (long long)bp.chunks, (long long)bp.per);
  c.note(b);
  if (ex.multi_tile) c.require(bp.per > 1 && (T + bp.tile - 1) / bp.tile > 1, "one tile per backward block");
  if (ex.optin) c.require_optin_launch();
  c.finish();
  return outs.all;
}

// A random small shape of any group layout, C <= max_c, G <= max_g, V <= max_v.
Shape random_shape(std::mt19937_64& rng, int max_c, int max_g, int max_v) {
  return {1 + static_cast<int>(rng() % 3), 1 + static_cast<int>(rng() % max_c), 1 + static_cast<int>(rng() % 70),
          1 + static_cast<int>(rng() % max_g), 1 + static_cast<int>(rng() % max_v),
          static_cast<GroupLayout>(rng() % 3), rng() % 2 == 0, rng() % 2 == 0};
}

}  // namespace

int main(int argc, char** argv) {
  const int random_count = argc > 1 ? std::atoi(argv[1]) : 40;
  return run_driver("spatial_feature_injection", check_reference, [&] {
    run_case<float, float>("one row", {1, 8, 20, 2, 3, kContiguous, false, false}, 0);
    run_case<double, double>("mask, dropout, group slice", {2, 8, 37, 3, 5, kSlice, true, true}, 0);
    run_case<double, double>("permuted group, several blocks per row", {3, 6, 150, 4, 3, kPermuted, true, true}, 0);
    // wide layers: the partials' budget leaves few blocks, each summing several tiles
    run_case<float, float>("C = 256, G V = 512, several tiles per block", {1, 256, 300, 8, 64, kSlice, true, true}, 0,
                           {true, true});
    run_case<double, double>("C = 256, G V = 512 fp64", {2, 256, 9, 16, 32, kPermuted, true, true}, 0, {false, true});
    run_case<double, double>("C = 128 fp64, several tiles per block", {1, 128, 900, 8, 25, kSlice, true, true}, 0,
                             {true, true});
    run_case<float, float>("C = 4, G V = 500 (rectangular slices of one row)", {2, 4, 19, 20, 25, kSlice, true, true},
                           0);
    run_case<float, float>("T = 1", {2, 4, 1, 2, 3, kSlice, false, false}, 0);
    run_case<float, float>("T = 0", {2, 4, 0, 2, 3, kContiguous, false, false}, 0);
    run_case<float, float>("N = 0 (no frame: zero parameter gradients)", {0, 4, 5, 2, 3, kContiguous, true, false}, 0);
    run_case<float, float>("model size", {2, 64, 300, 8, 25, kSlice, true, true}, 0, {false, true});
    run_case<__nv_bfloat16, float>("bf16", {1, 8, 33, 2, 5, kSlice, true, true}, 0);
    run_case<__half, float>("f16", {2, 8, 33, 3, 3, kPermuted, false, true}, 0);
    pair_case<float>(run_case<float, float>, Shape{2, 8, 45, 4, 5, kSlice, true, true});
    run_random_cases(run_case<double, double>, random_count, 7, random_shape, 12, 4, 6);
    run_random_cases(run_case<float, float>, random_count, 8, random_shape, 12, 4, 6);
    // wider: several K-slices, smaller tiles
    run_random_cases(run_case<float, float>, random_count / 8, 9, random_shape, 72, 8, 25);
    unsupported_sizes([](Case& c) {
      float dummy[4] = {};
      int64_t seed = 1;
      const trgnet::sfi::GroupView gv{2, 3, 6, 3, 3, 1};
      trgnet::sfi::Inputs<float> in{dummy, dummy, nullptr, gv, {dummy, dummy, dummy, dummy, dummy, dummy, dummy, dummy},
                                    nullptr, 1, trgnet::sfi::kMaxChannels + 1, 1, 0.0};
      using ForwardArgs = trgnet::sfi::ForwardArgs<float, float>;
      c.require_rejected(trgnet::launch_spatial_feature_injection_forward(ForwardArgs{in, dummy}, nullptr),
                         "forward with C > kMaxChannels");
      in.C = 4;
      in.gv.V = trgnet::sfi::kMaxGroupChannels;  // G V = 2 kMaxGroupChannels
      c.require_rejected(trgnet::launch_spatial_feature_injection_forward(ForwardArgs{in, dummy}, nullptr),
                         "forward with G V > kMaxGroupChannels");
      in.gv.V = 3;
      in.dropout = 0.5;  // without a seed
      trgnet::sfi::BackwardArgs<float, float> ba{in, dummy, dummy, dummy, {dummy, dummy, dummy, dummy, dummy, dummy,
                                                                          dummy, dummy}, dummy};
      c.require_rejected(trgnet::launch_spatial_feature_injection_backward(ba, nullptr),
                         "backward with dropout and no seed");
      in.dropout_seed = &seed;
      ba.in = in;
      ba.grad_weights[3] = nullptr;
      c.require_rejected(trgnet::launch_spatial_feature_injection_backward(ba, nullptr),
                         "backward without a gradient output");
    });
  });
}
