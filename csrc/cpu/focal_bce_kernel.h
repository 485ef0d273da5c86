// Fused focal BCE on the CPU, written once and compiled per capability
// (focal_bce_default.cpp, focal_bce_avx2.cpp, focal_bce_avx512.cpp), on the
// chunk driver of kernel_common.h. Formula: fused_losses/reference/focal_bce.py.
#pragma once
#include <algorithm>
#include <cmath>

#include "class_tables.h"
#include "kernel_common.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

using FocalBceArgs = LaunchArgs<FocalBceOptions>;

// Per-call constants, derived from the options once and broadcast.
struct FocalConsts {
  Vec gamma, smooth_scale, smooth_shift, ignore, alpha_value;
  int int_gamma;  // >= 0 when γ ∈ {1, 2, 3, 4}: powers by multiplication
  bool hard, gamma_zero, has_ignore, has_alpha_value;
  explicit FocalConsts(const FocalBceArgs& a)
      : gamma(a.opt.gamma), smooth_scale(1.f - a.opt.label_smoothing),
        smooth_shift(0.5f * a.opt.label_smoothing),
        ignore(static_cast<float>(a.opt.ignore_index)), alpha_value(a.opt.alpha),
        int_gamma(-1),
        // Integer/bool targets without smoothing are exactly 0/1: the select path.
        hard(!is_floating(a.target_dtype) && a.opt.label_smoothing == 0.f),
        gamma_zero(a.opt.gamma == 0.f), has_ignore(a.opt.has_ignore_index),
        has_alpha_value(alpha_mode(a) == AlphaMode::Scalar) {
    for (int k = 1; k <= 4; ++k)
      if (a.opt.gamma == static_cast<float>(k)) int_gamma = k;
  }
};

struct RowOperands {
  OperandRow alpha, pos_weight, weight;
  RowOperands(const FocalBceArgs& a, int64_t row)
      : alpha(a.operands[FocalBceOperands::alpha], row),
        pos_weight(a.operands[FocalBceOperands::pos_weight], row),
        weight(a.operands[FocalBceOperands::weight], row) {}
};

// Loss and d loss/dx for n lanes at columns [col, col + n); 0 where ignored.
inline void focal_bce_vec(const Vec& x, Vec t, const RowOperands& ops, int64_t col, int64_t n,
                          const FocalConsts& c, Vec& loss, Vec& grad, Vec& keep) {
  const Vec zero(0.f), one(1.f);
  Vec ignored = zero;  // lane mask
  if (c.has_ignore) {
    ignored = t == c.ignore;
    t = Vec::blendv(t, zero, ignored);
  }
  keep = Vec::blendv(one, zero, ignored);
  t = t * c.smooth_scale + c.smooth_shift;
  SigmoidTerms s = sigmoid_terms(x);
  Vec pos_t = ops.pos_weight.base ? t * ops.pos_weight.load(col, n) : t;
  loss = (pos_t * s.log_p + (one - t) * s.log_n).neg();
  grad = (one - t) * s.s_p - pos_t * s.s_n;
  if (!c.gamma_zero) {
    Vec f, r;
    focal_factor(s, t, c.gamma, c.int_gamma, c.hard || all_hard(t), f, r);
    grad = f * (c.gamma * (one - t - t) * r * loss + grad);
    loss = f * loss;
  }
  if (ops.alpha.base || c.has_alpha_value) {
    Vec alpha = ops.alpha.base ? ops.alpha.load(col, n) : c.alpha_value;
    Vec alpha_t = alpha * t + (one - alpha) * (one - t);
    loss = loss * alpha_t;
    grad = grad * alpha_t;
  }
  if (ops.weight.base) {
    Vec w = ops.weight.load(col, n);
    loss = loss * w;
    grad = grad * w;
  }
  if (c.has_ignore) {  // a select, not a product: an ignored NaN logit contributes 0
    loss = Vec::blendv(loss, zero, ignored);
    grad = Vec::blendv(grad, zero, ignored);
  }
}

// The hot path (class_tables.h): 0/1 targets, per-class or absent operands, no
// ignore_index or smoothing. With xs = ±x signed by the target (SignedSigmoid),
//   loss = -k_t · m^γ · lg,   d loss/dx = ±k_t · m^γ · (γ·u·lg - m)   (+ for t = 1),
// where k_1 = α·pos_weight·weight and k_0 = (1-α)·weight per class. The gradient
// tables hold ±k_t times the mean's 1/numel.
struct FocalHot {
  ClassTable loss1, loss0, grad1, grad0;
  Vec gamma;
  int int_gamma = -1;
  bool ready = false;
  FocalHot(const FocalBceArgs& a, float grad_scale) : gamma(a.opt.gamma) {
    for (int k = 0; k <= 4; ++k)
      if (a.opt.gamma == static_cast<float>(k)) int_gamma = k;
    const Operand& al = a.operands[FocalBceOperands::alpha];
    const Operand& pw = a.operands[FocalBceOperands::pos_weight];
    const Operand& w = a.operands[FocalBceOperands::weight];
    ready = a.reduce && !a.opt.has_ignore_index && a.opt.label_smoothing == 0.f &&
            per_class_operand(al) && per_class_operand(pw) && per_class_operand(w);
    if (!ready) return;
    const int64_t cols = a.cols;
    const bool has_alpha = alpha_mode(a) != AlphaMode::None;
    auto coef = [&](int64_t c, bool positive) {
      const float alpha = al.ptr ? al.ptr[c * al.stride_c] : a.opt.alpha;
      float k = !has_alpha ? 1.f : (positive ? alpha : 1.f - alpha);
      if (positive && pw.ptr) k *= pw.ptr[c * pw.stride_c];
      if (w.ptr) k *= w.ptr[c * w.stride_c];
      return k;
    };
    loss1 = ClassTable(cols, [&](int64_t c) { return -coef(c, true); });
    loss0 = ClassTable(cols, [&](int64_t c) { return -coef(c, false); });
    grad1 = ClassTable(cols, [&](int64_t c) { return coef(c, true) * grad_scale; });
    grad0 = ClassTable(cols, [&](int64_t c) { return -coef(c, false) * grad_scale; });
  }
  C10_ALWAYS_INLINE void operator()(const Vec& x, const Vec& t01, int64_t col, Vec& loss,
                                    Vec& grad) const {
    const SignedSigmoid s = signed_sigmoid(signed_logit(x, t01));
    const Vec f = int_gamma >= 0 ? int_pow(s.m, int_gamma) : (gamma * s.lm).exp_u20();
    const Vec lf = f * s.lg;
    loss = Vec::blendv(loss0.at(col), loss1.at(col), t01) * lf;
    grad = Vec::blendv(grad0.at(col), grad1.at(col), t01) * f *
           at::vec::fmsub(gamma * s.u, s.lg, s.m);
  }
};

// The elementwise-driver view of one call (kernel_common.h).
struct FocalBce {
  static constexpr bool kScaleGrad = true;
  static constexpr bool kHot = true;
  const FocalBceArgs& a;
  const FocalConsts c;
  const Vec grad_scale;
  const int64_t cols;
  const bool count_kept, mean;
  explicit FocalBce(const FocalBceArgs& args)
      : a(args), c(args),
        // A mean without ignore_index has a known divisor: the gradient takes it now.
        grad_scale(known_mean_scale(args, args.opt.has_ignore_index)),
        cols(operand_cols(args, any_operand(args))),
        count_kept(args.opt.has_ignore_index), mean(args.mean),
        hot(args, known_mean_scale(args, args.opt.has_ignore_index)) {}
  const FocalHot hot;
  // A chunk on the hot path (kernel_common.h); false when this call has none.
  template <typename xT, typename tT>
  bool hot_chunk(const xT* x, const tT* t, xT* grad, int64_t begin, int64_t end, Vec& acc) const {
    return run_hot_chunk(hot, a.write_grad, a.cols, x, t, grad, begin, end, acc);
  }
  // Inlined into the driver's loops, so a vector costs one call (focal_bce_vec),
  // not two.
  C10_ALWAYS_INLINE void operator()(int64_t row, int64_t col, const Vec& x, const Vec& t,
                                    int64_t n, Vec& loss, Vec& grad, Vec& keep) const {
    focal_bce_vec(x, t, RowOperands(a, row), col, n, c, loss, grad, keep);
  }
};

void run(const FocalBceArgs& a, Pass pass) { run_elementwise(a, pass, FocalBce(a)); }

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
