"""Dock store: records, search fidelity (vs SpecIndex and the fixtures), snapshots, hostile packages, CLI."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex
from lwengine.dock import Dock, DockError, Limits, PackageError
from lwengine.limits import ANY_GAMMA

# These tests check the reference's semantics on markets of several gamma values, which a dock by
# default refuses (its gamma policy accepts only the reference's 0.1): they open their docks with
# the reference's rule instead.
MIXED = {"gamma_policy": ANY_GAMMA}

pytest.importorskip("yaml")

YAML = ("model:\n  class_name: Model\n  kwargs: {}\nstat_specifications:\n"
        "  - module_path: learnware.specification\n    class_name: RKMETableSpecification\n"
        "    file_name: rkme.json\n    kwargs: {}\n")


def rand_spec(rng, K=None, d=3, gamma=0.1):
    K = int(rng.integers(1, 9)) if K is None else K
    return RKMESpec(rng.normal(size=(K, d)), rng.dirichlet(np.ones(K)), gamma, int(rng.integers(K, 500)))


def make_zip(members: dict, symlinks=()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def package(spec, semantic=None, **extra) -> dict:
    m = {"learnware.yaml": YAML, "rkme.json": spec.dumps(), "__init__.py": "raise SystemExit('never import me')\n"}
    if semantic is not None:
        m["semantic_specification.json"] = json.dumps(semantic)
    m.update(extra)
    return m


def reference_index(dock: Dock, status=1) -> SpecIndex:
    """A SpecIndex built from scratch from the dock's records (insertion order), the oracle for search."""
    recs, _ = dock.list(limit=10000)
    idx = SpecIndex()
    for r in recs:
        if status is None or r.status == status:
            idx.add(r.id, dock.get_spec(r.id), semantic=r.semantic)
    return idx


def same_result(a, b):
    assert a.to_dict() == b.to_dict()
    assert a.ranking == b.ranking


@pytest.fixture
def dock(tmp_path):
    d = Dock.init(tmp_path / "dock", **MIXED)
    yield d
    d.close()


# ------------------------------------------------------------------------------------ records
def test_add_get_update_remove_list(dock):
    rng = np.random.default_rng(0)
    specs = [rand_spec(rng) for _ in range(12)]
    ids = dock.add_specs([(s, {"Name": {"Type": "String", "Values": f"Credit model {i}"}}) for i, s in enumerate(specs)])
    assert ids == [f"{i:08d}" for i in range(12)]
    assert len(dock) == 12 and "00000003" in dock
    got = dock.get_spec("00000003")
    np.testing.assert_array_equal(got.z, specs[3].z)
    np.testing.assert_array_equal(got.beta, specs[3].beta)
    assert (got.gamma, got.num_points) == (specs[3].gamma, specs[3].num_points)
    assert dock.add_spec(specs[0], id="custom") == "custom"
    with pytest.raises(ValueError, match="duplicate id"):
        dock.add_spec(specs[0], id="custom")
    with pytest.raises(ValueError, match="learnware id"):
        dock.add_spec(specs[0], id="../x")
    dock.update("00000001", status=0, semantic={"Name": {"Type": "String", "Values": "renamed"}})
    rec = dock.get("00000001")
    assert rec.status == 0 and rec.semantic["Name"]["Values"] == "renamed"
    with pytest.raises(ValueError, match="status"):
        dock.update("00000001", status=2)
    dock.remove("00000002")
    with pytest.raises(KeyError):
        dock.remove("00000002")
    with pytest.raises(KeyError):
        dock.get("00000002")
    recs, total = dock.list(page=1, limit=5)
    assert total == 12 and [r.id for r in recs] == ["00000006", "00000007", "00000008", "00000009", "00000010"]
    recs, total = dock.list(name="model 1")
    assert [r.id for r in recs] == ["00000010", "00000011"]  # 00000001 was renamed
    assert dock.list(status=0)[1] == 1
    assert dock.add_spec(specs[1]) == "00000012"  # counters are never reused
    st = dock.stats()
    assert st["learnwares"] == 13 and st["by_status"] == {"0": 1, "1": 12}


def test_search_matches_specindex_through_snapshot_and_patches(dock, tmp_path):
    rng = np.random.default_rng(1)
    specs = [rand_spec(rng, gamma=float(rng.choice([0.1, 0.2]))) for _ in range(40)]
    specs += [specs[5], specs[5]]  # exact duplicates: ties broken by insertion order
    ids = dock.add_specs([(s, None) for s in specs])
    users = [specs[5], rand_spec(rng), rand_spec(rng, K=1)]
    for u in users:
        for method in ("greedy", "auto"):
            same_result(dock.search(u, 3, method), reference_index(dock).search(u, 3, method))
    assert dock.checkpoint()
    dock.update(ids[7], spec=rand_spec(rng))
    dock.update(ids[8], status=0)
    dock.remove(ids[9])
    dock.add_spec(specs[5])
    reopened = Dock(dock.path, **MIXED)
    assert reopened._latest_snapshot()[0] < reopened.generation  # snapshot + patch path
    for u in users:
        same_result(reopened.search(u), reference_index(dock).search(u))
        same_result(reopened.search(u, status=None), reference_index(dock, status=None).search(u))
    # the other handle follows the writer's changes (generation check at every search)
    dock.update(ids[10], status=-1)
    same_result(reopened.search(users[1]), reference_index(dock).search(users[1]))
    assert reopened.problems == [] and dock.verify() == []


def test_search_reproduces_fixture_market(fixtures_dir, tmp_path):
    market = fixtures_dir / "search" / "market"
    man = json.loads((market / "manifest.json").read_text())
    d = Dock.init(tmp_path / "fx", **MIXED)
    d.add_specs([(str(market / e["file"]), None, e["id"]) for e in man["learnwares"]], batch_size=50)
    d.checkpoint()
    d = Dock(tmp_path / "fx", **MIXED)
    for case in ("u01_single_task", "u02_mix_two_tasks", "u05_identical_to_learnware", "u06_user_gamma_0.2"):
        u = RKMESpec.load(fixtures_dir / "search" / case / "user.json")
        m = json.loads((fixtures_dir / "search" / case / "manifest.json").read_text())
        for run in m["runs"]:
            r = d.search(u, run["max_search_num"], run["search_method"])
            exp = run["expected"]
            assert [s.id for s in r.single] == [s["id"] for s in exp["single_results"]]
            np.testing.assert_allclose([s.score for s in r.single], [s["score"] for s in exp["single_results"]],
                                       rtol=0, atol=1e-9)
            assert ([] if r.mixture is None else [r.mixture.ids]) == [x["ids"] for x in exp["multiple_results"]]


def test_semantic_search_reproduces_fixtures(fixtures_dir, tmp_path):
    sem_dir = fixtures_dir / "semantic"
    lws = json.loads((sem_dir / "learnwares.json").read_text())["learnwares"]
    rng = np.random.default_rng(2)
    d = Dock.init(tmp_path / "sem")
    d.add_specs([(rand_spec(rng), e["semantic_spec"], e["id"]) for e in lws])
    cases = sorted(p for p in sem_dir.iterdir() if p.is_dir())
    assert cases
    for case in cases:
        m = json.loads((case / "manifest.json").read_text())
        r = d.search(None, semantic=m["inputs"]["user_semantic_spec"])
        assert [s.id for s in r.single] == m["expected"]["ids"], case.name


def test_semantic_plus_stat_and_status_filter(dock):
    rng = np.random.default_rng(3)
    specs = [rand_spec(rng) for _ in range(20)]
    sems = [{"Scenario": {"Type": "Tag", "Values": ["A" if i % 2 else "B"]}} for i in range(20)]
    ids = dock.add_specs(list(zip(specs, sems)))
    dock.update(ids[1], status=0)
    user_sem = {"Scenario": {"Type": "Tag", "Values": ["A"]}}
    r = dock.search(specs[1], semantic=user_sem)
    idx = reference_index(dock)
    same_result(r, idx.search(specs[1], semantic=user_sem))
    assert ids[1] not in r.ranking and all(int(i) % 2 == 1 for i in r.ranking)


def test_corrupt_segment_is_quarantined(dock):
    rng = np.random.default_rng(4)
    ids = dock.add_specs([(rand_spec(rng), None) for _ in range(5)])
    seg = os.path.join(dock.path, "segments", "seg-000001.bin")
    row = dock._conn().execute("SELECT off FROM learnwares WHERE id=?", (ids[2],)).fetchone()
    with open(seg, "r+b") as f:
        f.seek(row[0] + 40)
        f.write(b"\xff\xff\xff\xff")
    d2 = Dock(dock.path, **MIXED)
    r = d2.search(rand_spec(rng))
    assert ids[2] not in r.ranking and len(r.ranking) == 4
    assert [p[0] for p in d2.problems] == [ids[2]]
    assert [p[0] for p in d2.verify()] == [ids[2]]
    with pytest.raises(ValueError, match="checksum"):
        d2.get_spec(ids[2])


def test_compact_drops_garbage_and_keeps_results(dock):
    rng = np.random.default_rng(5)
    ids = dock.add_specs([(rand_spec(rng), None) for _ in range(30)])
    for i in ids[:10]:
        dock.remove(i)
    dock.update(ids[12], spec=rand_spec(rng))
    u = rand_spec(rng)
    before = dock.search(u).to_dict()
    r = dock.compact()
    assert r["after"] < r["before"] and dock.stats()["garbage_bytes"] == 0
    assert dock.verify() == []
    assert Dock(dock.path, **MIXED).search(u).to_dict() == before


def test_not_a_dock_and_bad_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dock"):
        Dock(tmp_path / "missing")
    d = Dock.init(tmp_path / "d")
    d._conn().execute("UPDATE meta SET value=99 WHERE key='format'")
    with pytest.raises(DockError, match="format 99"):
        Dock(tmp_path / "d")


# ------------------------------------------------------------------------------------ packages
def test_package_roundtrip_export_and_no_code_execution(dock, tmp_path):
    rng = np.random.default_rng(6)
    spec = rand_spec(rng)
    sem = {"Name": {"Type": "String", "Values": "pkg"}}
    marker = tmp_path / "imported"
    code = f"open({str(marker)!r}, 'w').write('x')\n"
    zpath = tmp_path / "p.zip"
    zpath.write_bytes(make_zip(package(spec, sem, **{"__init__.py": code, "weights.bin": b"\x00" * 100})))
    lid = dock.add_package(zpath)
    folder = tmp_path / "folder_pkg"
    folder.mkdir()
    for k, v in package(spec, None, **{"__init__.py": code}).items():
        (folder / k).write_text(v)
    lid2 = dock.add_package(folder, semantic={"Name": {"Type": "String", "Values": "override"}})
    assert not marker.exists()
    assert dock.get(lid).semantic == sem and dock.get(lid2).semantic["Name"]["Values"] == "override"
    new_spec = rand_spec(rng)
    dock.update(lid, spec=new_spec)
    out = dock.export(lid, tmp_path / "out.zip")
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert {"learnware.yaml", "rkme.json", "__init__.py", "weights.bin", "semantic_specification.json"} <= names
        assert RKMESpec.loads(zf.read("rkme.json").decode()).to_dict() == new_spec.to_dict()
    back = dock.add_package(out)  # an exported package is a valid package
    assert dock.get_spec(back).to_dict() == new_spec.to_dict()
    raw = dock.add_spec(spec)
    with zipfile.ZipFile(dock.export(raw, tmp_path / "raw.zip")) as zf:
        assert sorted(zf.namelist()) == ["learnware.yaml", "rkme.json"]


def _state(dock):
    pk = os.listdir(os.path.join(dock.path, "packages"))
    segs = sorted(os.listdir(os.path.join(dock.path, "segments")))
    size = sum(os.path.getsize(os.path.join(dock.path, "segments", s)) for s in segs)
    return len(dock), dock.generation, sorted(pk), size


def hostile_cases(spec, tmp_path):
    good = package(spec)
    bomb = make_zip({**good, "weights.bin": b"\x00" * (3 << 20)})
    cases = {
        "zip-slip": (make_zip({**good, "../evil.py": "x"}), "unsafe member"),
        "absolute": (make_zip({**good, "/etc/evil": "x"}), "unsafe member"),
        "symlink": (make_zip(good, symlinks=("__init__.py",)), "symlink"),
        "bomb-ratio": (bomb, "compression ratio"),
        "not-zip": (b"PK\x03\x04 garbage", "not a readable zip"),
        "no-yaml": (make_zip({k: v for k, v in good.items() if k != "learnware.yaml"}), "learnware.yaml"),
        "bad-yaml": (make_zip({**good, "learnware.yaml": "a: [unclosed"}), "not valid YAML"),
        "yaml-not-mapping": (make_zip({**good, "learnware.yaml": "- 1\n- 2\n"}), "must be a mapping"),
        "yaml-python-tag": (make_zip({**good, "learnware.yaml": "!!python/object/apply:os.system ['true']"}),
                            "not valid YAML"),
        "no-stat-list": (make_zip({**good, "learnware.yaml": "model: {}\n"}), "stat_specifications"),
        "image-spec": (make_zip({**good, "learnware.yaml": YAML.replace("RKMETableSpecification",
                                                                         "RKMEImageSpecification")}),
                       "different from the expected type"),  # a table spec file named as an image spec
        "wrong-type": (make_zip({**good, "rkme.json": json.dumps({**spec.to_dict(), "type": "RKMETextSpecification"})}),
                       "type must be"),
        "spec-missing": (make_zip({k: v for k, v in good.items() if k != "rkme.json"}), "no spec file"),
        "spec-garbage": (make_zip({**good, "rkme.json": "{not json"}), "invalid JSON"),
        "spec-slip-name": (make_zip({**good, "learnware.yaml": YAML.replace("rkme.json", "../rkme.json")}), "unsafe"),
        "bad-semantic": (make_zip({**good, "semantic_specification.json": "[1, 2]"}), "semantic"),
    }
    return cases


def test_hostile_packages_are_refused_and_nothing_is_stored(dock, tmp_path):
    rng = np.random.default_rng(7)
    spec = rand_spec(rng)
    dock.add_spec(spec)
    before = _state(dock)
    for name, (blob, match) in hostile_cases(spec, tmp_path).items():
        p = tmp_path / f"{name}.zip"
        p.write_bytes(blob)
        with pytest.raises(PackageError, match=match):
            dock.add_package(p)
        with pytest.raises(PackageError, match=match):
            dock.add_package(data=blob)
        assert _state(dock) == before, name
    report = dock.add_paths([tmp_path / f"{n}.zip" for n in hostile_cases(spec, tmp_path)])
    assert len(report.failed) == len(hostile_cases(spec, tmp_path)) and report.added == []
    assert _state(dock) == before


def test_size_limits_and_folder_symlinks(tmp_path):
    rng = np.random.default_rng(8)
    spec = rand_spec(rng, K=50, d=20)
    d = Dock.init(tmp_path / "d", limits=Limits(max_spec_bytes=2000, max_package_bytes=1 << 20))
    with pytest.raises(PackageError, match="over the limit 2000"):
        d.add_package(data=make_zip(package(spec)))
    sp = tmp_path / "big.json"
    spec.save(sp)
    with pytest.raises(PackageError, match="over the limit 2000"):
        d.add_spec(sp)
    small = rand_spec(rng, K=1, d=1)
    with pytest.raises(PackageError, match="exceeds the limit"):
        d.add_package(data=make_zip(package(small, **{"w.bin": os.urandom(2 << 20)})))
    folder = tmp_path / "f"
    folder.mkdir()
    for k, v in package(small).items():
        (folder / k).write_text(v)
    (folder / "link").symlink_to("/etc/passwd")
    with pytest.raises(PackageError, match="symlink"):
        d.add_package(folder)
    assert len(d) == 0 and os.listdir(os.path.join(d.path, "packages")) == []


# ------------------------------------------------------------------------------------ CLI
def lwe(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "lwengine", *map(str, args)], capture_output=True, text=True,
                       timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"lwengine {args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def test_cli_end_to_end(tmp_path):
    rng = np.random.default_rng(9)
    specs = [rand_spec(rng) for _ in range(6)]
    dk = tmp_path / "dk"
    lwe("dock", "init", dk)
    paths = []
    for i, s in enumerate(specs[:3]):
        p = tmp_path / f"p{i}.zip"
        p.write_bytes(make_zip(package(s, {"Name": {"Type": "String", "Values": f"credit {i}"}})))
        paths.append(p)
    for i, s in enumerate(specs[3:]):
        p = tmp_path / f"s{i}.json"
        s.save(p)
        paths.append(p)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(make_zip({"learnware.yaml": "nope: 1\n"}))
    sem = tmp_path / "sem.json"
    sem.write_text(json.dumps({"Name": {"Type": "String", "Values": "credit"}}))
    r = lwe("dock", "add", dk, *paths, bad, check=False)
    assert r.returncode == 1 and "bad.zip" in r.stderr and "added 6" in r.stdout
    listing = json.loads(lwe("dock", "list", dk, "--json", "--limit", "4", "--page", "1").stdout)
    assert listing["total"] == 6 and [x["id"] for x in listing["learnwares"]] == ["00000004", "00000005"]
    user = tmp_path / "user.json"
    specs[1].save(user)
    got = json.loads(lwe("dock", "search", dk, "--user", user, "--json").stdout)
    d = Dock(dk)
    assert got == d.search(specs[1]).to_dict()
    # same document as `lwengine search --json` over the same specs
    folder = tmp_path / "specs"
    folder.mkdir()
    for i, s in enumerate(specs):
        s.save(folder / f"{i:08d}.json")
    assert got == json.loads(lwe("search", "--specs", folder, "--user", user, "--json").stdout)
    got = json.loads(lwe("dock", "search", dk, "--user", user, "--semantic", sem, "--json").stdout)
    assert got == d.search(specs[1], semantic=json.loads(sem.read_text())).to_dict()
    lwe("dock", "update", dk, "00000001", "--status", "0")
    assert Dock(dk).get("00000001").status == 0
    assert json.loads(lwe("dock", "show", dk, "00000001").stdout)["status"] == 0
    lwe("dock", "export", dk, "00000000", "--out", tmp_path / "e.zip")
    assert zipfile.is_zipfile(tmp_path / "e.zip")
    lwe("dock", "remove", dk, "00000000")
    r = lwe("dock", "remove", dk, "00000000", check=False)
    assert r.returncode == 2 and "no learnware" in r.stderr
    assert json.loads(lwe("dock", "stats", dk).stdout)["learnwares"] == 5
    assert "0 problem" in lwe("dock", "check", dk).stdout


def test_store_and_cli_do_not_need_the_server_extra(tmp_path):
    code = ("import sys\nfor m in ('starlette', 'uvicorn', 'httpx', 'multipart', 'fastapi'):\n    sys.modules[m] = None\n"
            "import lwengine, lwengine.dock, lwengine.cli.dock\nfrom lwengine.cli import build_parser\n"
            "from lwengine.dock import Dock\nd = Dock.init(sys.argv[1]); print(len(d))\n"
            "build_parser().parse_args(['dock', 'list', sys.argv[1]])\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "0", p.stderr
