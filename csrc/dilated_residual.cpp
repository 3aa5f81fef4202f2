// trgnet::dilated_residual: op schemas, the argument setup shared with the CUDA dispatch (dilated_residual.h), and
// the CPU kernels.
//
// The CPU kernels run the sequence-level host implementation of kernels/dilated_residual.cuh (built on the
// AttModule's: the sequence spans, the dropout hash and the conv are the very code the CUDA kernels use), one
// sequence per task of at::parallel_for. The parameter gradients are summed per fixed group of sequences, then over
// the groups in order: deterministic for any thread count.
#include "dilated_residual.h"

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

#include "../kernels/dilated_residual.cuh"
#include "checks.h"

namespace trgnet {
namespace {

constexpr const char* kForwardOp = "trgnet::dilated_residual";
constexpr const char* kBackwardOp = "trgnet::dilated_residual_backward";
constexpr const char* kWeightNames[kDilatedResidualWeights] = {"conv_weight", "conv_bias", "conv_out_weight",
                                                              "conv_out_bias"};

using checks::check_contiguous;
using checks::check_shape;
using checks::shape_str;

std::vector<int64_t> weight_shape(int i, int64_t C) {
  if (i == 0) return {C, C, 3};
  if (i == 2) return {C, C, 1};
  return {C};
}

DilatedResidualSizes check_inputs(const char* op, c10::DeviceType device, const at::Tensor& x,
                                  const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& cu_seqlens,
                                  const std::vector<at::Tensor>& weights,
                                  const std::optional<at::Tensor>& dropout_seed, int64_t dilation, double dropout) {
  checks::check_dim(op, "x", x, 3, "(B, C, T)");
  checks::check_supported_float(op, "x", x);
  checks::check_device_type(op, "x", x, device);
  check_contiguous(op, "x", x);
  const int64_t B = x.size(0), C = x.size(1), T = x.size(2);
  TORCH_CHECK(dilation >= 1, op, ": argument 'dilation': expected an integer >= 1, got ", std::to_string(dilation));
  TORCH_CHECK(dropout >= 0 && dropout < 1, op, ": argument 'dropout': expected a probability in [0, 1), got ",
              std::to_string(dropout));
  if (mask.has_value()) {
    check_shape(op, "mask", *mask, {B, 1, T}, "(B, 1, T)");
    checks::check_like(op, "mask", *mask, x, "x");
  }
  TORCH_CHECK(weights.size() == kDilatedResidualWeights, op, ": expected 4 weights and biases");
  for (int i = 0; i < kDilatedResidualWeights; ++i) {
    check_shape(op, kWeightNames[i], weights[i], weight_shape(i, C), "for C channels");
    checks::check_like(op, kWeightNames[i], weights[i], x, "x");
  }
  if (dropout_seed.has_value()) {
    check_shape(op, "dropout_seed", *dropout_seed, {1}, "(1,)");
    checks::check_same_device_dtype(op, "dropout_seed", *dropout_seed, x, "x", at::kLong, "an int64 seed");
  }
  TORCH_CHECK(dropout_seed.has_value() || dropout == 0, op,
              ": argument 'dropout_seed': expected a (1,) int64 tensor when dropout > 0, got None");
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
  return {op, B, C, T, N, dilation, dropout};
}

at::Tensor alloc(bool zero, at::IntArrayRef shape, const at::TensorOptions& opts) {
  return zero ? at::zeros(shape, opts) : at::empty(shape, opts);
}

}  // namespace

std::pair<DilatedResidualSizes, at::Tensor> dilated_residual_forward_setup(
    c10::DeviceType device, bool zero_outputs, const at::Tensor& x, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& cu_seqlens, const std::vector<at::Tensor>& weights,
    const std::optional<at::Tensor>& dropout_seed, int64_t dilation, double dropout) {
  const DilatedResidualSizes s =
      check_inputs(kForwardOp, device, x, mask, cu_seqlens, weights, dropout_seed, dilation, dropout);
  return {s, alloc(zero_outputs, x.sizes(), x.options())};
}

DilatedResidualBackwardSetup dilated_residual_backward_setup(
    c10::DeviceType device, bool zero_outputs, const at::Tensor& grad_out, const at::Tensor& x,
    const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& cu_seqlens,
    const std::vector<at::Tensor>& weights, const std::optional<at::Tensor>& dropout_seed, int64_t dilation,
    double dropout) {
  const char* op = kBackwardOp;
  const DilatedResidualSizes s =
      check_inputs(op, device, x, mask, cu_seqlens, weights, dropout_seed, dilation, dropout);
  check_shape(op, "grad_out", grad_out, x.sizes(), "(B, C, T) of the output");
  checks::check_like(op, "grad_out", grad_out, x, "x");
  DilatedResidualBackwardSetup b{s, alloc(zero_outputs, x.sizes(), x.options()), {}};
  for (const at::Tensor& w : weights) b.grad_weights.push_back(at::empty(w.sizes(), w.options()));
  return b;
}

DilatedResidualGrads dilated_residual_grads(const DilatedResidualBackwardSetup& b) {
  const auto& w = b.grad_weights;
  return {b.grad_x, w[0], w[1], w[2], w[3]};
}

// ---------------------------------------------------------------------------------------------
// CPU kernels

namespace {

template <typename T>
const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// The host problem of a call: the 4 weights converted to the flat Acc layout (kernels/dilated_residual.cuh). A
// dilation >= T only keeps the centre tap, as T does (and fits the host code's int).
template <typename scalar_t, typename Acc>
dr::HostProblem<scalar_t, Acc> host_problem(const DilatedResidualSizes& s, const at::Tensor& x,
                                            const std::optional<at::Tensor>& mask,
                                            const std::optional<at::Tensor>& cu_seqlens,
                                            const std::vector<at::Tensor>& weights,
                                            const std::optional<at::Tensor>& dropout_seed, std::vector<Acc>& params) {
  params.resize(dr::param_count(s.C));
  for (int p = 0; p < kDilatedResidualWeights; ++p) {
    const scalar_t* w = weights[p].data_ptr<scalar_t>();
    std::transform(w, w + dr::part_size(p, s.C), params.begin() + dr::part_offset(p, s.C),
                   [](scalar_t v) { return static_cast<Acc>(v); });
  }
  const int dilation = static_cast<int>(std::min<int64_t>(s.dilation, std::max<int64_t>(s.T, 1)));
  return dr::host_problem<scalar_t, Acc>(x.data_ptr<scalar_t>(), optional_ptr<scalar_t>(mask),
                                         optional_ptr<int32_t>(cu_seqlens), params.data(), s.B, s.C, s.T, s.N,
                                         dilation, optional_ptr<int64_t>(dropout_seed), s.dropout);
}

// Groups of consecutive sequences whose parameter gradients are summed first (a fixed count, so that the sums do
// not depend on the threads).
constexpr int64_t kGradGroups = 32;

std::vector<at::Tensor> weight_list(const at::Tensor& conv_weight, const at::Tensor& conv_bias,
                                    const at::Tensor& conv_out_weight, const at::Tensor& conv_out_bias) {
  return {conv_weight, conv_bias, conv_out_weight, conv_out_bias};
}

}  // namespace

at::Tensor dilated_residual_forward_cpu(const at::Tensor& x, const std::optional<at::Tensor>& mask,
                                        const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight,
                                        const at::Tensor& conv_bias, const at::Tensor& conv_out_weight,
                                        const at::Tensor& conv_out_bias, const std::optional<at::Tensor>& dropout_seed,
                                        int64_t dilation, double dropout) {
  const std::vector<at::Tensor> weights = weight_list(conv_weight, conv_bias, conv_out_weight, conv_out_bias);
  auto setup = dilated_residual_forward_setup(c10::DeviceType::CPU, true, x, mask, cu_seqlens, weights, dropout_seed,
                                              dilation, dropout);
  const DilatedResidualSizes& s = setup.first;
  at::Tensor& out = setup.second;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dilated_residual_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> params;
    const auto P = host_problem<scalar_t, acc_t>(s, x, mask, cu_seqlens, weights, dropout_seed, params);
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, s.N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) dr::host::forward_sequence(P, n, o);
    });
  });
  return out;
}

DilatedResidualGrads dilated_residual_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight, const at::Tensor& conv_bias,
    const at::Tensor& conv_out_weight, const at::Tensor& conv_out_bias, const std::optional<at::Tensor>& dropout_seed,
    int64_t dilation, double dropout) {
  const std::vector<at::Tensor> weights = weight_list(conv_weight, conv_bias, conv_out_weight, conv_out_bias);
  DilatedResidualBackwardSetup b = dilated_residual_backward_setup(
      c10::DeviceType::CPU, true, grad_out, x, mask, cu_seqlens, weights, dropout_seed, dilation, dropout);
  const DilatedResidualSizes& s = b.s;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dilated_residual_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> params;
    const auto P = host_problem<scalar_t, acc_t>(s, x, mask, cu_seqlens, weights, dropout_seed, params);
    const int64_t count = dr::param_count(s.C);
    const int64_t groups = std::min(s.N, kGradGroups), per = (s.N + groups - 1) / std::max<int64_t>(groups, 1);
    std::vector<acc_t> partial(static_cast<size_t>(std::max<int64_t>(groups, 1) * count), acc_t(0));
    const scalar_t* g = grad_out.data_ptr<scalar_t>();
    scalar_t* gx = b.grad_x.data_ptr<scalar_t>();
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t grp = begin; grp < end; ++grp)
        for (int64_t n = grp * per; n < std::min(s.N, (grp + 1) * per); ++n)
          dr::host::backward_sequence(P, g, n, gx, partial.data() + grp * count);
    });
    for (int64_t grp = 1; grp < groups; ++grp)
      for (int64_t i = 0; i < count; ++i) partial[i] += partial[grp * count + i];
    for (int p = 0; p < kDilatedResidualWeights; ++p) {
      const acc_t* src = partial.data() + dr::part_offset(p, s.C);
      std::transform(src, src + dr::part_size(p, s.C), b.grad_weights[p].data_ptr<scalar_t>(),
                     [](acc_t v) { return static_cast<scalar_t>(v); });
    }
  });
  return dilated_residual_grads(b);
}

}  // namespace trgnet

TORCH_LIBRARY_FRAGMENT(trgnet, m) {
  m.def(
      "dilated_residual(Tensor x, Tensor? mask, Tensor? cu_seqlens, Tensor conv_weight, Tensor conv_bias,"
      " Tensor conv_out_weight, Tensor conv_out_bias, Tensor? dropout_seed, int dilation, float dropout) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "dilated_residual_backward(Tensor grad_out, Tensor x, Tensor? mask, Tensor? cu_seqlens, Tensor conv_weight,"
      " Tensor conv_bias, Tensor conv_out_weight, Tensor conv_out_bias, Tensor? dropout_seed, int dilation,"
      " float dropout) -> (Tensor grad_x, Tensor grad_conv_weight, Tensor grad_conv_bias,"
      " Tensor grad_conv_out_weight, Tensor grad_conv_out_bias)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(trgnet, CPU, m) {
  m.impl("dilated_residual", &trgnet::dilated_residual_forward_cpu);
  m.impl("dilated_residual_backward", &trgnet::dilated_residual_backward_cpu);
}
