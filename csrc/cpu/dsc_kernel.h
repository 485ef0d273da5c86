// Fused self-adjusting DSC on the CPU, compiled per capability
// (dsc_{default,avx2,avx512}.cpp), on the row machinery of softmax_rows.h.
// With q = 1 - p, p~ = q^α·p and den = p~ + 1 + smooth:
//   dL/dx_j = K·[j = y] - K·(p_j / q)·[j ≠ y],
//   K = -(2 + smooth)/den² · p · q^α · (q - α·p).
#pragma once
#include <cmath>
#include <limits>
#include <vector>

#include "../dsc_args.h"
#include "softmax_rows.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

inline float dsc_row(const DscArgs& a, const float* x, int64_t y_raw, float gscale, float* g) {
  const int64_t C = a.cols;
  const bool in_range = y_raw >= 0 && y_raw < C;
  const int64_t y = in_range ? y_raw : 0;
  const RowStats st = row_stats(x, C, y, nullptr, false);
  const float log_s = std::log(st.s);
  const float p = std::exp(std::min(x[y] - st.m - log_s, 0.f));
  const float log_q = std::log(st.s_other) - log_s;
  const float q_a = a.alpha == 0.f ? 1.f : std::exp(a.alpha * log_q);
  const float p_t = q_a * p;
  const float den = p_t + 1.f + a.smooth;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (g) {
    const float scale = in_range ? gscale : nan;
    const float k = -(2.f + a.smooth) / (den * den) * p * q_a * (std::exp(log_q) - a.alpha * p) * scale;
    RowCoefs c;
    c.c_r = -k;
    c.c_y = k;
    row_grad(x, C, y, st, c, nullptr, g);
  }
  return in_range ? 1.f - (2.f * p_t + a.smooth) / den : nan;
}

template <typename xT, typename tT>
void dsc_run_typed(const DscArgs& a, bool backward) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  const auto* g_out = static_cast<const xT*>(a.grad_output);
  auto* grad = static_cast<xT*>(a.grad);
  const int64_t C = a.cols;
  const bool want_grad = backward || a.write_grad;
  std::vector<float> row_loss(a.rows);
  for_rows(a.rows, C, [&](int64_t r0, int64_t r1) {
    std::vector<float> xbuf, gbuf(want_grad ? C : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = row_as_float(x + r * C, 1, C, xbuf);
      constexpr bool direct = std::is_same_v<xT, float>;
      float* g = want_grad ? (direct ? reinterpret_cast<float*>(grad + r * C) : gbuf.data())
                           : nullptr;
      const float gscale = backward ? static_cast<float>(g_out[r]) : a.grad_scale;
      row_loss[r] = dsc_row(a, xr, static_cast<int64_t>(t[r]), gscale, g);
      if (want_grad && !direct) store_row(grad + r * C, 1, C, g, true);
    }
  });
  if (backward) return;
  auto* out = static_cast<xT*>(a.out);
  if (!a.reduce) {
    for (int64_t r = 0; r < a.rows; ++r) out[r] = static_cast<xT>(row_loss[r]);
    return;
  }
  double total = 0.0;
  for (int64_t r = 0; r < a.rows; ++r) total += row_loss[r];
  if (a.mean) total /= static_cast<double>(a.rows);  // no rows: 0/0 = NaN, as torch's mean
  out[0] = static_cast<xT>(static_cast<float>(total));
  *a.scale = 1.f;
}

void dsc_forward(const DscArgs& a) {
  dispatch_input(a.input_dtype, [&](auto xs) {
    dispatch_index(a.target_dtype, [&](auto ts) { dsc_run_typed<decltype(xs), decltype(ts)>(a, false); });
  });
}

void dsc_backward(const DscArgs& a) {
  dispatch_input(a.input_dtype, [&](auto xs) {
    dispatch_index(a.target_dtype, [&](auto ts) { dsc_run_typed<decltype(xs), decltype(ts)>(a, true); });
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
