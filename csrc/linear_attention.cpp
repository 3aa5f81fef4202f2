// trgnet::linear_attention: op schemas, the argument setup shared with the CUDA dispatch (linear_attention.h),
// and the CPU kernels.
//
// The CPU kernels run the per-element math of kernels/linear_attention.cuh (the same code the
// CUDA kernels use), one (n, h) pair per task of at::parallel_for, frames in order (deterministic).
#include "linear_attention.h"

#include <string>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../kernels/linear_attention.cuh"
#include "checks.h"

namespace trgnet {
namespace {

constexpr const char* kForwardOp = "trgnet::linear_attention";
constexpr const char* kBackwardOp = "trgnet::linear_attention_backward";

using checks::check_contiguous;
using checks::check_shape;
using checks::shape_str;

// Accumulator / state dtype for an input dtype: double for double, float otherwise.
at::ScalarType state_dtype(at::ScalarType input) { return checks::accumulator_dtype(input); }

void check_forward_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const std::optional<at::Tensor>& key_mask) {
  TORCH_CHECK(q.dim() == 4, op, ": argument 'q': expected a 4-D tensor of shape (N, T, H, D), got shape ",
              shape_str(q.sizes()));
  checks::check_supported_float(op, "q", q);
  const int64_t N = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3);
  TORCH_CHECK(D >= 1, op, ": argument 'q': expected head dim D >= 1, got shape ", shape_str(q.sizes()));
  check_shape(op, "k", k, q.sizes(), "(N, T, H, D) of q");
  TORCH_CHECK(v.dim() == 4 && v.size(0) == N && v.size(1) == T && v.size(2) == H && v.size(3) >= 1, op,
              ": argument 'v': expected shape (N, T, H, E) with (N, T, H) = ", shape_str({N, T, H}),
              " of q and E >= 1, got ", shape_str(v.sizes()));
  checks::check_same_device_dtype(op, "k", k, q, "q", q.scalar_type(), "same as q");
  checks::check_same_device_dtype(op, "v", v, q, "q", q.scalar_type(), "same as q");
  check_contiguous(op, "q", q);
  check_contiguous(op, "k", k);
  check_contiguous(op, "v", v);
  if (key_mask.has_value()) {
    const at::Tensor& m = *key_mask;
    check_shape(op, "key_mask", m, {N, T}, "(N, T)");
    checks::check_same_device_dtype(op, "key_mask", m, q, "q", at::kBool, "a bool mask, True = valid frame");
    check_contiguous(op, "key_mask", m);
  }
}

void check_backward_inputs(const char* op, const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, const std::optional<at::Tensor>& key_mask,
                           const at::Tensor& kv_state, const at::Tensor& key_sum) {
  check_forward_inputs(op, q, k, v, key_mask);
  const int64_t N = q.size(0), H = q.size(2), D = q.size(3), E = v.size(3);
  const at::ScalarType state = state_dtype(q.scalar_type());
  check_shape(op, "grad_out", grad_out, v.sizes(), "(N, T, H, E) of the output");
  checks::check_same_device_dtype(op, "grad_out", grad_out, q, "q", q.scalar_type(), "same as q");
  check_contiguous(op, "grad_out", grad_out);
  check_shape(op, "kv_state", kv_state, {N, H, D, E}, "(N, H, D, E)");
  checks::check_same_device_dtype(op, "kv_state", kv_state, q, "q", state, "float64 for float64 inputs, else float32");
  check_contiguous(op, "kv_state", kv_state);
  check_shape(op, "key_sum", key_sum, {N, H, D}, "(N, H, D)");
  checks::check_same_device_dtype(op, "key_sum", key_sum, q, "q", state, "float64 for float64 inputs, else float32");
  check_contiguous(op, "key_sum", key_sum);
}

const bool* mask_ptr(const std::optional<at::Tensor>& key_mask) {
  return key_mask.has_value() ? key_mask->data_ptr<bool>() : nullptr;
}

}  // namespace

LinearAttentionForwardSetup linear_attention_forward_setup(c10::DeviceType device, const at::Tensor& q,
                                                           const at::Tensor& k, const at::Tensor& v,
                                                           const std::optional<at::Tensor>& key_mask) {
  check_forward_inputs(kForwardOp, q, k, v, key_mask);
  checks::check_device_type(kForwardOp, "q", q, device);
  const int64_t N = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), E = v.size(3);
  const auto state_opts = q.options().dtype(state_dtype(q.scalar_type()));
  return {kForwardOp, N, T, H, D, E, mask_ptr(key_mask), at::empty({N, T, H, E}, q.options()),
          at::empty({N, H, D, E}, state_opts), at::empty({N, H, D}, state_opts)};
}

LinearAttentionBackwardSetup linear_attention_backward_setup(c10::DeviceType device, const at::Tensor& grad_out,
                                                             const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v,
                                                             const std::optional<at::Tensor>& key_mask,
                                                             const at::Tensor& kv_state, const at::Tensor& key_sum) {
  check_backward_inputs(kBackwardOp, grad_out, q, k, v, key_mask, kv_state, key_sum);
  checks::check_device_type(kBackwardOp, "q", q, device);
  const int64_t N = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), E = v.size(3);
  return {kBackwardOp, N, T, H, D, E, mask_ptr(key_mask), at::empty(q.sizes(), q.options()), at::empty(k.sizes(), k.options()),
          at::empty(v.sizes(), v.options())};
}

// ---------------------------------------------------------------------------------------------
// CPU kernels

namespace {

template <typename scalar_t>
void forward_cpu_kernel(const scalar_t* q, const scalar_t* k, const scalar_t* v, const bool* mask, int64_t N,
                        int64_t T, int64_t H, int D, int E, double eps, scalar_t* out,
                        at::opmath_type<scalar_t>* kv, at::opmath_type<scalar_t>* ks) {
  using acc_t = at::opmath_type<scalar_t>;
  const int W = E + 1;
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> S(static_cast<size_t>(D) * W), scratch(static_cast<size_t>(D + W));
    for (int64_t nh = begin; nh < end; ++nh) {
      const int64_t n = nh / H, h = nh % H;
      std::fill(S.begin(), S.end(), acc_t(0));
      for (int64_t t = 0; t < T; ++t) {
        const int64_t row = (n * T + t) * H + h;
        const bool m = mask == nullptr || mask[n * T + t];
        la::accumulate_frame(k + row * D, v + row * E, m, D, E, S.data(), scratch.data());
      }
      for (int d = 0; d < D; ++d) {
        for (int e = 0; e < E; ++e) kv[(nh * D + d) * E + e] = S[d * W + e];
        ks[nh * D + d] = S[d * W + E];
        S[d * W + E] += static_cast<acc_t>(eps);
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t row = (n * T + t) * H + h;
        la::output_frame(q + row * D, S.data(), D, E, scratch.data(), out + row * E);
      }
    }
  });
}

template <typename scalar_t>
void backward_cpu_kernel(const scalar_t* g, const scalar_t* q, const scalar_t* k, const scalar_t* v,
                         const bool* mask, const at::opmath_type<scalar_t>* kv,
                         const at::opmath_type<scalar_t>* ks, int64_t N, int64_t T, int64_t H, int D, int E,
                         double eps, scalar_t* dq, scalar_t* dk, scalar_t* dv) {
  using acc_t = at::opmath_type<scalar_t>;
  const int W = E + 1;
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> S(static_cast<size_t>(D) * W), dS(static_cast<size_t>(D) * W);
    std::vector<acc_t> scratch(static_cast<size_t>(D + 2 * W + E));
    for (int64_t nh = begin; nh < end; ++nh) {
      const int64_t n = nh / H, h = nh % H;
      for (int d = 0; d < D; ++d) {
        for (int e = 0; e < E; ++e) S[d * W + e] = kv[(nh * D + d) * E + e];
        S[d * W + E] = ks[nh * D + d] + static_cast<acc_t>(eps);
      }
      std::fill(dS.begin(), dS.end(), acc_t(0));
      for (int64_t t = 0; t < T; ++t) {
        const int64_t row = (n * T + t) * H + h;
        la::backward_query_frame(g + row * E, q + row * D, S.data(), D, E, scratch.data(), dS.data(),
                                 dq + row * D);
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t row = (n * T + t) * H + h;
        const bool m = mask == nullptr || mask[n * T + t];
        la::backward_key_frame(k + row * D, v + row * E, m, dS.data(), D, E, scratch.data(), dk + row * D,
                               dv + row * E);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                                                            const at::Tensor& v,
                                                                            const std::optional<at::Tensor>& key_mask,
                                                                            double eps) {
  const LinearAttentionForwardSetup s = linear_attention_forward_setup(c10::DeviceType::CPU, q, k, v, key_mask);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "linear_attention_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_cpu_kernel<scalar_t>(q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), s.key_mask,
                                 s.N, s.T, s.H, static_cast<int>(s.D), static_cast<int>(s.E), eps,
                                 s.out.data_ptr<scalar_t>(), s.kv_state.data_ptr<acc_t>(),
                                 s.key_sum.data_ptr<acc_t>());
  });
  return s.outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& key_mask, const at::Tensor& kv_state, const at::Tensor& key_sum, double eps) {
  const LinearAttentionBackwardSetup s =
      linear_attention_backward_setup(c10::DeviceType::CPU, grad_out, q, k, v, key_mask, kv_state, key_sum);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "linear_attention_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_cpu_kernel<scalar_t>(grad_out.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
                                  v.data_ptr<scalar_t>(), s.key_mask, kv_state.data_ptr<acc_t>(),
                                  key_sum.data_ptr<acc_t>(), s.N, s.T, s.H, static_cast<int>(s.D),
                                  static_cast<int>(s.E), eps, s.grad_q.data_ptr<scalar_t>(),
                                  s.grad_k.data_ptr<scalar_t>(), s.grad_v.data_ptr<scalar_t>());
  });
  return s.outputs();
}

}  // namespace trgnet

TORCH_LIBRARY_FRAGMENT(trgnet, m) {
  m.def(
      "linear_attention(Tensor q, Tensor k, Tensor v, Tensor? key_mask, float eps)"
      " -> (Tensor out, Tensor kv_state, Tensor key_sum)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "linear_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor? key_mask,"
      " Tensor kv_state, Tensor key_sum, float eps) -> (Tensor grad_q, Tensor grad_k, Tensor grad_v)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(trgnet, CPU, m) {
  m.impl("linear_attention", &trgnet::linear_attention_forward_cpu);
  m.impl("linear_attention_backward", &trgnet::linear_attention_backward_cpu);
}
