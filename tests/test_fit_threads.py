"""The thread choice of small calls: moments passes, k-means, scans and QP batches run on one thread
unless two threads on separate cores save more than waking the second one costs (`thread_probe`,
`split_pays` in csrc/cpu/dispatch.cpp), with the same result and the caller's thread setting restored."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from lwengine import _backend, kernels
from lwengine.specs import table as spec

core = _backend.require_core()


# below every serial threshold / split only where two threads add throughput / above every threshold
@pytest.mark.parametrize("n,K,d", [(300, 20, 5), (2000, 100, 20), (17_000, 100, 20)])
def test_moments_same_bits_at_any_thread_count_and_setting_restored(n, K, d):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, d)).astype(np.float32)
    z = rng.standard_normal((K, d))
    prev = core.get_num_threads()
    try:
        out = {}
        for nt in (1, 2, 3):
            core.set_num_threads(nt)
            out[nt] = kernels.zx_moments(z, x, 0.1, device="cpu")
            assert core.get_num_threads() == nt  # a serial pass leaves the setting as it was
    finally:
        core.set_num_threads(prev)
    for nt in (2, 3):
        assert np.array_equal(out[nt][0], out[1][0]) and np.array_equal(out[nt][1], out[1][1])


def test_fit_same_bits_at_any_thread_count():
    X = np.random.default_rng(5).standard_normal((2000, 20)).astype(np.float32)
    prev = core.get_num_threads()
    try:
        core.set_num_threads(1)
        a = spec.RKMESpec.fit(X, K=50, seed=1, device="cpu")
        core.set_num_threads(2)
        b = spec.RKMESpec.fit(X, K=50, seed=1, device="cpu")
    finally:
        core.set_num_threads(prev)
    assert np.array_equal(a.z, b.z) and np.array_equal(a.beta, b.beta)


def test_thread_probe_is_measured_once():
    # (a "no" may be measured again, but at most once a second: back-to-back calls agree)
    first = core.threads_add_throughput()
    assert isinstance(first, bool) and core.threads_add_throughput() is first
    probe = core.thread_probe()
    assert probe == core.thread_probe() and probe["cores"] is first
    assert probe["lane_fma_per_s"] > 0 and probe["wake_s"] >= 0


def test_thread_probe_no_is_measured_again():
    """A first "no" (forced by LWE_PROBE_SAY_NO) is measured again by a later call that would split,
    at most once a second; the latest answer is what thread_probe reports.  (Whether the new
    measurement says yes depends on the machine's load at that moment: not asserted.)"""
    import os
    import subprocess
    import sys

    code = ("import time\nfrom lwengine import _core\np0 = _core.thread_probe()\n"
            "b1 = _core.threads_add_throughput(); b2 = _core.threads_add_throughput()\n"
            "p1 = _core.thread_probe()\ntime.sleep(1.05)\nb3 = _core.threads_add_throughput()\n"
            "p2 = _core.thread_probe()\n"
            "print(p0['cores'], p0['remeasured'], b1, p1['cores'], p1['remeasured'], b3, p2['cores'], p2['remeasured'])")
    if (os.cpu_count() or 1) < 2 or not core.cpu_info()["openmp"]:
        pytest.skip("no two-thread measurement here (one CPU or no OpenMP)")
    env = {**os.environ, "LWE_PROBE_SAY_NO": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    p0_cores, p0_n, b1, p1_cores, p1_n, b3, p2_cores, p2_n = out.stdout.split()
    assert p0_cores == "False" and p0_n == "0"
    assert p1_n == "1" and p1_cores == b1  # measured once: the second call came within the second
    if b1 == "True":
        assert b3 == p2_cores == "True" and p2_n == "1"  # a yes holds: no further measurement
    else:
        assert p2_n == "2" and p2_cores == b3


# one spec pair (always serial) and a scan large enough to split on any machine
@pytest.mark.parametrize("N", [1, 3000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scans_same_bits_at_any_thread_count(N, dtype):
    rng = np.random.default_rng(N)
    K, d = 60, 12
    z = rng.standard_normal((N * K, d)).astype(dtype)
    beta = rng.uniform(size=N * K)
    off = np.arange(0, N * K + 1, K, dtype=np.int64)
    qz = rng.standard_normal((2 * K, d)).astype(dtype)
    qoff = np.array([0, K, 2 * K], dtype=np.int64)
    qb = rng.uniform(size=2 * K)
    Gs = np.stack([np.eye(4) + 0.1 * i for i in range(N % 7 + 1)])
    cs = rng.uniform(size=(Gs.shape[0], 4))
    prev = core.get_num_threads()
    out = {}
    try:
        for nt in (1, 2):
            core.set_num_threads(nt)
            out[nt] = (kernels.cross_inner(qz, qb, qoff, z, beta, off, 0.1), kernels.self_inner(z, beta, off, 0.1),
                       kernels.simplex_qp_batch(Gs, cs)[0])
    finally:
        core.set_num_threads(prev)
    for a, b in zip(out[1], out[2]):
        assert np.array_equal(a, b)


def test_fit_kernels_fast_path_keeps_the_checks():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 3)).astype(np.float32)
    fk = kernels.FitKernels(x, 0.5, device="cpu")
    z = rng.standard_normal((6, 3))
    C, T = fk.moments(z)
    G = fk.point_gram(z)
    beta = fk.beta_qp(G, C)
    np.testing.assert_array_equal(beta, kernels.simplex_qp(G, C)[0])
    np.testing.assert_array_equal(fk.beta_qp(G, C, beta), kernels.simplex_qp(G, C, x0=beta)[0])
    np.testing.assert_array_equal(fk.step_from_gram(z, beta, C, T, G, 0.1),
                                  kernels.rs_step_from_gram(z, beta, C, T, G, 0.5, 0.1, device="cpu"))
    bad = C.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        fk.beta_qp(G, bad)
    with pytest.raises(ValueError, match="x0"):
        fk.beta_qp(G, C, -beta)
    with pytest.raises(ValueError, match="dimension"):
        fk.moments(np.zeros((2, 4)))


def test_kmeans_team_same_bits_at_any_thread_count_and_concurrently():
    # n K d large enough for the two-thread team where two cores are found (csrc/cpu/kmeans-inl.h);
    # concurrent calls from Python threads run one team at a time, the others alone
    x = np.random.default_rng(11).standard_normal((3000, 20)).astype(np.float32)
    idx = np.random.default_rng(12).integers(0, len(x), size=100)
    prev = core.get_num_threads()
    try:
        core.set_num_threads(1)
        ref = kernels.kmeans(x, 100, init_idx=idx)
        core.set_num_threads(2)
        assert all(np.array_equal(a, b) for a, b in zip(kernels.kmeans(x, 100, init_idx=idx), ref))
        out = [None] * 4

        def run(i):
            out[i] = kernels.kmeans(x, 100, init_idx=idx)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        core.set_num_threads(prev)
    for res in out:
        assert np.array_equal(res[0], ref[0]) and res[1] == ref[1]
