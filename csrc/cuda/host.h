// Host (numpy) paths of the CUDA kernels: copy the inputs to `device`, poison the outputs with NaN
// bytes (an unwritten element cannot pass), run the launcher of launch.h, synchronise, copy back.
// All pointers are host pointers; the caller (csrc/bind/module_cuda.cpp) has validated them.
#pragma once
#include <cstdint>

#include "launch.h"

namespace lwe::cuda::host {

// A packed store on the host: z (rows, d) of dtype dt, beta (rows,), offsets (n_specs + 1,).
struct Store {
  DType dt;
  const void* z;
  const double* beta;
  const std::int64_t* offsets;
  std::int64_t rows, d, n_specs, max_rows;
};

void cross_inner(const Store& q, const Store& s, double gamma, double* out, int device);  // out (q.n, s.n)
void self_inner(const Store& s, double gamma, double* out, int device);                   // out (s.n,)
void gram(const Store& s, double gamma, double* out, int device);                         // out (s.n, s.n)
void zx_moments(DType x_dt, const double* z, std::int64_t K, const void* x, std::int64_t n, std::int64_t d,
                double gamma, double* C, double* T, int device);  // T may be null
void rs_step_from_moments(const double* z, const double* beta, const double* C, const double* T, std::int64_t K,
                          std::int64_t d, double gamma, double step, double t1_factor, double* out, int device);

}  // namespace lwe::cuda::host
