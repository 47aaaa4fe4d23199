"""The Beimingwu API of the dock service (lwengine.dock.beimingwu) without the learnware client:
errors as JSON, login, chunked uploads (order, md5, size, concurrency, interruption), upload-time
checks, download repacking, search paging, Dock.update(package=)."""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
import yaml

pytest.importorskip("starlette")
pytest.importorskip("multipart")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from lwengine import RKMESpec  # noqa: E402
from lwengine.dock import Dock  # noqa: E402
from lwengine.dock import semantic_check  # noqa: E402
from lwengine.dock.server import create_app  # noqa: E402
from lwengine.dock.uploads import UploadError, UploadStaging  # noqa: E402

TOKEN = "client-token"
D = 4
YAML = ("model:\n  class_name: Model\n  kwargs: {}\nstat_specifications:\n  - module_path: learnware.specification\n"
        "    class_name: RKMETableSpecification\n    file_name: rkme.json\n    kwargs: {}\n")


def spec(seed, K=5, d=D, shift=0.0):
    rng = np.random.default_rng(seed)
    return RKMESpec(rng.normal(size=(K, d)) + shift, rng.dirichlet(np.ones(K)), 0.1, 100)


def semantic(i, d=D, **over):
    s = {"Data": {"Values": ["Table"], "Type": "Class"}, "Task": {"Values": ["Regression"], "Type": "Class"},
         "Library": {"Values": ["Scikit-learn"], "Type": "Class"},
         "Scenario": {"Values": ["Business" if i % 2 else "Financial"], "Type": "Tag"},
         "Model": {"Values": ["Others"], "Type": "Optional"}, "License": {"Values": ["MIT"], "Type": "Class"},
         "Name": {"Values": f"learnware {i}", "Type": "String"},
         "Description": {"Values": f"a test learnware number {i}", "Type": "String"},
         "Input": {"Dimension": d, "Description": {"0": "x0"}}, "Output": {"Dimension": 1, "Description": {"0": "y"}}}
    s.update(over)
    return s


def package(s, extra=None, yaml_text=YAML):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("learnware.yaml", yaml_text)
        zf.writestr("rkme.json", s.dumps())
        zf.writestr("__init__.py", "# model\n")
        for k, v in (extra or {}).items():
            zf.writestr(k, v)
    return buf.getvalue()


@pytest.fixture
def dock(tmp_path):
    d = Dock.init(tmp_path / "dock")
    for i in range(12):
        d.add_package(data=package(spec(i, shift=i % 3)), semantic=semantic(i))
    return d


def make_client(dock, **kw):
    kw.setdefault("token", TOKEN)
    return TestClient(create_app(dock, **kw), raise_server_exceptions=False)


def login(client, prefix=""):
    r = client.post(prefix + "/auth/login_by_token", json={"email": "me@example.org", "token": TOKEN})
    assert r.status_code == 200 and r.json()["code"] == 0, r.text
    return {"Authorization": "Bearer " + r.json()["data"]["token"]}


def upload(client, auth, blob, chunk=1000, order=None, file_hash=None):
    h = file_hash or hashlib.md5(blob).hexdigest()
    offsets = list(range(0, len(blob), chunk))
    for off in (order(offsets) if order else offsets):
        r = client.post("/user/chunked_upload", files={"chunk_file": ("chunk_file", blob[off:off + chunk])},
                        data={"file_hash": h, "chunk_begin": str(off)}, headers=auth)
        assert r.status_code == 200
        if r.json()["code"] != 0:
            return r.json()
    return client.post("/user/add_learnware_uploaded", headers=auth,
                       json={"file_hash": h, "semantic_specification": json.dumps(semantic(99))}).json()


# ------------------------------------------------------------------------------------------ errors
def assert_json_error(r, status=200):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    assert body["code"] != 0 and isinstance(body["msg"], str) and body["msg"], body
    return body


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_every_error_is_json(dock, prefix):
    c = make_client(dock, api_prefix=prefix)
    # Starlette's own 404 / 405, under the prefix, beside it, and on the dock's own routes
    for path in (prefix + "/no/such/route", prefix + "/engine/nothing", "/learnwares/x/y/z"):
        assert_json_error(c.get(path), 404)
    assert_json_error(c.get(prefix + "/auth/login_by_token"), 405)
    assert_json_error(c.put(prefix + "/engine/search_learnware"), 405)
    assert_json_error(c.post("/health"), 405)
    # login: no body (the client's is_connected) answers 200 with an error code, a bad token 53
    assert assert_json_error(c.post(prefix + "/auth/login_by_token"))["code"] == 21
    assert assert_json_error(c.post(prefix + "/auth/login_by_token",
                                    json={"email": "a@b", "token": "wrong"}))["code"] == 53
    assert assert_json_error(c.post(prefix + "/auth/login_by_token", content=b"{not json",
                                    headers={"content-type": "application/json"}))["code"] == 21
    # auth: missing and bogus sessions
    for headers in ({}, {"Authorization": "Bearer nope"}):
        for path, kw in (("/user/list_learnware", {"json": {"page": 0, "limit": 10}}),
                         ("/auth/logout", {}), ("/user/delete_learnware", {"json": {"learnware_id": "00000001"}}),
                         ("/engine/search_learnware", {"data": {"semantic_specification": "{}"}})):
            assert assert_json_error(c.post(prefix + path, headers=headers, **kw))["code"] == 11
    auth = login(c, prefix)
    # bad forms
    assert assert_json_error(c.post(prefix + "/engine/search_learnware", headers=auth, data={"limit": "3"}))["code"] == 21
    assert assert_json_error(c.post(prefix + "/engine/search_learnware", headers=auth,
                                    data={"semantic_specification": "{bad"}))["code"] == 41
    bad_spec = c.post(prefix + "/engine/search_learnware", headers=auth, data={"semantic_specification": "{}"},
                      files={"statistical_specification": ("u.json", b'{"z": [[1]], "beta": "x"}')})
    assert assert_json_error(bad_spec)["code"] == 41
    assert assert_json_error(c.post(prefix + "/engine/search_learnware", headers=auth,
                                    data={"semantic_specification": "{}", "limit": "0"}))["code"] == 52
    broken = c.post(prefix + "/user/chunked_upload", headers={**auth, "content-type": "multipart/form-data; boundary=x"},
                    content=b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end")
    assert assert_json_error(broken)["code"] == 21
    assert assert_json_error(c.post(prefix + "/user/list_learnware", headers=auth, json={"page": 0}))["code"] == 21
    assert assert_json_error(c.post(prefix + "/user/list_learnware", headers=auth,
                                    json={"page": "x", "limit": 5}))["code"] == 21
    # unknown ids
    assert assert_json_error(c.get(prefix + "/engine/learnware_info", params={"learnware_id": "nope"},
                                   headers=auth))["code"] == 41
    assert assert_json_error(c.get(prefix + "/engine/learnware_info", headers=auth))["code"] == 21
    assert assert_json_error(c.get(prefix + "/engine/download_learnware", params={"learnware_id": "nope"},
                                   headers=auth), 404)["code"] == 41
    assert assert_json_error(c.post(prefix + "/user/delete_learnware", headers=auth,
                                    json={"learnware_id": "nope"}))["code"] == 51
    assert assert_json_error(c.post(prefix + "/user/update_learnware", headers=auth,
                                    data={"learnware_id": "nope", "semantic_specification": "{}"},
                                    files={"learnware_file": ("f", b"")}))["code"] == 71
    # wrong bearer on a download: non-200 JSON (the client only checks the status there)
    assert_json_error(c.get(prefix + "/engine/download_learnware", params={"learnware_id": "00000001"},
                            headers={"Authorization": "Bearer nope"}), 401)


def test_prefix_keeps_the_dock_routes_and_can_be_turned_off(dock):
    c = make_client(dock, api_prefix="/api")
    assert c.get("/health").json()["code"] == 0
    assert c.post("/api/auth/login_by_token").status_code == 200
    assert c.post("/auth/login_by_token").status_code == 404   # is_connected() is False off the prefix
    off = make_client(dock, api_prefix=None)
    assert off.post("/auth/login_by_token").status_code == 404
    with pytest.raises(ValueError, match="prefix"):
        create_app(dock, api_prefix="api/")


def test_login_logout_expiry_and_several_tokens(dock):
    c = make_client(dock, token=["first", TOKEN], session_ttl=0.3)
    r = c.post("/auth/login_by_token", json={"email": "x@y", "token": "first"}).json()
    assert r["code"] == 0
    auth = {"Authorization": "Bearer " + r["data"]["token"]}
    assert r["data"]["token"] not in ("first", TOKEN)
    assert c.post("/user/list_learnware", json={"page": 0, "limit": 5}, headers=auth).json()["code"] == 0
    time.sleep(0.4)
    assert c.post("/user/list_learnware", json={"page": 0, "limit": 5}, headers=auth).json()["code"] == 11
    auth = login(c)
    assert c.post("/auth/logout", headers=auth).json()["code"] == 0
    assert c.post("/user/list_learnware", json={"page": 0, "limit": 5}, headers=auth).json()["code"] == 11
    # no token configured: every login is refused
    c2 = make_client(dock, token=None)
    assert c2.post("/auth/login_by_token", json={"email": "x@y", "token": ""}).json()["code"] == 21
    assert c2.post("/auth/login_by_token", json={"email": "x@y", "token": "t"}).json()["code"] == 53


def test_vocabulary_is_public(dock):
    c = make_client(dock)
    body = c.get("/engine/semantic_specification").json()
    assert body["code"] == 0
    voc = body["data"]["semantic_specification"]
    assert set(voc) == {"Data", "Task", "Model", "Library", "Scenario", "License", "Name", "Description"}
    assert voc["Data"]["Values"] == ["Table", "Image", "Text"] and voc["Name"]["Type"] == "String"


def test_vocabulary_and_easy_checker_match_the_reference():
    pytest.importorskip("torch")
    conf = pytest.importorskip("learnware.config")
    market = pytest.importorskip("learnware.market")
    assert semantic_check.SEMANTIC_VOCABULARY == conf.C["semantic_specs"]
    base = semantic(1)
    cases = [base, {}, {"Data": base["Data"]}, semantic(1, Model={"Values": ["Base Model"], "Type": "Optional"}),
             semantic(1, Task={"Values": ["Classification"], "Type": "Class"}),
             semantic(1, Task={"Values": ["Classification"], "Type": "Class"},
                      Output={"Dimension": 3, "Description": {"0": "a", "2": "c"}}),
             semantic(1, Output={"Dimension": 1, "Description": {"1": "out of range"}}),
             semantic(1, Input={"Dimension": 2, "Description": {"5": "x"}}),
             semantic(1, Input={"Dimension": 2, "Description": {"0": 3}}),
             semantic(1, Scenario={"Values": [], "Type": "Tag"}),
             semantic(1, Scenario={"Values": ["Business", "Nope"], "Type": "Tag"}),
             semantic(1, License={"Values": ["MIT", "GPL-2.0"], "Type": "Class"}),
             semantic(1, Library={"Values": ["Scikit-learn"], "Type": "Tag"}),
             semantic(1, Name={"Values": "", "Type": "String"}),
             semantic(1, Name={"Values": ["x"], "Type": "String"}),
             semantic(1, Data={"Values": ["Image"], "Type": "Class"}),
             semantic(1, Data={"Values": ["Text"], "Type": "Class"}, Model={"Values": ["PEFT Model"], "Type": "Optional"},
                      Task={"Values": ["Text Generation"], "Type": "Class"}),
             semantic(1, Data={"Values": ["Image"], "Type": "Class"}, Task={"Values": ["Text Generation"], "Type": "Class"}),
             semantic(1, Data={"Values": ["Video"], "Type": "Class"})]
    no_model = semantic(1)
    del no_model["Model"]
    no_input = semantic(1)
    del no_input["Input"]
    text_no_model = semantic(1, Data={"Values": ["Text"], "Type": "Class"})
    del text_no_model["Model"]
    cases += [no_model, no_input, text_no_model]
    for case in cases:
        ref_status, _ = market.EasySemanticChecker.check_semantic_spec(json.loads(json.dumps(case)))
        ours, msg = semantic_check.easy_semantic_check(case)
        assert ours == (ref_status != market.BaseChecker.INVALID_LEARNWARE), (case, msg)


def test_upload_semantic_rules():
    ok, _ = semantic_check.upload_semantic_check(semantic(1))
    assert ok
    assert "Name length" in semantic_check.upload_semantic_check(semantic(1, Name={"Values": "ab", "Type": "String"}))[1]
    assert "Description length" in semantic_check.upload_semantic_check(
        semantic(1, Description={"Values": "short", "Type": "String"}))[1]
    sem, msg = semantic_check.normalize_semantic(json.dumps(semantic(1, Input=json.dumps({"Dimension": 4}))))
    assert sem["Input"] == {"Dimension": 4}
    assert semantic_check.normalize_semantic("{x")[0] is None
    assert semantic_check.normalize_semantic(json.dumps(semantic(1, Data={"Values": ["Table", "Text"],
                                                                          "Type": "Class"})))[1] == "data type values is not 1"
    text, _ = semantic_check.normalize_semantic(json.dumps(semantic(1, Data={"Values": ["Text"], "Type": "Class"})))
    assert text["Input"] == {}
    assert semantic_check.data_type_check(semantic(1), "RKMETableSpecification", D)[0]
    assert semantic_check.data_type_check(semantic(1), "RKMEStatSpecification", D)[0]
    assert not semantic_check.data_type_check(semantic(1), "RKMETableSpecification", D + 1)[0]
    assert not semantic_check.data_type_check(semantic(1), "RKMETextSpecification", None)[0]


# ------------------------------------------------------------------------------------------ search
def test_search_matches_the_dock_route_and_pages(dock):
    c = make_client(dock)
    auth = login(c)
    u = spec(50, K=8, shift=1.0)
    blob = u.dumps().encode()
    ref = dock.search(u)
    assert ref.mixture is not None  # the fixture must exercise the mixture list
    n = len(ref.single)
    own = c.post("/search", files={"statistical_specification": ("u.json", blob)}, data={"limit": "100"}).json()
    for limit in (1, 2, 3, 100):
        pages = math.ceil(n / limit)
        got = []
        for page in range(pages + 1):
            r = c.post("/engine/search_learnware", headers=auth,
                       files={"statistical_specification": ("u.json", blob)},
                       data={"semantic_specification": "{}", "limit": str(limit), "page": str(page)}).json()
            assert r["code"] == 0 and r["data"]["total_pages"] == pages
            got += r["data"]["learnware_list_single"]
            multi = r["data"]["learnware_list_multi"]
            if page == 0:
                assert [m["learnware_id"] for m in multi] == list(ref.mixture.ids)
                assert all(m["matching"] == ref.mixture.score for m in multi)
            else:
                assert multi == []
        assert [g["learnware_id"] for g in got] == [s.id for s in ref.single]
        assert [g["matching"] for g in got] == [s.score for s in ref.single]  # bit-exact through JSON
        assert [g["learnware_id"] for g in got] == [g["learnware_id"] for g in own["data"]["learnware_list_single"]]
    # no limit: Beimingwu returns the whole list, unpaged
    r = c.post("/engine/search_learnware", headers=auth, files={"statistical_specification": ("u.json", blob)},
               data={"semantic_specification": "{}"}).json()
    assert len(r["data"]["learnware_list_single"]) == n and "total_pages" not in r["data"]


def test_semantic_only_search(dock):
    c = make_client(dock)
    auth = login(c)
    sem = {"Scenario": {"Values": ["Business"], "Type": "Tag"}}
    # urlencoded, as the client sends it without a statistical spec
    r = c.post("/engine/search_learnware", headers=auth,
               data={"semantic_specification": json.dumps(sem), "limit": "4", "page": "0"}).json()
    expect = [s.id for s in dock.search(None, semantic=sem).single]
    assert len(expect) == 6
    assert r["data"]["total_pages"] == 2
    assert [x["learnware_id"] for x in r["data"]["learnware_list_single"]] == expect[:4]
    assert all(x["matching"] == 0 for x in r["data"]["learnware_list_single"])
    assert r["data"]["learnware_list_multi"] == []
    none = c.post("/engine/search_learnware", headers=auth,
                  data={"semantic_specification": json.dumps({"Name": {"Values": "zzzzqqq", "Type": "String"}}),
                        "limit": "10"}).json()
    assert none["code"] == 0 and none["data"]["learnware_list_single"] == [] and none["data"]["total_pages"] == 0


def test_anonymous_reads_only_when_allowed(dock):
    dock.update("00000003", status=0)
    closed = make_client(dock)
    q = {"semantic_specification": "{}", "limit": "50"}
    assert closed.post("/engine/search_learnware", data=q).json()["code"] == 11
    assert closed.get("/engine/download_learnware", params={"learnware_id": "00000001"}).status_code == 401
    assert closed.get("/engine/learnware_info", params={"learnware_id": "00000001"}).json()["code"] == 11
    opened = make_client(dock, allow_anonymous=True)
    r = opened.post("/engine/search_learnware", data=q).json()
    assert r["code"] == 0 and "00000003" not in [x["learnware_id"] for x in r["data"]["learnware_list_single"]]
    assert opened.get("/engine/download_learnware", params={"learnware_id": "00000001"}).status_code == 200
    assert_json_error(opened.get("/engine/download_learnware", params={"learnware_id": "00000003"}), 403)
    assert opened.get("/engine/learnware_info", params={"learnware_id": "00000003"}).json()["code"] == 41
    assert opened.post("/engine/search_learnware", data={**q, "is_verified": "false"}).json()["code"] == 61
    auth = login(opened)
    r = opened.post("/engine/search_learnware", data={**q, "is_verified": "false"}, headers=auth).json()
    assert [x["learnware_id"] for x in r["data"]["learnware_list_single"]] == ["00000003"]
    assert opened.get("/engine/download_learnware", params={"learnware_id": "00000003"}, headers=auth).status_code == 200


# ------------------------------------------------------------------------------------------ download
def test_download_repacks_and_keeps_the_stored_package(dock):
    c = make_client(dock)
    auth = login(c)
    before = dock.package_bytes("00000004")
    r = c.get("/engine/download_learnware", params={"learnware_id": "00000004"}, headers=auth)
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        meta = yaml.safe_load(zf.read("learnware.yaml"))
        assert meta["id"] == "00000004"
        assert meta["semantic_specification"] == {"file_name": "semantic_specification.json"}
        assert json.loads(zf.read("semantic_specification.json")) == semantic(4)
        assert meta["model"] == {"class_name": "Model", "kwargs": {}}
        assert RKMESpec.loads(zf.read("rkme.json").decode()).dist(dock.get_spec("00000004")) == 0.0
        assert "__init__.py" in zf.namelist()
    assert dock.package_bytes("00000004") == before
    with zipfile.ZipFile(io.BytesIO(before)) as zf:
        assert "id" not in yaml.safe_load(zf.read("learnware.yaml"))
    assert not [n for n in os.listdir(os.path.join(dock.path, "uploads")) if n.endswith(".zip")]  # temp removed


# ------------------------------------------------------------------------------------------ uploads
def big_package(seed, size=5000):
    rng = np.random.default_rng(seed)
    return package(spec(100 + seed), extra={"weights.bin": rng.bytes(size)})


def test_chunked_upload_in_any_order(dock):
    c = make_client(dock)
    auth = login(c)
    for order in (None, lambda o: o[::-1], lambda o: o[1::2] + o[0::2]):
        blob = big_package(len(dock))
        r = upload(c, auth, blob, chunk=999, order=order)
        assert r["code"] == 0, r
        lid = r["data"]["learnware_id"]
        assert dock.get(lid).semantic == semantic(99) and dock.get(lid).status == 1
        assert dock.get_spec(lid).dist(spec(100 + len(dock) - 1)) == 0.0
        with zipfile.ZipFile(io.BytesIO(dock.package_bytes(lid))) as zf:
            assert zf.read("weights.bin") == zipfile.ZipFile(io.BytesIO(blob)).read("weights.bin")
    assert not [n for n in os.listdir(os.path.join(dock.path, "uploads")) if n.endswith(".part")]


def test_same_file_twice_is_refused(dock):
    c = make_client(dock)
    auth = login(c)
    blob = big_package(1)
    assert upload(c, auth, blob)["code"] == 0
    n = len(dock)
    again = upload(c, auth, blob)
    assert again["code"] != 0 and "already exist" in again["msg"]
    direct = c.post("/user/add_learnware", headers=auth, files={"learnware_file": ("lw.zip", blob)},
                    data={"semantic_specification": json.dumps(semantic(5))}).json()
    assert direct["code"] == 61
    assert len(dock) == n
    # once deleted, the same file may come back
    lid = dock.list(limit=100)[0][-1].id
    assert c.post("/user/delete_learnware", headers=auth, json={"learnware_id": lid}).json()["code"] == 0
    assert upload(c, auth, blob)["code"] == 0


def test_md5_mismatch_and_gaps_are_refused(dock):
    c = make_client(dock)
    auth = login(c)
    n = len(dock)
    blob = big_package(2)
    wrong = hashlib.md5(b"something else").hexdigest()
    r = upload(c, auth, blob, file_hash=wrong)
    assert r["code"] == 51 and "md5 mismatch" in r["msg"]
    gap = upload(c, auth, blob, order=lambda o: o[:-2] + o[-1:])  # one chunk never sent
    assert gap["code"] == 51 and "md5 mismatch" in gap["msg"]
    assert len(dock) == n
    assert not [x for x in os.listdir(os.path.join(dock.path, "uploads")) if x.endswith(".part")]
    assert upload(c, auth, blob)["code"] == 0  # a clean retry works
    bad_hash = c.post("/user/chunked_upload", headers=auth, files={"chunk_file": ("c", b"x")},
                      data={"file_hash": "../../etc/passwd", "chunk_begin": "0"}).json()
    assert bad_hash["code"] == 21
    never = c.post("/user/add_learnware_uploaded", headers=auth,
                   json={"file_hash": "0" * 32, "semantic_specification": json.dumps(semantic(1))}).json()
    assert never["code"] == 21 and "no upload staged" in never["msg"]


def test_oversize_uploads_are_refused(dock):
    c = make_client(dock, max_upload_bytes=20_000)
    auth = login(c)
    blob = big_package(3, size=30_000)
    r = upload(c, auth, blob, chunk=4000)
    assert r["code"] == 413 and "limit" in r["msg"]
    one = c.post("/user/chunked_upload", headers=auth, files={"chunk_file": ("c", b"y" * 25_000)},
                 data={"file_hash": hashlib.md5(b"q").hexdigest(), "chunk_begin": "0"})
    assert_json_error(one, 413)
    def streamed():  # no Content-Length: the limit is enforced while the body streams in
        yield b"--b\r\nContent-Disposition: form-data; name=\"chunk_file\"; filename=\"c\"\r\n\r\n"
        for _ in range(30):
            yield b"z" * 1000
    hdr = {**auth, "content-type": "multipart/form-data; boundary=b"}
    assert_json_error(c.post("/user/chunked_upload", headers=hdr, content=streamed()), 413)
    far = c.post("/user/chunked_upload", headers=auth, files={"chunk_file": ("c", b"y")},
                 data={"file_hash": hashlib.md5(b"q").hexdigest(), "chunk_begin": str(10**12)}).json()
    assert far["code"] == 21
    assert all(os.path.getsize(os.path.join(dock.path, "uploads", x)) <= 20_000
               for x in os.listdir(os.path.join(dock.path, "uploads")) if x.endswith(".part"))


def test_hostile_and_unchecked_packages_are_refused(dock):
    c = make_client(dock)
    auth = login(c)
    n = len(dock)
    evil = package(spec(7), extra={"../../escape.py": "x"})
    r = upload(c, auth, evil)
    assert r["code"] == 51 and "unsafe member" in r["msg"]
    no_yaml = io.BytesIO()
    with zipfile.ZipFile(no_yaml, "w") as zf:
        zf.writestr("rkme.json", spec(7).dumps())
    assert "learnware.yaml" in upload(c, auth, no_yaml.getvalue())["msg"]
    wrong_dim = package(spec(8, d=D + 2))
    r = upload(c, auth, wrong_dim)
    assert r["code"] == 51 and "dimension" in r["msg"]
    h = hashlib.md5(b"z").hexdigest()
    for bad in (semantic(1, Name={"Values": "abc", "Type": "String"}), semantic(1, Library={"Values": ["Rust"],
                                                                                           "Type": "Class"})):
        blob = package(spec(9))
        h = hashlib.md5(blob).hexdigest()
        c.post("/user/chunked_upload", headers=auth, files={"chunk_file": ("c", blob)},
               data={"file_hash": h, "chunk_begin": "0"})
        r = c.post("/user/add_learnware_uploaded", headers=auth,
                   json={"file_hash": h, "semantic_specification": json.dumps(bad)}).json()
        assert r["code"] == 51, r
    r = c.post("/user/add_learnware_uploaded", headers=auth,
               json={"file_hash": h, "semantic_specification": json.dumps({"Name": {}})}).json()
    assert r["code"] == 41
    assert len(dock) == n


def test_upload_status_waiting_for_a_check(dock):
    c = make_client(dock, upload_status=0)
    auth = login(c)
    r = upload(c, auth, big_package(4))
    lid = r["data"]["learnware_id"]
    assert dock.get(lid).status == 0
    listed = c.post("/user/list_learnware", headers=auth, json={"page": 0, "limit": 100}).json()["data"]
    assert {x["learnware_id"]: x["verify_status"] for x in listed["learnware_list"]}[lid] == "WAITING"
    found = c.post("/engine/search_learnware", headers=auth, data={"semantic_specification": "{}"}).json()
    assert lid not in [x["learnware_id"] for x in found["data"]["learnware_list_single"]]
    with pytest.raises(ValueError, match="upload_status"):
        create_app(dock, upload_status=-1)


def test_interrupted_upload_is_swept_and_can_be_retried(dock, tmp_path):
    c = make_client(dock)
    auth = login(c)
    blob = big_package(5)
    h = hashlib.md5(blob).hexdigest()
    for off in (0, 1000):  # the client dies after two chunks
        c.post("/user/chunked_upload", headers=auth, files={"chunk_file": ("c", blob[off:off + 1000])},
               data={"file_hash": h, "chunk_begin": str(off)})
    part = os.path.join(dock.path, "uploads", h + ".part")
    assert os.path.getsize(part) == 2000
    assert upload(c, auth, blob)["code"] == 0  # the retry (from chunk 0) completes the same staging file
    assert not os.path.exists(part)
    staging = UploadStaging(tmp_path / "st", max_bytes=10_000, ttl=60)
    staging.write_chunk(h, 0, b"abc")
    old = time.time() - 120
    os.utime(staging.path + f"/{h}.part", (old, old))
    staging.write_chunk(hashlib.md5(b"fresh").hexdigest(), 0, b"abc")
    assert staging.sweep(force=True) == 1
    assert [n for n in os.listdir(staging.path) if n.endswith(".part")] == [hashlib.md5(b"fresh").hexdigest() + ".part"]


def test_staging_limits_and_locking(tmp_path):
    st = UploadStaging(tmp_path / "st", max_bytes=100, max_total_bytes=150, ttl=60)
    a, b = hashlib.md5(b"a").hexdigest(), hashlib.md5(b"b").hexdigest()
    st.write_chunk(a, 0, b"x" * 100)
    with pytest.raises(UploadError, match="full"):
        st.write_chunk(b, 50, b"y" * 50)
    with pytest.raises(UploadError, match="limit"):
        st.write_chunk(a, 90, b"x" * 11)
    with pytest.raises(UploadError, match="offset"):
        st.write_chunk(a, -1, b"x")
    with pytest.raises(ValueError):
        UploadStaging(tmp_path / "st2", max_bytes=0)
    # chunks of one hash from many threads land at their offsets
    data = bytes(range(100))
    h = hashlib.md5(data).hexdigest()
    st2 = UploadStaging(tmp_path / "st3", max_bytes=100, ttl=60)
    threads = [threading.Thread(target=st2.write_chunk, args=(h, o, data[o:o + 10])) for o in range(0, 100, 10)][::-1]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with st2.lock(h):
        assert st2.take(h) == data


def test_concurrent_uploads_of_the_same_file(dock):
    """Four clients upload the same file at once: exactly one learnware, the others told it exists."""
    c = make_client(dock)
    auth = login(c)
    blob = big_package(6, size=20_000)
    n = len(dock)
    results, errors = [], []

    def client():
        try:
            results.append(upload(c, auth, blob, chunk=2000))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    ok = [r for r in results if r["code"] == 0]
    assert len(ok) == 1, results
    assert all("already exist" in r["msg"] or "md5 mismatch" in r["msg"] or "no upload staged" in r["msg"]
               for r in results if r["code"] != 0), results
    assert len(dock) == n + 1


# ------------------------------------------------------------------------------------------ update / delete
def test_update_semantic_and_package(dock):
    c = make_client(dock, upload_status=0)
    auth = login(c)
    lid = "00000005"
    # a cosmetic change keeps the status; a Task change sends it back to checking
    r = c.post("/user/update_learnware", headers=auth,
               data={"learnware_id": lid, "semantic_specification": json.dumps(
                   semantic(5, Name={"Values": "renamed learnware", "Type": "String"}))}).json()
    assert r["code"] == 0 and dock.get(lid).status == 1 and dock.get(lid).semantic["Name"]["Values"] == "renamed learnware"
    r = c.post("/user/update_learnware", headers=auth, data={
        "learnware_id": lid, "semantic_specification": json.dumps(semantic(5, Scenario={"Values": ["Health"],
                                                                                        "Type": "Tag"}))}).json()
    assert r["code"] == 0 and dock.get(lid).status == 1
    r = c.post("/user/update_learnware", headers=auth, data={
        "learnware_id": lid, "semantic_specification": json.dumps(semantic(5, d=7))}).json()
    assert r["code"] == 51 and "dimension" in r["msg"] and dock.get(lid).semantic["Input"]["Dimension"] == D
    new = big_package(7)
    r = c.post("/user/update_learnware", headers=auth, files={"learnware_file": ("lw.zip", new)},
               data={"learnware_id": lid, "semantic_specification": json.dumps(semantic(5))}).json()
    assert r["code"] == 0
    assert dock.get(lid).status == 0 and dock.get_spec(lid).dist(spec(107)) == 0.0
    with zipfile.ZipFile(io.BytesIO(dock.package_bytes(lid))) as zf:
        assert "weights.bin" in zf.namelist()
    assert upload(c, auth, new)["code"] != 0  # the new file is now known
    bad = c.post("/user/update_learnware", headers=auth, files={"learnware_file": ("lw.zip", b"not a zip")},
                 data={"learnware_id": lid, "semantic_specification": json.dumps(semantic(5))}).json()
    assert bad["code"] == 51 and dock.get_spec(lid).dist(spec(107)) == 0.0
    assert c.post("/user/delete_learnware", headers=auth, json={"learnware_id": lid}).json()["code"] == 0
    assert lid not in dock
    assert c.post("/user/delete_learnware", headers=auth, json={}).json()["code"] == 21


# ------------------------------------------------------------------------------------------ Dock.update(package=)
def test_dock_update_package_replaces_spec_and_files(dock):
    lid = "00000002"
    sem = dock.get(lid).semantic
    old_files = set(os.listdir(os.path.join(dock.path, "packages")))
    dock.update(lid, package=big_package(8))
    assert dock.get_spec(lid).dist(spec(108)) == 0.0 and dock.get(lid).semantic == sem
    files = set(os.listdir(os.path.join(dock.path, "packages")))
    assert len(files) == len(old_files) and files != old_files  # one replaced, nothing left behind
    assert dock.search(spec(108)).single[0].id == lid
    fresh = Dock(dock.path)
    assert fresh.search(spec(108)).single[0].id == lid and fresh.verify() == []
    with zipfile.ZipFile(io.BytesIO(fresh.package_bytes(lid))) as zf:
        assert "weights.bin" in zf.namelist()
    with pytest.raises(ValueError, match="not both"):
        dock.update(lid, package=big_package(9), spec=spec(1))
    with pytest.raises(KeyError):
        dock.update("nope", package=big_package(9))
    with pytest.raises(ValueError):
        dock.update(lid, package=b"garbage")
    assert set(os.listdir(os.path.join(dock.path, "packages"))) == files


def test_dock_update_package_failure_in_the_commit_loses_nothing(dock, monkeypatch):
    lid = "00000006"
    before = dock.package_bytes(lid)
    files = set(os.listdir(os.path.join(dock.path, "packages")))

    def boom(self, c):
        raise OSError("disk went away")

    monkeypatch.setattr(Dock, "_bump", boom)
    with pytest.raises(OSError, match="disk"):
        dock.update(lid, package=big_package(10), semantic=semantic(60))
    monkeypatch.undo()
    assert dock.package_bytes(lid) == before and dock.get(lid).semantic == semantic(6)
    assert set(os.listdir(os.path.join(dock.path, "packages"))) == files
    assert dock.verify() == []


CRASHER = """
import os, sys
from lwengine.dock import Dock
d = Dock(sys.argv[1])
real = Dock._bump
def die(self, c):
    os._exit(17)        # killed after the new package and spec record hit the disk, before the commit
Dock._bump = die
d.update("00000007", package=open(sys.argv[2], "rb").read())
"""


def test_dock_update_package_crash_before_commit(dock, tmp_path):
    lid = "00000007"
    before, spec_before = dock.package_bytes(lid), dock.get_spec(lid)
    p = tmp_path / "new.zip"
    p.write_bytes(big_package(11))
    files = set(os.listdir(os.path.join(dock.path, "packages")))
    dock.close()
    r = subprocess.run([sys.executable, "-c", CRASHER, str(dock.path), str(p)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 17, r.stderr
    assert len(os.listdir(os.path.join(dock.path, "packages"))) == len(files) + 1  # the orphan is there
    d = Dock(dock.path)
    assert d.package_bytes(lid) == before and d.get_spec(lid).dist(spec_before) == 0.0
    d.add_spec(spec(200))  # the next writer cleans up
    assert set(os.listdir(os.path.join(d.path, "packages"))) == files and d.verify() == []
    d.update(lid, package=p)
    assert d.get_spec(lid).dist(spec(111)) == 0.0


def test_identity_semantic_shortcut_agrees_with_the_filter():
    from lwengine.dock.beimingwu import semantic_filter_is_identity
    from lwengine.semantic import semantic_filter

    listed = [(f"{i:02d}", semantic(i)) for i in range(8)] + [("none", None)]
    ids = [i for i, _ in listed]
    for user in ({}, {"Name": {"Values": "", "Type": "String"}, "Scenario": {"Values": [], "Type": "Tag"},
                      "Input": {"Dimension": 3}},
                 {"Model": {"Values": ["Others"], "Type": "Optional"}}, {"Name": {"Values": "learnware 3",
                                                                                  "Type": "String"}},
                 {"Scenario": {"Values": ["Business"], "Type": "Tag"}}):
        identity = semantic_filter(listed, user) == ids
        if semantic_filter_is_identity(user):
            assert identity, user
    assert semantic_filter_is_identity({}) and not semantic_filter_is_identity({"Name": {"Values": "x"}})
    assert not semantic_filter_is_identity({"Name": {"Values": None}})  # left to the filter (and its error)
