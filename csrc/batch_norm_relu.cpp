// trgnet::batch_norm_relu: op schemas, the argument setup shared with the CUDA dispatch (batch_norm_relu.h), and the
// CPU kernels.
//
// The CPU kernels follow the CUDA kernels' plan (kernels/batch_norm_relu.cuh: a channel's positions cut into pieces,
// the pieces dealt to slots) and their per-element math: one (channel, slot) per task of at::parallel_for, its
// positions in order, each piece's sums added to the slot's in order, a channel's slots added in slot order (sums of
// short runs: float32 stays accurate over millions of positions). Deterministic for any thread count.
#include "batch_norm_relu.h"

#include <cmath>
#include <string>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../kernels/batch_norm_relu.cuh"
#include "checks.h"

namespace trgnet {
namespace {

constexpr const char* kForwardOp = "trgnet::batch_norm_relu";
constexpr const char* kBackwardOp = "trgnet::batch_norm_relu_backward";
constexpr const char* kStateRule = "the state dtype: float64 for float64 x, else float32";

using checks::check_contiguous;
using checks::check_shape;

// x (N, C, T, V) of a supported dtype on a `device` device, contiguous; eps a finite float > 0.
BatchNormReluSizes check_x(const char* op, c10::DeviceType device, const at::Tensor& x, double eps) {
  checks::check_dim(op, "x", x, 4, "(N, C, T, V)");
  checks::check_supported_float(op, "x", x);
  checks::check_device_type(op, "x", x, device);
  check_contiguous(op, "x", x);
  // numbers as strings: see checks.h
  TORCH_CHECK(std::isfinite(eps) && eps > 0, op, ": argument 'eps': expected a finite float > 0, got ",
              std::to_string(eps));
  return {op, x.size(0), x.size(1), x.size(2), x.size(3), eps};
}

// An (N, C, T, V) tensor like x (residual, grad_out, out).
void check_activation(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  check_shape(op, name, t, x.sizes(), "(N, C, T, V) of x");
  checks::check_like(op, name, t, x, "x");
}

void check_frame_mask(const char* op, const std::optional<at::Tensor>& frame_mask, const at::Tensor& x) {
  if (!frame_mask.has_value()) return;
  check_shape(op, "frame_mask", *frame_mask, {x.size(0), 1, x.size(2), 1}, "(N, 1, T, 1)");
  checks::check_same_device_dtype(op, "frame_mask", *frame_mask, x, "x", x.scalar_type(),
                                  "a 0/1 mask in the dtype of x");
  check_contiguous(op, "frame_mask", *frame_mask);
}

// A (C,) tensor in the state dtype (weight, bias, mean, var).
void check_channel_vector(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  check_shape(op, name, t, {x.size(1)}, "(C,)");
  checks::check_same_device_dtype(op, name, t, x, "x", checks::accumulator_dtype(x.scalar_type()), kStateRule);
  check_contiguous(op, name, t);
}

at::Tensor alloc(bool zero, at::IntArrayRef shape, const at::TensorOptions& opts) {
  return zero ? at::zeros(shape, opts) : at::empty(shape, opts);
}

}  // namespace

BatchNormReluForwardSetup batch_norm_relu_forward_setup(c10::DeviceType device, const at::Tensor& x,
                                                        const std::optional<at::Tensor>& residual,
                                                        const std::optional<at::Tensor>& frame_mask,
                                                        const at::Tensor& weight, const at::Tensor& bias, double eps) {
  const char* op = kForwardOp;
  const BatchNormReluSizes s = check_x(op, device, x, eps);
  if (residual.has_value()) check_activation(op, "residual", *residual, x);
  check_frame_mask(op, frame_mask, x);
  check_channel_vector(op, "weight", weight, x);
  check_channel_vector(op, "bias", bias, x);
  const auto state = x.options().dtype(checks::accumulator_dtype(x.scalar_type()));
  // x without an element: mean 0, var 0 (count 1), which no kernel writes
  return {s, at::empty(x.sizes(), x.options()), alloc(s.empty(), {s.C}, state), alloc(s.empty(), {s.C}, state)};
}

BatchNormReluBackwardSetup batch_norm_relu_backward_setup(c10::DeviceType device, const at::Tensor& grad_out,
                                                          const at::Tensor& out, const at::Tensor& x,
                                                          const std::optional<at::Tensor>& frame_mask,
                                                          const at::Tensor& weight, const at::Tensor& mean,
                                                          const at::Tensor& var, double eps, bool residual_grad) {
  const char* op = kBackwardOp;
  const BatchNormReluSizes s = check_x(op, device, x, eps);
  check_activation(op, "grad_out", grad_out, x);
  check_activation(op, "out", out, x);
  check_frame_mask(op, frame_mask, x);
  check_channel_vector(op, "weight", weight, x);
  check_channel_vector(op, "mean", mean, x);
  check_channel_vector(op, "var", var, x);
  const auto state = x.options().dtype(checks::accumulator_dtype(x.scalar_type()));
  return {s,
          residual_grad,
          at::empty(x.sizes(), x.options()),
          residual_grad ? at::empty(x.sizes(), x.options()) : at::empty({0}, x.options()),
          alloc(s.empty(), {s.C}, state),
          alloc(s.empty(), {s.C}, state)};
}

// ---------------------------------------------------------------------------------------------
// CPU kernels

namespace {

// The CPU kernels' sums: double for every dtype. They add a piece's 2,048 values one after another, where the CUDA
// kernels spread them over 256 threads and a tree: a serial float32 sum would be the least accurate of the backends.
using SumT = double;

// fn(i, m) for the positions of piece pc in order: i the offset in x, m its frame mask (1 without one).
template <typename scalar_t, typename Acc, typename Fn>
void for_each_position(const bnr::Piece& pc, const BatchNormReluSizes& s, const scalar_t* mask, Fn fn) {
  const scalar_t* mask_row = mask ? mask + pc.row * s.T : nullptr;
  int64_t t = pc.start / s.V, v = pc.start % s.V;
  for (int64_t e = 0; e < pc.len; ++e) {
    fn(pc.offset + e, mask_row ? static_cast<Acc>(mask_row[t]) : Acc(1));
    if (++v == s.V) v = 0, ++t;
  }
}

// The 3 sums of (channel c, slot `slot`) -> sums[0..3): add(i, m, piece_sums) adds position i's terms to its piece's
// sums; the pieces' sums are added in order.
template <typename scalar_t, typename Acc, typename Add>
void slot_sums(const bnr::Plan& plan, const BatchNormReluSizes& s, const scalar_t* mask, int64_t c, int64_t slot,
               Acc* sums, Add add) {
  Acc total[3] = {Acc(0), Acc(0), Acc(0)};
  for (int64_t piece = bnr::slot_first(plan, slot); piece < bnr::slot_last(plan, slot); ++piece) {
    Acc part[3] = {Acc(0), Acc(0), Acc(0)};
    for_each_position<scalar_t, Acc>(bnr::piece_at(plan, s.C, c, piece), s, mask,
                                     [&](int64_t i, Acc m) { add(i, m, part); });
    for (int j = 0; j < 3; ++j) total[j] += part[j];
  }
  for (int j = 0; j < 3; ++j) sums[j] = total[j];
}

// Channel c's partials (C, slots, 3) added in slot order -> merged[0..3).
template <typename Acc>
void merge_partials(const std::vector<Acc>& partials, int64_t c, int64_t slots, Acc* merged) {
  for (int j = 0; j < 3; ++j) {
    Acc a = Acc(0);
    for (int64_t slot = 0; slot < slots; ++slot) a += partials[3 * (c * slots + slot) + j];
    merged[j] = a;
  }
}

// fn(i) for every offset i in x of the positions of (channel c, slot `slot`).
template <typename Fn>
void for_each_slot_offset(const bnr::Plan& plan, const BatchNormReluSizes& s, int64_t c, int64_t slot, Fn fn) {
  for (int64_t piece = bnr::slot_first(plan, slot); piece < bnr::slot_last(plan, slot); ++piece) {
    const bnr::Piece pc = bnr::piece_at(plan, s.C, c, piece);
    for (int64_t e = 0; e < pc.len; ++e) fn(pc.offset + e);
  }
}

template <typename T>
const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

}  // namespace

BatchNormReluOutputs batch_norm_relu_forward_cpu(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                                 const std::optional<at::Tensor>& frame_mask, const at::Tensor& weight,
                                                 const at::Tensor& bias, double eps) {
  BatchNormReluForwardSetup f =
      batch_norm_relu_forward_setup(c10::DeviceType::CPU, x, residual, frame_mask, weight, bias, eps);
  const BatchNormReluSizes& s = f.s;
  if (s.empty()) return {f.out, f.mean, f.var};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "batch_norm_relu_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bnr::Plan plan = bnr::make_plan(s.N, s.C, s.T, s.V);
    const int64_t work = s.C * plan.slots;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* res = optional_ptr<scalar_t>(residual);
    const scalar_t* mask = optional_ptr<scalar_t>(frame_mask);
    std::vector<SumT> partials(static_cast<size_t>(3 * work));
    at::parallel_for(0, work, 1, [&](int64_t begin, int64_t end) {
      for (int64_t w = begin; w < end; ++w) {
        const int64_t c = w / plan.slots;
        const SumT K = static_cast<acc_t>(xp[c * plan.TV]);  // x[0, c, 0, 0]
        slot_sums<scalar_t, SumT>(plan, s, mask, c, w % plan.slots, partials.data() + 3 * w,
                                  [&](int64_t i, SumT m, SumT* sums) {
                                    bnr::add_moments(sums[0], sums[1], sums[2], static_cast<SumT>(xp[i]) - K, m);
                                  });
      }
    });
    std::vector<bnr::Statistics<acc_t>> st(static_cast<size_t>(s.C));
    acc_t* mean = f.mean.data_ptr<acc_t>();
    acc_t* var = f.var.data_ptr<acc_t>();
    for (int64_t c = 0; c < s.C; ++c) {
      SumT merged[3];
      merge_partials(partials, c, plan.slots, merged);
      const bnr::Statistics<SumT> exact = bnr::statistics(merged[0], merged[1], merged[2],
                                                          static_cast<SumT>(xp[c * plan.TV]), static_cast<SumT>(eps));
      st[c] = {static_cast<acc_t>(exact.mean), static_cast<acc_t>(exact.var), static_cast<acc_t>(exact.invstd),
               static_cast<acc_t>(exact.shift)};
      mean[c] = st[c].mean;
      var[c] = st[c].var;
    }
    const acc_t* w = weight.data_ptr<acc_t>();
    const acc_t* b = bias.data_ptr<acc_t>();
    scalar_t* out = f.out.data_ptr<scalar_t>();
    at::parallel_for(0, work, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t c = item / plan.slots;
        const acc_t K = static_cast<acc_t>(xp[c * plan.TV]), shift = st[c].shift, scale = st[c].invstd * w[c];
        const acc_t beta = b[c];
        for_each_slot_offset(plan, s, c, item % plan.slots, [&](int64_t i) {
          const acc_t r = res ? static_cast<acc_t>(res[i]) : acc_t(0);
          out[i] = static_cast<scalar_t>(bnr::bn_relu(static_cast<acc_t>(xp[i]), K, shift, scale, beta, r));
        });
      }
    });
  });
  return {f.out, f.mean, f.var};
}

BatchNormReluGrads batch_norm_relu_backward_cpu(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& x,
                                                const std::optional<at::Tensor>& frame_mask, const at::Tensor& weight,
                                                const at::Tensor& mean, const at::Tensor& var, double eps,
                                                bool residual_grad) {
  BatchNormReluBackwardSetup b = batch_norm_relu_backward_setup(c10::DeviceType::CPU, grad_out, out, x, frame_mask,
                                                                weight, mean, var, eps, residual_grad);
  const BatchNormReluSizes& s = b.s;
  if (s.empty()) return {b.grad_x, b.grad_residual, b.grad_weight, b.grad_bias};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "batch_norm_relu_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bnr::Plan plan = bnr::make_plan(s.N, s.C, s.T, s.V);
    const int64_t work = s.C * plan.slots;
    const scalar_t* go = grad_out.data_ptr<scalar_t>();
    const scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* mask = optional_ptr<scalar_t>(frame_mask);
    const acc_t* mu = mean.data_ptr<acc_t>();
    std::vector<SumT> partials(static_cast<size_t>(3 * work));
    at::parallel_for(0, work, 1, [&](int64_t begin, int64_t end) {
      for (int64_t w = begin; w < end; ++w) {
        const int64_t c = w / plan.slots;
        const SumT mean_c = mu[c];
        slot_sums<scalar_t, SumT>(plan, s, mask, c, w % plan.slots, partials.data() + 3 * w,
                                  [&](int64_t i, SumT m, SumT* sums) {
                                    const SumT g = bnr::relu_grad(static_cast<acc_t>(o[i]),
                                                                  static_cast<acc_t>(go[i]));
                                    sums[0] += g;
                                    sums[1] += g * (static_cast<SumT>(xp[i]) - mean_c);
                                    sums[2] += m;
                                  });
      }
    });
    // per channel: invstd, grad_bias, grad_weight, 1 / count
    std::vector<acc_t> invstd(s.C), gb(s.C), gw(s.C), inv_count(s.C);
    const acc_t* v = var.data_ptr<acc_t>();
    acc_t* grad_weight = b.grad_weight.data_ptr<acc_t>();
    acc_t* grad_bias = b.grad_bias.data_ptr<acc_t>();
    for (int64_t c = 0; c < s.C; ++c) {
      SumT merged[3];
      merge_partials(partials, c, plan.slots, merged);
      invstd[c] = bnr::inv_std(v[c], static_cast<acc_t>(eps));
      gb[c] = grad_bias[c] = static_cast<acc_t>(merged[0]);
      gw[c] = grad_weight[c] = static_cast<acc_t>(static_cast<SumT>(invstd[c]) * merged[1]);
      inv_count[c] = static_cast<acc_t>(SumT(1) / bnr::clamped_count(merged[2]));
    }
    const acc_t* w = weight.data_ptr<acc_t>();
    scalar_t* gx = b.grad_x.data_ptr<scalar_t>();
    scalar_t* gr = residual_grad ? b.grad_residual.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, work, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t c = item / plan.slots;
        const acc_t mean_c = mu[c], w_invstd = w[c] * invstd[c];
        for (int64_t piece = bnr::slot_first(plan, item % plan.slots); piece < bnr::slot_last(plan, item % plan.slots);
             ++piece)
          for_each_position<scalar_t, acc_t>(bnr::piece_at(plan, s.C, c, piece), s, mask, [&](int64_t i, acc_t m) {
            const acc_t g = bnr::relu_grad(static_cast<acc_t>(o[i]), static_cast<acc_t>(go[i]));
            const acc_t x_hat = (static_cast<acc_t>(xp[i]) - mean_c) * invstd[c];
            gx[i] = static_cast<scalar_t>(bnr::input_grad(g, x_hat, m, w_invstd, gb[c], gw[c], inv_count[c]));
            if (gr) gr[i] = static_cast<scalar_t>(g);
          });
      }
    });
  });
  return {b.grad_x, b.grad_residual, b.grad_weight, b.grad_bias};
}

}  // namespace trgnet

TORCH_LIBRARY_FRAGMENT(trgnet, m) {
  m.def(
      "batch_norm_relu(Tensor x, Tensor? residual, Tensor? frame_mask, Tensor weight, Tensor bias, float eps)"
      " -> (Tensor out, Tensor mean, Tensor var)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "batch_norm_relu_backward(Tensor grad_out, Tensor out, Tensor x, Tensor? frame_mask, Tensor weight,"
      " Tensor mean, Tensor var, float eps, bool residual_grad)"
      " -> (Tensor grad_x, Tensor grad_residual, Tensor grad_weight, Tensor grad_bias)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(trgnet, CPU, m) {
  m.impl("batch_norm_relu", &trgnet::batch_norm_relu_forward_cpu);
  m.impl("batch_norm_relu_backward", &trgnet::batch_norm_relu_backward_cpu);
}
