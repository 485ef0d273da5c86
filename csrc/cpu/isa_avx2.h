// Switches the rest of a translation unit to the AVX2 capability: include it
// first in a csrc/cpu/<loss>_avx2.cpp, then the loss's kernel header.
//
// The ISA is switched on here rather than by per-file compiler flags, so every
// source builds with one set of flags. GCC's target pragma enables the
// instructions for all functions below it, but in C++ it does not define the
// ISA macros (-mavx2 would): ATen's Vectorized picks its SIMD code from
// CPU_CAPABILITY_AVX2, and Sleef declares its vector functions, which ATen
// calls, only under __AVX__, so the macros are set by hand to what the flags
// would define.
#pragma once
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#error "clang ignores '#pragma GCC target'; build fused_losses._C with GCC"
#endif
#pragma GCC target("avx2,fma,f16c")
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif  // x86-64
