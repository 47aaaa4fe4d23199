"""The call team (kernels.call_team): one awake helper thread for the kernel calls of a search.
Results never depend on it; it belongs to one thread at a time, survives exceptions and forks (tests/test_fork.py)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex, _backend, kernels


def _core():
    return _backend.require_core()


def _team_possible():
    with kernels.call_team() as on:
        return on


def _market(n=400, K=30, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(4, d))
    index = SpecIndex()
    index.add_many([(f"{i:05d}", RKMESpec(centres[i % 4] + rng.normal(size=(K, d)), rng.dirichlet(np.ones(K)), 0.1))
                    for i in range(n)])
    user = RKMESpec(np.concatenate([centres[0] + rng.normal(size=(K // 2, d)),
                                    centres[1] + rng.normal(size=(K - K // 2, d))]), np.full(K, 1 / K), 0.1)
    return index, user


def _answer(r):
    return [(s.id, s.dist, s.score) for s in r.single], None if r.mixture is None else \
        (r.mixture.ids, r.mixture.weights, r.mixture.score)


def test_kernels_give_the_same_bits_on_the_team(simd):
    rng = np.random.default_rng(1)
    sizes = rng.integers(0, 60, 300)
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    z = rng.normal(size=(int(off[-1]), 12))
    b = rng.uniform(size=len(z))
    q = rng.normal(size=(50, 12))
    qb = rng.uniform(size=50)
    centres, radii = kernels.spec_balls(z, off)
    labels, gc = kernels.bound_groups(q)
    specs = rng.permutation(300)

    def run():
        return [kernels.cross_inner(q, qb, [0, 50], z, b, off, 0.3),
                kernels.cross_inner(q.astype(np.float32), qb, [0, 50], z.astype(np.float32), b, off, 0.3),
                kernels.self_inner(z, b, off, 0.3),
                kernels.ball_bound(q, qb, [0, 50], centres, radii, 0.3),
                kernels.projection_bound(q, qb, labels, gc, z.astype(np.float32), off, specs, centres, radii, 0.3)]

    plain = run()
    with kernels.call_team() as on:
        assert _core().call_team_active() == on
        teamed = run()
    assert not _core().call_team_active()
    for a, t in zip(plain, teamed):
        assert a.tobytes() == t.tobytes()


def test_search_on_the_team_equals_without(monkeypatch):
    index, user = _market()
    with_team = _answer(index.search(user))
    monkeypatch.setattr(kernels, "call_team", lambda: _NoTeam())
    assert _answer(index.search(user)) == with_team


class _NoTeam:
    def __enter__(self):
        return False

    def __exit__(self, *exc):
        return False


def test_one_thread_holds_it_nesting_and_exceptions():
    if not _team_possible():
        pytest.skip("no call team here (one thread allowed, or the threads share one core)")
    seen = {}
    with kernels.call_team() as outer:
        with kernels.call_team() as inner:  # nested: the outer block keeps it
            assert outer and not inner and _core().call_team_active()

        def other():
            with kernels.call_team() as got:
                seen["other"] = (got, _core().call_team_active())
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert _core().call_team_active()
    assert seen["other"] == (False, False)
    with pytest.raises(KeyError):
        with kernels.call_team():
            raise KeyError("inside")
    assert not _core().call_team_active()
    with kernels.call_team() as again:
        assert again


def test_concurrent_searches_agree():
    index, user = _market(seed=2)
    want = _answer(index.search(user))
    got = [None] * 4

    def work(k):
        got[k] = _answer(index.search(user))
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(g == want for g in got)
