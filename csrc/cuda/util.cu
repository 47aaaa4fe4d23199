// Device properties, build information, device-side random fill and the ceiling microbenchmarks
// used by benchmarks/gpu_check.py (exp throughput, FFMA throughput, device-to-device copy).
#include <mutex>
#include <vector>

#include "common.cuh"

#ifndef LWE_CUDA_ARCHS_STR
#define LWE_CUDA_ARCHS_STR "unknown"
#endif

namespace lwe::cuda {

DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::f32;
  if (name == "float64") return DType::f64;
  throw_arg("dtype must be 'float32' or 'float64', got '" + name + "'");
}

DeviceProps device_props(int device) {
  static std::mutex mu;
  static std::vector<DeviceProps> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (device >= static_cast<int>(cache.size())) cache.resize(device + 1);
  DeviceProps& p = cache[device];
  if (p.sms == 0) {
    LWE_CUDA_CHECK(cudaDeviceGetAttribute(&p.sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    LWE_CUDA_CHECK(cudaDeviceGetAttribute(&p.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
                   "cudaDeviceGetAttribute");
  }
  return p;
}

BuildInfo build_info() {
  BuildInfo b;
  b.cuda_runtime_version = CUDART_VERSION;
  b.nvcc_major = __CUDACC_VER_MAJOR__;
  b.nvcc_minor = __CUDACC_VER_MINOR__;
  b.archs = LWE_CUDA_ARCHS_STR;
  b.driver_version = 0;
  if (cudaDriverGetVersion(&b.driver_version) != cudaSuccess) {
    b.driver_version = 0;
    (void)cudaGetLastError();
  }
  return b;
}

DeviceInfo device_info(int device) {
  cudaDeviceProp p{};
  LWE_CUDA_CHECK(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  DeviceInfo d;
  d.name = p.name;
  d.major = p.major;
  d.minor = p.minor;
  d.multiprocessors = p.multiProcessorCount;
  d.total_memory_bytes = static_cast<std::uint64_t>(p.totalGlobalMem);
  d.l2_cache_bytes = p.l2CacheSize;
  d.smem_per_block_optin = static_cast<std::uint64_t>(p.sharedMemPerBlockOptin);
  d.smem_per_multiprocessor = static_cast<std::uint64_t>(p.sharedMemPerMultiprocessor);
  d.memory_bus_width_bits = p.memoryBusWidth;
  if (cudaDeviceGetAttribute(&d.clock_khz, cudaDevAttrClockRate, device) != cudaSuccess) d.clock_khz = 0;
  if (cudaDeviceGetAttribute(&d.memory_clock_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess)
    d.memory_clock_khz = 0;
  (void)cudaGetLastError();
  return d;
}

namespace {

__device__ __forceinline__ std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <class T>
__global__ void fill_uniform_kernel(T* p, std::int64_t count, std::uint64_t seed, double lo, double span) {
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t h = splitmix64(seed * 0x632be59bd9b4e019ull + static_cast<std::uint64_t>(e));
    const double u = static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
    p[e] = static_cast<T>(lo + span * u);
  }
}

constexpr int kBenchChains = 8;
constexpr int kBenchIters = 4096;

__global__ void exp_bench_kernel(float* sink, float seed) {
  float v[kBenchChains];
#pragma unroll
  for (int c = 0; c < kBenchChains; ++c) v[c] = seed + 0.01f * (threadIdx.x & 31) + 0.1f * c;
  for (int it = 0; it < kBenchIters; ++it) {
#pragma unroll
    for (int c = 0; c < kBenchChains; ++c) v[c] = __expf(-v[c]);  // stays in (0, 1]
  }
  float s = 0.f;
#pragma unroll
  for (int c = 0; c < kBenchChains; ++c) s += v[c];
  if (s == 12345.678f) sink[0] = s;  // keeps the loop alive
}

__global__ void ffma_bench_kernel(float* sink, float seed) {
  float v[kBenchChains];
  const float m = 0.999999f, a = 1e-7f;
#pragma unroll
  for (int c = 0; c < kBenchChains; ++c) v[c] = seed + 0.5f * c + 0.001f * threadIdx.x;
  for (int it = 0; it < kBenchIters; ++it) {
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < kBenchChains; ++c) v[c] = fmaf(v[c], m, a);
  }
  float s = 0.f;
#pragma unroll
  for (int c = 0; c < kBenchChains; ++c) s += v[c];
  if (s == 12345.678f) sink[0] = s;
}

// Median-free simple timing: the kernel is long (tens of ms); one warm-up, then 3 timed runs, best kept.
template <class Launch>
float time_best_ms(Launch launch, const char* name) {
  cudaEvent_t e0, e1;
  LWE_CUDA_CHECK(cudaEventCreate(&e0), name);
  LWE_CUDA_CHECK(cudaEventCreate(&e1), name);
  float best = 0.f;
  try {
    launch();
    LWE_CUDA_CHECK(cudaDeviceSynchronize(), name);
    for (int r = 0; r < 3; ++r) {
      LWE_CUDA_CHECK(cudaEventRecord(e0), name);
      launch();
      LWE_CUDA_CHECK(cudaEventRecord(e1), name);
      LWE_CUDA_CHECK(cudaEventSynchronize(e1), name);
      float ms = 0.f;
      LWE_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1), name);
      if (r == 0 || ms < best) best = ms;
    }
  } catch (...) {
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    throw;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return best;
}

}  // namespace

void fill_uniform(DType dt, void* ptr, std::int64_t count, std::uint64_t seed, double lo, double hi, int device,
                  cudaStream_t stream) {
  if (count < 0) throw_arg("count must be >= 0");
  if (count == 0) return;
  if (ptr == nullptr) throw_arg("ptr must not be null");
  DeviceGuard guard(device);
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>((count + 255) / 256, 65536));
  if (dt == DType::f32)
    fill_uniform_kernel<float><<<blocks, 256, 0, stream>>>(static_cast<float*>(ptr), count, seed, lo, hi - lo);
  else
    fill_uniform_kernel<double><<<blocks, 256, 0, stream>>>(static_cast<double*>(ptr), count, seed, lo, hi - lo);
  LWE_CUDA_LAUNCH_CHECK("fill_uniform");
}

double bench_exp_rate(int device) {
  DeviceGuard guard(device);
  const DeviceProps p = device_props(device);
  float* sink = nullptr;
  LWE_CUDA_CHECK(cudaMalloc(&sink, sizeof(float)), "bench_exp (cudaMalloc)");
  const unsigned blocks = 8u * p.sms, threads = 256;
  float ms = 0.f;
  try {
    ms = time_best_ms([&] { exp_bench_kernel<<<blocks, threads>>>(sink, 0.5f); LWE_CUDA_LAUNCH_CHECK("bench_exp"); },
                      "bench_exp");
  } catch (...) {
    cudaFree(sink);
    throw;
  }
  cudaFree(sink);
  const double ops = static_cast<double>(blocks) * threads * kBenchIters * kBenchChains;
  return ops / (ms * 1e-3);
}

double bench_ffma_rate(int device) {
  DeviceGuard guard(device);
  const DeviceProps p = device_props(device);
  float* sink = nullptr;
  LWE_CUDA_CHECK(cudaMalloc(&sink, sizeof(float)), "bench_ffma (cudaMalloc)");
  const unsigned blocks = 8u * p.sms, threads = 256;
  float ms = 0.f;
  try {
    ms = time_best_ms([&] { ffma_bench_kernel<<<blocks, threads>>>(sink, 0.5f); LWE_CUDA_LAUNCH_CHECK("bench_ffma"); },
                      "bench_ffma");
  } catch (...) {
    cudaFree(sink);
    throw;
  }
  cudaFree(sink);
  const double flops = 2.0 * blocks * threads * kBenchIters * 4.0 * kBenchChains;
  return flops / (ms * 1e-3);
}

double bench_copy_rate(std::int64_t nbytes, int repeats, int device) {
  if (nbytes < 1 << 20) throw_arg("nbytes must be >= 1 MiB");
  if (repeats < 1) throw_arg("repeats must be >= 1");
  DeviceGuard guard(device);
  void *src = nullptr, *dst = nullptr;
  LWE_CUDA_CHECK(cudaMalloc(&src, nbytes), "bench_copy (cudaMalloc)");
  const cudaError_t dst_err = cudaMalloc(&dst, nbytes);
  if (dst_err != cudaSuccess) {
    cudaFree(src);
    throw_cuda(dst_err, "bench_copy (cudaMalloc)");
  }
  float ms = 0.f;
  try {
    fill_uniform(DType::f32, src, nbytes / 4, 1, -1.0, 1.0, device, 0);
    ms = time_best_ms(
        [&] {
          for (int r = 0; r < repeats; ++r) LWE_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice), "bench_copy");
        },
        "bench_copy");
  } catch (...) {
    cudaFree(src);
    cudaFree(dst);
    throw;
  }
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * static_cast<double>(nbytes) * repeats / (ms * 1e-3);
}

}  // namespace lwe::cuda
