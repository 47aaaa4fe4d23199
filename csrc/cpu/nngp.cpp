// Routes the NNGP entry points to the active SIMD path's instantiation (LWE_ROUTE, ops.h).
#include "nngp_ops.h"
#include "ops.h"

namespace lwe {


#define LWE_NNGP_PUBLIC(T)                                                                             \
  void nngp_prep(const T* x, index_t N, index_t C, int depth, T* prep, T* self) {                      \
    LWE_ROUTE(nngp_prep, x, N, C, depth, prep, self);                                             \
  }                                                                                                    \
  void nngp_cross(const T* x, const T* px, index_t N1, const T* y, const T* py, index_t N2, index_t C, \
                  int depth, const T* self, T* out) {                                                  \
    LWE_ROUTE(nngp_cross, x, px, N1, y, py, N2, C, depth, self, out);                             \
  }
LWE_NNGP_PUBLIC(float)
LWE_NNGP_PUBLIC(double)

}  // namespace lwe
