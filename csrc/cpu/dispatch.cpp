// Runtime choice of the CPU kernel build: the widest capability this CPU
// runs, so the package never executes an instruction the CPU lacks.
// FUSED_LOSSES_CPU_CAPABILITY=default|avx2|avx512 narrows it (for tests and
// benchmarks); it can never widen it past what the CPU supports.
#include <cstdlib>
#include <cstring>
#include <string>

#include "../focal_bce_args.h"
#include "capability.h"

namespace fused_losses {
namespace cpu {

#define FUSED_LOSSES_DECLARE(CAP)                          \
  namespace CAP {                                          \
  void focal_bce_forward(const FocalBceArgs& a);           \
  void focal_bce_backward(const FocalBceArgs& a);          \
  }
FUSED_LOSSES_DECLARE(DEFAULT)
#if defined(__x86_64__) || defined(_M_X64)
FUSED_LOSSES_DECLARE(AVX2)
FUSED_LOSSES_DECLARE(AVX512)
#endif
#undef FUSED_LOSSES_DECLARE

static Capability supported() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  // The builds also use F16C (half conversions) and FMA beside the AVX level.
  if (!__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c")) return Capability::Default;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return Capability::Avx512;
  if (__builtin_cpu_supports("avx2")) return Capability::Avx2;
#endif
  return Capability::Default;
}

Capability active_capability() {
  static const Capability best = supported();
  const char* env = std::getenv("FUSED_LOSSES_CPU_CAPABILITY");
  Capability wanted = best;
  if (env && std::strcmp(env, "default") == 0) wanted = Capability::Default;
  if (env && std::strcmp(env, "avx2") == 0) wanted = Capability::Avx2;
  return wanted < best ? wanted : best;
}

const char* capability_name(Capability c) {
  switch (c) {
    case Capability::Avx512: return "avx512";
    case Capability::Avx2: return "avx2";
    default: return "default";
  }
}

static void run(const FocalBceArgs& a, bool forward) {
  switch (active_capability()) {
#if defined(__x86_64__) || defined(_M_X64)
    case Capability::Avx512:
      return forward ? AVX512::focal_bce_forward(a) : AVX512::focal_bce_backward(a);
    case Capability::Avx2:
      return forward ? AVX2::focal_bce_forward(a) : AVX2::focal_bce_backward(a);
#endif
    default:
      return forward ? DEFAULT::focal_bce_forward(a) : DEFAULT::focal_bce_backward(a);
  }
}

}  // namespace cpu

void focal_bce_cpu_forward(const FocalBceArgs& a) { cpu::run(a, true); }
void focal_bce_cpu_backward(const FocalBceArgs& a) { cpu::run(a, false); }

}  // namespace fused_losses
