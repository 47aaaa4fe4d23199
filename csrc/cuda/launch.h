// Host-side API of the CUDA kernels (implemented in csrc/cuda/*.cu, bound in csrc/bind/module_cuda.cpp).
//
// All pointers are device pointers; sizes are element counts.  Every launcher makes `device`
// current for its duration, enqueues its work on `stream` (0 = the legacy default stream) and
// returns without synchronising.  Packed stores: z (rows, d) row-major, beta (rows,) float64,
// offsets (n_specs + 1,) int64.  Offsets are read with clamping to [0, rows], so malformed offsets
// give wrong numbers but never an out-of-bounds access (the Python layer validates them).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace lwe::cuda {

enum class DType { f32, f64 };
DType parse_dtype(const std::string& name);  // "float32" | "float64", else invalid_argument
inline std::size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 8; }

// out[q, i] = sum_a sum_b q_beta_a beta_b k(q_z_a, z_b), (n_q, n_specs) float64 row-major.
// q_max_rows: largest query spec (rows), picks the tile height; 0 = unknown (largest tile).
void cross_inner(DType dt, const void* q_z, const double* q_beta, const std::int64_t* q_offsets,
                 std::int64_t q_rows, std::int64_t n_q, std::int64_t q_max_rows, const void* z,
                 const double* beta, const std::int64_t* offsets, std::int64_t rows, std::int64_t n_specs,
                 std::int64_t d, double gamma, double* out, int device, cudaStream_t stream);

// out[i] = <mu_i, mu_i>, (n_specs,).  max_rows as q_max_rows above.
void self_inner(DType dt, const void* z, const double* beta, const std::int64_t* offsets, std::int64_t rows,
                std::int64_t n_specs, std::int64_t max_rows, std::int64_t d, double gamma, double* out, int device,
                cudaStream_t stream);

// out[i, j] = <mu_i, mu_j>, (n_specs, n_specs), exactly symmetric (upper triangle mirrored).
void gram(DType dt, const void* z, const double* beta, const std::int64_t* offsets, std::int64_t rows,
          std::int64_t n_specs, std::int64_t max_rows, std::int64_t d, double gamma, double* out, int device,
          cudaStream_t stream);

// C_i = mean_j k(z_i, x_j) (K,), T_i = mean_j k(z_i, x_j) x_j (K, d) (T may be null: skipped).
// z is float64 (K, d); x (n, d) float32 or float64 (x_dt); the float32 path rounds z to float32.
// Deterministic for a given device (fixed tiling and a fixed-order second-stage reduction).
void zx_moments(DType x_dt, const double* z, std::int64_t K, const void* x, std::int64_t n, std::int64_t d,
                double gamma, double* C, double* T, int device, cudaStream_t stream);

// One Jacobi reduced-set step from the moments (lwe::rs_step_coord), all float64, out (K, d).
void rs_step_from_moments(const double* z, const double* beta, const double* C, const double* T, std::int64_t K,
                          std::int64_t d, double gamma, double step, double t1_factor, double* out, int device,
                          cudaStream_t stream);

// ---- utilities (csrc/cuda/util.cu)
struct BuildInfo {
  int cuda_runtime_version;  // CUDART_VERSION the module was compiled against
  int nvcc_major, nvcc_minor;
  std::string archs;
  int driver_version;  // 0 without a driver
};
BuildInfo build_info();

struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0, multiprocessors = 0, l2_cache_bytes = 0, memory_bus_width_bits = 0;
  std::uint64_t total_memory_bytes = 0, smem_per_block_optin = 0, smem_per_multiprocessor = 0;
  int clock_khz = 0, memory_clock_khz = 0;  // 0 where the attribute is unavailable
};
DeviceInfo device_info(int device);

// Fills ptr[0:count) with uniform values in [lo, hi) from a counter-based hash of (seed, index).
void fill_uniform(DType dt, void* ptr, std::int64_t count, std::uint64_t seed, double lo, double hi, int device,
                  cudaStream_t stream);
// Ceiling microbenchmarks (event-timed, synchronous): operations or bytes per second.
double bench_exp_rate(int device);   // float32 __expf per second
double bench_ffma_rate(int device);  // float32 FLOP/s from dependent-chain-free FFMA
double bench_copy_rate(std::int64_t nbytes, int repeats, int device);  // (read + write) bytes/s

}  // namespace lwe::cuda
