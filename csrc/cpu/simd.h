// Width-agnostic SIMD helpers on GCC/Clang vector extensions (CPU only, never included by CUDA).
//
// The same source compiles to SSE2 in the portable translation units, to AVX2+FMA in the
// *_avx2.cpp ones (32-byte vectors: 8 floats or 4 doubles) and to AVX-512 in the *_avx512.cpp
// ones (64-byte vectors: 16 floats or 8 doubles).  Code names the vectors vf32 / vi32 / vf64 /
// vi64 and their lane counts Simd<T>::W, never a width.  Every file that includes this header must
// first define LWE_ISA (the namespace that keeps the instantiations apart, so the linker never
// merges a wide copy into a narrower path).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#ifndef LWE_ISA
#error "define LWE_ISA (portable, avx2 or avx512) before including simd.h"
#endif

#if defined(__AVX512F__)
#define LWE_VBYTES 64
#else
#define LWE_VBYTES 32
#endif

namespace lwe {
namespace LWE_ISA {

typedef float vf32 __attribute__((vector_size(LWE_VBYTES)));
typedef std::int32_t vi32 __attribute__((vector_size(LWE_VBYTES)));
typedef double vf64 __attribute__((vector_size(LWE_VBYTES)));
typedef std::int64_t vi64 __attribute__((vector_size(LWE_VBYTES)));

template <class T> struct Simd;
template <> struct Simd<float> {
  using V = vf32;
  using I = vi32;
  static constexpr int W = LWE_VBYTES / 4;
};
template <> struct Simd<double> {
  using V = vf64;
  using I = vi64;
  static constexpr int W = LWE_VBYTES / 8;
};
constexpr int kW32 = Simd<float>::W;   // float lanes per vector
constexpr int kW64 = Simd<double>::W;  // double lanes per vector
// vector registers of the ISA (AVX-512: 32, AVX2 / SSE2: 16): how many accumulators a micro-kernel
// can keep without spilling them
#if defined(__AVX512F__)
constexpr int kVecRegs = 32;
#else
constexpr int kVecRegs = 16;
#endif
// lane vectors per chunk beside R rows of accumulators: 4 x 4 needs 32 registers, so 4 x 3 with 16
template <int R>
constexpr int tile_vectors() { return (kVecRegs >= 32 || R < 4) ? 4 : 3; }

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
#if defined(__AVX512F__)
  // one vbroadcast instruction (the generic form below adds 0.0 first)
  if constexpr (sizeof(T) == 4)
    return (V)_mm512_set1_ps(s);
  else
    return (V)_mm512_set1_pd(s);
#elif defined(__AVX__)
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
inline vf32 vmax(vf32 a, vf32 b) {
#if defined(__AVX512F__)
  return (vf32)_mm512_max_ps((__m512)a, (__m512)b);
#elif defined(__AVX__)
  return (vf32)_mm256_max_ps((__m256)a, (__m256)b);
#else
  return a > b ? a : b;
#endif
}
inline vf32 vmin(vf32 a, vf32 b) {
#if defined(__AVX512F__)
  return (vf32)_mm512_min_ps((__m512)a, (__m512)b);
#elif defined(__AVX__)
  return (vf32)_mm256_min_ps((__m256)a, (__m256)b);
#else
  return a < b ? a : b;
#endif
}
inline vf32 vsqrt(vf32 a) {
#if defined(__AVX512F__)
  return (vf32)_mm512_sqrt_ps((__m512)a);
#elif defined(__AVX__)
  return (vf32)_mm256_sqrt_ps((__m256)a);
#else
  for (int l = 0; l < int(sizeof(vf32) / sizeof(float)); ++l) a[l] = std::sqrt(a[l]);
  return a;
#endif
}
inline vf64 vsqrt(vf64 a) {
#if defined(__AVX512F__)
  return (vf64)_mm512_sqrt_pd((__m512d)a);
#elif defined(__AVX__)
  return (vf64)_mm256_sqrt_pd((__m256d)a);
#else
  for (int l = 0; l < int(sizeof(vf64) / sizeof(double)); ++l) a[l] = std::sqrt(a[l]);
  return a;
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
  // fixed order, identical for every call of one path: lane i + lane i + W/2, then a pairwise
  // tree over adjacent partials (W = 8: ((b0+b4)+(b1+b5)) + ((b2+b6)+(b3+b7)))
  constexpr int W = Simd<T>::W;
  T buf[W];
  vstore(buf, v);
  for (int i = 0; i < W / 2; ++i) buf[i] = buf[i] + buf[i + W / 2];
  for (int w = W / 2; w > 1; w /= 2)
    for (int i = 0; i < w / 2; ++i) buf[i] = buf[2 * i] + buf[2 * i + 1];
  return buf[0];
}

// exp for W floats: Cephes expf (range reduction by ln2 in two parts, degree-6 polynomial),
// about 1 ulp on [-87.3, 88.3]; arguments below -87.33 give exactly 0 (no float subnormals),
// above 88.37 are clamped (the RKME kernel only sees such values from rounding noise).
inline vf32 exp_f32(vf32 x) {
  const vf32 lo = vbroadcast<vf32>(-87.33654f), hi = vbroadcast<vf32>(88.37626f);
  const vi32 under = x < lo;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const vf32 t = x * 1.44269504088896341f + magic;
  const vf32 n = t - magic;
  vf32 r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf32 y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const vi32 ni = bitcast<vi32>(t) - bitcast<std::int32_t>(magic);
  const vf32 pow2 = bitcast<vf32>((ni + 127) << 23);
  const vf32 res = y * pow2;
  return under ? vbroadcast<vf32>(0.0f) : res;
}

// exp for W doubles.
#if defined(__AVX512F__)
// 2^(j/16), j = 0 ... 15, correctly rounded: the table of both AVX-512 float64 exps below.
constexpr double kExp2Sixteenths[16] = {
    1.0, 0x1.0b5586cf9890fp+0, 0x1.172b83c7d517bp+0, 0x1.2387a6e756238p+0,
    0x1.306fe0a31b715p+0, 0x1.3dea64c123422p+0, 0x1.4bfdad5362a27p+0, 0x1.5ab07dd485429p+0,
    0x1.6a09e667f3bcdp+0, 0x1.7a11473eb0187p+0, 0x1.8ace5422aa0dbp+0, 0x1.9c49182a3f090p+0,
    0x1.ae89f995ad3adp+0, 0x1.c199bdd85529cp+0, 0x1.d5818dcfba487p+0, 0x1.ea4afa2a490dap+0};
// AVX-512: x = (16 n' + j) ln2/16 + r with |r| <= ln2/32, e^x = 2^n' * 2^(j/16) * e^r: the 16-entry
// table 2^(j/16) is one two-register permute (vpermi2pd), e^r a degree-7 Taylor polynomial
// (truncation < 2e-18 relative), 2^n' one vscalefpd; at most ~1 ulp from std::exp (the table
// entries are correctly rounded, t + t (e^r - 1) is one FMA).  Lanes with
// |x| > 708.3 or NaN (overflow, subnormal results) are recomputed with std::exp, as below.
inline vf64 exp_f64(vf64 x) {
  const __m512d xv = (__m512d)x;
  const __mmask8 out = _mm512_cmp_pd_mask(_mm512_abs_pd(xv), _mm512_set1_pd(708.3), _CMP_NLE_UQ);
  const __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(xv, _mm512_set1_pd(23.083120654223414)),  // 16/ln2
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln2/16 in two parts (the high part has 32 significant bits: k * hi is exact for |k| < 2^21)
  __m512d r = _mm512_fnmadd_pd(k, _mm512_set1_pd(6.93147180369123816490e-01 / 16), xv);
  r = _mm512_fnmadd_pd(k, _mm512_set1_pd(1.90821492927058770002e-10 / 16), r);
  const vf64 rv = (vf64)r;
  vf64 y = rv * (1.0 / 5040.0) + (1.0 / 720.0);
  y = y * rv + (1.0 / 120.0);
  y = y * rv + (1.0 / 24.0);
  y = y * rv + (1.0 / 6.0);
  y = y * rv + 0.5;
  y = y * (rv * rv) + rv;  // e^r - 1
  const __m512i ki = _mm512_cvtpd_epi64(k);
  const __m512d t = _mm512_permutex2var_pd(_mm512_loadu_pd(kExp2Sixteenths),
                                           _mm512_and_si512(ki, _mm512_set1_epi64(15)),
                                           _mm512_loadu_pd(kExp2Sixteenths + 8));
  const __m512d e = _mm512_cvtepi64_pd(_mm512_srai_epi64(ki, 4));
  vf64 res = (vf64)_mm512_scalef_pd(_mm512_fmadd_pd(t, (__m512d)y, t), e);  // t + t (e^r - 1): one rounding
  if (out) {
    double xs[kW64], rs[kW64];
    vstore(xs, x);
    vstore(rs, res);
    for (int l = 0; l < kW64; ++l)
      if ((out >> l) & 1) rs[l] = std::exp(xs[l]);
    res = vload<vf64>(rs);
  }
  return res;
}

// 2^(y/16) for W doubles (the float64 log2 form, pair.h, with its terms scaled by 16): y = 16 n' + j
// + f with |f| <= 1/2, 2^(y/16) = 2^n' * 2^(j/16) * 2^(f/16).  k = 16 n' + j by the 1.5 * 2^52 rounding
// trick (its low 4 bits index the table 2^(j/16): one two-register permute), 2^(f/16) - 1 = f q(f)
// with q the degree-5 minimax fit (float64 coefficients; relative error < 1.5e-17 over |f| <= 1/2),
// 2^n' by vscalefpd (which takes floor(k / 16) itself and rounds underflow and overflow correctly:
// no range branch).  y is clamped below at -16 * 1100 (the result is 0 there); NaN stays NaN.  At
// most ~1 ulp from exp2(y / 16) for normal results; 14 vector operations.
inline vf64 exp2_16_f64(vf64 y) {
  const __m512d magic = _mm512_set1_pd(6755399441055744.0);  // 1.5 * 2^52
  const __m512d yv = _mm512_max_pd(_mm512_set1_pd(-16.0 * 1100.0), (__m512d)y);  // NaN: returns y
  const __m512d t = _mm512_add_pd(yv, magic);
  const __m512d k = _mm512_sub_pd(t, magic);
  const vf64 f = (vf64)_mm512_sub_pd(yv, k);  // exact
  vf64 q = f * 0x1.430a1d08ec681p-37 + 0x1.5d897e525c216p-30;
  q = q * f + 0x1.3b2ab6fb41213p-23;
  q = q * f + 0x1.c6b08d6f2a289p-17;
  q = q * f + 0x1.ebfbdff82c590p-11;
  q = q * f + 0x1.62e42fefa39f3p-5;
  const vf64 p = q * f;  // 2^(f/16) - 1
  const __m512d tb = _mm512_permutex2var_pd(_mm512_loadu_pd(kExp2Sixteenths), _mm512_castpd_si512(t),
                                            _mm512_loadu_pd(kExp2Sixteenths + 8));
  const __m512d r = _mm512_fmadd_pd(tb, (__m512d)p, tb);  // t + t (2^(f/16) - 1): one rounding
  return (vf64)_mm512_scalef_pd(r, _mm512_mul_pd(k, _mm512_set1_pd(0.0625)));
}
#else
// AVX2 / portable: range reduction by ln2 (fdlibm split), degree-13 Taylor polynomial on
// |r| <= ln2/2 (truncation < 5e-18 relative), at most ~1 ulp from std::exp.  Lanes outside
// [-708.3, 709.7] (subnormal results, overflow) are recomputed with std::exp.
inline vf64 exp_f64(vf64 x) {
  const vf64 lo = vbroadcast<vf64>(-708.3), hi = vbroadcast<vf64>(709.7);
  const vi64 out = (x < lo) | (x > hi);
#if defined(__AVX512F__)
  // max(lo, x) / min(hi, x) return x when x is NaN: the same values as the selects below
  vf64 xc = (vf64)_mm512_max_pd((__m512d)lo, (__m512d)x);
  xc = (vf64)_mm512_min_pd((__m512d)hi, (__m512d)xc);
#elif defined(__AVX__)
  vf64 xc = (vf64)_mm256_max_pd((__m256d)lo, (__m256d)x);
  xc = (vf64)_mm256_min_pd((__m256d)hi, (__m256d)xc);
#else
  vf64 xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
#endif
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const vf64 t = xc * 1.4426950408889634 + magic;
  const vf64 n = t - magic;
  vf64 r = xc - n * 6.93147180369123816490e-01;
  r = r - n * 1.90821492927058770002e-10;
  vf64 y = r * (1.0 / 6227020800.0) + (1.0 / 479001600.0);
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
  const vi64 ni = bitcast<vi64>(t) - bitcast<std::int64_t>(magic);
  const vf64 pow2 = bitcast<vf64>((ni + 1023) << 52);
  vf64 res = y * pow2;
  std::int64_t m[kW64];
#if defined(__AVX512F__)
  if (_mm512_test_epi64_mask((__m512i)out, (__m512i)out)) {  // one test instead of a store and W loads
    vstore(m, out);
#elif defined(__AVX__)
  if (!_mm256_testz_si256((__m256i)out, (__m256i)out)) {
    vstore(m, out);
#else
  vstore(m, out);
  std::int64_t any = 0;
  for (int l = 0; l < kW64; ++l) any |= m[l];
  if (any) {
#endif
    double xs[kW64], rs[kW64];
    vstore(xs, x);
    vstore(rs, res);
    for (int l = 0; l < kW64; ++l)
      if (m[l]) rs[l] = std::exp(xs[l]);
    res = vload<vf64>(rs);
  }
  return res;
}

#if defined(__AVX2__)
// 2^(y/16) for N vectors of 4 doubles (see the AVX-512 version): y = 4k + f with |f| <= 2 by the
// 1.5 * 2^54 rounding trick (k in t's low bits), 2^(y/16) = 2^floor(k/4) * 2^((k mod 4)/4) * 2^(f/16).
// The table 2^(j/4) is two in-lane permutes and a blend; 2^(f/16) - 1 = f q(f) with q the degree-8
// Taylor polynomial in f ln2/16 (truncation < 7e-18 relative over |f| <= 2); the table entry times
// (1 + f q) in one FMA; 2^floor(k/4) added to the exponent bits.  At most ~1 ulp from exp2(y / 16);
// 25 vector operations (the portable degree-13 form below: 30).  Each step runs over the N vectors in turn:
// one vector's Horner chain alone is latency-bound (~23 cycles a vector measured on Zen 3), N
// independent chains fill the FMA pipes.  Lanes with |y / 16| > 1020 or NaN are recomputed with
// std::exp2.
template <int N>
inline void exp2_16_f64_group(const vf64* y, vf64* res) {
  const __m256d magic = _mm256_set1_pd(27021597764222976.0);  // 1.5 * 2^54: rounds to a multiple of 4
  __m256d t[N], out = _mm256_setzero_pd();
  vf64 f[N], q[N];
  _Pragma("GCC unroll 16")
  for (int i = 0; i < N; ++i) {
    const __m256d yv = (__m256d)y[i];
    const __m256d absy = _mm256_andnot_pd(_mm256_set1_pd(-0.0), yv);
    out = _mm256_or_pd(out, _mm256_cmp_pd(absy, _mm256_set1_pd(16.0 * 1020.0), _CMP_NLE_UQ));  // NaN: out
    t[i] = _mm256_add_pd(yv, magic);
    f[i] = (vf64)_mm256_sub_pd(yv, _mm256_sub_pd(t[i], magic));  // exact, |f| <= 2
  }
  // (ln2/16)^n / n!, n = 9 ... 1
  constexpr double c[9] = {0x1.b5253d395e7c4p-60, 0x1.62c0223a5c824p-52, 0x1.ffcbfc588b0c7p-45,
                           0x1.430912f86c787p-37, 0x1.5d87fe78a6731p-30, 0x1.3b2ab6fba4e77p-23,
                           0x1.c6b08d704a0c0p-17, 0x1.ebfbdff82c58fp-11, 0x1.62e42fefa39efp-5};
  _Pragma("GCC unroll 16")
  for (int i = 0; i < N; ++i) q[i] = f[i] * c[0] + c[1];
  _Pragma("GCC unroll 8")
  for (int n = 2; n < 9; ++n)
    _Pragma("GCC unroll 16")
    for (int i = 0; i < N; ++i) q[i] = q[i] * f[i] + c[n];
  const __m256d lo4 = _mm256_setr_pd(1.0, 0x1.306fe0a31b715p+0, 1.0, 0x1.306fe0a31b715p+0);
  const __m256d hi4 = _mm256_setr_pd(0x1.6a09e667f3bcdp+0, 0x1.ae89f995ad3adp+0, 0x1.6a09e667f3bcdp+0,
                                     0x1.ae89f995ad3adp+0);
  _Pragma("GCC unroll 16")
  for (int i = 0; i < N; ++i) {
    const __m256d p = (__m256d)(q[i] * f[i]);  // 2^(f/16) - 1
    const __m256i ti = _mm256_castpd_si256(t[i]);
    // 2^(j/4), j = k mod 4: vpermilpd picks by bit 1 of its control (k's bit 0), the blend by bit 63 (k's bit 1)
    const __m256i c0 = _mm256_slli_epi64(ti, 1);
    const __m256d tb = _mm256_blendv_pd(_mm256_permutevar_pd(lo4, c0), _mm256_permutevar_pd(hi4, c0),
                                        _mm256_castsi256_pd(_mm256_slli_epi64(ti, 62)));
    const __m256d r = _mm256_fmadd_pd(tb, p, tb);  // t + t (2^(f/16) - 1): one rounding
    // floor(k / 4) << 52 = (k << 50) without bits 50-51 (two's complement; |k| < 2^13 in range)
    const __m256i e = _mm256_and_si256(_mm256_slli_epi64(ti, 50),
                                       _mm256_set1_epi64x(static_cast<long long>(0xFFF0000000000000ull)));
    res[i] = (vf64)_mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(r), e));
  }
  if (!_mm256_testz_pd(out, out)) {  // sign bits of the compare masks
    for (int i = 0; i < N; ++i) {
      double ys[kW64], rs[kW64];
      vstore(ys, y[i]);
      vstore(rs, res[i]);
      for (int l = 0; l < kW64; ++l) {
        const double u = ys[l] * 0.0625;
        if (!(std::fabs(u) <= 1020.0)) rs[l] = std::exp2(u);
      }
      res[i] = vload<vf64>(rs);
    }
  }
}

inline vf64 exp2_16_f64(vf64 y) {
  vf64 r;
  exp2_16_f64_group<1>(&y, &r);
  return r;
}

// N vectors, 4 at a time (measured best on Zen 3; 3, 6 and 12 were no better), then the rest
template <int N>
inline void exp2_16_f64_n(const vf64* y, vf64* res) {
  constexpr int G = 4, full = N / G * G;
  _Pragma("GCC unroll 8")
  for (int i = 0; i < full; i += G) exp2_16_f64_group<G>(y + i, res + i);
  if constexpr (N > full) exp2_16_f64_group<N - full>(y + full, res + full);
}
#else
// portable (SSE2): 2^(y/16) for W doubles (see the AVX-512 version): u = y / 16 (exact), u = n + f with |f| <= 1/2,
// 2^f a degree-13 Taylor polynomial in f ln2 (truncation < 5e-18 relative), 2^n in the exponent bits.
// Lanes with |u| > 1020 or NaN are recomputed with std::exp2.
inline vf64 exp2_16_f64(vf64 y) {
  const vf64 u = y * 0.0625;
  const vi64 out = ~((u >= -1020.0) & (u <= 1020.0));  // NaN compares false: recomputed
  const vf64 uc = (u >= -1020.0) & (u <= 1020.0) ? u : vf64{};
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const vf64 t = uc + magic;
  const vf64 f = uc - (t - magic);
  vf64 p = f * 0x1.816193166d0f9p-40 + 0x1.c3bd650fc2986p-36;  // ln2^n / n!, n = 13 ... 1
  p = p * f + 0x1.e8cac7351bb25p-32;
  p = p * f + 0x1.e4cf5158b8ecap-28;
  p = p * f + 0x1.b5253d395e7c4p-24;
  p = p * f + 0x1.62c0223a5c824p-20;
  p = p * f + 0x1.ffcbfc588b0c7p-17;
  p = p * f + 0x1.430912f86c787p-13;
  p = p * f + 0x1.5d87fe78a6731p-10;
  p = p * f + 0x1.3b2ab6fba4e77p-7;
  p = p * f + 0x1.c6b08d704a0c0p-5;
  p = p * f + 0x1.ebfbdff82c58fp-3;
  p = p * f + 0x1.62e42fefa39efp-1;
  p = p * f + 1.0;
  const vi64 ni = bitcast<vi64>(t) - bitcast<std::int64_t>(magic);
  vf64 res = p * bitcast<vf64>((ni + 1023) << 52);
  std::int64_t m[kW64];
  vstore(m, out);
  std::int64_t any = 0;
  for (int l = 0; l < kW64; ++l) any |= m[l];
  if (any) {
    double ys[kW64], rs[kW64];
    vstore(ys, y);
    vstore(rs, res);
    for (int l = 0; l < kW64; ++l)
      if (m[l]) rs[l] = std::exp2(ys[l] * 0.0625);
    res = vload<vf64>(rs);
  }
  return res;
}
#endif  // __AVX2__
#endif  // __AVX512F__

#if !defined(__AVX2__) || defined(__AVX512F__)
// N vectors at a time, one after another (the AVX2 version interleaves them)
template <int N>
inline void exp2_16_f64_n(const vf64* y, vf64* res) {
  for (int i = 0; i < N; ++i) res[i] = exp2_16_f64(y[i]);
}

#endif

// 2^u for W floats (u = log2(e) * arg, folded into the caller's constants): u = n + f with
// |f| <= 1/2, degree-6 Taylor polynomial of 2^f (truncation 1.2e-7 relative, about 2 ulp overall;
// nearly unbiased, so the errors of many pairs cancel in the sums -- a minimax polynomial of
// degree 5 was as accurate per value but biased the sums 20x more), the exponent added to the
// polynomial's bits (no multiply; the same bits as y * 2^n while the result is a normal float).
// u < -126 gives exactly 0, -126 <= u < -125.5 may give a wrong value below 2^-126 (an absolute
// error under 2^-126); u is never large and positive for the RKME kernel (arg <= 0 up to
// rounding), u > 127 is clamped.
inline vf32 exp2_f32(vf32 u) {
  const vf32 lo = vbroadcast<vf32>(-126.0f), hi = vbroadcast<vf32>(127.0f);
  const vi32 keep = u >= lo;
  u = vmin(vmax(u, lo), hi);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const vf32 t = u + magic;
  const vf32 f = u - (t - magic);
  vf32 y = f * 1.5403530393381606e-4f + 1.3333558146428443e-3f;
  y = y * f + 9.6181291076284772e-3f;
  y = y * f + 5.5504108664821580e-2f;
  y = y * f + 2.4022650695910071e-1f;
  y = y * f + 6.9314718055994531e-1f;
  y = y * f + 1.0f;
  const vi32 ni = bitcast<vi32>(t) - bitcast<std::int32_t>(magic);
  return bitcast<vf32>((bitcast<vi32>(y) + (ni << 23)) & keep);
}

inline vf32 vexp(vf32 x) { return exp_f32(x); }
inline vf64 vexp(vf64 x) { return exp_f64(x); }

// The exp functors the shared per-pair functions (lwengine/kernels/pair.h) are called with.
struct VExp {
  template <class V>
  V operator()(V x) const { return vexp(x); }
};
struct VExp2 {
  vf32 operator()(vf32 u) const { return exp2_f32(u); }
};

}  // namespace LWE_ISA
}  // namespace lwe
