// zx_moments (C = mean_j k(z_i, x_j), T = mean_j k(z_i, x_j) x_j) and the reduced-set step.
//
// zx_moments streams x in 64-row tiles; never holds K x n.  Grid (P, column chunks, z chunks):
// block (p, cy, cz) owns z rows [16*RQ*cz, ...) and T columns [64*cy, ...), and takes x tiles
// p, p + P, ...  Per tile: stage A = tile_dots (z chunk x x tile), k_ij = gauss(sqdist) into shared
// memory; stage B = k_ij x_jc summed over the tile's rows in T precision, then added to float64
// register accumulators.  Each block writes its partial sums to a workspace; a second kernel adds
// the P partials in a fixed order (deterministic; no floating-point atomics) and divides by n.
#include "common.cuh"
#include "lwengine/kernels/rs_step.h"

namespace lwe::cuda {
namespace {

constexpr int kCols = 64;  // T columns per block

template <class T>
struct ZxArgs {
  const double* z;
  const T* x;
  std::int64_t K, n;
  int d, dc, ld, ldk;  // ld: x/z tile row stride; ldk: k-tile row stride
  bool x_vec;
  T gamma;
  std::int64_t ntiles;
  double* ws;  // (P, K, d + 1): columns [0, d) = T partials, column d = C partials
};

template <class T, int RQ>
std::size_t zx_smem_bytes(int ld, int ldk) {
  constexpr int TQ = 16 * RQ;
  return sizeof(T) * (static_cast<std::size_t>(TQ + kTileRows) * ld + static_cast<std::size_t>(kTileRows) * ldk +
                      TQ + kTileRows) + 16;
}

template <class T, int RQ, bool WITH_T>
__global__ void __launch_bounds__(kThreads, 1) zx_kernel(const ZxArgs<T> a) {
  constexpr int TQ = 16 * RQ, TS = kTileRows, V = pack_width<T>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [TQ][ld] z chunk
  T* sS = sQ + TQ * a.ld;                  // [TS][ld] x tile
  T* sK = sS + TS * a.ld;                  // [TS][ldk] k(z_a, x_b) at sK[b * ldk + a]
  T* sQn = sK + TS * a.ldk;                // [TQ]
  T* sSn = sQn + TQ;                       // [TS]

  const int tid = threadIdx.x, qg = tid & 15, sg = tid >> 4;
  const int P = gridDim.x, p = blockIdx.x;
  const int c0 = blockIdx.y * kCols;
  const std::int64_t za = static_cast<std::int64_t>(blockIdx.z) * TQ;
  const int nzv = static_cast<int>(imin(TQ, a.K - za));
  const int nk = (a.d + a.dc - 1) / a.dc;
  // stage B reads columns [c0, c0 + 64) of the x tile: in place when one slice holds all of d
  const int col_base = nk == 1 ? c0 : 0;

  double dacc[RQ][4], csum[RQ];
#pragma unroll
  for (int i = 0; i < RQ; ++i) {
    csum[i] = 0.0;
#pragma unroll
    for (int t = 0; t < 4; ++t) dacc[i][t] = 0.0;
  }
  bool z_resident = false;

  for (std::int64_t tile = p; tile < a.ntiles; tile += P) {
    const std::int64_t r0 = tile * TS;
    const int nsv = static_cast<int>(imin(TS, a.n - r0));
    T acc[RQ][4];
#pragma unroll
    for (int i = 0; i < RQ; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
    for (int kc = 0; kc < nk; ++kc) {
      const int k0 = kc * a.dc;
      const int dck = static_cast<int>(imin(a.dc, round_up(a.d - k0, V)));
      __syncthreads();  // previous users of sQ / sS are done
      if (nk > 1 || !z_resident) load_rows(sQ, a.ld, TQ, a.z, za, nzv, a.d, k0, dck, false, sQn, kc == 0);
      load_rows(sS, a.ld, TS, a.x, r0, nsv, a.d, k0, dck, a.x_vec, sSn, kc == 0);
      __syncthreads();
      tile_dots<T, RQ>(sQ, sS, a.ld, dck, qg, sg, acc);
    }
    z_resident = nk == 1;

    // stage A epilogue: k values of the valid pairs (zeros elsewhere)
#pragma unroll
    for (int i = 0; i < RQ; ++i) {
      const int ai = qg + 16 * i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int b = sg + 16 * j;
        const T kv = lwe::gauss_from_sqdist(lwe::sqdist_expanded(sQn[ai], sSn[b], acc[i][j]), a.gamma);
        sK[b * a.ldk + ai] = (ai < nzv && b < nsv) ? kv : T(0);
      }
    }
    if (WITH_T && nk > 1) {
      __syncthreads();  // all tile_dots reads of sS are done
      const int ncol = static_cast<int>(imin(kCols, round_up(a.d - c0, V)));
      load_rows(sS, a.ld, TS, a.x, r0, nsv, a.d, c0, ncol, a.x_vec, static_cast<T*>(nullptr), false);
    }
    __syncthreads();

    // stage B: csum_i += sum_b k_ib, T_i,c += sum_b k_ib x_bc for c = c0 + 4 sg + t
    T tacc[RQ][4], cs[RQ];
#pragma unroll
    for (int i = 0; i < RQ; ++i) {
      cs[i] = T(0);
#pragma unroll
      for (int t = 0; t < 4; ++t) tacc[i][t] = T(0);
    }
#pragma unroll 4
    for (int b = 0; b < TS; ++b) {
      T kv[RQ];
#pragma unroll
      for (int i = 0; i < RQ; ++i) {
        kv[i] = sK[b * a.ldk + qg + 16 * i];
        cs[i] += kv[i];
      }
      if (WITH_T) {
        T xv[4];
        const T* xp = sS + b * a.ld + col_base + 4 * sg;
#pragma unroll
        for (int h = 0; h < 4; h += V) {
          const Pack<T> pk = ld16(xp + h);
#pragma unroll
          for (int e = 0; e < V; ++e) xv[h + e] = pk.v[e];
        }
#pragma unroll
        for (int i = 0; i < RQ; ++i)
#pragma unroll
          for (int t = 0; t < 4; ++t) tacc[i][t] = fma(kv[i], xv[t], tacc[i][t]);
      }
    }
#pragma unroll
    for (int i = 0; i < RQ; ++i) {
      csum[i] += static_cast<double>(cs[i]);
#pragma unroll
      for (int t = 0; t < 4; ++t) dacc[i][t] += static_cast<double>(tacc[i][t]);
    }
  }

  // this block's partial sums -> workspace (each entry written by exactly one thread)
  const std::int64_t ldw = a.d + 1;
  double* w = a.ws + static_cast<std::int64_t>(p) * a.K * ldw;
#pragma unroll
  for (int i = 0; i < RQ; ++i) {
    const int ai = qg + 16 * i;
    if (ai >= nzv) continue;
    double* wrow = w + (za + ai) * ldw;
    if (blockIdx.y == 0 && sg == 0) wrow[a.d] = csum[i];
    if (WITH_T) {
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        const int col = c0 + 4 * sg + t;
        if (col < a.d && 4 * sg + t < kCols) wrow[col] = dacc[i][t];
      }
    }
  }
}

// C[i] = sum_p ws[p, i, d] / n; T[i, c] = sum_p ws[p, i, c] / n (fixed order over p).
__global__ void zx_finish_kernel(const double* ws, int P, std::int64_t K, int d, std::int64_t n, double* C, double* T) {
  const std::int64_t ldw = d + 1;
  const std::int64_t total = K * ldw;
  const double inv_n = 1.0 / static_cast<double>(n);
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i = e / ldw;
    const int c = static_cast<int>(e - i * ldw);
    if (c < d && T == nullptr) continue;
    double s = 0.0;
    for (int q = 0; q < P; ++q) s += ws[static_cast<std::int64_t>(q) * total + e];
    if (c == d) C[i] = s * inv_n;
    else T[i * d + c] = s * inv_n;
  }
}

template <class T, int RQ, bool WITH_T>
void launch_zx(const double* z, std::int64_t K, const T* x, std::int64_t n, std::int64_t d, double gamma, double* C,
               double* Tout, int device, cudaStream_t stream, const char* name) {
  constexpr int V = pack_width<T>();
  constexpr int TQ = 16 * RQ;
  const DeviceProps props = device_props(device);
  const std::size_t budget = std::min<std::size_t>(props.smem_optin, 200 * 1024);
  ZxArgs<T> a{};
  a.z = z;
  a.x = x;
  a.K = K;
  a.n = n;
  a.d = static_cast<int>(d);
  a.gamma = static_cast<T>(gamma);
  a.x_vec = d % V == 0 && aligned16(x);
  a.ldk = TQ + ((RQ % 2 == 0) ? 16 : 0) + (sizeof(T) == 8 ? 2 : 0);  // stagger half-warps across banks
  const int full = static_cast<int>(round_up(d, V));
  // x tile rows must hold the 64 columns stage B reads, even when d < 64
  auto ld_for = [&](int dc) { return std::max(dc, kCols) + V; };
  if (zx_smem_bytes<T, RQ>(ld_for(full), a.ldk) <= budget) {
    a.dc = full;
  } else {
    a.dc = 64;
    while (zx_smem_bytes<T, RQ>(ld_for(a.dc + 64), a.ldk) <= budget) a.dc += 64;
  }
  a.ld = ld_for(a.dc);
  const std::size_t smem = zx_smem_bytes<T, RQ>(a.ld, a.ldk);
  auto kernel = zx_kernel<T, RQ, WITH_T>;
  const int per_sm = prepare_kernel(kernel, smem, name);
  const std::int64_t zchunks = (K + TQ - 1) / TQ;
  const std::int64_t cchunks = WITH_T ? (d + kCols - 1) / kCols : 1;
  if (zchunks > 65535 || cchunks > 65535) throw_arg(std::string(name) + ": K or d too large for one launch");
  a.ntiles = (n + kTileRows - 1) / kTileRows;
  const std::int64_t capacity = static_cast<std::int64_t>(per_sm) * props.sms;
  const std::int64_t P = std::max<std::int64_t>(1, std::min<std::int64_t>(a.ntiles, capacity / (zchunks * cchunks)));
  const std::size_t ws_bytes = sizeof(double) * static_cast<std::size_t>(P * K * (d + 1));
  void* ws = nullptr;
  LWE_CUDA_CHECK(cudaMallocAsync(&ws, ws_bytes, stream), "zx_moments workspace (cudaMallocAsync)");
  a.ws = static_cast<double*>(ws);
  const dim3 grid(static_cast<unsigned>(P), static_cast<unsigned>(cchunks), static_cast<unsigned>(zchunks));
  kernel<<<grid, kThreads, smem, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) {
    const std::int64_t total = K * (d + 1);
    const unsigned fblocks = static_cast<unsigned>(std::min<std::int64_t>((total + 255) / 256, 4 * props.sms));
    zx_finish_kernel<<<fblocks, 256, 0, stream>>>(a.ws, static_cast<int>(P), K, a.d, n, C, Tout);
    err = cudaGetLastError();
  }
  const cudaError_t free_err = cudaFreeAsync(ws, stream);
  if (err != cudaSuccess) throw_cuda(err, name);
  LWE_CUDA_CHECK(free_err, "zx_moments workspace (cudaFreeAsync)");
}

template <class T, bool WITH_T>
void dispatch_zx(const double* z, std::int64_t K, const void* x, std::int64_t n, std::int64_t d, double gamma,
                 double* C, double* Tout, int device, cudaStream_t stream, const char* name) {
  const T* xt = static_cast<const T*>(x);
  // float64 holds fewer z rows per block (register budget of the float64 accumulators)
  const std::int64_t rq = std::min<std::int64_t>((K + 15) / 16, sizeof(T) == 4 ? 8 : 4);
  switch (rq) {
    case 1: return launch_zx<T, 1, WITH_T>(z, K, xt, n, d, gamma, C, Tout, device, stream, name);
    case 2: return launch_zx<T, 2, WITH_T>(z, K, xt, n, d, gamma, C, Tout, device, stream, name);
    case 3: return launch_zx<T, 3, WITH_T>(z, K, xt, n, d, gamma, C, Tout, device, stream, name);
    default: break;
  }
  if constexpr (sizeof(T) == 8) {
    return launch_zx<T, 4, WITH_T>(z, K, xt, n, d, gamma, C, Tout, device, stream, name);
  } else {
    switch (rq) {
      case 4: return launch_zx<T, 4, WITH_T>(z, K, xt, n, d, gamma, C, Tout, device, stream, name);
      case 5: return launch_zx<T, 5, WITH_T>(z, K, xt, n, d, gamma, C, Tout, device, stream, name);
      case 6: return launch_zx<T, 6, WITH_T>(z, K, xt, n, d, gamma, C, Tout, device, stream, name);
      case 7: return launch_zx<T, 7, WITH_T>(z, K, xt, n, d, gamma, C, Tout, device, stream, name);
      default: return launch_zx<T, 8, WITH_T>(z, K, xt, n, d, gamma, C, Tout, device, stream, name);
    }
  }
}

// ---------------------------------------------------------------- reduced-set step
// One block per row i: w_j = beta_j k(z_i, z_j) in shared memory (chunks of kStepChunk), then
// wsum_i = sum_j w_j and wz_ic = sum_j w_j z_jc in fixed orders, and lwe::rs_step_coord per column.
constexpr int kStepThreads = 128;
constexpr int kStepChunk = 1024;


// Sum of one double per thread over a kStepThreads block, in a fixed order (deterministic); the result
// is left in *out (shared) and returned to every thread.
__device__ __forceinline__ double block_sum_into(double v, double* sRed, double* out, int lane, int warp,
                                                 int tid) {
  v = warp_sum(v);
  if (lane == 0) sRed[warp] = v;
  __syncthreads();
  if (tid == 0) {
    double s = 0.0;
    for (int w = 0; w < kStepThreads / 32; ++w) s += sRed[w];
    *out = s;
  }
  __syncthreads();
  return *out;
}

__global__ void __launch_bounds__(kStepThreads) rs_step_kernel(const double* z, const double* beta, const double* C,
                                                               const double* Tm, std::int64_t K, int d, double gamma,
                                                               double step, double t1_factor, double* out) {
  __shared__ double sW[kStepChunk];
  __shared__ double sRed[kStepThreads / 32];
  __shared__ double sNi;
  const std::int64_t i = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const double* zi = z + i * d;

  double part = 0.0;
  for (int c = tid; c < d; c += kStepThreads) part += zi[c] * zi[c];
  const double ni = block_sum_into(part, sRed, &sNi, lane, warp, tid);

  double wsum_part = 0.0;
  // each thread accumulates wz for columns c = tid + 128 m; at most 8 register slots, rest re-looped
  for (int cbase = 0; cbase < d; cbase += 8 * kStepThreads) {
    double wz[8];
#pragma unroll
    for (int m = 0; m < 8; ++m) wz[m] = 0.0;
    for (std::int64_t j0 = 0; j0 < K; j0 += kStepChunk) {
      const int nj = static_cast<int>(imin(kStepChunk, K - j0));
      __syncthreads();
      for (int jj = tid; jj < nj; jj += kStepThreads) {
        const double* zj = z + (j0 + jj) * d;
        double dot = 0.0, nj2 = 0.0;
        for (int c = 0; c < d; ++c) {
          dot += zi[c] * zj[c];
          nj2 += zj[c] * zj[c];
        }
        const double w = beta[j0 + jj] * lwe::gauss_from_sqdist(lwe::sqdist_gram(ni, nj2, dot), gamma);
        sW[jj] = w;
        if (cbase == 0) wsum_part += w;
      }
      __syncthreads();
#pragma unroll
      for (int m = 0; m < 8; ++m) {
        const int c = cbase + tid + m * kStepThreads;
        if (c < d) {
          double s = wz[m];
          for (int jj = 0; jj < nj; ++jj) s += sW[jj] * z[(j0 + jj) * d + c];
          wz[m] = s;
        }
      }
    }
    if (cbase == 0) {
      __syncthreads();  // sRed / sNi are free again
      block_sum_into(wsum_part, sRed, &sNi, lane, warp, tid);  // wsum_i
    }
    const double wsum = sNi;
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const int c = cbase + tid + m * kStepThreads;
      if (c < d)
        out[i * d + c] = lwe::rs_step_coord(zi[c], wsum, wz[m], C[i], Tm[i * d + c], beta[i], gamma, step, t1_factor);
    }
  }
}

}  // namespace

void zx_moments(DType x_dt, const double* z, std::int64_t K, const void* x, std::int64_t n, std::int64_t d,
                double gamma, double* C, double* T, int device, cudaStream_t stream) {
  if (K < 1) throw_arg("z must have at least one row, got K = " + std::to_string(K));
  if (n < 1) throw_arg("x must have at least one row, got n = " + std::to_string(n));
  if (d < 1 || d > (1 << 20)) throw_arg("d must be in [1, 2^20], got " + std::to_string(d));
  if (!(gamma > 0.0) || !(gamma < 1e308)) throw_arg("gamma must be a finite positive number");
  if (z == nullptr || x == nullptr || C == nullptr) throw_arg("z, x and C must not be null");
  DeviceGuard guard(device);
  if (x_dt == DType::f32) {
    if (T) dispatch_zx<float, true>(z, K, x, n, d, gamma, C, T, device, stream, "zx_moments (float32)");
    else dispatch_zx<float, false>(z, K, x, n, d, gamma, C, T, device, stream, "zx_moments (float32)");
  } else {
    if (T) dispatch_zx<double, true>(z, K, x, n, d, gamma, C, T, device, stream, "zx_moments (float64)");
    else dispatch_zx<double, false>(z, K, x, n, d, gamma, C, T, device, stream, "zx_moments (float64)");
  }
}

void rs_step_from_moments(const double* z, const double* beta, const double* C, const double* T, std::int64_t K,
                          std::int64_t d, double gamma, double step, double t1_factor, double* out, int device,
                          cudaStream_t stream) {
  if (K < 1) throw_arg("z must have at least one row, got K = " + std::to_string(K));
  if (d < 1 || d > (1 << 20)) throw_arg("d must be in [1, 2^20], got " + std::to_string(d));
  if (K > 0x7fffffff) throw_arg("K too large for one launch");
  if (!(gamma > 0.0) || !(gamma < 1e308)) throw_arg("gamma must be a finite positive number");
  if (!z || !beta || !C || !T || !out) throw_arg("z, beta, C, T and out must not be null");
  DeviceGuard guard(device);
  rs_step_kernel<<<static_cast<unsigned>(K), kStepThreads, 0, stream>>>(z, beta, C, T, K, static_cast<int>(d), gamma,
                                                                          step, t1_factor, out);
  LWE_CUDA_LAUNCH_CHECK("rs_step_from_moments");
}

}  // namespace lwe::cuda
