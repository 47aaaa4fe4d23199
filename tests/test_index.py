"""SpecIndex container behaviour, bad input, bulk loading, persistence and the CLI."""
from __future__ import annotations

import json
import logging
import zipfile

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex
from lwengine.cli import main


def _spec(rng, K=7, d=3, gamma=0.1, shift=0.0):
    z = rng.normal(size=(K, d)) + shift
    beta = rng.uniform(0.1, 1.0, size=K)
    return RKMESpec(z, beta / beta.sum(), gamma, num_points=50)


def _index(n=12, seed=0, **kw):
    rng = np.random.default_rng(seed)
    idx = SpecIndex(**kw)
    for i in range(n):
        idx.add(f"{i:08d}", _spec(rng, K=int(rng.integers(1, 9)), shift=float(i % 3)))
    return idx, rng


def test_container_basics():
    idx, rng = _index(5)
    assert len(idx) == 5 and "00000002" in idx and "x" not in idx
    assert idx.ids() == [f"{i:08d}" for i in range(5)]
    s = _spec(rng)
    idx.add("new", s, semantic={"Name": {"Type": "String", "Values": "n"}})
    got = idx.get("new")
    np.testing.assert_array_equal(got.z, s.z)
    np.testing.assert_array_equal(got.beta, s.beta)
    assert got.gamma == s.gamma and got.num_points == s.num_points
    assert idx.get_semantic("new")["Name"]["Values"] == "n"
    idx.remove("00000001")
    assert len(idx) == 5 and "00000001" not in idx
    assert idx.ids() == ["00000000", "00000002", "00000003", "00000004", "new"]
    idx.replace("00000002", _spec(rng, K=3))
    assert idx.ids()[1] == "00000002" and idx.get("00000002").K == 3


def test_bad_input():
    idx, rng = _index(3)
    with pytest.raises(ValueError, match="duplicate id"):
        idx.add("00000000", _spec(rng))
    with pytest.raises(TypeError, match="id"):
        idx.add(5, _spec(rng))
    with pytest.raises(TypeError, match="spec"):
        idx.add("x", 3.0)
    with pytest.raises(KeyError):
        idx.remove("nope")
    bad_user = RKMESpec(np.full((2, 3), np.nan), np.ones(2) / 2)
    with pytest.raises(ValueError, match="user_spec"):
        idx.search(bad_user)
    with pytest.raises(ValueError, match="max_search_num"):
        idx.search(_spec(rng), max_search_num=0)
    with pytest.raises(ValueError, match="method"):
        idx.search(_spec(rng), method="bogus")
    # a dimension no learnware has: empty result, not an error
    r = idx.search(_spec(rng, d=5))
    assert r.single == [] and r.mixture is None and r.to_dict() == {"single": [], "mixture": None}


def test_nonfinite_learnware_dropped_at_search(caplog):
    idx, rng = _index(4)
    bad = _spec(rng)
    bad.beta[0] = np.inf
    with caplog.at_level(logging.WARNING):
        idx.add("bad", bad)
    r = idx.search(_spec(rng), method=None)
    assert r.nonfinite_dropped == ["bad"] and "bad" not in r.ranking and len(r.ranking) == 4
    assert np.isinf(idx.get("bad").beta[0])  # original values kept


def test_save_load_round_trip(tmp_path):
    idx, rng = _index(20)
    idx.remove("00000003")
    idx.add("late", _spec(rng, d=4, gamma=0.3), semantic={"Task": {"Type": "Class", "Values": ["x"]}})
    nan_spec = _spec(rng)
    nan_spec.z[0, 0] = np.nan
    idx.add("nan", nan_spec)
    path = tmp_path / "market.lwe"
    idx.save(path)
    user = _spec(rng, shift=1.0)
    want = idx.search(user).to_dict()
    for mmap in (True, False):
        back = SpecIndex.load(path, mmap=mmap)
        assert back.ids() == idx.ids()
        assert back.search(user).to_dict() == want
        assert back.get_semantic("late") == idx.get_semantic("late")
        np.testing.assert_array_equal(back.get("00000005").z, idx.get("00000005").z)
        assert np.isnan(back.get("nan").z[0, 0])
        back.add("after", _spec(rng))  # growing a memory-mapped group copies it
        back.remove("00000000")
        assert "after" in back and "00000000" not in back
    (tmp_path / "junk.lwe").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="lwengine index"):
        SpecIndex.load(tmp_path / "junk.lwe")


def test_float32_store_close_to_float64():
    idx64, _ = _index(30, seed=3)
    idx32 = SpecIndex(dtype="float32")
    idx32.add_many([(i, idx64.get(i)) for i in idx64.ids()])
    user = _spec(np.random.default_rng(9), shift=1.0)
    r64, r32 = idx64.search(user), idx32.search(user)
    np.testing.assert_allclose(r32.dists, r64.dists, atol=1e-6)
    assert idx32.memory_bytes() < idx64.memory_bytes()


def _write_package(path, spec: RKMESpec, *, class_name="RKMETableSpecification", extra=None):
    yaml_text = ("model:\n  class_name: Model\n  kwargs: {}\nstat_specifications:\n"
                 f"  - module_path: learnware.specification\n    class_name: {class_name}\n"
                 "    file_name: stat.json\n    kwargs: {}\n")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("learnware.yaml", yaml_text)
        zf.writestr("stat.json", spec.dumps())
        zf.writestr("__init__.py", "raise SystemExit('package code must never run')\n")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)


def test_bulk_folder_json_zip_and_failures(tmp_path):
    rng = np.random.default_rng(5)
    specs = {f"{i:08d}": _spec(rng) for i in range(4)}
    folder = tmp_path / "specs"
    folder.mkdir()
    for i, s in list(specs.items())[:2]:
        s.save(folder / f"{i}.json")
    _write_package(folder / "00000002.zip", specs["00000002"], class_name="RKMEStatSpecification")
    pkg = folder / "00000003"
    pkg.mkdir()
    _write_package(tmp_path / "p.zip", specs["00000003"])
    zipfile.ZipFile(tmp_path / "p.zip").extractall(pkg)
    (folder / "00000004.json").write_text("{not json")
    (folder / "00000005.zip").write_bytes(b"PK corrupt")
    _write_package(folder / "00000006.zip", specs["00000000"], extra={"../evil.txt": "x"})
    (folder / "readme.txt").write_text("ignored")
    index, report = SpecIndex.from_folder(folder)
    assert index.ids() == ["00000000", "00000001", "00000002", "00000003"]
    assert sorted(p.split("/")[-1] for p, _ in report.failed) == ["00000004.json", "00000005.zip", "00000006.zip"]
    assert all(msg for _, msg in report.failed)
    for i, s in specs.items():
        np.testing.assert_array_equal(index.get(i).z, s.z)


def test_cli_search_and_index_build(tmp_path, capsys):
    rng = np.random.default_rng(11)
    folder = tmp_path / "specs"
    folder.mkdir()
    for i in range(6):
        _spec(rng, shift=float(i % 2)).save(folder / f"{i:08d}.json")
    user = tmp_path / "user.json"
    _spec(rng, shift=0.5).save(user)
    assert main(["search", "--specs", str(folder), "--user", str(user), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    index, _ = SpecIndex.from_folder(folder)
    assert doc == json.loads(json.dumps(index.search(RKMESpec.load(user)).to_dict()))
    out = tmp_path / "idx.lwe"
    assert main(["index", "build", str(folder), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["search", "--specs", str(out), "--user", str(user), "--json", "--method", "auto",
                 "--max-search-num", "3"]) == 0
    doc2 = json.loads(capsys.readouterr().out)
    assert doc2 == json.loads(json.dumps(index.search(RKMESpec.load(user), 3, "auto").to_dict()))
    assert main(["search", "--specs", str(out), "--user", str(user)]) == 0
    text = capsys.readouterr().out
    assert "single result" in text and "mixture" in text
    assert main(["search", "--specs", str(tmp_path / "missing"), "--user", str(user)]) == 2


def test_semantic_filter_in_search():
    idx, rng = _index(6)
    for i, name in enumerate(["credit model", "house price", "credit risk", "traffic", "x", "y"]):
        idx.set_semantic(f"{i:08d}", {"Name": {"Type": "String", "Values": name},
                                      "Description": {"Type": "String", "Values": ""}})
    r = idx.search(_spec(rng), semantic={"Name": {"Type": "String", "Values": "credit"}}, method=None)
    assert sorted(r.ranking) == ["00000000", "00000002"]
    r = idx.search(None, semantic={"Name": {"Type": "String", "Values": "credit"}})
    assert [s.id for s in r.single] == ["00000000", "00000002"] and r.single[0].score is None
