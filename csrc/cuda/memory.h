// Device memory, raw copies and events: plain C++ over the CUDA runtime (no CUDA syntax), used by
// the host-copy paths (host.cu) and by the benchmark-only _cuda.bench submodule.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "check.h"

namespace lwe::cuda {

// An owned device allocation of `bytes` on the current device (RAII).
class DeviceBuffer {
 public:
  DeviceBuffer(std::size_t bytes, const char* what) : bytes_(bytes) {
    if (bytes_) LWE_CUDA_CHECK(cudaMalloc(&ptr_, bytes_), what);
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T = void>
  T* get() const { return static_cast<T*>(ptr_); }
  void upload(const void* src, const char* what) {
    if (bytes_) LWE_CUDA_CHECK(cudaMemcpy(ptr_, src, bytes_, cudaMemcpyHostToDevice), what);
  }
  void download(void* dst, const char* what) const {
    if (bytes_) LWE_CUDA_CHECK(cudaMemcpy(dst, ptr_, bytes_, cudaMemcpyDeviceToHost), what);
  }
  void poison(const char* what) {
    if (bytes_) LWE_CUDA_CHECK(cudaMemset(ptr_, 0xFF, bytes_), what);  // all-ones bytes: NaN
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_;
};

// A CUDA event on one device (timing without torch).
class Event {
 public:
  explicit Event(int device) : device_(device) {
    DeviceGuard guard(device_);
    LWE_CUDA_CHECK(cudaEventCreate(&ev_), "cudaEventCreate");
  }
  ~Event() {
    if (ev_) cudaEventDestroy(ev_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(std::uintptr_t stream) {
    DeviceGuard guard(device_);
    LWE_CUDA_CHECK(cudaEventRecord(ev_, reinterpret_cast<cudaStream_t>(stream)), "cudaEventRecord");
  }
  void synchronize() { LWE_CUDA_CHECK(cudaEventSynchronize(ev_), "cudaEventSynchronize"); }
  float elapsed_ms(const Event& end) const {
    float ms = 0.f;
    LWE_CUDA_CHECK(cudaEventElapsedTime(&ms, ev_, end.ev_), "cudaEventElapsedTime");
    return ms;
  }

 private:
  int device_;
  cudaEvent_t ev_ = nullptr;
};

// Raw device memory by integer address (benchmarks only), each on `device`.
std::uintptr_t raw_malloc(std::size_t nbytes, int device);
void raw_free(std::uintptr_t ptr, int device);
void raw_copy_to_device(std::uintptr_t dst, const void* src, std::size_t nbytes, int device);
void raw_copy_to_host(void* dst, std::uintptr_t src, std::size_t nbytes, int device);
void raw_memset(std::uintptr_t ptr, int value, std::size_t nbytes, int device);
void synchronize(int device);
int device_count();  // 0 without a driver or device, never throws

}  // namespace lwe::cuda
