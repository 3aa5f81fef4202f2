// CUDA dispatch of trgnet::frame_losses: the argument setup of frame_losses.h (shared with the CPU implementation),
// the CUDA kernels' class limit and workspace, and a call of the launchers of kernels/frame_losses.h on the current
// stream. Compiled in CUDA builds only. No device value is read on the host.
#include "frame_losses.h"

#include <string>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../kernels/frame_losses.h"
#include "checks.h"
#include "cuda_utils.h"

namespace trgnet {
namespace {

// The class count the CUDA kernels take (the CPU kernels take any).
void check_cuda_limits(const FrameLossesSizes& s) {
  // numbers as strings: see checks.h
  TORCH_CHECK(s.K <= fl::kMaxClasses, s.op, ": argument 'logits': the CUDA kernels support at most ",
              std::to_string(fl::kMaxClasses), " classes, got K = ", std::to_string(s.K));
}

// The launchers' inputs (CUDA storage types) of a call.
template <typename scalar_t>
fl::Inputs<typename CudaType<scalar_t>::type, at::opmath_type<scalar_t>> inputs(const FrameLossesSizes& s,
                                                                                const FrameLossesInputs& in) {
  using acc_t = at::opmath_type<scalar_t>;
  return {cptr<scalar_t>(in.logits),
          in.labels.data_ptr<int64_t>(),
          in.next_frame.data_ptr<int64_t>(),
          in.previous_frame.data_ptr<int64_t>(),
          in.ce_weight.data_ptr<acc_t>(),
          in.pair_weight.data_ptr<acc_t>(),
          cptr<scalar_t>(in.boundary_logits),
          in.boundary.data_ptr<acc_t>(),
          in.boundary_weight.data_ptr<acc_t>(),
          in.pos_weight.data_ptr<acc_t>(),
          s.S,
          s.N,
          s.K,
          s.T,
          s.R,
          s.threshold,
          s.time_axis};
}

FrameLossesInputs pack(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& ce_weight,
                       const at::Tensor& next_frame, const at::Tensor& previous_frame, const at::Tensor& pair_weight,
                       const at::Tensor& boundary_logits, const at::Tensor& boundary,
                       const at::Tensor& boundary_weight, const at::Tensor& pos_weight) {
  return {logits,          labels,   ce_weight,       next_frame, previous_frame, pair_weight,
          boundary_logits, boundary, boundary_weight, pos_weight};
}

std::tuple<at::Tensor, at::Tensor> frame_losses_forward_cuda(
    const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& ce_weight, const at::Tensor& next_frame,
    const at::Tensor& previous_frame, const at::Tensor& pair_weight, const at::Tensor& boundary_logits,
    const at::Tensor& boundary, const at::Tensor& boundary_weight, const at::Tensor& pos_weight, double threshold,
    bool time_axis) {
  const FrameLossesInputs in = pack(logits, labels, ce_weight, next_frame, previous_frame, pair_weight,
                                    boundary_logits, boundary, boundary_weight, pos_weight);
  FrameLossesForwardSetup f = frame_losses_forward_setup(c10::DeviceType::CUDA, in, threshold, time_axis);
  const FrameLossesSizes& s = f.s;
  check_cuda_limits(s);
  const c10::cuda::CUDAGuard guard(logits.device());
  // the launchers' workspace (the per-block sums), in the accumulator dtype
  at::Tensor ws = at::empty({fl::forward_workspace_elems(s.S, s.N, s.T, s.R)}, f.terms.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "frame_losses_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = launch_frame_losses_forward(
        fl::ForwardArgs<typename CudaType<scalar_t>::type, acc_t>{
            inputs<scalar_t>(s, in), f.terms.data_ptr<acc_t>(),
            s.time_axis ? f.time_lse.data_ptr<acc_t>() : nullptr, ws.data_ptr<acc_t>()},
        stream);
  });
  check_launch(s.op, err);
  return {f.terms, f.time_lse};
}

std::tuple<at::Tensor, at::Tensor> frame_losses_backward_cuda(
    const at::Tensor& grad_terms, const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& ce_weight,
    const at::Tensor& next_frame, const at::Tensor& previous_frame, const at::Tensor& pair_weight,
    const at::Tensor& boundary_logits, const at::Tensor& boundary, const at::Tensor& boundary_weight,
    const at::Tensor& pos_weight, const at::Tensor& time_lse, double threshold, bool time_axis) {
  const FrameLossesInputs in = pack(logits, labels, ce_weight, next_frame, previous_frame, pair_weight,
                                    boundary_logits, boundary, boundary_weight, pos_weight);
  FrameLossesBackwardSetup b =
      frame_losses_backward_setup(c10::DeviceType::CUDA, grad_terms, in, time_lse, threshold, time_axis);
  const FrameLossesSizes& s = b.s;
  check_cuda_limits(s);
  const c10::cuda::CUDAGuard guard(logits.device());
  // the launchers' workspace (Q of the time axis), in the accumulator dtype
  at::Tensor ws = at::empty({fl::backward_workspace_elems(s.S, s.N, s.K, s.time_axis)}, grad_terms.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "frame_losses_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = launch_frame_losses_backward(
        fl::BackwardArgs<typename CudaType<scalar_t>::type, acc_t>{
            inputs<scalar_t>(s, in), grad_terms.data_ptr<acc_t>(),
            s.time_axis ? time_lse.data_ptr<acc_t>() : nullptr, mptr<scalar_t>(b.grad_logits),
            mptr<scalar_t>(b.grad_boundary_logits), s.time_axis ? ws.data_ptr<acc_t>() : nullptr},
        stream);
  });
  check_launch(s.op, err);
  return {b.grad_logits, b.grad_boundary_logits};
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("frame_losses", &trgnet::frame_losses_forward_cuda);
  m.impl("frame_losses_backward", &trgnet::frame_losses_backward_cuda);
}
