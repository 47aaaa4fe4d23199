// CPU drivers of the ConvNet-NNGP kernel (per-pixel math in lwengine/kernels/nngp.h), compiled
// once per ISA by nngp_avx2.cpp / nngp_portable.cpp (LWE_ISA names the namespace).
#if defined(__GNUC__) && !defined(__clang__)
// Lets GCC if-convert the branch-free ReLU (atan2_poly's selects) and vectorise it; no value changes.
#pragma GCC optimize("no-trapping-math")
#endif
#include <algorithm>

#include "lwengine/kernels/nngp.h"
#include "nngp_ops.h"

namespace lwe {
namespace LWE_ISA {
namespace {

using namespace lwe::nngp;

constexpr int kPad = kWidth + 2;

// conv3 of a (S x S) into b through a zero-padded copy (fixed-trip loops the compiler vectorises;
// the same taps in the same order as conv3_px: padded zeros add exact zeros).
template <class T>
inline void conv3_level(const T* a, T* b, int S, T* pad) {
  const int P = S + 2;
  for (int p = 0; p < P * P; ++p) pad[p] = T(0);
  for (int r = 0; r < S; ++r)
    for (int c = 0; c < S; ++c) pad[(r + 1) * P + c + 1] = a[r * S + c];
  const T w = w3<T>();
  for (int r = 0; r < S; ++r) {
    T* br = b + r * S;
    for (int c = 0; c < S; ++c) br[c] = T(0);
    for (int dr = 0; dr < 3; ++dr) {
      const T* pr = pad + (r + dr) * P;
      for (int dc = 0; dc < 3; ++dc)
        for (int c = 0; c < S; ++c) br[c] += w * pr[c + dc];
    }
    for (int c = 0; c < S; ++c) br[c] += T(0.1);
  }
}

// One level's conv3 of a (S x S) into b, then ReLU with the two variance maps.
template <class T>
inline void conv_relu_level(const T* a, T* b, int S, const T* vx, const T* vy, T* pad) {
  conv3_level(a, b, S, pad);
#pragma omp simd
  for (int p = 0; p < S * S; ++p) b[p] = relu_px<T, double>(b[p], vx[p], vy[p]);
}

template <class T>
inline void pool_level(const T* b, T* a, int S) {
  const int H = S / 2;
  for (int r = 0; r < H; ++r)
    for (int c = 0; c < H; ++c) a[r * H + c] = pool_px(b, S, r, c);
}

template <class T>
void prep_t(const T* x, index_t N, index_t C, int depth, T* prep, T* self) {
  const int plen = prep_len(depth);
#pragma omp parallel for schedule(static) if (N >= 64)
  for (index_t i = 0; i < N; ++i) {
    T a[kWidth * kWidth], b[kWidth * kWidth];
    const T* xi = x + i * C * kWidth * kWidth;
    for (int p = 0; p < kWidth * kWidth; ++p) {
      T s = T(0);
      for (index_t c = 0; c < C; ++c) s += xi[c * kWidth * kWidth + p] * xi[c * kWidth * kWidth + p];
      a[p] = s / T(C);
    }
    T* pi_ = prep + i * plen;
    for (int l = 0; l < depth; ++l) {
      const int S = level_size(l);
      T* lev = pi_ + level_offset(l);
      for (int r = 0; r < S; ++r)
        for (int c = 0; c < S; ++c) lev[r * S + c] = conv3_px(a, S, r, c);
      for (int p = 0; p < S * S; ++p) b[p] = lev[p] / T(2);
      pool_level(b, a, S);
    }
    self[i] = final_box(a, level_size(depth));
  }
}

template <class T>
void cross_t(const T* x, const T* px, index_t N1, const T* y, const T* py, index_t N2, index_t C, int depth,
             const T* self, T* out) {
  const int plen = prep_len(depth);
  const index_t total = N1 * N2;
#pragma omp parallel for schedule(dynamic, 16) if (total >= 64)
  for (index_t q = 0; q < total; ++q) {
    const index_t i = q / N2, j = q % N2;
    if (self != nullptr && i == j) {
      out[q] = self[i];
      continue;
    }
    T a[kWidth * kWidth], b[kWidth * kWidth], pad[kPad * kPad];
    const T* xi = x + i * C * kWidth * kWidth;
    const T* yj = y + j * C * kWidth * kWidth;
    for (int p = 0; p < kWidth * kWidth; ++p) b[p] = T(0);
    for (index_t c = 0; c < C; ++c)
      for (int p = 0; p < kWidth * kWidth; ++p) b[p] += xi[c * kWidth * kWidth + p] * yj[c * kWidth * kWidth + p];
    for (int p = 0; p < kWidth * kWidth; ++p) a[p] = b[p] / T(C);
    for (int l = 0; l < depth; ++l) {
      const int S = level_size(l);
      conv_relu_level(a, b, S, px + i * plen + level_offset(l), py + j * plen + level_offset(l), pad);
      pool_level(b, a, S);
    }
    out[q] = final_box(a, level_size(depth));
  }
}

}  // namespace

#define LWE_NNGP_DEFINE(T)                                                                              \
  void nngp_prep(const T* x, index_t N, index_t C, int depth, T* prep, T* self) {                       \
    prep_t(x, N, C, depth, prep, self);                                                                 \
  }                                                                                                     \
  void nngp_cross(const T* x, const T* px, index_t N1, const T* y, const T* py, index_t N2, index_t C,  \
                  int depth, const T* self, T* out) {                                                   \
    cross_t(x, px, N1, y, py, N2, C, depth, self, out);                                                 \
  }
LWE_NNGP_DEFINE(float)
LWE_NNGP_DEFINE(double)
#undef LWE_NNGP_DEFINE

}  // namespace LWE_ISA
}  // namespace lwe
