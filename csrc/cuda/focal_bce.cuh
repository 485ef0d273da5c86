// Sigmoid focal BCE: the per-element maths of csrc/cuda/focal_bce.cu on the
// elementwise skeleton, host-callable (tests/test_cuda_host_math.py runs it on
// a CPU). The formula is fused_losses/reference/focal_bce.py's:
//   t ← t·(1-ε) + ε/2;  p_t = σ(x)t + σ(-x)(1-t);  α_t = αt + (1-α)(1-t)
//   loss = w·α_t·(1-p_t)^γ·(-(pw·t·log σ(x) + (1-t)·log σ(-x)))
// Coefficients (float4, per class or uniform), with g = 1/numel for a plain
// mean (else 1) and α_t = 1 without α (wa = wb):
//   .x = g·w·α·pw  .y = g·w·(1-α)  .z = g·w·α  .w = pw
#pragma once
#include <cstdint>

#include "../launch_args.h"
#include "elementwise.cuh"
#include "fast_math.cuh"

namespace fused_losses {

struct FocalBce {
  using Options = FocalBceOptions;
  using Args = LaunchArgs<FocalBceOptions>;
  using Element = elementwise::Element;

  struct Consts {
    float4 coef;          // the coefficients when no operand is present
    float gamma;
    float gamma_log2e;    // γ·log2(e): (1-p_t)^γ = 2^(γ·log2e·log(1-p_t))
    float grad_scale;     // g above
    float smoothing, ignore_value;
    float alpha;          // α when has_alpha and no α tensor
    bool has_alpha, ignore, hard;
    bool count_kept, clamp_count;  // ignore_index in use: count kept elements
    bool prescaled;       // g = 1/numel is folded into the coefficients
  };

  static Consts consts(const Args& a) {
    const FocalBceOptions& o = a.opt;
    Consts c{};
    c.gamma = o.gamma;
    c.gamma_log2e = o.gamma * fast::kLog2e;
    c.prescaled = a.mean && !o.has_ignore_index && a.numel > 0;
    c.grad_scale = c.prescaled ? 1.f / static_cast<float>(a.numel) : 1.f;
    c.smoothing = o.label_smoothing;
    c.ignore = o.has_ignore_index;
    c.ignore_value = static_cast<float>(o.ignore_index);
    c.hard = !is_floating(a.target_dtype) && o.label_smoothing == 0.f;
    c.has_alpha = alpha_mode(a) != AlphaMode::None;
    c.alpha = o.alpha;
    c.count_kept = c.clamp_count = o.has_ignore_index;
    c.coef = coef(c, c.alpha, 1.f, 1.f);
    return c;
  }

  FL_HD static float4 coef(const Consts& c, float alpha, float pw, float w) {
    const float gw = c.grad_scale * w;
    const float wa = c.has_alpha ? gw * alpha : gw;
    const float wb = c.has_alpha ? gw * (1.f - alpha) : gw;
    return make_float4(wa * pw, wb, wa, pw);
  }

  // The coefficients at (row, col) from whichever operands are present.
  __device__ static float4 load_coef(const Args& a, const Consts& c, int64_t row, int64_t col) {
    const Operand& al = a.operands[FocalBceOperands::alpha];
    const Operand& pw = a.operands[FocalBceOperands::pos_weight];
    const Operand& w = a.operands[FocalBceOperands::weight];
    return coef(c, al.ptr != nullptr ? device::load_operand(al, row, col) : c.alpha,
                pw.ptr != nullptr ? device::load_operand(pw, row, col) : 1.f,
                w.ptr != nullptr ? device::load_operand(w, row, col) : 1.f);
  }

  // Hard 0/1 target, in the margin z = ±x (+ for t = 1): p_t = σ(z), q = 1-p_t = σ(-z),
  // loss = k·q^γ·(-log p_t) with k = .x (t = 1) or .y (t = 0);
  // d loss/dz = k·q^γ·(γ·p_t·log p_t - q), and d/dx = ± d/dz. No 0/0, no log(0).
  // G: 0 (γ = 0), 2 (q·q), -1 (any γ: 2^(γ·log2 q), log q = log σ(-z) finite).
  template <int G>
  FL_HD static Element hard(const Consts& c, float x, bool one, const float4& k) {
    const float z = one ? x : -x;
    const fast::Sig s = fast::sig(x);
    const float log_pt = fast::log_sigmoid(z, s);
    const bool zpos = z >= 0.f;
    const float pt = zpos ? s.big : s.small;
    const float q = zpos ? s.small : s.big;
    float f = 1.f, h = -q;
    if constexpr (G == 2) {
      f = q * q;
      h = fmaf(2.f * pt, log_pt, -q);
    } else if constexpr (G < 0) {
      f = fast::ex2(c.gamma_log2e * fast::log_sigmoid(-z, s));
      h = fmaf(c.gamma * pt, log_pt, -q);
    }
    const float cf = (one ? k.x : k.y) * f;
    const float g = cf * h;
    return Element{-cf * log_pt, one ? g : -g, true};
  }

  // Any target: ignore_index, smoothing, soft targets. Soft: 1-p_t =
  // σ(x)(1-t) + σ(-x)t in the log domain, r = σ(x)σ(-x)/(1-p_t) formed there,
  // d f/dx = γ·f·(1-2t)·r.
  FL_HD static Element general(const Consts& c, float x, float t, const float4& k) {
    const bool keep = !(c.ignore && t == c.ignore_value);
    t = keep ? t : 0.f;  // before smoothing: a value like -100 never enters the maths
    Element e;
    if (c.hard) {
      e = hard<-1>(c, x, t > 0.5f, k);
    } else {
      t = t * (1.f - c.smoothing) + 0.5f * c.smoothing;
      const fast::Sig s = fast::sig(x);
      const float log_p = fast::log_sigmoid(x, s), log_n = fast::log_sigmoid(-x, s);
      const float s_p = fast::sigmoid(x, s), s_n = fast::sigmoid(-x, s);
      const float pos_t = t * k.w;
      float loss = -(pos_t * log_p + (1.f - t) * log_n);
      float grad = (1.f - t) * s_p - pos_t * s_n;
      if (c.gamma != 0.f) {
        const float log_q = fast::log_add_exp(log_p + fast::log_(1.f - t), log_n + fast::log_(t));
        const float r = fast::exp_(log_p + log_n - log_q);
        const float f = fast::ex2(c.gamma_log2e * log_q);
        grad = f * (c.gamma * (1.f - 2.f * t) * r * loss + grad);
        loss *= f;
      }
      const float a_t = k.z * t + k.y * (1.f - t);
      e = Element{loss * a_t, grad * a_t, true};
    }
    // Selects, not products: an ignored element's NaN or inf must not leak.
    return Element{keep ? e.loss : 0.f, keep ? e.grad : 0.f, keep};
  }

  // The hot plans also take floating targets (elementwise::mixed: each tile
  // hard when all its targets are 0 or 1, else general()).
  static constexpr bool kFloatHot = true;

  // The specialised plans: bool (or, kFloatHot, floating) targets without
  // smoothing or ignore_index; γ 0, 2 or any.
  template <class F>
  static bool hot(const Args&, const Consts& c, bool table, F&& f) {
    if (c.smoothing != 0.f || c.ignore) return false;
    const int g = c.gamma == 0.f ? 0 : c.gamma == 2.f ? 2 : -1;
    using elementwise::Hot;
    using elementwise::Table;
    using elementwise::Uniform;
    if (table) {
      g == 0 ? f(Hot<0, Table>{}) : g == 2 ? f(Hot<2, Table>{}) : f(Hot<-1, Table>{});
    } else {
      g == 0 ? f(Hot<0, Uniform>{}) : g == 2 ? f(Hot<2, Uniform>{}) : f(Hot<-1, Uniform>{});
    }
    return true;
  }
};

}  // namespace fused_losses
