// The reference's fit after its k-means init in one native call (RKMESpec.fit's CPU path for the
// reference update with nonnegative beta, semantics §1.7-1.9): exactly the zx_moments /
// point_gram / simplex_qp / rs_step_from_gram calls of the Python loop it stands for, in the same
// order with the same arguments (so the same bits), without the Python between them (~1 ms of a
// ~6 ms fit at n = 2000, K = 100).
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "ops.h"
#include "team.h"

namespace lwe {
namespace {
bool all_finite(const std::vector<double>& v) {
  for (double a : v)
    if (!std::isfinite(a)) return false;
  return true;
}
}  // namespace

double fit_objective(const double* G, const double* C, const double* beta, index_t K) {
  // (beta'G) beta - 2 beta'C, the row sums v_j = sum_i beta_i G_ij in increasing i
  std::vector<double> v(static_cast<size_t>(K), 0.0);
  for (index_t i = 0; i < K; ++i) {
    const double bi = beta[i];
    const double* gi = G + i * K;
    for (index_t j = 0; j < K; ++j) v[j] += bi * gi[j];
  }
  double quad = 0.0, lin = 0.0;
  for (index_t j = 0; j < K; ++j) {
    quad += v[j] * beta[j];
    lin += beta[j] * C[j];
  }
  return quad - 2.0 * lin;
}

template <class Tx>
int fit_reference(const Tx* x, index_t n, index_t d, double* z, index_t K, double gamma, int steps,
                  double step_size, double* beta, double* objectives, float* kmeans_c, int max_iter,
                  double tol, int* kmeans_iters) {
  std::vector<double> C(static_cast<size_t>(K)), T(steps > 0 ? static_cast<size_t>(K * d) : 0),
      G(static_cast<size_t>(K * K)), z_next(static_cast<size_t>(K * d)), warm(static_cast<size_t>(K));
  int status = 0;
  auto loop = [&](SpinTeam* team) {
    if constexpr (std::is_same<Tx, float>::value) {
      if (kmeans_c) {  // the init: Lloyd from the given centroids, widened to float64
        const int it = kmeans(x, n, d, kmeans_c, K, max_iter, tol, team);
        if (kmeans_iters) *kmeans_iters = it;
        for (index_t i = 0; i < K * d; ++i) z[i] = static_cast<double>(kmeans_c[i]);
      }
    }
    // the beta update at z (moments, Gram, QP); false where G or C is not finite (a diverged step)
    auto beta_update = [&](bool with_t, const double* x0) {
      zx_moments(z, K, x, n, d, gamma, C.data(), with_t ? T.data() : nullptr, team);
      point_gram(z, K, d, gamma, G.data(), team);
      if (!all_finite(G) || !all_finite(C)) return false;
      simplex_qp(G.data(), C.data(), K, beta, x0);
      return true;
    };
    if (!beta_update(steps > 0, nullptr)) {
      status = 1;
      return;
    }
    objectives[0] = fit_objective(G.data(), C.data(), beta, K);
    for (int t = 0; t < steps; ++t) {
      rs_step_from_gram(z, beta, C.data(), T.data(), G.data(), K, d, gamma, step_size, 1.0, z_next.data(), team);
      std::copy(z_next.begin(), z_next.end(), z);
      std::copy(beta, beta + K, warm.begin());
      if (!beta_update(t + 1 < steps, warm.data())) {
        status = 2;
        return;
      }
      objectives[t + 1] = fit_objective(G.data(), C.data(), beta, K);
    }
  };
  // k-means, the moment passes, the Grams and the Z steps on one two-thread team (one wake-up for
  // the fit instead of one per call) where the whole fit's split work outweighs that wake-up and
  // the passes are small (large ones split through OpenMP, as alone); results do not depend on the
  // team (k-means rows, moment chunks and Gram / Z-step rows are independent).  The fit's cost:
  // its moment passes and, with them, the k-means.
  const double work = static_cast<double>(K) * static_cast<double>(n) * static_cast<double>(d);
  const double cost = steps * kMomentsCostT + kMomentsCostC + (kmeans_c ? kKmeansCost : 0.0);
  with_spin_team(work < kAlwaysSplitWork && split_pays(work, cost), loop);
  return status;
}

template int fit_reference<float>(const float*, index_t, index_t, double*, index_t, double, int, double, double*,
                                  double*, float*, int, double, int*);
template int fit_reference<double>(const double*, index_t, index_t, double*, index_t, double, int, double, double*,
                                   double*, float*, int, double, int*);

}  // namespace lwe
