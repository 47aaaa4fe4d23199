// AVX2 + FMA instantiation of the CPU kernels (compiled with -mavx2 -mfma, entered only after the
// run-time check in dispatch.cpp).
#define LWE_ISA avx2
#include "kernels-inl.h"
