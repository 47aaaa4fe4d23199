// AVX-512 instantiation of the NNGP CPU kernels (entered only after the run-time check).
#define LWE_ISA avx512
#include "nngp-inl.h"
