// Per-spec covering balls of a packed store (search pruning, ops.h): centre = the row mean, radius
// = the largest distance of a row from it, widened so that it bounds the exact distance: each
// squared coordinate difference is within (1 + u)^2 of its exact value and the sum of d of them
// within (1 + d u), hence r^2 (1 + (d + 4) u), the square root and its product (1 + 2u) on top.
#include <algorithm>
#include <cmath>

#include "ops.h"

namespace lwe {

template <class T>
void spec_balls(const T* z, const index_t* off, index_t N, index_t d, double* centers, double* radii) {
  constexpr double u = 1.1102230246251565e-16;
#pragma omp parallel for schedule(dynamic, 64)
  for (index_t i = 0; i < N; ++i) {
    double* c = centers + i * d;
    const index_t b0 = off[i], b1 = off[i + 1];
    std::fill(c, c + d, 0.0);
    if (b1 == b0) {
      radii[i] = 0.0;
      continue;
    }
    for (index_t b = b0; b < b1; ++b)
      for (index_t k = 0; k < d; ++k) c[k] += static_cast<double>(z[b * d + k]);
    const double inv = 1.0 / static_cast<double>(b1 - b0);
    for (index_t k = 0; k < d; ++k) c[k] *= inv;
    double r2 = 0.0;
    for (index_t b = b0; b < b1; ++b) {
      double s = 0.0;
      for (index_t k = 0; k < d; ++k) {
        const double diff = static_cast<double>(z[b * d + k]) - c[k];
        s += diff * diff;
      }
      r2 = std::max(r2, s);
    }
    radii[i] = std::sqrt(r2 * (1.0 + (static_cast<double>(d) + 4.0) * u)) * (1.0 + 2.0 * u);
  }
}

template void spec_balls<float>(const float*, const index_t*, index_t, index_t, double*, double*);
template void spec_balls<double>(const double*, const index_t*, index_t, index_t, double*, double*);

}  // namespace lwe
