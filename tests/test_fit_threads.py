"""The fit's thread choice: small moments passes and k-means run on one thread (the threshold is
lower where two threads add FP throughput, `threads_add_throughput`), with the same result and the
caller's thread setting restored (csrc/cpu/dispatch.cpp)."""
from __future__ import annotations

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
    first = core.threads_add_throughput()
    assert isinstance(first, bool) and core.threads_add_throughput() is first


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
