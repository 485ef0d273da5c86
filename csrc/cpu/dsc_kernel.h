// Fused self-adjusting DSC on the CPU (Li et al., ACL 2020), compiled per
// capability (dsc_{default,avx2,avx512}.cpp), on the row driver of
// softmax_rows.h. Per row of [N, C] logits with class index y, p = softmax(x)[y]:
//   p~ = (1-p)^α·p,  loss = 1 - (2p~ + smooth) / (p~ + 1 + smooth)
// An out-of-range y gives a NaN row (never an out-of-row read). With q = 1 - p
// and den = p~ + 1 + smooth:
//   dL/dx_j = K·[j = y] - K·(p_j / q)·[j ≠ y],
//   K = -(2 + smooth)/den² · p · q^α · (q - α·p).
#pragma once
#include <cmath>
#include <limits>

#include "softmax_rows.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

using DscArgs = LaunchArgs<DscOptions>;

inline float dsc_row(const DscArgs& a, const float* x, int64_t y_raw, float gscale, float* g) {
  const float alpha = a.opt.alpha, smooth = a.opt.smooth;
  const int64_t C = a.cols;
  const bool in_range = y_raw >= 0 && y_raw < C;
  const int64_t y = in_range ? y_raw : 0;
  const RowStats st = row_stats(x, C, y, nullptr, false);
  const float log_s = std::log(st.s);
  const float p = std::exp(std::min(x[y] - st.m - log_s, 0.f));
  const float log_q = std::log(st.s_other) - log_s;
  const float q_a = alpha == 0.f ? 1.f : std::exp(alpha * log_q);
  const float p_t = q_a * p;
  const float den = p_t + 1.f + smooth;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (g) {
    const float scale = in_range ? gscale : nan;
    const float k = -(2.f + smooth) / (den * den) * p * q_a * (std::exp(log_q) - alpha * p) * scale;
    RowCoefs c;
    c.c_r = -k;
    c.c_y = k;
    row_grad(x, C, y, st, c, nullptr, g);
  }
  return in_range ? 1.f - (2.f * p_t + smooth) / den : nan;
}

void run(const DscArgs& a, Pass pass) {
  // A mean over rows has a known divisor: the forward gradient takes it now.
  const float grad_scale = a.mean && a.rows ? 1.f / static_cast<float>(a.rows) : 1.f;
  run_rows(a, pass, grad_scale, false,
           [&](const float* x, int64_t y, float gscale, float* g, float& loss, float&) {
             loss = dsc_row(a, x, y, gscale, g);
             return true;
           });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
