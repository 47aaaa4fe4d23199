"""ShardedIndex on a local Ray cluster: identical results to one SpecIndex, dock loading, faults, HTTP."""
from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from lwengine import RKMESpec, SpecIndex  # noqa: E402
from lwengine.distributed import ShardedIndex, ShardUnavailableError, shard_of  # noqa: E402
from lwengine.dock import Dock  # noqa: E402
from lwengine.limits import ANY_GAMMA  # noqa: E402  (these markets mix gamma values)

OPTS = {"num_cpus": 0.25}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def make_spec(rng, K, d, gamma=0.1, scale=1.0):
    return RKMESpec(rng.normal(size=(K, d)) * scale, rng.dirichlet(np.ones(K)), gamma, 50)


def market(seed=0, n=360):
    """(id, spec, semantic) items: two gammas and two shapes, duplicates, a spec equal to a query, a non-finite one."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        d = 3 if i % 13 else 5
        gamma = 0.1 if i % 7 else 0.2
        sem = {"Name": {"Type": "String", "Values": f"model {i % 11}"}} if i % 4 == 0 else None
        items.append((f"lw{i:05d}", make_spec(rng, (1, 7, 4)[i % 3], d, gamma), sem))
    for j, src in enumerate((5, 17, 40, 5)):  # bit-identical copies of earlier specs (ties across shards)
        items.append((f"dup{j}", items[src][1], None))
    bad = make_spec(rng, 3, 3)
    bad.z[0, 0] = np.nan
    items.append(("nonfinite", bad, None))
    return items


def queries(items, seed=9):
    rng = np.random.default_rng(seed)
    qs = [make_spec(rng, K, 3) for K in (1, 7, 20)]
    qs.append(items[17][1])  # identical to a stored spec (dist 0.0, no mixture)
    qs.append(make_spec(rng, 5, 3, gamma=0.2))
    qs.append(make_spec(rng, 4, 5))
    return qs


def assert_same(a, b):
    assert [s.id for s in a.single] == [s.id for s in b.single]
    assert [s.dist for s in a.single] == [s.dist for s in b.single]
    assert [s.score for s in a.single] == [s.score for s in b.single]
    assert a.ranking == b.ranking
    assert np.array_equal(a.dists, b.dists)
    assert a.pool == b.pool
    assert a.nonfinite_dropped == b.nonfinite_dropped
    assert a.mixture_dropped == b.mixture_dropped
    assert a.mixture_search == b.mixture_search
    assert a.scores_before_filter == b.scores_before_filter
    assert a.exact_recomputed == b.exact_recomputed
    assert (a.mixture is None) == (b.mixture is None)
    if a.mixture is not None:
        assert a.mixture.ids == b.mixture.ids
        assert a.mixture.weights == b.mixture.weights
        assert a.mixture.mmd2 == b.mixture.mmd2 and a.mixture.score == b.mixture.score


@pytest.fixture(scope="module")
def pair():
    items = market()
    single = SpecIndex()
    single.add_many(items)
    sx = ShardedIndex(3, actor_options=OPTS)
    sx.add_many(items[:150])
    for it in items[150:]:
        sx.add(*it)
    yield single, sx, items
    sx.close()


def test_routing_is_stable_blake2b():
    for id in ("00000001", "lw00042", "ünïcode"):
        h = int.from_bytes(hashlib.blake2b(id.encode(), digest_size=8).digest(), "little")
        assert shard_of(id, 7) == h % 7
    counts = np.bincount([shard_of(f"{i:08d}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900


def test_container(pair):
    single, sx, items = pair
    assert len(sx) == len(single)
    assert sx.ids() == single.ids()
    for id in ("lw00003", "dup2", "nonfinite"):
        assert id in sx
        a, b = sx.get(id), single.get(id)
        assert np.array_equal(a.z, b.z, equal_nan=True) and np.array_equal(a.beta, b.beta)
    assert "nope" not in sx
    info = sx.shard_info()
    assert sum(i["specs"] for i in info) == len(single) and all(i["specs"] > 0 for i in info)
    with pytest.raises(ValueError, match="duplicate id"):
        sx.add("lw00003", items[0][1])
    with pytest.raises(ValueError, match="duplicate id"):
        sx.add_many([("fresh", items[0][1]), ("fresh", items[1][1])])
    with pytest.raises(KeyError, match="nope"):
        sx.remove("nope")
    with pytest.raises(TypeError, match="id must be"):
        sx.add(3, items[0][1])
    assert len(sx) == len(single)


@pytest.mark.parametrize("screen", [None, True, False])
@pytest.mark.parametrize("method", ["greedy", "auto", None])
def test_search_identical(pair, method, screen):
    single, sx, items = pair
    qs = queries(items)
    got = sx.search_batch(qs, 3, method, screen=screen)
    for q, r in zip(qs, got):
        assert_same(r, single.search(q, 3, method, screen=screen))
    assert got[3].single[0].dist == 0.0
    if screen is not False:  # the big group (>= 256 specs over all shards) goes through the float32 scan
        assert any(r.exact_recomputed > 0 for r in got)


def test_search_semantic_and_restrict(pair):
    single, sx, items = pair
    q = queries(items)[1]
    sem = {"Name": {"Type": "String", "Values": "model 3"}}
    assert_same(sx.search(q, semantic=sem), single.search(q, semantic=sem))
    restrict = [i for i, _, _ in items[::-2]]
    from lwengine.search import search_batch

    assert_same(sx.search_batch([q], restrict=restrict)[0], search_batch(single, [q], restrict=restrict)[0])
    only = sx.search(None, semantic=sem)
    assert [s.id for s in only.single] == [s.id for s in single.search(None, semantic=sem).single]


@pytest.mark.parametrize("mode", ["certified", "brute"])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_topk_exact_merge(pair, mode, k):
    single, sx, items = pair
    for q in queries(items):
        got = sx.topk(q, k, mode)
        assert got == single.topk(q, k, "brute")
        assert sx.last_stats["n_specs"] == single.last_stats["n_specs"]
        assert len(sx.last_stats["shards"]) == 3


def test_mutations_keep_identity():
    items = market(seed=3, n=120)
    single, sx = SpecIndex(), ShardedIndex(2, actor_options=OPTS)
    try:
        for idx in (single, sx):
            idx.add_many(items)
            idx.remove("lw00010")
            idx.remove("dup1")
            idx.replace("lw00020", items[30][1])  # keeps its place in the order, now a duplicate
            idx.add("late", items[7][1], {"Name": {"Type": "String", "Values": "late one"}})
        rng = np.random.default_rng(4)
        z = rng.normal(size=(40, 3))
        off = np.arange(0, 41, 4)
        beta = np.full(40, 0.25)
        single.add_packed([f"pk{i}" for i in range(10)], z, beta, off, 0.1)
        sx.add_packed([f"pk{i}" for i in range(10)], z, beta, off, 0.1)
        assert sx.ids() == single.ids()
        for q in queries(items, seed=5):
            assert_same(sx.search(q, 4, "greedy"), single.search(q, 4, "greedy"))
            assert sx.topk(q, 6) == single.topk(q, 6, "brute")
    finally:
        sx.close()


def build_dock(path, items):
    d = Dock.init(path, gamma_policy=ANY_GAMMA)
    ids = d.add_specs([(s, sem, id) for id, s, sem in items if id != "nonfinite"])
    for i in ids[::9]:
        d.update(i, status=0)
    return d


def test_from_dock_dock_search_and_sync(tmp_path):
    items = market(seed=1, n=160)
    d = build_dock(tmp_path / "dock", items)
    sx = ShardedIndex.from_dock(tmp_path / "dock", 3, actor_options=OPTS)
    try:
        assert sorted(sx.ids()) == sorted(d._ensure_index().ids()) and len(sx) == len(d)
        qs = queries(items)
        sem = {"Name": {"Type": "String", "Values": "model 2"}}
        for status in (1, None, 0):
            for q in qs[:3]:
                assert_same(sx.dock_search(q, 3, status=status), d.search(q, 3, status=status))
            assert_same(sx.dock_search(qs[0], semantic=sem, status=status), d.search(qs[0], semantic=sem,
                                                                                         status=status))
        # writes go to the dock; the shards follow its generation
        d.remove(items[4][0])
        d.update(items[8][0], spec=items[50][1])
        new = d.add_specs([(items[60][1], None, "after-open")])
        assert new == ["after-open"]
        for q in qs[:3]:
            assert_same(sx.dock_search(q, 3, "auto"), d.search(q, 3, "auto"))
        assert "after-open" in sx and items[4][0] not in sx
    finally:
        sx.close()
        d.close()


def _stall(actor, seconds):
    """Keep the actor busy so that the next call is queued behind it (the kill then lands mid-query)."""
    return actor.__ray_call__.remote(lambda self: time.sleep(seconds))


def test_killed_shard_is_restarted_and_query_retried(tmp_path):
    items = market(seed=2, n=90)
    d = build_dock(tmp_path / "dock", items[:60])
    sx = ShardedIndex.from_dock(tmp_path / "dock", 3, actor_options=OPTS, max_restarts=2)
    single = SpecIndex()
    single.add_many([(i, s, sem) for i, s, sem in items[:60] if i != "nonfinite"])
    try:
        sx.add_many([(i, s) for i, s, _ in items[60:]])  # journaled direct adds must survive the restart
        single.add_many([(i, s) for i, s, _ in items[60:]])
        q = queries(items)[1]
        expected = single.search(q, 3)
        victim = sx.actors[1]
        before = sx.shard_info()[1]["incarnation"]
        _stall(victim, 1.0)
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("r", sx.search(q, 3)))
        t.start()
        time.sleep(0.3)  # the scan is queued behind the stall
        ray.kill(victim, no_restart=False)
        t.join(60)
        assert_same(box["r"], expected)
        assert sx.shard_info()[1]["incarnation"] != before
        assert sx.topk(q, 5) == single.topk(q, 5, "brute")
    finally:
        sx.close()
        d.close()


def test_dead_shard_gives_clear_error():
    items = market(seed=6, n=40)
    sx = ShardedIndex(3, actor_options=OPTS, max_restarts=0, restart_timeout=5)
    try:
        sx.add_many(items)
        ray.kill(sx.actors[2], no_restart=True)
        with pytest.raises(ShardUnavailableError, match="shard 2 of 3") as info:
            sx.search(queries(items)[0])
        assert info.value.shard == 2
    finally:
        sx.close()


def test_unjournaled_restart_is_refused():
    items = market(seed=7, n=40)
    sx = ShardedIndex(2, actor_options=OPTS, journal=False)
    try:
        sx.add_many(items)
        ray.kill(sx.actors[0], no_restart=False)
        with pytest.raises(ShardUnavailableError, match="shard 0 of 2.*journal=False"):
            sx.topk(queries(items)[0], 3)
    finally:
        sx.close()


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_shards must be >= 1"):
        ShardedIndex(0)
    with pytest.raises(TypeError, match="num_shards must be an integer"):
        ShardedIndex(2.0)
    with pytest.raises(FileNotFoundError, match="not a dock"):
        ShardedIndex(2, dock="/nonexistent/dock")


def test_http_search_through_shards(tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("multipart")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from lwengine.dock.server import create_app

    items = market(seed=8, n=50)
    d = build_dock(tmp_path / "dock", items)
    sx = ShardedIndex.from_dock(tmp_path / "dock", 2, actor_options=OPTS)
    try:
        q = queries(items)[0]
        files = {"statistical_specification": ("u.json", q.dumps().encode())}
        plain = TestClient(create_app(d)).post("/search", files=files).json()
        sharded = TestClient(create_app(d, search_fn=sx.dock_search)).post("/search", files=files).json()
        assert sharded == plain and plain["data"]["learnware_list_single"]
    finally:
        sx.close()
        d.close()
