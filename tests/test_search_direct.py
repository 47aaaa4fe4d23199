"""Direct float64 scan in the screened search: a screened sample shows which scanned specs will be
reported singles, and those like them (by their ball bound) are computed in float64 at once.  The
answer must be the one of the all-float64 search and of the screen-first search; only the work done
differs."""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex, search as search_mod


def _market(seed, n, families, K=8, d=6, scale=2.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(families, d))
    index = SpecIndex()
    index.add_many([(f"{i:08d}", RKMESpec(centres[i % families] + rng.normal(size=(K, d)),
                                          rng.dirichlet(np.ones(K)), 0.1)) for i in range(n)])
    return index, centres, rng


def _answer(r):
    """Everything but the scores, exactly: ids and distances of the singles, the pool, the mixture."""
    mix = None if r.mixture is None else (r.mixture.ids, r.mixture.weights, r.mixture.mmd2)
    return [(s.id, s.dist) for s in r.single], r.pool, mix


def _same(a, b):
    # the scores also see the mean of every distance, whose unreported terms keep their float32
    # error in a screened search (docs/search.md): as in tests/test_search_screen.py, to 1e-9
    assert _answer(a) == _answer(b)
    np.testing.assert_allclose([s.score for s in a.single], [s.score for s in b.single], rtol=0, atol=1e-9)
    assert (a.mixture is None) == (b.mixture is None)
    if a.mixture is not None:
        assert abs(a.mixture.score - b.mixture.score) <= 1e-9


@pytest.fixture
def small_direct(monkeypatch):
    monkeypatch.setattr(search_mod, "DIRECT_MIN_SPECS", 200)
    monkeypatch.setattr(search_mod, "DIRECT_SAMPLE", 64)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("method", ["greedy", "auto"])
def test_direct_scan_gives_the_float64_answer(small_direct, monkeypatch, seed, method):
    index, centres, rng = _market(seed, n=600, families=2)
    user = RKMESpec(np.concatenate([centres[0] + rng.normal(size=(5, 6)), centres[1] + rng.normal(size=(5, 6))]),
                    np.full(10, 0.1), 0.1)
    fast = index.search(user, method=method)
    assert fast.exact_direct > 0  # the market is built so that nearly every spec is reported
    full = index.search(user, method=method, screen=False)
    monkeypatch.setattr(search_mod, "DIRECT_FLOAT64", False)
    screened = index.search(user, method=method)
    assert screened.exact_direct == 0
    _same(fast, full)
    _same(fast, screened)
    assert np.abs(np.sort(fast.dists) - np.sort(full.dists)).max() < 1e-5  # unreported: within the screen bound


@pytest.mark.parametrize("families", [3, 4])
def test_direct_scan_of_the_nearest_specs_only(small_direct, families):
    # one family of several is near the user: the ball bounds tell its specs (taken in float64 at
    # once) from the others (screened), as learned on the sample
    index, centres, rng = _market(4, n=600, families=families, scale=3.0)
    user = RKMESpec(centres[0] + rng.normal(size=(10, 6)), np.full(10, 0.1), 0.1)
    r = index.search(user)
    assert 0 < r.exact_direct < len(index) - search_mod.DIRECT_SAMPLE
    _same(r, index.search(user, screen=False))


def test_no_direct_scan_when_few_specs_are_left_to_scan(small_direct):
    index, centres, rng = _market(4, n=600, families=6, scale=6.0)
    far_off = RKMESpec(centres[0] + rng.normal(size=(10, 6)), np.full(10, 0.1), 0.1)
    r = index.search(far_off)
    assert r.pruned > 0 and len(index) - r.pruned < search_mod.DIRECT_MIN_SPECS
    assert r.exact_direct == 0
    _same(r, index.search(far_off, screen=False))


def test_no_direct_scan_for_a_restricted_search(small_direct):
    from lwengine.search import search_batch
    index, centres, rng = _market(5, n=600, families=2)
    user = RKMESpec(centres[0] + rng.normal(size=(10, 6)), np.full(10, 0.1), 0.1)
    some = index.ids()[::7]
    r = search_batch(index, [user], restrict=some)[0]
    assert r.exact_direct == 0
    full = search_batch(index, [user], restrict=some, screen=False)[0]
    _same(r, full)
