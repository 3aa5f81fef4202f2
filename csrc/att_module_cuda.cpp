// CUDA dispatch of trgnet::att_module: the argument setup of att_module.h (shared with the CPU implementation), the
// CUDA kernels' size limit and workspace, and a call of the launchers of kernels/att_module.h on the current stream.
// Compiled in CUDA builds only.
#include "att_module.h"

#include <string>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../kernels/att_module.h"
#include "cuda_utils.h"

namespace trgnet {
namespace {

// The channel count the CUDA kernels take (the CPU kernels take any).
void check_cuda_limits(const AttModuleSizes& s) {
  // numbers as strings: see checks.h
  TORCH_CHECK(s.C <= am::kMaxChannels, s.op, ": the CUDA kernels support at most ", std::to_string(am::kMaxChannels),
              " channels, got C = ", std::to_string(s.C));
}

// The launchers' workspace of one direction, in the state dtype.
at::Tensor workspace(const AttModuleSizes& s, const at::Tensor& state, bool backward) {
  return at::empty({am::workspace_elems(s.B, s.C, s.T, s.N, s.H, static_cast<int>(state.element_size()), backward)},
                   state.options());
}

template <typename T>
const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// The launchers' inputs (CUDA storage types) of a call.
template <typename scalar_t>
am::Inputs<typename CudaType<scalar_t>::type, at::opmath_type<scalar_t>> inputs(
    const AttModuleSizes& s, const at::Tensor& x, const std::optional<at::Tensor>& values,
    const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& cu_seqlens,
    const std::vector<at::Tensor>& weights, const at::Tensor& alpha, const std::optional<at::Tensor>& dropout_seed) {
  using In = typename CudaType<scalar_t>::type;
  am::Inputs<In, at::opmath_type<scalar_t>> in{
      cptr<scalar_t>(x),
      reinterpret_cast<const In*>(optional_ptr<scalar_t>(values)),
      reinterpret_cast<const In*>(optional_ptr<scalar_t>(mask)),
      optional_ptr<int32_t>(cu_seqlens),
      {},
      alpha.data_ptr<at::opmath_type<scalar_t>>(),
      optional_ptr<int64_t>(dropout_seed),
      s.B, s.C, s.T, s.N, s.H, s.dilation, s.norm_eps, s.attention_eps, s.attention_dropout, s.dropout};
  for (int i = 0; i < kAttModuleWeights; ++i) in.weights[i] = cptr<scalar_t>(weights[i]);
  return in;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> att_module_forward_cuda(
    const at::Tensor& x, const std::optional<at::Tensor>& values, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight, const at::Tensor& conv_bias,
    const at::Tensor& query_weight, const at::Tensor& query_bias, const at::Tensor& key_weight,
    const at::Tensor& key_bias, const at::Tensor& value_weight, const at::Tensor& value_bias,
    const at::Tensor& out_weight, const at::Tensor& out_bias, const at::Tensor& conv_out_weight,
    const at::Tensor& conv_out_bias, const at::Tensor& alpha, const std::optional<at::Tensor>& dropout_seed,
    int64_t dilation, int64_t heads, double norm_eps, double attention_eps, double attention_dropout,
    double dropout) {
  const std::vector<at::Tensor> weights{conv_weight, conv_bias,  query_weight, query_bias, key_weight, key_bias,
                                        value_weight, value_bias, out_weight, out_bias, conv_out_weight,
                                        conv_out_bias};
  AttModuleForwardSetup f =
      att_module_forward_setup(c10::DeviceType::CUDA, false, x, values, mask, cu_seqlens, weights, alpha, dropout_seed,
                               dilation, heads, norm_eps, attention_eps, attention_dropout, dropout);
  check_cuda_limits(f.s);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor ws = workspace(f.s, f.kv_state, false);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "att_module_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = launch_att_module_forward(
        am::ForwardArgs<typename CudaType<scalar_t>::type, acc_t>{
            inputs<scalar_t>(f.s, x, values, mask, cu_seqlens, weights, alpha, dropout_seed), mptr<scalar_t>(f.out),
            f.norm_stats.data_ptr<acc_t>(), f.kv_state.data_ptr<acc_t>(), f.key_sum.data_ptr<acc_t>(),
            ws.data_ptr<acc_t>()},
        stream);
  });
  check_launch(f.s.op, err);
  return f.outputs();
}

AttModuleGrads att_module_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const std::optional<at::Tensor>& values,
    const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight,
    const at::Tensor& conv_bias, const at::Tensor& query_weight, const at::Tensor& query_bias,
    const at::Tensor& key_weight, const at::Tensor& key_bias, const at::Tensor& value_weight,
    const at::Tensor& value_bias, const at::Tensor& out_weight, const at::Tensor& out_bias,
    const at::Tensor& conv_out_weight, const at::Tensor& conv_out_bias, const at::Tensor& alpha,
    const std::optional<at::Tensor>& dropout_seed, const at::Tensor& norm_stats, const at::Tensor& kv_state,
    const at::Tensor& key_sum, int64_t dilation, int64_t heads, double norm_eps, double attention_eps,
    double attention_dropout, double dropout) {
  const std::vector<at::Tensor> weights{conv_weight, conv_bias,  query_weight, query_bias, key_weight, key_bias,
                                        value_weight, value_bias, out_weight, out_bias, conv_out_weight,
                                        conv_out_bias};
  AttModuleBackwardSetup b = att_module_backward_setup(
      c10::DeviceType::CUDA, false, grad_out, x, values, mask, cu_seqlens, weights, alpha, dropout_seed, norm_stats,
      kv_state, key_sum, dilation, heads, norm_eps, attention_eps, attention_dropout, dropout);
  check_cuda_limits(b.s);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor ws = workspace(b.s, kv_state, true);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "att_module_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    am::BackwardArgs<typename CudaType<scalar_t>::type, acc_t> args{
        inputs<scalar_t>(b.s, x, values, mask, cu_seqlens, weights, alpha, dropout_seed),
        cptr<scalar_t>(grad_out),
        norm_stats.data_ptr<acc_t>(),
        kv_state.data_ptr<acc_t>(),
        key_sum.data_ptr<acc_t>(),
        mptr<scalar_t>(b.grad_x),
        b.s.decoder ? mptr<scalar_t>(b.grad_values) : nullptr,
        {},
        b.grad_alpha.data_ptr<acc_t>(),
        ws.data_ptr<acc_t>()};
    for (int i = 0; i < kAttModuleWeights; ++i) args.grad_weights[i] = mptr<scalar_t>(b.grad_weights[i]);
    err = launch_att_module_backward(args, stream);
  });
  check_launch(b.s.op, err);
  return att_module_grads(b);
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("att_module", &trgnet::att_module_forward_cuda);
  m.impl("att_module_backward", &trgnet::att_module_backward_cuda);
}
