// Host-side launch helpers shared by every CUDA loss: DType -> C++ type
// dispatch and launch-error checks. Only CUDA headers, like the .cu files.
// A named namespace with inline functions (not an anonymous one) so that each
// translation unit shares one definition and -Wall sees no unused statics.
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../kernel_types.h"

namespace fused_losses {
namespace launch {

template <typename T>
struct Tag {
  using type = T;
};

// The DType enum value of each element type; left undefined for any other type.
template <typename T>
struct DTypeOf;
#define FUSED_LOSSES_DTYPE_OF(T, D)          \
  template <>                                \
  struct DTypeOf<T> {                        \
    static constexpr DType value = DType::D; \
  };
FUSED_LOSSES_DTYPE_OF(float, Float32)
FUSED_LOSSES_DTYPE_OF(__half, Float16)
FUSED_LOSSES_DTYPE_OF(__nv_bfloat16, BFloat16)
FUSED_LOSSES_DTYPE_OF(double, Float64)
FUSED_LOSSES_DTYPE_OF(uint8_t, UInt8)
FUSED_LOSSES_DTYPE_OF(int8_t, Int8)
FUSED_LOSSES_DTYPE_OF(int16_t, Int16)
FUSED_LOSSES_DTYPE_OF(int32_t, Int32)
FUSED_LOSSES_DTYPE_OF(int64_t, Int64)
#undef FUSED_LOSSES_DTYPE_OF

inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Float64: return "float64";
    case DType::UInt8: return "uint8";
    case DType::Int8: return "int8";
    case DType::Int16: return "int16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
  }
  return "unknown";
}

// Calls f(Tag<T>{}) for the T among Ts whose DType is `dtype`. Only the listed
// types are instantiated, which keeps the kernel count (and build time) down.
// `loss` and `what` name the kernel and the argument in the error.
template <typename... Ts, typename F>
void dispatch(DType dtype, const char* loss, const char* what, F&& f) {
  const bool found = ((dtype == DTypeOf<Ts>::value ? (f(Tag<Ts>{}), true) : false) || ...);
  if (!found) {
    throw std::invalid_argument(std::string("fused_losses: ") + loss +
                                " CUDA kernel does not support " + what + " dtype " +
                                dtype_name(dtype));
  }
}

// Logits: the floating types the losses accept.
template <typename F>
void dispatch_input(DType dtype, const char* loss, F&& f) {
  dispatch<float, __half, __nv_bfloat16>(dtype, loss, "logits", f);
}

// Targets: every DType, read as float.
template <typename F>
void dispatch_target(DType dtype, const char* loss, F&& f) {
  dispatch<float, __half, __nv_bfloat16, double, uint8_t, int8_t, int16_t, int32_t, int64_t>(
      dtype, loss, "target", f);
}

// Launches are asynchronous: this catches configuration errors only, without a sync.
inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fused_losses: launching ") + kernel +
                             " failed: " + cudaGetErrorString(err));
  }
}

}  // namespace launch
}  // namespace fused_losses
