// Exact simplex-constrained QP:  min 1/2 x'Gx - c'x  s.t. x >= 0, sum x = 1.
// A port of lwengine._reference.simplex_qp: bit-identical (row, c) pairs are merged and share their
// weight equally; a primal active-set method starts at the best vertex, takes Newton steps on the
// face {sum p = 0} of the free set (rays along zero/negative curvature), and frees the bound with
// the most negative multiplier mu = g_i - mean(g_F).  The Newton step uses a Cholesky factor of the
// reduced Hessian in the basis [I; -1'] (O(f^3/6)); only when that factor is not safely positive
// definite does it fall back to the reference's eigendecomposition in an orthonormal basis.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include "ops.h"

namespace lwe {
namespace {

using Vec = std::vector<double>;

// Cyclic Jacobi eigendecomposition of a symmetric m x m matrix A (destroyed): w, V (columns).
void jacobi_eigh(Vec& A, index_t m, Vec& w, Vec& V) {
  V.assign(static_cast<size_t>(m * m), 0.0);
  for (index_t i = 0; i < m; ++i) V[i * m + i] = 1.0;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0.0, diag = 0.0;
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < m; ++j) (i == j ? diag : off) += A[i * m + j] * A[i * m + j];
    if (off <= 1e-30 * diag || off == 0.0) break;
    for (index_t p = 0; p < m; ++p)
      for (index_t q = p + 1; q < m; ++q) {
        const double apq = A[p * m + q];
        if (apq == 0.0) continue;
        const double theta = (A[q * m + q] - A[p * m + p]) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
        const double cs = 1.0 / std::sqrt(t * t + 1.0), sn = t * cs;
        for (index_t k = 0; k < m; ++k) {
          const double akp = A[k * m + p], akq = A[k * m + q];
          A[k * m + p] = cs * akp - sn * akq;
          A[k * m + q] = sn * akp + cs * akq;
        }
        for (index_t k = 0; k < m; ++k) {
          const double apk = A[p * m + k], aqk = A[q * m + k];
          A[p * m + k] = cs * apk - sn * aqk;
          A[q * m + k] = sn * apk + cs * aqk;
        }
        for (index_t k = 0; k < m; ++k) {
          const double vkp = V[k * m + p], vkq = V[k * m + q];
          V[k * m + p] = cs * vkp - sn * vkq;
          V[k * m + q] = sn * vkp + cs * vkq;
        }
      }
  }
  w.resize(static_cast<size_t>(m));
  for (index_t i = 0; i < m; ++i) w[i] = A[i * m + i];
}

enum class Face { kStationary, kStep, kRay };

struct Workspace {
  Vec Hr, r, y, w, V, N, coef, steps, tmp;
};

// Eigen-based face direction, exactly the reference's rule (used when Cholesky is not safe).
Face face_direction_eig(const Vec& H, const double* g, index_t f, double* p, Workspace& ws) {
  const index_t m = f - 1;
  // orthonormal basis of {sum p = 0}: columns 2..f of the Householder reflector mapping e1 to 1/sqrt(f)
  Vec hv(static_cast<size_t>(f));
  const double u = 1.0 / std::sqrt(static_cast<double>(f));
  for (index_t i = 0; i < f; ++i) hv[i] = u - (i == 0 ? 1.0 : 0.0);
  double hn = 0.0;
  for (double v : hv) hn += v * v;
  ws.N.assign(static_cast<size_t>(f * m), 0.0);  // N[i*m + j]
  for (index_t i = 0; i < f; ++i)
    for (index_t j = 0; j < m; ++j)
      ws.N[i * m + j] = (i == j + 1 ? 1.0 : 0.0) - (hn > 0 ? 2.0 * hv[i] * hv[j + 1] / hn : 0.0);
  // Hr = N' H N (symmetrised), r = N' g
  ws.tmp.assign(static_cast<size_t>(f * m), 0.0);  // H N
  for (index_t i = 0; i < f; ++i)
    for (index_t k = 0; k < f; ++k) {
      const double hik = H[i * f + k];
      if (hik == 0.0) continue;
      for (index_t j = 0; j < m; ++j) ws.tmp[i * m + j] += hik * ws.N[k * m + j];
    }
  ws.Hr.assign(static_cast<size_t>(m * m), 0.0);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j) {
      double s = 0.0;
      for (index_t k = 0; k < f; ++k) s += ws.N[k * m + i] * ws.tmp[k * m + j];
      ws.Hr[i * m + j] = s;
    }
  for (index_t i = 0; i < m; ++i)
    for (index_t j = i + 1; j < m; ++j) {
      const double a = 0.5 * (ws.Hr[i * m + j] + ws.Hr[j * m + i]);
      ws.Hr[i * m + j] = ws.Hr[j * m + i] = a;
    }
  ws.r.assign(static_cast<size_t>(m), 0.0);
  for (index_t j = 0; j < m; ++j)
    for (index_t k = 0; k < f; ++k) ws.r[j] += ws.N[k * m + j] * g[k];
  jacobi_eigh(ws.Hr, m, ws.w, ws.V);
  ws.coef.assign(static_cast<size_t>(m), 0.0);
  for (index_t e = 0; e < m; ++e)
    for (index_t k = 0; k < m; ++k) ws.coef[e] += ws.V[k * m + e] * ws.r[k];
  double scale = 1e-300, gmax = 0.0;
  for (double v : ws.w) scale = std::max(scale, std::fabs(v));
  for (index_t i = 0; i < f; ++i) gmax = std::max(gmax, std::fabs(g[i]));
  const double rtol = 1e-13 * std::max(1.0, gmax);
  index_t ray = -1;
  for (index_t e = 0; e < m; ++e) {
    const bool flat = ws.w[e] <= 1e-12 * scale;
    if (flat && (std::fabs(ws.coef[e]) > rtol || ws.w[e] < -1e-12 * scale))
      if (ray < 0 || ws.w[e] < ws.w[ray]) ray = e;
  }
  Vec dvec(static_cast<size_t>(m), 0.0);
  if (ray >= 0) {
    const double sgn = ws.coef[ray] > 0 ? -1.0 : (ws.coef[ray] < 0 ? 1.0 : 1.0);
    for (index_t k = 0; k < m; ++k) dvec[k] = sgn * ws.V[k * m + ray];
  } else {
    for (index_t e = 0; e < m; ++e) {
      const bool flat = ws.w[e] <= 1e-12 * scale;
      const double st = flat ? 0.0 : -ws.coef[e] / ws.w[e];
      for (index_t k = 0; k < m; ++k) dvec[k] += ws.V[k * m + e] * st;
    }
  }
  double pmax = 0.0;
  for (index_t i = 0; i < f; ++i) {
    double s = 0.0;
    for (index_t j = 0; j < m; ++j) s += ws.N[i * m + j] * dvec[j];
    p[i] = s;
    pmax = std::max(pmax, std::fabs(s));
  }
  if (ray >= 0) return Face::kRay;
  return pmax <= 1e-15 ? Face::kStationary : Face::kStep;
}

// Newton step on {sum p = 0} for min 1/2 p'Hp + g'p (H is f x f, row-major).
Face face_direction(const Vec& H, const double* g, index_t f, double* p, Workspace& ws) {
  if (f == 1) return Face::kStationary;
  const index_t m = f - 1, l = f - 1;
  ws.Hr.resize(static_cast<size_t>(m * m));
  ws.r.resize(static_cast<size_t>(m));
  const double hll = H[l * f + l];
  double maxdiag = 0.0;
  for (index_t i = 0; i < m; ++i) {
    const double hil = H[i * f + l];
    for (index_t j = 0; j <= i; ++j) ws.Hr[i * m + j] = H[i * f + j] - hil - H[l * f + j] + hll;
    maxdiag = std::max(maxdiag, ws.Hr[i * m + i]);
    ws.r[i] = g[i] - g[l];
  }
  bool ok = maxdiag > 0.0;
  // in-place lower Cholesky
  for (index_t j = 0; ok && j < m; ++j) {
    double s = ws.Hr[j * m + j];
    for (index_t k = 0; k < j; ++k) s -= ws.Hr[j * m + k] * ws.Hr[j * m + k];
    if (!(s > 1e-11 * maxdiag)) {
      ok = false;
      break;
    }
    const double ljj = std::sqrt(s);
    ws.Hr[j * m + j] = ljj;
    for (index_t i = j + 1; i < m; ++i) {
      double t = ws.Hr[i * m + j];
      const double* li = &ws.Hr[i * m];
      const double* lj = &ws.Hr[j * m];
      for (index_t k = 0; k < j; ++k) t -= li[k] * lj[k];
      ws.Hr[i * m + j] = t / ljj;
    }
  }
  if (!ok) return face_direction_eig(H, g, f, p, ws);
  ws.y.resize(static_cast<size_t>(m));
  for (index_t i = 0; i < m; ++i) {  // L y' = -r
    double t = -ws.r[i];
    for (index_t k = 0; k < i; ++k) t -= ws.Hr[i * m + k] * ws.y[k];
    ws.y[i] = t / ws.Hr[i * m + i];
  }
  for (index_t i = m - 1; i >= 0; --i) {  // L' y = y'
    double t = ws.y[i];
    for (index_t k = i + 1; k < m; ++k) t -= ws.Hr[k * m + i] * ws.y[k];
    ws.y[i] = t / ws.Hr[i * m + i];
  }
  double sum = 0.0, pmax = 0.0;
  for (index_t i = 0; i < m; ++i) {
    p[i] = ws.y[i];
    sum += ws.y[i];
    pmax = std::max(pmax, std::fabs(ws.y[i]));
  }
  p[l] = -sum;
  pmax = std::max(pmax, std::fabs(sum));
  return pmax <= 1e-15 ? Face::kStationary : Face::kStep;
}

void active_set_qp(const double* G, const double* c, index_t n, double* x) {
  std::fill(x, x + n, 0.0);
  index_t i0 = 0;
  for (index_t i = 1; i < n; ++i)
    if (0.5 * G[i * n + i] - c[i] < 0.5 * G[i0 * n + i0] - c[i0]) i0 = i;
  x[i0] = 1.0;
  std::vector<index_t> freeset{i0}, F;
  std::vector<char> is_free(static_cast<size_t>(n), 0);
  is_free[i0] = 1;
  Vec g(static_cast<size_t>(n)), H, gF, p;
  Workspace ws;
  bool stationary = false;
  const index_t max_iter = 100 * n + 100;
  for (index_t iter = 0; iter < max_iter; ++iter) {
    for (index_t i = 0; i < n; ++i) {
      double s = 0.0;
      for (index_t j = 0; j < n; ++j) s += G[i * n + j] * x[j];
      g[i] = s - c[i];
    }
    F.assign(freeset.begin(), freeset.end());
    std::sort(F.begin(), F.end());
    const index_t f = static_cast<index_t>(F.size());
    if (!stationary) {
      H.resize(static_cast<size_t>(f * f));
      gF.resize(static_cast<size_t>(f));
      p.assign(static_cast<size_t>(f), 0.0);
      for (index_t a = 0; a < f; ++a) {
        gF[a] = g[F[a]];
        for (index_t b = 0; b < f; ++b) H[a * f + b] = G[F[a] * n + F[b]];
      }
      const Face kind = face_direction(H, gF.data(), f, p.data(), ws);
      if (kind != Face::kStationary) {
        index_t j = 0;
        double best = std::numeric_limits<double>::infinity();
        for (index_t a = 0; a < f; ++a) {
          const double ratio = p[a] < 0 ? -x[F[a]] / p[a] : std::numeric_limits<double>::infinity();
          if (ratio < best) {
            best = ratio;
            j = a;
          }
        }
        const double alpha = kind == Face::kRay ? best : std::min(1.0, best);
        for (index_t a = 0; a < f; ++a) x[F[a]] += alpha * p[a];
        if (alpha == best) {
          x[F[j]] = 0.0;
          is_free[F[j]] = 0;
          freeset.erase(std::find(freeset.begin(), freeset.end(), F[j]));
          double s = 0.0;
          for (index_t i = 0; i < n; ++i) {
            if (x[i] < 0) x[i] = 0.0;
            s += x[i];
          }
          for (index_t i = 0; i < n; ++i) x[i] /= s;
          continue;
        }
        stationary = true;
        continue;
      }
    }
    // stationary on the face: multipliers of the bounds
    double t = 0.0, gmax = 0.0;
    for (index_t a = 0; a < f; ++a) t += g[F[a]];
    t /= static_cast<double>(f);
    for (index_t i = 0; i < n; ++i) gmax = std::max(gmax, std::fabs(g[i]));
    index_t jbest = -1;
    double mubest = 0.0;
    for (index_t i = 0; i < n; ++i) {
      if (is_free[i]) continue;
      const double mu = g[i] - t;
      if (jbest < 0 || mu < mubest) {
        jbest = i;
        mubest = mu;
      }
    }
    if (jbest < 0 || mubest >= -1e-13 * std::max(1.0, gmax)) break;
    freeset.push_back(jbest);
    is_free[jbest] = 1;
    stationary = false;
  }
}

}  // namespace

double simplex_qp(const double* G, const double* c, index_t n, double* x) {
  // group bit-identical (row, c) pairs, in order of first occurrence
  std::unordered_map<std::string, index_t> key_to_group;
  std::vector<std::vector<index_t>> groups;
  std::string key;
  for (index_t i = 0; i < n; ++i) {
    key.assign(reinterpret_cast<const char*>(G + i * n), sizeof(double) * n);
    key.append(reinterpret_cast<const char*>(c + i), sizeof(double));
    auto it = key_to_group.find(key);
    if (it == key_to_group.end()) {
      key_to_group.emplace(key, static_cast<index_t>(groups.size()));
      groups.push_back({i});
    } else {
      groups[it->second].push_back(i);
    }
  }
  const index_t m = static_cast<index_t>(groups.size());
  Vec Gr(static_cast<size_t>(m * m)), cr(static_cast<size_t>(m)), y(static_cast<size_t>(m));
  for (index_t a = 0; a < m; ++a) {
    const index_t ra = groups[a][0];
    cr[a] = c[ra];
    for (index_t b = 0; b < m; ++b) Gr[a * m + b] = G[ra * n + groups[b][0]];
  }
  active_set_qp(Gr.data(), cr.data(), m, y.data());
  for (index_t a = 0; a < m; ++a)
    for (index_t i : groups[a]) x[i] = y[a] / static_cast<double>(groups[a].size());
  double quad = 0.0, lin = 0.0;
  for (index_t j = 0; j < n; ++j) {
    double v = 0.0;
    for (index_t i = 0; i < n; ++i) v += x[i] * G[i * n + j];
    quad += v * x[j];
    lin += c[j] * x[j];
  }
  return 0.5 * quad - lin;
}

void simplex_qp_batch(const double* Gs, const double* cs, index_t B, index_t n, double* xs, double* objs) {
#pragma omp parallel for schedule(dynamic, 1)
  for (index_t b = 0; b < B; ++b) objs[b] = simplex_qp(Gs + b * n * n, cs + b * n, n, xs + b * n);
}

}  // namespace lwe
