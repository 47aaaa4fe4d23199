"""lwengine.compat.learnware: imports without the learnware package; with it, the drop-in searcher is
driven through a real market (zips on disk, sqlite database in a tmp dir) against EasyStatSearcher."""
from __future__ import annotations

import json
import logging
import zipfile

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex
from lwengine.compat import learnware as compat


def test_module_imports_and_reports_availability():
    assert isinstance(compat.available(), bool)
    if not compat.available():
        with pytest.raises(RuntimeError, match="learnware"):
            compat.make_searcher()
        with pytest.raises(RuntimeError, match="learnware"):
            compat.PackedStatSearcher  # noqa: B018 - the lazy class
    with pytest.raises(AttributeError):
        compat.no_such_name  # noqa: B018


def test_restricted_search_follows_given_order():
    from lwengine.search import search_batch

    rng = np.random.default_rng(2)
    index = SpecIndex()
    spec = RKMESpec(rng.normal(size=(5, 3)), np.full(5, 0.2), 0.1)
    index.add("a", spec)
    index.add("b", spec)  # identical: an exact tie, broken by the given list order
    index.add("c", RKMESpec(rng.normal(size=(5, 3)) + 2, np.full(5, 0.2), 0.1))
    user = RKMESpec(rng.normal(size=(4, 3)), np.full(4, 0.25), 0.1)
    r = search_batch(index, [user], restrict=["c", "b", "a"])[0]
    assert r.ranking == ["b", "a", "c"]
    r = search_batch(index, [user], restrict=["a", "c"])[0]
    assert r.ranking == ["a", "c"]


# ------------------------------------------------------------------------------ real market
TABLE = "RKMETableSpecification"
YAML = """model:
  class_name: Model
  kwargs: {}
stat_specifications:
  - module_path: learnware.specification
    class_name: %s
    file_name: rkme.json
    kwargs: {}
"""
MODEL = """import numpy as np
from learnware.model import BaseModel


class Model(BaseModel):
    def __init__(self):
        super().__init__(input_shape=(%d,), output_shape=(1,))

    def fit(self, X, y):
        pass

    def predict(self, X):
        return np.zeros((len(X), 1))
"""


def _semantic(name, scenario, d):
    return {
        "Data": {"Values": ["Table"], "Type": "Class"},
        "Task": {"Values": ["Regression"], "Type": "Class"},
        "Library": {"Values": ["Scikit-learn"], "Type": "Class"},
        "Scenario": {"Values": [scenario], "Type": "Tag"},
        "Model": {"Values": ["Others"], "Type": "Optional"},
        "License": {"Values": ["MIT"], "Type": "Class"},
        "Name": {"Values": name, "Type": "String"},
        "Description": {"Values": f"learnware {name}", "Type": "String"},
        "Input": {"Dimension": d, "Description": {str(i): f"x{i}" for i in range(d)}},
        "Output": {"Dimension": 1, "Description": {"0": "y"}},
    }


def _package(path, spec_json: str, d: int, legacy: bool = False):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("learnware.yaml", YAML % ("RKMEStatSpecification" if legacy else TABLE))
        z.writestr("__init__.py", MODEL % d)
        z.writestr("rkme.json", spec_json)
    return str(path)


def _market_specs(seed=7, d=6):
    """~30 specs: 4 task families, K in {1, 5, 9, 13}, two duplicates, two gamma=0.05 variants, a NaN
    spec and a decoy of another dim; plus users."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.5, size=(4, d))

    def data(mix, n):
        return np.concatenate([centers[t] + rng.normal(size=(int(round(w * n)), d)) for t, w in mix])

    items = []  # (spec, scenario, legacy)
    for i in range(26):
        t = i % 4
        gamma = 0.05 if i in (5, 18) else 0.1
        X = data([(t, 1.0)], int(rng.integers(40, 100)))
        spec = RKMESpec.fit(X, K=int(rng.choice([1, 5, 9, 13])), gamma=gamma, seed=int(rng.integers(1 << 30)))
        items.append((spec.dumps(), ["Business", "Financial"][t % 2], i % 7 == 3))
    items.append(items[2])  # duplicates
    items.append(items[9])
    bad = json.loads(items[4][0])
    bad["z"][0][0] = float("nan")
    items.append((json.dumps(bad), "Business", False))  # non-finite: dropped by both
    items.append((RKMESpec.fit(rng.normal(size=(50, d + 2)), K=5, seed=1).dumps(), "Business", False))
    users = {
        "single": RKMESpec.fit(data([(0, 1.0)], 200), K=20, seed=2),
        "two": RKMESpec.fit(data([(1, 0.6), (2, 0.4)], 200), K=20, seed=3),
        "three": RKMESpec.fit(data([(0, 0.5), (1, 0.3), (3, 0.2)], 300), K=25, seed=4),
        "same_as_learnware": RKMESpec.loads(items[6][0]),
    }
    return items, users


def _pairs(res):
    return ([(it.learnware.id, float(it.score)) for it in res.get_single_results()],
            [([lw.id for lw in m.learnwares], float(m.score)) for m in res.get_multiple_results()])


def _assert_same(tag, ours, theirs, index=None):
    """Same singles and mixtures.  With ``index`` (the searcher's mirror), bit-identical duplicate
    learnwares may swap places inside a mixture: the QP gives them equal weight and their order is
    then the reference solver's noise (docs/compat.md); the mixture's specs must still come in the
    same order and hold the same ids."""
    (s1, m1), (s2, m2) = _pairs(ours), _pairs(theirs)
    assert [i for i, _ in s1] == [i for i, _ in s2], tag
    np.testing.assert_allclose([s for _, s in s1], [s for _, s in s2], rtol=0, atol=1e-6, err_msg=tag)
    if index is None:
        assert [ids for ids, _ in m1] == [ids for ids, _ in m2], tag
    else:
        def spec_bits(i):
            spec = index.get(i)
            return spec.z.tobytes(), spec.beta.tobytes(), float(spec.gamma)

        assert [sorted(ids) for ids, _ in m1] == [sorted(ids) for ids, _ in m2], tag
        assert [[spec_bits(i) for i in ids] for ids, _ in m1] == [[spec_bits(i) for i in ids] for ids, _ in m2], tag
    np.testing.assert_allclose([s for _, s in m1], [s for _, s in m2], rtol=0, atol=1e-6, err_msg=tag)


@pytest.fixture
def learnware_market(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("learnware.market")
    if not compat.available():
        pytest.skip("learnware's EasyStatSearcher is unavailable")
    from learnware.config import C

    monkeypatch.setattr(C, "market_root_path", str(tmp_path / "markets"))
    monkeypatch.setattr(C, "database_url", f"sqlite:///{tmp_path / 'db'}")
    return compat.instantiate_learnware_market(market_id="lwengine_compat", name="easy", rebuild=True)


def test_drop_in_searcher_in_a_real_market(learnware_market, tmp_path, caplog):
    from learnware.market import (BaseUserInfo, EasyFuzzSemanticSearcher, EasyStatSearcher,
                                  SeqCombinedSearcher)

    caplog.set_level(logging.ERROR)
    market = learnware_market
    organizer = market.learnware_organizer
    ours = market.learnware_searcher.stat_searcher_list[0]
    assert isinstance(ours, compat.PackedStatSearcher) and isinstance(ours, EasyStatSearcher)
    reference = EasyStatSearcher(organizer)
    ref_pipeline = SeqCombinedSearcher(organizer, [EasyFuzzSemanticSearcher(organizer)], [reference])

    items, users = _market_specs()
    d = users["single"].z.shape[1]
    ids = []
    for k, (spec_json, scenario, legacy) in enumerate(items):
        zp = _package(tmp_path / f"lw{k}.zip", spec_json, d, legacy)
        lid, status = market.add_learnware(zp, _semantic(f"lw{k}", scenario, d), checker_names=["EasySemanticChecker"])
        assert lid is not None and status == 0, (k, status)  # semantic check only: added as "not usable"
        ids.append(lid)
    assert len(market) == len(items)
    assert len(ours.index) == len(items)  # packed eagerly through the organizer hook

    def check(tag):
        mixtures = 0
        for name, user in users.items():
            info = BaseUserInfo(stat_info={TABLE: compat.to_reference_spec(user)})
            for method in ("greedy", "auto"):
                for m in (3, 5):
                    t = f"{tag} {name} {method} {m}"
                    lws = organizer.get_learnwares()
                    want = reference(lws, info, m, method)
                    _assert_same(t, ours(lws, info, m, method), want, ours.index)
                    mixtures += bool(want.get_multiple_results())
                    _assert_same(t + " market", market.search_learnware(info, max_search_num=m, search_method=method),
                                 ref_pipeline(info, max_search_num=m, search_method=method), ours.index)
        # a semantic pre-filter (Scenario tag) hands over a sub-list: restricted to it
        info = BaseUserInfo(semantic_spec={"Scenario": {"Values": ["Financial"], "Type": "Tag"}},
                            stat_info={TABLE: compat.to_reference_spec(users["two"])})
        got, want = market.search_learnware(info), ref_pipeline(info)
        _assert_same(tag + " semantic", got, want)
        assert all(organizer.get_learnware_by_ids(i).specification.get_semantic_spec()["Scenario"]["Values"]
                   == ["Financial"] for i in [x for x, _ in _pairs(got)[0]])
        assert mixtures >= 4, f"{tag}: only {mixtures} runs with a mixture"  # not a singles-only check

    check("initial")
    first = _pairs(market.search_learnware(BaseUserInfo(stat_info={TABLE: compat.to_reference_spec(users["two"])})))

    # delete through the market: the index follows at once
    gone = [x for x, _ in first[0][:2]]
    for lid in gone:
        assert market.delete_learnware(lid)
        assert lid not in ours.index
    assert len(ours.index) == len(items) - 2
    check("after delete")

    # update a learnware's package through the market: the new spec is packed under the same id
    target = ids[10]
    new = RKMESpec.fit(np.random.default_rng(9).normal(size=(80, d)), K=7, seed=3)
    zp = _package(tmp_path / "updated.zip", new.dumps(), d)
    status = market.update_learnware(target, zip_path=zp, semantic_spec=_semantic("upd", "Business", d),
                                     checker_names=["EasySemanticChecker"])
    assert status == 0
    np.testing.assert_array_equal(ours.index.get(target).z, new.z)
    np.testing.assert_array_equal(ours.index.get(target).beta, new.beta)
    check("after update")

    # a market reload rebuilds the learnware objects: the mirror is rebuilt from them
    market.reload_market()
    assert sorted(ours.index.ids()) == sorted(organizer.get_learnware_ids())
    check("after reload")

    # changes the hooks do not see (a learnware object replaced behind the organizer's back) are
    # caught at search time: the spec object is re-packed before ranking
    replacement = compat.to_reference_learnware(ids[12], new)
    organizer.learnware_list[ids[12]] = replacement
    info = BaseUserInfo(stat_info={TABLE: compat.to_reference_spec(new)})
    got = ours(organizer.get_learnwares(), info)
    np.testing.assert_array_equal(ours.index.get(ids[12]).z, new.z)
    _assert_same("replaced object", got, reference(organizer.get_learnwares(), info))


def test_unregistered_or_unknown_users_fall_back_to_the_reference(learnware_market):
    from learnware.market import BaseUserInfo

    ours = learnware_market.learnware_searcher.stat_searcher_list[0]
    info = BaseUserInfo(stat_info={"SomeUnregisteredSpecification": None})  # text / table: lwengine's
    calls = []

    def fake(self, learnware_list, user_info, max_search_num=5, search_method="greedy"):
        calls.append(search_method)
        return "reference"

    base = type(ours).__mro__[1]
    orig = base.__call__
    base.__call__ = fake
    try:
        assert ours([], info, 5, "auto") == "reference"
        assert ours([], BaseUserInfo(stat_info={TABLE: None}), 0, "greedy") == "reference"  # max_search_num < 1
    finally:
        base.__call__ = orig
    assert calls == ["auto", "greedy"]


def test_install_rejects_a_market_without_easy_stat_searcher(learnware_market):
    searcher = learnware_market.learnware_searcher
    searcher.stat_searcher_list[:] = []
    with pytest.raises(ValueError, match="EasyStatSearcher"):
        compat.install(learnware_market)
