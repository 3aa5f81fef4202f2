// trgnet::multiscale_graph_conv: op schemas, the argument setup shared with the CUDA dispatch
// (multiscale_graph_conv.h), and the CPU kernels.
//
// The CPU kernels run the frame-level math of kernels/multiscale_graph_conv.cuh (the same code the
// CUDA kernels' per-element functions come from), one (n, t) frame per task of at::parallel_for.
// The backward's sums over (n, t) (dA, dW, db) are taken over fixed chunks of frames, each summed
// in frame order into its own partial, then the partials are added in chunk order: the result
// does not depend on the number of threads.
#include "multiscale_graph_conv.h"

#include <algorithm>
#include <string>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../kernels/multiscale_graph_conv.cuh"
#include "checks.h"

namespace trgnet {
namespace {

constexpr const char* kForwardOp = "trgnet::multiscale_graph_conv";
constexpr const char* kBackwardOp = "trgnet::multiscale_graph_conv_backward";

using checks::shape_str;

// x (N, C, T, V), adjacency (S*V, V), weight (C_out, S*C), bias (C_out) unless null.
void check_forward_inputs(const char* op, const at::Tensor& x, const at::Tensor& adjacency, const at::Tensor& weight,
                          const at::Tensor* bias) {
  checks::check_dim(op, "x", x, 4, "(N, C, T, V)");
  checks::check_supported_float(op, "x", x);
  const int64_t C = x.size(1), V = x.size(3);
  TORCH_CHECK(C >= 1 && V >= 1, op, ": argument 'x': expected C >= 1 and V >= 1 in (N, C, T, V), got shape ",
              shape_str(x.sizes()));
  TORCH_CHECK(adjacency.dim() == 2 && adjacency.size(1) == V && adjacency.size(0) >= V && adjacency.size(0) % V == 0,
              op, ": argument 'adjacency': expected shape (S*V, V) with V = ", std::to_string(V),
              " (from x) and S >= 1, got ", shape_str(adjacency.sizes()));
  const int64_t S = adjacency.size(0) / V;
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) >= 1 && weight.size(1) == S * C, op,
              ": argument 'weight': expected shape (C_out, S*C) = (C_out, ", std::to_string(S * C),
              ") with S = ", std::to_string(S), ", C = ", std::to_string(C), " and C_out >= 1, got ",
              shape_str(weight.sizes()));
  checks::check_contiguous(op, "x", x);
  checks::check_like(op, "adjacency", adjacency, x, "x");
  checks::check_like(op, "weight", weight, x, "x");
  if (bias != nullptr) {
    checks::check_shape(op, "bias", *bias, {weight.size(0)}, "(C_out,)");
    checks::check_like(op, "bias", *bias, x, "x");
  }
}

void check_backward_inputs(const char* op, const at::Tensor& grad_out, const at::Tensor& x,
                           const at::Tensor& adjacency, const at::Tensor& weight) {
  check_forward_inputs(op, x, adjacency, weight, nullptr);
  checks::check_shape(op, "grad_out", grad_out, {x.size(0), weight.size(0), x.size(2), x.size(3)},
                      "(N, C_out, T, V) of the output");
  checks::check_like(op, "grad_out", grad_out, x, "x");
}

}  // namespace

MultiscaleGraphConvForwardSetup multiscale_graph_conv_forward_setup(c10::DeviceType device, const at::Tensor& x,
                                                                    const at::Tensor& adjacency,
                                                                    const at::Tensor& weight, const at::Tensor& bias) {
  check_forward_inputs(kForwardOp, x, adjacency, weight, &bias);
  checks::check_device_type(kForwardOp, "x", x, device);
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  const int64_t S = adjacency.size(0) / V, O = weight.size(0);
  return {kForwardOp, N, C, T, V, S, O, at::empty({N, O, T, V}, x.options())};
}

MultiscaleGraphConvBackwardSetup multiscale_graph_conv_backward_setup(c10::DeviceType device,
                                                                      const at::Tensor& grad_out, const at::Tensor& x,
                                                                      const at::Tensor& adjacency,
                                                                      const at::Tensor& weight) {
  check_backward_inputs(kBackwardOp, grad_out, x, adjacency, weight);
  checks::check_device_type(kBackwardOp, "x", x, device);
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  const int64_t S = adjacency.size(0) / V, O = weight.size(0);
  return {kBackwardOp, N, C, T, V, S, O, at::empty(x.sizes(), x.options()),
          at::empty(adjacency.sizes(), adjacency.options()), at::empty(weight.sizes(), weight.options()),
          at::empty({O}, weight.options())};
}

// ---------------------------------------------------------------------------------------------
// CPU kernels

namespace {

// Frames per chunk of the backward's (n, t) reduction (fixed: the partials do not depend on the
// number of threads).
constexpr int64_t kFramesPerChunk = 64;

template <typename acc_t, typename scalar_t>
std::vector<acc_t> to_acc_vector(const scalar_t* p, int64_t n) {
  std::vector<acc_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<acc_t>(p[i]);
  return out;
}

// X[n, :, t, :] -> (C, V) rows in acc_t.
template <typename acc_t, typename scalar_t>
void gather_frame(const scalar_t* x, int64_t n, int64_t t, int64_t C, int64_t T, int64_t V, acc_t* out) {
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* row = x + ((n * C + c) * T + t) * V;
    for (int64_t v = 0; v < V; ++v) out[c * V + v] = static_cast<acc_t>(row[v]);
  }
}

template <typename acc_t, typename scalar_t>
void scatter_frame(const acc_t* in, int64_t n, int64_t t, int64_t C, int64_t T, int64_t V, scalar_t* x) {
  for (int64_t c = 0; c < C; ++c) {
    scalar_t* row = x + ((n * C + c) * T + t) * V;
    for (int64_t v = 0; v < V; ++v) row[v] = static_cast<scalar_t>(in[c * V + v]);
  }
}

template <typename scalar_t>
void forward_cpu_kernel(const scalar_t* x, const scalar_t* a, const scalar_t* w, const scalar_t* b, int64_t N,
                        int64_t C, int64_t T, int64_t V, int64_t S, int64_t O, scalar_t* y) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto A = to_acc_vector<acc_t>(a, S * V * V);
  const auto W = to_acc_vector<acc_t>(w, O * S * C);
  const auto B = to_acc_vector<acc_t>(b, O);
  at::parallel_for(0, N * T, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xt(C * V), z(C * V), yt(O * V);
    for (int64_t nt = begin; nt < end; ++nt) {
      const int64_t n = nt / T, t = nt % T;
      gather_frame(x, n, t, C, T, V, xt.data());
      msgc::forward_frame(xt.data(), A.data(), W.data(), B.data(), static_cast<int>(C), static_cast<int>(V),
                          static_cast<int>(S), static_cast<int>(O), z.data(), yt.data());
      scatter_frame(yt.data(), n, t, O, T, V, y);
    }
  });
}

template <typename scalar_t>
void backward_cpu_kernel(const scalar_t* g, const scalar_t* x, const scalar_t* a, const scalar_t* w, int64_t N,
                         int64_t C, int64_t T, int64_t V, int64_t S, int64_t O, scalar_t* dx, scalar_t* da,
                         scalar_t* dw, scalar_t* db) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto A = to_acc_vector<acc_t>(a, S * V * V);
  const auto W = to_acc_vector<acc_t>(w, O * S * C);
  const int64_t frames = N * T;
  const int64_t chunks = (frames + kFramesPerChunk - 1) / kFramesPerChunk;
  const int64_t nA = S * V * V, nW = O * S * C, E = nA + nW + O;
  std::vector<acc_t> partial(static_cast<size_t>(chunks * E), acc_t(0));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xt(C * V), gt(O * V), h(C * V), z(C * V), dxt(C * V);
    for (int64_t k = begin; k < end; ++k) {
      acc_t* p = partial.data() + k * E;
      const int64_t f_end = std::min(frames, (k + 1) * kFramesPerChunk);
      for (int64_t f = k * kFramesPerChunk; f < f_end; ++f) {
        const int64_t n = f / T, t = f % T;
        gather_frame(x, n, t, C, T, V, xt.data());
        gather_frame(g, n, t, O, T, V, gt.data());
        msgc::backward_frame(xt.data(), gt.data(), A.data(), W.data(), static_cast<int>(C), static_cast<int>(V),
                             static_cast<int>(S), static_cast<int>(O), h.data(), z.data(), dxt.data(), p, p + nA,
                             p + nA + nW);
        scatter_frame(dxt.data(), n, t, C, T, V, dx);
      }
    }
  });
  // fixed-order sum of the chunk partials
  at::parallel_for(0, E, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      acc_t s = acc_t(0);
      for (int64_t k = 0; k < chunks; ++k) s += partial[k * E + i];
      if (i < nA)
        da[i] = static_cast<scalar_t>(s);
      else if (i < nA + nW)
        dw[i - nA] = static_cast<scalar_t>(s);
      else
        db[i - nA - nW] = static_cast<scalar_t>(s);
    }
  });
}

}  // namespace

at::Tensor multiscale_graph_conv_forward_cpu(const at::Tensor& x, const at::Tensor& adjacency,
                                             const at::Tensor& weight, const at::Tensor& bias) {
  const MultiscaleGraphConvForwardSetup s =
      multiscale_graph_conv_forward_setup(c10::DeviceType::CPU, x, adjacency, weight, bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "multiscale_graph_conv_forward_cpu", [&] {
    forward_cpu_kernel<scalar_t>(x.data_ptr<scalar_t>(), adjacency.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(),
                                 bias.data_ptr<scalar_t>(), s.N, s.C, s.T, s.V, s.S, s.O, s.out.data_ptr<scalar_t>());
  });
  return s.outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multiscale_graph_conv_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& adjacency, const at::Tensor& weight) {
  const MultiscaleGraphConvBackwardSetup s =
      multiscale_graph_conv_backward_setup(c10::DeviceType::CPU, grad_out, x, adjacency, weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "multiscale_graph_conv_backward_cpu", [&] {
    backward_cpu_kernel<scalar_t>(grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                  adjacency.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), s.N, s.C, s.T, s.V, s.S,
                                  s.O, s.grad_x.data_ptr<scalar_t>(), s.grad_adjacency.data_ptr<scalar_t>(),
                                  s.grad_weight.data_ptr<scalar_t>(), s.grad_bias.data_ptr<scalar_t>());
  });
  return s.outputs();
}

}  // namespace trgnet

TORCH_LIBRARY_FRAGMENT(trgnet, m) {
  m.def("multiscale_graph_conv(Tensor x, Tensor adjacency, Tensor weight, Tensor bias) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def(
      "multiscale_graph_conv_backward(Tensor grad_out, Tensor x, Tensor adjacency, Tensor weight)"
      " -> (Tensor grad_x, Tensor grad_adjacency, Tensor grad_weight, Tensor grad_bias)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(trgnet, CPU, m) {
  m.impl("multiscale_graph_conv", &trgnet::multiscale_graph_conv_forward_cpu);
  m.impl("multiscale_graph_conv_backward", &trgnet::multiscale_graph_conv_backward_cpu);
}
