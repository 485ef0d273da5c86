// Multilabel soft dice: the per-element maths of csrc/cuda/dice.cu,
// host-callable (tests/test_cuda_host_math.py runs it on a CPU). The formula
// is fused_losses/reference/dice.py's:
//   p̃ = (1-p)^α·p = exp(log σ(x) + α·log σ(-x)),  d p̃/dx = p̃·(σ(-x) - α·σ(x))
// (no division by 1-p: finite for α < 1 as p → 1), and the backward's
//   d loss/dx = (coef_t·t + coef_p·p̃^(k-1))·d p̃/dx
// with the column's coef_t = -2g/den, coef_p = k·g·num/den² (dice_coef).
#pragma once
#include <cuda_runtime.h>

#include "fast_math.cuh"

namespace fused_losses {
namespace dice {

struct Adjusted {
  float pt, dpt;  // p̃, d p̃/dx
};

// kAlphaZero: α = 0 (plain soft dice), p̃ = σ(x), d p̃/dx = σ(x)·σ(-x).
template <bool kAlphaZero>
FL_HD Adjusted adjusted(float x, float alpha) {
  const fast::Sig s = fast::sig(x);
  const float s_p = fast::sigmoid(x, s), s_n = fast::sigmoid(-x, s);
  if constexpr (kAlphaZero) {
    return Adjusted{s_p, s_p * s_n};
  } else {
    const float log2_pt =
        (fast::log_sigmoid(x, s) + alpha * fast::log_sigmoid(-x, s)) * fast::kLog2e;
    const float pt = fast::ex2(log2_pt);
    return Adjusted{pt, pt * (s_n - alpha * s_p)};
  }
}

// The column's backward coefficients from its sums and upstream gradient g.
FL_HD float2 coef(float s_pt, float s_p, float s_t, float smooth, float g, bool square) {
  const float num = 2.f * s_pt + smooth;
  const float den = s_p + s_t + smooth;
  return make_float2(-2.f * g / den, (square ? 2.f : 1.f) * g * num / (den * den));
}

FL_HD float grad(const float2& k, float t, const Adjusted& a, bool square) {
  return (k.x * t + (square ? k.y * a.pt : k.y)) * a.dpt;
}

}  // namespace dice
}  // namespace fused_losses
