// trgnet::adaptive_graph_conv: op schemas, the argument setup shared with the CUDA dispatch
// (adaptive_graph_conv.h), and the CPU kernels.
//
// The CPU kernels run the frame-level math of kernels/adaptive_graph_conv.cuh (the same per-element
// functions the CUDA kernels use). Forward: one (n, t) frame per task of at::parallel_for, the frame
// graph built once per frame. Backward: (1) fixed chunks of (n, t) frames: dF, dp, dq, dX per frame,
// dbeta / dJ summed per chunk in frame order; (2) one (n, c) per task: dG over t in order. The
// chunk partials are added in chunk order: results do not depend on the number of threads.
#include "adaptive_graph_conv.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../kernels/adaptive_graph_conv.cuh"
#include "checks.h"

namespace trgnet {
namespace {

constexpr const char* kForwardOp = "trgnet::adaptive_graph_conv";
constexpr const char* kBackwardOp = "trgnet::adaptive_graph_conv_backward";

using checks::shape_str;

// x (N, C, T, V), p, q (N, T, V), beta (1,), channel_graph (N, C, V, V), joint_graph (V, V).
void check_forward_inputs(const char* op, const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                          const at::Tensor& beta, const at::Tensor& channel_graph, const at::Tensor& joint_graph) {
  checks::check_dim(op, "x", x, 4, "(N, C, T, V)");
  checks::check_supported_float(op, "x", x);
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  TORCH_CHECK(N >= 1 && C >= 1 && V >= 1, op, ": argument 'x': expected N, C, V >= 1 in (N, C, T, V), got shape ",
              shape_str(x.sizes()));
  checks::check_contiguous(op, "x", x);
  checks::check_shape(op, "p", p, {N, T, V}, "(N, T, V)");
  checks::check_like(op, "p", p, x, "x");
  checks::check_shape(op, "q", q, {N, T, V}, "(N, T, V)");
  checks::check_like(op, "q", q, x, "x");
  checks::check_shape(op, "beta", beta, {1}, "(1,)");
  checks::check_like(op, "beta", beta, x, "x");
  checks::check_shape(op, "channel_graph", channel_graph, {N, C, V, V}, "(N, C, V, V)");
  checks::check_like(op, "channel_graph", channel_graph, x, "x");
  checks::check_shape(op, "joint_graph", joint_graph, {V, V}, "(V, V)");
  checks::check_like(op, "joint_graph", joint_graph, x, "x");
}

void check_backward_inputs(const char* op, const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& p,
                           const at::Tensor& q, const at::Tensor& beta, const at::Tensor& channel_graph,
                           const at::Tensor& joint_graph) {
  check_forward_inputs(op, x, p, q, beta, channel_graph, joint_graph);
  checks::check_shape(op, "grad_out", grad_out, x.sizes(), "(N, C, T, V) of x");
  checks::check_like(op, "grad_out", grad_out, x, "x");
}

at::Tensor empty_like_input(const at::Tensor& t) { return at::empty(t.sizes(), t.options()); }

}  // namespace

AdaptiveGraphConvForwardSetup adaptive_graph_conv_forward_setup(c10::DeviceType device, const at::Tensor& x,
                                                                const at::Tensor& p, const at::Tensor& q,
                                                                const at::Tensor& beta,
                                                                const at::Tensor& channel_graph,
                                                                const at::Tensor& joint_graph) {
  check_forward_inputs(kForwardOp, x, p, q, beta, channel_graph, joint_graph);
  checks::check_device_type(kForwardOp, "x", x, device);
  return {kForwardOp, x.size(0), x.size(1), x.size(2), x.size(3), empty_like_input(x)};
}

AdaptiveGraphConvBackwardSetup adaptive_graph_conv_backward_setup(c10::DeviceType device, const at::Tensor& grad_out,
                                                                  const at::Tensor& x, const at::Tensor& p,
                                                                  const at::Tensor& q, const at::Tensor& beta,
                                                                  const at::Tensor& channel_graph,
                                                                  const at::Tensor& joint_graph) {
  check_backward_inputs(kBackwardOp, grad_out, x, p, q, beta, channel_graph, joint_graph);
  checks::check_device_type(kBackwardOp, "x", x, device);
  return {kBackwardOp, x.size(0), x.size(1), x.size(2), x.size(3),
          empty_like_input(x), empty_like_input(p), empty_like_input(q), empty_like_input(beta),
          empty_like_input(channel_graph), empty_like_input(joint_graph)};
}

// ---------------------------------------------------------------------------------------------
// CPU kernels

namespace {

constexpr int64_t kFramesPerChunk = 64;

// What the forward and the backward take of beta, G and J, in acc_t: beta, and
// gj[(n*C + c) * V*V + uv] = G[n, c, uv] + J[uv].
template <typename acc_t>
struct GraphTerms {
  acc_t beta;
  std::vector<acc_t> gj;
};

template <typename acc_t, typename scalar_t>
GraphTerms<acc_t> graph_terms(const scalar_t* beta, const scalar_t* G, const scalar_t* J, int64_t NC, int64_t VV) {
  std::vector<acc_t> gj(static_cast<size_t>(NC * VV));
  at::parallel_for(0, NC, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      for (int64_t j = 0; j < VV; ++j)
        gj[i * VV + j] = static_cast<acc_t>(G[i * VV + j]) + static_cast<acc_t>(J[j]);
  });
  return {static_cast<acc_t>(beta[0]), std::move(gj)};
}

template <typename acc_t, typename scalar_t>
void load(const scalar_t* src, int64_t n, acc_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i]);
}

template <typename scalar_t>
void forward_cpu_kernel(const scalar_t* x, const scalar_t* p, const scalar_t* q, const scalar_t* beta,
                        const scalar_t* G, const scalar_t* J, int64_t N, int64_t C, int64_t T, int64_t V,
                        scalar_t* y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t VV = V * V;
  const int Vi = static_cast<int>(V);
  const auto gt = graph_terms<acc_t>(beta, G, J, N * C, VV);
  at::parallel_for(0, N * T, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> pt(V), qt(V), bf(VV), xr(V), yr(V);
    for (int64_t nt = begin; nt < end; ++nt) {
      const int64_t n = nt / T, t = nt % T;
      load(p + nt * V, V, pt.data());
      load(q + nt * V, V, qt.data());
      agc::build_frame_graph(pt.data(), qt.data(), gt.beta, Vi, bf.data(), static_cast<acc_t*>(nullptr));
      for (int64_t c = 0; c < C; ++c) {
        const int64_t row = ((n * C + c) * T + t) * V;
        load(x + row, V, xr.data());
        agc::aggregate_frame(bf.data(), gt.gj.data() + (n * C + c) * VV, xr.data(), Vi, yr.data());
        for (int64_t u = 0; u < V; ++u) y[row + u] = static_cast<scalar_t>(yr[u]);
      }
    }
  });
}

template <typename scalar_t>
void backward_cpu_kernel(const scalar_t* g, const scalar_t* x, const scalar_t* p, const scalar_t* q,
                         const scalar_t* beta, const scalar_t* G, const scalar_t* J, int64_t N, int64_t C, int64_t T,
                         int64_t V, scalar_t* dx, scalar_t* dp, scalar_t* dq, scalar_t* dbeta, scalar_t* dG,
                         scalar_t* dJ) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t VV = V * V;
  const int Vi = static_cast<int>(V);
  const auto gt = graph_terms<acc_t>(beta, G, J, N * C, VV);
  const int64_t frames = N * T;
  const int64_t chunks = (frames + kFramesPerChunk - 1) / kFramesPerChunk;
  const int64_t E = VV;  // dJ per chunk
  std::vector<acc_t> partial(static_cast<size_t>(chunks * E), acc_t(0));
  std::vector<double> dbeta_partial(static_cast<size_t>(chunks), 0.0);  // dbeta per chunk, in double
  // (1) per frame: dF, dp, dq, dX; dbeta and dJ per chunk
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> pt(V), qt(V), bf(VV), th(VV), dF(VV), xr(V), gr(V), dxr(V), dpt(V), dqt(V);
    for (int64_t k = begin; k < end; ++k) {
      acc_t* part = partial.data() + k * E;
      const int64_t f_end = std::min(frames, (k + 1) * kFramesPerChunk);
      for (int64_t f = k * kFramesPerChunk; f < f_end; ++f) {
        const int64_t n = f / T, t = f % T;
        load(p + f * V, V, pt.data());
        load(q + f * V, V, qt.data());
        agc::build_frame_graph(pt.data(), qt.data(), gt.beta, Vi, bf.data(), th.data());
        std::fill(dF.begin(), dF.end(), acc_t(0));
        for (int64_t c = 0; c < C; ++c) {
          const int64_t row = ((n * C + c) * T + t) * V;
          load(x + row, V, xr.data());
          load(g + row, V, gr.data());
          for (int64_t u = 0; u < V; ++u)
            for (int64_t v = 0; v < V; ++v) dF[u * V + v] += gr[u] * xr[v];
          agc::aggregate_frame_transposed(bf.data(), gt.gj.data() + (n * C + c) * VV, gr.data(), Vi, dxr.data());
          for (int64_t v = 0; v < V; ++v) dx[row + v] = static_cast<scalar_t>(dxr[v]);
        }
        dbeta_partial[k] += agc::frame_graph_backward(dF.data(), th.data(), gt.beta, Vi, dpt.data(), dqt.data());
        for (int64_t i = 0; i < VV; ++i) part[i] += dF[i];
        for (int64_t v = 0; v < V; ++v) {
          dp[f * V + v] = static_cast<scalar_t>(dpt[v]);
          dq[f * V + v] = static_cast<scalar_t>(dqt[v]);
        }
      }
    }
  });
  // (2) dG per (n, c), frames in order
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(VV), xr(V), gr(V);
    for (int64_t nc = begin; nc < end; ++nc) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t t = 0; t < T; ++t) {
        load(x + (nc * T + t) * V, V, xr.data());
        load(g + (nc * T + t) * V, V, gr.data());
        for (int64_t u = 0; u < V; ++u)
          for (int64_t v = 0; v < V; ++v) acc[u * V + v] += gr[u] * xr[v];
      }
      for (int64_t i = 0; i < VV; ++i) dG[nc * VV + i] = static_cast<scalar_t>(acc[i]);
    }
  });
  // fixed-order sum of the chunk partials
  for (int64_t i = 0; i < E; ++i) {
    acc_t s = acc_t(0);
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * E + i];
    dJ[i] = static_cast<scalar_t>(s);
  }
  double sb = 0.0;
  for (int64_t k = 0; k < chunks; ++k) sb += dbeta_partial[k];
  dbeta[0] = static_cast<scalar_t>(static_cast<acc_t>(sb));
}

}  // namespace

at::Tensor adaptive_graph_conv_forward_cpu(const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                                           const at::Tensor& beta, const at::Tensor& channel_graph,
                                           const at::Tensor& joint_graph) {
  const AdaptiveGraphConvForwardSetup s =
      adaptive_graph_conv_forward_setup(c10::DeviceType::CPU, x, p, q, beta, channel_graph, joint_graph);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adaptive_graph_conv_forward_cpu", [&] {
    forward_cpu_kernel<scalar_t>(x.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(),
                                 beta.data_ptr<scalar_t>(), channel_graph.data_ptr<scalar_t>(),
                                 joint_graph.data_ptr<scalar_t>(), s.N, s.C, s.T, s.V, s.out.data_ptr<scalar_t>());
  });
  return s.outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> adaptive_graph_conv_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& p, const at::Tensor& q, const at::Tensor& beta,
    const at::Tensor& channel_graph, const at::Tensor& joint_graph) {
  const AdaptiveGraphConvBackwardSetup s =
      adaptive_graph_conv_backward_setup(c10::DeviceType::CPU, grad_out, x, p, q, beta, channel_graph, joint_graph);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adaptive_graph_conv_backward_cpu", [&] {
    backward_cpu_kernel<scalar_t>(grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(),
                                  q.data_ptr<scalar_t>(), beta.data_ptr<scalar_t>(),
                                  channel_graph.data_ptr<scalar_t>(), joint_graph.data_ptr<scalar_t>(), s.N, s.C, s.T,
                                  s.V, s.grad_x.data_ptr<scalar_t>(), s.grad_p.data_ptr<scalar_t>(),
                                  s.grad_q.data_ptr<scalar_t>(), s.grad_beta.data_ptr<scalar_t>(),
                                  s.grad_channel_graph.data_ptr<scalar_t>(), s.grad_joint_graph.data_ptr<scalar_t>());
  });
  return s.outputs();
}

}  // namespace trgnet

TORCH_LIBRARY_FRAGMENT(trgnet, m) {
  m.def(
      "adaptive_graph_conv(Tensor x, Tensor p, Tensor q, Tensor beta, Tensor channel_graph, Tensor joint_graph)"
      " -> Tensor",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "adaptive_graph_conv_backward(Tensor grad_out, Tensor x, Tensor p, Tensor q, Tensor beta,"
      " Tensor channel_graph, Tensor joint_graph) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(trgnet, CPU, m) {
  m.impl("adaptive_graph_conv", &trgnet::adaptive_graph_conv_forward_cpu);
  m.impl("adaptive_graph_conv_backward", &trgnet::adaptive_graph_conv_backward_cpu);
}
