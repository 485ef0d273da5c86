// Row-wise softmax machinery and the row driver shared by the class-index
// CPU kernels (softmax_focal_kernel.h, dsc_kernel.h). Included once per
// capability.
//
// A row is first made a contiguous float buffer (free for fp32 rows with
// class stride 1), then three vector passes run over it while it sits in
// cache: max (+ Σ a_c·x_c), sum-exp, gradient. Every loss's gradient has the form
//   g_j = c_p·p_j + c_r·(p_j / (1 - p_y))·[j ≠ y] - c_a·a_j + c_y·[j = y]
// (a_j = 1 without weights), with p_j / (1 - p_y) = e_j / s_other in [0, 1].
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernel_common.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

struct RowStats {
  float m = 0.f;        // max logit (NaN if any logit is NaN)
  float s = 0.f;        // Σ exp(x_c - m)
  float s_other = 0.f;  // the same without class y
  float ax = 0.f;       // Σ a_c·x_c (dot only)
  float a_sum = 0.f;    // Σ a_c (dot only)
};

struct RowCoefs {
  float c_p = 0.f, c_r = 0.f, c_a = 0.f, c_y = 0.f;
};

// The row's logits as contiguous floats: `x` itself for a float row with
// stride 1, else converted into `buf`.
template <typename xT>
inline const float* row_as_float(const xT* x, int64_t stride, int64_t cols,
                                 std::vector<float>& buf) {
  if constexpr (std::is_same_v<xT, float>) {
    if (stride == 1) return x;
  }
  buf.resize(cols);
  if (stride == 1) {
    for (int64_t k = 0; k < cols; k += kLanes) {
      const int64_t n = std::min(kLanes, cols - k);
      load_as_float(x + k, n).store(buf.data() + k, n);
    }
  } else {
    for (int64_t k = 0; k < cols; ++k) buf[k] = static_cast<float>(x[k * stride]);
  }
  return buf.data();
}

inline float lane_max(const Vec& v) {
  alignas(64) float b[kLanes];
  v.store(b);
  float m = b[0];
  for (int64_t k = 1; k < kLanes; ++k) m = (std::isnan(b[k]) || b[k] > m) ? b[k] : m;
  return m;
}

// y is in [0, cols). `dot`: also Σ a_c·x_c and Σ a_c (a == nullptr: a_c = 1).
inline RowStats row_stats(const float* x, int64_t cols, int64_t y, const float* a, bool dot) {
  const Vec zero(0.f), ninf(-std::numeric_limits<float>::infinity());
  Vec vmax = ninf, vax = zero, vas = zero;
  for (int64_t k = 0; k < cols; k += kLanes) {
    const int64_t n = std::min(kLanes, cols - k);
    const Vec v = Vec::loadu(x + k, n);
    vmax = at::vec::maximum(vmax, Vec::set(ninf, v, n));
    if (dot) {
      const Vec w = a ? Vec::loadu(a + k, n) : Vec::set(zero, Vec(1.f), n);
      vax = vax + w * v;  // missing lanes load as 0
      vas = vas + w;
    }
  }
  RowStats r;
  r.m = lane_max(vmax);
  const Vec m(r.m);
  Vec vs = zero, vso = zero;
  for (int64_t k = 0; k < cols; k += kLanes) {
    const int64_t n = std::min(kLanes, cols - k);
    const Vec e = Vec::set(zero, (Vec::loadu(x + k, n) - m).exp(), n);
    vs = vs + e;
    if (y >= k && y < k + n) {
      alignas(64) float b[kLanes];
      e.store(b);
      b[y - k] = 0.f;
      vso = vso + Vec::loadu(b);
    } else {
      vso = vso + e;
    }
  }
  r.s = lane_sum(vs);
  r.s_other = lane_sum(vso);
  if (dot) {
    r.ax = lane_sum(vax);
    r.a_sum = lane_sum(vas);
  }
  return r;
}

// g (contiguous floats) for one row; g may alias nothing else.
inline void row_grad(const float* x, int64_t cols, int64_t y, const RowStats& st,
                     const RowCoefs& c, const float* a, float* g) {
  const Vec m(st.m), inv_s(1.f / st.s), inv_so(1.f / st.s_other), one(1.f), zero(0.f);
  const Vec cp(c.c_p), cr(c.c_r), ca(c.c_a);
  for (int64_t k = 0; k < cols; k += kLanes) {
    const int64_t n = std::min(kLanes, cols - k);
    const Vec e = (Vec::loadu(x + k, n) - m).exp();
    const Vec ratio = Vec::blendv(at::vec::minimum(e * inv_so, one), zero, e == zero);
    Vec gv = cp * (e * inv_s) + cr * ratio;
    gv = gv - (a ? ca * Vec::loadu(a + k, n) : ca);
    gv.store(g + k, n);
  }
  const float e_y = std::exp(x[y] - st.m);
  g[y] = c.c_p * (e_y / st.s) - c.c_a * (a ? a[y] : 1.f) + c.c_y;
}

// Writes a row's float gradient (or zeros when !live) to its strided destination.
template <typename xT>
inline void store_row(xT* dst, int64_t stride, int64_t cols, const float* g, bool live) {
  if (stride == 1) {
    for (int64_t k = 0; k < cols; k += kLanes) {
      const int64_t n = std::min(kLanes, cols - k);
      store_as(dst + k, live ? Vec::loadu(g + k, n) : Vec(0.f), n);
    }
    return;
  }
  for (int64_t k = 0; k < cols; ++k) dst[k * stride] = static_cast<xT>(live ? g[k] : 0.f);
}

// f(row_begin, row_end) over rows in parallel, about kChunk elements per task.
template <typename F>
inline void for_rows(int64_t rows, int64_t cols, F&& f) {
  const int64_t grain = std::max<int64_t>(1, kChunk / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain, f);
}

// The rows of [N, C, D] logits (D = a.inner; row r = (n, s) starts at
// n·C·D + s and its classes are D apart), in parallel. For each row,
//   bool row(const float* x, int64_t y, float gscale, float* g, float& loss, float& w)
// gives its loss and weight and, with g, its gradient times gscale; it
// returns false for a dead (ignored) row, whose gradient is zeros. The loss
// and weight land in per-row slots, summed in row order, so results do not
// depend on the thread count. A mean divides by Σ w when `weighted`, else by
// the row count; `fwd_gscale` is the forward gradient's factor.
template <typename xT, typename tT, typename Options, typename Row>
void rows_typed(const LaunchArgs<Options>& a, bool backward, float fwd_gscale, bool weighted,
                const Row& row) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  const auto* g_out = static_cast<const xT*>(a.grad_output);
  auto* grad = static_cast<xT*>(a.grad);
  const int64_t C = a.cols, D = a.inner;
  const bool want_grad = backward || a.write_grad;
  std::vector<float> row_loss(a.rows), row_w(weighted ? a.rows : 0);
  for_rows(a.rows, C, [&](int64_t r0, int64_t r1) {
    std::vector<float> xbuf, gbuf(want_grad ? C : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / D;
      const int64_t base = n * C * D + (r - n * D);
      const float* xr = row_as_float(x + base, D, C, xbuf);
      const bool direct = std::is_same_v<xT, float> && D == 1;
      float* g = want_grad ? (direct ? reinterpret_cast<float*>(grad + base) : gbuf.data())
                           : nullptr;
      const float gscale = backward ? static_cast<float>(g_out[r]) : fwd_gscale;
      float w = 0.f;
      const bool live = row(xr, static_cast<int64_t>(t[r]), gscale, g, row_loss[r], w);
      if (weighted) row_w[r] = w;
      if (want_grad && (!direct || !live)) store_row(grad + base, D, C, g, live);
    }
  });
  if (backward) return;
  auto* out = static_cast<xT*>(a.out);
  if (!a.reduce) {
    for (int64_t r = 0; r < a.rows; ++r) out[r] = static_cast<xT>(row_loss[r]);
    return;
  }
  double total = 0.0, wsum = 0.0;
  for (int64_t r = 0; r < a.rows; ++r) {
    total += row_loss[r];
    if (weighted) wsum += row_w[r];
  }
  float scale = 1.f;
  if (a.mean) {
    // Σ w = 0 (or no rows): loss 0/0 = NaN and gradient 0, as cross_entropy gives;
    // a negative Σ w is a real divisor (the gradient keeps its sign, as there).
    if (weighted) scale = wsum != 0 ? static_cast<float>(1.0 / wsum) : 0.f;
    total = total / (weighted ? wsum : static_cast<double>(a.rows));
  }
  out[0] = static_cast<xT>(static_cast<float>(total));
  *a.scale = scale;
}

template <typename Options, typename Row>
void run_rows(const LaunchArgs<Options>& a, Pass pass, float fwd_gscale, bool weighted,
              const Row& row) {
  dispatch_input(a.input_dtype, [&](auto xs) {
    dispatch_index(a.target_dtype, [&](auto ts) {
      rows_typed<decltype(xs), decltype(ts)>(a, pass == Pass::Backward, fwd_gscale, weighted,
                                             row);
    });
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
