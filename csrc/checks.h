// Argument-check helpers shared by the ops of csrc/ (TORCH_CHECK messages naming the op, the
// argument, what is expected and what was received).
//
// Shapes and numbers are formatted with std::to_string and handed to TORCH_CHECK as strings:
// streaming c10::IntArrayRef / integers into the message crashed (SIGSEGV) in the torch 2.11 +
// /opt/gcc build of the GPU machine, while string pieces work everywhere.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/util/Exception.h>

namespace trgnet {
namespace checks {

// "[2, 7, 4, 16]"
inline std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Accumulator dtype for an input dtype: double for double, float otherwise.
inline at::ScalarType accumulator_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_supported_float(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(is_supported_float(t.scalar_type()), op, ": argument '", name,
              "': expected dtype float32, float64, float16 or bfloat16, got ", t.scalar_type());
}

// t on the device of `ref` (named ref_name) with dtype `dtype` (dtype_rule explains it).
inline void check_same_device_dtype(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                                    const char* ref_name, at::ScalarType dtype, const char* dtype_rule) {
  TORCH_CHECK(t.device() == ref.device(), op, ": argument '", name, "': expected device ", ref.device(),
              " (same as ", ref_name, "), got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": argument '", name, "': expected dtype ", dtype, " (", dtype_rule,
              "), got ", t.scalar_type());
}

inline void check_contiguous(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), op, ": argument '", name, "': expected a contiguous tensor, got shape ",
              shape_str(t.sizes()), " with strides ", shape_str(t.strides()), " (call .contiguous() first)");
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef expected,
                        const char* layout) {
  TORCH_CHECK(t.sizes() == expected, op, ": argument '", name, "': expected shape ", layout, " = ",
              shape_str(expected), ", got ", shape_str(t.sizes()));
}

inline void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim, const char* layout) {
  TORCH_CHECK(t.dim() == dim, op, ": argument '", name, "': expected a ", std::to_string(dim),
              "-D tensor of shape ", layout, ", got shape ", shape_str(t.sizes()));
}

// t on a device of type `type`: the CPU implementations take CPU tensors, the CUDA dispatch CUDA tensors
// (the dispatcher only routes them so; this guards direct C++ calls such as the ctest's).
inline void check_device_type(const char* op, const char* name, const at::Tensor& t, c10::DeviceType type) {
  TORCH_CHECK(t.device().type() == type, op, ": argument '", name, "': expected a ", c10::DeviceTypeName(type),
              " tensor, got device ", t.device());
}

// Same device, same dtype as ref, contiguous: the common case of the ops' inputs.
inline void check_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                       const char* ref_name) {
  const std::string rule = std::string("same as ") + ref_name;
  check_same_device_dtype(op, name, t, ref, ref_name, ref.scalar_type(), rule.c_str());
  check_contiguous(op, name, t);
}

}  // namespace checks
}  // namespace trgnet
