"""Text specifications (RKMETextSpecification) against the learnware 0.4.0.post1 text fixtures, the spec-type
registry, hetero-map table files, and text learnwares in the index, the dock, the HTTP search and the CLI."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lwengine
from lwengine import RKMESpec, RKMETextSpec, SpecIndex
from lwengine.cli import main
from lwengine.dock import Dock
from lwengine.specs import HeteroMapTableSpec, SpecType, detect_language, registry

TEXT = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "learnware-0.4.0.post1-text"
TABLE_FIX = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "learnware-0.4.0.post1"


@pytest.fixture(scope="module")
def text_dir() -> Path:
    if not TEXT.is_dir():
        pytest.skip(f"text fixtures not found at {TEXT}")
    return TEXT


def _manifest(text_dir, family):
    return json.loads((text_dir / family / "manifest.json").read_text())


def _spec(text_dir, case) -> RKMETextSpec:
    return lwengine.load_spec(text_dir / "generate" / case / "spec.json")


# ------------------------------------------------------------------------------ registry
def test_registry_lists_the_built_in_types():
    types = lwengine.spec_types()
    assert types[:3] == ["RKMETableSpecification", "RKMETextSpecification", "HeteroMapTableSpecification"]
    assert registry.get("RKMEStatSpecification") is registry.get("RKMETableSpecification")
    assert registry.entry_of(RKMETextSpec(np.zeros((1, 2)), [1.0])).type == "RKMETextSpecification"
    assert registry.get("RKMETextSpecification").kernel == "gaussian"
    names = registry.package_type_names()
    assert names["RKMETextSpecification"].cls is RKMETextSpec and names["RKMEStatSpecification"].cls is RKMESpec


def test_load_spec_picks_the_class_from_type():
    z, beta = np.arange(6.0).reshape(3, 2), np.full(3, 1 / 3)
    base = {"z": z.tolist(), "beta": beta.tolist(), "gamma": 0.1, "num_points": 3}
    assert type(lwengine.load_spec(base)) is RKMESpec  # no type: a table spec (older files)
    assert type(lwengine.load_spec(dict(base, type="RKMEStatSpecification"))) is RKMESpec
    t = lwengine.load_spec(dict(base, type="RKMETextSpecification"))
    assert type(t) is RKMETextSpec and t.language == []  # missing language -> []
    h = lwengine.load_spec({"z": z.tolist(), "beta": beta.tolist(), "embedding": None, "weight": None,
                            "gamma": 0.1, "type": "HeteroMapTableSpecification"})
    assert type(h) is HeteroMapTableSpec and h.num_points == 3
    with pytest.raises(ValueError, match="unknown spec type 'Nope'.*RKMETextSpecification"):
        lwengine.load_spec(dict(base, type="Nope"))
    with pytest.raises(ValueError, match="type must be 'RKMETableSpecification'"):
        RKMESpec.from_dict(dict(base, type="RKMETextSpecification"))
    with pytest.raises(ValueError, match="spec: language must hold strings"):
        lwengine.load_spec(dict(base, type="RKMETextSpecification", language=[1]))


def test_table_fixture_files_load_as_table_specs(fixtures_dir):
    files = sorted(fixtures_dir.rglob("*.json"))
    specs = []
    for f in files:
        d = json.loads(f.read_text())
        if isinstance(d, dict) and {"z", "beta", "gamma"} <= set(d):
            specs.append(lwengine.load_spec(f))
    assert specs and all(type(s) is RKMESpec for s in specs)


def test_register_refuses_a_taken_name_and_a_new_type_plugs_in(tmp_path):
    with pytest.raises(ValueError, match="already registered"):
        registry.register(SpecType("RKMETextSpecification", RKMETextSpec))

    class Shifted(RKMESpec):  # a toy type: table maths, its own type string, a distance transform
        __slots__ = ()
        spec_type = "ToyShiftedSpecification"

    entry = registry.register(SpecType("ToyShiftedSpecification", Shifted,
                                       distance_transform=lambda d: [x + 1.0 for x in d]))
    try:
        rng = np.random.default_rng(0)
        specs = [Shifted(rng.normal(size=(4, 3)), np.full(4, 0.25)) for _ in range(3)]
        index = SpecIndex()
        index.add_many([(f"s{i}", s) for i, s in enumerate(specs)])
        index.add("table", RKMESpec(specs[0].z, specs[0].beta))  # another type: never compared
        assert type(lwengine.load_spec(specs[0].to_dict())) is Shifted
        res = index.search(specs[0], max_search_num=2, method=None)
        assert "table" not in res.ranking and sorted(res.ranking) == ["s0", "s1", "s2"]
        assert type(index.get("s1")) is Shifted
        index.save(tmp_path / "i.lwe")
        assert type(SpecIndex.load(tmp_path / "i.lwe").get("s2")) is Shifted
    finally:
        registry.unregister(entry.type)
    with pytest.raises(ValueError, match="unknown spec type"):
        lwengine.load_spec(specs[0].to_dict())


# ------------------------------------------------------------------------------ the text spec
def test_text_json_round_trip_in_the_reference_format(text_dir, tmp_path):
    for case in _manifest(text_dir, "generate")["cases"]:
        s = _spec(text_dir, case["id"])
        assert isinstance(s, RKMETextSpec) and s.language == case["loaded_language"]
        s.save(tmp_path / "s.json")
        d = json.loads((tmp_path / "s.json").read_text())
        assert list(d) == case["json_key_order"]
        back = lwengine.load_spec(tmp_path / "s.json")
        assert np.array_equal(back.z, s.z) and np.array_equal(back.beta, s.beta) and back.language == s.language


def test_language_detection_matches_the_seeded_reference(text_dir):
    pytest.importorskip("langdetect")
    for case in _manifest(text_dir, "langdetect")["cases"]:
        assert detect_language(case["texts"]) == case["language_seed0"], case["id"]
        assert detect_language(case["texts"]) == case["language_seed0"]  # reproducible


def test_fit_from_init_z_reproduces_the_reference(text_dir):
    for case in _manifest(text_dir, "generate")["cases"]:
        d = text_dir / "generate" / case["id"]
        ref = _spec(text_dir, case["id"])
        call = case["call"]
        got = RKMETextSpec.fit(np.load(d / "embeddings.npy"), language=case["language"], K=call["reduced_set_size"],
                               gamma=call["gamma"], step_size=call["step_size"], steps=call["steps"],
                               init_z=np.load(d / "init_z.npy"))
        scale = 1.0 + np.abs(ref.z).max()
        assert got.K == case["K_effective"]
        assert np.abs(got.z - ref.z).max() / scale < 1e-8, case["id"]
        assert np.abs(got.beta - ref.beta).max() < 2e-5, case["id"]
        assert got.language == ref.language and got.num_points == ref.num_points


def test_fit_rules_and_errors(text_dir):
    emb = np.load(text_dir / "generate" / "t01_en_finance" / "embeddings.npy")
    s = RKMETextSpec.fit(emb, language=["en"], K=100, seed=0)  # K >= n -> 2n // 3
    assert s.K == 2 * len(emb) // 3 and s.language == ["en"] and type(s) is RKMETextSpec
    assert RKMETextSpec.size_cap is None and RKMESpec.size_cap == 1_310_720
    with pytest.raises(ValueError, match="needs embeddings"):
        RKMETextSpec.fit()
    with pytest.raises(ValueError, match="no embeddings: pass embeddings=, or encoder="):
        RKMETextSpec.fit(texts=["a b c"])
    with pytest.raises(TypeError, match="texts must be a list of strings"):
        RKMETextSpec.fit(emb, texts="one string")
    with pytest.raises(ValueError, match="rows but texts has"):
        RKMETextSpec.fit(emb, language=[], texts=["x"])
    with pytest.raises(TypeError, match="language must be a list"):
        RKMETextSpec.fit(emb, language="en")
    texts = [f"text {i}" for i in range(len(emb))]
    enc = RKMETextSpec.fit(texts=texts, encoder=lambda t: emb[: len(t)], language=["en"], K=10, seed=1)
    assert enc.K == 10 and enc.z.shape == (10, emb.shape[1])
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="sentence-transformers"):
            RKMETextSpec.fit(texts=texts, encoder="some/model")


def test_search_over_text_learnwares_reproduces_the_reference(text_dir):
    m = _manifest(text_dir, "search")
    index = SpecIndex()
    for lw in m["market"]:
        index.add(lw["id"], lwengine.load_spec((text_dir / "search" / lw["file"]).resolve()))
    table_twin = _spec(text_dir, "t01_en_finance")
    index.add("table-twin", RKMESpec(table_twin.z, table_twin.beta, table_twin.gamma, table_twin.num_points))
    for r in m["results"]:
        user = _spec(text_dir, r["user"])
        assert user.language == r["user_language"]
        res = index.search(user, max_search_num=3, method="greedy")
        assert res.ranking == [i for i, _ in r["single_sorted"]]  # language + shape filter, table never
        assert sorted(res.ranking) == sorted(r["after_language_and_shape_filter"])
        for (_, want), got in zip(r["single_sorted"], res.dists):
            assert got == pytest.approx(want, rel=1e-12, abs=1e-14)
        assert [s.id for s in res.single] == [s["id"] for s in r["result_singles"]]
        for s, s_ref in zip(res.single, r["result_singles"]):
            assert s.score == pytest.approx(s_ref["score"], rel=1e-12)
        assert (res.mixture is None) == (r["result_multiple"] == [])
        top = index.topk(user, k=2, mode="certified")  # topk applies the language rule too
        assert [i for i, _ in top] == [i for i, _ in r["single_sorted"]][:2]


def test_language_rule_edge_cases():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(5, 4))
    index = SpecIndex()
    for name, lang in [("en", ["en"]), ("ende", ["en", "de"]), ("none", [])]:
        index.add(name, RKMETextSpec(z + rng.normal(scale=0.1, size=z.shape), np.full(5, 0.2), language=lang))
    rank = lambda lang: sorted(index.search(RKMETextSpec(z, np.full(5, 0.2), language=lang), method=None).ranking)  # noqa: E731
    assert rank([]) == ["en", "ende", "none"]  # a user with [] passes everything
    assert rank(["en"]) == ["en", "ende"]
    assert rank(["de", "en"]) == ["ende"]
    assert rank(["fr"]) == []
    assert index.extra_of("ende") == {"language": ["en", "de"]} and index.get("ende").language == ["en", "de"]


def test_text_specs_survive_index_save_load(text_dir, tmp_path):
    index = SpecIndex()
    index.add("a", _spec(text_dir, "t04_en_de_mixed"))
    index.save(tmp_path / "i.lwe")
    back = SpecIndex.load(tmp_path / "i.lwe")
    assert isinstance(back.get("a"), RKMETextSpec) and back.get("a").language == ["de"]


# ------------------------------------------------------------------------------ dock, HTTP, CLI
def _text_package(spec: RKMETextSpec) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("learnware.yaml", "model:\n  class_name: Model\nstat_specifications:\n"
                    "  - module_path: learnware.specification\n    class_name: RKMETextSpecification\n"
                    "    file_name: text.json\n    kwargs: {}\n")
        zf.writestr("text.json", spec.dumps())
    return buf.getvalue()


def test_text_learnwares_in_the_dock(text_dir, tmp_path):
    d = Dock.init(tmp_path / "dock")
    ids = [d.add_package(None, data=_text_package(_spec(text_dir, lw["source"])))
           for lw in _manifest(text_dir, "search")["market"]]
    d.add_spec(RKMESpec(np.ones((2, 384)), [0.5, 0.5]))
    d.close()
    d = Dock(tmp_path / "dock")
    assert d.get_spec(ids[3]).language == ["de"] and isinstance(d.get_spec(ids[0]), RKMETextSpec)
    res = d.search(_spec(text_dir, "u01_user_en_finance"), max_search_num=3)
    assert res.ranking == [ids[0], ids[2]]
    d.export(ids[1], tmp_path / "e.zip")
    with zipfile.ZipFile(tmp_path / "e.zip") as zf:
        assert "RKMETextSpecification" in zf.read("learnware.yaml").decode()


def test_http_search_with_a_text_spec(text_dir, tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("multipart")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from lwengine.dock.server import create_app

    d = Dock.init(tmp_path / "dock")
    for lw in _manifest(text_dir, "search")["market"]:
        d.add_spec(_spec(text_dir, lw["source"]), id=lw["id"])
    client = TestClient(create_app(d))
    user = (text_dir / "generate" / "u03_user_en_de" / "spec.json").read_bytes()
    r = client.post("/search", files={"statistical_specification": ("u.json", user)})
    assert r.status_code == 200, r.text
    body = r.json()
    body = body.get("data", body)
    assert [x["learnware_id"] for x in body["learnware_list_single"]] == ["00000003"]


def test_cli_fit_text(text_dir, tmp_path, capsys):
    src = text_dir / "generate" / "t02_zh_finance"
    out = tmp_path / "t.json"
    assert main(["spec", "fit-text", str(src / "embeddings.npy"), "--out", str(out), "--language", "zh-cn,en",
                 "--K", "20", "--seed", "0"]) == 0
    s = lwengine.load_spec(out)
    assert isinstance(s, RKMETextSpec) and s.language == ["zh-cn", "en"] and s.K == 20
    pytest.importorskip("langdetect")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(["The market opened higher today as investors welcomed the report."] * 60),
                     encoding="utf-8")
    assert main(["spec", "fit-text", str(src / "embeddings.npy"), "--out", str(out), "--texts", str(texts),
                 "--K", "10", "--seed", "0"]) == 0
    assert lwengine.load_spec(out).language == ["en"]
    assert main(["spec", "show", str(out)]) == 0
    assert "RKMETextSpecification" in capsys.readouterr().out
    assert main(["spec", "fit-text", str(tmp_path / "missing.npy"), "--out", str(out)]) == 2


# ------------------------------------------------------------------------------ hetero-map table files
def test_hetero_map_table_files_load_save_and_search(tmp_path):
    rng = np.random.default_rng(7)
    specs = [HeteroMapTableSpec(rng.normal(size=(6, 5)), rng.dirichlet(np.ones(6)), 0.2) for _ in range(4)]
    specs[0].save(tmp_path / "h.json")
    d = json.loads((tmp_path / "h.json").read_text())
    assert d["type"] == "HeteroMapTableSpecification" and d["embedding"] is None
    back = lwengine.load_spec(tmp_path / "h.json")
    assert isinstance(back, HeteroMapTableSpec) and np.array_equal(back.z, specs[0].z)
    index = SpecIndex()
    index.add_many([(f"h{i}", s) for i, s in enumerate(specs)])
    user = HeteroMapTableSpec(rng.normal(size=(3, 5)), np.full(3, 1 / 3), 0.2)
    res = index.search(user, max_search_num=2, method=None)
    want = sorted((RKMESpec(s.z, s.beta, s.gamma).dist(RKMESpec(user.z, user.beta, user.gamma)), f"h{i}")
                  for i, s in enumerate(specs))
    assert res.ranking == [i for _, i in want]
    assert np.allclose(res.dists, [x for x, _ in want], rtol=1e-12, atol=1e-14)
    with pytest.raises(NotImplementedError, match="mapping model"):
        HeteroMapTableSpec.fit(np.zeros((3, 2)))


def test_compat_searcher_handles_text_users_like_the_reference(text_dir):
    pytest.importorskip("torch")
    from lwengine.compat import learnware as compat

    if not compat.available():
        pytest.skip("learnware's EasyStatSearcher is unavailable")
    from learnware.market import BaseUserInfo, EasyStatSearcher

    m = _manifest(text_dir, "search")
    lws = [compat.to_reference_learnware(lw["id"], _spec(text_dir, lw["source"])) for lw in m["market"]]
    assert type(lws[0].specification.get_stat_spec_by_name("RKMETextSpecification")).__name__ == \
        "RKMETextSpecification"
    ours, reference = compat.make_searcher(None), EasyStatSearcher(None)
    for r in m["results"]:
        info = BaseUserInfo(stat_info={"RKMETextSpecification": compat.to_reference_spec(_spec(text_dir, r["user"]))})
        got, want = ours(lws, info, 3, "greedy"), reference(lws, info, 3, "greedy")
        assert ours.last_result is not None  # searched by lwengine, not the reference fallback
        g = [(x.learnware.id, x.score) for x in got.get_single_results()]
        w = [(x.learnware.id, x.score) for x in want.get_single_results()]
        assert [i for i, _ in g] == [i for i, _ in w] == [s["id"] for s in r["result_singles"]]
        assert np.allclose([s for _, s in g], [s for _, s in w], rtol=1e-10)
        assert len(got.get_multiple_results()) == len(want.get_multiple_results())
    back = compat.from_reference_spec(compat.to_reference_spec(_spec(text_dir, "t04_en_de_mixed")))
    assert isinstance(back, RKMETextSpec) and back.language == ["de"]
