// Device helpers shared by the CUDA kernels: 16-byte packs, tile loaders, the register-tiled
// dot-product micro-kernel and device properties.  The per-pair math itself lives only in
// lwengine/kernels/pair.h (included here) and lwengine/kernels/rs_step.h.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "check.h"
#include "launch.h"
#include "lwengine/common.h"
#include "lwengine/kernels/pair.h"

namespace lwe::cuda {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 256;   // every tile kernel: 16 x 16 threads
constexpr int kTileRows = 64;   // store / data rows per tile (4 per thread, stride 16)

// 16 bytes of T: loaded and stored as one 128-bit access.
template <class T>
struct alignas(16) Pack {
  static constexpr int n = 16 / sizeof(T);
  T v[n];
};

template <class T>
__host__ __device__ constexpr int pack_width() { return 16 / static_cast<int>(sizeof(T)); }

// 128-bit loads/stores through the native vector types (a Pack copy alone may be split into scalars).
__device__ __forceinline__ Pack<float> ld16(const float* p) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  return Pack<float>{{v.x, v.y, v.z, v.w}};
}
__device__ __forceinline__ Pack<double> ld16(const double* p) {
  const double2 v = *reinterpret_cast<const double2*>(p);
  return Pack<double>{{v.x, v.y}};
}
__device__ __forceinline__ void st16(float* p, const Pack<float>& v) {
  *reinterpret_cast<float4*>(p) = make_float4(v.v[0], v.v[1], v.v[2], v.v[3]);
}
__device__ __forceinline__ void st16(double* p, const Pack<double>& v) {
  *reinterpret_cast<double2*>(p) = make_double2(v.v[0], v.v[1]);
}

__host__ __device__ inline std::int64_t imin(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
__host__ __device__ inline std::int64_t round_up(std::int64_t a, std::int64_t m) { return (a + m - 1) / m * m; }

// Offsets read defensively: clamped to [lo, rows] so a malformed array cannot index out of bounds.
__device__ __forceinline__ std::int64_t load_offset(const std::int64_t* off, std::int64_t i, std::int64_t lo,
                                                    std::int64_t rows) {
  const std::int64_t v = off[i];
  return v < lo ? lo : (v > rows ? rows : v);
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
template <class T>
__device__ __forceinline__ T warp_sum_t(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Copies rows [row0, row0 + nvalid) x columns [k0, k0 + dc) of a row-major (., d) global array into
// s[r * ld + c] for r < tile_rows, c < dc (zeros outside the valid rows/columns), converting Src -> T.
// One warp per row (fixed warp <-> row mapping), lanes along the row: coalesced, no integer division.
// If norms != nullptr, norms[r] (+)= sum_c v[r, c]^2 in N for this column slice (first: overwrite),
// v the unscaled values.  screen_gamma > 0 stores lwe::screen_coord(v, screen_gamma) instead of v
// (the float32 screening form's query coordinates, lwengine/kernels/pair.h).
template <class T, class Src, class N>
__device__ __forceinline__ void load_rows(T* __restrict__ s, int ld, int tile_rows, const Src* __restrict__ g,
                                          std::int64_t row0, int nvalid, int d, int k0, int dc, bool vec_ok,
                                          N* __restrict__ norms, bool first, double screen_gamma = 0.0) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  constexpr int V = pack_width<T>();
  const bool screen = screen_gamma > 0.0;
  for (int r = warp; r < tile_rows; r += nwarps) {
    N sq = N(0);
    T* srow = s + static_cast<std::int64_t>(r) * ld;
    const bool valid = r < nvalid;
    const Src* grow = g + (row0 + r) * static_cast<std::int64_t>(d) + k0;
    bool done = false;
    if constexpr (sizeof(Src) == sizeof(T)) {
      if (vec_ok) {  // d, k0, dc multiples of V and a 16-byte aligned base
        for (int c = lane * V; c < dc; c += 32 * V) {
          Pack<T> p;
          if (valid) {
            p = ld16(grow + c);
          } else {
#pragma unroll
            for (int e = 0; e < V; ++e) p.v[e] = T(0);
          }
#pragma unroll
          for (int e = 0; e < V; ++e) {
            sq += static_cast<N>(p.v[e]) * static_cast<N>(p.v[e]);
            if (screen) p.v[e] = static_cast<T>(lwe::screen_coord(static_cast<double>(p.v[e]), screen_gamma));
          }
          st16(srow + c, p);
        }
        done = true;
      }
    }
    if (!done) {
      for (int c = lane; c < dc; c += 32) {
        const T v = (valid && k0 + c < d) ? static_cast<T>(grow[c]) : T(0);
        sq += static_cast<N>(v) * static_cast<N>(v);
        srow[c] = screen ? static_cast<T>(lwe::screen_coord(static_cast<double>(v), screen_gamma)) : v;
      }
    }
    if (norms != nullptr) {
      sq = warp_sum_t(sq);
      if (lane == 0) norms[r] = first ? sq : norms[r] + sq;
    }
  }
}

// 2^u on the device (ex2.approx.ftz.f32 under --use_fast_math): the float32 screening form's exp.
struct DeviceExp2 {
  __device__ __forceinline__ float operator()(float u) const { return exp2f(u); }
};

// Register-tiled dot products of a (16*RQ)-row tile sQ and a 64-row tile sS over dc columns:
// thread (qg, sg) owns rows a_i = qg + 16 i and b_j = sg + 16 j.  Both tiles zero-padded to dc
// (a multiple of the pack width) and laid out with a row stride ld (ld*sizeof(T) % 16 == 0).
template <class T, int RQ>
__device__ __forceinline__ void tile_dots(const T* __restrict__ sQ, const T* __restrict__ sS, int ld, int dc, int qg,
                                          int sg, T (&acc)[RQ][4]) {
  constexpr int V = pack_width<T>();
  const T* qp = sQ + qg * ld;
  const T* sp = sS + sg * ld;
#pragma unroll 1
  for (int k = 0; k < dc; k += V) {
    Pack<T> qv[RQ], sv[4];
#pragma unroll
    for (int i = 0; i < RQ; ++i) qv[i] = ld16(qp + i * 16 * ld + k);
#pragma unroll
    for (int j = 0; j < 4; ++j) sv[j] = ld16(sp + j * 16 * ld + k);
#pragma unroll
    for (int e = 0; e < V; ++e)
#pragma unroll
      for (int i = 0; i < RQ; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fma(qv[i].v[e], sv[j].v[e], acc[i][j]);
  }
}

// Device properties needed for launch sizing, cached per device.
struct DeviceProps {
  int sms = 0;
  int smem_optin = 0;  // max dynamic shared memory per block after cudaFuncSetAttribute
};
DeviceProps device_props(int device);

// Sets the dynamic shared-memory limit of `kernel` and returns its resident blocks per SM.
template <class K>
int prepare_kernel(K kernel, std::size_t smem, const char* name) {
  LWE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
                 name);
  int blocks = 0;
  LWE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, smem), name);
  if (blocks < 1) throw std::runtime_error(std::string("lwengine CUDA: ") + name + " cannot be resident on this device");
  return blocks;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

}  // namespace lwe::cuda
