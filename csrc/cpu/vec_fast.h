// Short-polynomial fp32 maths for the CPU hot paths (class_tables.h), each
// well inside the 2e-5 relative contract of DESIGN.md: exp from ATen's
// exp_u20 (a degree-5 polynomial and an exponent shift, about 1e-7 relative
// where it is used), and log1p through atanh with a degree-4 polynomial fitted
// here (4.5e-9 relative in exact arithmetic). Included once per capability.
#pragma once
#include "vec_math.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

// log(1 + v) for v ≥ -1/2: with s = v / (2 + v) ∈ [-1/3, 1/3],
// log(1 + v) = 2·atanh(s) = 2s·(1 + z·P(z)), z = s² ≤ 1/9. P is a least-squares
// fit of (atanh(s)/s - 1)/z weighted by relative error.
inline Vec log1p_half(const Vec& v) {
  const Vec s = v / (Vec(2.f) + v);
  const Vec z = s * s;
  Vec p = at::vec::fmadd(z, Vec(0.14007732f), Vec(0.14000392f));
  p = at::vec::fmadd(z, p, Vec(0.20010811f));
  p = at::vec::fmadd(z, p, Vec(0.33333206f));
  p = at::vec::fmadd(z, p, Vec(1.f));
  return (s + s) * p;
}

// log(y) = add + log1p(w) for 0 < y < 2^126, with v = y - 1 given exactly for y
// near 1: y = 2^k·μ with μ ∈ [3/4, 3/2), add = k·ln 2 and w = μ - 1 (exact), or
// w = v when k = 0, which keeps the bits that rounding 1 + v would drop. A NaN
// y gives a NaN add.
struct LogSplit {
  Vec w, add;
};

inline LogSplit log_split(const Vec& y, const Vec& v) {
  using IVec = at::vec::Vectorized<int32_t>;
  const IVec bits = at::vec::cast<int32_t>(y);
  const IVec k = (bits - IVec(0x3f400000)) >> IVec(23);  // arithmetic shift
  const Vec mu = at::vec::cast<float>(bits - (k << IVec(23)));
  const Vec kf = at::vec::convert<float>(k);
  // y - y: 0, or NaN for a NaN y, whose bits would otherwise decode as a number.
  return {Vec::blendv(mu - Vec(1.f), v, kf == Vec(0.f)),
          at::vec::fmadd(kf, Vec(0.693147182f), y - y)};
}

// The sigmoid terms of a logit whose sign has been set by the target
// (xs = x for t = 1, -x for t = 0), so the "true class" side is always +:
//   u = σ(xs) = p_t,  m = σ(-xs) = 1 - p_t,
//   lg = log σ(xs) = min(xs, 0) - log1p(e),  lm = log σ(-xs) = min(-xs, 0) - log1p(e),
// with e = exp(-|xs|): one exp, one division and one log1p per lane. A NaN logit
// makes lg NaN (the selects below keep xs where the comparison fails).
struct SignedSigmoid {
  Vec u, m, lg, lm;
};

inline SignedSigmoid signed_sigmoid(const Vec& xs) {
  const Vec zero(0.f), one(1.f);
  const Vec pos = xs > zero;
  const Vec e = xs.abs().neg().exp_u20();
  const Vec r = one / (one + e);
  const Vec er = e * r;
  const Vec l1 = log1p_half(e);
  SignedSigmoid s;
  s.u = Vec::blendv(er, r, pos);
  s.m = Vec::blendv(r, er, pos);
  s.lg = Vec::blendv(xs, zero, pos) - l1;
  s.lm = Vec::blendv(zero, xs.neg(), pos) - l1;
  return s;
}

// xs = x where the lane mask t01 is set (t = 1), else -x: a sign flip by xor.
inline Vec signed_logit(const Vec& x, const Vec& t01) {
  return x ^ Vec::blendv(Vec(-0.f), Vec(0.f), t01);
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
