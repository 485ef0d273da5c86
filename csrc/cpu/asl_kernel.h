// Fused asymmetric loss (ASL) on the CPU, written once and compiled per
// capability (asl_default.cpp, asl_avx2.cpp, asl_avx512.cpp).
//
// One pass over fixed chunks of kChunk elements, as in focal_bce_kernel.h:
// chunks own the loss partials and are summed in chunk order, so results are
// bit-identical for any thread count. Hard 0/1 targets (bool/integer, or float
// vectors whose lanes are all 0/1) take a path with one log per lane.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../asl_args.h"
#include "kernel_common.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

// Per-call constants, broadcast once.
struct AslConsts {
  Vec gamma_pos, gamma_neg, clip, log_eps, grad_scale;
  int int_pos, int_neg;  // γ₊, γ₋ when both are integers in 0..4 (powers by products), else -1
  bool clip_on, has_eps, hard, focal, detach;
  explicit AslConsts(const AslArgs& a)
      : gamma_pos(a.gamma_pos), gamma_neg(a.gamma_neg), clip(a.clip), log_eps(a.log_eps),
        grad_scale(a.grad_scale), int_pos(-1), int_neg(-1), clip_on(a.clip > 0.f),
        has_eps(a.has_eps), hard(a.hard), focal(a.focal), detach(a.detach) {
    for (int k = 0; k <= 4; ++k) {
      if (a.gamma_pos == static_cast<float>(k)) int_pos = k;
      if (a.gamma_neg == static_cast<float>(k)) int_neg = k;
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
inline void asl_hard(const Vec& x, const Vec& t, const AslConsts& c, Vec& loss, Vec& grad) {
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
inline void asl_soft(const Vec& x, const Vec& t, const AslConsts& c, Vec& loss, Vec& grad) {
  const Vec zero(0.f), one(1.f), half(0.5f), ninf(-INFINITY);
  const SigmoidTerms s = sigmoid_terms(x);
  Vec log_pm = s.log_n, dlog_pm = s.s_p.neg(), log_d = s.log_p, dlog_d = s.s_n;
  Vec live_d = x == x;  // all lanes, except NaN ones (whose loss is NaN anyway)
  if (c.clip_on) {
    const Vec diff = s.s_p - c.clip;
    const Vec d = Vec::blendv(diff, zero, diff < zero);
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
  loss = (t * lp + omt * log_pm).neg();
  grad = (t * dlp + omt * dlog_pm).neg();
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

inline void asl_vec(const Vec& x, const Vec& t, const AslConsts& c, const OperandRow& w,
                    int64_t col, int64_t n, Vec& loss, Vec& grad) {
  if (c.hard || all_hard(t)) {
    asl_hard(x, t, c, loss, grad);
  } else {
    asl_soft(x, t, c, loss, grad);
  }
  if (w.base) {
    const Vec wv = w.load(col, n);
    loss = loss * wv;
    grad = grad * wv;
  }
}

template <typename xT, typename tT>
void forward_typed(const AslArgs& a) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  auto* out = static_cast<xT*>(a.out);
  auto* grad_out = static_cast<xT*>(a.grad);
  const AslConsts c(a);
  // Without a weight rows don't matter: one long row gives fewer partial vectors.
  const int64_t cols = a.weight.ptr ? a.cols : std::max<int64_t>(a.numel, 1);
  const int64_t n_chunks = (a.numel + kChunk - 1) / kChunk;
  std::vector<float> psum(a.reduce ? n_chunks : 0);
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      const int64_t begin = chunk * kChunk, end = std::min(a.numel, begin + kChunk);
      Vec acc(0.f);
      for_each_vector(begin, end, cols, [&](int64_t row, int64_t col, int64_t i, int64_t n) {
        Vec loss, grad;
        asl_vec(load_as_float(x + i, n), load_as_float(t + i, n), c, OperandRow(a.weight, row),
                col, n, loss, grad);
        if (!a.reduce) {
          store_as(out + i, loss, n);
          return;
        }
        acc = acc + Vec::set(Vec(0.f), loss, n);
        if (a.write_grad) store_as(grad_out + i, grad * c.grad_scale, n);
      });
      if (a.reduce) psum[chunk] = lane_sum(acc);
    }
  });
  if (!a.reduce) return;
  double total = 0.0;
  for (int64_t k = 0; k < n_chunks; ++k) total += psum[k];
  if (a.mean) total = total / static_cast<double>(a.numel);  // 0/0 = NaN, as torch's empty mean
  out[0] = static_cast<xT>(static_cast<float>(total));
  *a.scale = 1.f;
}

template <typename xT, typename tT>
void backward_typed(const AslArgs& a) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  const auto* g_out = static_cast<const xT*>(a.grad_output);
  auto* g_in = static_cast<xT*>(a.grad);
  const AslConsts c(a);
  const int64_t cols = a.weight.ptr ? a.cols : std::max<int64_t>(a.numel, 1);
  const int64_t n_chunks = (a.numel + kChunk - 1) / kChunk;
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    const int64_t begin = c0 * kChunk, end = std::min(a.numel, c1 * kChunk);
    for_each_vector(begin, end, cols, [&](int64_t row, int64_t col, int64_t i, int64_t n) {
      Vec loss, grad;
      asl_vec(load_as_float(x + i, n), load_as_float(t + i, n), c, OperandRow(a.weight, row), col,
              n, loss, grad);
      store_as(g_in + i, grad * load_as_float(g_out + i, n), n);
    });
  });
}

void asl_forward(const AslArgs& a) {
  dispatch_pair(a.input_dtype, a.target_dtype,
                [&](auto xs, auto ts) { forward_typed<decltype(xs), decltype(ts)>(a); });
}

void asl_backward(const AslArgs& a) {
  dispatch_pair(a.input_dtype, a.target_dtype,
                [&](auto xs, auto ts) { backward_typed<decltype(xs), decltype(ts)>(a); });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
