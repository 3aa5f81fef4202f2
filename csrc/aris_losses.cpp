// trgnet::aris_losses: op schemas, the argument setup shared with the CUDA dispatch (aris_losses.h), and the CPU
// kernels.
//
// The CPU kernels run the math of kernels/aris_losses.cuh (the functions the CUDA kernels call) in plain loops: the
// segment means one slot per at::parallel_for task, frames in order; the pair sums one row i of pairs per task,
// d in order (PairSums: the same d_ij in the forward and the backward, and d_ij = d_ji, bit for bit); the row
// reductions and the gradients one row or slot per task, j in order, and every sum over rows added in row order
// afterwards: deterministic for any thread count.
#include "aris_losses.h"

#include <cmath>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../kernels/aris_losses.cuh"
#include "checks.h"

namespace trgnet {
namespace {

constexpr const char* kForwardOp = "trgnet::aris_losses";
constexpr const char* kBackwardOp = "trgnet::aris_losses_backward";

using checks::check_contiguous;
using checks::check_shape;
using checks::shape_str;

// t: on ref's device, of `dtype` (dtype_rule says why), contiguous.
void check_tensor(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref, const char* ref_name,
                  at::ScalarType dtype, const std::string& dtype_rule) {
  checks::check_same_device_dtype(op, name, t, ref, ref_name, dtype, dtype_rule.c_str());
  check_contiguous(op, name, t);
}

// The slot inputs of both directions for sizes N, T, M, D; the floating ones in `acc` (`rule` says why), all on the
// device of `ref` (named ref_name).
void check_slots(const char* op, const ArisLossesSlots& in, int64_t N, int64_t T, int64_t M, int64_t D,
                 at::ScalarType acc, const at::Tensor& ref, const char* ref_name, const std::string& rule) {
  check_shape(op, "frame_segment", in.frame_segment, {N, T}, "(N, T)");
  check_tensor(op, "frame_segment", in.frame_segment, ref, ref_name, at::kLong, "int64");
  check_shape(op, "segment_count", in.segment_count, {M}, "(M,)");
  check_tensor(op, "segment_count", in.segment_count, ref, ref_name, acc, rule);
  check_shape(op, "segment_valid", in.segment_valid, {M}, "(M,)");
  check_tensor(op, "segment_valid", in.segment_valid, ref, ref_name, at::kBool, "bool");
  check_shape(op, "segment_label", in.segment_label, {M}, "(M,)");
  check_tensor(op, "segment_label", in.segment_label, ref, ref_name, at::kLong, "int64");
  const at::Tensor& e = in.unit_embeddings;
  // numbers as strings: see checks.h
  TORCH_CHECK(e.dim() == 2 && e.size(1) == D && e.size(0) >= 1, op,
              ": argument 'unit_embeddings': expected shape (K, D) = (K, ", std::to_string(D), ") with K >= 1, got ",
              shape_str(e.sizes()));
  check_tensor(op, "unit_embeddings", e, ref, ref_name, acc, rule);
  check_shape(op, "logit_scale", in.logit_scale, {1}, "(1,)");
  check_tensor(op, "logit_scale", in.logit_scale, ref, ref_name, acc, rule);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"absolute_weight", &in.absolute_weight},
                                {"relative_weight", &in.relative_weight}}) {
    check_shape(op, name, *t, {M, M}, "(M, M)");
    check_tensor(op, name, *t, ref, ref_name, acc, rule);
  }
}

// A tensor whose sizes are read (features, segment_features, frame_segment): dims.size()-D (`layout`, its dimensions
// named by `dims`), on a `device` device, contiguous, no empty dimension (the wording of _checks.check_nonempty).
void check_leading(const char* op, const char* name, const at::Tensor& t, const char* layout,
                   std::initializer_list<const char*> dims, c10::DeviceType device) {
  checks::check_dim(op, name, t, static_cast<int64_t>(dims.size()), layout);
  checks::check_device_type(op, name, t, device);
  check_contiguous(op, name, t);
  int64_t k = 0;
  for (const char* dim : dims) {
    TORCH_CHECK(t.size(k++) >= 1, op, ": argument '", name, "': expected ", dim, " >= 1 (no empty dimension of ",
                layout, "), got shape ", shape_str(t.sizes()));
  }
}

std::string compute_dtype_rule(at::ScalarType features_dtype) {
  return std::string("the compute dtype of ") + c10::toString(features_dtype) + " features";
}

// head_weight (D, C) with D >= 1 for the C of `ref` (named ref_name), in `acc` on ref's device, contiguous; returns D.
int64_t check_head_weight(const char* op, const at::Tensor& w, int64_t C, at::ScalarType acc, const at::Tensor& ref,
                          const char* ref_name, const std::string& rule) {
  // numbers as strings: see checks.h
  TORCH_CHECK(w.dim() == 2 && w.size(1) == C && w.size(0) >= 1, op,
              ": argument 'head_weight': expected shape (D, C) = (D, ", std::to_string(C), ") with D >= 1, got ",
              shape_str(w.sizes()));
  check_tensor(op, "head_weight", w, ref, ref_name, acc, rule);
  return w.size(0);
}

}  // namespace

ArisLossesForwardSetup aris_losses_forward_setup(c10::DeviceType device, const ArisLossesInputs& in) {
  const char* op = kForwardOp;
  const at::Tensor& features = in.features;
  const bool head = in.head_weight.defined();
  TORCH_CHECK(head == in.head_bias.defined(), op,
              ": arguments 'head_weight', 'head_bias': expected both tensors (the feature head) or both None, got ",
              head ? "head_weight only" : "head_bias only");
  if (head)
    check_leading(op, "features", features, "(N, C, T)", {"N", "C", "T"}, device);
  else
    check_leading(op, "features", features, "(N, D, T)", {"N", "D", "T"}, device);
  checks::check_supported_float(op, "features", features);
  const int64_t N = features.size(0), C = features.size(1), T = features.size(2);
  check_leading(op, "segment_count", in.slots.segment_count, "(M,)", {"M"}, device);
  const int64_t M = in.slots.segment_count.size(0);
  const at::ScalarType acc = checks::accumulator_dtype(features.scalar_type());
  const std::string rule = compute_dtype_rule(features.scalar_type());
  int64_t D = C;
  if (head) {
    D = check_head_weight(op, in.head_weight, C, acc, features, "features", rule);
    check_shape(op, "head_bias", in.head_bias, {D}, "(D,)");
    check_tensor(op, "head_bias", in.head_bias, features, "features", acc, rule);
  }
  check_slots(op, in.slots, N, T, M, D, acc, features, "features", rule);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"segment_video", &in.segment_video},
                                {"segment_start", &in.segment_start}}) {
    check_shape(op, name, *t, {M}, "(M,)");
    check_tensor(op, name, *t, features, "features", at::kLong, "int64");
  }
  for (const auto& [name, t] :
       {std::pair<const char*, const at::Tensor*>{"absolute_log_weight", &in.absolute_log_weight},
        {"relative_log_weight", &in.relative_log_weight}}) {
    check_shape(op, name, *t, {M, M}, "(M, M)");
    check_tensor(op, name, *t, features, "features", acc, rule);
  }
  const auto opts = features.options().dtype(acc);
  return {{op, N, D, T, M, in.slots.unit_embeddings.size(0), C, head},
          at::empty({2}, opts),
          at::empty({M, D}, opts),
          at::empty({3, M}, opts),
          at::empty({2}, opts),
          head ? at::empty({M, C}, opts) : at::empty({0}, opts)};
}

ArisLossesBackwardSetup aris_losses_backward_setup(c10::DeviceType device, const at::Tensor& grad_terms,
                                                   const ArisLossesSlots& slots, const ArisLossesSaved& saved,
                                                   at::ScalarType features_dtype) {
  const char* op = kBackwardOp;
  TORCH_CHECK(checks::is_supported_float(features_dtype), op,
              ": argument 'features_dtype': expected float32, float64, float16 or bfloat16, got ", features_dtype);
  const at::Tensor& f = saved.segment_features;
  check_leading(op, "segment_features", f, "(M, D)", {"M", "D"}, device);
  const at::ScalarType acc = checks::accumulator_dtype(features_dtype);
  TORCH_CHECK(f.scalar_type() == acc, op, ": argument 'segment_features': expected dtype ", acc, " (",
              compute_dtype_rule(features_dtype), "), got ", f.scalar_type());
  const int64_t M = f.size(0), D = f.size(1);
  check_leading(op, "frame_segment", slots.frame_segment, "(N, T)", {"N", "T"}, device);
  const int64_t N = slots.frame_segment.size(0), T = slots.frame_segment.size(1);
  const std::string rule = "same as segment_features";
  check_slots(op, slots, N, T, M, D, acc, f, "segment_features", rule);
  struct Small {
    const char* name;
    const at::Tensor& t;
    std::vector<int64_t> shape;
    const char* layout;
  };
  for (const Small& x : {Small{"grad_terms", grad_terms, {2}, "(2,)"},
                         Small{"row_lse", saved.row_lse, {3, M}, "(3, M)"},
                         Small{"max_distance", saved.max_distance, {2}, "(2,)"}}) {
    check_shape(op, x.name, x.t, x.shape, x.layout);
    check_tensor(op, x.name, x.t, f, "segment_features", acc, rule);
  }
  const bool head = saved.head_weight.defined();
  int64_t C = D;
  if (head) {
    TORCH_CHECK(saved.head_weight.dim() == 2 && saved.head_weight.size(0) == D && saved.head_weight.size(1) >= 1, op,
                ": argument 'head_weight': expected shape (D, C) = (", std::to_string(D),
                ", C) with C >= 1, got ", shape_str(saved.head_weight.sizes()));
    C = saved.head_weight.size(1);
    check_tensor(op, "head_weight", saved.head_weight, f, "segment_features", acc, rule);
    check_shape(op, "segment_means", saved.segment_means, {M, C}, "(M, C)");
    check_tensor(op, "segment_means", saved.segment_means, f, "segment_features", acc, rule);
  } else {
    check_shape(op, "segment_means", saved.segment_means, {0}, "(0,) (no feature head)");
  }
  const auto opts = f.options();
  return {{op, N, D, T, M, slots.unit_embeddings.size(0), C, head},
          at::empty({N, C, T}, opts.dtype(features_dtype)),
          at::empty({1}, opts),
          head ? at::empty({D, C}, opts) : at::empty({0}, opts),
          head ? at::empty({D}, opts) : at::empty({0}, opts)};
}

// ---------------------------------------------------------------------------------------------
// CPU kernels

namespace {

// The typed pointers of the slot inputs.
template <typename Acc>
struct CpuSlots {
  const ArisLossesSizes& s;
  const int64_t *frame_segment, *label;
  const Acc* count;
  const bool* valid;
  const Acc *unit_embeddings, *wa, *wr;
  Acc scale;
  CpuSlots(const ArisLossesSizes& sizes, const ArisLossesSlots& in)
      : s(sizes),
        frame_segment(in.frame_segment.data_ptr<int64_t>()),
        label(in.segment_label.data_ptr<int64_t>()),
        count(in.segment_count.data_ptr<Acc>()),
        valid(in.segment_valid.data_ptr<bool>()),
        unit_embeddings(in.unit_embeddings.data_ptr<Acc>()),
        wa(in.absolute_weight.data_ptr<Acc>()),
        wr(in.relative_weight.data_ptr<Acc>()),
        scale(in.logit_scale.data_ptr<Acc>()[0]) {}
  const Acc* embedding(int64_t j) const { return unit_embeddings + al::clamp_index(label[j], s.K) * s.D; }
};

// cos_ij, d_ij (M, M) and ‖f_i‖ (M) of the segment features f (M, D): the forward's and the backward's.
template <typename Acc>
struct Pairs {
  std::vector<Acc> cos, dist, norm;
};
template <typename Acc>
Pairs<Acc> pairs_of(const CpuSlots<Acc>& c, const Acc* f) {
  const int64_t M = c.s.M, D = c.s.D;
  Pairs<Acc> p{std::vector<Acc>(M * M), std::vector<Acc>(M * M), std::vector<Acc>(M)};
  at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Acc* fi = f + i * D;
      for (int64_t j = 0; j < M; ++j) {
        const Acc *fj = f + j * D, *ej = c.embedding(j);
        al::PairSums<Acc> sums{Acc(0), Acc(0), Acc(0)};
        for (int64_t d = 0; d < D; ++d) sums.add(fi[d], fj[d], ej[d]);
        if (j == 0) p.norm[i] = std::sqrt(sums.nn);
        p.cos[i * M + j] = sums.dot / al::floored_norm(p.norm[i]);
        p.dist[i * M + j] = c.valid[i] && c.valid[j] ? al::distance_of(sums.sq) : Acc(0);
      }
    }
  });
  return p;
}

// rows = max(Σ valid, 1).
template <typename Acc>
Acc valid_rows(const CpuSlots<Acc>& c) {
  int64_t n = 0;
  for (int64_t i = 0; i < c.s.M; ++i) n += c.valid[i] ? 1 : 0;
  return n > 0 ? static_cast<Acc>(n) : Acc(1);
}

template <typename scalar_t>
void forward_cpu_impl(const ArisLossesInputs& in, ArisLossesForwardSetup& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const ArisLossesSizes& s = out.s;
  const CpuSlots<acc_t> c(s, in.slots);
  const int64_t M = s.M, D = s.D, T = s.T, C = s.C;
  const scalar_t* features = in.features.data_ptr<scalar_t>();
  const int64_t *video = in.segment_video.data_ptr<int64_t>(), *start = in.segment_start.data_ptr<int64_t>();
  acc_t* f = out.segment_features.data_ptr<acc_t>();
  // the segment means of the (N, C, T) features: f itself, or the head's input m
  acc_t* means = s.head ? out.segment_means.data_ptr<acc_t>() : f;
  at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const al::Range r = al::slot_range(start[i], c.count[i], T);
      const scalar_t* rows = features + al::clamp_index(video[i], s.N) * C * T;
      for (int64_t k = 0; k < C; ++k) {
        acc_t sum = acc_t(0);
        if (c.valid[i])
          for (int64_t t = r.lo; t < r.hi; ++t) sum += static_cast<acc_t>(rows[k * T + t]);
        means[i * C + k] = c.valid[i] ? sum / c.count[i] : acc_t(0);
      }
    }
  });
  if (s.head) {  // f_i = W m_i + b (valid slots), k in order
    const acc_t *w = in.head_weight.data_ptr<acc_t>(), *b = in.head_bias.data_ptr<acc_t>();
    at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        for (int64_t d = 0; d < D; ++d) {
          acc_t sum = b[d];
          for (int64_t k = 0; k < C; ++k) sum = al::mul_add(w[d * C + k], means[i * C + k], sum);
          f[i * D + d] = c.valid[i] ? sum : acc_t(0);
        }
    });
  }
  const Pairs<acc_t> p = pairs_of(c, f);
  acc_t dmax = acc_t(-1);
  for (const acc_t d : p.dist) dmax = al::nan_max(dmax, d);
  int64_t ties = 0;
  for (const acc_t d : p.dist) ties += d == dmax ? 1 : 0;
  acc_t* md = out.max_distance.data_ptr<acc_t>();
  md[0] = dmax;
  md[1] = static_cast<acc_t>(ties);
  const acc_t *lwa = in.absolute_log_weight.data_ptr<acc_t>(), *lwr = in.relative_log_weight.data_ptr<acc_t>();
  acc_t* row_lse = out.row_lse.data_ptr<acc_t>();
  std::vector<acc_t> kl(3 * M);
  at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      auto predictions = [&](int64_t j, acc_t (&x)[3]) {
        al::row_predictions(c.scale, p.cos[i * M + j], p.cos[j * M + i], p.dist[i * M + j], dmax,
                            al::bias_of<acc_t>(c.valid[i], c.valid[j]), x);
      };
      acc_t x[3], top[3], lse[3] = {acc_t(0), acc_t(0), acc_t(0)}, sums[3] = {acc_t(0), acc_t(0), acc_t(0)};
      for (int k = 0; k < 3; ++k) top[k] = -std::numeric_limits<acc_t>::infinity();
      for (int64_t j = 0; j < M; ++j) {
        predictions(j, x);
        for (int k = 0; k < 3; ++k) top[k] = al::nan_max(top[k], x[k]);
      }
      for (int64_t j = 0; j < M; ++j) {
        predictions(j, x);
        for (int k = 0; k < 3; ++k) lse[k] += std::exp(x[k] - top[k]);
      }
      for (int k = 0; k < 3; ++k) lse[k] = top[k] + std::log(lse[k]);
      for (int64_t j = 0; j < M; ++j) {
        predictions(j, x);
        const int64_t e = i * M + j;
        sums[0] += al::kl_entry(c.wa[e], lwa[e], x[0], lse[0]);
        sums[1] += al::kl_entry(c.wa[e], lwa[e], x[1], lse[1]);
        sums[2] += al::kl_entry(c.wr[e], lwr[e], x[2], lse[2]);
      }
      for (int k = 0; k < 3; ++k) {
        row_lse[k * M + i] = lse[k];
        kl[3 * i + k] = sums[k];
      }
    }
  });
  acc_t sums[3] = {acc_t(0), acc_t(0), acc_t(0)};
  for (int64_t i = 0; i < M; ++i)
    for (int k = 0; k < 3; ++k) sums[k] += kl[3 * i + k];
  const acc_t rows = valid_rows(c);
  acc_t* terms = out.terms.data_ptr<acc_t>();
  terms[0] = (sums[0] / rows + sums[1] / rows) / acc_t(2);
  terms[1] = sums[2] / rows;
}

template <typename scalar_t>
void backward_cpu_impl(const at::Tensor& grad_terms, const ArisLossesSlots& slots, const ArisLossesSaved& saved,
                       ArisLossesBackwardSetup& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const ArisLossesSizes& s = out.s;
  const CpuSlots<acc_t> c(s, slots);
  const int64_t M = s.M, D = s.D, T = s.T, C = s.C;
  const acc_t* f = saved.segment_features.data_ptr<acc_t>();
  const acc_t *lse = saved.row_lse.data_ptr<acc_t>(), *md = saved.max_distance.data_ptr<acc_t>();
  const acc_t* gt = grad_terms.data_ptr<acc_t>();
  const Pairs<acc_t> p = pairs_of(c, f);
  std::vector<acc_t> Wa(M, acc_t(0)), Wr(M, acc_t(0));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < M; ++j) {
      Wa[i] += c.wa[i * M + j];
      Wr[i] += c.wr[i * M + j];
    }
  const acc_t rows = valid_rows(c);
  const acc_t coef_a = gt[0] / (acc_t(2) * rows), coef_r = gt[1] / rows;
  // G_ij, H_ij and each row's Σ G cos, Σ H d
  std::vector<acc_t> G(M * M), H(M * M), row_sums(2 * M);
  at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      acc_t g_cos = acc_t(0), h_d = acc_t(0);
      for (int64_t j = 0; j < M; ++j) {
        const int64_t e = i * M + j;
        const al::AbsoluteEntry<acc_t> entry{c.scale * p.cos[e], al::bias_of<acc_t>(c.valid[i], c.valid[j]),
                                             al::bias_of<acc_t>(c.valid[j], c.valid[i]), lse[i], lse[M + j]};
        G[e] = al::absolute_grad(entry, Wa[i], Wa[j], c.wa[e], c.wa[j * M + i], coef_a);
        H[e] = al::relative_grad(al::similarity(p.dist[e], md[0]), entry.bias_ij, lse[2 * M + i], Wr[i], c.wr[e],
                                 coef_r);
        g_cos += G[e] * p.cos[e];
        h_d += H[e] * p.dist[e];
      }
      row_sums[2 * i] = g_cos;
      row_sums[2 * i + 1] = h_d;
    }
  });
  acc_t grad_scale = acc_t(0), sum_h_d = acc_t(0);
  for (int64_t i = 0; i < M; ++i) grad_scale += row_sums[2 * i], sum_h_d += row_sums[2 * i + 1];
  out.grad_logit_scale.data_ptr<acc_t>()[0] = grad_scale;
  const al::DistanceGrad<acc_t> dg = al::distance_grad(md[0], md[1], sum_h_d);
  // grad f_i (γ_i; each frame's share: / count_i without the head), 0 for padding
  std::vector<acc_t> slot_grad(M * D, acc_t(0));
  at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> g(D), rel(D);
    for (int64_t i = begin; i < end; ++i) {
      if (!c.valid[i]) continue;
      const acc_t *fi = f + i * D, norm = p.norm[i];
      std::fill(g.begin(), g.end(), acc_t(0));
      std::fill(rel.begin(), rel.end(), acc_t(0));
      for (int64_t j = 0; j < M; ++j) {
        const acc_t gij = G[i * M + j], *ej = c.embedding(j), *fj = f + j * D;
        const acc_t cij = al::pair_coefficient(H[i * M + j], H[j * M + i], p.dist[i * M + j], dg);
        for (int64_t d = 0; d < D; ++d) {
          g[d] = al::mul_add(gij, ej[d], g[d]);
          rel[d] = al::mul_add(cij, fi[d] - fj[d], rel[d]);
        }
      }
      acc_t fhat_dot_g = acc_t(0);
      for (int64_t d = 0; d < D; ++d) {
        g[d] *= c.scale;
        fhat_dot_g += al::unit_of(fi[d], norm) * g[d];
      }
      const acc_t share = s.head ? acc_t(1) : c.count[i];
      for (int64_t d = 0; d < D; ++d)
        slot_grad[i * D + d] =
            (al::through_normalize(g[d], al::unit_of(fi[d], norm), fhat_dot_g, norm) + rel[d]) / share;
    }
  });
  // what each frame of a slot gets: grad f_i / count_i, or with the head Wᵀ γ_i / count_i
  std::vector<acc_t> head_rows;
  const acc_t* frame_rows = slot_grad.data();
  if (s.head) {
    const acc_t *w = saved.head_weight.data_ptr<acc_t>(), *m = saved.segment_means.data_ptr<acc_t>();
    acc_t *gw = out.grad_head_weight.data_ptr<acc_t>(), *gb = out.grad_head_bias.data_ptr<acc_t>();
    at::parallel_for(0, D, 1, [&](int64_t begin, int64_t end) {  // grad W, grad b: slots in order
      for (int64_t d = begin; d < end; ++d) {
        acc_t bias = acc_t(0);
        for (int64_t k = 0; k < C; ++k) gw[d * C + k] = acc_t(0);
        for (int64_t i = 0; i < M; ++i) {
          const acc_t g = slot_grad[i * D + d];
          bias += g;
          for (int64_t k = 0; k < C; ++k) gw[d * C + k] = al::mul_add(g, m[i * C + k], gw[d * C + k]);
        }
        gb[d] = bias;
      }
    });
    head_rows.assign(M * C, acc_t(0));
    at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        for (int64_t k = 0; k < C; ++k) {
          acc_t sum = acc_t(0);
          for (int64_t d = 0; d < D; ++d) sum = al::mul_add(w[d * C + k], slot_grad[i * D + d], sum);
          head_rows[i * C + k] = sum / c.count[i];
        }
    });
    frame_rows = head_rows.data();
  }
  scalar_t* gf = out.grad_features.data_ptr<scalar_t>();
  at::parallel_for(0, s.N * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / C, k = row % C;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = c.frame_segment[n * T + t];
        gf[row * T + t] = static_cast<scalar_t>(i >= 0 && i < M ? frame_rows[i * C + k] : acc_t(0));
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> aris_losses_forward_cpu(
    const at::Tensor& features, const at::Tensor& frame_segment, const at::Tensor& segment_video,
    const at::Tensor& segment_start, const at::Tensor& segment_count, const at::Tensor& segment_valid,
    const at::Tensor& segment_label, const at::Tensor& unit_embeddings, const at::Tensor& logit_scale,
    const at::Tensor& absolute_weight, const at::Tensor& absolute_log_weight, const at::Tensor& relative_weight,
    const at::Tensor& relative_log_weight, const std::optional<at::Tensor>& head_weight,
    const std::optional<at::Tensor>& head_bias) {
  const ArisLossesInputs in{features,
                            {frame_segment, segment_count, segment_valid, segment_label, unit_embeddings, logit_scale,
                             absolute_weight, relative_weight},
                            segment_video,
                            segment_start,
                            absolute_log_weight,
                            relative_log_weight,
                            defined_or_empty(head_weight),
                            defined_or_empty(head_bias)};
  ArisLossesForwardSetup f = aris_losses_forward_setup(c10::DeviceType::CPU, in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "aris_losses_forward_cpu",
                                  [&] { forward_cpu_impl<scalar_t>(in, f); });
  return {f.terms, f.segment_features, f.row_lse, f.max_distance, f.segment_means};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> aris_losses_backward_cpu(
    const at::Tensor& grad_terms, const at::Tensor& frame_segment, const at::Tensor& segment_count,
    const at::Tensor& segment_valid, const at::Tensor& segment_label, const at::Tensor& unit_embeddings,
    const at::Tensor& logit_scale, const at::Tensor& absolute_weight, const at::Tensor& relative_weight,
    const at::Tensor& segment_features, const at::Tensor& row_lse, const at::Tensor& max_distance,
    const std::optional<at::Tensor>& head_weight, const at::Tensor& segment_means, at::ScalarType features_dtype) {
  const ArisLossesSlots slots{frame_segment, segment_count, segment_valid,   segment_label,
                              unit_embeddings, logit_scale, absolute_weight, relative_weight};
  const ArisLossesSaved saved{segment_features, row_lse, max_distance, defined_or_empty(head_weight), segment_means};
  ArisLossesBackwardSetup b =
      aris_losses_backward_setup(c10::DeviceType::CPU, grad_terms, slots, saved, features_dtype);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features_dtype, "aris_losses_backward_cpu",
                                  [&] { backward_cpu_impl<scalar_t>(grad_terms, slots, saved, b); });
  return {b.grad_features, b.grad_logit_scale, b.grad_head_weight, b.grad_head_bias};
}

}  // namespace trgnet

TORCH_LIBRARY_FRAGMENT(trgnet, m) {
  m.def(
      "aris_losses(Tensor features, Tensor frame_segment, Tensor segment_video, Tensor segment_start,"
      " Tensor segment_count, Tensor segment_valid, Tensor segment_label, Tensor unit_embeddings, Tensor logit_scale,"
      " Tensor absolute_weight, Tensor absolute_log_weight, Tensor relative_weight, Tensor relative_log_weight,"
      " Tensor? head_weight, Tensor? head_bias)"
      " -> (Tensor terms, Tensor segment_features, Tensor row_lse, Tensor max_distance, Tensor segment_means)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "aris_losses_backward(Tensor grad_terms, Tensor frame_segment, Tensor segment_count, Tensor segment_valid,"
      " Tensor segment_label, Tensor unit_embeddings, Tensor logit_scale, Tensor absolute_weight,"
      " Tensor relative_weight, Tensor segment_features, Tensor row_lse, Tensor max_distance, Tensor? head_weight,"
      " Tensor segment_means, ScalarType features_dtype)"
      " -> (Tensor grad_features, Tensor grad_logit_scale, Tensor grad_head_weight, Tensor grad_head_bias)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(trgnet, CPU, m) {
  m.impl("aris_losses", &trgnet::aris_losses_forward_cpu);
  m.impl("aris_losses_backward", &trgnet::aris_losses_backward_cpu);
}
