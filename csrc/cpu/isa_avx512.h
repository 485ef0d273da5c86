// Switches the rest of a translation unit to the AVX-512 capability, as
// isa_avx2.h does for AVX2 and for the same reasons.
#pragma once
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#error "clang ignores '#pragma GCC target'; build fused_losses._C with GCC"
#endif
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#define __AVX__ 1
#define __AVX2__ 1
#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#define __AVX512DQ__ 1
#define __FMA__ 1
#define __F16C__ 1
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#endif  // x86-64
