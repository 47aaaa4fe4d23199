// Reduced-set Z step from the data moments (semantics 1.8), using the shared per-coordinate formula.
#include <vector>

#include "lwengine/kernels/pair.h"
#include "lwengine/kernels/rs_step.h"
#include "ops.h"

namespace lwe {

void rs_step_from_moments(const double* z, const double* beta, const double* C, const double* T,
                          index_t K, index_t d, double gamma, double step, double t1_factor,
                          double* out) {
  std::vector<double> zn(static_cast<size_t>(K));
  for (index_t i = 0; i < K; ++i) {
    double s = 0.0;
    for (index_t k = 0; k < d; ++k) s += z[i * d + k] * z[i * d + k];
    zn[i] = s;
  }
#pragma omp parallel
  {
    std::vector<double> wz(static_cast<size_t>(d));
#pragma omp for schedule(static)
    for (index_t i = 0; i < K; ++i) {
      double wsum = 0.0;
      std::fill(wz.begin(), wz.end(), 0.0);
      for (index_t j = 0; j < K; ++j) {
        double dot = 0.0;
        for (index_t k = 0; k < d; ++k) dot += z[i * d + k] * z[j * d + k];
        const double w = beta[j] * gauss_from_sqdist(sqdist_expanded(zn[i], zn[j], dot), gamma);
        wsum += w;
        for (index_t k = 0; k < d; ++k) wz[k] += w * z[j * d + k];
      }
      for (index_t k = 0; k < d; ++k)
        out[i * d + k] = rs_step_coord(z[i * d + k], wsum, wz[k], C[i], T[i * d + k], beta[i], gamma,
                                       step, t1_factor);
    }
  }
}

}  // namespace lwe
