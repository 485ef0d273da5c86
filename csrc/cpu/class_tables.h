// The hot path of the elementwise CPU losses (focal_bce, asl): per-class
// coefficient tables walked by column, and a chunk loop over flat memory
// whose vectors run across row ends. Included once per CPU capability.
//
// A [N, C] logit tensor with per-class operands ([C] pos_weight, alpha,
// weight) is row-major, so element i has column i mod C. Folding the operands
// into one coefficient per class and per target value, and storing each table
// as C + kLanes floats with table[j] = value(j mod C), lets a vector that
// starts at any column read its lanes' coefficients with one unaligned load:
// no vector stops at a row end, and no operand is gathered per element.
//
// The hot loop takes a chunk only when all of its targets are exactly 0 or 1
// (always for bool/integer targets, checked once per chunk for float ones);
// a chunk with a soft or NaN target goes through the loss's general code.
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../launch_args.h"
#include "vec_fast.h"
#include "vec_math.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

// One coefficient per class, stored C + kLanes long so table[col..col+kLanes)
// holds the coefficients of kLanes consecutive elements starting at column col.
class ClassTable {
 public:
  ClassTable() = default;
  template <typename F>
  ClassTable(int64_t cols, F&& value) : v_(static_cast<size_t>(cols + kLanes)) {
    for (int64_t j = 0; j < cols + kLanes; ++j) v_[j] = value(j % cols);
  }
  Vec at(int64_t col) const { return Vec::loadu(v_.data() + col); }

 private:
  std::vector<float> v_;
};

// True when every target in [begin, end) is exactly 0 or 1 (integer and bool
// targets are by type; validation has refused other values). NaN is not.
template <typename tT>
inline bool chunk_is_hard(const tT* t, int64_t begin, int64_t end) {
  if constexpr (!std::is_floating_point_v<tT> && !std::is_same_v<tT, c10::Half> &&
                !std::is_same_v<tT, c10::BFloat16>) {
    return true;
  } else {
    const Vec zero(0.f), one(1.f);
    Vec soft(0.f);  // all-ones bits in any lane that was neither 0 nor 1
    for (int64_t i = begin; i < end; i += kLanes) {
      const int64_t n = std::min<int64_t>(kLanes, end - i);
      const Vec v = n == kLanes ? load_as_float(t + i, kLanes)
                                : Vec::set(zero, load_as_float(t + i, n), n);
      soft = soft | ((v != zero) & (v != one));
    }
    return soft.zero_mask() == (1 << kLanes) - 1;
  }
}

// The hot loop over one chunk [begin, end) of a reduced loss: step(x, t01,
// col, loss, grad) gets the logits, the targets as a 0/1 lane mask (all-ones
// bits where t = 1) and the column of lane 0; the losses are summed into acc
// and, when kGrad, the gradient is stored. `cols` >= 1 is the table period.
// flatten: GCC otherwise keeps exp_u20 and the log helpers as calls, and every
// call spills all live vector registers (measured: ASL's loop ran 2.5× slower).
template <bool kGrad, typename xT, typename tT, typename Step>
__attribute__((flatten)) inline void hot_chunk(const xT* x, const tT* t, xT* grad, int64_t begin, int64_t end,
                      int64_t cols, Vec& acc, const Step& step) {
  const Vec half(0.5f);
  int64_t col = begin % cols;
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    Vec loss, g;
    step(load_as_float(x + i, kLanes), load_as_float(t + i, kLanes) > half, col, loss, g);
    acc = acc + loss;
    if constexpr (kGrad) store_as(grad + i, g, kLanes);
    col += kLanes;
    while (col >= cols) col -= cols;
  }
  if (i < end) {
    const int64_t n = end - i;
    Vec loss, g;
    step(load_as_float(x + i, n), load_as_float(t + i, n) > half, col, loss, g);
    acc = acc + Vec::set(Vec(0.f), loss, n);
    if constexpr (kGrad) store_as(grad + i, g, n);
  }
}

// Absent, one value, or one value per column of a [.., C] operand: what a table holds.
inline bool per_class_operand(const Operand& op) {
  return op.ptr == nullptr || (op.stride_r == 0 && (op.stride_c == 0 || op.stride_c == 1));
}

// A loss's hot_chunk (kernel_common.h's kHot protocol): runs `hot` (a step
// functor with a `ready` flag) over the chunk when the call and the chunk allow.
template <typename Hot, typename xT, typename tT>
inline bool run_hot_chunk(const Hot& hot, bool write_grad, int64_t cols, const xT* x,
                          const tT* t, xT* grad, int64_t begin, int64_t end, Vec& acc) {
  if (!hot.ready || !chunk_is_hard(t, begin, end)) return false;
  if (write_grad) {
    hot_chunk<true>(x, t, grad, begin, end, cols, acc, hot);
  } else {
    hot_chunk<false>(x, t, grad, begin, end, cols, acc, hot);
  }
  return true;
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
