// AVX2 + FMA instantiation of the NNGP CPU kernels (entered only after the run-time check).
#define LWE_ISA avx2
#include "nngp-inl.h"
