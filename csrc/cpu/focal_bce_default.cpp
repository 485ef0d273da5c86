// focal_bce CPU kernels for the baseline capability (see dispatch.cpp): no ISA
// beyond the compiler's default, so this build runs on every CPU.
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#include "focal_bce_kernel.h"
