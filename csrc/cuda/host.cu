// Host-copy paths (host.h) and the raw memory helpers (memory.h).
#include "host.h"

#include "memory.h"

namespace lwe::cuda {

std::uintptr_t raw_malloc(std::size_t nbytes, int device) {
  DeviceGuard guard(device);
  void* p = nullptr;
  LWE_CUDA_CHECK(cudaMalloc(&p, nbytes ? nbytes : 1), "cudaMalloc");
  return reinterpret_cast<std::uintptr_t>(p);
}
void raw_free(std::uintptr_t ptr, int device) {
  DeviceGuard guard(device);
  LWE_CUDA_CHECK(cudaFree(reinterpret_cast<void*>(ptr)), "cudaFree");
}
void raw_copy_to_device(std::uintptr_t dst, const void* src, std::size_t nbytes, int device) {
  DeviceGuard guard(device);
  LWE_CUDA_CHECK(cudaMemcpy(reinterpret_cast<void*>(dst), src, nbytes, cudaMemcpyHostToDevice), "copy_to_device");
}
void raw_copy_to_host(void* dst, std::uintptr_t src, std::size_t nbytes, int device) {
  DeviceGuard guard(device);
  LWE_CUDA_CHECK(cudaMemcpy(dst, reinterpret_cast<const void*>(src), nbytes, cudaMemcpyDeviceToHost), "copy_to_host");
}
void raw_memset(std::uintptr_t ptr, int value, std::size_t nbytes, int device) {
  DeviceGuard guard(device);
  LWE_CUDA_CHECK(cudaMemset(reinterpret_cast<void*>(ptr), value, nbytes), "cudaMemset");
}
void synchronize(int device) {
  DeviceGuard guard(device);
  LWE_CUDA_CHECK(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}
int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device: report 0, never raise
    return 0;
  }
  return n;
}

namespace host {
namespace {

// Device copies of a store (sizes in bytes from its shape).
struct DeviceStore {
  DeviceBuffer z, beta, offsets;
  DeviceStore(const Store& s, const char* name)
      : z(static_cast<std::size_t>(s.rows * s.d) * dtype_size(s.dt), name),
        beta(static_cast<std::size_t>(s.rows) * 8, name),
        offsets(static_cast<std::size_t>(s.n_specs + 1) * 8, name) {
    z.upload(s.z, name);
    beta.upload(s.beta, name);
    offsets.upload(s.offsets, name);
  }
};

}  // namespace

void cross_inner(const Store& q, const Store& s, double gamma, double* out, int device) {
  const char* name = "cross_inner (host copy)";
  DeviceGuard guard(device);
  DeviceStore dq(q, name), ds(s, name);
  DeviceBuffer dout(static_cast<std::size_t>(q.n_specs * s.n_specs) * 8, name);
  dout.poison(name);
  lwe::cuda::cross_inner(s.dt, dq.z.get(), dq.beta.get<double>(), dq.offsets.get<std::int64_t>(), q.rows, q.n_specs,
                         q.max_rows, ds.z.get(), ds.beta.get<double>(), ds.offsets.get<std::int64_t>(), s.rows,
                         s.n_specs, s.d, gamma, dout.get<double>(), device, nullptr);
  LWE_CUDA_CHECK(cudaDeviceSynchronize(), "cross_inner");
  dout.download(out, name);
}

template <bool GRAM>
void store_op(const Store& s, double gamma, double* out, int device) {
  const char* name = GRAM ? "gram (host copy)" : "self_inner (host copy)";
  DeviceGuard guard(device);
  DeviceStore ds(s, name);
  DeviceBuffer dout(static_cast<std::size_t>(GRAM ? s.n_specs * s.n_specs : s.n_specs) * 8, name);
  dout.poison(name);
  if (GRAM)
    lwe::cuda::gram(s.dt, ds.z.get(), ds.beta.get<double>(), ds.offsets.get<std::int64_t>(), s.rows, s.n_specs,
                    s.max_rows, s.d, gamma, dout.get<double>(), device, nullptr);
  else
    lwe::cuda::self_inner(s.dt, ds.z.get(), ds.beta.get<double>(), ds.offsets.get<std::int64_t>(), s.rows, s.n_specs,
                          s.max_rows, s.d, gamma, dout.get<double>(), device, nullptr);
  LWE_CUDA_CHECK(cudaDeviceSynchronize(), name);
  dout.download(out, name);
}

void self_inner(const Store& s, double gamma, double* out, int device) { store_op<false>(s, gamma, out, device); }
void gram(const Store& s, double gamma, double* out, int device) { store_op<true>(s, gamma, out, device); }

void zx_moments(DType x_dt, const double* z, std::int64_t K, const void* x, std::int64_t n, std::int64_t d,
                double gamma, double* C, double* T, int device) {
  const char* name = "zx_moments (host copy)";
  DeviceGuard guard(device);
  DeviceBuffer dz(static_cast<std::size_t>(K * d) * 8, name), dx(static_cast<std::size_t>(n * d) * dtype_size(x_dt), name),
      dC(static_cast<std::size_t>(K) * 8, name), dT(T ? static_cast<std::size_t>(K * d) * 8 : 0, name);
  dz.upload(z, name);
  dx.upload(x, name);
  dC.poison(name);
  dT.poison(name);
  lwe::cuda::zx_moments(x_dt, dz.get<double>(), K, dx.get(), n, d, gamma, dC.get<double>(),
                        T ? dT.get<double>() : nullptr, device, nullptr);
  LWE_CUDA_CHECK(cudaDeviceSynchronize(), "zx_moments");
  dC.download(C, name);
  if (T) dT.download(T, name);
}

void rs_step_from_moments(const double* z, const double* beta, const double* C, const double* T, std::int64_t K,
                          std::int64_t d, double gamma, double step, double t1_factor, double* out, int device) {
  const char* name = "rs_step_from_moments (host copy)";
  DeviceGuard guard(device);
  const std::size_t kd = static_cast<std::size_t>(K * d) * 8, k = static_cast<std::size_t>(K) * 8;
  DeviceBuffer dz(kd, name), db(k, name), dC(k, name), dT(kd, name), dout(kd, name);
  dz.upload(z, name);
  db.upload(beta, name);
  dC.upload(C, name);
  dT.upload(T, name);
  dout.poison(name);
  lwe::cuda::rs_step_from_moments(dz.get<double>(), db.get<double>(), dC.get<double>(), dT.get<double>(), K, d, gamma,
                                  step, t1_factor, dout.get<double>(), device, nullptr);
  LWE_CUDA_CHECK(cudaDeviceSynchronize(), name);
  dout.download(out, name);
}

}  // namespace host
}  // namespace lwe::cuda
