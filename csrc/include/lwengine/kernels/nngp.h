// ConvNet-NNGP kernel of the reference's image specs (cnn_gp, _build_ConvNet_NNGP), written once
// for CPU and CUDA: per-pixel pieces of the per-pair recursion, in the reference's order.
//
// Maps are S x S row-major (S = 32 >> level).  For depth d, levels l = 0..d-1 apply
//   conv3 (pad 1, w = float32(sqrt2 / 9), + 0.1) -> ReLU (with the two images' own conv'ed
//   variance maps) -> 2x2 average pool (w = 1/4, stride 2),
// then a final S_d x S_d box (w = float32(1 / S_d^2)) gives the kernel value.  The variance maps
// xx of one image follow the same convs with ReLU xx <- xx / 2; they depend on one image only and
// are precomputed per image ("prep": the pre-ReLU conv'ed map of every level, concatenated), which
// also yields the one-object diagonal k(x, x) (the reference forces xy = xx on that path).
#pragma once
#include <cmath>
#include "lwengine/common.h"

namespace lwe {
namespace nngp {

constexpr int kWidth = 32;
constexpr int kMaxDepth = 5;

LWE_HD int level_size(int l) { return kWidth >> l; }
// Offset of level l's map inside an image's prep block; prep_len(d) floats per image.
LWE_HD int level_offset(int l) {
  int off = 0;
  for (int m = 0; m < l; ++m) off += level_size(m) * level_size(m);
  return off;
}
LWE_HD int prep_len(int depth) { return level_offset(depth); }

template <class T>
LWE_HD T w3() { return T(0.15713484585285187f); }  // float32(sqrt(2) / 9), widened for float64
template <class T>
LWE_HD T w_final(int S) { return T(1.0f / float(S * S)); }  // exact for powers of two
template <class T>
LWE_HD T pi() { return T(3.141592653589793); }
template <class T>
LWE_HD T two_pi() { return T(6.283185307179586); }
template <class T>
LWE_HD T f32_tiny() { return T(1.17549435e-38f); }

// acos: float32 via a Cephes-style branch-free form (~2 ulp, vectorisable); float64 via libm.
LWE_HD float acos_approx(float x) {
  const float ax = fabsf(x);
  const bool big = ax > 0.5f;
  const float zz = big ? 0.5f * (1.0f - ax) : x * x;
  const float s = big ? sqrtf(zz) : ax;
  float p = ((((4.2163199048e-2f * zz + 2.4181311049e-2f) * zz + 4.5470025998e-2f) * zz + 7.4953002686e-2f) * zz +
             1.6666752422e-1f) * zz * s + s;  // asin(s)
  const float asin_abs = big ? 1.5707963267948966f - 2.0f * p : p;  // asin(|x|)
  return x < 0 ? 1.5707963267948966f + asin_abs : 1.5707963267948966f - asin_abs;
}
LWE_HD double acos_approx(double x) { return acos(x); }

// Branch-free atan2(b, a) for b >= 0 (a and b not both 0) in float64, for the float32 path's
// float64 ReLU: q = min/max in [0, 1], atan(q) = q P(q^2) with P a degree-17 Chebyshev fit of
// atan(q) / q (computed in 40-digit arithmetic; |error| <= 2e-15).
LWE_HD double atan2_poly(double b, double a) {
  const double aa = fabs(a);
  const bool steep = b > aa;
  const double q = (steep ? aa : b) / (steep ? b : aa);
  const double w = q * q;
  double p = -4.71322391243198e-05;
  p = p * w + 0.0004731075145729513;
  p = p * w + -0.0022447389063839896;
  p = p * w + 0.0067510647393723335;
  p = p * w + -0.01462977623780547;
  p = p * w + 0.024781058461583166;
  p = p * w + -0.03503247244053869;
  p = p * w + 0.04386871447885981;
  p = p * w + -0.051322669323276275;
  p = p * w + 0.05847103253294943;
  p = p * w + -0.06659500751705963;
  p = p * w + 0.07691238923873273;
  p = p * w + -0.0909079661757022;
  p = p * w + 0.11111103214172209;
  p = p * w + -0.14285713946017414;
  p = p * w + 0.19999999992234013;
  p = p * w + -0.33333333333261966;
  p = p * w + 0.999999999999999;
  const double t0 = q * p;
  const double t1 = steep ? 1.5707963267948966 - t0 : t0;
  return a < 0 ? 3.141592653589793 - t1 : t1;
}

// 3x3 zero-padded window sum of w3 * a, + 0.1, at (r, c) of an S x S map.
template <class T>
LWE_HD T conv3_px(const T* a, int S, int r, int c) {
  const T w = w3<T>();
  T s = T(0);
  for (int dr = -1; dr <= 1; ++dr) {
    const int rr = r + dr;
    if (rr < 0 || rr >= S) continue;
    for (int dc = -1; dc <= 1; ++dc) {
      const int cc = c + dc;
      if (cc < 0 || cc >= S) continue;
      s += w * a[rr * S + cc];
    }
  }
  return s + T(0.1);
}

// Poly (the float32 path, evaluated in float64): theta through atan2_poly, vectorisable.
template <class T, bool Poly = false>
LWE_HD T relu_core(T xy, T xx, T yy) {
  if (Poly) {
    // acos(clamp(xy / sqrt(t))) = atan2(sqrt(max(t - xy^2, 0)), xy): no sqrt(t), no division by it
    const T t = xx * yy + f32_tiny<T>();
    T d = t - xy * xy;
    d = d > T(0) ? d : T(0);
    const T sn = sqrt(d);
    const T theta = T(atan2_poly(double(sn), double(xy)));
    return (sn + (pi<T>() - theta) * xy) * T(0.15915494309189535);
  }
  const T t = xx * yy + f32_tiny<T>();
  T cs = xy * (T(1) / sqrt(t));
  cs = cs < T(-1) ? T(-1) : (cs > T(1) ? T(1) : cs);
  T d = t - xy * xy;
  d = d > T(0) ? d : T(0);
  const T sn = sqrt(d);
  const T theta = acos_approx(cs);
  return (sn + (pi<T>() - theta) * xy) / two_pi<T>();
}

// ReLU step of cnn_gp on one pixel: new xy from (xy, xx, yy), evaluated in R (the float32 path
// passes R = double: its rounding then stays below the reference's own float32 error, so the
// distance to the reference's entries is about that error, ~1e-7 of the largest entry).
template <class T, class R = T>
LWE_HD T relu_px(T xy_in, T xx_in, T yy_in) {
  using T_ = R;
  const T_ xy = xy_in, xx = xx_in, yy = yy_in;
  return T(relu_core<T_, (sizeof(T) < sizeof(R))>(xy, xx, yy));
}

// 2x2 stride-2 average (w = 1/4 per tap) at output (r, c) of an S x S input.
template <class T>
LWE_HD T pool_px(const T* a, int S, int r, int c) {
  const T w = T(0.25);
  const T* p = a + (2 * r) * S + 2 * c;
  return w * p[0] + w * p[1] + w * p[S] + w * p[S + 1];
}

// Final box: sum of w_final * a over the S x S map.
template <class T>
LWE_HD T final_box(const T* a, int S) {
  const T w = w_final<T>(S);
  T s = T(0);
  for (int p = 0; p < S * S; ++p) s += w * a[p];
  return s;
}

}  // namespace nngp
}  // namespace lwe
