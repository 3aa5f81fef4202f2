// The query pass of the linear attention's backward for double inputs at register width 64 (head dims 33..64):
// alone in its file because it is the kernel that takes nvcc longest (linear_attention_impl.cuh; the launcher
// is in linear_attention.cu, the other fp64 passes in linear_attention_backward_f64.cu).
#include "linear_attention_impl.cuh"

namespace trgnet {

TRGNET_LA_DEFINE_BACKWARD_PASS(query, double, double, 64)

}  // namespace trgnet
