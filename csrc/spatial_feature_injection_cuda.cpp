// CUDA dispatch of trgnet::spatial_feature_injection: the argument setup of spatial_feature_injection.h (shared
// with the CPU implementation), the CUDA kernels' size limits and workspace, and a call of the launchers of
// kernels/spatial_feature_injection.h on the current stream. Compiled in CUDA builds only.
#include "spatial_feature_injection.h"

#include <string>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../kernels/spatial_feature_injection.h"
#include "checks.h"
#include "cuda_utils.h"

namespace trgnet {
namespace {

// The channel counts the CUDA kernels take (the CPU kernels take any).
void check_cuda_limits(const SpatialFeatureInjectionSizes& s) {
  // numbers as strings: see checks.h
  TORCH_CHECK(s.C <= sfi::kMaxChannels, s.op, ": the CUDA kernels support at most ",
              std::to_string(sfi::kMaxChannels), " channels, got C = ", std::to_string(s.C));
  TORCH_CHECK(s.G * s.V <= sfi::kMaxGroupChannels, s.op, ": the CUDA kernels support G V <= ",
              std::to_string(sfi::kMaxGroupChannels), ", got G V = ", std::to_string(s.G * s.V));
}

template <typename T>
const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// The launchers' inputs (CUDA storage types) of a call.
template <typename scalar_t>
sfi::Inputs<typename CudaType<scalar_t>::type> inputs(const SpatialFeatureInjectionSizes& s, const at::Tensor& group,
                                                      const at::Tensor& h, const std::optional<at::Tensor>& mask,
                                                      const std::vector<at::Tensor>& weights,
                                                      const std::optional<at::Tensor>& dropout_seed) {
  using In = typename CudaType<scalar_t>::type;
  const int64_t* st = s.group_strides;
  sfi::Inputs<In> in{cptr<scalar_t>(group),
                     cptr<scalar_t>(h),
                     reinterpret_cast<const In*>(optional_ptr<scalar_t>(mask)),
                     sfi::GroupView{s.G, s.V, st[0], st[1], st[2], st[3]},
                     {},
                     optional_ptr<int64_t>(dropout_seed),
                     s.N, s.C, s.T, s.dropout};
  for (int i = 0; i < kSpatialFeatureInjectionWeights; ++i) in.weights[i] = cptr<scalar_t>(weights[i]);
  return in;
}

at::Tensor spatial_feature_injection_forward_cuda(
    const at::Tensor& group, const at::Tensor& h, const std::optional<at::Tensor>& mask,
    const at::Tensor& conv_s_weight, const at::Tensor& conv_s_bias, const at::Tensor& fusion_weight,
    const at::Tensor& fusion_bias, const at::Tensor& ff1_weight, const at::Tensor& ff1_bias,
    const at::Tensor& ff2_weight, const at::Tensor& ff2_bias, const std::optional<at::Tensor>& dropout_seed,
    double dropout) {
  const std::vector<at::Tensor> weights{conv_s_weight, conv_s_bias, fusion_weight, fusion_bias,
                                        ff1_weight,    ff1_bias,    ff2_weight,    ff2_bias};
  auto setup =
      spatial_feature_injection_forward_setup(c10::DeviceType::CUDA, group, h, mask, weights, dropout_seed, dropout);
  const SpatialFeatureInjectionSizes& s = setup.first;
  at::Tensor& out = setup.second;
  check_cuda_limits(s);
  const c10::cuda::CUDAGuard guard(h.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "spatial_feature_injection_forward_cuda",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    err = launch_spatial_feature_injection_forward(
        sfi::ForwardArgs<typename CudaType<scalar_t>::type, acc_t>{
            inputs<scalar_t>(s, group, h, mask, weights, dropout_seed), mptr<scalar_t>(out)},
        stream);
  });
  check_launch(s.op, err);
  return out;
}

SpatialFeatureInjectionGrads spatial_feature_injection_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& group, const at::Tensor& h, const std::optional<at::Tensor>& mask,
    const at::Tensor& conv_s_weight, const at::Tensor& conv_s_bias, const at::Tensor& fusion_weight,
    const at::Tensor& fusion_bias, const at::Tensor& ff1_weight, const at::Tensor& ff1_bias,
    const at::Tensor& ff2_weight, const at::Tensor& ff2_bias, const std::optional<at::Tensor>& dropout_seed,
    double dropout) {
  const std::vector<at::Tensor> weights{conv_s_weight, conv_s_bias, fusion_weight, fusion_bias,
                                        ff1_weight,    ff1_bias,    ff2_weight,    ff2_bias};
  SpatialFeatureInjectionBackwardSetup b = spatial_feature_injection_backward_setup(
      c10::DeviceType::CUDA, grad_out, group, h, mask, weights, dropout_seed, dropout);
  const SpatialFeatureInjectionSizes& s = b.s;
  check_cuda_limits(s);
  const c10::cuda::CUDAGuard guard(h.device());
  // the launchers' workspace (the per-block partials), in the accumulator dtype
  const at::ScalarType acc = checks::accumulator_dtype(h.scalar_type());
  at::Tensor ws = at::empty(
      {sfi::workspace_elems(s.N, s.C, s.G * s.V, s.T, static_cast<int>(c10::elementSize(acc)))},
      h.options().dtype(acc));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(),
                                  "spatial_feature_injection_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    sfi::BackwardArgs<typename CudaType<scalar_t>::type, acc_t> args{
        inputs<scalar_t>(s, group, h, mask, weights, dropout_seed), cptr<scalar_t>(grad_out),
        mptr<scalar_t>(b.grad_group), mptr<scalar_t>(b.grad_h), {}, ws.data_ptr<acc_t>()};
    for (int i = 0; i < kSpatialFeatureInjectionWeights; ++i) args.grad_weights[i] = mptr<scalar_t>(b.grad_weights[i]);
    err = launch_spatial_feature_injection_backward(args, stream);
  });
  check_launch(s.op, err);
  return spatial_feature_injection_grads(b);
}

}  // namespace
}  // namespace trgnet

TORCH_LIBRARY_IMPL(trgnet, CUDA, m) {
  m.impl("spatial_feature_injection", &trgnet::spatial_feature_injection_forward_cuda);
  m.impl("spatial_feature_injection_backward", &trgnet::spatial_feature_injection_backward_cuda);
}
