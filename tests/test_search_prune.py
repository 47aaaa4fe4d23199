"""Far-spec pruning in the screened search: specs bounded by their covering balls instead of scanned
give the same answer as the all-float64 search, and the extras are completed on first use."""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex, kernels, search as search_mod
from lwengine.search import SCREEN_MIN_SPECS


def _market(seed, n, K=8, d=6, families=6, scale=6.0):
    """Well separated families: most specs are far from a user drawn near one family."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(families, d))
    index = SpecIndex()
    for i in range(n):
        z = centres[i % families] + rng.normal(size=(K, d))
        index.add(f"{i:08d}", RKMESpec(z, rng.dirichlet(np.ones(K)), 0.1))
    return index, centres, rng


def _same_answer(fast, full):
    assert [(s.id, s.dist) for s in fast.single] == [(s.id, s.dist) for s in full.single]
    np.testing.assert_allclose([s.score for s in fast.single], [s.score for s in full.single], rtol=0, atol=1e-12)
    assert fast.pool == full.pool
    assert (fast.mixture is None) == (full.mixture is None)
    if full.mixture is not None:
        assert (fast.mixture.ids, fast.mixture.weights, fast.mixture.mmd2, fast.mixture.score) == \
               (full.mixture.ids, full.mixture.weights, full.mixture.mmd2, full.mixture.score)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", ["greedy", "auto"])
def test_pruned_search_equals_float64(seed, method):
    index, centres, rng = _market(seed, n=SCREEN_MIN_SPECS + 300)
    user = RKMESpec(centres[seed % len(centres)] + rng.normal(size=(8, 6)), np.full(8, 1 / 8), 0.1)
    fast = index.search(user, method=method)
    full = index.search(user, method=method, screen=False)
    assert fast.pruned > 0  # the market is built so that the far families are pruned
    _same_answer(fast, full)


def test_pruned_extras_are_completed_on_first_use(monkeypatch):
    index, centres, rng = _market(7, n=SCREEN_MIN_SPECS + 300)
    user = RKMESpec(centres[1] + rng.normal(size=(8, 6)), np.full(8, 1 / 8), 0.1)
    fast = index.search(user)
    monkeypatch.setattr(search_mod, "PRUNE_FAR", False)
    unpruned = index.search(user)
    full = index.search(user, screen=False)
    assert fast.pruned > 0 and unpruned.pruned == 0
    assert len(fast.ranking) == len(full.ranking) == len(index)
    # every distance within the float32 screening error of the float64 one, as without pruning
    assert np.abs(np.asarray(fast.dists) - np.asarray(unpruned.dists)).max() < 1e-5
    assert np.abs(np.sort(fast.dists) - np.sort(full.dists)).max() < 1e-5
    assert sorted(fast.ranking) == sorted(full.ranking)
    np.testing.assert_allclose(fast.scores_before_filter, unpruned.scores_before_filter, rtol=0, atol=1e-5)


def test_mean_dependent_scores_scan_the_pruned_specs(monkeypatch):
    """When the scores may depend on the mean of every distance, the pruned specs are scanned first."""
    index, centres, rng = _market(3, n=SCREEN_MIN_SPECS + 300)
    user = RKMESpec(centres[2] + rng.normal(size=(8, 6)), np.full(8, 1 / 8), 0.1)
    calls = []
    real = search_mod.Refiner.complete

    def spy(self, d):
        calls.append(self.pruned is not None)
        return real(self, d)

    monkeypatch.setattr(search_mod, "_mean_free", lambda *a, **k: False)
    monkeypatch.setattr(search_mod.Refiner, "complete", spy)
    fast = index.search(user)
    assert calls and calls[0]
    _same_answer(fast, index.search(user, screen=False))


def test_mean_free_decides_only_when_every_mean_agrees():
    class R:  # a refiner with given errors
        def __init__(self, err):
            self.err = np.asarray(err, dtype=float)

        mean_interval = search_mod.Refiner.mean_interval

    cand = np.ones(4, dtype=bool)
    # lo far below a tenth of every possible mean: eps = lo whatever the mean
    assert search_mod._mean_free(np.array([0.01, 1.0, 1.0, 1.0]), cand, R([0, 0.1, 0.1, 0]), 0.01, None, None)
    # lo above a tenth of every mean and the max score below 0.92: eps from lo and hi
    d = np.array([0.5, 0.9, 1.0, 1.0])
    assert search_mod._mean_free(d, cand, R([0, 0.01, 0, 0]), 0.5, None, None)
    # the max score at or above 0.92 (eps = a tenth of the mean): the scores need the mean
    d = np.array([1.0, 1.1, 1.1, 30.0])  # mean 8.3: lo >= 0.83, max score 29 / 29.17 >= 0.92
    assert not search_mod._mean_free(d, cand, R([0, 1e-3, 1e-3, 0]), 1.0, None, None)
    # an error interval that straddles lo = a tenth of the mean: undecided
    d = np.array([0.1, 1.0, 1.0, 1.0])
    assert not search_mod._mean_free(d, cand, R([0, 0.1, 0.1, 0]), 0.1, None, None)
    # a transform (image specs) is never decided here
    assert not search_mod._mean_free(np.array([0.01, 1.0]), np.ones(2, bool), R([0, 0]), 0.01, None, lambda x: x)


def test_ball_bound_is_an_upper_bound():
    rng = np.random.default_rng(3)
    for trial in range(20):
        d = int(rng.integers(1, 12))
        sizes = rng.integers(0, 9, size=30)
        off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        z = rng.normal(size=(int(off[-1]), d)) * rng.uniform(0.1, 4) + rng.normal(size=d) * rng.uniform(0, 40)
        centres, radii = kernels.spec_balls(z, off)
        q = rng.normal(size=(int(rng.integers(1, 20)), d)) * 3 + rng.normal(size=d) * rng.uniform(0, 40)
        w = rng.uniform(size=len(q))
        g = float(rng.uniform(0.01, 2))
        B = kernels.ball_bound(q, w, [0, len(q)], centres, radii, g)[0]
        for i in range(len(sizes)):
            zb = z[off[i]:off[i + 1]]
            if len(zb) == 0:
                continue
            assert (np.sqrt(((zb - centres[i]) ** 2).sum(1)) <= radii[i]).all()
            true = (w * np.exp(-g * ((q[:, None, :] - zb[None]) ** 2).sum(2)).max(1)).sum()
            assert B[i] >= true


def test_ball_bound_is_an_upper_bound_at_any_scale(simd):
    """The float32 form (inputs shifted to the query's mean) and the float64 fallback (coordinates
    beyond 1e17 after the shift, extreme gamma) both bound the weighted largest kernel values."""
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(150):
        d, N, K = int(rng.integers(1, 30)), int(rng.integers(1, 60)), int(rng.integers(1, 40))
        scale, shift = 10 ** rng.uniform(-20, 20), rng.normal(size=d) * 10 ** rng.uniform(-3, 25)
        sizes = rng.integers(0, 12, N) if rng.uniform() < 0.5 else np.ones(N, dtype=np.int64)  # 1 row: tight
        off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        centres = rng.normal(size=(N, d)) * scale * rng.uniform(0, 6) + shift
        z = np.concatenate([centres[i] + rng.normal(size=(sizes[i], d)) * scale for i in range(N)] + [np.zeros((0, d))])
        q = rng.normal(size=(K, d)) * scale * rng.uniform(0, 6) + shift + rng.normal(size=d) * scale
        w = rng.uniform(size=K) * 10 ** rng.uniform(-5, 5)
        gamma = 10 ** rng.uniform(-3, 2) / scale ** 2
        c, r = kernels.spec_balls(z, off)
        B = kernels.ball_bound(q, w, [0, K], c, r, gamma)[0]
        for i in range(N):
            zb = z[off[i]:off[i + 1]]
            if len(zb):
                assert B[i] >= (w * np.exp(-gamma * ((q[:, None, :] - zb[None]) ** 2).sum(2).min(1))).sum()
                checked += 1
    assert checked > 1000


@pytest.mark.parametrize("bad, match", [(dict(q_w=[-1.0]), "q_w"), (dict(radii=[np.nan]), "radii"),
                                        (dict(q_z=[[np.inf, 0.0]]), "q_z")])
def test_ball_bound_rejects_bad_input(bad, match):
    args = dict(q_z=[[0.0, 0.0]], q_w=[1.0], q_offsets=[0, 1], centers=[[1.0, 1.0]], radii=[0.5], gamma=0.1)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        kernels.ball_bound(**args)


def test_pruned_batch_with_removed_specs_equals_float64():
    index, centres, rng = _market(11, n=SCREEN_MIN_SPECS + 400)
    for i in range(0, 600, 7):
        index.remove(f"{i:08d}")
    users = [RKMESpec(centres[j] + rng.normal(size=(8, 6)), np.full(8, 1 / 8), 0.1) for j in (0, 3)]
    fast = index.search_batch(users)
    for u, f in zip(users, fast):
        assert f.pruned > 0
        _same_answer(f, index.search(u, screen=False))
