// Portable (baseline ISA) instantiation of the NNGP CPU kernels.
#define LWE_ISA portable
#include "nngp-inl.h"
