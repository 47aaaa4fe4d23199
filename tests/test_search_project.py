"""The projection bound (kernels.projection_bound): a rigorous bound on sum_a w_a max_b k(a, z_b) that
is tighter than the covering ball's for specs far from a group of query points, and the search's use
of it to skip screening such specs (search.PROJECT_FAR) with the same answer as the float64 search."""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex, kernels, search as search_mod



def _same_answer(fast, full):  # as tests/test_search_prune.py
    assert [(s.id, s.dist) for s in fast.single] == [(s.id, s.dist) for s in full.single]
    np.testing.assert_allclose([s.score for s in fast.single], [s.score for s in full.single], rtol=0, atol=1e-12)
    assert fast.pool == full.pool
    assert (fast.mixture is None) == (full.mixture is None)
    if full.mixture is not None:
        assert (fast.mixture.ids, fast.mixture.weights, fast.mixture.mmd2, fast.mixture.score) == \
               (full.mixture.ids, full.mixture.weights, full.mixture.mmd2, full.mixture.score)


def _oracle(q, w, z, off, specs, gamma):
    """sum_a w_a max_b k(a, z_b) per spec, in float64 from the rows."""
    out = []
    for i in specs:
        zb = z[off[i]:off[i + 1]]
        if len(zb) == 0:
            out.append(0.0)
            continue
        sq = ((q[:, None, :] - zb[None]) ** 2).sum(2)
        out.append(float((w * np.exp(-gamma * sq.min(1))).sum()))
    return np.array(out)


def _case(rng):
    d, K, N = int(rng.integers(1, 25)), int(rng.integers(1, 40)), int(rng.integers(1, 30))
    scale = 10 ** rng.uniform(-3, 3)
    sizes = rng.integers(0, 20, N)
    if rng.uniform() < 0.3:  # one row per spec, a group per query point: the bound is (nearly) exact
        K, sizes = int(rng.integers(1, 9)), np.ones(N, dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    centres = rng.normal(size=(N, d)) * scale * rng.uniform(0, 5)
    z = np.concatenate([centres[i] + rng.normal(size=(sizes[i], d)) * scale for i in range(N)] + [np.zeros((0, d))])
    q = rng.normal(size=(K, d)) * scale * rng.uniform(0, 5) + rng.normal(size=d) * scale
    w = rng.uniform(size=K)
    gamma = 10 ** rng.uniform(-2, 1) / scale ** 2
    specs = rng.integers(0, N, int(rng.integers(1, 2 * N + 1)))
    return q, w, z, off, specs, gamma


def test_projection_bound_is_an_upper_bound_and_tighter_than_the_ball(simd):
    rng = np.random.default_rng(5)
    for _ in range(150):
        q, w, z, off, specs, gamma = _case(rng)
        centres, radii = kernels.spec_balls(z, off)
        labels, group_centres = kernels.bound_groups(q, int(rng.integers(1, 9)))
        true = _oracle(q, w, z, off, specs, gamma)
        ball = kernels.ball_bound(q, w, [0, len(q)], centres, radii, gamma)[0][specs]
        for rows in (z, z.astype(np.float32)):  # the float64 rows or their float32 copy
            b = kernels.projection_bound(q, w, labels, group_centres, rows, off, specs, centres, radii, gamma)
            assert (b >= true).all()
            assert (b <= ball * (1 + 1e-9) + 1e-290).all()


def test_projection_bound_separates_what_the_ball_cannot():
    """20-dimensional clouds: a spec's rows fill little of their ball, so along the direction to a
    distant group of query points the bound is orders of magnitude tighter."""
    rng = np.random.default_rng(0)
    d = 20
    z = rng.normal(size=(100, d))
    q = np.concatenate([rng.normal(size=(50, d)) + 12.0 / np.sqrt(d), rng.normal(size=(50, d)) - 12.0 / np.sqrt(d)])
    q[:, 0] += 14.0
    off = np.array([0, 100])
    centres, radii = kernels.spec_balls(z, off)
    labels, group_centres = kernels.bound_groups(q)
    w = np.full(100, 0.01)
    ball = kernels.ball_bound(q, w, [0, 100], centres, radii, 0.1)[0]
    b = kernels.projection_bound(q, w, labels, group_centres, z, off, [0], centres, radii, 0.1)
    true = _oracle(q, w, z, off, [0], 0.1)
    assert true <= b < 1e-2 * ball


def test_projection_bound_non_finite_rows_fall_back_to_the_ball(simd):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(30, 4)) * 1e30
    z[3, 1] = 1e39  # finite in float64, inf in its float32 copy
    off = np.array([0, 10, 30])
    q = rng.normal(size=(6, 4)) * 1e30 + 5e30
    w = np.ones(6)
    centres, radii = kernels.spec_balls(z, off)
    labels, group_centres = kernels.bound_groups(q, 3)
    gamma = 1e-60
    true = _oracle(q, w, z, off, [0, 1], gamma)
    ball = kernels.ball_bound(q, w, [0, 6], centres, radii, gamma)[0]
    with np.errstate(over="ignore"):
        z32 = z.astype(np.float32)
    for rows in (z, z32):
        b = kernels.projection_bound(q, w, labels, group_centres, rows, off, [0, 1], centres, radii, gamma)
        assert np.isfinite(b).all() and (b >= true).all()
    nan_rows = z32.copy()
    nan_rows[12, 0] = np.nan  # a row the float64 centre and radius do not describe: no projected gap
    b = kernels.projection_bound(q, w, labels, group_centres, nan_rows, off, [1], centres, radii, gamma)
    assert b[0] >= ball[1] * (1 - 1e-9)


@pytest.mark.parametrize("bad, match", [
    (dict(q_w=[-1.0, 1.0]), "q_w"),
    (dict(q_group=[0, 2]), "q_group"),
    (dict(group_centers=np.zeros((9, 2)), q_group=[0, 8]), "group_centers"),
    (dict(group_centers=[[np.nan, 0.0]]), "group_centers"),
    (dict(q_z=[[np.inf, 0.0], [0.0, 0.0]]), "q_z"),
    (dict(specs=[2]), "specs"),
    (dict(radii=[0.5, -1.0]), "radii"),
    (dict(centers=[[0.0, 0.0], [np.nan, 0.0]]), "centers"),
    (dict(z=np.zeros((3, 3))), "dimension"),
    (dict(offsets=[0, 1, 2]), "offsets"),
])
def test_projection_bound_rejects_bad_input(bad, match):
    args = dict(q_z=[[0.0, 0.0], [1.0, 0.0]], q_w=[1.0, 1.0], q_group=[0, 0], group_centers=[[0.5, 0.0]],
                z=np.zeros((3, 2)), offsets=[0, 1, 3], specs=[0, 1], centers=[[0.0, 0.0], [0.0, 0.0]],
                radii=[0.5, 0.5], gamma=0.1)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        kernels.projection_bound(**args)


def test_bound_groups():
    rng = np.random.default_rng(1)
    q = np.concatenate([rng.normal(size=(30, 5)) + 20, rng.normal(size=(20, 5)) - 20])
    labels, centres = kernels.bound_groups(q)
    assert labels.dtype == np.int64 and len(labels) == 50 and len(centres) <= kernels.MAX_BOUND_GROUPS
    assert set(labels.tolist()) == set(range(len(centres)))
    for g in range(len(centres)):  # each group's centre is its mean, and no group spans the two clouds
        np.testing.assert_allclose(centres[g], q[labels == g].mean(0))
        assert len(set(labels[:30]) & set(labels[30:])) == 0
    again = kernels.bound_groups(q)
    assert (again[0] == labels).all() and (again[1] == centres).all()
    same = kernels.bound_groups(np.ones((7, 3)))  # identical points: one group
    assert same[0].tolist() == [0] * 7 and same[1].shape == (1, 3)
    few = kernels.bound_groups(rng.normal(size=(3, 2)))
    assert len(few[1]) == 3


def _market(seed, n, K, d=20, clusters=8):
    """The benchmark's shape: Gaussian task clusters in 20 dimensions, a user from two of them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(clusters, d))
    index = SpecIndex()
    index.add_many([(f"{i:08d}", RKMESpec(centres[i % clusters] + rng.normal(size=(K, d)),
                                          rng.dirichlet(np.ones(K)), 0.1)) for i in range(n)])
    z = np.concatenate([centres[0] + rng.normal(size=(K // 2, d)), centres[1] + rng.normal(size=(K - K // 2, d))])
    return index, RKMESpec(z, np.full(K, 1 / K), 0.1)


@pytest.mark.parametrize("n, K, seed, direct", [(600, 30, 1, False), (600, 30, 2, False), (3000, 50, 1, True)])
def test_projected_search_equals_float64(monkeypatch, n, K, seed, direct):
    index, user = _market(seed, n, K)
    fast = index.search(user)
    monkeypatch.setattr(search_mod, "PROJECT_FAR", False)
    ball_only = index.search(user)
    full = index.search(user, screen=False)
    assert fast.pruned > ball_only.pruned  # the market is built so that the projections prune more
    assert (fast.exact_direct > 0) == direct
    _same_answer(fast, full)
    _same_answer(ball_only, full)
    # the extras, completed on first use, are those of an unpruned search
    assert sorted(fast.ranking) == sorted(full.ranking)
    assert np.abs(np.sort(fast.dists) - np.sort(full.dists)).max() < 1e-5
