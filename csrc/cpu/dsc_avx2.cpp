// dsc CPU kernels for the avx2 capability; setup.py adds this
// file's ISA flags and CPU_CAPABILITY macros by its name.
#include "dsc_kernel.h"
