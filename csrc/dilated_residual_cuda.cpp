// CUDA dispatch of trgnet::dilated_residual: the argument setup of dilated_residual.h (shared with the CPU
// implementation), the CUDA kernels' size limit and workspace, and a call of the launchers of
// kernels/dilated_residual.h on the current stream. Compiled in CUDA builds only.
#include "dilated_residual.h"

#include <string>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../kernels/dilated_residual.h"
#include "checks.h"
#include "cuda_utils.h"

namespace trgnet {
namespace {

// The channel count the CUDA kernels take (the CPU kernels take any).
void check_cuda_limits(const DilatedResidualSizes& s) {
  // numbers as strings: see checks.h
  TORCH_CHECK(s.C <= dr::kMaxChannels, s.op, ": the CUDA kernels support at most ", std::to_string(dr::kMaxChannels),
              " channels, got C = ", std::to_string(s.C));
}

template <typename T>
const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// The launchers' inputs (CUDA storage types) of a call.
template <typename scalar_t>
dr::Inputs<typename CudaType<scalar_t>::type> inputs(const DilatedResidualSizes& s, const at::Tensor& x,
                                                     const std::optional<at::Tensor>& mask,
                                                     const std::optional<at::Tensor>& cu_seqlens,
                                                     const std::vector<at::Tensor>& weights,
                                                     const std::optional<at::Tensor>& dropout_seed) {
  using In = typename CudaType<scalar_t>::type;
  dr::Inputs<In> in{cptr<scalar_t>(x),
                    reinterpret_cast<const In*>(optional_ptr<scalar_t>(mask)),
                    optional_ptr<int32_t>(cu_seqlens),
                    {},
                    optional_ptr<int64_t>(dropout_seed),
                    s.B, s.C, s.T, s.N, s.dilation, s.dropout};
  for (int i = 0; i < kDilatedResidualWeights; ++i) in.weights[i] = cptr<scalar_t>(weights[i]);
  return in;
}

at::Tensor dilated_residual_forward_cuda(const at::Tensor& x, const std::optional<at::Tensor>& mask,
                                         const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight,
                                         const at::Tensor& conv_bias, const at::Tensor& conv_out_weight,
                                         const at::Tensor& conv_out_bias,
                                         const std::optional<at::Tensor>& dropout_seed, int64_t dilation,
                                         double dropout) {
  const std::vector<at::Tensor> weights{conv_weight, conv_bias, conv_out_weight, conv_out_bias};
  auto setup = dilated_residual_forward_setup(c10::DeviceType::CUDA, false, x, mask, cu_seqlens, weights,
                                              dropout_seed, dilation, dropout);
  const DilatedResidualSizes& s = setup.first;
  at::Tensor& out = setup.second;
  check_cuda_limits(s);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dilated_residual_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = launch_dilated_residual_forward(
        dr::ForwardArgs<typename CudaType<scalar_t>::type, acc_t>{
            inputs<scalar_t>(s, x, mask, cu_seqlens, weights, dropout_seed), mptr<scalar_t>(out)},
        stream);
  });
  check_launch(s.op, err);
  return out;
}

DilatedResidualGrads dilated_residual_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& conv_weight, const at::Tensor& conv_bias,
    const at::Tensor& conv_out_weight, const at::Tensor& conv_out_bias, const std::optional<at::Tensor>& dropout_seed,
    int64_t dilation, double dropout) {
  const std::vector<at::Tensor> weights{conv_weight, conv_bias, conv_out_weight, conv_out_bias};
  DilatedResidualBackwardSetup b = dilated_residual_backward_setup(
      c10::DeviceType::CUDA, false, grad_out, x, mask, cu_seqlens, weights, dropout_seed, dilation, dropout);
  check_cuda_limits(b.s);
  const c10::cuda::CUDAGuard guard(x.device());
  // the launchers' workspace, in the accumulator dtype
  const at::ScalarType acc = checks::accumulator_dtype(x.scalar_type());
  at::Tensor ws = at::empty({dr::workspace_elems(b.s.B, b.s.C, b.s.T, b.s.N, static_cast<int>(c10::elementSize(acc)))},
                            x.options().dtype(acc));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dilated_residual_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dr::BackwardArgs<typename CudaType<scalar_t>::type, acc_t> args{
        inputs<scalar_t>(b.s, x, mask, cu_seqlens, weights, dropout_seed), cptr<scalar_t>(grad_out),
        mptr<scalar_t>(b.grad_x), {}, ws.data_ptr<acc_t>()};
    for (int i = 0; i < kDilatedResidualWeights; ++i) args.grad_weights[i] = mptr<scalar_t>(b.grad_weights[i]);
    err = launch_dilated_residual_backward(args, stream);
  });
  check_launch(b.s.op, err);
  return dilated_residual_grads(b);
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("dilated_residual", &trgnet::dilated_residual_forward_cuda);
  m.impl("dilated_residual_backward", &trgnet::dilated_residual_backward_cuda);
}
