// Reduced-set Z step from the data moments (semantics 1.8), using the shared per-coordinate formula.
//   wsum_i = sum_j beta_j G_ij,  wz_i = sum_j beta_j G_ij z_j  with G = point_gram(z).
#include <algorithm>
#include <vector>

#include "lwengine/kernels/rs_step.h"
#include "ops.h"

namespace lwe {

void rs_step_from_gram(const double* z, const double* beta, const double* C, const double* T,
                       const double* G, index_t K, index_t d, double gamma, double step,
                       double t1_factor, double* out) {
  std::vector<double> wz(static_cast<size_t>(d));
  for (index_t i = 0; i < K; ++i) {
    double wsum = 0.0;
    std::fill(wz.begin(), wz.end(), 0.0);
    const double* gi = G + i * K;
    for (index_t j = 0; j < K; ++j) {
      const double w = beta[j] * gi[j];
      wsum += w;
      const double* zj = z + j * d;
      for (index_t k = 0; k < d; ++k) wz[k] += w * zj[k];
    }
    for (index_t k = 0; k < d; ++k)
      out[i * d + k] = rs_step_coord(z[i * d + k], wsum, wz[k], C[i], T[i * d + k], beta[i], gamma,
                                     step, t1_factor);
  }
}

void rs_step_from_moments(const double* z, const double* beta, const double* C, const double* T,
                          index_t K, index_t d, double gamma, double step, double t1_factor,
                          double* out) {
  std::vector<double> G(static_cast<size_t>(K * K));
  point_gram(z, K, d, gamma, G.data());
  rs_step_from_gram(z, beta, C, T, G.data(), K, d, gamma, step, t1_factor, out);
}

}  // namespace lwe
