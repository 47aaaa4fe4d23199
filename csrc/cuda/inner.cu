// cross_inner / self_inner / gram: sum_a sum_b qbeta_a beta_b k(qz_a, z_b) per (query spec, store spec).
//
// One persistent kernel.  A block owns a chunk of consecutive store specs (cross) or one spec
// (self) and streams the chunk's rows in flat 64-row tiles that ignore spec boundaries, so specs
// of any size waste no padding.  The query is held in shared memory as chunks of one query spec
// (<= 16*RQ rows; resident across tiles and chunks when d fits one column slice).  Per tile:
//   1. tile_dots: register-tiled FMA dot products (each thread 4 store rows x RQ query rows);
//   2. pair value from lwengine/kernels/pair.h (float64: the reference form; float32: the screening
//      form, query coordinates scaled at load time, norms in float64), weighted by the query beta,
//      summed over the thread's query rows, then over the 16 threads sharing a store row
//      (half-warp shuffles, float64) -> v_b = sum_a qbeta_a k(a, b);
//   3. warp 0 adds beta_b v_b into per-spec float64 accumulators with a segmented warp scan keyed
//      by the row's spec (rows are sorted by spec).  No atomics: deterministic.
#include "common.cuh"

namespace lwe::cuda {
namespace {

constexpr int kMaxChunkSpecs = 512;

template <class T>
struct InnerArgs {
  const T* qz;
  const double* qbeta;
  const std::int64_t* qoff;
  std::int64_t nq, qrows;
  const T* z;
  const double* beta;
  const std::int64_t* off;
  std::int64_t ns, rows;
  int d, dc, ld;
  bool q_vec, s_vec;
  T gamma;
  double gamma_d;
  int specs_per_chunk;
  std::int64_t nchunks;
  double* out;
};

template <class T, int RQ>
struct InnerLayout {
  static constexpr int TQ = 16 * RQ;
  static constexpr std::size_t tiles_offset() {
    return (sizeof(double) * (kMaxChunkSpecs + 3 * kTileRows + TQ) + sizeof(int) * kTileRows + sizeof(T) * TQ + 15) /
           16 * 16;
  }
  // bytes of dynamic shared memory for a row stride ld (elements)
  static std::size_t bytes(int ld) {
    return tiles_offset() + sizeof(T) * static_cast<std::size_t>(TQ + kTileRows) * ld;
  }
};

// Largest spec j in [s0, s1) with off[j] <= r (rows sorted by spec), as j - s0.
__device__ __forceinline__ int spec_of_row(const std::int64_t* off, std::int64_t s0, std::int64_t s1, std::int64_t r,
                                           std::int64_t rows) {
  std::int64_t lo = s0, hi = s1 - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) >> 1;
    if (load_offset(off, mid, 0, rows) <= r) lo = mid; else hi = mid - 1;
  }
  return static_cast<int>(lo - s0);
}

template <class T, int RQ, bool SELF>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? 2 : 1) inner_kernel(const InnerArgs<T> a) {
  constexpr int TQ = 16 * RQ, TS = kTileRows;
  constexpr bool kF32 = sizeof(T) == 4;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  double* sAcc = reinterpret_cast<double*>(smem_raw);  // [kMaxChunkSpecs]
  double* sSb = sAcc + kMaxChunkSpecs;                // [TS] store beta
  double* sV = sSb + TS;                              // [TS] v_b
  double* sQn = sV + TS;                              // [TQ] query squared norms (float64)
  double* sSn = sQn + TQ;                             // [TS] store squared norms (float64)
  int* sKey = reinterpret_cast<int*>(sSn + TS);       // [TS] spec of row (-1: padding)
  T* sQb = reinterpret_cast<T*>(sKey + TS);           // [TQ] query beta
  // byte offset of the tiles, a compile-time multiple of 16 (plain pointer arithmetic on the shared
  // base keeps the address space visible to the compiler: LDS/STS rather than generic LD/ST)
  constexpr std::size_t kTilesAt = InnerLayout<T, RQ>::tiles_offset();
  T* sQ = reinterpret_cast<T*>(smem_raw + kTilesAt);
  T* sS = sQ + TQ * a.ld;

  const int tid = threadIdx.x, qg = tid & 15, sg = tid >> 4, lane = tid & 31, warp = tid >> 5;
  const int nk = (a.d + a.dc - 1) / a.dc;
  constexpr int V = pack_width<T>();
  std::int64_t resident_q = -1;  // first row of the query chunk held in sQ (single column slice only)

  for (int j = tid; j < kMaxChunkSpecs; j += kThreads) sAcc[j] = 0.0;

  for (std::int64_t c = blockIdx.x; c < a.nchunks; c += gridDim.x) {
    const std::int64_t s0 = SELF ? c : c * a.specs_per_chunk;
    const std::int64_t s1 = SELF ? c + 1 : imin(s0 + a.specs_per_chunk, a.ns);
    const std::int64_t R0 = load_offset(a.off, s0, 0, a.rows);
    const std::int64_t R1 = load_offset(a.off, s1, R0, a.rows);
    const std::int64_t q_begin = SELF ? c : 0, q_end = SELF ? c + 1 : a.nq;

    for (std::int64_t q = q_begin; q < q_end; ++q) {
      const std::int64_t qa0 = SELF ? R0 : load_offset(a.qoff, q, 0, a.qrows);
      const std::int64_t qa1 = SELF ? R1 : load_offset(a.qoff, q + 1, qa0, a.qrows);
      for (std::int64_t qa = qa0; qa < qa1; qa += TQ) {
        const int nqv = static_cast<int>(imin(TQ, qa1 - qa));
        for (std::int64_t r0 = R0; r0 < R1; r0 += TS) {
          const bool load_q = nk > 1 || resident_q != qa;
          const int nsv = static_cast<int>(imin(TS, R1 - r0));
          __syncthreads();  // every thread is done with the previous tile's shared memory
          if (tid < TS) {
            const bool valid = tid < nsv;
            sSb[tid] = valid ? a.beta[r0 + tid] : 0.0;
            sKey[tid] = valid ? spec_of_row(a.off, s0, s1, r0 + tid, a.rows) : -1;
          }
          if (load_q && tid < TQ) sQb[tid] = tid < nqv ? static_cast<T>(a.qbeta[qa + tid]) : T(0);
          T acc[RQ][4];
#pragma unroll
          for (int i = 0; i < RQ; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
          for (int kc = 0; kc < nk; ++kc) {
            const int k0 = kc * a.dc;
            const int dck = static_cast<int>(imin(a.dc, round_up(a.d - k0, V)));
            if (kc > 0) __syncthreads();
            if (load_q)
              load_rows(sQ, a.ld, TQ, a.qz, qa, nqv, a.d, k0, dck, a.q_vec, sQn, kc == 0, kF32 ? a.gamma_d : 0.0);
            load_rows(sS, a.ld, TS, a.z, r0, nsv, a.d, k0, dck, a.s_vec, sSn, kc == 0);
            __syncthreads();
            tile_dots<T, RQ>(sQ, sS, a.ld, dck, qg, sg, acc);
          }
          if (nk == 1) resident_q = qa;

          // v_b = sum_a qbeta_a k(a, b): thread's query rows, then the 16 threads of the half-warp
          T nta[RQ];  // float32: -t_a of the screening form
          if constexpr (kF32) {
#pragma unroll
            for (int i = 0; i < RQ; ++i) nta[i] = -lwe::screen_term(sQn[qg + 16 * i], a.gamma_d);
          }
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int b = sg + 16 * j;
            T p = T(0);
            if constexpr (kF32) {
              const T tb = lwe::screen_term(sSn[b], a.gamma_d);
#pragma unroll
              for (int i = 0; i < RQ; ++i)
                p += sQb[qg + 16 * i] * lwe::screen_value(lwe::screen_finish(acc[i][j], nta[i], tb), DeviceExp2{});
            } else {
#pragma unroll
              for (int i = 0; i < RQ; ++i) {
                const int ai = qg + 16 * i;
                p += sQb[ai] * lwe::gauss_from_sqdist(lwe::sqdist_expanded(sQn[ai], sSn[b], acc[i][j]), a.gamma);
              }
            }
            double v = static_cast<double>(p);
#pragma unroll
            for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o, 16);
            if (qg == 0) sV[b] = v;
          }
          __syncthreads();

          // per-spec sums of beta_b v_b: segmented inclusive scan over the tile's rows (keys sorted)
          if (warp == 0) {
#pragma unroll
            for (int h = 0; h < TS; h += 32) {
              const int b = h + lane;
              const int key = sKey[b];
              double w = key >= 0 ? sSb[b] * sV[b] : 0.0;
#pragma unroll
              for (int o = 1; o < 32; o <<= 1) {
                const double y = __shfl_up_sync(kFullMask, w, o);
                const int ky = __shfl_up_sync(kFullMask, key, o);
                if (lane >= o && ky == key) w += y;
              }
              const int knext = __shfl_down_sync(kFullMask, key, 1);
              if (key >= 0 && (lane == 31 || knext != key)) sAcc[key] += w;
              __syncwarp();
            }
          }
        }
      }
      __syncthreads();  // warp 0's last update is visible
      const int nspec = static_cast<int>(s1 - s0);
      double* orow = SELF ? a.out + s0 : a.out + q * a.ns + s0;
      for (int j = tid; j < nspec; j += kThreads) {
        orow[j] = sAcc[j];
        sAcc[j] = 0.0;
      }
    }
  }
}

__global__ void mirror_upper_kernel(double* out, std::int64_t n) {
  const std::int64_t i = blockIdx.y * static_cast<std::int64_t>(blockDim.y) + threadIdx.y;
  const std::int64_t j = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < n && j < n && j < i) out[i * n + j] = out[j * n + i];
}

int pick_rq(std::int64_t max_rows) {
  if (max_rows <= 0) return 8;
  const std::int64_t rq = (max_rows + 15) / 16;
  return static_cast<int>(rq > 8 ? 8 : rq);
}

// Column slice width: all of d when the two tiles fit the shared-memory budget, else the widest
// multiple of 64 that does (the query is then re-read per slice).
template <class T, int RQ>
int pick_dc(std::int64_t d, std::size_t budget) {
  constexpr int V = pack_width<T>();
  const int full = static_cast<int>(round_up(d, V));
  if (InnerLayout<T, RQ>::bytes(full + V) <= budget) return full;
  int dc = 64;
  while (InnerLayout<T, RQ>::bytes(dc + 64 + V) <= budget) dc += 64;
  return dc;
}

template <class T, int RQ, bool SELF>
void launch_inner(const InnerArgs<T>& base, int device, cudaStream_t stream, const char* name) {
  InnerArgs<T> a = base;
  const DeviceProps props = device_props(device);
  constexpr int V = pack_width<T>();
  const std::size_t budget = std::min<std::size_t>(props.smem_optin, 110 * 1024);
  a.dc = pick_dc<T, RQ>(a.d, budget);
  a.ld = a.dc + V;  // one 16-byte pad per row against bank conflicts
  const std::size_t smem = InnerLayout<T, RQ>::bytes(a.ld);
  auto kernel = inner_kernel<T, RQ, SELF>;
  const int per_sm = prepare_kernel(kernel, smem, name);
  const std::int64_t capacity = static_cast<std::int64_t>(per_sm) * props.sms;
  if (SELF) {
    a.specs_per_chunk = 1;
    a.nchunks = a.ns;
  } else {
    // ~16 tiles of rows per chunk, but at least ~4 chunks per resident block
    const std::int64_t rows_per_spec = std::max<std::int64_t>(1, a.rows / std::max<std::int64_t>(a.ns, 1));
    std::int64_t spc = std::max<std::int64_t>(1, 16 * kTileRows / rows_per_spec);
    spc = std::min<std::int64_t>(spc, std::max<std::int64_t>(1, a.ns / (4 * capacity)));
    spc = std::min<std::int64_t>(spc, kMaxChunkSpecs);
    a.specs_per_chunk = static_cast<int>(spc);
    a.nchunks = (a.ns + spc - 1) / spc;
  }
  if (a.nchunks == 0) return;
  const std::int64_t grid = std::min<std::int64_t>(a.nchunks, capacity);
  kernel<<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(a);
  LWE_CUDA_LAUNCH_CHECK(name);
}

template <class T, bool SELF>
void dispatch_inner(const InnerArgs<T>& a, std::int64_t max_rows, int device, cudaStream_t stream, const char* name) {
  switch (pick_rq(max_rows)) {
    case 1: return launch_inner<T, 1, SELF>(a, device, stream, name);
    case 2: return launch_inner<T, 2, SELF>(a, device, stream, name);
    case 3: return launch_inner<T, 3, SELF>(a, device, stream, name);
    case 4: return launch_inner<T, 4, SELF>(a, device, stream, name);
    case 5: return launch_inner<T, 5, SELF>(a, device, stream, name);
    case 6: return launch_inner<T, 6, SELF>(a, device, stream, name);
    case 7: return launch_inner<T, 7, SELF>(a, device, stream, name);
    default: return launch_inner<T, 8, SELF>(a, device, stream, name);
  }
}

void check_store(const void* z, const double* beta, const std::int64_t* off, std::int64_t rows, std::int64_t n_specs,
                 std::int64_t d, const char* prefix) {
  const std::string p(prefix);
  if (rows < 0) throw_arg(p + "rows must be >= 0, got " + std::to_string(rows));
  if (n_specs < 0) throw_arg(p + "n_specs must be >= 0, got " + std::to_string(n_specs));
  if (d < 1 || d > (1 << 20)) throw_arg(p + "d must be in [1, 2^20], got " + std::to_string(d));
  if (off == nullptr) throw_arg(p + "offsets must not be null");
  if (rows > 0 && (z == nullptr || beta == nullptr)) throw_arg(p + "z and beta must not be null when rows > 0");
}

template <class T, bool SELF>
void run_inner(const void* q_z, const double* q_beta, const std::int64_t* q_off, std::int64_t q_rows, std::int64_t n_q,
               std::int64_t q_max_rows, const void* z, const double* beta, const std::int64_t* off, std::int64_t rows,
               std::int64_t n_specs, std::int64_t d, double gamma, double* out, int device, cudaStream_t stream,
               const char* name) {
  InnerArgs<T> a{};
  a.qz = static_cast<const T*>(q_z);
  a.qbeta = q_beta;
  a.qoff = q_off;
  a.nq = n_q;
  a.qrows = q_rows;
  a.z = static_cast<const T*>(z);
  a.beta = beta;
  a.off = off;
  a.ns = n_specs;
  a.rows = rows;
  a.d = static_cast<int>(d);
  a.gamma = static_cast<T>(gamma);
  a.gamma_d = gamma;
  a.out = out;
  constexpr int V = pack_width<T>();
  a.q_vec = d % V == 0 && aligned16(q_z);
  a.s_vec = d % V == 0 && aligned16(z);
  dispatch_inner<T, SELF>(a, q_max_rows, device, stream, name);
}

void check_gamma(double gamma) {
  if (!(gamma > 0.0) || !(gamma < 1e308)) throw_arg("gamma must be a finite positive number, got " + std::to_string(gamma));
}

}  // namespace

void cross_inner(DType dt, const void* q_z, const double* q_beta, const std::int64_t* q_offsets, std::int64_t q_rows,
                 std::int64_t n_q, std::int64_t q_max_rows, const void* z, const double* beta,
                 const std::int64_t* offsets, std::int64_t rows, std::int64_t n_specs, std::int64_t d, double gamma,
                 double* out, int device, cudaStream_t stream) {
  check_store(q_z, q_beta, q_offsets, q_rows, n_q, d, "q_");
  check_store(z, beta, offsets, rows, n_specs, d, "");
  check_gamma(gamma);
  if (n_q * n_specs > 0 && out == nullptr) throw_arg("out must not be null");
  if (n_q == 0 || n_specs == 0) return;
  DeviceGuard guard(device);
  if (dt == DType::f32)
    run_inner<float, false>(q_z, q_beta, q_offsets, q_rows, n_q, q_max_rows, z, beta, offsets, rows, n_specs, d, gamma,
                            out, device, stream, "cross_inner (float32)");
  else
    run_inner<double, false>(q_z, q_beta, q_offsets, q_rows, n_q, q_max_rows, z, beta, offsets, rows, n_specs, d,
                             gamma, out, device, stream, "cross_inner (float64)");
}

void self_inner(DType dt, const void* z, const double* beta, const std::int64_t* offsets, std::int64_t rows,
                std::int64_t n_specs, std::int64_t max_rows, std::int64_t d, double gamma, double* out, int device,
                cudaStream_t stream) {
  check_store(z, beta, offsets, rows, n_specs, d, "");
  check_gamma(gamma);
  if (n_specs > 0 && out == nullptr) throw_arg("out must not be null");
  if (n_specs == 0) return;
  DeviceGuard guard(device);
  if (dt == DType::f32)
    run_inner<float, true>(z, beta, offsets, rows, n_specs, max_rows, z, beta, offsets, rows, n_specs, d, gamma, out,
                           device, stream, "self_inner (float32)");
  else
    run_inner<double, true>(z, beta, offsets, rows, n_specs, max_rows, z, beta, offsets, rows, n_specs, d, gamma, out,
                            device, stream, "self_inner (float64)");
}

void gram(DType dt, const void* z, const double* beta, const std::int64_t* offsets, std::int64_t rows,
          std::int64_t n_specs, std::int64_t max_rows, std::int64_t d, double gamma, double* out, int device,
          cudaStream_t stream) {
  cross_inner(dt, z, beta, offsets, rows, n_specs, max_rows, z, beta, offsets, rows, n_specs, d, gamma, out, device,
              stream);
  if (n_specs < 2) return;
  DeviceGuard guard(device);
  const dim3 block(32, 8);
  const dim3 grid(static_cast<unsigned>((n_specs + 31) / 32), static_cast<unsigned>((n_specs + 7) / 8));
  if (grid.y > 65535) throw_arg("gram: n_specs too large for one launch (" + std::to_string(n_specs) + ")");
  mirror_upper_kernel<<<grid, block, 0, stream>>>(out, n_specs);
  LWE_CUDA_LAUNCH_CHECK("gram (mirror)");
}

}  // namespace lwe::cuda
