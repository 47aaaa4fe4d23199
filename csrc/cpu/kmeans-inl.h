// Lloyd k-means in float32 with the reference's rules, per ISA (included by kernels-inl.h).
//
// Assignment: label = argmax_j s_j, s_j = (2 x.c_j - |x|^2) - |c_j|^2 in float32 (x.c_j one FMA
// chain over the coordinates in order, |x|^2 and |c_j|^2 summed in float64 then rounded), ties to
// the lowest j.  Each s_j depends only on (x, c_j), never on the blocking or the thread count.
//
// Exact pruning (Hamerly's bounds, made safe for float32 rounding): every row keeps an upper bound
// u on its distance to its own centroid and a lower bound l on its distance to every other one
// (float64, true distances).  With E = a bound on |s_j + |x - c_j|^2| for every j (rounding of
// the float32 score, below), l^2 - u^2 > 2E proves s_own > s_j strictly for every other j: the
// full scoring would return the same label, so the row is skipped.  Otherwise u is tightened to
// the float64 distance to its centroid and the test repeated; only then are all k scores
// computed.  After the update u grows by its centroid's movement and l shrinks by the largest
// movement of another centroid (triangle inequality).  The labels are therefore exactly those of
// scoring every row every iteration.
//
// Rounding bound: with unit roundoff eps = 2^-24, the FMA chain errs by <= d eps |x||c_j|
// (1 + O(d eps)), |x|^2 and |c_j|^2 by eps each, the two subtractions by eps times their result;
// in total <= (d + 6) eps (|x|^2 + |c_j|^2) (1 + O(d eps)).  E uses twice that, with max_j |c_j|^2.
//
// Update: sums in float64 in row order, mean rounded to float32, an empty cluster's centroid is the
// zero vector; only clusters whose membership changed are recomputed (the others would reproduce
// their previous value bit for bit).  Stop after the iteration whose summed squared movement is
// <= tol (as the reference).
#pragma once

namespace lwe {
namespace LWE_ISA {

constexpr index_t kKmRows = 2 * kW32;  // rows per scoring tile (two vectors of lanes)
constexpr int kKmCols = 6;       // centroids per register block
constexpr index_t kKmChunk = 256;  // rows per bounds task

template <>
inline vi32 vbroadcast<vi32, std::int32_t>(std::int32_t s) {
  vi32 v = {};
  return v + s;
}

// Best/second scores and best index for kKmRows rows (lanes) against centroids [j0, j0 + C).
template <int C>
inline void km_block(const float* xT, index_t d, const float* c, index_t j0, const float* cn,
                     const vf32* xnf, vf32* b1, vf32* b2, vi32* i1, vi32* nan) {
  vf32 acc[2][C];
  _Pragma("GCC unroll 8")
  for (int j = 0; j < C; ++j) acc[0][j] = acc[1][j] = vf32{};
  const float* cj = c + j0 * d;
  for (index_t k = 0; k < d; ++k) {
    const vf32 x0 = vload<vf32>(xT + k * kKmRows), x1 = vload<vf32>(xT + k * kKmRows + kW32);
    _Pragma("GCC unroll 8")
    for (int j = 0; j < C; ++j) {
      const vf32 cb = vbroadcast<vf32>(cj[j * d + k]);
      acc[0][j] += x0 * cb;
      acc[1][j] += x1 * cb;
    }
  }
  _Pragma("GCC unroll 8")
  for (int j = 0; j < C; ++j) {
    const vf32 cnj = vbroadcast<vf32>(cn[j0 + j]);
    const vi32 idx = vbroadcast<vi32>(static_cast<std::int32_t>(j0 + j));
    _Pragma("GCC unroll 2")
    for (int v = 0; v < 2; ++v) {
      const vf32 s = (2.0f * acc[v][j] - xnf[v]) - cnj;
      const vi32 gt = s > b1[v];
      nan[v] |= (s != s);
      b2[v] = gt ? b1[v] : vmax(s, b2[v]);
      b1[v] = gt ? s : b1[v];
      i1[v] = gt ? idx : i1[v];
    }
  }
}

// Score the rows rows[0..m) (m <= kKmRows) against all k centroids: best label, best and second score.
inline void km_score_tile(const float* x, index_t d, const index_t* rows, index_t m, const float* c,
                          index_t k, const float* cn, const float* xnf_all, float* xT,
                          std::int64_t* label, float* best, float* second, bool* has_nan) {
  float xnf_buf[kKmRows] = {};
  for (index_t r = 0; r < m; ++r) {
    const float* xr = x + rows[r] * d;
    for (index_t t = 0; t < d; ++t) xT[t * kKmRows + r] = xr[t];
    xnf_buf[r] = xnf_all[rows[r]];
  }
  if (m < kKmRows)  // the unused lanes of a last, partial tile: zeros (their scores are never read)
    for (index_t t = 0; t < d; ++t) std::fill(xT + t * kKmRows + m, xT + (t + 1) * kKmRows, 0.0f);
  const float ninf = -std::numeric_limits<float>::infinity();
  vf32 xnf[2] = {vload<vf32>(xnf_buf), vload<vf32>(xnf_buf + kW32)};
  vf32 b1[2] = {vbroadcast<vf32>(ninf), vbroadcast<vf32>(ninf)};
  vf32 b2[2] = {b1[0], b1[1]};
  vi32 i1[2] = {vi32{}, vi32{}}, nan[2] = {vi32{}, vi32{}};
  index_t j0 = 0;
  for (; j0 + kKmCols <= k; j0 += kKmCols) km_block<kKmCols>(xT, d, c, j0, cn, xnf, b1, b2, i1, nan);
  switch (k - j0) {
    case 5: km_block<5>(xT, d, c, j0, cn, xnf, b1, b2, i1, nan); break;
    case 4: km_block<4>(xT, d, c, j0, cn, xnf, b1, b2, i1, nan); break;
    case 3: km_block<3>(xT, d, c, j0, cn, xnf, b1, b2, i1, nan); break;
    case 2: km_block<2>(xT, d, c, j0, cn, xnf, b1, b2, i1, nan); break;
    case 1: km_block<1>(xT, d, c, j0, cn, xnf, b1, b2, i1, nan); break;
    default: break;
  }
  float b1s[kKmRows], b2s[kKmRows];
  std::int32_t i1s[kKmRows], nans[kKmRows];
  for (int v = 0; v < 2; ++v) {
    vstore(b1s + kW32 * v, b1[v]);
    vstore(b2s + kW32 * v, b2[v]);
    vstore(i1s + kW32 * v, i1[v]);
    vstore(nans + kW32 * v, nan[v]);
  }
  for (index_t r = 0; r < m; ++r) {
    label[r] = i1s[r];
    best[r] = b1s[r];
    second[r] = b2s[r];
    has_nan[r] = nans[r] != 0;
  }
}

// The scalar rule for a row whose scores hold a NaN (the comparisons then decide as written).
inline std::int64_t km_scalar_label(const float* xr, index_t d, const float* c, index_t k, const float* cn,
                                    float xnf) {
  std::int64_t bestj = 0;
  float bv = 0.0f;
  for (index_t j = 0; j < k; ++j) {
    float s = 0.0f;
    for (index_t t = 0; t < d; ++t) s += xr[t] * c[j * d + t];
    const float v = (2.0f * s - xnf) - cn[j];
    if (j == 0 || v > bv) {
      bv = v;
      bestj = j;
    }
  }
  return bestj;
}

// |a - b|^2 in float64, a lane vector at a time (a bound, not a score: any order will do, the
// caller's factor `up` covers the rounding).
inline double km_sq_dist(const float* a, const float* b, index_t d) {
  typedef float vhalf __attribute__((vector_size(LWE_VBYTES / 2)));  // kW64 floats
  vf64 acc = vf64{};
  index_t t = 0;
  for (; t + kW64 <= d; t += kW64) {
    const vf64 diff = __builtin_convertvector(vload<vhalf>(a + t), vf64) -
                      __builtin_convertvector(vload<vhalf>(b + t), vf64);
    acc += diff * diff;
  }
  double s = hsum<double>(acc);
  for (; t < d; ++t) {
    const double diff = static_cast<double>(a[t]) - static_cast<double>(b[t]);
    s += diff * diff;
  }
  return s;
}

inline int kmeans_lloyd_impl(const float* x, index_t n, index_t d, float* c, index_t k, int max_iter,
                             double tol, SpinTeam* caller_team) {
  constexpr double kEps = 5.9604644775390625e-08;  // 2^-24
  const double err_coef = 2.0 * (static_cast<double>(d) + 6.0) * kEps;
  const double up = 1.0 + 1e-12 + static_cast<double>(d) * 2.3e-16;  // > float64 rounding of a d-term sum, then sqrt
  std::vector<double> xn(static_cast<size_t>(n)), u(static_cast<size_t>(n)), l(static_cast<size_t>(n), 0.0);
  std::vector<float> xnf(static_cast<size_t>(n)), cn(static_cast<size_t>(k));
  std::vector<double> cn64(static_cast<size_t>(k));  // |c_j|^2 in float64 (cn rounds it)
  std::vector<std::int64_t> label(static_cast<size_t>(n), -1), todo_label(static_cast<size_t>(n));
  std::vector<double> sums(static_cast<size_t>(k * d)), move(static_cast<size_t>(k));
  std::vector<index_t> counts(static_cast<size_t>(k)), todo(static_cast<size_t>(n)), loose(static_cast<size_t>(n));
  std::vector<char> changed(static_cast<size_t>(k));
  for (index_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (index_t t = 0; t < d; ++t) s += static_cast<double>(x[i * d + t]) * x[i * d + t];
    xn[i] = s;
    xnf[i] = static_cast<float>(s);
  }
  // Large problems split every phase with OpenMP (threads sharing one core's FP units gain there
  // too); small ones score with a two-thread team (team.h) where four full scorings (~1.6 float32
  // FMA lanes per multiply-add) outweigh three wake-ups (split_pays), else on one thread.
  const double full = static_cast<double>(n) * static_cast<double>(k) * static_cast<double>(d);
  const bool big = full >= 5e7;
  const bool want_team = !big && n > kKmRows && split_pays(full, kKmeansCost);
  // one scratch tile per team slot, each on cache lines of its own: with the two slots' tiles
  // sharing a line, the threads' transpositions passed it back and forth (1.3 -> 1.7 us a tile)
  const index_t xt_stride = d * kKmRows + 16;
  std::vector<float> xT_buf(static_cast<size_t>(2 * xt_stride + 16));
  float* const xT = xT_buf.data() + (16 - reinterpret_cast<std::uintptr_t>(xT_buf.data()) / sizeof(float) % 16) % 16;
  const index_t nchunks = (n + kKmChunk - 1) / kKmChunk;
  std::vector<index_t> chunk_todo(static_cast<size_t>(nchunks));

  index_t ntodo = 0;
  double cmax = 0.0;
  // tile t of this iteration's rows todo[0..ntodo): labels into todo_label, bounds into u, l
  auto score_tile = [&](index_t t, float* xTs) {
    std::int64_t lab[kKmRows];
    float b1[kKmRows], b2[kKmRows];
    bool bad[kKmRows];
    const index_t r0 = t * kKmRows, m = std::min(kKmRows, ntodo - r0);
    const index_t* rows = todo.data() + r0;
    km_score_tile(x, d, rows, m, c, k, cn.data(), xnf.data(), xTs, lab, b1, b2, bad);
    for (index_t r = 0; r < m; ++r) {
      const index_t i = rows[r];
      const double E = err_coef * (xn[i] + cmax);
      if (bad[r]) {
        todo_label[r0 + r] = km_scalar_label(x + i * d, d, c, k, cn.data(), xnf[i]);
        u[i] = std::numeric_limits<double>::infinity();
        l[i] = 0.0;
        continue;
      }
      todo_label[r0 + r] = lab[r];
      u[i] = std::sqrt(std::max(0.0, -static_cast<double>(b1[r]) + E));
      l[i] = k > 1 ? std::sqrt(std::max(0.0, -static_cast<double>(b2[r]) - E))
                   : std::numeric_limits<double>::infinity();
    }
  };

  int it = 0;
  double move1 = 0.0, move2 = 0.0;  // the largest and second-largest centroid movement of the last update
  index_t arg1 = -1;                // the centroid that moved most
  auto lloyd = [&](SpinTeam* team) {
    for (it = 1; it <= max_iter; ++it) {
      cmax = 0.0;
      for (index_t j = 0; j < k; ++j) {
        if (it == 1 || changed[j]) {  // the last update rewrote only the changed centroids
          double s = 0.0;
          for (index_t t = 0; t < d; ++t) s += static_cast<double>(c[j * d + t]) * c[j * d + t];
          cn64[j] = s;
          cn[j] = static_cast<float>(s);
        }
        cmax = std::max(cmax, cn64[j]);
      }
      // ---- which rows can change label (bounds), tightening u on the way; the lists are built
      // without branches on the (unpredictable) bound tests
      if (it == 1) {
        for (index_t i = 0; i < n; ++i) todo[i] = i;
        ntodo = n;
      } else {
        // in chunks of rows (the team's or OpenMP's tasks): the rows the loose u cannot prove,
        // u tightened for those, and the rows still unproven into todo at the chunk's offset
        auto proven = [&](index_t i) {
          const double li = l[i];
          return (li > 0.0) & (li * li - u[i] * u[i] > 2.0 * err_coef * (xn[i] + cmax));
        };
        auto bounds_chunk = [&](index_t t, int) {
          const index_t i0 = t * kKmChunk, i1 = std::min(n, i0 + kKmChunk);
          index_t nl = i0, m = i0;
          for (index_t i = i0; i < i1; ++i) {
            const index_t j = label[i];  // the bounds follow the last update's centroid movements
            u[i] += move[j];
            l[i] -= (j == arg1 ? move2 : move1);
            loose[nl] = i;
            nl += static_cast<index_t>(!proven(i));
          }
          for (index_t a = i0; a < nl; ++a) {
            const index_t i = loose[a];
            u[i] = std::sqrt(km_sq_dist(x + i * d, c + label[i] * d, d)) * up;
            todo[m] = i;
            m += static_cast<index_t>(!proven(i));
          }
          chunk_todo[t] = m - i0;
        };
        if (team) {
          team->run(nchunks, bounds_chunk);
        } else {
#pragma omp parallel for schedule(static, 4) if (big)
          for (index_t t = 0; t < nchunks; ++t) bounds_chunk(t, 0);
        }
        ntodo = 0;
        for (index_t t = 0; t < nchunks; ++t) {
          std::memmove(todo.data() + ntodo, todo.data() + t * kKmChunk, sizeof(index_t) * chunk_todo[t]);
          ntodo += chunk_todo[t];
        }
      }
      const index_t ntiles = (ntodo + kKmRows - 1) / kKmRows;
      if (team) {
        auto task = [&](index_t t, int slot) { score_tile(t, xT + slot * xt_stride); };
        team->run(ntiles, task);
      } else if (big && static_cast<double>(ntodo) * static_cast<double>(k) * static_cast<double>(d) >= 2e6) {
#pragma omp parallel
        {
          std::vector<float> xTs(static_cast<size_t>(d * kKmRows));
#pragma omp for schedule(dynamic, 4)
          for (index_t t = 0; t < ntiles; ++t) score_tile(t, xTs.data());
        }
      } else {
        for (index_t t = 0; t < ntiles; ++t) score_tile(t, xT);
      }
      // ---- update: only clusters whose membership changed
      std::fill(changed.begin(), changed.end(), static_cast<char>(it == 1));
      for (index_t a = 0; a < ntodo; ++a) {
        const index_t i = todo[a];
        const std::int64_t nl = todo_label[a], ol = label[i];
        if (nl != ol) {
          changed[nl] = 1;
          if (ol >= 0) changed[ol] = 1;
          label[i] = nl;
        }
      }
      for (index_t j = 0; j < k; ++j)
        if (changed[j]) {
          counts[j] = 0;
          std::fill(&sums[j * d], &sums[j * d] + d, 0.0);
        }
      for (index_t i = 0; i < n; ++i) {
        const index_t j = label[i];
        if (!changed[j]) continue;
        ++counts[j];
        double* s = &sums[j * d];
        const float* xr = x + i * d;
        for (index_t t = 0; t < d; ++t) s[t] += static_cast<double>(xr[t]);
      }
      double shift = 0.0;
      move1 = move2 = 0.0;
      arg1 = -1;
      for (index_t j = 0; j < k; ++j) {
        move[j] = 0.0;
        if (!changed[j]) continue;
        double mj = 0.0;
        for (index_t t = 0; t < d; ++t) {
          // an empty cluster's centroid becomes the zero vector (reference rule)
          const float nv = counts[j] ? static_cast<float>(sums[j * d + t] / static_cast<double>(counts[j])) : 0.0f;
          const double diff = static_cast<double>(nv) - static_cast<double>(c[j * d + t]);
          shift += diff * diff;  // element order as a full recompute (unchanged clusters add +0)
          mj += diff * diff;
          c[j * d + t] = nv;
        }
        move[j] = std::sqrt(mj) * up;
        if (move[j] > move1) {
          move2 = move1;
          move1 = move[j];
          arg1 = j;
        } else if (move[j] > move2) {
          move2 = move[j];
        }
      }
      if (shift <= tol) break;
    }
  };

  if (caller_team)
    lloyd(caller_team);
  else
    with_spin_team(want_team, lloyd);
  return it > max_iter ? max_iter : it;
}

}  // namespace LWE_ISA
}  // namespace lwe
