// Fused softmax focal loss on the CPU, written once and compiled per
// capability (softmax_focal_{default,avx2,avx512}.cpp), on the row driver of
// softmax_rows.h. Per row (fused_losses/reference/softmax_focal.py), p =
// softmax(x), α_c = 1 without alpha:
//   CE_ε = (1-ε)·(-α_y·log p_y) + (ε/C)·Σ_c(-α_c·log p_c),  loss = (1-p_y)^γ · CE_ε
// Ignored rows give 0 (and weight 0); an out-of-range target a NaN row. A
// mean divides by Σ α_y, which `scale` also reports, the gradient unscaled.
#pragma once
#include <cmath>
#include <limits>

#include "softmax_rows.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

using SoftmaxFocalArgs = LaunchArgs<SoftmaxFocalOptions>;

// Loss and α_y of one row (0, 0 when ignored; NaN loss for an out-of-range
// target). With `g`, also the row's gradient times `gscale` into g.
inline bool softmax_focal_row(const SoftmaxFocalArgs& a, const float* x, int64_t y_raw,
                              float gscale, float* g, float& loss, float& w) {
  const SoftmaxFocalOptions& o = a.opt;
  const float* alpha = a.operands[SoftmaxFocalOperands::alpha].ptr;
  const int64_t C = a.cols;
  const bool keep = !(o.has_ignore_index && y_raw == o.ignore_index);
  const bool in_range = y_raw >= 0 && y_raw < C;
  const int64_t y = in_range ? y_raw : 0;
  const bool smooth = o.label_smoothing != 0.f;
  const RowStats st = row_stats(x, C, y, alpha, smooth);
  const float log_s = std::log(st.s);
  const float lse = st.m + log_s;
  const float log_py = std::min(x[y] - lse, 0.f);
  const float w_y = alpha ? alpha[y] : 1.f;
  const float n_cls = static_cast<float>(C);
  float ce = -w_y * log_py;
  if (smooth) ce = (1.f - o.label_smoothing) * ce + o.label_smoothing / n_cls * (st.a_sum * lse - st.ax);
  const float f = o.gamma == 0.f ? 1.f : std::exp(o.gamma * (std::log(st.s_other) - log_s));
  loss = keep ? (in_range ? f * ce : std::numeric_limits<float>::quiet_NaN()) : 0.f;
  w = keep ? w_y : 0.f;
  if (!g || !keep) return keep;
  const float scale = in_range ? gscale : std::numeric_limits<float>::quiet_NaN();
  const float big_g = o.gamma == 0.f ? 0.f : o.gamma * f * std::exp(log_py) * ce;
  RowCoefs c;
  c.c_p = f * (1.f - o.label_smoothing) * w_y;
  if (smooth) {
    c.c_p += f * o.label_smoothing * st.a_sum / n_cls;
    c.c_a = f * o.label_smoothing / n_cls;
  }
  c.c_y = -(f * (1.f - o.label_smoothing) * w_y + big_g);
  c.c_r = big_g;
  c.c_p *= scale;
  c.c_r *= scale;
  c.c_a *= scale;
  c.c_y *= scale;
  row_grad(x, C, y, st, c, alpha, g);
  return keep;
}

void run(const SoftmaxFocalArgs& a, Pass pass) {
  run_rows(a, pass, 1.f, true,
           [&](const float* x, int64_t y, float gscale, float* g, float& loss, float& w) {
             return softmax_focal_row(a, x, y, gscale, g, loss, w);
           });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
