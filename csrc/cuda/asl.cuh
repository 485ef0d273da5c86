// Asymmetric loss (ASL): the per-element maths of csrc/cuda/asl.cu on the
// elementwise skeleton, host-callable (tests/test_cuda_host_math.py runs it on
// a CPU). The formula and subgradients are fused_losses/reference/asl.py's:
//   t ← t·(1-ε) + ε/2;  p = σ(x);  d = max(p - clip, 0);  p_m = 1 - d
//   loss = -w·(pw·t·log max(p, eps) + (1-t)·log max(p_m, eps))·(1-p_t)^γ
//   1 - p_t = t·σ(-x) + (1-t)·d,  γ = γ₊·t + γ₋·(1-t)
// log p_m is log1p(-d) while d < 1/2, else log(σ(-x) + clip): no cancellation.
// Coefficients (float4), g = 1/numel for a mean (else 1):
//   .x = g·w·pw  .y = g·w  .z = pw
#pragma once
#include <cmath>
#include <cstdint>

#include "../launch_args.h"
#include "elementwise.cuh"
#include "fast_math.cuh"

namespace fused_losses {

struct Asl {
  using Options = AslOptions;
  using Args = LaunchArgs<AslOptions>;
  using Element = elementwise::Element;

  struct Consts {
    float4 coef;        // the coefficients when no operand is present
    float gamma_pos, gamma_neg, clip, smoothing;
    float log_eps;      // log(eps); -inf when eps = 0 (no clamp)
    float pw;           // the float pos_weight (1 without one)
    float grad_scale;
    bool hard, detach;
    bool count_kept = false, clamp_count = false;  // no element is ignored
    bool prescaled;     // g = 1/numel is folded into the coefficients
  };

  static Consts consts(const Args& a) {
    const AslOptions& o = a.opt;
    Consts c{};
    c.gamma_pos = o.gamma_pos;
    c.gamma_neg = o.gamma_neg;
    c.clip = o.clip;
    c.smoothing = o.label_smoothing;
    c.log_eps = o.eps > 0.f ? static_cast<float>(std::log(static_cast<double>(o.eps))) : -INFINITY;
    c.pw = o.has_pos_weight ? o.pos_weight : 1.f;
    c.prescaled = a.mean && a.numel > 0;
    c.grad_scale = c.prescaled ? 1.f / static_cast<float>(a.numel) : 1.f;
    c.hard = !is_floating(a.target_dtype) && o.label_smoothing == 0.f;
    c.detach = o.detach_focal_weight;
    c.coef = coef(c, c.pw, 1.f);
    return c;
  }

  FL_HD static float4 coef(const Consts& c, float pw, float w) {
    const float gw = c.grad_scale * w;
    return make_float4(gw * pw, gw, pw, 0.f);
  }

  // A pos_weight tensor wins over the float.
  __device__ static float4 load_coef(const Args& a, const Consts& c, int64_t row, int64_t col) {
    const Operand& pw = a.operands[AslOperands::pos_weight];
    const Operand& w = a.operands[AslOperands::weight];
    return coef(c, pw.ptr != nullptr ? device::load_operand(pw, row, col) : c.pw,
                w.ptr != nullptr ? device::load_operand(w, row, col) : 1.f);
  }

  // The negative side's log p_m and d log p_m/dx = -σ(x)σ(-x)/p_m (0 where
  // p < clip: the clamp passes the gradient at equality). Needs clip > 0.
  FL_HD static void log_pm(const Consts& c, float s_p, float s_n, float d, float l1p_neg_d,
                           float* lv, float* dlv) {
    const bool near = d < 0.5f;
    *lv = near ? l1p_neg_d : fast::log_(s_n + c.clip);
    const float pm = near ? 1.f - d : s_n + c.clip;
    *dlv = s_p >= c.clip ? -s_p * s_n * fast::rcp(pm) : 0.f;
  }

  // The eps clamp of a log-probability; the `<` keeps a NaN as NaN.
  FL_HD static void clamp_log(const Consts& c, float* lv, float* dlv) {
    if (*lv < c.log_eps) {
      *lv = c.log_eps;
      *dlv = 0.f;
    }
  }

  // Hard 0/1 target, focal weight detached: only one side's log is live:
  //   t = 1: log max(p, eps), factor σ(-x)^γ₊, coefficient .x;
  //   t = 0: log max(p_m, eps), factor d^γ₋, coefficient .y.
  // G: 14 (γ₊ = 1, γ₋ = 4 by multiplication), -1 (any γ: 2^(γ·log2 q), 0^0 = 1).
  template <int G>
  FL_HD static Element hard(const Consts& c, float x, bool one, const float4& k) {
    const fast::Sig s = fast::sig(x);
    const float s_p = fast::sigmoid(x, s), s_n = fast::sigmoid(-x, s);
    const float d = fmaxf(s_p - c.clip, 0.f);
    // One log1p for both sides: log1p(e) (t = 1) or log1p(-d) (t = 0, d < 1/2).
    const float l1p = fast::log1p_small(one ? s.e : -fminf(d, 0.5f));
    float lv, dlv;
    log_pm(c, s_p, s_n, d, l1p, &lv, &dlv);
    lv = one ? fminf(x, 0.f) - l1p : lv;
    dlv = one ? s_n : dlv;
    clamp_log(c, &lv, &dlv);
    float f;
    if constexpr (G == 14) {
      const float d2 = d * d;
      f = one ? s_n : d2 * d2;
    } else {
      const float gamma = one ? c.gamma_pos : c.gamma_neg;
      f = fast::ex2(gamma * fast::lg2(one ? s_n : d));
      f = gamma == 0.f ? 1.f : f;
    }
    const float cf = (one ? k.x : k.y) * f;
    return Element{-cf * lv, -cf * dlv, true};
  }

  // Any target, smoothing, detach_focal_weight either way.
  FL_HD static Element general(const Consts& c, float x, float t, const float4& k) {
    const float kNegInf = -INFINITY;
    t = t * (1.f - c.smoothing) + 0.5f * c.smoothing;
    const fast::Sig s = fast::sig(x);
    const float log_p = fast::log_sigmoid(x, s), log_n = fast::log_sigmoid(-x, s);
    const float s_p = fast::sigmoid(x, s), s_n = fast::sigmoid(-x, s);
    float lm = log_n, dlm = -s_p, log_d = log_p, dlog_d = s_n;
    bool live_d = true;
    if (c.clip > 0.f) {
      const float d = fmaxf(s_p - c.clip, 0.f);
      log_pm(c, s_p, s_n, d, fast::log1p_small(-fminf(d, 0.5f)), &lm, &dlm);
      live_d = d > 0.f;
      log_d = live_d ? fast::log_(d) : kNegInf;
      dlog_d = live_d ? s_p * s_n * fast::rcp(d) : 0.f;
    }
    float lp = log_p, dlp = s_n;
    clamp_log(c, &lp, &dlp);
    clamp_log(c, &lm, &dlm);
    float loss = -(k.x * t * lp + k.y * (1.f - t) * lm);
    float grad = -(k.x * t * dlp + k.y * (1.f - t) * dlm);
    if (c.gamma_pos == 0.f && c.gamma_neg == 0.f) return Element{loss, grad, true};
    const float gamma = c.gamma_pos * t + c.gamma_neg * (1.f - t);
    float log_q, dlog_q;
    if (c.hard) {
      const bool one = t > 0.5f;
      log_q = one ? log_n : log_d;
      dlog_q = one ? -s_p : dlog_d;
    } else if (t > 0.f || live_d) {
      // 1 - p_t = t·σ(-x) + (1-t)·d, summed in the log domain.
      log_q = fast::log_add_exp(fast::log_(t) + log_n, fast::log_(1.f - t) + log_d);
      const float coef = (1.f - t) * (live_d ? 1.f : 0.f) - t;
      dlog_q = coef * fast::exp_(log_p + log_n - log_q);
    } else {
      log_q = kNegInf;
      dlog_q = 0.f;
    }
    float f;
    if (log_q > kNegInf) {
      f = fast::exp_(gamma * log_q);
    } else {  // 1 - p_t = 0: 0^γ, with 0^0 = 1; the derivative is taken as 0
      f = gamma == 0.f ? 1.f : 0.f;
      dlog_q = 0.f;
    }
    grad *= f;
    if (!c.detach) grad += gamma * f * dlog_q * loss;
    return Element{loss * f, grad, true};
  }

  // The hot plans also take floating targets (elementwise::mixed: each tile
  // hard when all its targets are 0 or 1, else general()).
  static constexpr bool kFloatHot = true;

  // The specialised plans: bool (or, kFloatHot, floating) targets without
  // smoothing, focal weight detached, clip > 0 (so log p_m >= log clip needs
  // no log-sigmoid and 1/p_m no guard); (γ₊, γ₋) = (1, 4), the defaults, or any.
  template <class F>
  static bool hot(const Args&, const Consts& c, bool table, F&& f) {
    if (c.smoothing != 0.f || !c.detach || !(c.clip > 0.f)) return false;
    const bool defaults = c.gamma_pos == 1.f && c.gamma_neg == 4.f;
    using elementwise::Hot;
    using elementwise::Table;
    using elementwise::Uniform;
    if (table) {
      defaults ? f(Hot<14, Table>{}) : f(Hot<-1, Table>{});
    } else {
      defaults ? f(Hot<14, Uniform>{}) : f(Hot<-1, Uniform>{});
    }
    return true;
  }
};

}  // namespace fused_losses
