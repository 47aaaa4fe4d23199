"""Adaptive Nyström sketch size (SketchParams.grow): grows only where the probe says brute force."""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex
from lwengine.scale import SketchParams, make_market, make_queries


def _point_cloud_market(n, d=8, K=20, F=16, spread=0.7, seed=0):
    """Families of point clouds: spec centres around 16 family centres, points spread ``spread``."""
    rng = np.random.default_rng(seed)
    fc = rng.normal(scale=4.0, size=(F, d))
    cen = fc[rng.integers(0, F, size=n)] + rng.normal(size=(n, d))
    z = (cen[:, None, :] + spread * rng.normal(size=(n, K, d))).reshape(n * K, d)
    b = rng.dirichlet(np.full(K, 5.0), size=n).reshape(-1)
    idx = SpecIndex()
    idx.add_packed([f"s{i}" for i in range(n)], z, b, np.arange(0, n * K + 1, K), 0.1)
    queries = [RKMESpec(cen[i] + spread * rng.normal(size=(K, d)), np.full(K, 1.0 / K), 0.1)
               for i in rng.integers(0, n, 3)]
    return idx, queries


def _group(idx):
    return next(iter(idx._groups.values()))


def _ids(res):
    return [r[0] for r in res]


def test_grows_until_the_sketch_prunes_and_stays_exact():
    idx, queries = _point_cloud_market(1500)
    idx.build_sketch(m=32, probe=300, brute_share=0.5, grow=False)
    assert _group(idx).sketch.regime == "brute"
    idx.build_sketch(m=32, probe=300, brute_share=0.5, grow_gain=0.1)
    sk = _group(idx).sketch
    shares = [s["resid_share_median"] for s in sk.sizing if "resid_share_median" in s]
    assert sk.regime == "sketch" and sk.landmarks.shape[0] > 32
    assert len(shares) >= 2 and all(b < a for a, b in zip(shares, shares[1:]))  # each step helped
    assert [s["m"] for s in sk.sizing][:2] == [32, 64]
    for q in queries:
        got = idx.topk(q, 5)
        assert idx.last_stats["fallback"] != "brute_regime"
        reg = next(iter(idx.last_stats["regimes"].values()))
        assert reg["m"] == sk.landmarks.shape[0] and reg["sizing"] == sk.sizing
        assert _ids(got) == _ids(idx.topk(q, 5, "brute"))


def test_memory_budget_and_m_max_stop_growth():
    idx, _ = _point_cloud_market(1500)
    for dtype, itemsize, budget in (("float32", 4, 0.1), ("float16", 2, 0.05)):  # the same bytes
        idx.build_sketch(m=32, probe=300, brute_share=0.5, grow_gain=0.1, memory_budget=budget, dtype=dtype)
        sk = _group(idx).sketch
        assert sk.regime == "brute" and "memory budget" in sk.sizing[-1]["decision"]
        assert sk.s.dtype == dtype
        z_bytes = _group(idx).z.nbytes
        assert all(itemsize * 1500 * s["m"] <= budget * z_bytes for s in sk.sizing if "r" in s)
    idx.build_sketch(m=32, probe=300, brute_share=0.5, grow_gain=0.1, m_max=64)
    sk = _group(idx).sketch  # 64 is tried; 128 would be needed at its rate of fall: not reachable
    assert sk.regime == "brute" and sk.landmarks.shape[0] == 32 and [s["m"] for s in sk.sizing][:2] == [32, 64]
    assert "reachable" in sk.sizing[-1]["decision"]
    idx.build_sketch(m=32, probe=300, brute_share=0.5, grow_gain=0.5)
    sk = _group(idx).sketch
    assert sk.landmarks.shape[0] == 32 and "< grow_gain" in sk.sizing[-1]["decision"]


def test_no_growth_where_the_default_prunes(tmp_path):
    idx, mk = make_market(3000, 8, 10, "families", seed=0)
    idx.build_sketch(m=256)
    grown = _group(idx).sketch
    idx.build_sketch(m=256, grow=False)
    plain = _group(idx).sketch
    assert plain.regime == "sketch" and len(grown.sizing) == 1
    assert grown.landmarks.tobytes() == plain.landmarks.tobytes() and grown.s.tobytes() == plain.s.tobytes()
    idx.build_sketch(m=64)  # grows (brute at 64): the decisions persist
    assert len(_group(idx).sketch.sizing) > 1
    idx.save(tmp_path / "i.lwe")
    back = SpecIndex.load(tmp_path / "i.lwe")
    assert _group(back).sketch.sizing == _group(idx).sketch.sizing
    q = make_queries(mk, 1)[0]
    assert _ids(back.topk(q, 5)) == _ids(idx.topk(q, 5, "brute"))


def test_sizing_params_validated():
    with pytest.raises(ValueError, match="m_max"):
        SketchParams(m_max=0)
    with pytest.raises(ValueError, match="memory_budget"):
        SketchParams(memory_budget=0)
    with pytest.raises(ValueError, match="grow_gain"):
        SketchParams(grow_gain=1.0)
    with pytest.raises(ValueError, match="grow_from"):
        SketchParams(grow_from=0.5)


def test_far_miss_stays_brute_without_trying():
    idx, _ = make_market(800, 20, 7, "overlap", seed=0)
    idx.build_sketch(m=32)
    sk = _group(idx).sketch
    assert sk.regime == "brute" and sk.landmarks.shape[0] == 32 and "grow_from" in sk.sizing[-1]["decision"]
