// trgnet::frame_losses: op schemas, the argument setup shared with the CUDA dispatch (frame_losses.h), and the CPU
// kernels.
//
// The CPU kernels run the per-frame math of kernels/frame_losses.cuh (the very code the CUDA kernels run) one row
// (s, n) per task of at::parallel_for, on the row converted to the compute dtype and transposed to (T, K) (a
// frame's K logits contiguous). Each row's sums (CE, GS-TMSE, BCE; Q_k of the backward) run over the frames in
// order, in double, and the rows' sums are added in row order: deterministic for any thread count.
#include "frame_losses.h"

#include <cmath>
#include <string>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../kernels/frame_losses.cuh"
#include "checks.h"

namespace trgnet {
namespace {

constexpr const char* kForwardOp = "trgnet::frame_losses";
constexpr const char* kBackwardOp = "trgnet::frame_losses_backward";
constexpr const char* kComputeDtype = "the compute dtype: float64 for float64 logits, else float32";

using checks::check_contiguous;
using checks::check_shape;
using checks::shape_str;

FrameLossesSizes check_inputs(const char* op, c10::DeviceType device, const FrameLossesInputs& in, double threshold,
                              bool time_axis) {
  const at::Tensor& logits = in.logits;
  checks::check_dim(op, "logits", logits, 4, "(S, N, K, T)");
  checks::check_supported_float(op, "logits", logits);
  checks::check_device_type(op, "logits", logits, device);
  check_contiguous(op, "logits", logits);
  const int64_t S = logits.size(0), N = logits.size(1), K = logits.size(2), T = logits.size(3);
  TORCH_CHECK(S >= 1 && N >= 1 && K >= 1 && T >= 1, op,
              ": argument 'logits': expected a nonempty (S, N, K, T) tensor, got shape ", shape_str(logits.sizes()));
  const at::Tensor& b = in.boundary_logits;
  // numbers as strings: see checks.h
  TORCH_CHECK(b.dim() == 3 && b.size(1) == N && b.size(2) == T && b.size(0) >= 1, op,
              ": argument 'boundary_logits': expected shape (R, N, T) = (R, ", std::to_string(N), ", ",
              std::to_string(T), ") with R >= 1, got ", shape_str(b.sizes()));
  checks::check_like(op, "boundary_logits", b, logits, "logits");
  const at::ScalarType acc = checks::accumulator_dtype(logits.scalar_type());
  const std::pair<const char*, const at::Tensor*> indices[] = {
      {"labels", &in.labels}, {"next_frame", &in.next_frame}, {"previous_frame", &in.previous_frame}};
  for (const auto& [name, t] : indices) {
    check_shape(op, name, *t, {N, T}, "(N, T)");
    checks::check_same_device_dtype(op, name, *t, logits, "logits", at::kLong, "int64");
    check_contiguous(op, name, *t);
  }
  const std::pair<const char*, const at::Tensor*> weights[] = {{"ce_weight", &in.ce_weight},
                                                               {"pair_weight", &in.pair_weight},
                                                               {"boundary", &in.boundary},
                                                               {"boundary_weight", &in.boundary_weight}};
  for (const auto& [name, t] : weights) {
    check_shape(op, name, *t, {N, T}, "(N, T)");
    checks::check_same_device_dtype(op, name, *t, logits, "logits", acc, kComputeDtype);
    check_contiguous(op, name, *t);
  }
  check_shape(op, "pos_weight", in.pos_weight, {1}, "(1,)");
  checks::check_same_device_dtype(op, "pos_weight", in.pos_weight, logits, "logits", acc, kComputeDtype);
  TORCH_CHECK(std::isfinite(threshold) && threshold > 0, op,
              ": argument 'threshold': expected a finite float > 0, got ", std::to_string(threshold));
  return {op, S, N, K, T, b.size(0), threshold, time_axis};
}

std::vector<int64_t> time_lse_shape(const FrameLossesSizes& s) {
  if (s.time_axis) return {s.S, s.N, 2, s.K};
  return {0};
}

}  // namespace

FrameLossesForwardSetup frame_losses_forward_setup(c10::DeviceType device, const FrameLossesInputs& in,
                                                   double threshold, bool time_axis) {
  const FrameLossesSizes s = check_inputs(kForwardOp, device, in, threshold, time_axis);
  const auto opts = in.logits.options().dtype(checks::accumulator_dtype(in.logits.scalar_type()));
  return {s, at::empty({3}, opts), at::empty(time_lse_shape(s), opts)};
}

FrameLossesBackwardSetup frame_losses_backward_setup(c10::DeviceType device, const at::Tensor& grad_terms,
                                                     const FrameLossesInputs& in, const at::Tensor& time_lse,
                                                     double threshold, bool time_axis) {
  const char* op = kBackwardOp;
  const FrameLossesSizes s = check_inputs(op, device, in, threshold, time_axis);
  const at::ScalarType acc = checks::accumulator_dtype(in.logits.scalar_type());
  check_shape(op, "grad_terms", grad_terms, {3}, "(3,)");
  checks::check_same_device_dtype(op, "grad_terms", grad_terms, in.logits, "logits", acc, kComputeDtype);
  check_contiguous(op, "grad_terms", grad_terms);
  check_shape(op, "time_lse", time_lse, time_lse_shape(s), time_axis ? "(S, N, 2, K)" : "(0,) without time_axis");
  checks::check_same_device_dtype(op, "time_lse", time_lse, in.logits, "logits", acc, kComputeDtype);
  check_contiguous(op, "time_lse", time_lse);
  return {s, at::empty(in.logits.sizes(), in.logits.options()),
          at::empty(in.boundary_logits.sizes(), in.boundary_logits.options())};
}

// ---------------------------------------------------------------------------------------------
// CPU kernels

namespace {

// A frame's K logits at p (contiguous, in the compute dtype).
template <typename Acc>
struct PtrColumn {
  const Acc* p;
  Acc operator[](int64_t k) const { return p[k]; }
};

// The (K, T) logits row z converted to Acc and transposed to (T, K): out[t K + k] = z[k T + t].
template <typename scalar_t, typename Acc>
void load_row(const scalar_t* z, int64_t K, int64_t T, Acc* out) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t t = 0; t < T; ++t) out[t * K + k] = static_cast<Acc>(z[k * T + t]);
}

// The typed pointers of a call.
template <typename scalar_t, typename Acc>
struct CpuCall {
  const scalar_t *logits, *boundary_logits;
  const int64_t *labels, *next, *prev;
  const Acc *ce_w, *pair_w, *boundary, *boundary_w;
  Acc pw, thr2;
  CpuCall(const FrameLossesSizes& s, const FrameLossesInputs& in)
      : logits(in.logits.data_ptr<scalar_t>()),
        boundary_logits(in.boundary_logits.data_ptr<scalar_t>()),
        labels(in.labels.data_ptr<int64_t>()),
        next(in.next_frame.data_ptr<int64_t>()),
        prev(in.previous_frame.data_ptr<int64_t>()),
        ce_w(in.ce_weight.data_ptr<Acc>()),
        pair_w(in.pair_weight.data_ptr<Acc>()),
        boundary(in.boundary.data_ptr<Acc>()),
        boundary_w(in.boundary_weight.data_ptr<Acc>()),
        pw(in.pos_weight.data_ptr<Acc>()[0]),
        thr2(static_cast<Acc>(s.threshold * s.threshold)) {}
  // The per-frame scalars of frame t of logits row `row` (lse: the row's time_lse, null without time_axis).
  fl::Frame<Acc> frame(const FrameLossesSizes& s, int64_t n, int64_t t, const Acc* lse) const {
    const int64_t i = n * s.T + t;
    return {s.K, labels[i], ce_w[i], fl::partner(next[i], t, s.T) >= 0, pair_w[i], s.time_axis, thr2, lse,
            lse ? lse + s.K : nullptr};
  }
};

// time_lse of one row (zt: (T, K)): [lse2, lse1] -> out (2 K).
template <typename Acc>
void time_lse_row(const Acc* zt, const int64_t* next, const int64_t* prev, int64_t K, int64_t T, Acc* out) {
  std::vector<fl::Lse<Acc>> l1(K, fl::Lse<Acc>::empty()), l2(K, fl::Lse<Acc>::empty());
  for (int64_t t = 0; t < T; ++t) {
    const bool pair = fl::partner(next[t], t, T) >= 0, ends = fl::partner(prev[t], t, T) >= 0;
    for (int64_t k = 0; k < K; ++k) {
      if (pair) l1[k].add(zt[t * K + k]);
      if (ends) l2[k].add(zt[t * K + k]);
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    out[k] = l2[k].value(Acc(0));
    out[K + k] = l1[k].value(Acc(0));
  }
}

template <typename scalar_t>
void forward_cpu_impl(const FrameLossesSizes& s, const FrameLossesInputs& in, at::Tensor& terms,
                      at::Tensor& time_lse) {
  using acc_t = at::opmath_type<scalar_t>;
  const CpuCall<scalar_t, acc_t> c(s, in);
  const int64_t K = s.K, T = s.T, rows = s.S * s.N, brows = s.R * s.N;
  acc_t* lse_out = s.time_axis ? time_lse.data_ptr<acc_t>() : nullptr;
  std::vector<double> ce_part(rows), gs_part(rows), bce_part(brows);
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> zt(K * T);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row % s.N;
      load_row(c.logits + row * K * T, K, T, zt.data());
      const acc_t* lse = nullptr;
      if (s.time_axis) {
        time_lse_row(zt.data(), c.next + n * T, c.prev + n * T, K, T, lse_out + row * 2 * K);
        lse = lse_out + row * 2 * K;
      }
      double ce = 0, gs = 0;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t v = fl::partner(c.next[n * T + t], t, T);
        const fl::FrameTerms<acc_t> r = fl::frame_forward(c.frame(s, n, t, lse), PtrColumn<acc_t>{zt.data() + t * K},
                                                          PtrColumn<acc_t>{zt.data() + (v >= 0 ? v : t) * K});
        ce += r.ce;
        gs += r.gs;
      }
      ce_part[row] = ce;
      gs_part[row] = gs;
    }
  });
  at::parallel_for(0, brows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row % s.N;
      double bce = 0;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = n * T + t;
        bce += c.boundary_w[i] * fl::bce_loss(static_cast<acc_t>(c.boundary_logits[row * T + t]), c.boundary[i], c.pw);
      }
      bce_part[row] = bce;
    }
  });
  double ce = 0, gs = 0, bce = 0;
  for (int64_t row = 0; row < rows; ++row) ce += ce_part[row], gs += gs_part[row];
  for (int64_t row = 0; row < brows; ++row) bce += bce_part[row];
  acc_t* out = terms.data_ptr<acc_t>();
  out[0] = static_cast<acc_t>(ce / static_cast<double>(s.S));
  out[1] = static_cast<acc_t>(gs / static_cast<double>(s.S * K));
  out[2] = static_cast<acc_t>(bce / static_cast<double>(s.R));
}

template <typename scalar_t>
void backward_cpu_impl(const FrameLossesSizes& s, const FrameLossesInputs& in, const at::Tensor& grad_terms,
                       const at::Tensor& time_lse, at::Tensor& grad_logits, at::Tensor& grad_b) {
  using acc_t = at::opmath_type<scalar_t>;
  const CpuCall<scalar_t, acc_t> c(s, in);
  const int64_t K = s.K, T = s.T, rows = s.S * s.N, brows = s.R * s.N;
  const acc_t* gt = grad_terms.data_ptr<acc_t>();
  const acc_t gc = gt[0] / static_cast<acc_t>(s.S), gg = gt[1] / static_cast<acc_t>(s.S * K),
              gb = gt[2] / static_cast<acc_t>(s.R);
  const acc_t* lse_in = s.time_axis ? time_lse.data_ptr<acc_t>() : nullptr;
  scalar_t* gz = grad_logits.data_ptr<scalar_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> zt(K * T), g(K * T), Q(K);
    std::vector<double> q(K);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row % s.N;
      const int64_t *next = c.next + n * T, *prev = c.prev + n * T;
      load_row(c.logits + row * K * T, K, T, zt.data());
      const acc_t* lse = s.time_axis ? lse_in + row * 2 * K : nullptr;
      if (s.time_axis) {  // Q_k = sum_u q_k(u), frames in order
        std::fill(q.begin(), q.end(), 0.0);
        for (int64_t u = 0; u < T; ++u) {
          const int64_t v = fl::partner(next[u], u, T);
          if (v < 0) continue;
          const acc_t w = c.pair_w[n * T + u];
          for (int64_t k = 0; k < K; ++k)
            q[k] += fl::q_of(fl::d_time(zt[u * K + k], zt[v * K + k], lse[k], lse[K + k]), w, c.thr2);
        }
        for (int64_t k = 0; k < K; ++k) Q[k] = static_cast<acc_t>(q[k]);
      }
      auto col = [&](int64_t frame, int64_t t) { return PtrColumn<acc_t>{zt.data() + (frame >= 0 ? frame : t) * K}; };
      for (int64_t t = 0; t < T; ++t) {
        const int64_t v = fl::partner(next[t], t, T), p = fl::partner(prev[t], t, T);
        const int64_t pv = p >= 0 ? fl::partner(next[p], p, T) : -1;
        const fl::FrameGrad<acc_t> fg{p >= 0, pv >= 0, pv == t, p >= 0 ? c.pair_w[n * T + p] : acc_t(0), gc, gg,
                                      s.time_axis ? Q.data() : nullptr};
        acc_t* gt_row = g.data() + t * K;
        fl::frame_backward(c.frame(s, n, t, lse), fg, col(t, t), col(v, t), col(p, t), col(pv, t),
                           [&](int64_t k, acc_t value) { gt_row[k] = value; });
      }
      scalar_t* out = gz + row * K * T;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t t = 0; t < T; ++t) out[k * T + t] = static_cast<scalar_t>(g[t * K + k]);
    }
  });
  scalar_t* gbo = grad_b.data_ptr<scalar_t>();
  at::parallel_for(0, brows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row % s.N;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = n * T + t;
        const acc_t x = static_cast<acc_t>(c.boundary_logits[row * T + t]);
        gbo[row * T + t] = static_cast<scalar_t>(gb * c.boundary_w[i] * fl::bce_grad(x, c.boundary[i], c.pw));
      }
    }
  });
}

FrameLossesInputs pack(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& ce_weight,
                       const at::Tensor& next_frame, const at::Tensor& previous_frame, const at::Tensor& pair_weight,
                       const at::Tensor& boundary_logits, const at::Tensor& boundary,
                       const at::Tensor& boundary_weight, const at::Tensor& pos_weight) {
  return {logits,          labels,   ce_weight,       next_frame, previous_frame, pair_weight,
          boundary_logits, boundary, boundary_weight, pos_weight};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> frame_losses_forward_cpu(
    const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& ce_weight, const at::Tensor& next_frame,
    const at::Tensor& previous_frame, const at::Tensor& pair_weight, const at::Tensor& boundary_logits,
    const at::Tensor& boundary, const at::Tensor& boundary_weight, const at::Tensor& pos_weight, double threshold,
    bool time_axis) {
  const FrameLossesInputs in = pack(logits, labels, ce_weight, next_frame, previous_frame, pair_weight,
                                    boundary_logits, boundary, boundary_weight, pos_weight);
  FrameLossesForwardSetup f = frame_losses_forward_setup(c10::DeviceType::CPU, in, threshold, time_axis);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "frame_losses_forward_cpu",
                                  [&] { forward_cpu_impl<scalar_t>(f.s, in, f.terms, f.time_lse); });
  return {f.terms, f.time_lse};
}

std::tuple<at::Tensor, at::Tensor> frame_losses_backward_cpu(
    const at::Tensor& grad_terms, const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& ce_weight,
    const at::Tensor& next_frame, const at::Tensor& previous_frame, const at::Tensor& pair_weight,
    const at::Tensor& boundary_logits, const at::Tensor& boundary, const at::Tensor& boundary_weight,
    const at::Tensor& pos_weight, const at::Tensor& time_lse, double threshold, bool time_axis) {
  const FrameLossesInputs in = pack(logits, labels, ce_weight, next_frame, previous_frame, pair_weight,
                                    boundary_logits, boundary, boundary_weight, pos_weight);
  FrameLossesBackwardSetup b =
      frame_losses_backward_setup(c10::DeviceType::CPU, grad_terms, in, time_lse, threshold, time_axis);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "frame_losses_backward_cpu", [&] {
    backward_cpu_impl<scalar_t>(b.s, in, grad_terms, time_lse, b.grad_logits, b.grad_boundary_logits);
  });
  return {b.grad_logits, b.grad_boundary_logits};
}

}  // namespace trgnet

TORCH_LIBRARY_FRAGMENT(trgnet, m) {
  m.def(
      "frame_losses(Tensor logits, Tensor labels, Tensor ce_weight, Tensor next_frame, Tensor previous_frame,"
      " Tensor pair_weight, Tensor boundary_logits, Tensor boundary, Tensor boundary_weight, Tensor pos_weight,"
      " float threshold, bool time_axis) -> (Tensor terms, Tensor time_lse)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "frame_losses_backward(Tensor grad_terms, Tensor logits, Tensor labels, Tensor ce_weight, Tensor next_frame,"
      " Tensor previous_frame, Tensor pair_weight, Tensor boundary_logits, Tensor boundary, Tensor boundary_weight,"
      " Tensor pos_weight, Tensor time_lse, float threshold, bool time_axis)"
      " -> (Tensor grad_logits, Tensor grad_boundary_logits)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(trgnet, CPU, m) {
  m.impl("frame_losses", &trgnet::frame_losses_forward_cpu);
  m.impl("frame_losses_backward", &trgnet::frame_losses_backward_cpu);
}
