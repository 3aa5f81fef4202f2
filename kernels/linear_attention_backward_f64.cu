// The backward's kernels of the linear attention for double inputs: the query and key passes at every register
// width but the query pass at width 64, which has a file of its own, linear_attention_backward_f64_query64.cu
// (linear_attention_impl.cuh; the launcher is in linear_attention.cu).
#include "linear_attention_impl.cuh"

namespace trgnet {

TRGNET_LA_DEFINE_BACKWARD_PASS(query, double, double, 16)
TRGNET_LA_DEFINE_BACKWARD_PASS(query, double, double, 32)
TRGNET_LA_DEFINE_BACKWARD_PASS(key, double, double, 16)
TRGNET_LA_DEFINE_BACKWARD_PASS(key, double, double, 32)
TRGNET_LA_DEFINE_BACKWARD_PASS(key, double, double, 64)

}  // namespace trgnet
