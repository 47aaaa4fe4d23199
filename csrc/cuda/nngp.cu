// CUDA ConvNet-NNGP kernel: one block per image (prep) or per pair (cross), the maps in shared
// memory, the per-pixel math from lwengine/kernels/nngp.h (the same functions as the CPU path).
#include <cuda_runtime.h>

#include <cstdint>

#include "check.h"
#include "lwengine/kernels/nngp.h"
#include "nngp_launch.h"

namespace lwe::cuda {
namespace {

using namespace lwe::nngp;
constexpr int kThreads = 256;
constexpr int kPix = kWidth * kWidth;

template <class T>
__device__ void pool_into(const T* b, T* a, int S) {
  const int H = S / 2;
  for (int p = threadIdx.x; p < H * H; p += blockDim.x) a[p] = pool_px(b, S, p / H, p % H);
}

template <class T>
__global__ void prep_kernel(const T* __restrict__ x, std::int64_t N, std::int64_t C, int depth, T* __restrict__ prep,
                            T* __restrict__ self) {
  __shared__ T a[kPix], b[kPix];
  const std::int64_t i = blockIdx.x;
  if (i >= N) return;
  const T* xi = x + i * C * kPix;
  for (int p = threadIdx.x; p < kPix; p += blockDim.x) {
    T s = T(0);
    for (std::int64_t c = 0; c < C; ++c) s += xi[c * kPix + p] * xi[c * kPix + p];
    a[p] = s / T(C);
  }
  __syncthreads();
  T* pi_ = prep + i * prep_len(depth);
  for (int l = 0; l < depth; ++l) {
    const int S = level_size(l);
    T* lev = pi_ + level_offset(l);
    for (int p = threadIdx.x; p < S * S; p += blockDim.x) {
      const T v = conv3_px(a, S, p / S, p % S);
      lev[p] = v;
      b[p] = v / T(2);
    }
    __syncthreads();
    pool_into(b, a, S);
    __syncthreads();
  }
  if (threadIdx.x == 0) self[i] = final_box(a, level_size(depth));
}

template <class T>
__global__ void cross_kernel(const T* __restrict__ x, const T* __restrict__ px, std::int64_t N1,
                             const T* __restrict__ y, const T* __restrict__ py, std::int64_t N2, std::int64_t C,
                             int depth, const T* __restrict__ self, T* __restrict__ out) {
  __shared__ T a[kPix], b[kPix];
  const std::int64_t q = blockIdx.x;
  if (q >= N1 * N2) return;
  const std::int64_t i = q / N2, j = q % N2;
  if (self != nullptr && i == j) {
    if (threadIdx.x == 0) out[q] = self[i];
    return;
  }
  const int plen = prep_len(depth);
  const T* xi = x + i * C * kPix;
  const T* yj = y + j * C * kPix;
  for (int p = threadIdx.x; p < kPix; p += blockDim.x) {
    T s = T(0);
    for (std::int64_t c = 0; c < C; ++c) s += xi[c * kPix + p] * yj[c * kPix + p];
    a[p] = s / T(C);
  }
  __syncthreads();
  for (int l = 0; l < depth; ++l) {
    const int S = level_size(l);
    const T* vx = px + i * plen + level_offset(l);
    const T* vy = py + j * plen + level_offset(l);
    for (int p = threadIdx.x; p < S * S; p += blockDim.x)
      b[p] = relu_px<T, double>(conv3_px(a, S, p / S, p % S), vx[p], vy[p]);
    __syncthreads();
    pool_into(b, a, S);
    __syncthreads();
  }
  if (threadIdx.x == 0) out[q] = final_box(a, level_size(depth));
}

template <class T>
void prep_t(const void* x, std::int64_t N, std::int64_t C, int depth, void* prep, void* self, int device,
            cudaStream_t stream) {
  DeviceGuard guard(device);
  if (N == 0) return;
  prep_kernel<T><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
      static_cast<const T*>(x), N, C, depth, static_cast<T*>(prep), static_cast<T*>(self));
  LWE_CUDA_LAUNCH_CHECK("nngp_prep kernel launch");
}

template <class T>
void cross_t(const void* x, const void* px, std::int64_t N1, const void* y, const void* py, std::int64_t N2,
             std::int64_t C, int depth, const void* self, void* out, int device, cudaStream_t stream) {
  DeviceGuard guard(device);
  const std::int64_t total = N1 * N2;
  if (total == 0) return;
  if (total > 0x7fffffffLL) throw_arg("nngp_cross: N1 * N2 must be below 2^31 pairs per call");
  cross_kernel<T><<<static_cast<unsigned>(total), kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(px), N1, static_cast<const T*>(y), static_cast<const T*>(py),
      N2, C, depth, static_cast<const T*>(self), static_cast<T*>(out));
  LWE_CUDA_LAUNCH_CHECK("nngp_cross kernel launch");
}

}  // namespace

void nngp_prep(DType dt, const void* x, std::int64_t N, std::int64_t C, int depth, void* prep, void* self, int device,
               cudaStream_t stream) {
  if (depth < 1 || depth > kMaxDepth) throw_arg("depth must be in 1..5");
  if (dt == DType::f32)
    prep_t<float>(x, N, C, depth, prep, self, device, stream);
  else
    prep_t<double>(x, N, C, depth, prep, self, device, stream);
}

void nngp_cross(DType dt, const void* x, const void* px, std::int64_t N1, const void* y, const void* py,
                std::int64_t N2, std::int64_t C, int depth, const void* self, void* out, int device,
                cudaStream_t stream) {
  if (depth < 1 || depth > kMaxDepth) throw_arg("depth must be in 1..5");
  if (dt == DType::f32)
    cross_t<float>(x, px, N1, y, py, N2, C, depth, self, out, device, stream);
  else
    cross_t<double>(x, px, N1, y, py, N2, C, depth, self, out, device, stream);
}

}  // namespace lwe::cuda
