#pragma once
// Exact simplex-constrained QP, per ISA (included by kernels-inl.h; the gradient over the free rows
// runs in lane vectors, grad_rows_impl):  min 1/2 x'Gx - c'x  s.t. x >= 0, sum x = 1.
// A port of lwengine._reference.simplex_qp: bit-identical (row, c) pairs are merged and share their
// weight equally; a primal active-set method starts at the best vertex (or at a given feasible
// point x0), takes Newton steps on the face {sum p = 0} of the free set F (rays along zero/negative
// curvature), and frees the bound with the most negative multiplier mu = g_i - mean(g_F).
//
// The Newton step uses a Cholesky factor L of the reduced Hessian M in the basis [I; -1'] around a
// pivot l in F (M_ij = H_ij - H_il - H_jl + H_ll over F \ {l}).  L is updated, not recomputed: a
// freed variable appends one row (O(f^2)), a variable hitting its bound deletes one row and
// re-triangularises with Givens rotations (O(f^2)); only the pivot leaving F, or a face whose
// factor is not safely positive definite, rebuilds it (O(f^3/6)).  When M is not safely PD (a
// pivot <= 1e-11 x its largest diagonal), the step falls back to the reference's rule on an
// eigendecomposition in an orthonormal basis (F in increasing index order, as the reference).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <vector>

namespace lwe {
namespace LWE_ISA {
namespace qp_detail {

using Vec = std::vector<double>;

// Cyclic Jacobi eigendecomposition of a symmetric m x m matrix A (destroyed): w, V (columns).
inline void jacobi_eigh(Vec& A, index_t m, Vec& w, Vec& V) {
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

// sum_k a_k b_k over four interleaved partial sums (one chain was latency-bound)
inline double dot(const double* a, const double* b, index_t m) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  index_t k = 0;
  for (; k + 4 <= m; k += 4) {
    s0 += a[k] * b[k];
    s1 += a[k + 1] * b[k + 1];
    s2 += a[k + 2] * b[k + 2];
    s3 += a[k + 3] * b[k + 3];
  }
  for (; k < m; ++k) s0 += a[k] * b[k];
  return (s0 + s1) + (s2 + s3);
}

struct EigWork {
  Vec Hr, r, w, V, N, coef, tmp;
};

// Eigen-based face direction, exactly the reference's rule (used when Cholesky is not safe).
// H is f x f (F in increasing index order), p receives the direction in that order.
inline Face face_direction_eig(const Vec& H, const double* g, index_t f, double* p, EigWork& ws) {
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
    const double sgn = ws.coef[ray] > 0 ? -1.0 : 1.0;
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

// Cholesky factor of the reduced Hessian of the free set, kept up to date as F changes.
class FaceFactor {
 public:
  FaceFactor(const double* G, index_t n) : G_(G), n_(n), L_(static_cast<size_t>(n * n)) {}

  // invalid: rebuild before the next solve (F changed in a way that is not an update)
  void invalidate() { state_ = kStale; }
  bool stale() const { return state_ == kStale; }
  // factor present and safely positive definite
  bool usable() const { return state_ == kOk; }

  // Factor M for free set F (any order) around pivot `pivot` (a member of F).
  void rebuild(const std::vector<index_t>& F, index_t pivot) {
    pivot_ = pivot;
    order_.clear();
    diag_.clear();
    for (index_t v : F)
      if (v != pivot) order_.push_back(v);
    state_ = kOk;
    const index_t m = static_cast<index_t>(order_.size());
    for (index_t i = 0; i < m; ++i) diag_.push_back(mentry(order_[i], order_[i]));
    for (index_t i = 0; i < m && state_ == kOk; ++i) append_row(i);
    if (state_ != kOk) state_ = kSingular;
  }

  // F gained variable q (after the factor for F \ {q} was usable or singular).
  void add(index_t q) {
    if (state_ != kOk) {  // singular face: its superset is singular too (PSD) or indefinite
      state_ = kStale;
      return;
    }
    order_.push_back(q);
    diag_.push_back(mentry(q, q));
    append_row(static_cast<index_t>(order_.size()) - 1);
    if (state_ != kOk) state_ = kSingular;
  }

  // F lost variable q.
  void remove(index_t q) {
    if (state_ != kOk || q == pivot_) {
      state_ = kStale;
      return;
    }
    const index_t m = static_cast<index_t>(order_.size());
    index_t k = 0;
    while (order_[k] != q) ++k;
    double* L = L_.data();
    const index_t ld = n_;
    for (index_t i = k; i + 1 < m; ++i) std::memcpy(L + i * ld, L + (i + 1) * ld, sizeof(double) * (i + 2));
    order_.erase(order_.begin() + k);
    diag_.erase(diag_.begin() + k);
    const index_t mm = m - 1;
    // rows k.. now have one entry right of the diagonal: rotate columns (j, j+1) to remove it
    for (index_t j = k; j < mm; ++j) {
      const double a = L[j * ld + j], b = L[j * ld + j + 1];
      const double r = std::hypot(a, b);
      if (!(r > 0.0)) {
        state_ = kStale;
        return;
      }
      const double cs = a / r, sn = b / r;
      for (index_t i = j; i < mm; ++i) {
        const double u = L[i * ld + j], v = L[i * ld + j + 1];
        L[i * ld + j] = cs * u + sn * v;
        L[i * ld + j + 1] = -sn * u + cs * v;
      }
      L[j * ld + j + 1] = 0.0;
    }
    if (!pivots_safe()) state_ = kSingular;
  }

  // Newton step on {sum p = 0}: p (length n, entries of F only) = argmin 1/2 p'Hp + g'p.
  Face solve(const double* g, double* p) {
    const index_t m = static_cast<index_t>(order_.size());
    if (m == 0) return Face::kStationary;
    const double* L = L_.data();
    const index_t ld = n_;
    y_.resize(static_cast<size_t>(m));
    const double gl = g[pivot_];
    for (index_t i = 0; i < m; ++i) {  // L y' = -r, r_i = g_i - g_l (rows of L: dot products)
      const double* li = L + i * ld;
      y_[i] = (-(g[order_[i]] - gl) - dot(li, y_.data(), i)) / li[i];
    }
    for (index_t i = m - 1; i >= 0; --i) {  // L' y = y' (rows of L: y_k -= L_ik y_i for k < i)
      const double* li = L + i * ld;
      const double yi = y_[i] / li[i];
      y_[i] = yi;
      for (index_t k = 0; k < i; ++k) y_[k] -= li[k] * yi;
    }
    double sum = 0.0, pmax = 0.0;
    for (index_t i = 0; i < m; ++i) {
      p[order_[i]] = y_[i];
      sum += y_[i];
      pmax = std::max(pmax, std::fabs(y_[i]));
    }
    p[pivot_] = -sum;
    pmax = std::max(pmax, std::fabs(sum));
    return pmax <= 1e-15 ? Face::kStationary : Face::kStep;
  }

 private:
  enum State { kStale, kOk, kSingular };

  double mentry(index_t i, index_t j) const {
    const index_t l = pivot_;
    return G_[i * n_ + j] - G_[i * n_ + l] - G_[l * n_ + j] + G_[l * n_ + l];
  }

  // a pivot <= 1e-11 x the largest diagonal entry of M: not safely positive definite
  bool pivots_safe() const {
    const index_t m = static_cast<index_t>(order_.size());
    double maxdiag = 0.0, minpiv = std::numeric_limits<double>::infinity();
    for (index_t i = 0; i < m; ++i) {
      maxdiag = std::max(maxdiag, diag_[i]);
      const double lii = L_[i * n_ + i];
      minpiv = std::min(minpiv, lii * lii);
    }
    return m == 0 || (maxdiag > 0.0 && minpiv > 1e-11 * maxdiag);
  }

  // Row i of L from rows 0..i-1 (the leading factor is final).
  void append_row(index_t i) {
    double* L = L_.data();
    const index_t ld = n_, q = order_[i];
    double* li = L + i * ld;
    for (index_t j = 0; j < i; ++j) {
      const double* lj = L + j * ld;
      li[j] = (mentry(q, order_[j]) - dot(li, lj, j)) / lj[j];
    }
    const double s = diag_[i] - dot(li, li, i);
    double maxdiag = 0.0;
    for (double v : diag_) maxdiag = std::max(maxdiag, v);
    if (!(maxdiag > 0.0) || !(s > 1e-11 * maxdiag)) {
      state_ = kSingular;
      return;
    }
    li[i] = std::sqrt(s);
    // appended to a final factor: maxdiag may have grown past an earlier pivot
    if (i + 1 == static_cast<index_t>(order_.size()) && !pivots_safe()) state_ = kSingular;
  }

  const double* G_;
  index_t n_;
  Vec L_, diag_, y_;
  std::vector<index_t> order_;
  index_t pivot_ = 0;
  State state_ = kStale;
};

// y: start point (feasible, length n) or nullptr for the best vertex.
inline void active_set_qp(const double* G, const double* c, index_t n, const double* y0, double* x) {
  std::vector<char> is_free(static_cast<size_t>(n), 0);
  std::vector<index_t> F;  // free set, kept in increasing index order
  if (y0 == nullptr) {
    std::fill(x, x + n, 0.0);
    index_t i0 = 0;
    for (index_t i = 1; i < n; ++i)
      if (0.5 * G[i * n + i] - c[i] < 0.5 * G[i0 * n + i0] - c[i0]) i0 = i;
    x[i0] = 1.0;
  } else {
    std::copy(y0, y0 + n, x);
  }
  for (index_t i = 0; i < n; ++i)
    if (x[i] > 0.0) {
      is_free[i] = 1;
      F.push_back(i);
    }
  Vec g(static_cast<size_t>(n)), p(static_cast<size_t>(n), 0.0), H, gF, pF;
  FaceFactor fac(G, n);
  EigWork ews;
  bool stationary = false;
  const index_t max_iter = 100 * n + 100;
  bool x_changed = true;  // freeing a bound leaves x, hence g, unchanged
  // a (bitwise) symmetric G -- every Gram matrix -- has g = G x = sum over the free j of x_j G[j, :]:
  // contiguous rows, only |F| of them, in lane vectors (the general case reads every row)
  bool symmetric = true;
  for (index_t i = 0; symmetric && i < n; ++i)
    for (index_t j = 0; j < i; ++j)
      if (G[i * n + j] != G[j * n + i]) {
        symmetric = false;
        break;
      }
  for (index_t iter = 0; iter < max_iter; ++iter) {
    if (x_changed && symmetric) {
      grad_rows_impl(G, n, F.data(), static_cast<index_t>(F.size()), x, c, g.data());
      x_changed = false;
    }
    for (index_t i = 0; x_changed && i < n; ++i) g[i] = dot(G + i * n, x, n) - c[i];
    x_changed = false;
    const index_t f = static_cast<index_t>(F.size());
    if (!stationary) {
      Face kind = Face::kStationary;
      if (f > 1) {
        if (fac.stale()) {
          index_t piv = F[0];  // the largest weight is the least likely to leave
          for (index_t v : F)
            if (x[v] > x[piv]) piv = v;
          fac.rebuild(F, piv);
        }
        if (fac.usable()) {
          kind = fac.solve(g.data(), p.data());
        } else {
          H.resize(static_cast<size_t>(f * f));
          gF.resize(static_cast<size_t>(f));
          pF.assign(static_cast<size_t>(f), 0.0);
          for (index_t a = 0; a < f; ++a) {
            gF[a] = g[F[a]];
            for (index_t b = 0; b < f; ++b) H[a * f + b] = G[F[a] * n + F[b]];
          }
          kind = face_direction_eig(H, gF.data(), f, pF.data(), ews);
          for (index_t a = 0; a < f; ++a) p[F[a]] = pF[a];
        }
      }
      if (kind != Face::kStationary) {
        index_t j = 0;
        double best = std::numeric_limits<double>::infinity();
        for (index_t a = 0; a < f; ++a) {  // increasing index order: ties go to the lowest
          const double pa = p[F[a]];
          const double ratio = pa < 0 ? -x[F[a]] / pa : std::numeric_limits<double>::infinity();
          if (ratio < best) {
            best = ratio;
            j = a;
          }
        }
        const double alpha = kind == Face::kRay ? best : std::min(1.0, best);
        for (index_t a = 0; a < f; ++a) x[F[a]] += alpha * p[F[a]];
        x_changed = true;
        if (alpha == best) {
          const index_t leave = F[j];
          x[leave] = 0.0;
          is_free[leave] = 0;
          F.erase(F.begin() + j);
          fac.remove(leave);
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
    F.insert(std::upper_bound(F.begin(), F.end(), jbest), jbest);
    is_free[jbest] = 1;
    fac.add(jbest);
    stationary = false;
  }
}

}  // namespace qp_detail

inline double simplex_qp_impl(const double* G, const double* c, index_t n, double* x, const double* x0) {
  // group bit-identical (row, c) pairs, in order of first occurrence: candidates share the bits of
  // (c_i, G_ii), and only those are compared in full
  auto bits = [](double v) {
    std::uint64_t u;
    std::memcpy(&u, &v, sizeof u);
    return u;
  };
  std::unordered_map<std::uint64_t, std::vector<index_t>> groups_with_key;
  std::vector<index_t> group_of(static_cast<size_t>(n)), reps, sizes;
  for (index_t i = 0; i < n; ++i) {
    const std::uint64_t key = bits(c[i]) ^ (bits(G[i * n + i]) * 0x9E3779B97F4A7C15ull);
    std::vector<index_t>& cands = groups_with_key[key];
    index_t found = -1;
    for (index_t gi : cands) {
      const index_t r = reps[gi];
      if (bits(c[r]) == bits(c[i]) && std::memcmp(G + r * n, G + i * n, sizeof(double) * n) == 0) {
        found = gi;
        break;
      }
    }
    if (found < 0) {
      found = static_cast<index_t>(reps.size());
      cands.push_back(found);
      reps.push_back(i);
      sizes.push_back(0);
    }
    group_of[i] = found;
    ++sizes[found];
  }
  const index_t m = static_cast<index_t>(reps.size());
  qp_detail::Vec Gr(static_cast<size_t>(m * m)), cr(static_cast<size_t>(m)), y(static_cast<size_t>(m)), y0;
  for (index_t a = 0; a < m; ++a) {
    cr[a] = c[reps[a]];
    for (index_t b = 0; b < m; ++b) Gr[a * m + b] = G[reps[a] * n + reps[b]];
  }
  if (x0 != nullptr) {  // a group's start weight is its members' total, normalised to sum 1
    y0.assign(static_cast<size_t>(m), 0.0);
    double s = 0.0;
    for (index_t i = 0; i < n; ++i) {
      y0[group_of[i]] += x0[i];
      s += x0[i];
    }
    for (double& v : y0) v /= s;
  }
  qp_detail::active_set_qp(Gr.data(), cr.data(), m, x0 ? y0.data() : nullptr, y.data());
  for (index_t i = 0; i < n; ++i) x[i] = y[group_of[i]] / static_cast<double>(sizes[group_of[i]]);
  double quad = 0.0, lin = 0.0;
  for (index_t j = 0; j < n; ++j) {
    double v = 0.0;
    for (index_t i = 0; i < n; ++i) v += x[i] * G[i * n + j];
    quad += v * x[j];
    lin += c[j] * x[j];
  }
  return 0.5 * quad - lin;
}

}  // namespace LWE_ISA
}  // namespace lwe
