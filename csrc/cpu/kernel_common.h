// Loop, operand and dtype-dispatch helpers shared by every CPU loss kernel.
// Included once per CPU capability (see vec_math.h for why the namespace).
#pragma once
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "../kernel_types.h"
#include "vec_math.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

// Elements per chunk. Chunks, not threads, own reduction partials, and they
// are combined in chunk order: results do not depend on the thread count.
constexpr int64_t kChunk = 16384;

// An operand's row, resolved once per row segment of a chunk.
struct OperandRow {
  const float* base = nullptr;
  int64_t stride_c = 0;
  OperandRow(const Operand& op, int64_t row)
      : base(op.ptr ? op.ptr + row * op.stride_r : nullptr), stride_c(op.stride_c) {}
  Vec load(int64_t col, int64_t n) const {
    if (stride_c == 1) return Vec::loadu(base + col, n);
    if (stride_c == 0) return Vec(*base);
    alignas(64) float buf[kLanes] = {};
    for (int64_t k = 0; k < n; ++k) buf[k] = base[(col + k) * stride_c];
    return Vec::loadu(buf);
  }
};

// Visit [begin, end) as vectors that never straddle a row: f(row, col, i, n).
template <typename F>
inline void for_each_vector(int64_t begin, int64_t end, int64_t cols, F&& f) {
  int64_t row = begin / cols;
  int64_t col = begin - row * cols;
  for (int64_t i = begin; i < end; ++row, col = 0) {
    const int64_t seg = std::min(end - i, cols - col);
    for (int64_t k = 0; k < seg; k += kLanes) f(row, col + k, i + k, std::min(kLanes, seg - k));
    i += seg;
  }
}

inline float lane_sum(const Vec& v) {
  alignas(64) float buf[kLanes];
  v.store(buf);
  float s = 0.f;
  for (int64_t k = 0; k < kLanes; ++k) s += buf[k];
  return s;
}

template <typename F>
inline void dispatch_input(DType d, F&& f) {
  switch (d) {
    case DType::Float32: return f(float{});
    case DType::Float16: return f(c10::Half{});
    case DType::BFloat16: return f(c10::BFloat16{});
    default: TORCH_CHECK(false, "fused_losses: unsupported logits dtype");
  }
}

template <typename F>
inline void dispatch_target(DType d, F&& f) {
  switch (d) {
    case DType::Float32: return f(float{});
    case DType::Float16: return f(c10::Half{});
    case DType::BFloat16: return f(c10::BFloat16{});
    case DType::Float64: return f(double{});
    case DType::UInt8: return f(uint8_t{});
    case DType::Int8: return f(int8_t{});
    case DType::Int16: return f(int16_t{});
    case DType::Int32: return f(int32_t{});
    case DType::Int64: return f(int64_t{});
  }
  TORCH_CHECK(false, "fused_losses: unsupported target dtype");
}

// f(input_tag, target_tag) with default-constructed values of the two C++
// element types, e.g. f(float{}, uint8_t{}).
template <typename F>
inline void dispatch_pair(DType input, DType target, F&& f) {
  dispatch_input(input, [&](auto xs) { dispatch_target(target, [&](auto ts) { f(xs, ts); }); });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
