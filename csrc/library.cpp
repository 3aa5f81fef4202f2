// Opens the op library of the namespace `trgnet` (torch.ops.trgnet.*). TORCH_LIBRARY may appear only once
// per namespace, so it sits here, alone; every op adds its schemas from its own file, csrc/<op>.cpp, with
// TORCH_LIBRARY_FRAGMENT(trgnet, m), and its kernels with TORCH_LIBRARY_IMPL (CPU there, CUDA in
// csrc/<op>_cuda.cpp).
//
// This is not in module.cpp (the Python module) because the C++ tests' library of CMakeLists.txt is built
// without Python: both it and trgnet_fast._C (setup.py, trgnet_fast/_native.py) compile this file.
#include <torch/library.h>

TORCH_LIBRARY(trgnet, m) {}
