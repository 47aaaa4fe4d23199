"""Image learnwares in the index, search, topk, dock, HTTP, package reader and CLI (issue 16 item 5).

Golden cases: ``../shared/fixtures/learnware-0.4.0.post1-image/search`` (EasyStatSearcher over a
14-learnware image market, 3 users x {greedy, auto}).
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lwengine
from lwengine.specs import registry
from lwengine.specs.image import NNGP, RKMEImageSpec, canonical_dists, canonical_z, NetConfig
from lwengine.specs.image import family as image_family

REPO = Path(__file__).resolve().parents[1]
FIX = REPO.parent / "shared" / "fixtures" / "learnware-0.4.0.post1-image" / "search"
needs_fixtures = pytest.mark.skipif(not (FIX / "manifest.json").exists(), reason="image fixtures not available")

# The reference's float32 dists carry noise: ours (float32 NNGP entries, the reference's canonical Grams)
# differ from them by up to ~1e-7 for foreign z (fixtures README).  Two learnwares whose reference dists
# differ by less than twice that may rank either way.
DIST_NOISE = 1e-7
TYPE = "RKMEImageSpecification"


def _manifest():
    return json.loads((FIX / "manifest.json").read_text())


def _market():
    m = _manifest()
    return m, [(e["id"], RKMEImageSpec.load(FIX / e["file"])) for e in m["market"]]


def _ranking_agrees(got_ids, ref_ids, ref_d):
    """Equal rankings except between learnwares whose reference dists differ by < 2 DIST_NOISE."""
    assert sorted(got_ids) == sorted(ref_ids)
    dist = dict(zip(ref_ids, ref_d))
    pos = {i: p for p, i in enumerate(got_ids)}
    for a in range(len(ref_ids)):
        for b in range(a + 1, len(ref_ids)):
            if pos[ref_ids[a]] > pos[ref_ids[b]]:
                assert abs(dist[ref_ids[a]] - dist[ref_ids[b]]) < 2 * DIST_NOISE, (ref_ids[a], ref_ids[b])


def test_registered():
    e = registry.get(TYPE)
    assert e.cls is RKMEImageSpec and e.kernel == "nngp" and e.family is NNGP
    assert e.match_key((3, 32, 32)) == e.match_key((3, 32, 32)) != e.match_key((1, 32, 32))
    np.testing.assert_array_equal(e.distance_transform(np.array([0.0, 5e-5])), [0.0, 1 - np.exp(-1.0)])
    assert TYPE in registry.package_type_names()


@needs_fixtures
def test_fixture_search_market():
    m, market = _market()
    idx = lwengine.SpecIndex()
    for i, s in market:
        idx.add(i, s)
    for r in m["results"]:
        u = RKMEImageSpec.load(FIX / r["user_file"])
        res = idx.search(u, max_search_num=r["max_search_num"], method=r["method"])
        tag = f"{r['user']} {r['method']}"
        assert sorted(res.ranking) == sorted(r["after_shape_filter"]), tag
        _ranking_agrees(res.ranking, r["single_sorted_ids"], r["single_sorted_raw_dist"])
        ref = dict(zip(r["single_sorted_ids"], r["single_sorted_raw_dist"]))
        np.testing.assert_allclose(res.dists, [ref[i] for i in res.ranking], rtol=0, atol=DIST_NOISE, err_msg=tag)
        assert [s.id for s in res.single] == [x["id"] for x in r["result_singles"]], tag
        np.testing.assert_allclose([s.score for s in res.single], [x["score"] for x in r["result_singles"]],
                                   atol=1e-3, err_msg=tag)
        want_mix = r["result_multiple"]
        if want_mix:
            assert res.mixture is not None and res.mixture.ids == want_mix[0]["ids"], tag
            assert abs(res.mixture.score - want_mix[0]["score"]) < 1e-3, tag
        else:
            assert res.mixture is None, tag


@needs_fixtures
def test_index_save_load_and_topk(tmp_path):
    m, market = _market()
    idx = lwengine.SpecIndex()
    idx.add_many(market)
    path = tmp_path / "img.lwi"
    idx.save(path)
    back = lwengine.SpecIndex.load(path)
    assert sorted(g.key for g in back.groups()) == sorted(g.key for g in idx.groups())
    for i, s in market:
        g = back.get(i)
        np.testing.assert_array_equal(g.z, s.z)
        np.testing.assert_array_equal(g.beta, s.beta.astype(np.float64))
        assert g.net_depth == s.net_depth and g.canonical == s.canonical
    for r in m["results"]:
        u = RKMEImageSpec.load(FIX / r["user_file"])
        a, b = idx.search(u, max_search_num=3, method=r["method"]), back.search(u, max_search_num=3, method=r["method"])
        assert a.ranking == b.ranking and np.array_equal(a.dists, b.dists)
        for mode in ("brute", "certified"):
            top = back.topk(u, 4, mode)
            assert [t[0] for t in top] == a.ranking[:4]
            np.testing.assert_array_equal([t[1] for t in top], a.dists[:4])


def _canonical_market(n, K, C=3, seed=0, depth=3):
    rng = np.random.default_rng(seed)
    Ks = rng.integers(max(1, K // 2), K + 1, size=n) if K > 1 else np.ones(n, dtype=int)
    specs = [RKMEImageSpec(canonical_z(int(k), NetConfig(C)), rng.dirichlet(np.ones(int(k))),
                           model_config={"net_depth": depth}) for k in Ks]
    return specs


def test_canonical_fast_path_equals_per_pair(monkeypatch):
    specs = _canonical_market(40, 8, C=1)
    idx = lwengine.SpecIndex()
    idx.add_many([(f"s{i}", s) for i, s in enumerate(specs)])
    assert [g.key[2] for g in idx.groups()] == [-3.0] and idx.groups()[0].z.shape[1] == 0
    rng = np.random.default_rng(5)
    users = [RKMEImageSpec(canonical_z(6, NetConfig(1)), rng.dirichlet(np.ones(6))),  # canonical user
             RKMEImageSpec(rng.normal(size=(5, 1, 32, 32)), rng.dirichlet(np.ones(5)))]  # foreign z
    for u in users:
        per_pair = np.array([s.dist(u) for s in specs])  # the reference's bookkeeping, pair by pair
        exact = idx.search(u, method=None)
        d_exact = dict(zip(exact.ranking, exact.dists))
        np.testing.assert_array_equal([d_exact[f"s{i}"] for i in range(len(specs))], per_pair)  # bit-exact
        monkeypatch.setattr(image_family, "EXACT_SUM_ELEMS", 0)  # the beta_i . v path
        fast = idx.search(u, method=None)
        monkeypatch.undo()
        d_fast = dict(zip(fast.ranking, fast.dists))
        np.testing.assert_allclose([d_fast[f"s{i}"] for i in range(len(specs))], per_pair, rtol=0, atol=1e-15)
    # the same-K batch function agrees too
    same_k = [s for s in specs if s.K == specs[0].K]
    b = np.stack([s.beta for s in same_k])
    np.testing.assert_allclose(canonical_dists(users[1], b, depth=3), [s.dist(users[1]) for s in same_k], atol=1e-15)


def test_bulk_store_prefix_ranking_matches_full():
    K, n = 6, 70_000  # above search.PREFIX_MIN: the ranked prefix path
    rng = np.random.default_rng(1)
    beta = rng.dirichlet(np.ones(K), size=n)
    idx = lwengine.SpecIndex()
    idx.add_store([f"{i:06d}" for i in range(n)], TYPE, (1, 32, 32), -3.0, np.empty((n * K, 0)), beta.reshape(-1),
                  np.arange(n + 1) * K)
    u = RKMEImageSpec(canonical_z(K, NetConfig(1)), beta[123] * 0.5 + beta[7] * 0.5)
    res = idx.search(u, max_search_num=3)
    d = idx.groups()[0].self_ip[:n] - 2 * (beta @ _cross_v(u, K)) + u.inner_prod(u)
    order = np.lexsort((np.arange(n), d))
    assert res.ranking[:50] == [f"{i:06d}" for i in order[:50]]
    np.testing.assert_allclose(res.dists[:50], d[order[:50]], atol=1e-15)
    probe = idx.get("000123")
    assert probe.canonical and abs(probe.dist(u) - float(d[123])) < 1e-15


def _cross_v(u, K):
    from lwengine.specs.image import canonical_grams

    _, cross = canonical_grams(1, 3, max(K, u.K))
    return cross[:K, : u.K].astype(np.float64) @ u.beta


# ------------------------------------------------------------------------------ dock, packages, HTTP
YAML = ("model:\n  class_name: Model\n  kwargs: {}\nstat_specifications:\n  - module_path: learnware.specification\n"
        "    class_name: RKMEImageSpecification\n    file_name: rkme.json\n    kwargs: {}\n")


def _package(spec) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("learnware.yaml", YAML)
        zf.writestr("rkme.json", spec.dumps())
        zf.writestr("__init__.py", "# model\n")
    return buf.getvalue()


@needs_fixtures
def test_dock_image_packages_search_and_http(tmp_path):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from lwengine.dock import Dock
    from lwengine.dock.server import create_app
    from lwengine.package import read_package

    m, market = _market()
    (tmp_path / "p.zip").write_bytes(_package(market[0][1]))
    assert isinstance(read_package(tmp_path / "p.zip").spec, RKMEImageSpec)
    dock = Dock.init(tmp_path / "dock")
    ids = {}
    for i, s in market:
        ids[dock.add_package(data=_package(s))] = i
    r = m["results"][2]  # u02: g06 itself, greedy
    u = RKMEImageSpec.load(FIX / r["user_file"])
    res = dock.search(u, max_search_num=3)
    want = lwengine.SpecIndex()
    want.add_many(market)
    ref = want.search(u, max_search_num=3)
    assert [ids[x] for x in res.ranking] == ref.ranking and np.array_equal(res.dists, ref.dists)
    got = dock.get_spec(next(iter(ids)))
    assert isinstance(got, RKMEImageSpec) and np.array_equal(got.z, market[0][1].z)
    dock.close()
    dock = Dock(tmp_path / "dock")  # reopened: the records decode to image specs
    assert [ids[x] for x in dock.search(u, max_search_num=3).ranking] == ref.ranking
    token = "t"
    c = TestClient(create_app(dock, token=token), raise_server_exceptions=False)
    blob = u.dumps().encode()
    own = c.post("/search", files={"statistical_specification": ("u.json", blob)}, data={"limit": "100"})
    assert own.status_code == 200, own.text
    assert [ids[x["learnware_id"]] for x in own.json()["data"]["learnware_list_single"]] == \
        [s.id for s in ref.single]
    auth = c.post("/auth/login_by_token", json={"email": "me@example.org", "token": token}).json()["data"]["token"]
    bw = c.post("/engine/search_learnware", headers={"Authorization": "Bearer " + auth},
                files={"statistical_specification": ("u.json", blob)}, data={"semantic_specification": "{}"})
    assert bw.status_code == 200 and bw.json()["code"] == 0, bw.text
    assert [ids[x["learnware_id"]] for x in bw.json()["data"]["learnware_list_single"]] == [s.id for s in ref.single]
    dock.close()


# ------------------------------------------------------------------------------------------ CLI
def test_cli_fit_image(tmp_path):
    pytest.importorskip("torch")
    from lwengine.cli import main

    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, size=(6, 1, 32, 32)).astype(np.uint8)
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "spec.json"
    assert main(["spec", "fit-image", str(tmp_path / "x.npy"), "--out", str(out), "--K", "3", "--steps", "1"]) == 0
    s = registry.load_spec(str(out))
    assert isinstance(s, RKMEImageSpec) and s.K == 3 and s.canonical
    assert main(["spec", "show", str(out)]) == 0
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 32, 32)))
    assert main(["spec", "fit-image", str(bad), "--out", str(tmp_path / "o.json")]) != 0


# ------------------------------------------------------------------------------------------ compat
def test_compat_reads_reference_image_spec_objects():
    from types import SimpleNamespace

    from lwengine.compat.learnware import from_reference_spec

    rng = np.random.default_rng(3)
    z = rng.normal(size=(4, 3, 32, 32)).astype(np.float32)
    cfg = {"k": 2, "mu": 0, "sigma": None, "net_width": 128, "net_depth": 2}
    obj = SimpleNamespace(z=z, beta=rng.dirichlet(np.ones(4)), n_models=16, model_config=cfg, msg=None, type=TYPE)
    s = from_reference_spec(obj)
    assert isinstance(s, RKMEImageSpec) and s.net_depth == 2 and np.array_equal(s.z, z)


@needs_fixtures
def test_compat_searcher_matches_easy_stat_searcher():
    from lwengine.compat import learnware as compat

    if not compat.available():
        pytest.skip("learnware is not importable")
    from learnware.market import BaseUserInfo
    from learnware.market.easy import EasyStatSearcher

    m, market = _market()
    lws = [compat.to_reference_learnware(i, s) for i, s in market]
    r = m["results"][0]
    u = compat.to_reference_spec(RKMEImageSpec.load(FIX / r["user_file"]))
    info = BaseUserInfo(stat_info={TYPE: u})
    ours = compat.searcher_class()(None)(lws, info, max_search_num=3, search_method="greedy")
    ref = EasyStatSearcher(None)(lws, info, max_search_num=3, search_method="greedy")
    assert [x.learnware.id for x in ours.get_single_results()] == [x.learnware.id for x in ref.get_single_results()]
