"""The real ``learnware.client.LearnwareClient`` against ``lwengine dock serve`` (127.0.0.1 only).

Skipped without the ``learnware`` package (CI does not install it)."""
from __future__ import annotations

import io
import json
import math
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
requests = pytest.importorskip("requests")
client_mod = pytest.importorskip("learnware.client")

import lwengine  # noqa: E402
from lwengine import RKMESpec  # noqa: E402
from lwengine.dock import Dock  # noqa: E402
from lwengine.dock.semantic_check import SEMANTIC_VOCABULARY  # noqa: E402

TOKEN = "client-token-1"
D = 5
TEXT_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "learnware-0.4.0.post1-text"
YAML = ("model:\n  class_name: Model\n  kwargs: {}\nstat_specifications:\n  - module_path: learnware.specification\n"
        "    class_name: %s\n    file_name: %s\n    kwargs: {}\n")
MODEL = """import numpy as np
from learnware.model import BaseModel


class Model(BaseModel):
    def __init__(self):
        super().__init__(input_shape=(%d,), output_shape=(1,))

    def fit(self, X, y):
        pass

    def predict(self, X):
        return np.full((len(X), 1), %r)
"""


def semantic(name, d=D, scenario="Business", data="Table"):
    return {"Data": {"Values": [data], "Type": "Class"}, "Task": {"Values": ["Regression"], "Type": "Class"},
            "Library": {"Values": ["Scikit-learn"], "Type": "Class"}, "Scenario": {"Values": [scenario], "Type": "Tag"},
            "Model": {"Values": ["Others"], "Type": "Optional"}, "License": {"Values": ["MIT"], "Type": "Class"},
            "Name": {"Values": name, "Type": "String"},
            "Description": {"Values": f"the learnware called {name}", "Type": "String"},
            "Input": {"Dimension": d, "Description": {"0": "x0"}}, "Output": {"Dimension": 1, "Description": {"0": "y"}}}


def package(spec_json, value, d=D, extra=None, spec_class="RKMETableSpecification", spec_file="rkme.json"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("learnware.yaml", YAML % (spec_class, spec_file))
        zf.writestr("__init__.py", MODEL % (d, float(value)))
        zf.writestr(spec_file, spec_json)
        for k, v in (extra or {}).items():
            zf.writestr(k, v, compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def table_spec(seed, centre):
    rng = np.random.default_rng(seed)
    return RKMESpec.fit(rng.normal(size=(60, D)) + centre, K=6, seed=seed)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(path, *extra):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lwengine", "dock", "serve", str(path), "--port", str(port),
                             "--token", TOKEN, "--max-upload-mb", "8", *extra], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(base + "/health", timeout=1)
            return proc, base
        except requests.RequestException:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("server did not start: " + proc.stderr.read())


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("bmw")
    old_storage = os.environ.get("LEARNWARE_STORAGE_PATH")
    os.environ["LEARNWARE_STORAGE_PATH"] = str(root / "client-storage")  # the client's download cache
    centres = np.random.default_rng(0).normal(scale=3, size=(4, D))
    d = Dock.init(root / "dock")
    for i in range(12):
        s = table_spec(i, centres[i % 4])
        d.add_package(data=package(s.dumps(), i), semantic=semantic(f"learnware {i:02d}",
                                                                    scenario=["Business", "Financial"][i % 2]))
    d.close()
    proc, base = start(root / "dock")
    yield {"base": base, "path": root / "dock", "root": root, "centres": centres}
    proc.terminate()
    proc.wait(timeout=10)
    if old_storage is None:
        os.environ.pop("LEARNWARE_STORAGE_PATH", None)
    else:
        os.environ["LEARNWARE_STORAGE_PATH"] = old_storage


@pytest.fixture(scope="module")
def client(market):
    c = client_mod.LearnwareClient(host=market["base"], timeout=60)
    c.login("someone@example.org", TOKEN)
    return c


def user_info(semantic_spec=None, stat=None, kind="RKMETableSpecification"):
    from learnware.market import BaseUserInfo

    return BaseUserInfo(semantic_spec=semantic_spec or {}, stat_info={} if stat is None else {kind: stat})


def reference_table_spec(spec: RKMESpec, folder):
    from learnware.specification import RKMETableSpecification

    p = os.path.join(folder, "user.json")
    spec.save(p)
    s = RKMETableSpecification()
    s.load(p)
    return s


def test_connect_and_login(market):
    c = client_mod.LearnwareClient(host=market["base"])
    assert c.is_connected()
    assert not client_mod.LearnwareClient(host=market["base"] + "/api").is_connected()
    with pytest.raises(Exception, match='"code": 53'):
        c.login("someone@example.org", "not-the-token")
    with pytest.raises(Exception, match="login first"):
        c.list_learnware()
    c.login("someone@example.org", TOKEN)
    assert c.is_login()


def test_prefix_and_anonymous_reads(market):
    proc, base = start(market["path"], "--api-prefix", "/api", "--allow-anonymous")
    try:
        assert not client_mod.LearnwareClient(host=base).is_connected()
        c = client_mod.LearnwareClient(host=base + "/api")
        assert c.is_connected()
        assert c.get_semantic_specification("00000001")["Name"]["Values"] == "learnware 01"  # no login
        lw = c.load_learnware(learnware_id="00000001")
        np.testing.assert_array_equal(lw.predict(np.zeros((1, D))), [[1.0]])
        c.login("someone@example.org", TOKEN)
        assert len(c.list_learnware()) >= 12
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    closed = client_mod.LearnwareClient(host=market["base"])
    with pytest.raises(Exception, match="failed"):
        closed.get_semantic_specification("00000001")  # the default server wants a login for reads


def test_vocabulary(client):
    for key in client_mod.SemanticSpecificationKey:
        assert client.list_semantic_specification_values(key) == SEMANTIC_VOCABULARY[key.value]["Values"]


def test_semantic_search(client, market):
    dock = Dock(market["path"])
    sem = {"Scenario": {"Values": ["Financial"], "Type": "Tag"}}
    r = client.search_learnware(user_info(sem), page_size=100)
    expect = [s.id for s in dock.search(None, semantic=sem).single]
    assert len(expect) == 6 and r["single"]["learnware_ids"] == expect
    assert r["single"]["matching"] == [0] * 6
    assert r["multiple"] == {"learnware_ids": [], "semantic_specifications": [], "matching": None}
    assert r["single"]["semantic_specifications"][0] == dock.get(expect[0]).semantic
    named = client.search_learnware(user_info({"Name": {"Values": "learnware 07", "Type": "String"}}))
    assert named["single"]["learnware_ids"] == ["00000007"]


def test_statistical_search_and_paging(client, market, tmp_path):
    dock = Dock(market["path"])
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(size=(60, D)) + market["centres"][0], rng.normal(size=(40, D)) + market["centres"][1]])
    u = RKMESpec.fit(X, K=10, seed=3)
    ref = dock.search(u)
    assert ref.mixture is not None
    stat = reference_table_spec(u, tmp_path)
    full = client.search_learnware(user_info(None, stat), page_size=100)
    assert full["single"]["learnware_ids"] == [s.id for s in ref.single]
    assert full["single"]["matching"] == [s.score for s in ref.single]   # exact through JSON
    assert full["multiple"]["learnware_ids"] == list(ref.mixture.ids)
    assert full["multiple"]["matching"] == ref.mixture.score
    n = len(ref.single)
    assert n >= 3
    got = []
    for page in range(math.ceil(n / 2)):
        r = client.search_learnware(user_info(None, stat), page_size=2, page_index=page)
        got += r["single"]["learnware_ids"]
        assert (r["multiple"]["learnware_ids"] == list(ref.mixture.ids)) if page == 0 else \
            (r["multiple"]["learnware_ids"] == [])
    assert got == full["single"]["learnware_ids"]
    # semantic and statistical together
    sem = {"Scenario": {"Values": ["Business"], "Type": "Tag"}}
    both = client.search_learnware(user_info(sem, stat), page_size=100)
    assert both["single"]["learnware_ids"] == [s.id for s in dock.search(u, semantic=sem).single]


def test_info_download_and_load(client, market):
    dock = Dock(market["path"])
    assert client.get_semantic_specification("00000003") == dock.get("00000003").semantic
    with pytest.raises(Exception, match="failed"):
        client.get_semantic_specification("99999999")
    lw = client.load_learnware(learnware_id="00000003")
    assert lw is not None and lw.id == "00000003"
    assert lw.get_specification().get_semantic_spec() == dock.get("00000003").semantic
    np.testing.assert_array_equal(lw.predict(np.zeros((4, D))), np.full((4, 1), 3.0))
    stat = lw.get_specification().get_stat_spec()["RKMETableSpecification"]
    np.testing.assert_array_equal(stat.get_z(), dock.get_spec("00000003").z)
    both = client.load_learnware(learnware_id=["00000001", "00000002"])
    assert [x.id for x in both] == ["00000001", "00000002"]
    with pytest.raises(Exception, match="download failed"):
        client.download_learnware("99999999", os.path.join(market["root"], "x.zip"))


def test_upload_list_update_delete_logout(market, tmp_path):
    c = client_mod.LearnwareClient(host=market["base"], timeout=60)
    c.login("uploader@example.org", TOKEN)
    dock = Dock(market["path"])
    s = table_spec(77, market["centres"][2] + 0.5)
    weights = np.random.default_rng(1).bytes(int(2.5 * (1 << 20)))   # incompressible: 3 chunks of 1 MiB
    zpath = tmp_path / "lw.zip"
    zpath.write_bytes(package(s.dumps(), 42.0, extra={"weights.bin": weights}))
    assert os.path.getsize(zpath) > 2 * (1 << 20)
    sem = semantic("uploaded learnware")
    lid = c.upload_learnware(str(zpath), sem)
    assert dock.get(lid).status == 1 and dock.get(lid).semantic == sem
    with pytest.raises(Exception, match="already exist"):
        c.upload_learnware(str(zpath), sem)
    listed = {x["learnware_id"]: x for x in c.list_learnware()}
    assert listed[lid]["verify_status"] == "SUCCESS" and listed[lid]["semantic_specification"] == sem
    assert "last_modify" in listed[lid] and len(listed) == len(dock)
    top = c.search_learnware(user_info(None, reference_table_spec(s, tmp_path)))
    assert top["single"]["learnware_ids"][0] == lid
    lw = c.load_learnware(learnware_id=lid)
    np.testing.assert_array_equal(lw.predict(np.zeros((2, D))), np.full((2, 1), 42.0))
    # update: the semantic spec, then the package
    sem2 = semantic("renamed learnware")
    c.update_learnware(lid, sem2)
    assert dock.get(lid).semantic["Name"]["Values"] == "renamed learnware"
    s2 = table_spec(78, market["centres"][3])
    z2 = tmp_path / "lw2.zip"
    z2.write_bytes(package(s2.dumps(), 43.0))
    c.update_learnware(lid, sem2, str(z2))
    assert dock.get_spec(lid).dist(s2) == 0.0
    np.testing.assert_array_equal(c.load_learnware(learnware_id=lid).predict(np.zeros((1, D))), [[43.0]])
    with pytest.raises(Exception, match="update failed"):
        c.update_learnware("99999999", sem2)
    c.delete_learnware(lid)
    assert lid not in dock and lid not in {x["learnware_id"] for x in c.list_learnware()}
    with pytest.raises(Exception, match="delete failed"):
        c.delete_learnware(lid)
    old = dict(c.headers)
    c.logout()
    assert c.headers is None
    r = requests.post(market["base"] + "/user/list_learnware", json={"page": 0, "limit": 10}, headers=old).json()
    assert r["code"] == 11


def test_text_specs(tmp_path, monkeypatch):
    """Text specs (RKMETextSpecification) through the client, once lwengine has them."""
    if not hasattr(lwengine, "RKMETextSpec"):
        pytest.skip("lwengine.RKMETextSpec is not available in this build")
    manifest = TEXT_FIXTURES / "search" / "manifest.json"
    if not manifest.is_file():
        pytest.skip(f"text fixtures not found at {manifest}")
    from learnware.specification import RKMETextSpecification

    monkeypatch.setenv("LEARNWARE_STORAGE_PATH", str(tmp_path / "client-storage"))
    m = json.loads(manifest.read_text())
    d = Dock.init(tmp_path / "dock")
    for item in m["market"]:
        spec_json = (manifest.parent / item["file"]).read_text()
        lid = d.add_package(data=package(spec_json, 0, d=384, spec_class="RKMETextSpecification",
                                         spec_file="text_spec.json"),
                            semantic=semantic(item["source"], data="Text"), id=item["id"])
        assert lid == item["id"]
    d.close()
    proc, base = start(tmp_path / "dock")
    try:
        c = client_mod.LearnwareClient(host=base, timeout=60)
        c.login("someone@example.org", TOKEN)
        for case in m["results"]:
            u = RKMETextSpecification()
            u.load(str(TEXT_FIXTURES / "generate" / case["user"] / "spec.json"))
            r = c.search_learnware(user_info(None, u, kind="RKMETextSpecification"), page_size=100)
            assert r["single"]["learnware_ids"] == [x["id"] for x in case["result_singles"]], case["user"]
            np.testing.assert_allclose(r["single"]["matching"], [x["score"] for x in case["result_singles"]],
                                       rtol=0, atol=1e-9)
            assert r["multiple"]["learnware_ids"] == [i for mm in case["result_multiple"] for i in mm.get("ids", [])]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
