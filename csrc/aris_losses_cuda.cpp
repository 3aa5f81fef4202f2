// CUDA dispatch of trgnet::aris_losses: the argument setup of aris_losses.h (shared with the CPU implementation), the
// CUDA kernels' workspace, and a call of the launchers of kernels/aris_losses.h on the current stream. Compiled in
// CUDA builds only. No device value is read on the host (logit_scale, grad_terms and the saved scalars are read by
// the kernels).
#include "aris_losses.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../kernels/aris_losses.h"
#include "checks.h"
#include "cuda_utils.h"

namespace trgnet {
namespace {

// The launchers' view of the slot inputs.
template <typename Acc>
al::Slots<Acc> slots_of(const ArisLossesSizes& s, const ArisLossesSlots& in) {
  return {in.segment_count.data_ptr<Acc>(),   in.segment_valid.data_ptr<bool>(),
          in.segment_label.data_ptr<int64_t>(), in.unit_embeddings.data_ptr<Acc>(),
          in.logit_scale.data_ptr<Acc>(),     in.absolute_weight.data_ptr<Acc>(),
          in.relative_weight.data_ptr<Acc>(), s.N,
          s.D,                                s.T,
          s.M,                                s.K,
          s.C};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> aris_losses_forward_cuda(
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
  ArisLossesForwardSetup f = aris_losses_forward_setup(c10::DeviceType::CUDA, in);
  const ArisLossesSizes& s = f.s;
  const c10::cuda::CUDAGuard guard(features.device());
  // the launchers' workspace (the pair matrices and the per-block and per-row sums), in the compute dtype
  at::Tensor ws = at::empty({al::workspace_elems(s.M, s.D, 0, false)}, f.terms.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "aris_losses_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = launch_aris_losses_forward(
        al::ForwardArgs<typename CudaType<scalar_t>::type, acc_t>{
            slots_of<acc_t>(s, in.slots), cptr<scalar_t>(features), segment_video.data_ptr<int64_t>(),
            segment_start.data_ptr<int64_t>(), absolute_log_weight.data_ptr<acc_t>(),
            relative_log_weight.data_ptr<acc_t>(), f.terms.data_ptr<acc_t>(), f.segment_features.data_ptr<acc_t>(),
            f.row_lse.data_ptr<acc_t>(), f.max_distance.data_ptr<acc_t>(), ws.data_ptr<acc_t>(),
            s.head ? in.head_weight.data_ptr<acc_t>() : nullptr, s.head ? in.head_bias.data_ptr<acc_t>() : nullptr,
            s.head ? f.segment_means.data_ptr<acc_t>() : nullptr},
        stream);
  });
  check_launch(s.op, err);
  return {f.terms, f.segment_features, f.row_lse, f.max_distance, f.segment_means};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> aris_losses_backward_cuda(
    const at::Tensor& grad_terms, const at::Tensor& frame_segment, const at::Tensor& segment_count,
    const at::Tensor& segment_valid, const at::Tensor& segment_label, const at::Tensor& unit_embeddings,
    const at::Tensor& logit_scale, const at::Tensor& absolute_weight, const at::Tensor& relative_weight,
    const at::Tensor& segment_features, const at::Tensor& row_lse, const at::Tensor& max_distance,
    const std::optional<at::Tensor>& head_weight, const at::Tensor& segment_means, at::ScalarType features_dtype) {
  const ArisLossesSlots slots{frame_segment, segment_count, segment_valid,   segment_label,
                              unit_embeddings, logit_scale, absolute_weight, relative_weight};
  const ArisLossesSaved saved{segment_features, row_lse, max_distance, defined_or_empty(head_weight), segment_means};
  ArisLossesBackwardSetup b =
      aris_losses_backward_setup(c10::DeviceType::CUDA, grad_terms, slots, saved, features_dtype);
  const ArisLossesSizes& s = b.s;
  const c10::cuda::CUDAGuard guard(segment_features.device());
  // the launchers' workspace (the pair matrices, G, H, their block sums, grad f / count or γ, and with the head
  // Wᵀ γ / count), in the compute dtype
  at::Tensor ws = at::empty({al::workspace_elems(s.M, s.D, s.head ? s.C : 0, true)}, segment_features.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features_dtype, "aris_losses_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = launch_aris_losses_backward(
        al::BackwardArgs<typename CudaType<scalar_t>::type, acc_t>{
            slots_of<acc_t>(s, slots), frame_segment.data_ptr<int64_t>(), grad_terms.data_ptr<acc_t>(),
            segment_features.data_ptr<acc_t>(), row_lse.data_ptr<acc_t>(), max_distance.data_ptr<acc_t>(),
            mptr<scalar_t>(b.grad_features), b.grad_logit_scale.data_ptr<acc_t>(), ws.data_ptr<acc_t>(),
            s.head ? saved.head_weight.data_ptr<acc_t>() : nullptr, s.head ? segment_means.data_ptr<acc_t>() : nullptr,
            s.head ? b.grad_head_weight.data_ptr<acc_t>() : nullptr,
            s.head ? b.grad_head_bias.data_ptr<acc_t>() : nullptr},
        stream);
  });
  check_launch(s.op, err);
  return {b.grad_features, b.grad_logit_scale, b.grad_head_weight, b.grad_head_bias};
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("aris_losses", &trgnet::aris_losses_forward_cuda);
  m.impl("aris_losses_backward", &trgnet::aris_losses_backward_cuda);
}
