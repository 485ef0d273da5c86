// focal_bce CPU kernels for the AVX2 capability (see dispatch.cpp); an empty
// translation unit off x86-64.
#include "isa_avx2.h"
#if defined(__x86_64__) || defined(_M_X64)
#include "focal_bce_kernel.h"
#endif
