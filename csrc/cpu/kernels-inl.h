// The CPU compute kernels, written once on width-agnostic vectors (simd.h) and compiled per ISA:
// inner_portable.cpp (baseline SSE2) and inner_avx2.cpp (-mavx2 -mfma).  Define LWE_ISA first.
//
// Determinism: every output value depends only on its own inputs (a spec pair, a data chunk
// layout fixed by the problem size), never on the thread count or the position in the store, so
// identical specs give bit-identical results and reruns are reproducible.
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>
#ifdef LWE_HAVE_OPENMP
#include <omp.h>
#endif

#include "lwengine/kernels/pair.h"
#include "lwengine/kernels/rs_step.h"
#include "ops.h"
#include "simd.h"
#include "team.h"

namespace lwe {
namespace LWE_ISA {

inline index_t round_up(index_t v, index_t m) { return (v + m - 1) / m * m; }

// ------------------------------------------------------------------ query packing
// A query spec, transposed to (d, Kp) so that vector lanes run over its points.
//   float32: qT = screen_coord(qz),    bias = -screen_term(|qz|^2)  (pair.h's float32 screening form)
//   float64: qT = 16 log2_coord(qz),   bias = 16 log2_term(|qz|^2)  (pair.h's float64 log2 form, scaled
//            by 16 -- exact -- for exp2_16_f64)
// Padding lanes have qb = 0 so they contribute exactly 0.
template <class T>
struct QueryPack {
  index_t K = 0, Kp = 0, d = 0;
  std::vector<T> qT, bias, qb;
};

template <class T>
void build_pack(QueryPack<T>& P, const T* qz, const double* qbeta, index_t K, index_t d, double gamma) {
  constexpr int W = Simd<T>::W;
  constexpr bool F32 = std::is_same<T, float>::value;
  P.K = K;
  P.d = d;
  P.Kp = round_up(std::max<index_t>(K, 1), W);
  P.qT.assign(static_cast<size_t>(d * P.Kp), T(0));
  P.bias.assign(static_cast<size_t>(P.Kp), T(0));
  P.qb.assign(static_cast<size_t>(P.Kp), T(0));
  for (index_t a = 0; a < K; ++a) {
    double nrm = 0.0;
    for (index_t k = 0; k < d; ++k) {
      const double v = static_cast<double>(qz[a * d + k]);
      nrm += v * v;
      P.qT[k * P.Kp + a] =
          F32 ? static_cast<T>(screen_coord(v, gamma)) : static_cast<T>(16.0 * log2_coord(v, gamma));
    }
    P.bias[a] = F32 ? static_cast<T>(-screen_term(nrm, gamma)) : static_cast<T>(16.0 * log2_term(nrm, gamma));
    P.qb[a] = static_cast<T>(qbeta[a]);
  }
}

// R store rows x NV lane-vectors of query points: dot products, exp, weighted lane sums.
template <class T, int R, int NV>
inline void inner_chunk(const QueryPack<T>& P, index_t a0, const T* zr, const T* zterm,
                        typename Simd<T>::V* rowacc) {
  using V = typename Simd<T>::V;
  constexpr int W = Simd<T>::W;
  const index_t d = P.d, Kp = P.Kp;
  V acc[R][NV];
  _Pragma("GCC unroll 8")
  for (int v = 0; v < NV; ++v)
    _Pragma("GCC unroll 8")
    for (int r = 0; r < R; ++r) {
      if constexpr (std::is_same<T, float>::value)
        acc[r][v] = screen_init(vload<V>(&P.bias[a0 + v * W]), zterm[r]);
      else
        acc[r][v] = V{};
    }
  const T* q = P.qT.data() + a0;
  for (index_t k = 0; k < d; ++k) {
    V qv[NV];
    _Pragma("GCC unroll 8")
    for (int v = 0; v < NV; ++v) qv[v] = vload<V>(q + k * Kp + v * W);
    _Pragma("GCC unroll 8")
    for (int r = 0; r < R; ++r) {
      const V zb = vbroadcast<V>(zr[r * d + k]);
      _Pragma("GCC unroll 8")
      for (int v = 0; v < NV; ++v) {
        if constexpr (std::is_same<T, float>::value)
          acc[r][v] = screen_add(acc[r][v], qv[v], zb);
        else
          acc[r][v] += qv[v] * zb;  // the dot product of the log2 form
      }
    }
  }
  if constexpr (std::is_same<T, float>::value) {
    _Pragma("GCC unroll 8")
    for (int v = 0; v < NV; ++v) {
      const V qbv = vload<V>(&P.qb[a0 + v * W]);
      _Pragma("GCC unroll 8")
      for (int r = 0; r < R; ++r) rowacc[r] += qbv * screen_value(acc[r][v], VExp2{});
    }
  } else {  // the exps of all R x NV vectors side by side (exp2_16_f64_n), then the same sums
    V u[R * NV], k[R * NV];
    _Pragma("GCC unroll 8")
    for (int v = 0; v < NV; ++v) {
      const V bias = vload<V>(&P.bias[a0 + v * W]);
      _Pragma("GCC unroll 8")
      for (int r = 0; r < R; ++r) u[v * R + r] = log2_exponent(acc[r][v], bias + zterm[r]);
    }
    exp2_16_f64_n<R * NV>(u, k);
    _Pragma("GCC unroll 8")
    for (int v = 0; v < NV; ++v) {
      const V qbv = vload<V>(&P.qb[a0 + v * W]);
      _Pragma("GCC unroll 8")
      for (int r = 0; r < R; ++r) rowacc[r] += qbv * k[v * R + r];
    }
  }
}

template <class T, int R>
inline double inner_rows(const QueryPack<T>& P, const T* zr, const T* zterm, const double* beta) {
  using V = typename Simd<T>::V;
  constexpr int W = Simd<T>::W;
  V rowacc[R];
  _Pragma("GCC unroll 8")
  for (int r = 0; r < R; ++r) rowacc[r] = V{};
  // R x tile_vectors accumulators fit the registers (a spilled one makes its FMA chain go through
  // memory).  rowacc sums the lane vectors in order of a0 whatever the chunking: the same bits.
  constexpr int kNV = tile_vectors<R>();
  // a last single vector would leave R FMA chains (latency-bound): the last kNV + 1 vectors go as
  // 3 + 2 (kNV = 4) or 2 + 2 (kNV = 3)
  const index_t nv = P.Kp / W;
  const index_t n_full = (nv % kNV == 1 && nv > kNV) ? nv / kNV - 1 : nv / kNV;
  index_t a0 = 0;
  for (index_t c = 0; c < n_full; ++c, a0 += kNV * W) inner_chunk<T, R, kNV>(P, a0, zr, zterm, rowacc);
  index_t rest = nv - n_full * kNV;
  if (rest == 3 || rest == 5) {
    inner_chunk<T, R, 3>(P, a0, zr, zterm, rowacc);
    a0 += 3 * W;
    rest -= 3;
  }
  for (; rest >= 2; rest -= 2, a0 += 2 * W) inner_chunk<T, R, 2>(P, a0, zr, zterm, rowacc);
  if (rest) inner_chunk<T, R, 1>(P, a0, zr, zterm, rowacc);
  double s = 0.0;
  _Pragma("GCC unroll 8")
  for (int r = 0; r < R; ++r) s += beta[r] * static_cast<double>(hsum<T>(rowacc[r]));
  return s;
}

// Store-row terms of a block of rows from the float64 |z_b|^2, as the float32 screening term or
// 16 x the float64 log2 term (pair.h), outside the FMA-bound micro-kernel.  float64 rows: per row,
// W-lane partial sums of the squares over the whole lane vectors of coordinates (a lane vector at
// a time, in order), hsum's fixed tree, then the remaining coordinates in order; float32 rows: one
// chain over the coordinates in order, four rows side by side.  Either is the same for every call
// of one SIMD path.
template <class T>
inline double row_sqnorm(const T* zr, index_t d) {
  double s = 0.0;
  index_t k = 0;
  if constexpr (std::is_same<T, double>::value) {
    using V = vf64;
    constexpr int W = kW64;
    if (d >= W) {
      V acc = vload<V>(zr) * vload<V>(zr);
      for (k = W; k + W <= d; k += W) {
        const V v = vload<V>(zr + k);
        acc += v * v;
      }
      s = hsum<double>(acc);
    }
  }
  for (; k < d; ++k) {
    const double v = static_cast<double>(zr[k]);
    s += v * v;
  }
  return s;
}

template <class T>
inline void row_terms(const T* z, index_t nrows, index_t d, double gamma, T* out) {
  auto term = [&](double s) {
    return std::is_same<T, float>::value ? static_cast<T>(screen_term(s, gamma))
                                         : static_cast<T>(16.0 * log2_term(s, gamma));
  };
  index_t r = 0;
  if constexpr (std::is_same<T, float>::value) {
    for (; r + 4 <= nrows; r += 4) {
      const T* z0 = z + r * d;
      double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
      for (index_t k = 0; k < d; ++k) {
        const double v0 = static_cast<double>(z0[k]), v1 = static_cast<double>(z0[d + k]);
        const double v2 = static_cast<double>(z0[2 * d + k]), v3 = static_cast<double>(z0[3 * d + k]);
        s0 += v0 * v0;
        s1 += v1 * v1;
        s2 += v2 * v2;
        s3 += v3 * v3;
      }
      out[r] = term(s0);
      out[r + 1] = term(s1);
      out[r + 2] = term(s2);
      out[r + 3] = term(s3);
    }
  }
  for (; r < nrows; ++r) out[r] = term(row_sqnorm(z + r * d, d));
}

// <query spec, store spec>: rows in tiles of 4 from the spec's own start (position independent);
// the row terms are computed per block of kRowBlock rows (a multiple of 4: the same tiles).
constexpr index_t kRowBlock = 64;

template <class T>
double spec_inner(const QueryPack<T>& P, const T* z, const double* beta, index_t Ki, double gamma) {
  if (P.K == 0 || Ki == 0) return 0.0;
  const index_t d = P.d;
  T zt[kRowBlock];
  double total = 0.0;
  for (index_t b0 = 0; b0 < Ki; b0 += kRowBlock) {
    const index_t nb = std::min(kRowBlock, Ki - b0);
    const T* zb = z + b0 * d;
    row_terms(zb, nb, d, gamma, zt);
    index_t b = 0;
    for (; b + 4 <= nb; b += 4) total += inner_rows<T, 4>(P, zb + b * d, zt + b, beta + b0 + b);
    for (; b < nb; ++b) total += inner_rows<T, 1>(P, zb + b * d, zt + b, beta + b0 + b);
  }
  return total;
}

// Hints `bytes` from p into L2, one per 64-byte line (a spec's rows: ~8-16 KB).
inline void prefetch_l2(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 2);
}

// float32 FMA lanes per query row coordinate of build_pack (a division, conversions, stores), for split_pays
constexpr double kPackCost = 20.0;

template <class T>
void cross_inner_impl(const T* q_z, const double* q_beta, const index_t* q_off, index_t Q, const T* z,
                      const double* beta, const index_t* off, const index_t* sel, index_t N, index_t d,
                      double gamma, double* out) {
  std::vector<QueryPack<T>> packs(static_cast<size_t>(Q));
  const double q_rows = static_cast<double>(q_off[Q] - q_off[0]);
#pragma omp parallel for schedule(dynamic, 8) if (split_pays(q_rows * static_cast<double>(d), kPackCost))
  for (index_t q = 0; q < Q; ++q)
    build_pack(packs[q], q_z + q_off[q] * d, q_beta + q_off[q], q_off[q + 1] - q_off[q], d, gamma);
  const index_t total = Q * N;
  // a small scan (the search's pool and mixture calls) stays on this thread when waking the other
  // costs more than it saves; the rows are estimated from the first 64 specs
  const index_t probe = std::min<index_t>(N, 64);
  double rows = 0.0;
  for (index_t t = 0; t < probe; ++t) {
    const index_t i = sel ? sel[t] : t;
    rows += static_cast<double>(off[i + 1] - off[i]);
  }
  const double madds = probe ? q_rows * rows * static_cast<double>(N) / static_cast<double>(probe) *
                                   static_cast<double>(d) : 0.0;
  const bool par = madds >= kAlwaysSplitWork || split_pays(madds, std::is_same<T, float>::value ? 3.0 : 5.0);
  auto item = [&](index_t t) {
    const index_t q = t / N, i = sel ? sel[t % N] : t % N;
    if (sel && t + 1 < total) {  // scattered specs: fetch the next one's rows while this one computes
      const index_t j = sel[(t + 1) % N];
      prefetch_l2(z + off[j] * d, static_cast<size_t>(off[j + 1] - off[j]) * static_cast<size_t>(d) * sizeof(T));
      prefetch_l2(beta + off[j], static_cast<size_t>(off[j + 1] - off[j]) * sizeof(double));
    }
    out[t] = spec_inner(packs[q], z + off[i] * d, beta + off[i], off[i + 1] - off[i], gamma);
  };
  if (SpinTeam* team = par ? call_team() : nullptr) {  // a search's team: no OpenMP wake-up
    constexpr index_t C = 8;
    auto task = [&](index_t c, int) {
      for (index_t t = c * C; t < std::min(total, (c + 1) * C); ++t) item(t);
    };
    team->run((total + C - 1) / C, task);
    return;
  }
#pragma omp parallel for schedule(static, 16) if (par)
  for (index_t t = 0; t < total; ++t) item(t);
}

template <class T>
void self_inner_impl(const T* z, const double* beta, const index_t* off, index_t N, index_t d,
                     double gamma, double* out) {
  const index_t probe = std::min<index_t>(N, 64);  // sum of K_i^2 estimated from the first 64 specs
  double sq = 0.0;
  for (index_t i = 0; i < probe; ++i) {
    const double Ki = static_cast<double>(off[i + 1] - off[i]);
    sq += Ki * Ki;
  }
  const double madds = probe ? sq * static_cast<double>(N) / static_cast<double>(probe) * static_cast<double>(d) : 0.0;
  const bool par = madds >= kAlwaysSplitWork || split_pays(madds, std::is_same<T, float>::value ? 3.0 : 5.0);
  auto item = [&](index_t i, QueryPack<T>& P) {
    const index_t Ki = off[i + 1] - off[i];
    build_pack(P, z + off[i] * d, beta + off[i], Ki, d, gamma);
    out[i] = spec_inner(P, z + off[i] * d, beta + off[i], Ki, gamma);
  };
  if (SpinTeam* team = par ? call_team() : nullptr) {  // a search's team: no OpenMP wake-up
    index_t kmax = 0;  // packs sized up front: no allocation inside a task
    for (index_t i = 0; i < N; ++i) kmax = std::max(kmax, off[i + 1] - off[i]);
    QueryPack<T> p0, p1;
    for (QueryPack<T>* p : {&p0, &p1}) {
      const index_t Kp = round_up(std::max<index_t>(kmax, 1), Simd<T>::W);
      p->qT.reserve(static_cast<size_t>(d * Kp));
      p->bias.reserve(static_cast<size_t>(Kp));
      p->qb.reserve(static_cast<size_t>(Kp));
    }
    auto task = [&](index_t i, int slot) { item(i, slot ? p1 : p0); };
    team->run(N, task);
    return;
  }
#pragma omp parallel if (par)
  {
    QueryPack<T> P;
#pragma omp for schedule(dynamic, 8)
    for (index_t i = 0; i < N; ++i) item(i, P);
  }
}

template <class T>
void gram_impl(const T* z, const double* beta, const index_t* off, index_t N, index_t d, double gamma,
               double* out) {
  std::vector<QueryPack<T>> packs(static_cast<size_t>(N));
#pragma omp parallel for schedule(dynamic, 8) \
    if (split_pays(static_cast<double>(off[N] - off[0]) * static_cast<double>(d), kPackCost))
  for (index_t i = 0; i < N; ++i)
    build_pack(packs[i], z + off[i] * d, beta + off[i], off[i + 1] - off[i], d, gamma);
#pragma omp parallel for schedule(dynamic, 1)
  for (index_t i = 0; i < N; ++i)
    for (index_t j = i; j < N; ++j) {
      const double v = spec_inner(packs[i], z + off[j] * d, beta + off[j], off[j + 1] - off[j], gamma);
      out[i * N + j] = v;
      out[j * N + i] = v;
    }
}

// ------------------------------------------------------------------ far-spec bound (search pruning)
// out[q * N + i] = sum_{a in query q} w_a exp(-gamma max(0, |a - c_i| - r_i)^2), an upper bound on
// sum_a w_a max_b k(a, z_b) over every point z_b of the ball (c_i, r_i) (w_a >= 0), rigorous in
// float64: |a - c|^2 through the expansion minus a rounding margin (2d + 8) u (|a|^2 + |c|^2)
// (dot product, norms and the two additions), r_i widened by 4u, the exp and the sum over a
// covered by a relative 1e-10, underflow by an absolute K 1e-300.  Lanes run over the specs.
constexpr index_t kBallTile = 256;
constexpr index_t kBallStride = kBallTile + 8;  // cT row stride: not a multiple of 4 KB / 2 (L1 set conflicts)

// acc[b] = the bound's sum over the query's points a0..a1 for the NB lane vectors of specs at j0 + b W
// of a tile (centres transposed in cT, squared norms cn, widened radii rr); per lane the same
// operations as one vector at a time.
template <int NB>
inline void ball_block(const double* qz, const double* qw, const double* qn, index_t a0, index_t a1, index_t d,
                       const double* cT, const double* cn, const double* rr, index_t j0, double gamma,
                       double coef, vf64* acc) {
  using V = vf64;
  constexpr int W = kW64;
  V cnv[NB], rv[NB];
  for (int b = 0; b < NB; ++b) {
    cnv[b] = vload<V>(&cn[j0 + b * W]);
    rv[b] = vload<V>(&rr[j0 + b * W]);
    acc[b] = V{};
  }
  for (index_t a = a0; a < a1; ++a) {
    V dot[NB];
    for (int b = 0; b < NB; ++b) dot[b] = V{};
    for (index_t k = 0; k < d; ++k) {
      const V qa = vbroadcast<V>(qz[a * d + k]);
      for (int b = 0; b < NB; ++b) dot[b] += qa * vload<V>(&cT[k * kBallStride + j0 + b * W]);
    }
    for (int b = 0; b < NB; ++b) {
      const V nrm = cnv[b] + qn[a];
      V sq = (nrm - dot[b] * 2) - nrm * coef;
      sq = sq > V{} ? sq : V{};
      V gap = vsqrt(sq) - rv[b];
      gap = gap > V{} ? gap : V{};
      acc[b] += qw[a] * exp_f64(-gamma * (gap * gap));
    }
  }
}

inline void ball_bound_f64_impl(const double* qz, const double* qw, const index_t* qoff, index_t Q, const double* c,
                            const double* r, index_t N, index_t d, double gamma, double* out) {
  using V = vf64;
  constexpr int W = kW64;
  constexpr double u = 1.1102230246251565e-16;  // 2^-53
  const double coef = (2.0 * static_cast<double>(d) + 8.0) * u;
  const index_t Mq = qoff[Q];
  std::vector<double> qn(static_cast<size_t>(Mq));
  for (index_t a = 0; a < Mq; ++a) {
    double s = 0.0;
    for (index_t k = 0; k < d; ++k) s += qz[a * d + k] * qz[a * d + k];
    qn[a] = s;
  }
  const index_t ntiles = (N + kBallTile - 1) / kBallTile;
#pragma omp parallel
  {
    std::vector<double> cT(static_cast<size_t>(d * kBallStride)), cn(kBallTile), rr(kBallTile);
    double lane[W];
#pragma omp for schedule(dynamic, 1)  // a descheduled vCPU does not hold the other back
    for (index_t t = 0; t < ntiles; ++t) {
      const index_t i0 = t * kBallTile, m = std::min(kBallTile, N - i0), mp = round_up(m, W);
      std::fill(cT.begin(), cT.end(), 0.0);
      for (index_t j = 0; j < mp; ++j) {  // padding lanes: zero centre and radius, never stored
        double s = 0.0;
        if (j < m)
          for (index_t k = 0; k < d; ++k) {
            const double v = c[(i0 + j) * d + k];
            cT[k * kBallStride + j] = v;
            s += v * v;
          }
        cn[j] = s;
        rr[j] = j < m ? r[i0 + j] * (1.0 + 4.0 * u) : 0.0;
      }
      for (index_t q = 0; q < Q; ++q) {
        const index_t a0 = qoff[q], a1 = qoff[q + 1];
        auto put = [&](index_t j0, const V* acc, int nb) {
          for (int b = 0; b < nb; ++b) {
            vstore(lane, acc[b]);
            for (index_t j = j0 + b * W; j < std::min(m, j0 + (b + 1) * W); ++j)
              out[q * N + i0 + j] = lane[j - j0 - b * W] * (1.0 + 1e-10) + static_cast<double>(a1 - a0) * 1e-300;
          }
        };
        index_t j0 = 0;
        V acc[4];
        for (; j0 + 4 * W <= mp; j0 += 4 * W) {  // 4 independent dot chains: not latency-bound
          ball_block<4>(qz, qw, qn.data(), a0, a1, d, cT.data(), cn.data(), rr.data(), j0, gamma, coef, acc);
          put(j0, acc, 4);
        }
        for (; j0 < mp; j0 += W) {
          ball_block<1>(qz, qw, qn.data(), a0, a1, d, cT.data(), cn.data(), rr.data(), j0, gamma, coef, acc);
          put(j0, acc, 1);
        }
      }
    }
  }
}

// The float32 form of ball_block (16 lanes on AVX-512): points and centres relative to the query's
// mean (cT, qz32), rounded to float32.  Every step keeps the bound: |s~ - s| <= kappa (|a|^2 + |c|^2)
// for the squared distance s (the rounding of the shifted inputs, the d-term dot product and the
// norms), subtracted; the square root, the gap (against a radius rounded up) and gamma g^2 each
// move one rounding in the safe direction; the exponent is clamped at -87 (exp's float32 range,
// above every true value it replaces).  ball_bound_impl widens the lane sums for the exp's and the
// additions' error.
template <int NB>
inline void ball_block_f32(const float* qz, const float* qw, const float* qn, index_t a0, index_t a1, index_t d,
                           const float* cT, const float* cn, const float* rr, index_t j0, float gamma, float kappa,
                           vf32* acc) {
  using V = vf32;
  constexpr int W = kW32;
  constexpr float down = 1.0f - 0x1p-22f;
  V cnv[NB], rv[NB];
  for (int b = 0; b < NB; ++b) {
    cnv[b] = vload<V>(&cn[j0 + b * W]);
    rv[b] = vload<V>(&rr[j0 + b * W]);
    acc[b] = V{};
  }
  for (index_t a = a0; a < a1; ++a) {
    V dot[NB];
    for (int b = 0; b < NB; ++b) dot[b] = V{};
    for (index_t k = 0; k < d; ++k) {
      const V qa = vbroadcast<V>(qz[a * d + k]);
      for (int b = 0; b < NB; ++b) dot[b] += qa * vload<V>(&cT[k * kBallStride + j0 + b * W]);
    }
    for (int b = 0; b < NB; ++b) {
      const V nrm = cnv[b] + qn[a];
      V sq = (nrm - dot[b] * 2.0f) - nrm * kappa;
      sq = sq > V{} ? sq : V{};
      V gap = vsqrt(sq) * down - rv[b];
      gap = gap > V{} ? gap * down : V{};
      V e = (gap * gap) * (-gamma * down);
      e = e > vbroadcast<V>(-87.0f) ? e : vbroadcast<V>(-87.0f);
      acc[b] += qw[a] * exp_f32(e);
    }
  }
}

// float32 is safe where the shifted coordinates, radii and gamma keep every intermediate normal
// and finite (squares of |x| <= 1e17 over d <= 1e3 coordinates stay below 1e38)
inline bool ball_f32_safe(double max_abs, double max_r, double gamma, index_t d) {
  return d <= 1000 && max_abs <= 1e17 && max_r <= 1e17 && gamma >= 1e-30 && gamma <= 1e30;
}

inline void ball_bound_f32_impl(const double* qz, const double* qw, const index_t* qoff, index_t Q, const double* c,
                                const double* r, index_t N, index_t d, double gamma, const double* origin,
                                double* out) {
  using V = vf32;
  constexpr int W = kW32;
  constexpr double u = 0x1p-24;
  const float kappa = static_cast<float>((2.0 * static_cast<double>(d) + 24.0) * u + 0x1p-22);
  const float gam = static_cast<float>(gamma);
  const index_t Mq = qoff[Q];
  std::vector<float> q32(static_cast<size_t>(Mq * d)), qn(static_cast<size_t>(Mq)), w32(static_cast<size_t>(Mq));
  std::vector<double> wsum(static_cast<size_t>(Q), 0.0);
  for (index_t q = 0; q < Q; ++q)
    for (index_t a = qoff[q]; a < qoff[q + 1]; ++a) {
      double s = 0.0;
      for (index_t k = 0; k < d; ++k) {
        const float v = static_cast<float>(qz[a * d + k] - origin[q * d + k]);
        q32[a * d + k] = v;
        s += static_cast<double>(v) * v;
      }
      qn[a] = static_cast<float>(s);
      w32[a] = std::nextafter(static_cast<float>(qw[a]), std::numeric_limits<float>::infinity());
      wsum[q] += qw[a];
    }
  const index_t ntiles = (N + kBallTile - 1) / kBallTile;
  struct Scratch {
    std::vector<float> cT, cn, rr;
    explicit Scratch(index_t d) : cT(static_cast<size_t>(d * kBallStride)), cn(kBallTile), rr(kBallTile) {}
  };
  auto tile = [&](index_t t, Scratch& sc) {
    std::vector<float>&cT = sc.cT, &cn = sc.cn, &rr = sc.rr;
    float lane[W];
    {
      const index_t q = t % Q, i0 = (t / Q) * kBallTile, m = std::min(kBallTile, N - i0), mp = round_up(m, W);
      const index_t a0 = qoff[q], a1 = qoff[q + 1];
      std::fill(cT.begin(), cT.end(), 0.0f);
      std::fill(cn.begin(), cn.end(), 0.0f);
      std::fill(rr.begin(), rr.end(), 0.0f);  // padding lanes: zero centre and radius, never stored
      for (index_t j = 0; j < m; ++j) {
        for (index_t k = 0; k < d; ++k) cT[k * kBallStride + j] = static_cast<float>(c[(i0 + j) * d + k] - origin[q * d + k]);
        rr[j] = std::nextafter(static_cast<float>(r[i0 + j] * (1.0 + 4.0 * u)), std::numeric_limits<float>::infinity());
      }
      for (index_t k = 0; k < d; ++k)  // the squared norms, lanes over the tile
        for (index_t j = 0; j < mp; j += W) {
          const V v = vload<V>(&cT[k * kBallStride + j]);
          vstore(&cn[j], vload<V>(&cn[j]) + v * v);
        }
      // the lane sums: a-many float32 additions and the exp's error (<= 4 ulp), widened
      const double widen = 1.0 + (static_cast<double>(a1 - a0) + 16.0) * 0x1p-22;
      const double floor = wsum[q] * 2e-38 + static_cast<double>(a1 - a0) * 1e-44;  // clamped / underflowed terms
      auto put = [&](index_t j0, const V* acc, int nb) {
        for (int b = 0; b < nb; ++b) {
          vstore(lane, acc[b]);
          for (index_t j = j0 + b * W; j < std::min(m, j0 + (b + 1) * W); ++j)
            out[q * N + i0 + j] = static_cast<double>(lane[j - j0 - b * W]) * widen + floor;
        }
      };
      index_t j0 = 0;
      V acc[4];
      for (; j0 + 4 * W <= mp; j0 += 4 * W) {
        ball_block_f32<4>(q32.data(), w32.data(), qn.data(), a0, a1, d, cT.data(), cn.data(), rr.data(), j0, gam,
                          kappa, acc);
        put(j0, acc, 4);
      }
      for (; j0 < mp; j0 += W) {
        ball_block_f32<1>(q32.data(), w32.data(), qn.data(), a0, a1, d, cT.data(), cn.data(), rr.data(), j0, gam,
                          kappa, acc);
        put(j0, acc, 1);
      }
    }
  };
  if (SpinTeam* team = call_team()) {  // a search's team: no OpenMP wake-up
    Scratch s0(d), s1(d);
    auto task = [&](index_t t, int slot) { tile(t, slot ? s1 : s0); };
    team->run(ntiles * Q, task);
    return;
  }
#pragma omp parallel
  {
    Scratch sc(d);
#pragma omp for schedule(dynamic, 1)
    for (index_t t = 0; t < ntiles * Q; ++t) tile(t, sc);
  }
}

// float32 where the inputs allow it (ball_f32_safe, after shifting every query to its own mean),
// else float64: both are rigorous upper bounds; float32 runs twice the lanes
inline void ball_bound_impl(const double* qz, const double* qw, const index_t* qoff, index_t Q, const double* c,
                            const double* r, index_t N, index_t d, double gamma, double* out) {
  std::vector<double> origin(static_cast<size_t>(Q * d), 0.0);
  double max_abs = 0.0, max_r = 0.0, max_c = 0.0;
  for (index_t q = 0; q < Q; ++q) {
    const index_t a0 = qoff[q], a1 = qoff[q + 1];
    for (index_t a = a0; a < a1; ++a)
      for (index_t k = 0; k < d; ++k) origin[q * d + k] += qz[a * d + k];
    for (index_t k = 0; k < d; ++k) origin[q * d + k] /= static_cast<double>(std::max<index_t>(a1 - a0, 1));
    for (index_t a = a0; a < a1; ++a)
      for (index_t k = 0; k < d; ++k) max_abs = std::max(max_abs, std::abs(qz[a * d + k] - origin[q * d + k]));
  }
  double mc[4] = {0.0, 0.0, 0.0, 0.0};  // independent chains (the centres are finite)
  index_t t = 0;
  for (; t + 4 <= N * d; t += 4)
    for (int l = 0; l < 4; ++l) mc[l] = std::max(mc[l], std::abs(c[t + l]));
  for (; t < N * d; ++t) mc[0] = std::max(mc[0], std::abs(c[t]));
  max_c = std::max(std::max(mc[0], mc[1]), std::max(mc[2], mc[3]));
  for (index_t i = 0; i < N; ++i) max_r = std::max(max_r, r[i]);
  double max_o = 0.0;
  for (index_t t = 0; t < Q * d; ++t) max_o = std::max(max_o, std::abs(origin[t]));
  if (ball_f32_safe(std::max(max_abs, max_c + max_o), max_r, gamma, d))
    ball_bound_f32_impl(qz, qw, qoff, Q, c, r, N, d, gamma, origin.data(), out);
  else
    ball_bound_f64_impl(qz, qw, qoff, Q, c, r, N, d, gamma, out);
}

// ------------------------------------------------------------------ far-spec bound along directions
// out[j] for spec i = specs[j]: sum_a w_a exp(-gamma g_a^2) >= sum_a w_a max_b k(a, z_b) over the
// spec's rows z_b, where g_a is the larger of two lower bounds on min_b |a - z_b|: the ball gap of
// ball_bound, and the distance of a's projection from the interval of the rows' projections onto
// v = gc_G - c_i (G = group[a], gc_G that group's centre): |a - z_b| >= |v.a - v.z_b| / |v| for any v.
// In 20 dimensions the rows of a spec fill little of their ball, so for a spec far from a group
// of query points this bound is far tighter than the ball's.  Rigorous for the exact float64 rows
// when z holds their float32 copy: a computed projection is within (gamma_d |x| + 2^-24 |z_b|) |v|
// of the exact one (x = a or z_b, |z_b| <= |c_i| + r_i), |v| is rounded up, the interval distance
// and the division are widened by 4u.  A group whose projections or direction are not finite (or
// v = 0) falls back to the ball gap; so does any lane whose projected gap is not finite.
template <class T>
inline void projection_bound_impl(const double* qz, const double* qw, const index_t* qgroup, index_t Ka,
                                  const double* gc, index_t ng, const T* z, const index_t* off,
                                  const index_t* specs, index_t M, const double* c, const double* r, index_t d,
                                  double gamma, double* out) {
  using V = vf64;
  constexpr int W = kW64;
  constexpr int NC = (kMaxBoundGroups + W - 1) / W;  // direction lanes: every group, padded
  constexpr index_t Lp = NC * W;
  constexpr double u = 1.1102230246251565e-16;  // 2^-53
  const double coef = (2.0 * static_cast<double>(d) + 8.0) * u;  // the ball gap's margin (ball_bound)
  const double dot_err = 2.0 * (static_cast<double>(d) + 2.0) * u;  // a d-term dot product, relative to |x| |y|
  const double row_err = dot_err + (std::is_same_v<T, float> ? 0x1p-23 : 0.0);  // + the float32 copy
  // the query points ordered by group, each group from a lane-aligned start; padding: w = 0, a = 0.
  // Per point: |a|^2, |a| (rounded up) and a.gc of its group (spec-independent)
  std::vector<index_t> gstart(static_cast<size_t>(ng) + 1, 0), count(static_cast<size_t>(ng), 0);
  for (index_t a = 0; a < Ka; ++a) ++count[qgroup[a]];
  for (index_t g = 0; g < ng; ++g) gstart[g + 1] = gstart[g] + round_up(count[g], W);
  const index_t Ap = round_up(std::max<index_t>(gstart[ng], 1), 4 * W);  // whole blocks of 4 lane vectors
  std::vector<double> uT(static_cast<size_t>(d * Ap), 0.0), wq(Ap, 0.0), qn(Ap, 0.0), qnorm(Ap, 0.0),
      qgc(Ap, 0.0), gcn(ng, 0.0);
  for (index_t g = 0; g < ng; ++g) {
    double s = 0.0;
    for (index_t k = 0; k < d; ++k) s += gc[g * d + k] * gc[g * d + k];
    gcn[g] = std::sqrt(s) * (1.0 + static_cast<double>(d + 4) * u);
  }
  {
    std::vector<index_t> fill(gstart.begin(), gstart.end() - 1);
    for (index_t a = 0; a < Ka; ++a) {
      const index_t g = qgroup[a], j = fill[g]++;
      double s = 0.0, t = 0.0;
      for (index_t k = 0; k < d; ++k) {
        uT[k * Ap + j] = qz[a * d + k];
        s += qz[a * d + k] * qz[a * d + k];
        t += qz[a * d + k] * gc[g * d + k];
      }
      wq[j] = qw[a];
      qn[j] = s;
      qnorm[j] = std::sqrt(s) * (1.0 + static_cast<double>(d + 4) * u);
      qgc[j] = t;
    }
  }
  const V zero{}, inf = vbroadcast<V>(std::numeric_limits<double>::infinity());
  index_t max_rows = 0;  // the float64 copy of a spec's rows needs no allocation inside a task
  if constexpr (std::is_same_v<T, float>)
    for (index_t j = 0; j < M; ++j) max_rows = std::max(max_rows, off[specs[j] + 1] - off[specs[j]]);
  struct Scratch {
    std::vector<double> cols, rows, pcs;
    Scratch(index_t d, index_t Lp, index_t rows_, index_t Ap)
        : cols(static_cast<size_t>(d * Lp), 0.0), rows(static_cast<size_t>(rows_ * d)), pcs(static_cast<size_t>(Ap)) {}
  };
  auto spec_item = [&](index_t j, Scratch& sc) {
    std::vector<double>&cols = sc.cols, &rows = sc.rows, &pcs = sc.pcs;
    double lo[Lp], hi[Lp], bad[Lp];
    {
      const index_t i = specs[j], b0 = off[i], nb = off[i + 1] - b0;
      if (j + 2 < M) {  // scattered specs: fetch the rows of the one after next (the work per spec is short)
        const index_t n2 = specs[j + 2];
        prefetch_l2(z + off[n2] * d, static_cast<size_t>(off[n2 + 1] - off[n2]) * static_cast<size_t>(d) * sizeof(T));
      }
      const double* ci = c + i * d;
      double cn = 0.0;
      for (index_t k = 0; k < d; ++k) cn += ci[k] * ci[k];
      const double csn = std::sqrt(cn) * (1.0 + static_cast<double>(d + 4) * u);
      // directions v_g = gc_g - c_i in lanes (padding lanes stay 0)
      for (index_t g = 0; g < ng; ++g)
        for (index_t k = 0; k < d; ++k) cols[k * Lp + g] = gc[g * d + k] - ci[k];
      // the rows' projections onto every direction: their interval (bad: NaN where one is not finite)
      const double* zr;
      if constexpr (std::is_same_v<T, double>) {
        zr = z + b0 * d;
      } else {
        for (index_t t = 0; t < nb * d; ++t) rows[t] = static_cast<double>(z[b0 * d + t]);
        zr = rows.data();
      }
      V vlo[NC], vhi[NC], vbad[NC];
      for (int h = 0; h < NC; ++h) {
        vlo[h] = inf;
        vhi[h] = -inf;
        vbad[h] = zero;
      }
      auto take = [&](const V* acc) {
        for (int h = 0; h < NC; ++h) {
          vlo[h] = acc[h] < vlo[h] ? acc[h] : vlo[h];
          vhi[h] = acc[h] > vhi[h] ? acc[h] : vhi[h];
          vbad[h] += acc[h] - acc[h];
        }
      };
      index_t b = 0;
      for (; b + 8 <= nb; b += 8) {  // 8 rows at a time: independent FMA chains
        V acc[8][NC] = {};
        for (index_t k = 0; k < d; ++k)
          for (int h = 0; h < NC; ++h) {
            const V v = vload<V>(&cols[k * Lp + h * W]);
            for (int t = 0; t < 8; ++t) acc[t][h] += vbroadcast<V>(zr[(b + t) * d + k]) * v;
          }
        for (int t = 0; t < 8; ++t) take(acc[t]);
      }
      for (; b < nb; ++b) {
        V acc[NC] = {};
        for (index_t k = 0; k < d; ++k)
          for (int h = 0; h < NC; ++h) acc[h] += vbroadcast<V>(zr[b * d + k]) * vload<V>(&cols[k * Lp + h * W]);
        take(acc);
      }
      for (int h = 0; h < NC; ++h) {
        vstore(lo + h * W, vlo[h]);
        vstore(hi + h * W, vhi[h]);
        vstore(bad + h * W, vbad[h]);
      }
      // a.c_i for every query point: 4 lane vectors at a time
      for (index_t a = 0; a < Ap; a += 4 * W) {
        V pc[4] = {};
        for (index_t k = 0; k < d; ++k) {
          const V x = vbroadcast<V>(ci[k]);
          for (int t = 0; t < 4; ++t) pc[t] += vload<V>(&uT[k * Ap + a + t * W]) * x;
        }
        for (int t = 0; t < 4; ++t) vstore(&pcs[a + t * W], pc[t]);
      }
      const double rs = r[i] * (1.0 + 4.0 * u);
      const double zmax = (csn + r[i]) * (1.0 + 1e-6);  // >= |z_b| (the float32 copy included)
      V acc = zero;
      const V cnv = vbroadcast<V>(cn), rv = vbroadcast<V>(rs);
      for (index_t g = 0; g < ng; ++g) {
        double nw = 0.0;
        for (index_t k = 0; k < d; ++k) nw += cols[k * Lp + g] * cols[k * Lp + g];
        nw = std::sqrt(nw) * (1.0 + static_cast<double>(d + 4) * u);
        const bool use = nb > 0 && bad[g] == 0.0 && std::isfinite(nw) && nw > 0.0 && std::isfinite(zmax);
        const V glo = vbroadcast<V>(lo[g]), ghi = vbroadcast<V>(hi[g]);
        const V inv = vbroadcast<V>(use ? (1.0 - 4.0 * u) / nw : 0.0);
        // a's projection a.v = a.gc - a.c_i within dot_err |a| (|gc| + |c_i|) of its exact value, the
        // rows' (z_b.v computed with v rounded) within row_err |z_b| |v|
        const V perr = vbroadcast<V>(use ? dot_err * (gcn[g] + csn) / nw : 0.0);
        const V zerr = vbroadcast<V>(row_err * zmax);
        for (index_t a = gstart[g]; a < gstart[g + 1]; a += W) {
          const V pc = vload<V>(&pcs[a]), p = vload<V>(&qgc[a]) - pc, qa = vload<V>(&qnorm[a]);
          const V t1 = glo - p, t2 = p - ghi;
          V gp = (t1 > t2 ? t1 : t2) * inv - zerr - qa * perr;
          gp = (gp > zero) & (gp < inf) ? gp : zero;
          // ball gap (as ball_block)
          const V nrm = cnv + vload<V>(&qn[a]);
          V sq = (nrm - pc * 2) - nrm * coef;
          sq = sq > zero ? sq : zero;
          V gb = vsqrt(sq) - rv;
          gb = (gb > zero) & (gb < inf) ? gb : zero;
          const V gap = gp > gb ? gp : gb;
          V e = -gamma * (gap * gap);
          e = e > vbroadcast<V>(-708.0) ? e : vbroadcast<V>(-708.0);  // exp's fast range; rounds up
          acc += vload<V>(&wq[a]) * exp_f64(e);
        }
      }
      out[j] = hsum<double>(acc) * (1.0 + 1e-10) + static_cast<double>(Ka) * 1e-300;
    }
  };
  if (SpinTeam* team = M >= 64 ? call_team() : nullptr) {  // a search's team: no OpenMP wake-up
    Scratch s0(d, Lp, max_rows, Ap), s1(d, Lp, max_rows, Ap);
    auto task = [&](index_t c, int slot) {
      for (index_t j = c * 16; j < std::min(M, (c + 1) * 16); ++j) spec_item(j, slot ? s1 : s0);
    };
    team->run((M + 15) / 16, task);
    return;
  }
#pragma omp parallel if (M >= 64)
  {
    Scratch sc(d, Lp, max_rows, Ap);
#pragma omp for schedule(dynamic, 16)
    for (index_t j = 0; j < M; ++j) spec_item(j, sc);
  }
}

// ------------------------------------------------------------------ self-Gram of single points
// G_ij = exp(-gamma ((|z_i|^2 + |z_j|^2) - 2 z_i.z_j)) in float64: the expansion with the two norms
// added first, so that G_ij == G_ji and bit-identical points give bit-identical rows (the QP merges
// those).  Lanes run over j; every dot product is one FMA chain over the coordinates in order.
constexpr index_t kRowsPerTask = 16;  // point_gram / rs_step rows per team task

// body(i0, i1, slot) over [0, K) in blocks of kRowsPerTask rows, on the team when there is one (slot:
// the team thread, 0 or 1, for per-thread scratch allocated beforehand: team tasks must not throw)
template <class Body>
inline void over_row_blocks(index_t K, SpinTeam* team, Body&& body) {
  if (team && K > kRowsPerTask) {
    auto task = [&](index_t t, int slot) { body(t * kRowsPerTask, std::min(K, (t + 1) * kRowsPerTask), slot); };
    team->run((K + kRowsPerTask - 1) / kRowsPerTask, task);
  } else {
    body(0, K, 0);
  }
}

inline void point_gram_impl(const double* z, index_t K, index_t d, double gamma, double* G, SpinTeam* team) {
  using V = vf64;
  const index_t Kp = round_up(K, kW64);
  std::vector<double> zT(static_cast<size_t>(d * Kp), 0.0), zn(static_cast<size_t>(Kp), 0.0);
  for (index_t j = 0; j < K; ++j) {
    double s = 0.0;
    for (index_t k = 0; k < d; ++k) {
      zT[k * Kp + j] = z[j * d + k];
      s += z[j * d + k] * z[j * d + k];
    }
    zn[j] = s;
  }
  // NB lane vectors of row i from column j0: NB independent dot chains (one was latency-bound)
  auto block = [&](auto nb, index_t i, index_t j0) {
    double row[kW64];
    constexpr int NB = decltype(nb)::value;
    const double* zi = z + i * d;
    V acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = V{};
    for (index_t k = 0; k < d; ++k) {
      const V zb = vbroadcast<V>(zi[k]);
      for (int b = 0; b < NB; ++b) acc[b] += zb * vload<V>(&zT[k * Kp + j0 + b * kW64]);
    }
    const V ni = vbroadcast<V>(zn[i]);
    for (int b = 0; b < NB; ++b) {
      const index_t jb = j0 + b * kW64;
      const V v = gauss_from_sqdist(sqdist_gram(ni, vload<V>(&zn[jb]), acc[b]), gamma, VExp{});
      if (jb + kW64 <= K) {
        vstore(&G[i * K + jb], v);
      } else {
        vstore(row, v);
        for (index_t j = jb; j < K; ++j) G[i * K + j] = row[j - jb];
      }
    }
  };
  over_row_blocks(K, team, [&](index_t i0, index_t i1, int) {
    for (index_t i = i0; i < i1; ++i) {
      index_t j0 = 0;
      for (; j0 + 4 * kW64 <= Kp; j0 += 4 * kW64) block(std::integral_constant<int, 4>{}, i, j0);
      for (; j0 < Kp; j0 += kW64) block(std::integral_constant<int, 1>{}, i, j0);
    }
  });
}

// ------------------------------------------------------------------ the QP's gradient (qp-inl.h)
// out_j = -c_j + sum_a x[rows[a]] G[rows[a], j], the rows in order; columns in blocks of 4 lane
// vectors held in registers across the rows.
template <int NV>
inline void grad_rows_block(const double* G, index_t n, const index_t* rows, index_t m, const double* x,
                            const double* c, index_t j, double* out) {
  using V = vf64;
  V acc[NV];
  for (int b = 0; b < NV; ++b) acc[b] = -vload<V>(c + j + b * kW64);
  for (index_t a = 0; a < m; ++a) {
    const V w = vbroadcast<V>(x[rows[a]]);
    const double* gr = G + rows[a] * n + j;
    for (int b = 0; b < NV; ++b) acc[b] += w * vload<V>(gr + b * kW64);
  }
  for (int b = 0; b < NV; ++b) vstore(out + j + b * kW64, acc[b]);
}

inline void grad_rows_impl(const double* G, index_t n, const index_t* rows, index_t m, const double* x,
                           const double* c, double* out) {
  index_t j = 0;
  for (; j + 4 * kW64 <= n; j += 4 * kW64) grad_rows_block<4>(G, n, rows, m, x, c, j, out);
  for (; j + kW64 <= n; j += kW64) grad_rows_block<1>(G, n, rows, m, x, c, j, out);
  for (; j < n; ++j) {
    double s = -c[j];
    for (index_t a = 0; a < m; ++a) s += x[rows[a]] * G[rows[a] * n + j];
    out[j] = s;
  }
}

// ------------------------------------------------------------------ reduced-set Z step
// wsum_i = sum_j beta_j G_ij and wz_i = sum_j beta_j G_ij z_j (j in increasing order), then
// rs_step_coord per coordinate (ops.h's rs_step_from_gram).  Rows in blocks of R, the coordinates
// in up to 3 lane vectors held in registers across j.
template <int R, int NV>
inline void rs_wz_block(const double* G, const double* beta, const double* zp, index_t K, index_t dp,
                        index_t i0, index_t c0, double* wz) {
  using V = vf64;
  V acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  for (index_t j = 0; j < K; ++j) {
    V zv[NV];
    for (int v = 0; v < NV; ++v) zv[v] = vload<V>(zp + j * dp + c0 + v * kW64);
    for (int r = 0; r < R; ++r) {
      const V w = vbroadcast<V>(beta[j] * G[(i0 + r) * K + j]);
      for (int v = 0; v < NV; ++v) acc[r][v] += w * zv[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) vstore(wz + r * dp + c0 + v * kW64, acc[r][v]);
}

template <int R>
inline void rs_wz_rows(const double* G, const double* beta, const double* zp, index_t K, index_t dp, index_t i0,
                       double* wz) {
  index_t c0 = 0;
  for (; c0 + 3 * kW64 <= dp; c0 += 3 * kW64) rs_wz_block<R, 3>(G, beta, zp, K, dp, i0, c0, wz);
  for (; c0 < dp; c0 += kW64) rs_wz_block<R, 1>(G, beta, zp, K, dp, i0, c0, wz);
}

inline void rs_step_from_gram_impl(const double* z, const double* beta, const double* C, const double* T,
                                   const double* G, index_t K, index_t d, double gamma, double step,
                                   double t1_factor, double* out, SpinTeam* team) {
  const index_t dp = round_up(d, kW64);
  std::vector<double> zp(static_cast<size_t>(K * dp), 0.0), wz2(static_cast<size_t>(2 * 4 * dp));
  for (index_t j = 0; j < K; ++j) std::copy(z + j * d, z + (j + 1) * d, zp.begin() + j * dp);
  over_row_blocks(K, team, [&](index_t b0, index_t b1, int slot) {
    double* wz = wz2.data() + slot * 4 * dp;
    for (index_t i0 = b0; i0 < b1; i0 += 4) {
      const index_t nr = std::min<index_t>(4, b1 - i0);
      if (nr == 4)
        rs_wz_rows<4>(G, beta, zp.data(), K, dp, i0, wz);
      else
        for (index_t r = 0; r < nr; ++r) rs_wz_rows<1>(G, beta, zp.data(), K, dp, i0 + r, wz + r * dp);
      for (index_t r = 0; r < nr; ++r) {
        const index_t i = i0 + r;
        double wsum = 0.0;
        for (index_t j = 0; j < K; ++j) wsum += beta[j] * G[i * K + j];
        for (index_t k = 0; k < d; ++k)
          out[i * d + k] = rs_step_coord(z[i * d + k], wsum, wz[r * dp + k], C[i], T[i * d + k], beta[i],
                                         gamma, step, t1_factor);
      }
    }
  });
}

// ------------------------------------------------------------------ data moments
// C_i = (1/n) sum_j k(z_i, x_j),  T_i = (1/n) sum_j k(z_i, x_j) x_j, all in float64 (the log2 form).
// x is streamed in tiles of kTileX rows; tiles are grouped into NC chunks (NC fixed by n, K, d),
// each chunk sums its tiles in order into its own partial, partials are added in chunk order.
constexpr index_t kTileX = 256;
constexpr index_t kBlockZ = 64;

// zr: 16 log2_coord(z) rows, zn / xn: 16 log2_term(|.|^2) (pair.h's float64 log2 form)
template <int R, int NV>
inline void zx_chunk(const double* zr, index_t d, const double* zn, const double* xT, const double* xn,
                     index_t j0, double* E, index_t ldE) {
  using V = vf64;
  constexpr int W = kW64;
  V acc[R][NV];
  _Pragma("GCC unroll 8")
  for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8")
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  for (index_t k = 0; k < d; ++k) {
    V xv[NV];
    _Pragma("GCC unroll 8")
    for (int v = 0; v < NV; ++v) xv[v] = vload<V>(xT + k * kTileX + j0 + v * W);
    _Pragma("GCC unroll 8")
    for (int r = 0; r < R; ++r) {
      const V zb = vbroadcast<V>(zr[r * d + k]);
      _Pragma("GCC unroll 8")
      for (int v = 0; v < NV; ++v) acc[r][v] += zb * xv[v];
    }
  }
  V u[R * NV], e[R * NV];
  _Pragma("GCC unroll 8")
  for (int v = 0; v < NV; ++v) {
    const V xnv = vload<V>(xn + j0 + v * W);
    _Pragma("GCC unroll 8")
    for (int r = 0; r < R; ++r) u[r * NV + v] = log2_exponent(acc[r][v], xnv + zn[r]);
  }
  exp2_16_f64_n<R * NV>(u, e);
  _Pragma("GCC unroll 8")
  for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8")
    for (int v = 0; v < NV; ++v) vstore(E + r * ldE + j0 + v * W, e[r * NV + v]);
}

// tp[r * d + k + c] += sum_j e[r * kTileX + j] xT[(k + c) * kTileX + j] for R rows of the kernel block
// and NC coordinates from k (R x NC accumulators)
template <int R, int NC>
inline void zx_t_cols(const double* e, const double* xT, index_t d, index_t mp, double* tp, index_t k) {
  using V = vf64;
  V a[R][NC];
  _Pragma("GCC unroll 4")
  for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 4")
    for (int c = 0; c < NC; ++c) a[r][c] = V{};
  const double* x0 = xT + k * kTileX;
  for (index_t j = 0; j < mp; j += kW64) {
    V xv[NC];
    _Pragma("GCC unroll 4")
    for (int c = 0; c < NC; ++c) xv[c] = vload<V>(x0 + c * kTileX + j);
    _Pragma("GCC unroll 4")
    for (int r = 0; r < R; ++r) {
      const V ev = vload<V>(e + r * kTileX + j);
      _Pragma("GCC unroll 4")
      for (int c = 0; c < NC; ++c) a[r][c] += ev * xv[c];
    }
  }
  _Pragma("GCC unroll 4")
  for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 4")
    for (int c = 0; c < NC; ++c) tp[r * d + k + c] += hsum<double>(a[r][c]);
}

// tp[r * d + k] += sum_j e[r * kTileX + j] xT[k * kTileX + j] for R rows of the kernel block, every k:
// coordinates in blocks of 4, then 2, then 1
template <int R>
inline void zx_t_block(const double* e, const double* xT, index_t d, index_t mp, double* tp) {
  constexpr int kNC = tile_vectors<R>();  // R x kNC accumulators in registers
  index_t k = 0;
  for (; k + kNC <= d; k += kNC) zx_t_cols<R, kNC>(e, xT, d, mp, tp, k);
  for (; k + 2 <= d; k += 2) zx_t_cols<R, 2>(e, xT, d, mp, tp, k);
  if (k < d) zx_t_cols<R, 1>(e, xT, d, mp, tp, k);
}

template <class Tx>
void zx_moments_impl(const double* z, index_t K, const Tx* x, index_t n, index_t d, double gamma,
                     double* C, double* Tout, SpinTeam* team) {
  using V = vf64;
  const index_t ntiles = (n + kTileX - 1) / kTileX;
  const index_t P = Tout ? K * (1 + d) : K;
  const index_t NC = std::max<index_t>(1, std::min<index_t>({ntiles, 64, (index_t(1) << 22) / P}));
  std::vector<double> part(static_cast<size_t>(NC * P), 0.0);
  std::vector<double> zn(static_cast<size_t>(K)), zs(static_cast<size_t>(K * d));
  for (index_t i = 0; i < K; ++i) {
    double s = 0.0;
    for (index_t k = 0; k < d; ++k) {
      s += z[i * d + k] * z[i * d + k];
      zs[i * d + k] = 16.0 * log2_coord(z[i * d + k], gamma);
    }
    zn[i] = 16.0 * log2_term(s, gamma);
  }
  struct Scratch {
    std::vector<double> xT, xn, E;
    explicit Scratch(index_t d) : xT(static_cast<size_t>(d * kTileX)), xn(kTileX), E(kBlockZ * kTileX) {}
  };
  // chunk c's partial sums (the same whichever thread runs it)
  auto chunk = [&](index_t c, Scratch& sc) {
    std::vector<double>&xT = sc.xT, &xn = sc.xn, &E = sc.E;  // this thread's scratch
    double* pc = part.data() + c * P;
    const index_t t0 = c * ntiles / NC, t1 = (c + 1) * ntiles / NC;
    for (index_t t = t0; t < t1; ++t) {
      const index_t r0 = t * kTileX, m = std::min(kTileX, n - r0), mp = round_up(m, 2 * kW64);
      for (index_t k = 0; k < d; ++k)  // the padding columns [m, mp) read by the blocks: zeros
        std::fill(xT.begin() + k * kTileX + m, xT.begin() + k * kTileX + mp, 0.0);
      for (index_t j = 0; j < m; ++j) {
        double s = 0.0;
        for (index_t k = 0; k < d; ++k) {
          const double v = static_cast<double>(x[(r0 + j) * d + k]);
          xT[k * kTileX + j] = v;
          s += v * v;
        }
        xn[j] = 16.0 * log2_term(s, gamma);
      }
      for (index_t j = m; j < mp; ++j) xn[j] = 0.0;
      for (index_t i0 = 0; i0 < K; i0 += kBlockZ) {
        const index_t kb = std::min(kBlockZ, K - i0);
        index_t r = 0;
        for (; r + 4 <= kb; r += 4) {
          constexpr int kNV = tile_vectors<4>();
          index_t j = 0;
          for (; j + kNV * kW64 <= mp; j += kNV * kW64)
            zx_chunk<4, kNV>(zs.data() + (i0 + r) * d, d, &zn[i0 + r], xT.data(), xn.data(), j,
                             E.data() + r * kTileX, kTileX);
          for (; j + 2 * kW64 <= mp; j += 2 * kW64)
            zx_chunk<4, 2>(zs.data() + (i0 + r) * d, d, &zn[i0 + r], xT.data(), xn.data(), j,
                           E.data() + r * kTileX, kTileX);
          if (j < mp)
            zx_chunk<4, 1>(zs.data() + (i0 + r) * d, d, &zn[i0 + r], xT.data(), xn.data(), j,
                           E.data() + r * kTileX, kTileX);
        }
        for (; r < kb; ++r)
          for (index_t j = 0; j < mp; j += 2 * kW64)
            zx_chunk<1, 2>(zs.data() + (i0 + r) * d, d, &zn[i0 + r], xT.data(), xn.data(), j,
                           E.data() + r * kTileX, kTileX);
        for (index_t rr = 0; rr < kb; ++rr) {
          double* e = E.data() + rr * kTileX;
          for (index_t j = m; j < mp; ++j) e[j] = 0.0;
          V s = V{};
          for (index_t j = 0; j < mp; j += kW64) s += vload<V>(e + j);
          pc[i0 + rr] += hsum<double>(s);
        }
        if (Tout) {  // T rows += E x: register blocks of 4 z rows x 2 coordinates
          index_t rr = 0;
          for (; rr + 4 <= kb; rr += 4) zx_t_block<4>(E.data() + rr * kTileX, xT.data(), d, mp,
                                                     pc + K + (i0 + rr) * d);
          for (; rr < kb; ++rr) zx_t_block<1>(E.data() + rr * kTileX, xT.data(), d, mp,
                                              pc + K + (i0 + rr) * d);
        }
      }
    }
  };
  if (team) {
    Scratch s0(d), s1(d);
    auto task = [&](index_t c, int slot) { chunk(c, slot ? s1 : s0); };
    team->run(NC, task);
  } else {
#pragma omp parallel
    {
      Scratch sc(d);
#pragma omp for schedule(static)
      for (index_t c = 0; c < NC; ++c) chunk(c, sc);
    }
  }
  const double inv_n = 1.0 / static_cast<double>(n);
  for (index_t i = 0; i < P; ++i) {
    double s = 0.0;
    for (index_t c = 0; c < NC; ++c) s += part[c * P + i];
    if (i < K)
      C[i] = s * inv_n;
    else
      Tout[i - K] = s * inv_n;
  }
}

}  // namespace LWE_ISA
}  // namespace lwe

#include "kmeans-inl.h"
#include "qp-inl.h"

namespace lwe {
namespace LWE_ISA {

// ------------------------------------------------------------------ machine probes
inline double now_s() {
#ifdef LWE_HAVE_OPENMP
  return omp_get_wtime();
#else
  return 0.0;
#endif
}

inline double probe_fma_impl(double seconds) {
  double total = 0.0;
#pragma omp parallel reduction(+ : total)
  {
    vf32 a[10];
    for (int i = 0; i < 10; ++i) a[i] = vbroadcast<vf32>(1.0f + 1e-3f * i);
    const vf32 m = vbroadcast<vf32>(0.999999f), c = vbroadcast<vf32>(1e-7f);
    double flops = 0.0;
    const double t0 = now_s();
    double t = t0;
    do {
      for (int it = 0; it < 4096; ++it)
        for (int i = 0; i < 10; ++i) a[i] = a[i] * m + c;
      flops += 4096.0 * 10 * kW32 * 2;
      t = now_s();
    } while (t - t0 < seconds);
    float sink[kW32];
    vf32 s = a[0];
    for (int i = 1; i < 10; ++i) s += a[i];
    vstore(sink, s);
    total += flops / (t - t0) + (sink[0] == 12345.0f ? 1.0 : 0.0);
  }
  return total;
}

inline double probe_exp_impl(double seconds) {
  // throughput of the kernel's exp (2^u form), 8 independent streams so latency is hidden
  double total = 0.0;
#pragma omp parallel reduction(+ : total)
  {
    vf32 x[8], s[8];
    for (int i = 0; i < 8; ++i) {
      x[i] = vbroadcast<vf32>(-0.5f - 0.1f * i);
      s[i] = vf32{};
    }
    double count = 0.0;
    const double t0 = now_s();
    double t = t0;
    do {
      for (int it = 0; it < 1024; ++it)
        _Pragma("GCC unroll 8") for (int i = 0; i < 8; ++i) {
          s[i] += exp2_f32(x[i]);
          x[i] = x[i] - 1e-7f;
        }
      count += 1024.0 * 8 * kW32;
      t = now_s();
    } while (t - t0 < seconds);
    float sink[kW32];
    vf32 acc = s[0];
    for (int i = 1; i < 8; ++i) acc += s[i];
    vstore(sink, acc);
    total += count / (t - t0) + (sink[0] == 12345.0f ? 1.0 : 0.0);
  }
  return total;
}

// ------------------------------------------------------------------ exported per-ISA entry points
#define LWE_INNER_DEF(T)                                                                           \
  void cross_inner(const T* q_z, const double* q_beta, const index_t* q_off, index_t Q, const T* z, \
                   const double* beta, const index_t* off, const index_t* sel, index_t N, index_t d,  \
                   double gamma, double* out) {                                                     \
    cross_inner_impl<T>(q_z, q_beta, q_off, Q, z, beta, off, sel, N, d, gamma, out);                \
  }                                                                                                 \
  void self_inner(const T* z, const double* beta, const index_t* off, index_t N, index_t d,         \
                  double gamma, double* out) {                                                      \
    self_inner_impl<T>(z, beta, off, N, d, gamma, out);                                             \
  }                                                                                                 \
  void gram(const T* z, const double* beta, const index_t* off, index_t N, index_t d, double gamma,  \
            double* out) {                                                                          \
    gram_impl<T>(z, beta, off, N, d, gamma, out);                                                   \
  }                                                                                                 \
  void zx_moments(const double* z, index_t K, const T* x, index_t n, index_t d, double gamma,       \
                  double* C, double* Tout, SpinTeam* team) {                                        \
    zx_moments_impl<T>(z, K, x, n, d, gamma, C, Tout, team);                                        \
  }
LWE_INNER_DEF(float)
LWE_INNER_DEF(double)
#undef LWE_INNER_DEF

void point_gram(const double* z, index_t K, index_t d, double gamma, double* G, SpinTeam* team) {
  point_gram_impl(z, K, d, gamma, G, team);
}
double simplex_qp(const double* G, const double* c, index_t n, double* x, const double* x0) {
  return simplex_qp_impl(G, c, n, x, x0);
}
void rs_step_from_gram(const double* z, const double* beta, const double* C, const double* T, const double* G,
                       index_t K, index_t d, double gamma, double step, double t1_factor, double* out,
                       SpinTeam* team) {
  rs_step_from_gram_impl(z, beta, C, T, G, K, d, gamma, step, t1_factor, out, team);
}
int kmeans(const float* x, index_t n, index_t d, float* c, index_t k, int max_iter, double tol, SpinTeam* team) {
  return kmeans_lloyd_impl(x, n, d, c, k, max_iter, tol, team);
}
void ball_bound(const double* q_z, const double* q_w, const index_t* q_off, index_t Q, const double* c,
                const double* r, index_t N, index_t d, double gamma, double* out) {
  ball_bound_impl(q_z, q_w, q_off, Q, c, r, N, d, gamma, out);
}
void projection_bound(const double* q_z, const double* q_w, const index_t* q_group, index_t Ka, const double* gc,
                      index_t ng, const float* z, const index_t* off, const index_t* specs, index_t M,
                      const double* c, const double* r, index_t d, double gamma, double* out) {
  projection_bound_impl(q_z, q_w, q_group, Ka, gc, ng, z, off, specs, M, c, r, d, gamma, out);
}
void projection_bound(const double* q_z, const double* q_w, const index_t* q_group, index_t Ka, const double* gc,
                      index_t ng, const double* z, const index_t* off, const index_t* specs, index_t M,
                      const double* c, const double* r, index_t d, double gamma, double* out) {
  projection_bound_impl(q_z, q_w, q_group, Ka, gc, ng, z, off, specs, M, c, r, d, gamma, out);
}
double probe_fma_f32(double seconds) { return probe_fma_impl(seconds); }
double probe_exp_f32(double seconds) { return probe_exp_impl(seconds); }

}  // namespace LWE_ISA
}  // namespace lwe
