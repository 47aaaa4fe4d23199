// Portable (baseline ISA) instantiation of the CPU kernels.
#define LWE_ISA portable
#include "kernels-inl.h"
