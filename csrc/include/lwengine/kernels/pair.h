// Per-pair math of the Gaussian RKME kernel, written once for CPU and CUDA.
//
// k_gamma(a, b) = exp(-gamma * ||a - b||^2), with ||a - b||^2 taken through the expansion
// ||a||^2 - 2 a.b + ||b||^2 and no clamp at zero, exactly as the reference package computes it.
#pragma once
#include <cmath>
#include "lwengine/common.h"

namespace lwe {

template <class T>
LWE_HD T sqdist_expanded(T norm_a, T norm_b, T dot_ab) {
  return norm_a - T(2) * dot_ab + norm_b;
}

template <class T>
LWE_HD T gauss_from_sqdist(T sqdist, T gamma) {
  using std::exp;
  return exp(-gamma * sqdist);
}

}  // namespace lwe
