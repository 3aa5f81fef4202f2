// The backward launchers of kernels/att_module.h for the four input dtypes, with their kernels (att_module_impl.cuh).
#include "att_module_impl.cuh"

namespace trgnet {

TRGNET_AM_DEFINE_BACKWARD(float, float)
TRGNET_AM_DEFINE_BACKWARD(double, double)
TRGNET_AM_DEFINE_BACKWARD(__half, float)
TRGNET_AM_DEFINE_BACKWARD(__nv_bfloat16, float)

}  // namespace trgnet
