"""``precision="float64"`` on image search, search_batch and topk (issue 16 item 1): dists equal to
``lw.dist(user, precision="float64")``, the float64 ranking; the default unchanged."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lwengine
from lwengine.specs import kernel_family
from lwengine.specs.image import RKMEImageSpec

REPO = Path(__file__).resolve().parents[1]
FIX = REPO.parent / "shared" / "fixtures" / "learnware-0.4.0.post1-image" / "search"
pytestmark = pytest.mark.skipif(not (FIX / "manifest.json").exists(), reason="image fixtures not available")


@pytest.fixture(scope="module")
def market():
    m = json.loads((FIX / "manifest.json").read_text())
    specs = [(e["id"], RKMEImageSpec.load(FIX / e["file"])) for e in m["market"]]
    idx = lwengine.SpecIndex()
    for i, s in specs:
        idx.add(i, s)
    users = {}
    for r in m["results"]:
        users.setdefault(r["user"], RKMEImageSpec.load(FIX / r["user_file"]))
    # users with their own z too (fresh copies of the market's non-canonical specs): the general kernel path
    foreign = [RKMEImageSpec.load(FIX / e["file"]) for e in m["market"]]
    foreign = [u for u in foreign if not u.canonical]
    assert foreign and all(u.canonical for u in users.values())
    return idx, dict(specs), list(users.values()) + foreign


def _oracle(specs, user):
    """(ids ascending by float64 dist, dists) over the specs comparable with ``user`` (same channels)."""
    got = {i: s.dist(user, precision="float64") for i, s in specs.items() if s.channels == user.channels}
    ids = sorted(got, key=lambda i: (got[i], list(specs).index(i)))
    return ids, np.array([got[i] for i in ids])


def test_float64_search_is_the_float64_dist(market):
    idx, specs, users = market
    for u in users:
        want_ids, want_d = _oracle(specs, u)
        res = idx.search(u, max_search_num=3, precision="float64")
        assert res.ranking == want_ids
        np.testing.assert_allclose(res.dists, want_d, rtol=0, atol=1e-12)
        top = idx.topk(u, 4, precision="float64")
        assert [i for i, _ in top] == want_ids[:4]
        np.testing.assert_allclose([d for _, d in top], want_d[:4], rtol=0, atol=1e-12)
    batch = idx.search_batch(users, max_search_num=3, precision="float64")
    for u, res in zip(users, batch):
        want_ids, want_d = _oracle(specs, u)
        assert res.ranking == want_ids
        np.testing.assert_allclose(res.dists, want_d, rtol=0, atol=1e-12)
    assert kernel_family.current_precision() == "float32"  # the scope is left


def test_float64_differs_from_float32(market):
    """The option changes something: float32 dists carry ~1e-7 noise the float64 ones do not."""
    idx, specs, users = market
    u = users[0]
    d32 = np.array(idx.search(u, precision="float32").dists)
    d64 = np.array(idx.search(u, precision="float64").dists)
    assert np.abs(np.sort(d32) - np.sort(d64)).max() > 1e-12


def test_default_unchanged(market):
    idx, specs, users = market
    for u in users:
        a = idx.search(u, max_search_num=3)
        b = idx.search(u, max_search_num=3, precision="float32")
        assert a.ranking == b.ranking
        np.testing.assert_array_equal(a.dists, b.dists)
        assert a.to_dict() == b.to_dict()
        # the float32 search is the spec's own float32 dist (the reference's semantics)
        got = dict(zip(a.ranking, a.dists))
        for i in a.ranking:
            assert abs(got[i] - specs[i].dist(u)) < 1e-12
        assert idx.topk(u, 3) == idx.topk(u, 3, precision="float32")
    for x, y in zip(idx.search_batch(users), idx.search_batch(users, precision="float32")):
        assert x.to_dict() == y.to_dict()


@pytest.mark.parametrize("bad", ["float16", "FLOAT64", 64, None])
def test_bad_precision(market, bad):
    idx, _, users = market
    for call in (lambda: idx.search(users[0], precision=bad), lambda: idx.search_batch(users, precision=bad),
                 lambda: idx.topk(users[0], 2, precision=bad)):
        with pytest.raises(ValueError, match="precision"):
            call()
    assert kernel_family.current_precision() == "float32"
