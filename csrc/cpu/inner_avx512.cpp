// AVX-512 instantiation of the CPU kernels (64-byte vectors: 16 floats, 8 doubles; compiled with
// -mavx512f/dq/vl/bw -mfma, entered only after the run-time check in dispatch.cpp).
#define LWE_ISA avx512
#include "kernels-inl.h"
