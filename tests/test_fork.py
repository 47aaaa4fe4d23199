"""A forked child computes what its parent computes, and does not hang.

libgomp's thread pool does not survive fork: the child's forking thread would wait forever in its
next multi-threaded parallel region (dispatch.cpp, after_fork_in_child).  Each child here is polled
and killed after a deadline, so a regression fails the test instead of hanging the run."""
from __future__ import annotations

import os
import sys
import threading
import time
import warnings

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex, _backend, kernels

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="fork: Linux")

DEADLINE_S = 60.0


def _in_child(fn) -> int:
    """fn() in a forked child; its exit status (0: fn returned True), or -1 if it outlived the deadline."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork() may deadlock"
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 4
        try:
            code = 0 if fn() else 3
        finally:
            os._exit(code)
    until = time.monotonic() + DEADLINE_S
    while time.monotonic() < until:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 5
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -1


def _store(n=3000, K=40, d=16, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n * K, d))
    off = np.arange(0, n * K + 1, K, dtype=np.int64)
    return z, rng.uniform(size=n * K), off, rng.normal(size=(K, d)), rng.uniform(size=K)


def test_kernels_in_a_forked_child_after_the_parent_ran_them_on_threads():
    z, b, off, q, qb = _store()
    core = _backend.require_core()
    core.set_num_threads(2)  # a multi-threaded region in the parent makes its pool (if 2 CPUs exist)
    want = kernels.cross_inner(q, qb, [0, len(q)], z, b, off, 0.3)
    want_self = kernels.self_inner(z, b, off, 0.3)

    def child():
        core.set_num_threads(2)  # cannot raise it on the forking thread
        if core.get_num_threads() != 1:
            return False
        same = np.array_equal(kernels.cross_inner(q, qb, [0, len(q)], z, b, off, 0.3), want)
        same = same and np.array_equal(kernels.self_inner(z, b, off, 0.3), want_self)
        # another thread of the child starts a fresh pool: it may use every thread
        got = {}
        t = threading.Thread(target=lambda: got.update(
            n=core.get_num_threads(), x=kernels.cross_inner(q, qb, [0, len(q)], z, b, off, 0.3)))
        t.start()
        t.join()
        return same and got["n"] == os.cpu_count() and np.array_equal(got["x"], want)

    if os.cpu_count() < 2:
        pytest.skip("one CPU: no pool to lose")
    assert _in_child(child) == 0


def test_a_forked_child_fits_and_searches_with_the_call_team():
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=3.0, size=(4, 8))
    index = SpecIndex()
    index.add_many([(f"{i:05d}", RKMESpec(centres[i % 4] + rng.normal(size=(30, 8)), rng.dirichlet(np.ones(30)), 0.1))
                    for i in range(2000)])
    X = np.concatenate([centres[0] + rng.normal(size=(1000, 8)), centres[1] + rng.normal(size=(1000, 8))])
    user = RKMESpec.fit(X, K=50, gamma=0.1, seed=0)
    res = index.search(user)
    want = [(s.id, s.dist, s.score) for s in res.single], res.mixture.ids, res.mixture.weights

    def child():
        spec = RKMESpec.fit(X, K=50, gamma=0.1, seed=0)
        if not (np.array_equal(spec.z, user.z) and np.array_equal(spec.beta, user.beta)):
            return False
        r = index.search(spec)
        with kernels.call_team() as on:  # no team on the forking thread: its pool is gone
            pass
        return not on and ([(s.id, s.dist, s.score) for s in r.single], r.mixture.ids, r.mixture.weights) == want

    assert _in_child(child) == 0
