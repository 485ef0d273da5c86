// Loop, operand and dtype-dispatch helpers shared by every CPU loss kernel,
// and the chunk driver of the elementwise losses. Included once per CPU
// capability (see vec_math.h for why the namespace).
#pragma once
#include <ATen/Parallel.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

#include "../launch_args.h"
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

// The C++ element type of each DType (bool is read as uint8_t).
template <DType D> struct TypeOf;
template <> struct TypeOf<DType::Float32> { using type = float; };
template <> struct TypeOf<DType::Float16> { using type = c10::Half; };
template <> struct TypeOf<DType::BFloat16> { using type = c10::BFloat16; };
template <> struct TypeOf<DType::Float64> { using type = double; };
template <> struct TypeOf<DType::UInt8> { using type = uint8_t; };
template <> struct TypeOf<DType::Int8> { using type = int8_t; };
template <> struct TypeOf<DType::Int16> { using type = int16_t; };
template <> struct TypeOf<DType::Int32> { using type = int32_t; };
template <> struct TypeOf<DType::Int64> { using type = int64_t; };

// f(T{}) for the element type of `d` among Ds; only those are instantiated.
template <DType... Ds, typename F>
inline void dispatch(DType d, const char* error, F&& f) {
  const bool found = ((d == Ds ? (f(typename TypeOf<Ds>::type{}), true) : false) || ...);
  TORCH_CHECK(found, error);
}

// Logits: the floating types the losses accept.
template <typename F>
inline void dispatch_input(DType d, F&& f) {
  dispatch<DType::Float32, DType::Float16, DType::BFloat16>(
      d, "fused_losses: unsupported logits dtype", f);
}

// Targets of the binary losses: every DType, read as float.
template <typename F>
inline void dispatch_target(DType d, F&& f) {
  dispatch<DType::Float32, DType::Float16, DType::BFloat16, DType::Float64, DType::UInt8,
           DType::Int8, DType::Int16, DType::Int32, DType::Int64>(
      d, "fused_losses: unsupported target dtype", f);
}

// Targets of the class-index losses: the integer types.
template <typename F>
inline void dispatch_index(DType d, F&& f) {
  dispatch<DType::UInt8, DType::Int8, DType::Int16, DType::Int32, DType::Int64>(
      d, "fused_losses: class-index targets must have an integer dtype", f);
}

// f(input_tag, target_tag) with default-constructed values of the two C++
// element types, e.g. f(float{}, uint8_t{}).
template <typename F>
inline void dispatch_pair(DType input, DType target, F&& f) {
  dispatch_input(input, [&](auto xs) { dispatch_target(target, [&](auto ts) { f(xs, ts); }); });
}

// ---------------------------------------------------------------------------
// The elementwise losses (focal_bce, asl, ghmc): one pass over fixed chunks of
// kChunk elements. Each chunk reads logits and targets once and writes its
// loss partial (and the gradient) or the elementwise loss. Chunks, not
// threads, own the partials, and they are summed in chunk order, so the
// result is bit-identical for any thread count.
//
// A loss is an object with
//   static constexpr bool kScaleGrad;  // the forward gradient is times grad_scale
//   static constexpr bool kHot;        // it has a hot path (class_tables.h):
//   bool hot_chunk(x, t, grad, begin, end, Vec& acc) const;  // true if it took the chunk
//   Vec grad_scale;
//   int64_t cols;     // operand row length; numel when there is no operand,
//                     // so the vectors never break at a row end
//   bool count_kept;  // keep lanes count: a mean divides by their number (at
//                     // least 1) and reports 1/number as `scale`
//   bool mean;        // a mean divides at all (GHM-C's weights already do)
//   void operator()(int64_t row, int64_t col, const Vec& x, const Vec& t, int64_t n,
//                   Vec& loss, Vec& grad, Vec& keep) const;
// ---------------------------------------------------------------------------

// 1/numel when a mean's divisor is known before the pass (nothing can be
// ignored), so the forward writes the final gradient; else 1.
template <typename Options>
inline float known_mean_scale(const LaunchArgs<Options>& a, bool can_ignore) {
  return a.mean && !can_ignore && a.numel ? 1.f / static_cast<float>(a.numel) : 1.f;
}

template <typename Options>
inline bool any_operand(const LaunchArgs<Options>& a) {
  for (const Operand& op : a.operands)
    if (op.ptr) return true;
  return false;
}

// Operand rows don't matter without operands: one long row gives fewer partial vectors.
template <typename Options>
inline int64_t operand_cols(const LaunchArgs<Options>& a, bool has_operand) {
  return has_operand ? a.cols : std::max<int64_t>(a.numel, 1);
}

template <typename xT, typename tT, typename Options, typename Loss>
void elementwise_forward(const LaunchArgs<Options>& a, const Loss& f) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  auto* out = static_cast<xT*>(a.out);
  auto* grad_out = static_cast<xT*>(a.grad);
  const int64_t n_chunks = (a.numel + kChunk - 1) / kChunk;
  std::vector<float> psum(a.reduce ? n_chunks : 0);
  std::vector<int64_t> pcnt(a.reduce ? n_chunks : 0);
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      const int64_t begin = chunk * kChunk, end = std::min(a.numel, begin + kChunk);
      Vec acc(0.f), cnt(0.f);
      if constexpr (Loss::kHot) {
        if (f.hot_chunk(x, t, grad_out, begin, end, acc)) {
          psum[chunk] = lane_sum(acc);
          pcnt[chunk] = end - begin;
          continue;
        }
      }
      for_each_vector(begin, end, f.cols, [&](int64_t row, int64_t col, int64_t i, int64_t n) {
        Vec loss, grad, keep;
        f(row, col, load_as_float(x + i, n), load_as_float(t + i, n), n, loss, grad, keep);
        if (!a.reduce) {
          store_as(out + i, loss, n);
          return;
        }
        acc = acc + Vec::set(Vec(0.f), loss, n);
        if (f.count_kept) cnt = cnt + Vec::set(Vec(0.f), keep, n);
        if (a.write_grad) {
          if constexpr (Loss::kScaleGrad) grad = grad * f.grad_scale;
          store_as(grad_out + i, grad, n);
        }
      });
      if (a.reduce) {
        psum[chunk] = lane_sum(acc);
        pcnt[chunk] = f.count_kept ? static_cast<int64_t>(lane_sum(cnt)) : end - begin;
      }
    }
  });
  if (!a.reduce) return;
  double total = 0.0;
  int64_t count = 0;
  for (int64_t k = 0; k < n_chunks; ++k) {
    total += psum[k];
    count += pcnt[k];
  }
  float scale = 1.f;
  if (f.mean) {
    // Without kept counts, count = numel and an empty mean is 0/0 = NaN, as torch's.
    const double denom = f.count_kept ? std::max<int64_t>(count, 1) : count;
    if (f.count_kept) scale = static_cast<float>(1.0 / denom);
    total = total / denom;
  }
  out[0] = static_cast<xT>(static_cast<float>(total));
  *a.scale = scale;
}

// reduction="none" backward: grad_input = d loss/dx · grad_output.
template <typename xT, typename tT, typename Options, typename Loss>
void elementwise_backward(const LaunchArgs<Options>& a, const Loss& f) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  const auto* g_out = static_cast<const xT*>(a.grad_output);
  auto* g_in = static_cast<xT*>(a.grad);
  const int64_t n_chunks = (a.numel + kChunk - 1) / kChunk;
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    const int64_t begin = c0 * kChunk, end = std::min(a.numel, c1 * kChunk);
    for_each_vector(begin, end, f.cols, [&](int64_t row, int64_t col, int64_t i, int64_t n) {
      Vec loss, grad, keep;
      f(row, col, load_as_float(x + i, n), load_as_float(t + i, n), n, loss, grad, keep);
      store_as(g_in + i, grad * load_as_float(g_out + i, n), n);
    });
  });
}

// The Forward or Backward pass of an elementwise loss `f` built for `a`.
template <typename Options, typename Loss>
void run_elementwise(const LaunchArgs<Options>& a, Pass pass, const Loss& f) {
  dispatch_pair(a.input_dtype, a.target_dtype, [&](auto xs, auto ts) {
    using xT = decltype(xs);
    using tT = decltype(ts);
    if (pass == Pass::Forward) {
      elementwise_forward<xT, tT>(a, f);
    } else {
      elementwise_backward<xT, tT>(a, f);
    }
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
