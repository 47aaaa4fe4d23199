"""The fit loop's native fast path: self-Gram, Z step from G, warm-started QP (vs the float64 twins)."""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import _backend, _reference, kernels
from lwengine.specs import table as spec

core = _backend.require_core()


@pytest.mark.parametrize("K,d", [(1, 1), (7, 3), (97, 20), (30, 65)])
def test_point_gram_matches_reference_and_is_symmetric(K, d):
    rng = np.random.default_rng(K + d)
    z = rng.standard_normal((K, d))
    z[-1] = z[0]  # a duplicate point: its row must equal row 0 bit for bit
    G = spec._point_gram(z, 0.1)
    np.testing.assert_allclose(G, _reference.gauss_kernel(z, z, 0.1), rtol=1e-13, atol=1e-15)
    assert np.array_equal(G, G.T)
    assert np.array_equal(G[-1], G[0])


def test_rs_step_from_gram_matches_reference():
    rng = np.random.default_rng(3)
    z, x = rng.standard_normal((40, 5)), rng.standard_normal((300, 5)).astype(np.float32)
    beta = rng.random(40)
    beta /= beta.sum()
    C, T = kernels.zx_moments(z, x, 0.2)
    out = np.empty_like(z)
    core.rs_step_from_gram(z, beta, C, T, spec._point_gram(z, 0.2), 0.2, 0.1, 1.0, out)
    np.testing.assert_allclose(out, _reference.rs_step_from_moments(z, beta, C, T, 0.2, 0.1), rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="G"):
        core.rs_step_from_gram(z, beta, C, T, np.eye(3), 0.2, 0.1, 1.0, out)


@pytest.mark.parametrize("n,dup", [(7, 0), (60, 0), (100, 0), (40, 10)])
def test_qp_warm_start_same_minimum(n, dup):
    rng = np.random.default_rng(n + dup)
    z = rng.standard_normal((n - dup, 5))
    if dup:
        z = np.concatenate([z, z[:dup]])
    G = _reference.gauss_kernel(z, z, 0.2)
    c = _reference.gauss_kernel(z, rng.standard_normal((200, 5)) + 0.3, 0.2).mean(1)
    _, objr = _reference.simplex_qp(G, c)
    x_cold, obj_cold = kernels.simplex_qp(G, c)
    # start from the solution of a perturbed problem, from a uniform point and from a vertex
    x_pert, _ = kernels.simplex_qp(G, c * (1 + 0.05 * rng.standard_normal(n)))
    for x0 in (x_pert, np.ones(n), np.eye(n)[n // 2] * 3.0):
        x, obj = kernels.simplex_qp(G, c, x0=x0)
        assert obj == pytest.approx(objr, rel=1e-12, abs=1e-15)
        assert x.min() >= 0 and abs(x.sum() - 1) <= 1e-12
        if not dup:  # G positive definite: the minimiser is unique
            np.testing.assert_allclose(x, x_cold, atol=1e-8)
        g = G @ x - c
        S = x > 0
        assert np.abs(g[S] - g[S].mean()).max() <= 1e-10
        assert (g[~S] - g[S].mean()).min(initial=0.0) >= -1e-10
    if dup:  # merged duplicates still share their weight equally
        for i in range(dup):
            assert x[i] == x[n - dup + i]


def test_qp_warm_start_bad_input():
    G, c = np.eye(3), np.zeros(3)
    with pytest.raises(ValueError, match="x0"):
        kernels.simplex_qp(G, c, x0=np.ones(2))
    with pytest.raises(ValueError, match="x0"):
        kernels.simplex_qp(G, c, x0=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="x0"):
        kernels.simplex_qp(G, c, x0=np.zeros(3))
    with pytest.raises(ValueError, match="x0"):
        kernels.simplex_qp(G, c, x0=[np.nan, 1.0, 1.0])
    with pytest.raises(ValueError, match="x0"):
        core.simplex_qp(G, c, np.zeros(3), np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="x0"):
        core.simplex_qp(G, c, np.zeros(3), np.zeros(3))
    # the twin accepts and ignores x0 (same signature)
    assert _reference.simplex_qp(G, c, x0=np.ones(3))[1] == pytest.approx(kernels.simplex_qp(G, c)[1])
