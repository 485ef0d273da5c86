// Types shared by every loss's launch arguments. No torch header: .cu files
// include this and must stay compile-checkable against the CUDA toolkit alone.
#pragma once
#include <cstdint>

namespace fused_losses {

// Element types the kernels read. Bool targets are passed as UInt8.
enum class DType : int32_t { Float32, Float16, BFloat16, Float64, UInt8, Int8, Int16, Int32, Int64 };

// A float32 operand broadcast to the logical [R, C] view through (row, column)
// strides, so a per-class [C] vector is never expanded in memory.
// ptr == nullptr means the operand is absent.
struct Operand {
  const float* ptr = nullptr;
  int64_t stride_r = 0;
  int64_t stride_c = 0;
};

}  // namespace fused_losses
