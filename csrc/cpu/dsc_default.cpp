// dsc CPU kernels for the default capability; setup.py adds this
// file's ISA flags and CPU_CAPABILITY macros by its name.
#include "dsc_kernel.h"
