"""The CPU reference fit in one native call (FitKernels.fit_reference, csrc/cpu/fit.cpp) against
the Python loop it stands for (RKMESpec.fit with FUSED_FIT off): the same bits, the same errors."""
from __future__ import annotations

import numpy as np
import pytest

import lwengine
from lwengine import _backend, kernels
from lwengine.specs import table

core = _backend.require_core()


def _fit_both(monkeypatch, X, **kw):
    monkeypatch.setattr(table, "FUSED_FIT", True)
    a = lwengine.RKMESpec.fit(X, device="cpu", **kw)
    monkeypatch.setattr(table, "FUSED_FIT", False)
    b = lwengine.RKMESpec.fit(X, device="cpu", **kw)
    return a, b


@pytest.mark.parametrize("n,d,K,kw", [(2000, 20, 100, {}), (500, 3, 30, {"steps": 5}), (300, 7, 50, {"steps": 0}),
                                      (1000, 12, 40, {"step_size": 0.5, "gamma": 0.5}), (257, 4, 300, {})])
def test_fused_fit_same_bits_as_the_python_loop(monkeypatch, n, d, K, kw):
    X = np.random.default_rng(n + d).standard_normal((n, d)).astype(np.float32)
    a, b = _fit_both(monkeypatch, X, K=K, seed=3, **kw)
    assert np.array_equal(a.z, b.z) and np.array_equal(a.beta, b.beta)
    assert a.fit_info == b.fit_info  # K, k-means iterations, every objective, every step size
    z0 = np.random.default_rng(1).standard_normal((min(K, 20), d))
    a, b = _fit_both(monkeypatch, X, init_z=z0, **kw)
    assert np.array_equal(a.z, b.z) and np.array_equal(a.beta, b.beta) and a.fit_info == b.fit_info


def test_fused_fit_only_for_its_configuration(monkeypatch):
    calls = []
    real = kernels.FitKernels.fit_reference
    monkeypatch.setattr(kernels.FitKernels, "fit_reference",
                        lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    X = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    lwengine.RKMESpec.fit(X, K=20, seed=0, device="cpu")
    assert calls == [1]
    for kw in ({"update": "mmd-descent"}, {"nonnegative_beta": False}, {"record_trajectory": True}, {"n_init": 2}):
        lwengine.RKMESpec.fit(X, K=20, seed=0, device="cpu", **kw)
    assert calls == [1]


def test_fused_fit_diverges_like_the_python_loop(monkeypatch):
    X = np.random.default_rng(1).standard_normal((500, 5)).astype(np.float32)
    for fused in (True, False):
        monkeypatch.setattr(table, "FUSED_FIT", fused)
        with pytest.raises(ValueError, match=r"the fit diverged .* step_size=1e\+200"):
            lwengine.RKMESpec.fit(X, K=20, seed=0, step_size=1e200, device="cpu")


def test_fit_objective_is_the_formula():
    rng = np.random.default_rng(2)
    G = rng.uniform(size=(30, 30))
    G = G + G.T
    C, beta = rng.uniform(size=30), rng.dirichlet(np.ones(30))
    assert kernels.fit_objective(G, C, beta) == pytest.approx(beta @ G @ beta - 2 * beta @ C, rel=1e-14)


def test_fit_reference_binding_checks_its_arguments():
    x = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    z = x[:5].astype(np.float64)
    beta, obj = np.zeros(5), np.zeros(4)
    assert core.fit_reference(x, z.copy(), 0.1, 3, 0.1, beta, obj) == (0, 0)
    assert abs(beta.sum() - 1) < 1e-12 and np.isfinite(obj).all()
    c = x[:5].copy()
    status, iters = core.fit_reference(x, np.zeros((5, 3)), 0.1, 3, 0.1, beta, obj, c, 100, 1e-4)
    assert status == 0 and iters == kernels.kmeans(x, 5, init_idx=np.arange(5))[1]
    np.testing.assert_array_equal(c, kernels.kmeans(x, 5, init_idx=np.arange(5))[0])
    bad = [((x, z.copy(), 0.1, 3, 0.1, np.zeros(4), obj), "beta_out"),
           ((x, z.copy(), 0.1, 2, 0.1, beta, obj), "objectives_out"),
           ((x, z.copy(), 0.1, -1, 0.1, beta, np.zeros(0)), "steps"),
           ((x, z.copy(), 0.1, 3, float("nan"), beta, obj), "step_size"),
           ((x, np.full((5, 3), np.nan), 0.1, 3, 0.1, beta, obj), "z"),
           ((x[:, :2], z.copy(), 0.1, 3, 0.1, beta, obj), "x"),
           ((x[:0], z.copy(), 0.1, 3, 0.1, beta, obj), "x"),
           ((x, z.copy(), -1.0, 3, 0.1, beta, obj), "gamma")]
    for args, name in bad:
        with pytest.raises(ValueError, match=name):
            core.fit_reference(*args)
    with pytest.raises(TypeError, match="z"):
        core.fit_reference(x, z.astype(np.float32), 0.1, 3, 0.1, beta, obj)
    with pytest.raises(TypeError, match="kmeans_c"):
        core.fit_reference(x.astype(np.float64), z.copy(), 0.1, 3, 0.1, beta, obj, x[:5].copy())
    for c, name in [(x[:4].copy(), "kmeans_c"), (x[:5, :2].copy(), "kmeans_c")]:
        with pytest.raises(ValueError, match=name):
            core.fit_reference(x, z.copy(), 0.1, 3, 0.1, beta, obj, c)
    with pytest.raises(ValueError, match="max_iter"):
        core.fit_reference(x, z.copy(), 0.1, 3, 0.1, beta, obj, x[:5].copy(), 0)
