// The forward launchers of kernels/att_module.h for the four input dtypes, with their kernels (the backward is in
// att_module_backward.cu; kernels and launch code in att_module_impl.cuh).
#include "att_module_impl.cuh"

namespace trgnet {

TRGNET_AM_DEFINE_FORWARD(float, float)
TRGNET_AM_DEFINE_FORWARD(double, double)
TRGNET_AM_DEFINE_FORWARD(__half, float)
TRGNET_AM_DEFINE_FORWARD(__nv_bfloat16, float)

}  // namespace trgnet
