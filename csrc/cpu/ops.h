// CPU kernels of _core: plain-pointer entry points (validated by the caller, csrc/bind/module.cpp).
// Every float64 result is accumulated in float64; float32 inputs are the bulk-screening path.
#pragma once
#include <cstdint>
#include <string>
#include "lwengine/common.h"

namespace lwe {

// ---- dispatch (dispatch.cpp)
bool cpu_has_avx2_fma();          // the CPU supports AVX2 and FMA
bool simd_enabled();              // the AVX2 path will be used for the next call
void set_simd(bool enabled);      // user toggle (the LWE_DISABLE_AVX2=1 env var also disables it)
const char* simd_path();          // "avx2" or "portable"
void set_num_threads(int n);
int get_num_threads();

// ---- RKME inner products over packed stores (CSR offsets)
#define LWE_INNER_DECL(T)                                                                           \
  void cross_inner(const T* q_z, const double* q_beta, const index_t* q_off, index_t Q, const T* z, \
                   const double* beta, const index_t* off, index_t N, index_t d, double gamma,      \
                   double* out);                                                                    \
  void self_inner(const T* z, const double* beta, const index_t* off, index_t N, index_t d,         \
                  double gamma, double* out);                                                       \
  void gram(const T* z, const double* beta, const index_t* off, index_t N, index_t d, double gamma,  \
            double* out);                                                                           \
  void zx_moments(const double* z, index_t K, const T* x, index_t n, index_t d, double gamma,       \
                  double* C, double* Tout);
LWE_INNER_DECL(float)
LWE_INNER_DECL(double)

// ---- k-means (Lloyd, float32, reference rules); returns the number of iterations run
int kmeans(const float* x, index_t n, index_t d, float* c, index_t k, int max_iter, double tol);

// ---- G_ij = k(z_i, z_j) of K single points (symmetric, duplicates give identical rows)
void point_gram(const double* z, index_t K, index_t d, double gamma, double* G);

// ---- reduced-set step and QP (qp.cpp, moments.cpp)
// rs_step_from_gram: the same step given G = point_gram(z) (the beta update's matrix at z)
void rs_step_from_gram(const double* z, const double* beta, const double* C, const double* T,
                       const double* G, index_t K, index_t d, double gamma, double step,
                       double t1_factor, double* out);
void rs_step_from_moments(const double* z, const double* beta, const double* C, const double* T,
                          index_t K, index_t d, double gamma, double step, double t1_factor,
                          double* out);
// x0: feasible start point (x0 >= 0, sum > 0; normalised) or nullptr for the best vertex
double simplex_qp(const double* G, const double* c, index_t n, double* x, const double* x0 = nullptr);
void simplex_qp_batch(const double* Gs, const double* cs, index_t B, index_t n, double* xs,
                      double* objs);

// ---- machine probes for the benchmarks: (flops/s of fp32 FMA, float32 exp/s), all threads
double peak_fma_f32(double seconds);
double peak_exp_f32(double seconds);

// Per-ISA implementations (kernels-inl.h compiled once per ISA).
#define LWE_ISA_DECL(ns)                                                                          \
  namespace ns {                                                                                  \
  LWE_INNER_DECL(float)                                                                           \
  LWE_INNER_DECL(double)                                                                          \
  int kmeans(const float* x, index_t n, index_t d, float* c, index_t k, int max_iter, double tol); \
  void point_gram(const double* z, index_t K, index_t d, double gamma, double* G);                \
  double probe_fma_f32(double seconds);                                                           \
  double probe_exp_f32(double seconds);                                                           \
  }
LWE_ISA_DECL(portable)
LWE_ISA_DECL(avx2)

}  // namespace lwe
