// asl CPU kernels for the AVX-512 capability (see dispatch.cpp); an empty
// translation unit off x86-64.
#include "isa_avx512.h"
#if defined(__x86_64__) || defined(_M_X64)
#include "asl_kernel.h"
#endif
