// The per-row maths of the softmax row losses (softmax focal, self-adjusting
// DSC) on the fast helpers of fast_math.cuh, callable from host code too so
// that tests/test_cuda_rows_math.py can run it on a CPU against float64 torch.
// The twin of _focal_terms / _dsc_terms in fused_losses/triton/.
//
// A row of C logits x, target class y. From the row statistics
//   m = max_j x_j,  e_j = exp(x_j - m),  s_other = Σ_{j≠y} e_j,  s = s_other + e_y
// every loss here has the gradient
//   g_j = c_p·e_j/s + c_r·e_j/s_other - c_a·a_j      (j ≠ y)
//   g_y = c_y - c_a·a_y
// with per-row scalars c_*; e_j/s_other = p_j/(1 - p_y) stays in [0, 1], and
// c_y is formed without the cancellation of p_y - 1 (1 - p_y = s_other/s).
// So a kernel keeps e'_j = e_j·[j ≠ y] and writes g_j = e'_j·k1 - c_a·a_j with
// k1 = c_p/s + c_r/s_other (row_k1), then g_y on its own.
#pragma once
#include <cuda_runtime.h>

#include <cmath>

#include "fast_math.cuh"

namespace fused_losses {
namespace rowmath {

// One row's statistics (see the header). ax = Σ a_c·x_c and a_sum = Σ a_c
// only with label smoothing (a_c = 1 without a per-class α); n_cls = C.
struct RowIn {
  float m, s, s_other, x_y, ax, a_sum, n_cls;
};

// The row's loss and gradient coefficients (before any scale).
struct RowOut {
  float loss, c_p, c_r, c_a, c_y;
};

// (ln s, ln s_other): lg2.approx, absolute error ~2e-7 (both feed
// differences or exponents); ln 0 = -inf when every other class underflowed.
// s >= 1 (the max's e is 1); below 2, ln s = log1p(s - 1) with s - 1 exact, so
// a row whose other classes vanish (C = 1, or p_y -> 1) keeps ln s ≈ 0 exact
// (the label-smoothing term a_sum·(m + ln s) - ax is then 0, not lg2's 2e-7).
struct RowLogs {
  float log_s, log_o;
};
FL_HD RowLogs row_logs(float s, float s_other) {
  RowLogs l;
  l.log_s = s < 2.f ? fast::log1p_small(s - 1.f) : fast::log_(s);
  l.log_o = s_other > 0.f ? fast::log_(s_other) : -INFINITY;
  return l;
}

// ln p_y without cancellation: for p_y >= 1/2 (e_y >= s_other) it is
// -log1p(s_other/e_y), which keeps its digits as p_y -> 1; else
// x_y - m - ln s (|ln p_y| > ln 2, so the absolute error of ln s is relative).
FL_HD float log_p_target(const RowIn& r, float log_s) {
  const float ratio = r.s_other * fast::rcp(fast::exp_(r.x_y - r.m));
  if (ratio <= 1.f) return -fast::log1p_small(ratio);
  return fminf(r.x_y - r.m - log_s, 0.f);
}

// 1/s_other, 0 when s_other = 0 (then every e'_j is 0 too: no 0·inf).
FL_HD float inv_other(float s_other) { return s_other > 0.f ? fast::rcp(s_other) : 0.f; }

// k1 of the header: the factor of e'_j in g_j.
FL_HD float row_k1(const RowOut& o, const RowIn& r) {
  return o.c_p * fast::rcp(r.s) + o.c_r * inv_other(r.s_other);
}

// Softmax focal loss of one row, weight w_y = α_y (1 without α), focal
// exponent γ, label smoothing ε:
//   ce = -w_y·ln p_y, with ε: (1-ε)·ce + ε/C·(a_sum·lse - ax), lse = m + ln s
//   f = (1 - p_y)^γ = exp(γ·(ln s_other - ln s)),  loss = f·ce
//   G = γ·f·p_y·ce  (d f/d x_y·ce, spread over j ≠ y by p_j/(1-p_y))
//   c_p = f·(1-ε)·w_y (+ f·ε·a_sum/C),  c_r = G,  c_a = f·ε/C
//   c_y = -(f·(1-ε)·w_y·s_other/s + G) (+ f·ε·a_sum/C·p_y)
FL_HD RowOut focal_row(const RowIn& r, float w_y, float gamma, float eps) {
  const RowLogs l = row_logs(r.s, r.s_other);
  const float log_py = log_p_target(r, l.log_s);
  float ce = -w_y * log_py;
  if (eps != 0.f) ce = (1.f - eps) * ce + eps / r.n_cls * (r.a_sum * (r.m + l.log_s) - r.ax);
  RowOut o;
  float f = 1.f;
  o.c_r = 0.f;
  if (gamma != 0.f) {
    f = fast::ex2((gamma * fast::kLog2e) * (l.log_o - l.log_s));
    o.c_r = gamma * f * fast::exp_(log_py) * ce;
  }
  o.loss = f * ce;
  o.c_p = f * (1.f - eps) * w_y;
  o.c_y = -(o.c_p * (r.s_other * fast::rcp(r.s)) + o.c_r);
  o.c_a = 0.f;
  if (eps != 0.f) {
    const float c_smooth = f * eps * r.a_sum / r.n_cls;
    o.c_p += c_smooth;
    o.c_y += c_smooth * fast::exp_(log_py);
    o.c_a = f * eps / r.n_cls;
  }
  return o;
}

// Self-adjusting DSC of one row (exponent α, smoothing s):
//   p = p_y, q = 1 - p = s_other/s, p~ = q^α·p, den = p~ + 1 + s
//   loss = 1 - (2p~ + s)/den = ((1 - q^α) + q^α·q)/den   (no cancellation as p -> 1)
//   K = -(2 + s)/den² · p·q^α·(q - α·p);  c_y = K, c_r = -K, c_p = c_a = 0
FL_HD RowOut dsc_row(const RowIn& r, float alpha, float smooth) {
  const RowLogs l = row_logs(r.s, r.s_other);
  const float p = fast::exp_(log_p_target(r, l.log_s));
  const float q = r.s_other * fast::rcp(r.s);
  const float q_a = alpha == 0.f ? 1.f : fast::ex2((alpha * fast::kLog2e) * (l.log_o - l.log_s));
  const float den = q_a * p + 1.f + smooth;
  const float inv_den = fast::rcp(den);
  RowOut o;
  o.loss = ((1.f - q_a) + q_a * q) * inv_den;
  const float k = -(2.f + smooth) * (inv_den * inv_den) * p * q_a * (q - alpha * p);
  o.c_p = 0.f;
  o.c_a = 0.f;
  o.c_r = -k;
  o.c_y = k;
  return o;
}

}  // namespace rowmath
}  // namespace fused_losses
