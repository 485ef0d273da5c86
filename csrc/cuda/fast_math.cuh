// Fast fp32 maths of the elementwise losses (focal_bce, asl), callable from
// host code too so that tests/test_cuda_host_math.py can run it on a CPU.
//
// On the device: MUFU approximations (PTX ex2/lg2/rcp .approx.ftz). On the
// host: the same formulas on libm, each result pushed by the device
// instruction's documented worst-case error in the direction
// FUSED_LOSSES_HOST_ERR (+1 / -1 / 0), so a host test bounds the device error.
//   ex2.approx.ftz: relative 2^-22;  rcp.approx.ftz: relative 2^-23;
//   lg2.approx.ftz: absolute 2^-22 (near 1 that is large *relative* error, so
//   log1p of small arguments never goes through lg2: see log1p_small).
// ftz: results below 2^-126 are flushed to 0, on the host as well.
//
// Error budget of the losses: fp32 loss and gradient within 2e-5 relative of
// float64 (numerics contract in /work/shared/DESIGN.md).
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#ifndef FUSED_LOSSES_HOST_ERR
#define FUSED_LOSSES_HOST_ERR 0
#endif

#define FL_HD __host__ __device__ __forceinline__

namespace fused_losses {
namespace fast {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

#ifndef __CUDA_ARCH__
inline float host_ftz(float v) { return std::fabs(v) < 1.17549435e-38f ? 0.f * v : v; }
inline float host_rel(float v, double rel) {
  return host_ftz(static_cast<float>(static_cast<double>(v) * (1.0 + FUSED_LOSSES_HOST_ERR * rel)));
}
#endif

// 2^v.
FL_HD float ex2(float v) {
#ifdef __CUDA_ARCH__
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
#else
  return host_rel(std::exp2(host_ftz(v)), 0x1p-22);
#endif
}

// log2(v); -inf at 0. Absolute error 2^-22: only for logs that are far from 0
// or whose absolute error is what matters (an exponent, a log-add-exp term).
FL_HD float lg2(float v) {
#ifdef __CUDA_ARCH__
  float r;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
#else
  const float r = std::log2(host_ftz(v));
  return std::isfinite(r) ? static_cast<float>(r + FUSED_LOSSES_HOST_ERR * 0x1p-22) : r;
#endif
}

// 1/v.
FL_HD float rcp(float v) {
#ifdef __CUDA_ARCH__
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
#else
  return host_rel(1.f / host_ftz(v), 0x1p-23);
#endif
}

FL_HD float exp_(float v) { return ex2(v * kLog2e); }   // e^v
FL_HD float log_(float v) { return lg2(v) * kLn2; }     // ln v, absolute error ~3e-7

// log1p(y) for y in [-1/2, 1], relative-accurate down to tiny |y|:
// s = y/(2+y) (|s| <= 1/3), log1p(y) = 2·atanh(s) = s·P(s²) with
// P(u) ≈ 2(1 + u/3 + u²/5 + ...), a degree-3 minimax fit on [0, 1/9]
// (relative error 2e-7, plus ~2^-22 from rcp).
FL_HD float log1p_small(float y) {
  const float s = y * rcp(2.f + y);
  const float u = s * s;
  float p = 0.34228083f;
  p = fmaf(p, u, 0.39589942f);
  p = fmaf(p, u, 0.66675925f);
  p = fmaf(p, u, 1.99999964f);
  return s * p;
}

// log(e^a + e^b); exact when one side is -inf.
FL_HD float log_add_exp(float a, float b) {
  return fmaxf(a, b) + log1p_small(ex2(-fabsf(a - b) * kLog2e));
}

// The sigmoid pieces every elementwise loss starts from, built on
// e = exp(-|x|) <= 1 so nothing overflows for any finite x:
//   l = log1p(e) = softplus(-|x|);  log σ(x) = min(x,0) - l;  log σ(-x) = min(-x,0) - l;
//   big = 1/(1+e) = σ(|x|);  small = e·big = σ(-|x|) (never 1 - big, which cancels).
struct Sig {
  float e, l, big, small;
};
FL_HD Sig sig(float x) {
  Sig s;
  s.e = ex2(-fabsf(x) * kLog2e);
  s.l = log1p_small(s.e);
  s.big = rcp(1.f + s.e);
  s.small = s.e * s.big;
  return s;
}
FL_HD float log_sigmoid(float z, const Sig& s) { return fminf(z, 0.f) - s.l; }  // log σ(z), |z| = |x|
FL_HD float sigmoid(float z, const Sig& s) { return z >= 0.f ? s.big : s.small; }  // σ(z)

}  // namespace fast

namespace elementwise {
// One element's loss and d loss/dx (both 0 where ignored), already multiplied
// by the launch's coefficients (weights, 1/numel of a plain mean).
struct Element {
  float loss;
  float grad;
  bool keep;
};
}  // namespace elementwise
}  // namespace fused_losses
