// The launchers of kernels/linear_attention.h for the four input dtypes: the forward passes, with their kernels,
// and the backward's checks, state reduction and dispatch to the per-width passes, whose kernels are compiled in
// linear_attention_backward_*.cu (the split is described at the top of linear_attention_impl.cuh).
#include "linear_attention_impl.cuh"

namespace trgnet {

TRGNET_LA_DEFINE_FORWARD(float, float)
TRGNET_LA_DEFINE_FORWARD(double, double)
TRGNET_LA_DEFINE_FORWARD(__half, float)
TRGNET_LA_DEFINE_FORWARD(__nv_bfloat16, float)

TRGNET_LA_DEFINE_BACKWARD(float, float)
TRGNET_LA_DEFINE_BACKWARD(double, double)
TRGNET_LA_DEFINE_BACKWARD(__half, float)
TRGNET_LA_DEFINE_BACKWARD(__nv_bfloat16, float)

}  // namespace trgnet
