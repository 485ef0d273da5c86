// Runtime choice of the CPU kernel build: the widest capability this CPU
// runs, so the package never executes an instruction the CPU lacks.
// FUSED_LOSSES_CPU_CAPABILITY=default|avx2|avx512 narrows it (for tests and
// benchmarks); it can never widen it past what the CPU supports.
#include <cstdlib>
#include <cstring>
#include <string>

#include "../launch_args.h"
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

}  // namespace cpu

// Declares cpu::<CAP>::run for every build of a loss's kernel header and
// defines cpu_run (launch_args.h), which runs the one this CPU supports.
#if defined(__x86_64__) || defined(_M_X64)
#define FUSED_LOSSES_CPU_ENTRY(stem, Options)                               \
  namespace cpu {                                                           \
  namespace DEFAULT { void run(const LaunchArgs<Options>&, Pass); }         \
  namespace AVX2 { void run(const LaunchArgs<Options>&, Pass); }            \
  namespace AVX512 { void run(const LaunchArgs<Options>&, Pass); }          \
  }                                                                         \
  void cpu_run(const LaunchArgs<Options>& a, Pass pass) {                   \
    switch (cpu::active_capability()) {                                     \
      case cpu::Capability::Avx512: return cpu::AVX512::run(a, pass);       \
      case cpu::Capability::Avx2: return cpu::AVX2::run(a, pass);           \
      default: return cpu::DEFAULT::run(a, pass);                           \
    }                                                                       \
  }
#else
#define FUSED_LOSSES_CPU_ENTRY(stem, Options)                               \
  namespace cpu {                                                           \
  namespace DEFAULT { void run(const LaunchArgs<Options>&, Pass); }         \
  }                                                                         \
  void cpu_run(const LaunchArgs<Options>& a, Pass pass) { cpu::DEFAULT::run(a, pass); }
#endif

FUSED_LOSSES_FOR_EACH_LOSS(FUSED_LOSSES_CPU_ENTRY)

}  // namespace fused_losses
