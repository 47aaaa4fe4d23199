// CPU entry points of the ConvNet-NNGP kernel (image specs); validated by csrc/bind/nngp.cpp.
//   nngp_prep:  per image, the pre-ReLU variance map of every level (prep, N x prep_len(depth)) and
//               the one-object diagonal k(x_i, x_i) (self, N).
//   nngp_cross: out (N1, N2) = k(x_i, y_j) on the two-object path; with self != nullptr (x == y, the
//               one-object path) the diagonal is self[i].
#pragma once
#include "lwengine/common.h"

namespace lwe {

#define LWE_NNGP_DECL(T)                                                                               \
  void nngp_prep(const T* x, index_t N, index_t C, int depth, T* prep, T* self);                       \
  void nngp_cross(const T* x, const T* px, index_t N1, const T* y, const T* py, index_t N2, index_t C, \
                  int depth, const T* self, T* out);
LWE_NNGP_DECL(float)
LWE_NNGP_DECL(double)
namespace portable {
LWE_NNGP_DECL(float)
LWE_NNGP_DECL(double)
}
namespace avx2 {
LWE_NNGP_DECL(float)
LWE_NNGP_DECL(double)
}
namespace avx512 {
LWE_NNGP_DECL(float)
LWE_NNGP_DECL(double)
}
#undef LWE_NNGP_DECL

}  // namespace lwe
