// asl CPU kernels for the DEFAULT capability; setup.py adds this
// file's ISA flags and CPU_CAPABILITY macros by its name.
#include "asl_kernel.h"
