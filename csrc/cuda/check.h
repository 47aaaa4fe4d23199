// Error checks and device helpers shared by the CUDA launchers (.cu) and the bindings (.cpp).
// Plain C++ (no CUDA syntax): every failure becomes an exception naming the operation, which
// pybind11 turns into RuntimeError (std::runtime_error) or ValueError (std::invalid_argument).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace lwe::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t err, const char* op) {
  (void)cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  throw std::runtime_error(std::string("lwengine CUDA: ") + op + " failed: " + cudaGetErrorName(err) +
                           " (" + cudaGetErrorString(err) + ")");
}

#define LWE_CUDA_CHECK(expr, op)                                 \
  do {                                                           \
    const cudaError_t lwe_err_ = (expr);                         \
    if (lwe_err_ != cudaSuccess) ::lwe::cuda::throw_cuda(lwe_err_, op); \
  } while (0)

// After a kernel launch: configuration errors surface here, execution errors at the next sync.
#define LWE_CUDA_LAUNCH_CHECK(op) LWE_CUDA_CHECK(cudaGetLastError(), op)

[[noreturn]] inline void throw_arg(const std::string& msg) { throw std::invalid_argument(msg); }

// Makes `device` current for the scope, restoring the previous device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    int count = 0;
    LWE_CUDA_CHECK(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (device < 0 || device >= count)
      throw_arg("device must be in [0, " + std::to_string(count) + "), got " + std::to_string(device));
    LWE_CUDA_CHECK(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) LWE_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int now = -1;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) (void)cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace lwe::cuda
