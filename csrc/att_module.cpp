// trgnet::att_module: op schemas, the argument setup shared with the CUDA dispatch (att_module.h), and the CPU
// kernels.
//
// The CPU kernels run the sequence-level host implementation of kernels/att_module.cuh (the dropout hash, the
// sequence spans and the per-head linear-attention frame math are the very code the CUDA kernels use), one
// sequence per task of at::parallel_for. The parameter gradients are summed per fixed group of sequences, then
// over the groups in order: deterministic for any thread count.
#include "att_module.h"

#include <algorithm>
#include <string>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../kernels/att_module.cuh"
#include "checks.h"

namespace trgnet {
namespace {

constexpr const char* kForwardOp = "trgnet::att_module";
constexpr const char* kBackwardOp = "trgnet::att_module_backward";
constexpr const char* kWeightNames[kAttModuleWeights] = {
    "conv_weight", "conv_bias",  "query_weight", "query_bias", "key_weight",      "key_bias",
    "value_weight", "value_bias", "out_weight",   "out_bias",   "conv_out_weight", "conv_out_bias"};
constexpr const char* kStateRule = "float64 for float64 inputs, else float32";

using checks::check_contiguous;
using checks::check_shape;
using checks::shape_str;

std::vector<int64_t> weight_shape(int i, int64_t C) {
  if (i == 0) return {C, C, 3};
  if (i == 10) return {C, C, 1};
  if (i % 2 == 1) return {C};
  return {C, C};
}

AttModuleSizes check_inputs(const char* op, c10::DeviceType device, const at::Tensor& x,
                            const std::optional<at::Tensor>& values, const std::optional<at::Tensor>& mask,
                            const std::optional<at::Tensor>& cu_seqlens, const std::vector<at::Tensor>& weights,
                            const at::Tensor& alpha, const std::optional<at::Tensor>& dropout_seed, int64_t dilation,
                            int64_t heads, double norm_eps, double attention_eps, double attention_dropout,
                            double dropout) {
  checks::check_dim(op, "x", x, 3, "(B, C, T)");
  checks::check_supported_float(op, "x", x);
  checks::check_device_type(op, "x", x, device);
  check_contiguous(op, "x", x);
  const int64_t B = x.size(0), C = x.size(1), T = x.size(2);
  TORCH_CHECK(dilation >= 1, op, ": argument 'dilation': expected an integer >= 1, got ", std::to_string(dilation));
  TORCH_CHECK(heads >= 1 && C % heads == 0, op, ": argument 'heads': expected a divisor of the channels C = ",
              std::to_string(C), ", got ", std::to_string(heads));
  TORCH_CHECK(norm_eps > 0 && attention_eps > 0, op, ": arguments 'norm_eps', 'attention_eps': expected > 0, got ",
              std::to_string(norm_eps), ", ", std::to_string(attention_eps));
  TORCH_CHECK(attention_dropout >= 0 && attention_dropout < 1 && dropout >= 0 && dropout < 1, op,
              ": arguments 'attention_dropout', 'dropout': expected probabilities in [0, 1), got ",
              std::to_string(attention_dropout), ", ", std::to_string(dropout));
  if (values.has_value()) {
    check_shape(op, "values", *values, x.sizes(), "(B, C, T) like x");
    checks::check_like(op, "values", *values, x, "x");
  }
  if (mask.has_value()) {
    check_shape(op, "mask", *mask, {B, 1, T}, "(B, 1, T)");
    checks::check_like(op, "mask", *mask, x, "x");
  }
  TORCH_CHECK(weights.size() == kAttModuleWeights, op, ": expected 12 weights and biases");
  for (int i = 0; i < kAttModuleWeights; ++i) {
    check_shape(op, kWeightNames[i], weights[i], weight_shape(i, C), "for C channels");
    checks::check_like(op, kWeightNames[i], weights[i], x, "x");
  }
  const at::ScalarType state = checks::accumulator_dtype(x.scalar_type());
  TORCH_CHECK(alpha.dim() == 0, op, ": argument 'alpha': expected a 0-dim tensor, got shape ",
              shape_str(alpha.sizes()));
  checks::check_same_device_dtype(op, "alpha", alpha, x, "x", state, kStateRule);
  if (dropout_seed.has_value()) {
    check_shape(op, "dropout_seed", *dropout_seed, {1}, "(1,)");
    checks::check_same_device_dtype(op, "dropout_seed", *dropout_seed, x, "x", at::kLong, "an int64 seed");
  }
  TORCH_CHECK(dropout_seed.has_value() || (attention_dropout == 0 && dropout == 0), op,
              ": argument 'dropout_seed': expected a (1,) int64 tensor when a dropout probability is > 0, got None");
  int64_t N = B;
  if (cu_seqlens.has_value()) {
    const at::Tensor& cu = *cu_seqlens;
    TORCH_CHECK(cu.dim() == 1 && cu.size(0) >= 2, op,
                ": argument 'cu_seqlens': expected a 1-D tensor (N + 1,) with N >= 1, got shape ", shape_str(cu.sizes()));
    checks::check_same_device_dtype(op, "cu_seqlens", cu, x, "x", at::kInt, "int32 sequence offsets");
    check_contiguous(op, "cu_seqlens", cu);
    N = cu.size(0) - 1;
    TORCH_CHECK(B == N || B == 1, op, ": argument 'cu_seqlens': expected N + 1 offsets with N = B = ",
                std::to_string(B), " (padded rows) or B = 1 (packed), got N = ", std::to_string(N));
  }
  return {op, B, C, T, N, heads, C / heads, dilation, norm_eps, attention_eps, attention_dropout, dropout,
          values.has_value()};
}

at::Tensor alloc(bool zero, at::IntArrayRef shape, const at::TensorOptions& opts) {
  return zero ? at::zeros(shape, opts) : at::empty(shape, opts);
}

std::vector<at::Tensor> weight_list(const at::Tensor& conv_weight, const at::Tensor& conv_bias,
                                    const at::Tensor& query_weight, const at::Tensor& query_bias,
                                    const at::Tensor& key_weight, const at::Tensor& key_bias,
                                    const at::Tensor& value_weight, const at::Tensor& value_bias,
                                    const at::Tensor& out_weight, const at::Tensor& out_bias,
                                    const at::Tensor& conv_out_weight, const at::Tensor& conv_out_bias) {
  return {conv_weight, conv_bias, query_weight, query_bias, key_weight, key_bias,
          value_weight, value_bias, out_weight, out_bias, conv_out_weight, conv_out_bias};
}

}  // namespace

AttModuleForwardSetup att_module_forward_setup(
    c10::DeviceType device, bool zero_outputs, const at::Tensor& x, const std::optional<at::Tensor>& values,
    const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& cu_seqlens,
    const std::vector<at::Tensor>& weights, const at::Tensor& alpha, const std::optional<at::Tensor>& dropout_seed,
    int64_t dilation, int64_t heads, double norm_eps, double attention_eps, double attention_dropout,
    double dropout) {
  const AttModuleSizes s = check_inputs(kForwardOp, device, x, values, mask, cu_seqlens, weights, alpha, dropout_seed,
                                        dilation, heads, norm_eps, attention_eps, attention_dropout, dropout);
  const auto state_opts = x.options().dtype(checks::accumulator_dtype(x.scalar_type()));
  return {s, alloc(zero_outputs, x.sizes(), x.options()), at::empty({s.N, 2, s.C}, state_opts),
          at::empty({s.N, s.H, s.D, s.D}, state_opts), at::empty({s.N, s.H, s.D}, state_opts)};
}

AttModuleBackwardSetup att_module_backward_setup(
    c10::DeviceType device, bool zero_outputs, const at::Tensor& grad_out, const at::Tensor& x,
    const std::optional<at::Tensor>& values, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& cu_seqlens, const std::vector<at::Tensor>& weights, const at::Tensor& alpha,
    const std::optional<at::Tensor>& dropout_seed, const at::Tensor& norm_stats, const at::Tensor& kv_state,
    const at::Tensor& key_sum, int64_t dilation, int64_t heads, double norm_eps, double attention_eps,
    double attention_dropout, double dropout) {
  const char* op = kBackwardOp;
  const AttModuleSizes s = check_inputs(op, device, x, values, mask, cu_seqlens, weights, alpha, dropout_seed,
                                        dilation, heads, norm_eps, attention_eps, attention_dropout, dropout);
  check_shape(op, "grad_out", grad_out, x.sizes(), "(B, C, T) of the output");
  checks::check_like(op, "grad_out", grad_out, x, "x");
  const at::ScalarType state = checks::accumulator_dtype(x.scalar_type());
  const struct {
    const char* name;
    const at::Tensor& t;
    std::vector<int64_t> shape;
    const char* layout;
  } saved[] = {{"norm_stats", norm_stats, {s.N, 2, s.C}, "(N, 2, C)"},
               {"kv_state", kv_state, {s.N, s.H, s.D, s.D}, "(N, H, D, D)"},
               {"key_sum", key_sum, {s.N, s.H, s.D}, "(N, H, D)"}};
  for (const auto& v : saved) {
    check_shape(op, v.name, v.t, v.shape, v.layout);
    checks::check_same_device_dtype(op, v.name, v.t, x, "x", state, kStateRule);
    check_contiguous(op, v.name, v.t);
  }
  AttModuleBackwardSetup b{s, alloc(zero_outputs, x.sizes(), x.options()),
                           s.decoder ? alloc(zero_outputs, x.sizes(), x.options()) : at::empty({0}, x.options()),
                           {}, at::empty({}, alpha.options())};
  for (const at::Tensor& w : weights) b.grad_weights.push_back(at::empty(w.sizes(), w.options()));
  return b;
}

AttModuleGrads att_module_grads(const AttModuleBackwardSetup& b) {
  const auto& w = b.grad_weights;
  return {b.grad_x, b.grad_values, w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], w[10], w[11],
          b.grad_alpha};
}

// ---------------------------------------------------------------------------------------------
// CPU kernels

namespace {

template <typename T>
const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// The host problem of a call: the 12 weights and alpha converted to the flat Acc layout (kernels/att_module.cuh).
template <typename scalar_t, typename Acc>
am::HostProblem<scalar_t, Acc> host_problem(const AttModuleSizes& s, const at::Tensor& x,
                                            const std::optional<at::Tensor>& values,
                                            const std::optional<at::Tensor>& mask,
                                            const std::optional<at::Tensor>& cu_seqlens,
                                            const std::vector<at::Tensor>& weights, const at::Tensor& alpha,
                                            const std::optional<at::Tensor>& dropout_seed, std::vector<Acc>& params) {
  params.resize(am::param_count(s.C));
  for (int p = 0; p < kAttModuleWeights; ++p) {
    const scalar_t* w = weights[p].data_ptr<scalar_t>();
    std::transform(w, w + am::part_size(p, s.C), params.begin() + am::part_offset(p, s.C),
                   [](scalar_t v) { return static_cast<Acc>(v); });
  }
  params[am::part_offset(am::kAlpha, s.C)] = *alpha.data_ptr<Acc>();
  const int64_t* seed = optional_ptr<int64_t>(dropout_seed);
  return {x.data_ptr<scalar_t>(), optional_ptr<scalar_t>(values), optional_ptr<scalar_t>(mask),
          optional_ptr<int32_t>(cu_seqlens), params.data(), s.B, s.C, s.T, s.N, static_cast<int>(s.H),
          static_cast<int>(s.dilation), static_cast<Acc>(s.norm_eps), static_cast<Acc>(s.attention_eps),
          am::make_dropout<Acc>(seed, 0, am::dropout_threshold(s.attention_dropout), s.attention_dropout),
          am::make_dropout<Acc>(seed, 1, am::dropout_threshold(s.dropout), s.dropout)};
}

// Groups of consecutive sequences whose parameter gradients are summed first (a fixed count, so that the sums do
// not depend on the threads).
constexpr int64_t kGradGroups = 64;

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> att_module_forward_cpu(
    const at::Tensor& x, const std::optional<at::Tensor>& values, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight, const at::Tensor& conv_bias,
    const at::Tensor& query_weight, const at::Tensor& query_bias, const at::Tensor& key_weight,
    const at::Tensor& key_bias, const at::Tensor& value_weight, const at::Tensor& value_bias,
    const at::Tensor& out_weight, const at::Tensor& out_bias, const at::Tensor& conv_out_weight,
    const at::Tensor& conv_out_bias, const at::Tensor& alpha, const std::optional<at::Tensor>& dropout_seed,
    int64_t dilation, int64_t heads, double norm_eps, double attention_eps, double attention_dropout,
    double dropout) {
  const std::vector<at::Tensor> weights =
      weight_list(conv_weight, conv_bias, query_weight, query_bias, key_weight, key_bias, value_weight, value_bias,
                  out_weight, out_bias, conv_out_weight, conv_out_bias);
  AttModuleForwardSetup f =
      att_module_forward_setup(c10::DeviceType::CPU, true, x, values, mask, cu_seqlens, weights, alpha, dropout_seed,
                               dilation, heads, norm_eps, attention_eps, attention_dropout, dropout);
  const AttModuleSizes& s = f.s;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "att_module_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> params;
    const auto P = host_problem<scalar_t, acc_t>(s, x, values, mask, cu_seqlens, weights, alpha, dropout_seed, params);
    acc_t* stats = f.norm_stats.data_ptr<acc_t>();
    acc_t* kv = f.kv_state.data_ptr<acc_t>();
    acc_t* ks = f.key_sum.data_ptr<acc_t>();
    scalar_t* out = f.out.data_ptr<scalar_t>();
    at::parallel_for(0, s.N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n)
        am::host::forward_sequence(P, n, stats + n * 2 * s.C, kv + n * s.C * s.D, ks + n * s.C, out);
    });
  });
  return f.outputs();
}

AttModuleGrads att_module_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const std::optional<at::Tensor>& values,
    const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight,
    const at::Tensor& conv_bias, const at::Tensor& query_weight, const at::Tensor& query_bias,
    const at::Tensor& key_weight, const at::Tensor& key_bias, const at::Tensor& value_weight,
    const at::Tensor& value_bias, const at::Tensor& out_weight, const at::Tensor& out_bias,
    const at::Tensor& conv_out_weight, const at::Tensor& conv_out_bias, const at::Tensor& alpha,
    const std::optional<at::Tensor>& dropout_seed, const at::Tensor& norm_stats, const at::Tensor& kv_state,
    const at::Tensor& key_sum, int64_t dilation, int64_t heads, double norm_eps, double attention_eps,
    double attention_dropout, double dropout) {
  const std::vector<at::Tensor> weights =
      weight_list(conv_weight, conv_bias, query_weight, query_bias, key_weight, key_bias, value_weight, value_bias,
                  out_weight, out_bias, conv_out_weight, conv_out_bias);
  AttModuleBackwardSetup b = att_module_backward_setup(
      c10::DeviceType::CPU, true, grad_out, x, values, mask, cu_seqlens, weights, alpha, dropout_seed, norm_stats,
      kv_state, key_sum, dilation, heads, norm_eps, attention_eps, attention_dropout, dropout);
  const AttModuleSizes& s = b.s;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "att_module_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> params;
    const auto P = host_problem<scalar_t, acc_t>(s, x, values, mask, cu_seqlens, weights, alpha, dropout_seed, params);
    const int64_t count = am::param_count(s.C);
    const int64_t groups = std::min(s.N, kGradGroups), per = (s.N + groups - 1) / std::max<int64_t>(groups, 1);
    std::vector<acc_t> partial(static_cast<size_t>(groups * count), acc_t(0));
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g)
        for (int64_t n = g * per; n < std::min(s.N, (g + 1) * per); ++n)
          am::host::backward_sequence(P, grad_out.data_ptr<scalar_t>(), n,
                                      norm_stats.data_ptr<acc_t>() + n * 2 * s.C,
                                      kv_state.data_ptr<acc_t>() + n * s.C * s.D, key_sum.data_ptr<acc_t>() + n * s.C,
                                      b.grad_x.data_ptr<scalar_t>(),
                                      s.decoder ? b.grad_values.data_ptr<scalar_t>() : nullptr,
                                      partial.data() + g * count);
    });
    for (int64_t g = 1; g < groups; ++g)
      for (int64_t i = 0; i < count; ++i) partial[i] += partial[g * count + i];
    for (int p = 0; p < kAttModuleWeights; ++p) {
      const acc_t* src = partial.data() + am::part_offset(p, s.C);
      std::transform(src, src + am::part_size(p, s.C), b.grad_weights[p].data_ptr<scalar_t>(),
                     [](acc_t v) { return static_cast<scalar_t>(v); });
    }
    *b.grad_alpha.data_ptr<acc_t>() = groups > 0 ? partial[am::part_offset(am::kAlpha, s.C)] : acc_t(0);
  });
  return att_module_grads(b);
}

}  // namespace trgnet

TORCH_LIBRARY_FRAGMENT(trgnet, m) {
  m.def(
      "att_module(Tensor x, Tensor? values, Tensor? mask, Tensor? cu_seqlens, Tensor conv_weight,"
      " Tensor conv_bias, Tensor query_weight, Tensor query_bias, Tensor key_weight, Tensor key_bias,"
      " Tensor value_weight, Tensor value_bias, Tensor out_weight, Tensor out_bias, Tensor conv_out_weight,"
      " Tensor conv_out_bias, Tensor alpha, Tensor? dropout_seed, int dilation, int heads, float norm_eps,"
      " float attention_eps, float attention_dropout, float dropout)"
      " -> (Tensor out, Tensor norm_stats, Tensor kv_state, Tensor key_sum)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "att_module_backward(Tensor grad_out, Tensor x, Tensor? values, Tensor? mask, Tensor? cu_seqlens,"
      " Tensor conv_weight, Tensor conv_bias, Tensor query_weight, Tensor query_bias, Tensor key_weight,"
      " Tensor key_bias, Tensor value_weight, Tensor value_bias, Tensor out_weight, Tensor out_bias,"
      " Tensor conv_out_weight, Tensor conv_out_bias, Tensor alpha, Tensor? dropout_seed, Tensor norm_stats,"
      " Tensor kv_state, Tensor key_sum, int dilation, int heads, float norm_eps, float attention_eps,"
      " float attention_dropout, float dropout)"
      " -> (Tensor grad_x, Tensor grad_values, Tensor grad_conv_weight, Tensor grad_conv_bias,"
      " Tensor grad_query_weight, Tensor grad_query_bias, Tensor grad_key_weight, Tensor grad_key_bias,"
      " Tensor grad_value_weight, Tensor grad_value_bias, Tensor grad_out_weight, Tensor grad_out_bias,"
      " Tensor grad_conv_out_weight, Tensor grad_conv_out_bias, Tensor grad_alpha)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(trgnet, CPU, m) {
  m.impl("att_module", &trgnet::att_module_forward_cpu);
  m.impl("att_module_backward", &trgnet::att_module_backward_cpu);
}
