// Per-pair math of the Gaussian RKME kernel, written once and called by the CPU loops (on scalars
// and on SIMD lane vectors) and by the CUDA kernels.
//
// k_gamma(a, b) = exp(-gamma * ||a - b||^2), with ||a - b||^2 taken through the expansion (no clamp
// at zero) exactly as the reference package computes it.  Four forms:
//
//  * reference form (float64 everywhere; the CUDA float64 stores and data moments):
//      sq = (|a|^2 - 2 a.b) + |b|^2                    sqdist_expanded
//  * point-Gram form (K x K Gram of single points, the reduced-set step):
//      sq = (|a|^2 + |b|^2) - 2 a.b                    sqdist_gram   (symmetric bit for bit)
//  * float64 log2 form (the CPU's float64 stores and data moments): the same exponent in base 2, below
//  * float32 screening form (float32 stores: cross_inner / self_inner / gram), log2 domain:
//      s_a = 2 gamma L a (per coordinate),  t_a = gamma L |a|^2,  t_b = gamma L |b|^2   (L = log2 e;
//      rounded to float32 from float64),  u = (-t_a - t_b) + sum_k s_ak b_k  in float32,  k = 2^u.
//    The sum is one FMA chain over the coordinates in order; the CPU starts the chain at
//    screen_init(-t_a, t_b) (screen_add per coordinate), the CUDA tile starts it at 0 and adds
//    screen_finish at the end.  docs/kernels.md derives one error bound for both orders
//    (lwengine.kernels.cross_inner_f32_bound).
//
// T may be a scalar or a GCC vector type (CPU lanes): only +, -, * and the exp functor are used;
// norms / terms may be scalars next to a lane vector T (GCC broadcasts them).
#pragma once
#include <cmath>
#include "lwengine/common.h"

namespace lwe {

constexpr double kLog2e = 1.4426950408889634;

// exp on scalars: std::exp on the host, the device exp under nvcc.
struct ScalarExp {
  template <class T>
  LWE_HD T operator()(T x) const {
    using std::exp;
    return exp(x);
  }
};

template <class A, class B, class T>
LWE_HD T sqdist_expanded(A norm_a, B norm_b, T dot_ab) {
  return (norm_a - dot_ab * 2) + norm_b;  // scalar 2: also valid on GCC lane vectors
}

template <class A, class B, class T>
LWE_HD T sqdist_gram(A norm_a, B norm_b, T dot_ab) {
  return (norm_a + norm_b) - dot_ab * 2;
}

template <class T, class G, class Exp>
LWE_HD T gauss_from_sqdist(T sqdist, G gamma, Exp exp_fn) {
  return exp_fn(-gamma * sqdist);
}

template <class T, class G>
LWE_HD T gauss_from_sqdist(T sqdist, G gamma) {
  return gauss_from_sqdist(sqdist, gamma, ScalarExp{});
}

// ---- float64 log2 form (the CPU's float64 cross_inner / self_inner / gram / zx_moments): the reference form's
// exponent in base 2,  u = s_a . b - (t_a + t_b),  s_a = 2 gamma L a,  t = gamma L |.|^2  (float64),
// k = 2^u.  The dot product is one FMA chain from 0 over the coordinates in order; the value equals
// the reference form's up to float64 rounding of the same size (eps gamma (|a|^2 + |b|^2 + 2|a.b|)).
// The CPU scales s and t by 16 (exact) for its 2^(j/16)-table exp.
LWE_HD double log2_coord(double v, double gamma) { return 2.0 * gamma * kLog2e * v; }
LWE_HD double log2_term(double sqnorm, double gamma) { return gamma * kLog2e * sqnorm; }
template <class T, class U>
LWE_HD T log2_exponent(T dot_sb, U terms_ab) {
  return dot_sb - terms_ab;
}

// ---- float32 screening form
LWE_HD float screen_coord(double v, double gamma) { return static_cast<float>(2.0 * gamma * kLog2e * v); }
LWE_HD float screen_term(double sqnorm, double gamma) { return static_cast<float>(gamma * kLog2e * sqnorm); }

template <class T, class U>
LWE_HD T screen_init(T neg_term_a, U term_b) {
  return neg_term_a - term_b;
}
template <class T>
LWE_HD T screen_add(T u, T s_ak, T b_k) {
  return u + s_ak * b_k;  // contracted to one FMA (nvcc --fmad, GCC -ffp-contract=fast with FMA)
}
template <class T, class U>
LWE_HD T screen_finish(T dot_sb, T neg_term_a, U term_b) {
  return dot_sb + screen_init(neg_term_a, term_b);
}
template <class T, class Exp2>
LWE_HD T screen_value(T u, Exp2 exp2_fn) {
  return exp2_fn(u);
}

}  // namespace lwe
