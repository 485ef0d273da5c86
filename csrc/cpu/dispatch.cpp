// Runtime choice of the CPU kernel build: the widest capability this CPU
// runs, so the package never executes an instruction the CPU lacks.
// FUSED_LOSSES_CPU_CAPABILITY=default|avx2|avx512 narrows it (for tests and
// benchmarks); it can never widen it past what the CPU supports.
#include <cstdlib>
#include <cstring>
#include <string>

#include "../dice_args.h"

#include "../asl_args.h"
#include "../focal_bce_args.h"
#include "../ghmc_args.h"
#include "../softmax_focal_args.h"
#include "../dsc_args.h"
#include "capability.h"

namespace fused_losses {
namespace cpu {

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

template <typename Args>
using Kernel = void (*)(const Args&);

template <typename Args>
static void run(const Args& a, Kernel<Args> baseline, Kernel<Args> avx2, Kernel<Args> avx512) {
  switch (active_capability()) {
    case Capability::Avx512: return avx512(a);
    case Capability::Avx2: return avx2(a);
    default: return baseline(a);
  }
}

}  // namespace cpu

// ENTRY(Args, kernel, entry): declares cpu::<CAP>::kernel for every build and
// defines fused_losses::entry, which runs the one this CPU supports.
#if defined(__x86_64__) || defined(_M_X64)
#define FUSED_LOSSES_CPU_ENTRY(Args, kernel, entry)                                     \
  namespace cpu {                                                                       \
  namespace DEFAULT { void kernel(const Args&); }                                       \
  namespace AVX2 { void kernel(const Args&); }                                          \
  namespace AVX512 { void kernel(const Args&); }                                        \
  }                                                                                     \
  void entry(const Args& a) {                                                           \
    cpu::run<Args>(a, cpu::DEFAULT::kernel, cpu::AVX2::kernel, cpu::AVX512::kernel);    \
  }
#else
#define FUSED_LOSSES_CPU_ENTRY(Args, kernel, entry)                                     \
  namespace cpu {                                                                       \
  namespace DEFAULT { void kernel(const Args&); }                                       \
  }                                                                                     \
  void entry(const Args& a) {                                                           \
    cpu::run<Args>(a, cpu::DEFAULT::kernel, cpu::DEFAULT::kernel, cpu::DEFAULT::kernel); \
  }
#endif

FUSED_LOSSES_CPU_ENTRY(FocalBceArgs, focal_bce_forward, focal_bce_cpu_forward)
FUSED_LOSSES_CPU_ENTRY(FocalBceArgs, focal_bce_backward, focal_bce_cpu_backward)
FUSED_LOSSES_CPU_ENTRY(GhmcArgs, ghmc_histogram, ghmc_cpu_histogram)
FUSED_LOSSES_CPU_ENTRY(GhmcArgs, ghmc_weights, ghmc_cpu_weights)
FUSED_LOSSES_CPU_ENTRY(GhmcArgs, ghmc_forward, ghmc_cpu_forward)
FUSED_LOSSES_CPU_ENTRY(GhmcArgs, ghmc_backward, ghmc_cpu_backward)
FUSED_LOSSES_CPU_ENTRY(DiceArgs, dice_forward, dice_cpu_forward)
FUSED_LOSSES_CPU_ENTRY(DiceArgs, dice_backward, dice_cpu_backward)
FUSED_LOSSES_CPU_ENTRY(AslArgs, asl_forward, asl_cpu_forward)
FUSED_LOSSES_CPU_ENTRY(AslArgs, asl_backward, asl_cpu_backward)
FUSED_LOSSES_CPU_ENTRY(SoftmaxFocalArgs, softmax_focal_forward, softmax_focal_cpu_forward)
FUSED_LOSSES_CPU_ENTRY(SoftmaxFocalArgs, softmax_focal_backward, softmax_focal_cpu_backward)
FUSED_LOSSES_CPU_ENTRY(DscArgs, dsc_forward, dsc_cpu_forward)
FUSED_LOSSES_CPU_ENTRY(DscArgs, dsc_backward, dsc_cpu_backward)

}  // namespace fused_losses
