// Run-time choice between the AVX-512, AVX2 and portable instantiations, thread control, and the
// public entry points that route to one of them.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <pthread.h>
#include <thread>
#include <vector>
#ifdef LWE_HAVE_OPENMP
#include <omp.h>
#endif

#include "ops.h"
#include "team.h"

namespace lwe {
namespace {
std::atomic<int> g_simd_cap{kAvx512};  // the user's cap (set_simd, set_simd_path)

bool env_set(const char* name) {  // read at every call: tests flip these
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

// The data moments run on one thread below kAlwaysSplitWork (K n d multiply-adds, ops.h): there the
// fork/join and, with OMP_WAIT_POLICY=PASSIVE, the wake-up of the other threads cost more than
// the split saves (measured by benchmarks/bench_fit.py, last table; docs/benchmarks.md) -- on a
// machine whose threads share one core's FP units.  Below it, two threads are used where
// split_pays finds that they save more than the wake-up costs (separate cores; at n = 2000,
// K = 100, d = 20 (4e6) with PASSIVE threads on this project's shared VMs).  The result does
// not depend on the thread count (the chunking is fixed by n, K and d).

// Runs fn on one OpenMP thread when `serial`, restoring the calling thread's setting after.
template <class Fn>
void maybe_serial(bool serial, Fn&& fn) {
#ifdef LWE_HAVE_OPENMP
  if (serial && omp_get_max_threads() > 1) {
    struct Restore {
      int prev;
      ~Restore() { omp_set_num_threads(prev); }  // also when fn throws (bad_alloc)
    } restore{omp_get_max_threads()};
    omp_set_num_threads(1);
    fn();
    return;
  }
#else
  (void)serial;
#endif
  fn();
}

// A forked child has only the thread that forked.  libgomp's thread pool does not survive fork: that
// thread still owns the parent's pool record, and its next parallel region of two or more threads
// waits forever for pool threads that were not copied.  So it runs its kernels on one OpenMP thread
// for the rest of the child's life (set_num_threads cannot raise it); the child's other threads
// start fresh pools.  The call team's worker is gone too (call_team_after_fork).  One handler,
// registered when the module loads, before any fork it could miss.
thread_local bool t_pool_lost = false;
void call_team_after_fork();
void after_fork_in_child() {
  t_pool_lost = true;
#ifdef LWE_HAVE_OPENMP
  omp_set_num_threads(1);
#endif
  call_team_after_fork();
}
[[maybe_unused]] const int g_fork_guard = pthread_atfork(nullptr, nullptr, after_fork_in_child);
}  // namespace

bool cpu_has_avx2_fma() {
#if LWE_HAVE_AVX2_BUILD && (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if LWE_HAVE_AVX512_BUILD && (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  static const bool ok = cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512bw");
  return ok;
#else
  return false;
#endif
}

SimdPath simd_level() {
  const int cap = g_simd_cap.load();
  if (cap >= kAvx2 && cpu_has_avx2_fma() && !env_set("LWE_DISABLE_AVX2")) {
    if (cap >= kAvx512 && cpu_has_avx512() && !env_set("LWE_DISABLE_AVX512")) return kAvx512;
    return kAvx2;
  }
  return kPortable;
}
bool simd_enabled() { return simd_level() != kPortable; }
void set_simd(bool enabled) { g_simd_cap.store(enabled ? kAvx512 : kPortable); }
bool set_simd_path(const char* name) {
  static const char* const names[] = {"portable", "avx2", "avx512"};
  for (int i = 0; i < 3; ++i)
    if (std::strcmp(name, names[i]) == 0) {
      g_simd_cap.store(i);
      return true;
    }
  return false;
}
const char* simd_path() {
  switch (simd_level()) {
    case kAvx512: return "avx512";
    case kAvx2: return "avx2";
    default: return "portable";
  }
}

namespace {
struct ThreadProbe {
  bool cores = false;       // two threads give >= 1.5x one thread's FMA rate
  bool measured = false;    // the two-thread rate was measured (>= 2 CPUs, a usable pool)
  double lane_fma_s = 0.0;  // float32 FMA lanes per second, one thread
  double wake_s = 0.0;      // median time of a small two-thread parallel region entered after serial work
};

#ifdef LWE_HAVE_OPENMP
// A parallel region of two threads, each entered after ~200 us of serial work (long enough for
// passive threads to be asleep, as between the calls of a fit): median of 9.
double probe_wake_s() {
  double ts[9];
  volatile double sink = 0.0;
  for (double& t : ts) {
    const double until = omp_get_wtime() + 2e-4;
    double acc = 0.0;
    while (omp_get_wtime() < until) acc += 1.0;
    sink = sink + acc;
    const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(2)
    {
      sink = sink + omp_get_thread_num();
    }
    t = omp_get_wtime() - t0;
  }
  std::sort(ts, ts + 9);
  return ts[4];
}
#endif

const ThreadProbe& thread_probe() {
  static const ThreadProbe probe = [] {
    ThreadProbe p;
#ifdef LWE_HAVE_OPENMP
    double one = 0.0;
    maybe_serial(true, [&] { one = peak_fma_f32(0.003); });
    p.lane_fma_s = one / 2.0;  // flops -> FMA lanes
    if (omp_get_num_procs() < 2 || t_pool_lost) return p;
    const int prev = omp_get_max_threads();
    omp_set_num_threads(2);
    // Another thread busy on the second CPU for a moment (OpenBLAS's spin after a numpy product:
    // ~0.2 s) halves the two-thread rate; the answer lasts the process, so a "no" is retried a few
    // times, 20 ms apart, before it is believed (~0.1 s once, on machines where it is true).
    for (int attempt = 0; attempt < 5 && !p.cores; ++attempt) {
      if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      p.cores = peak_fma_f32(0.003) >= 1.5 * one;
    }
    p.measured = true;
    if (std::getenv("LWE_PROBE_SAY_NO")) p.cores = false;  // tests: the path of a wrong first "no"
    omp_set_num_threads(prev);
    p.wake_s = probe_wake_s();
#endif
    return p;
  }();
  return probe;
}
}  // namespace

// ---- the call team (team.h): a persistent thread, asleep between begin / end
namespace {
struct CallTeamState {
  std::mutex m;
  std::condition_variable cv;
  SpinTeam* session = nullptr;  // set by begin, taken by the worker
  bool working = false;         // the worker is inside session->work()
  std::thread worker;
};
std::atomic<SpinTeam*> g_call_team{nullptr};  // read by every kernel call: no state, no thread
std::atomic<std::thread::id> g_call_owner{};
std::atomic<CallTeamState*> g_call_state{nullptr};

// A forked child has no worker thread: it drops the parent's state (leaked: its mutex may be held)
// and the team; a thread of the child other than the forking one makes a new worker on its first
// search (the forking thread runs without a team: t_pool_lost).
void call_team_after_fork() {
  g_call_state.store(nullptr);
  g_call_team.store(nullptr);
  g_call_owner.store(std::thread::id{});
  spin_teams_running().store(0);
}

CallTeamState* make_call_state() {
  auto* st = new CallTeamState;  // never destroyed: the worker may outlive static destruction
  st->worker = std::thread([st] {
      std::unique_lock<std::mutex> lock(st->m);
      for (;;) {
        st->cv.wait(lock, [st] { return st->session != nullptr; });
        SpinTeam* team = st->session;
        st->session = nullptr;
        st->working = true;
        lock.unlock();
        team->work();
        lock.lock();
        st->working = false;
        st->cv.notify_all();
      }
    });
  st->worker.detach();
  return st;
}

std::mutex g_call_state_lock;

CallTeamState& call_state() {
  CallTeamState* st = g_call_state.load(std::memory_order_acquire);
  if (st) return *st;
  std::lock_guard<std::mutex> lock(g_call_state_lock);
  st = g_call_state.load(std::memory_order_acquire);
  if (!st) {
    st = make_call_state();
    g_call_state.store(st, std::memory_order_release);
  }
  return *st;
}
}  // namespace

bool call_team_begin() {
#ifdef LWE_HAVE_OPENMP
  if (omp_get_max_threads() < 2 || !threads_add_throughput()) return false;
  if (spin_teams_running().fetch_add(1) != 0) {
    spin_teams_running().fetch_sub(1);
    return false;
  }
  SpinTeam* team = nullptr;
  CallTeamState* stp = nullptr;
  try {  // no memory or no thread: the calls run on OpenMP as without a team
    stp = &call_state();
    team = new SpinTeam;
  } catch (...) {
    spin_teams_running().fetch_sub(1);
    return false;
  }
  CallTeamState& st = *stp;
  {
    std::lock_guard<std::mutex> lock(st.m);
    st.session = team;
  }
  st.cv.notify_all();
  g_call_owner.store(std::this_thread::get_id());
  g_call_team.store(team, std::memory_order_release);
  return true;
#else
  return false;
#endif
}

void call_team_end() {
  SpinTeam* team = g_call_team.load(std::memory_order_acquire);
  if (!team || g_call_owner.load() != std::this_thread::get_id()) return;
  CallTeamState& st = call_state();
  g_call_team.store(nullptr, std::memory_order_release);
  g_call_owner.store(std::thread::id{});
  team->stop();
  {
    std::unique_lock<std::mutex> lock(st.m);
    st.cv.wait(lock, [&] { return st.session == nullptr && !st.working; });
  }
  delete team;
  spin_teams_running().fetch_sub(1);
}

bool call_team_active() { return call_team() != nullptr; }

SpinTeam* call_team() {
  SpinTeam* team = g_call_team.load(std::memory_order_acquire);
  return team && g_call_owner.load(std::memory_order_relaxed) == std::this_thread::get_id() ? team : nullptr;
}

namespace {
std::atomic<bool> g_cores_later{false};  // a later measurement found the two threads on separate cores
std::atomic<int> g_reprobes{0};
std::atomic<long long> g_next_reprobe_ns{0};
std::mutex g_reprobe_mutex;

// The probe's "no" is measured again now and then: at most 8 times, >= 1 s apart, from a thread
// outside any parallel region while no call team runs (3 ms each).  The five tries of the probe
// itself did not always suffice: 3 of 40 fresh processes on a 2-core Zen 3 VM answered "no" for
// good (its fits then ran on one thread, 6.1 against 3.6-4.2 ms), with a two-thread region 4x
// cheaper than usual, as if the woken worker had landed on the master's CPU.
bool cores_now(bool may_measure) {
  const ThreadProbe& p = thread_probe();
  if (p.cores || g_cores_later.load(std::memory_order_relaxed)) return true;
#ifdef LWE_HAVE_OPENMP
  if (!may_measure || !p.measured || t_pool_lost || omp_in_parallel() ||
      g_call_team.load(std::memory_order_acquire) != nullptr || g_reprobes.load() >= 8)
    return false;
  const long long now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now().time_since_epoch()).count();
  if (now < g_next_reprobe_ns.load()) return false;
  std::unique_lock<std::mutex> lock(g_reprobe_mutex, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  g_next_reprobe_ns.store(now + 1000000000LL);
  ++g_reprobes;
  const int prev = omp_get_max_threads();
  omp_set_num_threads(2);
  const bool yes = peak_fma_f32(0.003) >= 1.5 * 2.0 * p.lane_fma_s;  // flops against one thread's
  omp_set_num_threads(prev);
  if (yes) g_cores_later.store(true);
  return yes;
#else
  (void)may_measure;
  return false;
#endif
}
}  // namespace

void thread_probe_values(bool* cores, double* lane_fma_s, double* wake_s, int* remeasured) {
  const ThreadProbe& p = thread_probe();
  *cores = cores_now(false);
  *lane_fma_s = p.lane_fma_s;
  *wake_s = p.wake_s;
  *remeasured = g_reprobes.load();
}

bool threads_add_throughput() { return cores_now(true); }

bool split_pays(double madds, double cost) {
  const ThreadProbe& p = thread_probe();
  return p.lane_fma_s > 0.0 && madds * cost / p.lane_fma_s > 3.0 * p.wake_s && cores_now(true);
}

void set_num_threads(int n) {
#ifdef LWE_HAVE_OPENMP
  omp_set_num_threads(n < 1 || t_pool_lost ? 1 : n);
#else
  (void)n;
#endif
}
int get_num_threads() {
#ifdef LWE_HAVE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

#define LWE_ROUTE_INNER(T)                                                                         \
  void cross_inner(const T* q_z, const double* q_beta, const index_t* q_off, index_t Q, const T* z, \
                   const double* beta, const index_t* off, const index_t* sel, index_t N, index_t d,  \
                   double gamma, double* out) {                                                     \
    LWE_ROUTE(cross_inner, q_z, q_beta, q_off, Q, z, beta, off, sel, N, d, gamma, out);            \
  }                                                                                                 \
  void self_inner(const T* z, const double* beta, const index_t* off, index_t N, index_t d,         \
                  double gamma, double* out) {                                                      \
    LWE_ROUTE(self_inner, z, beta, off, N, d, gamma, out);                                          \
  }                                                                                                 \
  void gram(const T* z, const double* beta, const index_t* off, index_t N, index_t d, double gamma,  \
            double* out) {                                                                          \
    LWE_ROUTE(gram, z, beta, off, N, d, gamma, out);                                                \
  }                                                                                                 \
  void zx_moments(const double* z, index_t K, const T* x, index_t n, index_t d, double gamma,       \
                  double* C, double* Tout, SpinTeam* team) {                                        \
    if (team) return LWE_ROUTE(zx_moments, z, K, x, n, d, gamma, C, Tout, team);                  \
    const double work = static_cast<double>(K) * static_cast<double>(n) * static_cast<double>(d);  \
    maybe_serial(work < kAlwaysSplitWork && !split_pays(work, Tout ? kMomentsCostT : kMomentsCostC), \
                 [&] { LWE_ROUTE(zx_moments, z, K, x, n, d, gamma, C, Tout, nullptr); });           \
  }
LWE_ROUTE_INNER(float)
LWE_ROUTE_INNER(double)

double peak_fma_f32(double seconds) { return LWE_ROUTE(probe_fma_f32, seconds); }
double peak_exp_f32(double seconds) { return LWE_ROUTE(probe_exp_f32, seconds); }

void point_gram(const double* z, index_t K, index_t d, double gamma, double* G, SpinTeam* team) {
  LWE_ROUTE(point_gram, z, K, d, gamma, G, team);
}

double simplex_qp(const double* G, const double* c, index_t n, double* x, const double* x0) {
  return LWE_ROUTE(simplex_qp, G, c, n, x, x0);
}

void simplex_qp_batch(const double* Gs, const double* cs, index_t B, index_t n, double* xs, double* objs) {
  // the search's batches of tiny QPs stay on this thread unless splitting saves more than the wake-up
  const double nd = static_cast<double>(n);
  const double work = static_cast<double>(B) * nd * nd * (nd + 8.0);
#pragma omp parallel for schedule(dynamic, 1) if (work >= kAlwaysSplitWork || split_pays(work, 2.0))
  for (index_t b = 0; b < B; ++b) objs[b] = simplex_qp(Gs + b * n * n, cs + b * n, n, xs + b * n, nullptr);
}

void rs_step_from_gram(const double* z, const double* beta, const double* C, const double* T, const double* G,
                       index_t K, index_t d, double gamma, double step, double t1_factor, double* out,
                       SpinTeam* team) {
  LWE_ROUTE(rs_step_from_gram, z, beta, C, T, G, K, d, gamma, step, t1_factor, out, team);
}

void ball_bound(const double* q_z, const double* q_w, const index_t* q_off, index_t Q, const double* c,
                const double* r, index_t N, index_t d, double gamma, double* out) {
  LWE_ROUTE(ball_bound, q_z, q_w, q_off, Q, c, r, N, d, gamma, out);
}

template <class T>
void projection_bound(const double* q_z, const double* q_w, const index_t* q_group, index_t Ka, const double* gc,
                      index_t ng, const T* z, const index_t* off, const index_t* specs, index_t M,
                      const double* c, const double* r, index_t d, double gamma, double* out) {
  LWE_ROUTE(projection_bound, q_z, q_w, q_group, Ka, gc, ng, z, off, specs, M, c, r, d, gamma, out);
}
template void projection_bound<float>(const double*, const double*, const index_t*, index_t, const double*, index_t,
                                      const float*, const index_t*, const index_t*, index_t, const double*,
                                      const double*, index_t, double, double*);
template void projection_bound<double>(const double*, const double*, const index_t*, index_t, const double*, index_t,
                                       const double*, const index_t*, const index_t*, index_t, const double*,
                                       const double*, index_t, double, double*);

int kmeans(const float* x, index_t n, index_t d, float* c, index_t k, int max_iter, double tol, SpinTeam* team) {
  return LWE_ROUTE(kmeans, x, n, d, c, k, max_iter, tol, team);
}

}  // namespace lwe
