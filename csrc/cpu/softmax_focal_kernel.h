// Fused softmax focal loss on the CPU, written once and compiled per
// capability (softmax_focal_{default,avx2,avx512}.cpp). Rows run in parallel;
// each row's loss (and α_y) lands in its own slot and the slots are summed in
// row order, so results do not depend on the thread count.
#pragma once
#include <cmath>
#include <limits>
#include <vector>

#include "../softmax_focal_args.h"
#include "softmax_rows.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

// Loss and α_y of one row (0, 0 when ignored; NaN loss for an out-of-range
// target). With `g`, also the row's gradient times `gscale` into g.
inline void softmax_focal_row(const SoftmaxFocalArgs& a, const float* x, int64_t y_raw,
                              float gscale, float* g, float& loss, float& w) {
  const int64_t C = a.cols;
  const bool keep = !(a.has_ignore && y_raw == a.ignore_index);
  const bool in_range = y_raw >= 0 && y_raw < C;
  const int64_t y = in_range ? y_raw : 0;
  const bool smooth = a.smoothing != 0.f;
  const RowStats st = row_stats(x, C, y, a.alpha, smooth);
  const float log_s = std::log(st.s);
  const float lse = st.m + log_s;
  const float log_py = std::min(x[y] - lse, 0.f);
  const float w_y = a.alpha ? a.alpha[y] : 1.f;
  const float n_cls = static_cast<float>(C);
  float ce = -w_y * log_py;
  if (smooth) ce = (1.f - a.smoothing) * ce + a.smoothing / n_cls * (st.a_sum * lse - st.ax);
  const float f = a.gamma == 0.f ? 1.f : std::exp(a.gamma * (std::log(st.s_other) - log_s));
  loss = keep ? (in_range ? f * ce : std::numeric_limits<float>::quiet_NaN()) : 0.f;
  w = keep ? w_y : 0.f;
  if (!g || !keep) return;
  const float scale = in_range ? gscale : std::numeric_limits<float>::quiet_NaN();
  const float big_g = a.gamma == 0.f ? 0.f : a.gamma * f * std::exp(log_py) * ce;
  RowCoefs c;
  c.c_p = f * (1.f - a.smoothing) * w_y;
  if (smooth) {
    c.c_p += f * a.smoothing * st.a_sum / n_cls;
    c.c_a = f * a.smoothing / n_cls;
  }
  c.c_y = -(f * (1.f - a.smoothing) * w_y + big_g);
  c.c_r = big_g;
  c.c_p *= scale;
  c.c_r *= scale;
  c.c_a *= scale;
  c.c_y *= scale;
  row_grad(x, C, y, st, c, a.alpha, g);
}

template <typename xT, typename tT>
void run_typed(const SoftmaxFocalArgs& a, bool backward) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  const auto* g_out = static_cast<const xT*>(a.grad_output);
  auto* grad = static_cast<xT*>(a.grad);
  const int64_t C = a.cols, D = a.spatial;
  const bool want_grad = backward || a.write_grad;
  std::vector<float> row_loss(a.rows), row_w(a.rows);
  for_rows(a.rows, C, [&](int64_t r0, int64_t r1) {
    std::vector<float> xbuf, gbuf(want_grad ? C : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / D;
      const int64_t base = n * C * D + (r - n * D);
      const float* xr = row_as_float(x + base, D, C, xbuf);
      const bool direct = std::is_same_v<xT, float> && D == 1;
      float* g = want_grad ? (direct ? reinterpret_cast<float*>(grad + base) : gbuf.data())
                           : nullptr;
      const float gscale = backward ? static_cast<float>(g_out[r]) : 1.f;
      softmax_focal_row(a, xr, static_cast<int64_t>(t[r]), gscale, g, row_loss[r], row_w[r]);
      if (want_grad) {
        const bool live = !(a.has_ignore && static_cast<int64_t>(t[r]) == a.ignore_index);
        if (!direct || !live) store_row(grad + base, D, C, g, live);
      }
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
    wsum += row_w[r];
  }
  float scale = 1.f;
  if (a.mean) {
    scale = wsum > 0 ? static_cast<float>(1.0 / wsum) : 0.f;
    total = total / wsum;  // 0/0 = NaN, as cross_entropy
  }
  out[0] = static_cast<xT>(static_cast<float>(total));
  *a.scale = scale;
}

void softmax_focal_forward(const SoftmaxFocalArgs& a) {
  dispatch_input(a.input_dtype, [&](auto xs) {
    dispatch_index(a.target_dtype, [&](auto ts) { run_typed<decltype(xs), decltype(ts)>(a, false); });
  });
}

void softmax_focal_backward(const SoftmaxFocalArgs& a) {
  dispatch_input(a.input_dtype, [&](auto xs) {
    dispatch_index(a.target_dtype, [&](auto ts) { run_typed<decltype(xs), decltype(ts)>(a, true); });
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
