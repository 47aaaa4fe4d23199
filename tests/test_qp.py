"""Simplex-constrained QP (_core.simplex_qp) against the fixtures and the numpy active-set twin."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lwengine import _backend, _reference, kernels

core = _backend.require_core()

QP_CASES = [
    "q01_n1", "q02_n1_scaled", "q03_n2", "q04_n2_vertex", "q05_n2_rank1_nonunique", "q06_n3",
    "q07_n3_zero_C", "q08_n5", "q09_n5_vertex", "q10_n10", "q11_n10_near_duplicates",
    "q12_n10_negative_C", "q13_n25", "q14_n25_exact_duplicates", "q15_n25_mixture", "q16_n50",
    "q17_n50_clustered", "q18_n50_vertex", "q19_n100", "q20_n100_first_beta_update", "q21_n100_far",
]


def kkt_violation(G, c, x, support_tol=0.0):
    """(feasibility, stationarity on the support, most negative bound multiplier), scaled."""
    g = G @ x - c
    S = x > support_tol
    t = g[S].mean()
    feas = max(abs(x.sum() - 1.0), max(0.0, -x.min()))
    stat = np.abs(g[S] - t).max()
    mult = max(0.0, -(g[~S] - t).min()) if (~S).any() else 0.0
    return feas, stat, mult


def objective(G, c, x):
    return 0.5 * x @ G @ x - c @ x


@pytest.mark.parametrize("case", QP_CASES)
def test_qp_fixtures(fixtures_dir, case):
    root = fixtures_dir / "qp" / case
    man = json.loads((root / "manifest.json").read_text())
    G, c = np.load(root / "K.npy"), np.load(root / "C.npy")
    x, obj = kernels.simplex_qp(G, c)
    exp = man["expected"]
    ref_hi = max(exp["obj"], exp["obj_recomputed"])
    ref_lo = min(exp["obj"], exp["obj_recomputed"])
    assert obj <= ref_hi + 1e-9 * abs(ref_hi) + 1e-15  # never worse than the interior-point reference
    assert obj >= ref_lo - 1e-8  # and not implausibly better
    assert obj == pytest.approx(objective(G, c, x), rel=1e-12, abs=1e-15)
    scale = max(1.0, np.abs(G).max(), np.abs(c).max())
    feas, stat, mult = kkt_violation(G, c, x)
    assert feas <= 1e-12 and stat <= 1e-10 * scale and mult <= 1e-10 * scale
    if man["compare_x"]:
        xr = np.asarray(exp["x"])
        # the reference is itself not fully converged: bound its distance by its own KKT residual
        _, r_stat, r_mult = kkt_violation(G, c, xr, support_tol=1e-6)
        lam_min = man.get("K_min_eigenvalue") or np.linalg.eigvalsh(G).min()
        bound = max(1e-6, 10 * (r_stat + r_mult) * np.sqrt(len(c)) / lam_min)
        assert np.abs(x - xr).max() <= bound
    if case == "q14_n25_exact_duplicates":
        rows = {}
        for i in range(len(c)):
            rows.setdefault(G[i].tobytes() + c[i].tobytes(), []).append(i)
        dup = [grp for grp in rows.values() if len(grp) > 1]
        assert dup
        for grp in dup:
            assert np.all(x[grp] == x[grp[0]])


def _gauss_problem(rng, n, d=5, dup=0):
    z = rng.standard_normal((n - dup, d))
    if dup:
        z = np.concatenate([z, z[rng.integers(0, n - dup, dup)]])
    data = rng.standard_normal((200, d)) + 0.3
    G = _reference.gauss_kernel(z, z, 0.2)
    c = _reference.gauss_kernel(z, data, 0.2).mean(1)
    return G, c


@pytest.mark.parametrize("n", [1, 2, 7, 30, 100])
def test_qp_matches_reference_pd(n):
    rng = np.random.default_rng(n)
    G, c = _gauss_problem(rng, n)
    x, obj = kernels.simplex_qp(G, c)
    xr, objr = _reference.simplex_qp(G, c)
    assert obj == pytest.approx(objr, rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(x, xr, atol=1e-8)


@pytest.mark.parametrize("n,dup", [(10, 3), (40, 15), (100, 30)])
def test_qp_singular_with_duplicates(n, dup):
    rng = np.random.default_rng(n + dup)
    G, c = _gauss_problem(rng, n, dup=dup)
    x, obj = kernels.simplex_qp(G, c)
    _, objr = _reference.simplex_qp(G, c)
    assert obj == pytest.approx(objr, rel=1e-12, abs=1e-15)
    feas, stat, mult = kkt_violation(G, c, x)
    assert feas <= 1e-12 and stat <= 1e-10 and mult <= 1e-10


@pytest.mark.parametrize("seed", range(6))
def test_qp_indefinite_small(seed):
    rng = np.random.default_rng(seed)
    n = 3 + seed % 4
    A = rng.standard_normal((n, n))
    G = 0.5 * (A + A.T)  # indefinite
    c = rng.standard_normal(n)
    x, obj = kernels.simplex_qp(G, c)
    xr, objr = _reference.simplex_qp(G, c)
    assert x.min() >= 0 and abs(x.sum() - 1) <= 1e-12
    assert obj == pytest.approx(objr, rel=1e-12, abs=1e-14)


def test_qp_nonsymmetric_g_uses_g_times_x():
    # symmetric G takes the row-axpy gradient; any other G the general one (g = G x, as the twin)
    rng = np.random.default_rng(3)
    G, c = _gauss_problem(rng, 30)
    G = G + 1e-6 * rng.standard_normal(G.shape)
    x, _ = kernels.simplex_qp(G, c)
    feas, stat, mult = kkt_violation(G, c, x)  # near-stationary for g = G x - c, not for G' x
    assert feas <= 1e-12 and stat <= 1e-7 and mult <= 1e-7
    assert kkt_violation(G.T, c, x)[1] > 10 * stat


def test_qp_rank_one_nonunique():
    G = np.ones((4, 4))
    c = np.full(4, 0.5)
    x, obj = kernels.simplex_qp(G, c)
    assert obj == pytest.approx(0.5 - 0.5, abs=1e-15)
    assert x.min() >= 0 and abs(x.sum() - 1) <= 1e-12
    np.testing.assert_array_equal(x, np.full(4, 0.25))  # all rows identical: merged, split evenly


def test_qp_batch_matches_single():
    rng = np.random.default_rng(1)
    probs = [_gauss_problem(rng, 12) for _ in range(5)]
    Gs = np.stack([p[0] for p in probs])
    cs = np.stack([p[1] for p in probs])
    xs, objs = kernels.simplex_qp_batch(Gs, cs)
    for b, (G, c) in enumerate(probs):
        x, obj = kernels.simplex_qp(G, c)
        assert np.array_equal(xs[b], x) and objs[b] == obj
    xs0, objs0 = kernels.simplex_qp_batch(Gs[:0], cs[:0])
    assert xs0.shape == (0, 12) and objs0.shape == (0,)


def test_qp_bad_input():
    G, c = np.eye(3), np.zeros(3)
    with pytest.raises(ValueError, match="G"):
        kernels.simplex_qp(np.eye(2), c)
    with pytest.raises(ValueError, match="finite"):
        kernels.simplex_qp(np.full((3, 3), np.nan), c)
    with pytest.raises(ValueError, match="c"):
        kernels.simplex_qp(np.zeros((0, 0)), np.zeros(0))
    with pytest.raises(ValueError, match="x_out"):
        core.simplex_qp(G, c, np.zeros(2))
    with pytest.raises(TypeError, match="G must have dtype float64, got float32"):
        core.simplex_qp(np.eye(3, dtype=np.float32), c, np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        core.simplex_qp(np.full((3, 3), np.inf), c, np.zeros(3))
    with pytest.raises(ValueError, match="Gs"):
        core.simplex_qp_batch(np.zeros((2, 3, 3)), np.zeros((3, 3)), np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="objs_out"):
        core.simplex_qp_batch(np.zeros((3, 3, 3)), np.zeros((3, 3)), np.zeros((3, 3)), np.zeros(2))
