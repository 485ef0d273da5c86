// Vectorized fp32 maths shared by every CPU loss kernel.
//
// Included once per CPU capability (see *_default.cpp, *_avx2.cpp,
// *_avx512.cpp); everything lives in a namespace named after that capability
// so the AVX2 and baseline copies never merge at link time.
#pragma once
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
// kLanes 16-bit floats as one register of half a Vec's width. ATen's 16-bit
// Vectorized holds twice kLanes, so a kLanes load or store of it goes through
// a stack copy; these move the bits directly and convert with ATen's helpers.
#if defined(CPU_CAPABILITY_AVX2)
using Bits16 = __m128i;
using RegF = __m256;
inline Bits16 load_bits16(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline void store_bits16(void* p, Bits16 v) { _mm_storeu_si128(static_cast<__m128i*>(p), v); }
#else
using Bits16 = __m256i;
using RegF = __m512;
inline Bits16 load_bits16(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
inline void store_bits16(void* p, Bits16 v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }
#endif
#define FUSED_LOSSES_BITS16 1
#endif

// Load n <= kLanes elements of any arithmetic type as floats (missing lanes 0).
template <typename T>
inline Vec load_as_float(const T* p, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return Vec::loadu(p, n);
  } else if constexpr (std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>) {
#ifdef FUSED_LOSSES_BITS16
    if (n == kLanes) {
      RegF o;
      if constexpr (std::is_same_v<T, c10::BFloat16>) {
        at::vec::cvtbf16_fp32(load_bits16(p), o);
      } else {
        at::vec::cvtfp16_fp32(load_bits16(p), o);
      }
      return Vec(o);
    }
#endif
    return at::vec::convert<float>(at::vec::Vectorized<T>::loadu(p, n));
  } else if constexpr (std::is_same_v<T, uint8_t>) {  // bool targets: widen in registers
#if defined(CPU_CAPABILITY_AVX2)
    // ATen's 32-lane uint8 load of 8 bytes goes through a stack copy.
    if (n == kLanes)
      return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#elif defined(CPU_CAPABILITY_AVX512)
    if (n == kLanes)
      return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
    return at::vec::convert<float>(
        at::vec::convert<int32_t>(at::vec::Vectorized<uint8_t>::loadu(p, n)));
  } else {
    alignas(64) float buf[kLanes] = {};
    if (n == kLanes) {  // fixed trip count: the compiler emits one vector convert
      for (int64_t k = 0; k < kLanes; ++k) buf[k] = static_cast<float>(p[k]);
    } else {
      for (int64_t k = 0; k < n; ++k) buf[k] = static_cast<float>(p[k]);
    }
    return Vec::loadu(buf);
  }
}

// Store the first n lanes converted to T.
template <typename T>
inline void store_as(T* p, const Vec& v, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    v.store(p, n);
  } else if constexpr (std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>) {
#ifdef FUSED_LOSSES_BITS16
    if (n == kLanes) {
      if constexpr (std::is_same_v<T, c10::BFloat16>) {
        store_bits16(p, at::vec::cvtfp32_bf16(v));
      } else {
        store_bits16(p, at::vec::cvtfp32_fp16(v));
      }
      return;
    }
#endif
    at::vec::convert<T>(v).store(p, n);
  } else {
    alignas(64) float buf[kLanes];
    v.store(buf);
    if (n == kLanes) {
      for (int64_t k = 0; k < kLanes; ++k) p[k] = static_cast<T>(buf[k]);
    } else {
      for (int64_t k = 0; k < n; ++k) p[k] = static_cast<T>(buf[k]);
    }
  }
}

// log(1 + e) for e >= 0, accurate for tiny e (Goldberg: log(u)·e/(u-1) with
// u = 1 + e rounded). On x86 this costs a log and a division, well under
// Sleef's log1p.
inline Vec log1p_nonneg(const Vec& e) {
  const Vec one(1.f);
  Vec u = one + e;
  Vec d = u - one;
  return Vec::blendv(u.log() * (e / d), e, d == Vec(0.f));
}

// σ(x), σ(-x) and e = exp(-|x|) ≤ 1: one exp, one division, no overflow, and
// σ(-x) without the cancellation of 1 - σ(x). Kernels that need σ(x) alone
// call this, so they get bit-identical values to sigmoid_terms.
struct Sigmoids {
  Vec e, s_p, s_n;
};

inline Sigmoids sigmoids(const Vec& x) {
  const Vec zero(0.f), one(1.f);
  Vec e = x.abs().neg().exp();
  Vec big = one / (one + e);
  Vec small = e * big;
  auto pos = x >= zero;
  return {e, Vec::blendv(small, big, pos), Vec::blendv(big, small, pos)};
}

// log σ(x), log σ(-x), σ(x), σ(-x) from the same exp, plus one log1p.
struct SigmoidTerms {
  Vec log_p, log_n, s_p, s_n;
};

inline SigmoidTerms sigmoid_terms(const Vec& x) {
  const Vec zero(0.f);
  Sigmoids s = sigmoids(x);
  Vec softplus_neg_abs = log1p_nonneg(s.e);
  return {at::vec::minimum(x, zero) - softplus_neg_abs,
          at::vec::maximum(x, zero).neg() - softplus_neg_abs, s.s_p, s.s_n};
}

// a·b rounded to fp32 on its own, as a separate torch op rounds it. The
// volatile temporary keeps the compiler from fusing the product into a
// neighbouring add (GCC contracts a·b + c into an FMA in the FMA builds).
inline float mul_unfused(float a, float b) {
  volatile float p = a * b;
  return p;
}

// log(exp a + exp b), exact when one side is -inf.
inline Vec log_add_exp(const Vec& a, const Vec& b) {
  return at::vec::maximum(a, b) + (a - b).abs().neg().exp().log1p();
}

// True when every lane of t is exactly 0 or 1: float 0/1 labels can then take
// the cheap hard-target path (a per-vector branch costs nothing on a CPU).
inline bool all_hard(const Vec& t) {
  const Vec soft = (t > Vec(0.f)) & (t < Vec(1.f));  // all-ones bits in soft lanes
  return soft.zero_mask() == (1 << kLanes) - 1;
}

// Small non-negative integer exponent as repeated products (γ = 2: one multiply).
inline Vec int_pow(const Vec& q, int n) {
  Vec out(1.f);
  for (int k = 0; k < n; ++k) out = out * q;
  return out;
}

// f = (1-p_t)^γ and r = σ(x)σ(-x)/(1-p_t), so d f/dx = γ·f·(1-2t)·r.
// int_gamma >= 0 when γ is a small integer (then f needs no exp/log).
inline void focal_factor(const SigmoidTerms& s, const Vec& t, const Vec& gamma, int int_gamma,
                         bool hard, Vec& f, Vec& r) {
  if (hard) {
    auto one_mask = t > Vec(0.5f);
    r = Vec::blendv(s.s_n, s.s_p, one_mask);
    if (int_gamma >= 0) {
      f = int_pow(Vec::blendv(s.s_p, s.s_n, one_mask), int_gamma);
    } else {
      f = (gamma * Vec::blendv(s.log_p, s.log_n, one_mask)).exp();
    }
    return;
  }
  const Vec one(1.f);
  Vec log_q = log_add_exp(s.log_p + t.neg().log1p(), s.log_n + t.log());
  r = (s.log_p + s.log_n - log_q).exp();
  f = int_gamma >= 0 ? int_pow(s.s_p * (one - t) + s.s_n * t, int_gamma)
                     : (gamma * log_q).exp();
}

// p̃ = (1-p)^α·p (p = σ(x)) and d p̃/dx = p̃·(σ(-x) - α·σ(x)): the dice loss's
// self-adjusted probability, with no division by 1-p (finite for α < 1 as p → 1).
struct AdjustedSigmoid {
  Vec pt, dpt;
};

inline AdjustedSigmoid adjusted_sigmoid(const Vec& x, const Vec& alpha, bool alpha_zero) {
  if (alpha_zero) {
    Sigmoids s = sigmoids(x);
    return {s.s_p, s.s_p * s.s_n};
  }
  SigmoidTerms s = sigmoid_terms(x);
  Vec pt = (s.log_p + alpha * s.log_n).exp();
  return {pt, pt * (s.s_n - alpha * s.s_p)};
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses
