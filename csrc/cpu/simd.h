// Width-agnostic SIMD helpers on GCC/Clang vector extensions (CPU only, never included by CUDA).
//
// The same source compiles to SSE2 in the portable translation units and to AVX2+FMA in the
// *_avx2.cpp ones (fixed 32-byte vectors: 8 floats or 4 doubles).  Every file that includes this
// header must first define LWE_ISA (the namespace that keeps the two instantiations apart, so the
// linker never merges an AVX2 copy into the portable path).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#ifndef LWE_ISA
#error "define LWE_ISA (portable or avx2) before including simd.h"
#endif

namespace lwe {
namespace LWE_ISA {

typedef float f32x8 __attribute__((vector_size(32)));
typedef std::int32_t i32x8 __attribute__((vector_size(32)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef std::int64_t i64x4 __attribute__((vector_size(32)));

template <class T> struct Simd;
template <> struct Simd<float> {
  using V = f32x8;
  using I = i32x8;
  static constexpr int W = 8;
};
template <> struct Simd<double> {
  using V = f64x4;
  using I = i64x4;
  static constexpr int W = 4;
};

template <class V, class T>
inline V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <class V, class T>
inline void vstore(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}
template <class V, class T>
inline V vbroadcast(T s) {
#if defined(__AVX__)
  // one vbroadcast instruction (the generic form below adds 0.0 first)
  if constexpr (sizeof(T) == 4)
    return (V)_mm256_set1_ps(s);
  else
    return (V)_mm256_set1_pd(s);
#else
  V v = {};
  return v + s;
#endif
}
// min/max with one instruction on AVX (the ternary form costs a compare and a blend)
inline f32x8 vmax(f32x8 a, f32x8 b) {
#if defined(__AVX__)
  return (f32x8)_mm256_max_ps((__m256)a, (__m256)b);
#else
  return a > b ? a : b;
#endif
}
inline f32x8 vmin(f32x8 a, f32x8 b) {
#if defined(__AVX__)
  return (f32x8)_mm256_min_ps((__m256)a, (__m256)b);
#else
  return a < b ? a : b;
#endif
}
template <class To, class From>
inline To bitcast(From v) {
  static_assert(sizeof(To) == sizeof(From), "size");
  To t;
  std::memcpy(&t, &v, sizeof(To));
  return t;
}
template <class T>
inline T hsum(typename Simd<T>::V v) {
  // fixed pairwise order: identical for every call, on every path
  constexpr int W = Simd<T>::W;
  T buf[W];
  vstore(buf, v);
  if constexpr (W == 8) {
    return ((buf[0] + buf[4]) + (buf[1] + buf[5])) + ((buf[2] + buf[6]) + (buf[3] + buf[7]));
  } else {
    return (buf[0] + buf[2]) + (buf[1] + buf[3]);
  }
}

// exp for 8 floats: Cephes expf (range reduction by ln2 in two parts, degree-6 polynomial),
// about 1 ulp on [-87.3, 88.3]; arguments below -87.33 give exactly 0 (no float subnormals),
// above 88.37 are clamped (the RKME kernel only sees such values from rounding noise).
inline f32x8 exp_f32(f32x8 x) {
  const f32x8 lo = vbroadcast<f32x8>(-87.33654f), hi = vbroadcast<f32x8>(88.37626f);
  const i32x8 under = x < lo;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const f32x8 t = x * 1.44269504088896341f + magic;
  const f32x8 n = t - magic;
  f32x8 r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  f32x8 y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const i32x8 ni = bitcast<i32x8>(t) - bitcast<std::int32_t>(magic);
  const f32x8 pow2 = bitcast<f32x8>((ni + 127) << 23);
  const f32x8 res = y * pow2;
  return under ? vbroadcast<f32x8>(0.0f) : res;
}

// exp for 4 doubles: range reduction by ln2 (fdlibm split), degree-13 Taylor polynomial on
// |r| <= ln2/2 (truncation < 5e-18 relative), at most ~1 ulp from std::exp.  Lanes outside
// [-708.3, 709.7] (subnormal results, overflow) are recomputed with std::exp.
inline f64x4 exp_f64(f64x4 x) {
  const f64x4 lo = vbroadcast<f64x4>(-708.3), hi = vbroadcast<f64x4>(709.7);
  const i64x4 out = (x < lo) | (x > hi);
#if defined(__AVX__)
  // max(lo, x) / min(hi, x) return x when x is NaN: the same values as the selects below
  f64x4 xc = (f64x4)_mm256_max_pd((__m256d)lo, (__m256d)x);
  xc = (f64x4)_mm256_min_pd((__m256d)hi, (__m256d)xc);
#else
  f64x4 xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
#endif
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const f64x4 t = xc * 1.4426950408889634 + magic;
  const f64x4 n = t - magic;
  f64x4 r = xc - n * 6.93147180369123816490e-01;
  r = r - n * 1.90821492927058770002e-10;
  f64x4 y = r * (1.0 / 6227020800.0) + (1.0 / 479001600.0);
  y = y * r + (1.0 / 39916800.0);
  y = y * r + (1.0 / 3628800.0);
  y = y * r + (1.0 / 362880.0);
  y = y * r + (1.0 / 40320.0);
  y = y * r + (1.0 / 5040.0);
  y = y * r + (1.0 / 720.0);
  y = y * r + (1.0 / 120.0);
  y = y * r + (1.0 / 24.0);
  y = y * r + (1.0 / 6.0);
  y = y * r + 0.5;
  y = y * (r * r) + r + 1.0;
  const i64x4 ni = bitcast<i64x4>(t) - bitcast<std::int64_t>(magic);
  const f64x4 pow2 = bitcast<f64x4>((ni + 1023) << 52);
  f64x4 res = y * pow2;
  std::int64_t m[4];
#if defined(__AVX__)
  if (!_mm256_testz_si256((__m256i)out, (__m256i)out)) {  // one test instead of a store and 4 loads
    vstore(m, out);
#else
  vstore(m, out);
  if (m[0] | m[1] | m[2] | m[3]) {
#endif
    double xs[4], rs[4];
    vstore(xs, x);
    vstore(rs, res);
    for (int l = 0; l < 4; ++l)
      if (m[l]) rs[l] = std::exp(xs[l]);
    res = vload<f64x4>(rs);
  }
  return res;
}

// 2^u for 8 floats (u = log2(e) * arg, folded into the caller's constants): u = n + f with
// |f| <= 1/2, degree-6 Taylor polynomial of 2^f (truncation 1.2e-7 relative, about 2 ulp overall;
// nearly unbiased, so the errors of many pairs cancel in the sums -- a minimax polynomial of
// degree 5 was as accurate per value but biased the sums 20x more), the exponent added to the
// polynomial's bits (no multiply; the same bits as y * 2^n while the result is a normal float).
// u < -126 gives exactly 0, -126 <= u < -125.5 may give a wrong value below 2^-126 (an absolute
// error under 2^-126); u is never large and positive for the RKME kernel (arg <= 0 up to
// rounding), u > 127 is clamped.
inline f32x8 exp2_f32(f32x8 u) {
  const f32x8 lo = vbroadcast<f32x8>(-126.0f), hi = vbroadcast<f32x8>(127.0f);
  const i32x8 keep = u >= lo;
  u = vmin(vmax(u, lo), hi);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const f32x8 t = u + magic;
  const f32x8 f = u - (t - magic);
  f32x8 y = f * 1.5403530393381606e-4f + 1.3333558146428443e-3f;
  y = y * f + 9.6181291076284772e-3f;
  y = y * f + 5.5504108664821580e-2f;
  y = y * f + 2.4022650695910071e-1f;
  y = y * f + 6.9314718055994531e-1f;
  y = y * f + 1.0f;
  const i32x8 ni = bitcast<i32x8>(t) - bitcast<std::int32_t>(magic);
  return bitcast<f32x8>((bitcast<i32x8>(y) + (ni << 23)) & keep);
}

inline f32x8 vexp(f32x8 x) { return exp_f32(x); }
inline f64x4 vexp(f64x4 x) { return exp_f64(x); }

// The exp functors the shared per-pair functions (lwengine/kernels/pair.h) are called with.
struct VExp {
  template <class V>
  V operator()(V x) const { return vexp(x); }
};
struct VExp2 {
  f32x8 operator()(f32x8 u) const { return exp2_f32(u); }
};

}  // namespace LWE_ISA
}  // namespace lwe
