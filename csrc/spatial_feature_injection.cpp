// trgnet::spatial_feature_injection: op schemas, the argument setup shared with the CUDA dispatch
// (spatial_feature_injection.h), and the CPU kernels.
//
// The CPU kernels run the frame-level host implementation of kernels/spatial_feature_injection.cuh (built on the
// AttModule's dropout hash: the very code the CUDA kernels use), one unit of kFramesPerUnit frames of one row per
// task of at::parallel_for. The parameter gradients are summed per fixed group of units, then over the groups in
// order: deterministic for any thread count.
#include "spatial_feature_injection.h"

#include <algorithm>
#include <string>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../kernels/spatial_feature_injection.cuh"
#include "checks.h"

namespace trgnet {
namespace {

constexpr const char* kForwardOp = "trgnet::spatial_feature_injection";
constexpr const char* kBackwardOp = "trgnet::spatial_feature_injection_backward";
constexpr const char* kWeightNames[kSpatialFeatureInjectionWeights] = {
    "conv_s_weight", "conv_s_bias", "fusion_weight", "fusion_bias", "ff1_weight", "ff1_bias", "ff2_weight",
    "ff2_bias"};

using checks::check_contiguous;
using checks::check_shape;
using checks::shape_str;

std::vector<int64_t> weight_shape(int i, int64_t C, int64_t K) {
  switch (i) {
    case sfi::kConvSW: return {C, K, 1};
    case sfi::kFusionW: return {C, 2 * C, 1};
    case sfi::kFf1W:
    case sfi::kFf2W: return {C, C};
    default: return {C};
  }
}

SpatialFeatureInjectionSizes check_inputs(const char* op, c10::DeviceType device, const at::Tensor& group,
                                          const at::Tensor& h, const std::optional<at::Tensor>& mask,
                                          const std::vector<at::Tensor>& weights,
                                          const std::optional<at::Tensor>& dropout_seed, double dropout) {
  checks::check_dim(op, "h", h, 3, "(N, C, T)");
  checks::check_supported_float(op, "h", h);
  checks::check_device_type(op, "h", h, device);
  check_contiguous(op, "h", h);
  const int64_t N = h.size(0), C = h.size(1), T = h.size(2);
  TORCH_CHECK(group.dim() == 4 && group.size(0) == N && group.size(2) == T, op,
              ": argument 'group': expected a 4-D tensor (N, G, T, V) = (", std::to_string(N), ", G, ",
              std::to_string(T), ", V), got shape ", shape_str(group.sizes()));
  checks::check_same_device_dtype(op, "group", group, h, "h", h.scalar_type(), "same as h");
  const int64_t G = group.size(1), V = group.size(3);
  TORCH_CHECK(C >= 1 && G >= 1 && V >= 1, op, ": expected C, G, V >= 1, got C = ", std::to_string(C), ", G = ",
              std::to_string(G), ", V = ", std::to_string(V));
  TORCH_CHECK(dropout >= 0 && dropout < 1, op, ": argument 'dropout': expected a probability in [0, 1), got ",
              std::to_string(dropout));
  if (mask.has_value()) {
    check_shape(op, "mask", *mask, {N, 1, T}, "(N, 1, T)");
    checks::check_like(op, "mask", *mask, h, "h");
  }
  TORCH_CHECK(weights.size() == kSpatialFeatureInjectionWeights, op, ": expected 8 weights and biases");
  for (int i = 0; i < kSpatialFeatureInjectionWeights; ++i) {
    check_shape(op, kWeightNames[i], weights[i], weight_shape(i, C, G * V), "for C channels and G V group channels");
    checks::check_like(op, kWeightNames[i], weights[i], h, "h");
  }
  if (dropout_seed.has_value()) {
    check_shape(op, "dropout_seed", *dropout_seed, {1}, "(1,)");
    checks::check_same_device_dtype(op, "dropout_seed", *dropout_seed, h, "h", at::kLong, "an int64 seed");
  }
  TORCH_CHECK(dropout_seed.has_value() || dropout == 0, op,
              ": argument 'dropout_seed': expected a (1,) int64 tensor when dropout > 0, got None");
  SpatialFeatureInjectionSizes s{op, N, C, T, G, V, {}, dropout};
  for (int d = 0; d < 4; ++d) s.group_strides[d] = group.stride(d);
  return s;
}

}  // namespace

std::pair<SpatialFeatureInjectionSizes, at::Tensor> spatial_feature_injection_forward_setup(
    c10::DeviceType device, const at::Tensor& group, const at::Tensor& h, const std::optional<at::Tensor>& mask,
    const std::vector<at::Tensor>& weights, const std::optional<at::Tensor>& dropout_seed, double dropout) {
  const SpatialFeatureInjectionSizes s =
      check_inputs(kForwardOp, device, group, h, mask, weights, dropout_seed, dropout);
  return {s, at::empty(h.sizes(), h.options())};
}

SpatialFeatureInjectionBackwardSetup spatial_feature_injection_backward_setup(
    c10::DeviceType device, const at::Tensor& grad_out, const at::Tensor& group, const at::Tensor& h,
    const std::optional<at::Tensor>& mask, const std::vector<at::Tensor>& weights,
    const std::optional<at::Tensor>& dropout_seed, double dropout) {
  const char* op = kBackwardOp;
  const SpatialFeatureInjectionSizes s = check_inputs(op, device, group, h, mask, weights, dropout_seed, dropout);
  check_shape(op, "grad_out", grad_out, h.sizes(), "(N, C, T) of the output");
  checks::check_like(op, "grad_out", grad_out, h, "h");
  SpatialFeatureInjectionBackwardSetup b{s, at::empty(group.sizes(), h.options()), at::empty(h.sizes(), h.options()),
                                         {}};
  for (const at::Tensor& w : weights) b.grad_weights.push_back(at::empty(w.sizes(), w.options()));
  return b;
}

SpatialFeatureInjectionGrads spatial_feature_injection_grads(const SpatialFeatureInjectionBackwardSetup& b) {
  const auto& w = b.grad_weights;
  return {b.grad_group, b.grad_h, w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]};
}

// ---------------------------------------------------------------------------------------------
// CPU kernels

namespace {

template <typename T>
const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// The host problem of a call: the 8 weights converted to the flat Acc layout (kernels/spatial_feature_injection.cuh).
template <typename scalar_t, typename Acc>
sfi::HostProblem<scalar_t, Acc> host_problem(const SpatialFeatureInjectionSizes& s, const at::Tensor& group,
                                             const at::Tensor& h, const std::optional<at::Tensor>& mask,
                                             const std::vector<at::Tensor>& weights,
                                             const std::optional<at::Tensor>& dropout_seed, std::vector<Acc>& params) {
  const int64_t K = s.G * s.V;
  params.resize(sfi::param_count(s.C, K));
  for (int p = 0; p < kSpatialFeatureInjectionWeights; ++p) {
    const scalar_t* w = weights[p].data_ptr<scalar_t>();
    std::transform(w, w + sfi::part_size(p, s.C, K), params.begin() + sfi::part_offset(p, s.C, K),
                   [](scalar_t v) { return static_cast<Acc>(v); });
  }
  const sfi::GroupView gv{s.G, s.V, s.group_strides[0], s.group_strides[1], s.group_strides[2], s.group_strides[3]};
  return sfi::host_problem<scalar_t, Acc>(group.data_ptr<scalar_t>(), gv, h.data_ptr<scalar_t>(),
                                          optional_ptr<scalar_t>(mask), params.data(), s.N, s.C, s.T,
                                          optional_ptr<int64_t>(dropout_seed), s.dropout);
}

// Units of work: kFramesPerUnit consecutive frames of one row; the parameter gradients are summed first per fixed
// group of consecutive units (a fixed count, so that the sums do not depend on the threads).
constexpr int64_t kFramesPerUnit = 32;
constexpr int64_t kGradGroups = 32;

struct Units {
  int64_t per_row, count;
  Units(int64_t N, int64_t T) : per_row((T + kFramesPerUnit - 1) / kFramesPerUnit), count(N * per_row) {}
  int64_t row(int64_t u) const { return u / per_row; }
  int64_t begin(int64_t u) const { return (u % per_row) * kFramesPerUnit; }
  int64_t end(int64_t u, int64_t T) const { return std::min(T, begin(u) + kFramesPerUnit); }
};

std::vector<at::Tensor> weight_list(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
                                    const at::Tensor& d, const at::Tensor& e, const at::Tensor& f,
                                    const at::Tensor& g, const at::Tensor& h) {
  return {a, b, c, d, e, f, g, h};
}

}  // namespace

at::Tensor spatial_feature_injection_forward_cpu(
    const at::Tensor& group, const at::Tensor& h, const std::optional<at::Tensor>& mask,
    const at::Tensor& conv_s_weight, const at::Tensor& conv_s_bias, const at::Tensor& fusion_weight,
    const at::Tensor& fusion_bias, const at::Tensor& ff1_weight, const at::Tensor& ff1_bias,
    const at::Tensor& ff2_weight, const at::Tensor& ff2_bias, const std::optional<at::Tensor>& dropout_seed,
    double dropout) {
  const std::vector<at::Tensor> weights = weight_list(conv_s_weight, conv_s_bias, fusion_weight, fusion_bias,
                                                      ff1_weight, ff1_bias, ff2_weight, ff2_bias);
  auto setup =
      spatial_feature_injection_forward_setup(c10::DeviceType::CPU, group, h, mask, weights, dropout_seed, dropout);
  const SpatialFeatureInjectionSizes& s = setup.first;
  at::Tensor& out = setup.second;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "spatial_feature_injection_forward_cpu",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> params;
    const auto P = host_problem<scalar_t, acc_t>(s, group, h, mask, weights, dropout_seed, params);
    scalar_t* o = out.data_ptr<scalar_t>();
    const Units units(s.N, s.T);
    at::parallel_for(0, units.count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) sfi::host::forward_frames(P, units.row(u), units.begin(u), units.end(u, s.T), o);
    });
  });
  return out;
}

SpatialFeatureInjectionGrads spatial_feature_injection_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& group, const at::Tensor& h, const std::optional<at::Tensor>& mask,
    const at::Tensor& conv_s_weight, const at::Tensor& conv_s_bias, const at::Tensor& fusion_weight,
    const at::Tensor& fusion_bias, const at::Tensor& ff1_weight, const at::Tensor& ff1_bias,
    const at::Tensor& ff2_weight, const at::Tensor& ff2_bias, const std::optional<at::Tensor>& dropout_seed,
    double dropout) {
  const std::vector<at::Tensor> weights = weight_list(conv_s_weight, conv_s_bias, fusion_weight, fusion_bias,
                                                      ff1_weight, ff1_bias, ff2_weight, ff2_bias);
  SpatialFeatureInjectionBackwardSetup b = spatial_feature_injection_backward_setup(
      c10::DeviceType::CPU, grad_out, group, h, mask, weights, dropout_seed, dropout);
  const SpatialFeatureInjectionSizes& s = b.s;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "spatial_feature_injection_backward_cpu",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> params;
    const auto P = host_problem<scalar_t, acc_t>(s, group, h, mask, weights, dropout_seed, params);
    const int64_t K = s.G * s.V, count = sfi::param_count(s.C, K);
    const Units units(s.N, s.T);
    const int64_t groups = std::max<int64_t>(std::min(units.count, kGradGroups), 1);
    const int64_t per = (units.count + groups - 1) / groups;
    std::vector<acc_t> partial(static_cast<size_t>(groups * count), acc_t(0));
    const scalar_t* g = grad_out.data_ptr<scalar_t>();
    scalar_t* gg = b.grad_group.data_ptr<scalar_t>();
    scalar_t* gh = b.grad_h.data_ptr<scalar_t>();
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t grp = begin; grp < end; ++grp)
        for (int64_t u = grp * per; u < std::min(units.count, (grp + 1) * per); ++u)
          sfi::host::backward_frames(P, g, units.row(u), units.begin(u), units.end(u, s.T), gg, gh,
                                     partial.data() + grp * count);
    });
    for (int64_t grp = 1; grp < groups; ++grp)
      for (int64_t i = 0; i < count; ++i) partial[i] += partial[grp * count + i];
    for (int p = 0; p < kSpatialFeatureInjectionWeights; ++p) {
      const acc_t* src = partial.data() + sfi::part_offset(p, s.C, K);
      std::transform(src, src + sfi::part_size(p, s.C, K), b.grad_weights[p].data_ptr<scalar_t>(),
                     [](acc_t v) { return static_cast<scalar_t>(v); });
    }
  });
  return spatial_feature_injection_grads(b);
}

}  // namespace trgnet

TORCH_LIBRARY_FRAGMENT(trgnet, m) {
  m.def(
      "spatial_feature_injection(Tensor group, Tensor h, Tensor? mask, Tensor conv_s_weight, Tensor conv_s_bias,"
      " Tensor fusion_weight, Tensor fusion_bias, Tensor ff1_weight, Tensor ff1_bias, Tensor ff2_weight,"
      " Tensor ff2_bias, Tensor? dropout_seed, float dropout) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "spatial_feature_injection_backward(Tensor grad_out, Tensor group, Tensor h, Tensor? mask,"
      " Tensor conv_s_weight, Tensor conv_s_bias, Tensor fusion_weight, Tensor fusion_bias, Tensor ff1_weight,"
      " Tensor ff1_bias, Tensor ff2_weight, Tensor ff2_bias, Tensor? dropout_seed, float dropout)"
      " -> (Tensor grad_group, Tensor grad_h, Tensor grad_conv_s_weight, Tensor grad_conv_s_bias,"
      " Tensor grad_fusion_weight, Tensor grad_fusion_bias, Tensor grad_ff1_weight, Tensor grad_ff1_bias,"
      " Tensor grad_ff2_weight, Tensor grad_ff2_bias)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(trgnet, CPU, m) {
  m.impl("spatial_feature_injection", &trgnet::spatial_feature_injection_forward_cpu);
  m.impl("spatial_feature_injection_backward", &trgnet::spatial_feature_injection_backward_cpu);
}
