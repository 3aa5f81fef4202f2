// The backward's kernels of the linear attention for float inputs: the query and key passes at
// every register width (linear_attention_impl.cuh; the launcher is in linear_attention.cu).
#include "linear_attention_impl.cuh"

namespace trgnet {

TRGNET_LA_DEFINE_BACKWARD_PASSES(float, float)

}  // namespace trgnet
