// CPU kernels of _core: plain-pointer entry points (validated by the caller, csrc/bind/module.cpp).
// Every float64 result is accumulated in float64; float32 inputs are the bulk-screening path.
#pragma once
#include <cstdint>
#include <string>
#include "lwengine/common.h"

namespace lwe {

// ---- dispatch (dispatch.cpp)
// SIMD paths, widest last; the kernels are compiled once per path (kernels-inl.h, nngp-inl.h).
enum SimdPath : int { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };
bool cpu_has_avx2_fma();          // the CPU supports AVX2 and FMA
bool cpu_has_avx512();            // the CPU supports AVX-512 F, DQ, VL and BW (and the build has the path)
SimdPath simd_level();            // the path the next call takes (cap, CPU, LWE_DISABLE_AVX2/AVX512)
bool simd_enabled();              // simd_level() > kPortable
void set_simd(bool enabled);      // user toggle: the widest path, or portable
bool set_simd_path(const char* name);  // cap at "avx512", "avx2" or "portable"; false: unknown name
const char* simd_path();          // "avx512", "avx2" or "portable"
void set_num_threads(int n);      // this thread's OpenMP threads; 1 on a forked child's forking thread
int get_num_threads();

// ---- RKME inner products over packed stores (CSR offsets)
// cross_inner: out (Q, N); column i is the store spec sel[i] (sel == nullptr: spec i), so a subset
// of a store is scanned in place, without gathering its rows.
class SpinTeam;  // team.h: zx_moments and kmeans run on a caller's two-thread team when given one
#define LWE_INNER_DECL(T)                                                                           \
  void cross_inner(const T* q_z, const double* q_beta, const index_t* q_off, index_t Q, const T* z, \
                   const double* beta, const index_t* off, const index_t* sel, index_t N, index_t d,  \
                   double gamma, double* out);                                                      \
  void self_inner(const T* z, const double* beta, const index_t* off, index_t N, index_t d,         \
                  double gamma, double* out);                                                       \
  void gram(const T* z, const double* beta, const index_t* off, index_t N, index_t d, double gamma,  \
            double* out);                                                                           \
  void zx_moments(const double* z, index_t K, const T* x, index_t n, index_t d, double gamma,       \
                  double* C, double* Tout, SpinTeam* team = nullptr);
LWE_INNER_DECL(float)
LWE_INNER_DECL(double)

// ---- search pruning (balls.cpp, kernels-inl.h)
// spec_balls: per spec i a centre c_i (the row mean) and a radius r_i >= max_b |z_b - c_i| (rigorous
// in float64); ball_bound: out (Q, N) = sum_a w_a exp(-gamma max(0, |a - c_i| - r_i)^2) >= the
// weighted largest kernel value of each query point against spec i (w >= 0).
template <class T>
void spec_balls(const T* z, const index_t* off, index_t N, index_t d, double* centers, double* radii);
void ball_bound(const double* q_z, const double* q_w, const index_t* q_off, index_t Q, const double* c,
                const double* r, index_t N, index_t d, double gamma, double* out);
// projection_bound: out (M,) for spec specs[j] = sum_a w_a exp(-gamma g_a^2) >= the same weighted
// largest kernel values (one query), g_a the larger of the ball gap and the gap of the projections
// onto the direction from c_i to the centre gc of a's group (q_group[a] in [0, ng), ng <= 8).
constexpr index_t kMaxBoundGroups = 8;
template <class T>
void projection_bound(const double* q_z, const double* q_w, const index_t* q_group, index_t Ka, const double* gc,
                      index_t ng, const T* z, const index_t* off, const index_t* specs, index_t M,
                      const double* c, const double* r, index_t d, double gamma, double* out);

// ---- k-means (Lloyd, float32, reference rules); returns the number of iterations run
// (team: score on the caller's two-thread team, team.h; else one of its own where that pays)
int kmeans(const float* x, index_t n, index_t d, float* c, index_t k, int max_iter, double tol,
           SpinTeam* team = nullptr);

// ---- G_ij = k(z_i, z_j) of K single points (symmetric, duplicates give identical rows)
void point_gram(const double* z, index_t K, index_t d, double gamma, double* G, SpinTeam* team = nullptr);

// ---- reduced-set step and QP (kernels-inl.h, moments.cpp, qp-inl.h; the QP per ISA)
// rs_step_from_gram: the same step given G = point_gram(z) (the beta update's matrix at z)
void rs_step_from_gram(const double* z, const double* beta, const double* C, const double* T,
                       const double* G, index_t K, index_t d, double gamma, double step,
                       double t1_factor, double* out, SpinTeam* team = nullptr);
void rs_step_from_moments(const double* z, const double* beta, const double* C, const double* T,
                          index_t K, index_t d, double gamma, double step, double t1_factor,
                          double* out);
// x0: feasible start point (x0 >= 0, sum > 0; normalised) or nullptr for the best vertex
double simplex_qp(const double* G, const double* c, index_t n, double* x, const double* x0 = nullptr);
void simplex_qp_batch(const double* Gs, const double* cs, index_t B, index_t n, double* xs,
                      double* objs);

// ---- the reference fit (fit.cpp): with kmeans_c (float32 x only) first k-means from those
// initial centroids (kmeans_iters: its iterations) and z (K, d) = the centroids widened, else z
// as given; then one beta update at z and `steps` x (Z step, beta update); z in place, beta (K)
// and objectives (steps + 1, beta'G beta - 2 beta'C) out.  Returns 0, or 1 / 2 where G or C
// turned non-finite at the first / a later beta update.
template <class Tx>
int fit_reference(const Tx* x, index_t n, index_t d, double* z, index_t K, double gamma, int steps,
                  double step_size, double* beta, double* objectives, float* kmeans_c = nullptr,
                  int max_iter = 100, double tol = 1e-4, int* kmeans_iters = nullptr);
double fit_objective(const double* G, const double* C, const double* beta, index_t K);

// ---- machine probes for the benchmarks: (flops/s of fp32 FMA, float32 exp/s), all threads
double peak_fma_f32(double seconds);
double peak_exp_f32(double seconds);
// Whether two OpenMP threads give at least 1.5x one thread's FMA rate here (separate cores, not
// siblings sharing FP units): measured once, ~6 ms; it only moves the serial thresholds of small
// problems (k-means, data moments), never a result.
bool threads_add_throughput();
// Whether splitting `madds` multiply-adds of a kernel costing `cost` float32 FMA lanes each over
// two threads saves time here: the threads are separate cores (threads_add_throughput) and the
// serial time, estimated from the probe's one-thread FMA rate, exceeds three times the measured
// cost of waking the other thread for a parallel region (~1 us when OpenMP threads spin, ~70 us
// on a shared VM with OMP_WAIT_POLICY=PASSIVE, lwengine's default).  Measured once with the probe.
bool split_pays(double madds, double cost);
// The call team (team.h): a second thread that stays awake across the kernel calls one thread
// makes between begin and end (a search), instead of an OpenMP wake-up per call.
bool call_team_begin();
void call_team_end();
bool call_team_active();  // whether this thread holds it
// Above this many multiply-adds a call always splits (threads sharing one core's FP units gain
// there too); below it only where split_pays says so.  (k-means: 5e7, kmeans-inl.h.)
constexpr double kAlwaysSplitWork = 3.2e7;
// float32 FMA lanes per K n d multiply-add of the data moments, with and without T (d = 20:
// ~450 us for 4e6 with T on a 5e10 lane/s core), for split_pays
constexpr double kMomentsCostT = 6.0;
constexpr double kMomentsCostC = 4.0;
// ... and per K n d of a small k-means: four full scorings (~1.6 lanes per multiply-add each)
constexpr double kKmeansCost = 4.0 * 1.6;
// The probe's values: separate cores, one thread's float32 FMA lanes/s, the wake-up time (s).
void thread_probe_values(bool* cores, double* lane_fma_s, double* wake_s, int* remeasured);

// Calls fn in the namespace of the active path (portable, avx2, avx512), chosen once per call.
#if LWE_HAVE_AVX512_BUILD
#define LWE_ROUTE(fn, ...)                                        \
  [&] {                                                           \
    switch (simd_level()) {                                       \
      case kAvx512: return avx512::fn(__VA_ARGS__);               \
      case kAvx2: return avx2::fn(__VA_ARGS__);                   \
      default: return portable::fn(__VA_ARGS__);                  \
    }                                                             \
  }()
#elif LWE_HAVE_AVX2_BUILD
#define LWE_ROUTE(fn, ...) (simd_level() == kAvx2 ? avx2::fn(__VA_ARGS__) : portable::fn(__VA_ARGS__))
#else
#define LWE_ROUTE(fn, ...) portable::fn(__VA_ARGS__)
#endif

// Per-ISA implementations (kernels-inl.h compiled once per ISA).
#define LWE_ISA_DECL(ns)                                                                          \
  namespace ns {                                                                                  \
  LWE_INNER_DECL(float)                                                                           \
  LWE_INNER_DECL(double)                                                                          \
  int kmeans(const float* x, index_t n, index_t d, float* c, index_t k, int max_iter, double tol,   \
             SpinTeam* team);                                                                      \
  void point_gram(const double* z, index_t K, index_t d, double gamma, double* G, SpinTeam* team);\
  double simplex_qp(const double* G, const double* c, index_t n, double* x, const double* x0);     \
  void rs_step_from_gram(const double* z, const double* beta, const double* C, const double* T,     \
                         const double* G, index_t K, index_t d, double gamma, double step,          \
                         double t1_factor, double* out, SpinTeam* team);                            \
  void ball_bound(const double* q_z, const double* q_w, const index_t* q_off, index_t Q,          \
                  const double* c, const double* r, index_t N, index_t d, double gamma, double* out); \
  void projection_bound(const double* q_z, const double* q_w, const index_t* q_group, index_t Ka,  \
                        const double* gc, index_t ng, const float* z, const index_t* off,           \
                        const index_t* specs, index_t M, const double* c, const double* r,          \
                        index_t d, double gamma, double* out);                                      \
  void projection_bound(const double* q_z, const double* q_w, const index_t* q_group, index_t Ka,  \
                        const double* gc, index_t ng, const double* z, const index_t* off,          \
                        const index_t* specs, index_t M, const double* c, const double* r,          \
                        index_t d, double gamma, double* out);                                      \
  double probe_fma_f32(double seconds);                                                           \
  double probe_exp_f32(double seconds);                                                           \
  }
LWE_ISA_DECL(portable)
LWE_ISA_DECL(avx2)
LWE_ISA_DECL(avx512)

}  // namespace lwe
