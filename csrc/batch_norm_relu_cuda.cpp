// CUDA dispatch of trgnet::batch_norm_relu: the argument setup of batch_norm_relu.h (shared with the CPU
// implementation), the CUDA kernels' size limit and workspace, and a call of the launchers of
// kernels/batch_norm_relu.h on the current stream. Compiled in CUDA builds only.
#include "batch_norm_relu.h"

#include <string>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../kernels/batch_norm_relu.h"
#include "checks.h"
#include "cuda_utils.h"

namespace trgnet {
namespace {

// The row length the CUDA kernels take (the CPU kernels take any).
void check_cuda_limits(const BatchNormReluSizes& s) {
  // numbers as strings: see checks.h
  TORCH_CHECK(s.T * s.V <= bnr::kMaxRowPositions, s.op, ": the CUDA kernels support T V <= ",
              std::to_string(bnr::kMaxRowPositions), ", got T V = ", std::to_string(s.T * s.V));
}

template <typename T>
const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// The launchers' workspace (3 partial sums per (channel, slot)), in the accumulator dtype.
at::Tensor workspace(const BatchNormReluSizes& s, const at::Tensor& x) {
  return at::empty({bnr::workspace_elems(s.N, s.C, s.T, s.V)},
                   x.options().dtype(checks::accumulator_dtype(x.scalar_type())));
}

BatchNormReluOutputs batch_norm_relu_forward_cuda(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                                  const std::optional<at::Tensor>& frame_mask,
                                                  const at::Tensor& weight, const at::Tensor& bias, double eps) {
  BatchNormReluForwardSetup f =
      batch_norm_relu_forward_setup(c10::DeviceType::CUDA, x, residual, frame_mask, weight, bias, eps);
  const BatchNormReluSizes& s = f.s;
  check_cuda_limits(s);
  if (s.empty()) return {f.out, f.mean, f.var};  // mean, var zero-filled by the setup
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor ws = workspace(s, x);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "batch_norm_relu_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using In = typename CudaType<scalar_t>::type;
    const bnr::ForwardArgs<In, acc_t> args{cptr<scalar_t>(x),
                                           reinterpret_cast<const In*>(optional_ptr<scalar_t>(residual)),
                                           reinterpret_cast<const In*>(optional_ptr<scalar_t>(frame_mask)),
                                           weight.data_ptr<acc_t>(),
                                           bias.data_ptr<acc_t>(),
                                           mptr<scalar_t>(f.out),
                                           f.mean.data_ptr<acc_t>(),
                                           f.var.data_ptr<acc_t>(),
                                           ws.data_ptr<acc_t>(),
                                           s.N, s.C, s.T, s.V, s.eps};
    err = launch_batch_norm_relu_forward(args, stream);
  });
  check_launch(s.op, err);
  return {f.out, f.mean, f.var};
}

BatchNormReluGrads batch_norm_relu_backward_cuda(const at::Tensor& grad_out, const at::Tensor& out,
                                                 const at::Tensor& x, const std::optional<at::Tensor>& frame_mask,
                                                 const at::Tensor& weight, const at::Tensor& mean,
                                                 const at::Tensor& var, double eps, bool residual_grad) {
  BatchNormReluBackwardSetup b = batch_norm_relu_backward_setup(c10::DeviceType::CUDA, grad_out, out, x, frame_mask,
                                                                weight, mean, var, eps, residual_grad);
  const BatchNormReluSizes& s = b.s;
  check_cuda_limits(s);
  if (s.empty()) return {b.grad_x, b.grad_residual, b.grad_weight, b.grad_bias};  // zero-filled by the setup
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor ws = workspace(s, x);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "batch_norm_relu_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using In = typename CudaType<scalar_t>::type;
    const bnr::BackwardArgs<In, acc_t> args{cptr<scalar_t>(grad_out),
                                            cptr<scalar_t>(out),
                                            cptr<scalar_t>(x),
                                            reinterpret_cast<const In*>(optional_ptr<scalar_t>(frame_mask)),
                                            weight.data_ptr<acc_t>(),
                                            mean.data_ptr<acc_t>(),
                                            var.data_ptr<acc_t>(),
                                            mptr<scalar_t>(b.grad_x),
                                            residual_grad ? mptr<scalar_t>(b.grad_residual) : nullptr,
                                            b.grad_weight.data_ptr<acc_t>(),
                                            b.grad_bias.data_ptr<acc_t>(),
                                            ws.data_ptr<acc_t>(),
                                            s.N, s.C, s.T, s.V, s.eps};
    err = launch_batch_norm_relu_backward(args, stream);
  });
  check_launch(s.op, err);
  return {b.grad_x, b.grad_residual, b.grad_weight, b.grad_bias};
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("batch_norm_relu", &trgnet::batch_norm_relu_forward_cuda);
  m.impl("batch_norm_relu_backward", &trgnet::batch_norm_relu_backward_cuda);
}
