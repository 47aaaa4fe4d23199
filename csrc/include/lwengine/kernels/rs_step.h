// Reduced-set Z update (semantics 1.8), one coordinate, written once for CPU and CUDA.
//
//   t1_i = sum_j beta_j k(z_i, z_j)(z_i - z_j) = wsum_i z_i - wz_i     (wsum_i = sum_j beta_j k_ij,
//                                                                         wz_i  = sum_j beta_j k_ij z_j)
//   t2_i = -(2/n) sum_j k(z_i, x_j)(z_i - x_j) = -2 (C_i z_i - T_i)     (C, T: data moments)
//   g_i  = -2 gamma beta_i (t1_factor * t1_i + t2_i),  z_i <- z_i - step * g_i
// t1_factor = 1 is the reference's update; 2 is the exact gradient of MMD^2.
#pragma once
#include "lwengine/common.h"

namespace lwe {

template <class T>
LWE_HD T rs_step_coord(T z_ic, T wsum_i, T wz_ic, T C_i, T T_ic, T beta_i, T gamma, T step, T t1_factor) {
  const T t1 = wsum_i * z_ic - wz_ic;
  const T t2 = T(-2) * (C_i * z_ic - T_ic);
  const T g = T(-2) * gamma * beta_i * (t1_factor * t1 + t2);
  return z_ic - step * g;
}

}  // namespace lwe
