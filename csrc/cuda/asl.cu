// Fused asymmetric loss (ASL) on CUDA: the per-element maths on the
// elementwise skeleton of elementwise.cuh.
//
// The same maths as fused_losses/triton/asl.py (formula and subgradients in
// fused_losses/reference/asl.py). Targets are smoothed first, pos_weight
// (a float, or a broadcast tensor that wins over it) scales the positive term
// before the focal factor. No element is ignored: a mean divides by numel and
// the saved gradient's scale is 1.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "../launch_args.h"
#include "elementwise.cuh"
#include "math.cuh"

namespace fused_losses {
namespace {

using device::load_float;
using device::load_operand;
using elementwise::Element;
using Args = LaunchArgs<AslOptions>;

// Derived from the options once per launch.
struct AslConsts {
  float log_eps;     // log(eps), used when has_eps
  float grad_scale;  // forward gradient multiplier (1/numel for a mean)
  bool clip_on, has_eps;
  bool hard;         // bool/integer targets without smoothing: 0/1 select path
  bool smooth;       // label_smoothing != 0
  bool pw_value;     // the float pos_weight applies (no tensor operand)
  bool focal;        // γ₊ or γ₋ non-zero
  bool clamp_count;  // false: no element is ignored
};

// The eps clamp on a log-probability and its derivative: the derivative passes
// at equality (torch's clamp rule); the `<` keeps a NaN as NaN.
__device__ __forceinline__ void clamp_log(const AslConsts& c, float* log_v, float* dlog_v) {
  if (!c.has_eps) return;
  if (*log_v < c.log_eps) {
    *log_v = c.log_eps;
    *dlog_v = 0.f;
  }
}

// Loss and gradient of one element before the weight: the CUDA twin of asl_terms.
// `t` is the smoothed target, `pw` the positive term's weight (1 without one).
__device__ __forceinline__ Element asl_terms(const AslOptions& o, const AslConsts& c, float x,
                                             float t, float pw) {
  const float kNegInf = -__int_as_float(0x7f800000);  // -inf (no constexpr intrinsic)
  float log_p, log_n, s_p, s_n;
  device::sigmoid_terms(x, &log_p, &log_n, &s_p, &s_n);
  float log_pm = log_n, dlog_pm = -s_p, log_d = log_p, dlog_d = s_n;
  bool live_d = true;
  if (c.clip_on) {
    const float diff = s_p - o.clip;
    const float d = diff < 0.f ? 0.f : diff;  // d = 1 - p_m; NaN stays NaN
    const bool small = d < 0.5f;
    // log p_m: log1p(-d) while p_m > 1/2, else log(σ(-x) + clip): no cancellation.
    const float pm = small ? 1.f - d : s_n + o.clip;
    log_pm = small ? log1pf(-d) : logf(s_n + o.clip);
    const float sp_sn = s_p * s_n;
    dlog_pm = s_p >= o.clip ? -sp_sn / pm : 0.f;
    live_d = d > 0.f;
    log_d = live_d ? logf(d) : kNegInf;
    dlog_d = live_d ? sp_sn / d : 0.f;
  }
  float lp = log_p, dlp = s_n;
  clamp_log(c, &lp, &dlp);
  clamp_log(c, &log_pm, &dlog_pm);
  const float pos_t = t * pw;
  float loss = -(pos_t * lp + (1.f - t) * log_pm);
  float grad = -(pos_t * dlp + (1.f - t) * dlog_pm);
  if (!c.focal) return Element{loss, grad, true};
  const float gamma = o.gamma_pos * t + o.gamma_neg * (1.f - t);
  float log_q, dlog_q;
  if (c.hard) {
    const bool one = t > 0.5f;
    log_q = one ? log_n : log_d;
    dlog_q = one ? -s_p : dlog_d;
  } else {
    const bool live = t > 0.f || live_d;
    if (live) {
      // 1 - p_t = t·σ(-x) + (1-t)·d, summed in the log domain.
      log_q = device::log_add_exp(logf(t) + log_n, log1pf(-t) + log_d);
      const float coef = (1.f - t) * (live_d ? 1.f : 0.f) - t;
      dlog_q = coef * expf(log_p + log_n - log_q);
    } else {
      log_q = kNegInf;
      dlog_q = 0.f;
    }
  }
  float f;
  if (log_q > kNegInf) {
    f = expf(gamma * log_q);
  } else {  // 1 - p_t = 0: 0^γ, with 0^0 = 1; the derivative is taken as 0
    f = gamma == 0.f ? 1.f : 0.f;
    dlog_q = 0.f;
  }
  grad *= f;
  if (!o.detach_focal_weight) grad += gamma * f * dlog_q * loss;
  loss *= f;
  return Element{loss, grad, true};
}

struct Asl {
  using Options = AslOptions;
  using Consts = AslConsts;
  static constexpr bool kCountKept = false;

  static Consts consts(const Args& a) {
    const AslOptions& o = a.opt;
    Consts c;
    c.has_eps = o.eps > 0.f;
    c.log_eps = c.has_eps ? static_cast<float>(std::log(static_cast<double>(o.eps))) : 0.f;
    c.grad_scale = (a.mean && a.numel) ? 1.f / static_cast<float>(a.numel) : 1.f;
    c.clip_on = o.clip > 0.f;
    c.hard = !is_floating(a.target_dtype) && o.label_smoothing == 0.f;
    c.smooth = o.label_smoothing != 0.f;
    c.pw_value = o.has_pos_weight && a.operands[AslOperands::pos_weight].ptr == nullptr;
    c.focal = o.gamma_pos != 0.f || o.gamma_neg != 0.f;
    c.clamp_count = false;
    return c;
  }

  template <typename TIn, typename TT>
  __device__ __forceinline__ static Element element(const Args& a, const Consts& c, int64_t i,
                                                    int64_t row, int64_t col) {
    const float x = load_float(static_cast<const TIn*>(a.input) + i);
    float t = load_float(static_cast<const TT*>(a.target) + i);
    if (c.smooth) t = t * (1.f - a.opt.label_smoothing) + 0.5f * a.opt.label_smoothing;
    const Operand& pos_weight = a.operands[AslOperands::pos_weight];
    const float pw = pos_weight.ptr != nullptr ? load_operand(pos_weight, row, col)
                                               : (c.pw_value ? a.opt.pos_weight : 1.f);
    Element e = asl_terms(a.opt, c, x, t, pw);
    const Operand& weight = a.operands[AslOperands::weight];
    if (weight.ptr != nullptr) {
      const float w = load_operand(weight, row, col);
      e.loss *= w;
      e.grad *= w;
    }
    return e;
  }
};

}  // namespace

int64_t cuda_workspace_bytes(const Args& a, Pass p) {
  return elementwise::workspace_bytes<Asl>(a, p);
}
void cuda_run(const Args& a, Pass p, void* stream) { elementwise::run<Asl>(a, p, stream); }

}  // namespace fused_losses
