// A two-thread team for a sequence of small parallel phases inside one native call (the k-means
// iterations, the fit's moment passes).  The first thread runs the caller's serial code; each
// phase's tasks are claimed from one atomic ticket (phase << 32 | next task) by both threads, a
// quarter of the remaining ones at a time (guided: few claims, and contiguous runs of tasks for the
// prefetchers), and the first thread waits only for tasks already claimed.  Data the two threads
// write stays on cache lines of its own (a line passed between the cores per task cost ~30 % of a
// k-means tile).  The second thread spins between phases
// (pause, then yield), so a passive OpenMP thread is woken once per team instead of once per
// phase (~60 us each on a shared VM).  Which thread runs a task never changes a result.  One team
// at a time in the process: concurrent callers (e.g. fit_many's threads) run without one.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#ifdef LWE_HAVE_OPENMP
#include <omp.h>
#endif

#include "ops.h"

namespace lwe {

class SpinTeam {
 public:
  // task(i, slot) for every i in [0, n), on both threads (slot 0: the calling thread, 1: the other);
  // returns when all have run.  Only the thread that runs the serial code calls this.
  template <class Task>
  void run(index_t n, Task& task) {
    fn_ = [](void* ctx, index_t i, int slot) { (*static_cast<Task*>(ctx))(i, slot); };
    ctx_ = &task;
    ntasks_.store(n, std::memory_order_relaxed);
    done_[0].n.store(0, std::memory_order_relaxed);
    done_[1].n.store(0, std::memory_order_relaxed);
    const std::uint32_t phase = ++phase_;
    ticket_.store(static_cast<std::uint64_t>(phase) << 32, std::memory_order_release);
    claim(phase, 0);
    while (done_[0].n.load(std::memory_order_relaxed) + done_[1].n.load(std::memory_order_acquire) < n) pause();
  }

  // The second thread: runs the phases' tasks until stop().
  void work() {
    std::uint32_t seen = 0;
    int idle = 0;
    while (!quit_.load(std::memory_order_acquire)) {
      const auto phase = static_cast<std::uint32_t>(ticket_.load(std::memory_order_acquire) >> 32);
      if (phase != seen) {
        seen = phase;
        idle = 0;
        claim(phase, 1);
      } else if (++idle < 4096) {
        pause();
      } else {
        std::this_thread::yield();  // a long serial stretch (or a descheduled first thread)
      }
    }
  }
  void stop() { quit_.store(true, std::memory_order_release); }

  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }

 private:
  void claim(std::uint32_t phase, int slot) {
    for (;;) {
      std::uint64_t t = ticket_.load(std::memory_order_acquire);
      if (static_cast<std::uint32_t>(t >> 32) != phase) return;
      const index_t i = static_cast<index_t>(t & 0xffffffffu), n = ntasks_.load(std::memory_order_relaxed);
      if (i >= n) return;
      const index_t g = std::max<index_t>(1, (n - i) / 4);
      if (!ticket_.compare_exchange_weak(t, t + static_cast<std::uint64_t>(g), std::memory_order_acq_rel)) continue;
      for (index_t j = i; j < i + g; ++j) fn_(ctx_, j, slot);
      done_[slot].n.store(done_[slot].n.load(std::memory_order_relaxed) + g, std::memory_order_release);
    }
  }

  // the ticket, each thread's count of finished tasks (written by that thread alone) and the rest
  // on cache lines of their own
  struct alignas(64) Count {
    std::atomic<index_t> n{0};
  };
  alignas(64) std::atomic<std::uint64_t> ticket_{0};
  Count done_[2];
  alignas(64) std::atomic<index_t> ntasks_{0};
  std::atomic<bool> quit_{false};
  std::uint32_t phase_ = 0;                        // the first thread's own counter
  void (*fn_)(void*, index_t, int) = nullptr;      // the current phase's task, published by ticket_
  void* ctx_ = nullptr;
};

inline std::atomic<int>& spin_teams_running() {
  static std::atomic<int> running{0};
  return running;
}

// body(team) on this thread with a team beside it when `want`, two OpenMP threads are allowed and
// no other team runs; else body(nullptr).  An exception from body's serial code is rethrown after
// the team ends (the tasks themselves must not throw).
template <class Body>
void with_spin_team(bool want, Body&& body) {
#ifdef LWE_HAVE_OPENMP
  bool on = false;
  if (want && omp_get_max_threads() >= 2) {
    on = spin_teams_running().fetch_add(1) == 0;
    if (!on) spin_teams_running().fetch_sub(1);
  }
  if (on) {
    SpinTeam team;
    std::exception_ptr error;
#pragma omp parallel num_threads(2)
    {
      if (omp_get_thread_num() == 0) {
        try {
          body(omp_get_num_threads() == 2 ? &team : nullptr);
        } catch (...) {
          error = std::current_exception();
        }
        team.stop();
      } else {
        team.work();
      }
    }
    spin_teams_running().fetch_sub(1);
    if (error) std::rethrow_exception(error);
    return;
  }
#else
  (void)want;
#endif
  body(static_cast<SpinTeam*>(nullptr));
}

// A team that spans several native calls of one caller thread (a search's kernel calls from
// Python): call_team_begin() (ops.h) wakes a persistent second thread into a SpinTeam,
// call_team_end() sends it back to sleep.  In between, kernels called on that thread run their
// items on the team (call_team()) instead of waking a passive OpenMP thread per call.  One team
// of any kind at a time in the process (with_spin_team's count).  dispatch.cpp.
SpinTeam* call_team();  // this thread's active team, else nullptr

}  // namespace lwe
