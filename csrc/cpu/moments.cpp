// Reduced-set Z step from the data moments (semantics 1.8): G = point_gram(z), then
// rs_step_from_gram (kernels-inl.h, per ISA; the per-coordinate formula is rs_step.h's).
#include <algorithm>
#include <vector>

#include "ops.h"

namespace lwe {

void rs_step_from_moments(const double* z, const double* beta, const double* C, const double* T,
                          index_t K, index_t d, double gamma, double step, double t1_factor,
                          double* out) {
  std::vector<double> G(static_cast<size_t>(K * K));
  point_gram(z, K, d, gamma, G.data());
  rs_step_from_gram(z, beta, C, T, G.data(), K, d, gamma, step, t1_factor, out);
}

}  // namespace lwe
