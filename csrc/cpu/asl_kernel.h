// Fused asymmetric loss (ASL) on the CPU, written once and compiled per
// capability (asl_default.cpp, asl_avx2.cpp, asl_avx512.cpp), on the chunk
// driver of kernel_common.h. Formula and subgradients:
// fused_losses/reference/asl.py. Targets are smoothed first (t·(1-ε) + ε/2);
// hard 0/1 targets (bool/integer without smoothing, or vectors whose lanes are
// all 0/1 after it) take a path with one log per lane. pos_weight scales the
// positive term before the focal factor.
#pragma once
#include <algorithm>
#include <cmath>

#include "class_tables.h"
#include "kernel_common.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

using AslArgs = LaunchArgs<AslOptions>;

// Per-call constants, derived from the options once and broadcast.
struct AslConsts {
  Vec gamma_pos, gamma_neg, clip, log_eps, pos_weight, smooth_scale, smooth_shift;
  int int_pos, int_neg;  // γ₊, γ₋ when both are integers in 0..4 (powers by products), else -1
  bool clip_on, has_eps, hard, focal, detach, smooth;
  bool pw_value;  // the float pos_weight applies (no tensor operand)
  explicit AslConsts(const AslArgs& a)
      : gamma_pos(a.opt.gamma_pos), gamma_neg(a.opt.gamma_neg), clip(a.opt.clip),
        log_eps(a.opt.eps > 0.f ? static_cast<float>(std::log(static_cast<double>(a.opt.eps)))
                                : 0.f),
        pos_weight(a.opt.pos_weight), smooth_scale(1.f - a.opt.label_smoothing),
        smooth_shift(0.5f * a.opt.label_smoothing),
        int_pos(-1), int_neg(-1), clip_on(a.opt.clip > 0.f), has_eps(a.opt.eps > 0.f),
        // Smoothing turns 0/1 labels soft: only unsmoothed integer targets are 0/1.
        hard(!is_floating(a.target_dtype) && a.opt.label_smoothing == 0.f),
        focal(a.opt.gamma_pos != 0.f || a.opt.gamma_neg != 0.f),
        detach(a.opt.detach_focal_weight), smooth(a.opt.label_smoothing != 0.f),
        pw_value(a.opt.has_pos_weight &&
                 a.operands[AslOperands::pos_weight].ptr == nullptr) {
    for (int k = 0; k <= 4; ++k) {
      if (a.opt.gamma_pos == static_cast<float>(k)) int_pos = k;
      if (a.opt.gamma_neg == static_cast<float>(k)) int_neg = k;
    }
    if (int_pos < 0 || int_neg < 0) int_pos = int_neg = -1;
  }
};

// Applies the eps clamp to a log-probability and its derivative (the
// derivative passes at equality, as torch's clamp does; a NaN stays NaN).
inline void clamp_log(const AslConsts& c, Vec& log_v, Vec& dlog_v) {
  if (!c.has_eps) return;
  const Vec below = log_v < c.log_eps;
  dlog_v = Vec::blendv(dlog_v, Vec(0.f), below);
  log_v = Vec::blendv(log_v, c.log_eps, below);
}

// Focal factor and the loss/gradient update: loss·F, grad·F + γ·F·dlog_q·loss.
inline void apply_focal(const AslConsts& c, const Vec& gamma, const Vec& f, const Vec& dlog_q,
                        Vec& loss, Vec& grad) {
  grad = f * grad;
  if (!c.detach) grad = grad + gamma * f * dlog_q * loss;
  loss = f * loss;
}

// exp(γ·log_q) where log_q > -inf, else 0^γ (1 for γ = 0).
inline Vec focal_from_log(const Vec& gamma, const Vec& log_q) {
  const Vec zero(0.f), one(1.f), ninf(-INFINITY);
  const Vec live = log_q > ninf;
  Vec f = (gamma * Vec::blendv(zero, log_q, live)).exp();
  return Vec::blendv(Vec::blendv(zero, one, gamma == zero), f, live);
}

// Hard targets: one log per lane. Positives need log1p(e) (log σ(x)), negatives
// log p_m: log1p(-d) while d < 1/2, else log(σ(-x) + clip) (clip = 0: log1p(e)
// again, for log σ(-x)). All go through Goldberg's log(u)·v/(u-1).
inline void asl_hard(const Vec& x, const Vec& t, const AslConsts& c, const Vec* pw, Vec& loss,
                     Vec& grad) {
  const Vec zero(0.f), one(1.f), half(0.5f);
  const Sigmoids s = sigmoids(x);
  const Vec pos = t > half;
  const Vec lin = Vec::blendv(at::vec::maximum(x, zero).neg(), at::vec::minimum(x, zero), pos);
  Vec u = one + s.e, v = s.e, d, pm;
  if (c.clip_on) {
    const Vec diff = s.s_p - c.clip;
    d = Vec::blendv(diff, zero, diff < zero);
    const Vec small = d < half;
    pm = Vec::blendv(s.s_n + c.clip, one - d, small);
    u = Vec::blendv(pm, u, pos);
    v = Vec::blendv(Vec::blendv(u - one, d.neg(), small), v, pos);  // big d: v/(u-1) = 1
  }
  const Vec den = u - one;
  const Vec big_l = Vec::blendv(u.log() * (v / den), v, den == zero);
  Vec log_v = c.clip_on ? Vec::blendv(big_l, lin - big_l, pos) : lin - big_l;
  Vec dlog_v;
  if (c.clip_on) {
    const Vec on = s.s_p >= c.clip;
    dlog_v = Vec::blendv(Vec::blendv(zero, (s.s_p * s.s_n / pm).neg(), on), s.s_n, pos);
  } else {
    dlog_v = Vec::blendv(s.s_p.neg(), s.s_n, pos);
  }
  clamp_log(c, log_v, dlog_v);
  loss = log_v.neg();
  grad = dlog_v.neg();
  if (pw) {  // positives only, before the focal factor (whose derivative uses the loss)
    const Vec scale = Vec::blendv(one, *pw, pos);
    loss = loss * scale;
    grad = grad * scale;
  }
  if (!c.focal) return;
  const Vec gamma = Vec::blendv(c.gamma_neg, c.gamma_pos, pos);
  // 1 - p_t: σ(-x) for positives; d (or σ(x) without clip) for negatives.
  const Vec q = Vec::blendv(c.clip_on ? d : s.s_p, s.s_n, pos);
  Vec f;
  if (c.int_pos >= 0) {
    f = Vec::blendv(int_pow(q, c.int_neg), int_pow(q, c.int_pos), pos);
  } else {
    const Vec ninf(-INFINITY);
    const Vec log_sig = lin - (s.e).log1p();  // log σ(x) (pos) or log σ(-x) (neg)
    // log q: log σ(-x) = log σ(x) - x for positives; log d or log σ(x) for negatives.
    Vec log_q = Vec::blendv(c.clip_on ? Vec::blendv(ninf, d.log(), d > zero) : log_sig + x,
                            log_sig - x, pos);
    f = focal_from_log(gamma, log_q);
  }
  Vec dlog_q;
  if (!c.detach) {
    Vec neg = s.s_n;
    if (c.clip_on) {
      const Vec live = d > zero;
      neg = Vec::blendv(zero, s.s_p * s.s_n / Vec::blendv(one, d, live), live);
    }
    dlog_q = Vec::blendv(neg, s.s_p.neg(), pos);
  }
  apply_focal(c, gamma, f, dlog_q, loss, grad);
}

// Soft targets: the general formula, the twin of asl_terms in triton/asl.py.
inline void asl_soft(const Vec& x, const Vec& t, const AslConsts& c, const Vec* pw, Vec& loss,
                     Vec& grad) {
  const Vec zero(0.f), one(1.f), half(0.5f), ninf(-INFINITY);
  const SigmoidTerms s = sigmoid_terms(x);
  Vec log_pm = s.log_n, dlog_pm = s.s_p.neg(), log_d = s.log_p, dlog_d = s.s_n;
  Vec live_d = x == x;  // all lanes, except NaN ones (whose loss is NaN anyway)
  if (c.clip_on) {
    const Vec diff = s.s_p - c.clip;
    const Vec below_clip = diff < zero;  // 1 - p + clip > 1: clamped, no gradient
    const Vec d = Vec::blendv(diff, zero, below_clip);
    const Vec small = d < half;
    const Vec pm = Vec::blendv(s.s_n + c.clip, one - d, small);
    // Goldberg's log1p holds for any argument > -1, here -d in (-1/2, 0].
    log_pm = Vec::blendv((s.s_n + c.clip).log(), log1p_nonneg(at::vec::minimum(d, half).neg()),
                         small);
    const Vec sp_sn = s.s_p * s.s_n;
    dlog_pm = Vec::blendv(zero, (sp_sn / pm).neg(), s.s_p >= c.clip);
    live_d = d > zero;
    const Vec d_safe = Vec::blendv(one, d, live_d);
    log_d = Vec::blendv(ninf, d_safe.log(), live_d);
    dlog_d = Vec::blendv(zero, sp_sn / d_safe, live_d);
  }
  Vec lp = s.log_p, dlp = s.s_n;
  clamp_log(c, lp, dlp);
  clamp_log(c, log_pm, dlog_pm);
  const Vec omt = one - t;
  const Vec pos_t = pw ? t * *pw : t;
  loss = (pos_t * lp + omt * log_pm).neg();
  grad = (pos_t * dlp + omt * dlog_pm).neg();
  if (!c.focal) return;
  const Vec gamma = c.gamma_pos * t + c.gamma_neg * omt;
  const Vec live = (t > zero) | live_d;
  const Vec a = Vec::blendv(zero, t.log() + s.log_n, live);
  const Vec b = Vec::blendv(zero, t.neg().log1p() + log_d, live);
  const Vec both = log_add_exp(a, b);
  const Vec log_q = Vec::blendv(ninf, both, live);
  const Vec f = focal_from_log(gamma, log_q);
  Vec dlog_q;
  if (!c.detach) {
    const Vec coef = omt * Vec::blendv(zero, one, live_d) - t;
    dlog_q = Vec::blendv(zero, coef * (s.log_p + s.log_n - both).exp(), live);
  }
  apply_focal(c, gamma, f, dlog_q, loss, grad);
}

inline void asl_vec(const Vec& x, Vec t, const AslConsts& c, const OperandRow& w,
                    const OperandRow& pw_row, int64_t col, int64_t n, Vec& loss, Vec& grad) {
  if (c.smooth) t = t * c.smooth_scale + c.smooth_shift;
  Vec pw_vec;
  const Vec* pw = nullptr;
  if (pw_row.base) {
    pw_vec = pw_row.load(col, n);
    pw = &pw_vec;
  } else if (c.pw_value) {
    pw = &c.pos_weight;
  }
  // all_hard after smoothing: lanes it left exactly 0/1 are hard labels.
  if (c.hard || all_hard(t)) {
    asl_hard(x, t, c, pw, loss, grad);
  } else {
    asl_soft(x, t, c, pw, loss, grad);
  }
  if (w.base) {
    const Vec wv = w.load(col, n);
    loss = loss * wv;
    grad = grad * wv;
  }
}

// The hot path (class_tables.h): 0/1 targets, integer γ± in 0..4, clip > eps,
// a detached focal weight, per-class or absent weight/pos_weight, no smoothing.
// With p = σ(x), q = σ(-x) and d = max(p - clip, 0):
//   t = 1: loss = -k₁·q^γ₊·log p  (log p clamped at log eps),  grad = -k₁·q^γ₊·q  (0 where clamped)
//   t = 0: loss = -k₀·d^γ₋·log(1 - d),  grad = k₀·d^γ₋·p·q/(1 - d)  (0 where p < clip)
// k₁ = pos_weight·weight, k₀ = weight per class. log p = min(x, 0) - log1p(e) and
// log(1 - d) = log(y) with y = 1 - d (d < 1/2) or q + clip: one log1p per lane.
struct AslHot {
  ClassTable loss1, loss0, grad1, grad0;
  Vec clip, log_eps;
  int int_pos = -1, int_neg = -1;
  bool ready = false, has_eps = false;
  AslHot(const AslArgs& a, float grad_scale)
      : clip(a.opt.clip), log_eps(AslConsts(a).log_eps), has_eps(a.opt.eps > 0.f) {
    for (int k = 0; k <= 4; ++k) {
      if (a.opt.gamma_pos == static_cast<float>(k)) int_pos = k;
      if (a.opt.gamma_neg == static_cast<float>(k)) int_neg = k;
    }
    const Operand& w = a.operands[AslOperands::weight];
    const Operand& pw = a.operands[AslOperands::pos_weight];
    ready = a.reduce && int_pos >= 0 && int_neg >= 0 && a.opt.clip > a.opt.eps &&
            a.opt.detach_focal_weight && a.opt.label_smoothing == 0.f && per_class_operand(w) &&
            per_class_operand(pw);
    if (!ready) return;
    const float pw_value = a.opt.has_pos_weight && !pw.ptr ? a.opt.pos_weight : 1.f;
    auto coef = [&](int64_t c, bool positive) {
      float k = w.ptr ? w.ptr[c * w.stride_c] : 1.f;
      if (positive) k *= pw.ptr ? pw.ptr[c * pw.stride_c] : pw_value;
      return k;
    };
    loss1 = ClassTable(a.cols, [&](int64_t c) { return -coef(c, true); });
    loss0 = ClassTable(a.cols, [&](int64_t c) { return -coef(c, false); });
    grad1 = ClassTable(a.cols, [&](int64_t c) { return -coef(c, true) * grad_scale; });
    grad0 = ClassTable(a.cols, [&](int64_t c) { return coef(c, false) * grad_scale; });
  }
  C10_ALWAYS_INLINE void operator()(const Vec& x, const Vec& t01, int64_t col, Vec& loss,
                                    Vec& grad) const {
    const Vec zero(0.f), one(1.f), half(0.5f);
    const Vec pos_x = x > zero;
    const Vec e = x.abs().neg().exp_u20();
    const Vec r = one / (one + e), er = e * r;
    const Vec p = Vec::blendv(er, r, pos_x), q = Vec::blendv(r, er, pos_x);
    const Vec diff = p - clip;
    const Vec below_clip = diff < zero;  // 1 - p + clip > 1: clamped, no gradient
    const Vec d = Vec::blendv(diff, zero, below_clip);
    const Vec y = Vec::blendv(one - d, q + clip, d >= half);  // 1 - d
    // Positives: log σ(x) = min(x, 0) - log1p(e) (a NaN x stays NaN); negatives: log y.
    const LogSplit ly = log_split(y, d.neg());
    Vec l = log1p_half(Vec::blendv(ly.w, e, t01));
    l = Vec::blendv(ly.add + l, Vec::blendv(x, zero, pos_x) - l, t01);
    // |d log/dx|, the sign is in the tables.
    Vec dl = Vec::blendv(Vec::blendv(p * q / y, zero, below_clip), q, t01);
    if (has_eps) {
      const Vec below = (l < log_eps) & t01;
      l = Vec::blendv(l, log_eps, below);
      dl = Vec::blendv(dl, zero, below);
    }
    const Vec b = Vec::blendv(d, q, t01);
    const Vec f = Vec::blendv(int_pow(b, int_neg), int_pow(b, int_pos), t01);
    loss = Vec::blendv(loss0.at(col), loss1.at(col), t01) * f * l;
    grad = Vec::blendv(grad0.at(col), grad1.at(col), t01) * f * dl;
  }
};

// The elementwise-driver view of one call (kernel_common.h).
struct Asl {
  static constexpr bool kScaleGrad = true;
  static constexpr bool kHot = true;
  const AslConsts c;
  const Operand& weight;
  const Operand& pos_weight;
  const Vec grad_scale;
  const int64_t cols;
  const bool count_kept = false, mean;
  explicit Asl(const AslArgs& a)
      : c(a), weight(a.operands[AslOperands::weight]),
        pos_weight(a.operands[AslOperands::pos_weight]),
        grad_scale(known_mean_scale(a, false)),
        cols(operand_cols(a, any_operand(a))), mean(a.mean),
        hot(a, known_mean_scale(a, false)), args(a) {}
  const AslHot hot;
  const AslArgs& args;
  // A chunk on the hot path (kernel_common.h); false when this call has none.
  template <typename xT, typename tT>
  bool hot_chunk(const xT* x, const tT* t, xT* grad, int64_t begin, int64_t end, Vec& acc) const {
    return run_hot_chunk(hot, args.write_grad, args.cols, x, t, grad, begin, end, acc);
  }
  void operator()(int64_t row, int64_t col, const Vec& x, const Vec& t, int64_t n, Vec& loss,
                  Vec& grad, Vec&) const {
    asl_vec(x, t, c, OperandRow(weight, row), OperandRow(pos_weight, row), col, n, loss, grad);
  }
};

void run(const AslArgs& a, Pass pass) { run_elementwise(a, pass, Asl(a)); }

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
