"""`lwengine dock serve` over real HTTP on 127.0.0.1 (server in its own process)."""
from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

from lwengine import RKMESpec  # noqa: E402
from lwengine.dock import Dock  # noqa: E402

TOKEN = "s3cret"
YAML = "stat_specifications:\n  - class_name: RKMETableSpecification\n    file_name: rkme.json\n"


def spec(seed, K=5):
    rng = np.random.default_rng(seed)
    return RKMESpec(rng.normal(size=(K, 3)), rng.dirichlet(np.ones(K)), 0.1, 100)


def pkg(s, name=None, extra=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("learnware.yaml", YAML)
        zf.writestr("rkme.json", s.dumps())
        if name:
            zf.writestr("semantic_specification.json", json.dumps({"Name": {"Type": "String", "Values": name}}))
        for k, v in (extra or {}).items():
            zf.writestr(k, v)
    return buf.getvalue()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("srv") / "dock"
    d = Dock.init(path)
    d.add_specs([(spec(i), {"Name": {"Type": "String", "Values": f"model {i}"}}) for i in range(30)])
    d.close()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lwengine", "dock", "serve", str(path), "--port", str(port),
                             "--token", TOKEN, "--max-upload-mb", "0.5"], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError("server did not start: " + proc.stderr.read())
    yield base, path
    proc.terminate()
    proc.wait(timeout=10)


def test_search_matches_the_library(server):
    base, path = server
    u = spec(3)
    r = httpx.post(base + "/search", files={"statistical_specification": ("u.json", u.dumps().encode())},
                   data={"limit": "3", "page": "0"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    direct = Dock(path).search(u)
    assert data["result"] == direct.to_dict()
    assert [x["learnware_id"] for x in data["learnware_list_single"]] == [s.id for s in direct.single[:3]]
    assert [x["matching"] for x in data["learnware_list_single"]] == [s.score for s in direct.single[:3]]
    assert data["learnware_list_single"][0]["semantic_specification"]["Name"]["Values"] == "model 3"
    assert data["total"] == len(direct.single) and data["total_pages"] == -(-len(direct.single) // 3)
    mix = [] if direct.mixture is None else direct.mixture.ids
    assert [x["learnware_id"] for x in data["learnware_list_multi"]] == mix
    page1 = httpx.post(base + "/search", files={"statistical_specification": ("u.json", u.dumps().encode())},
                       data={"limit": "3", "page": "1"}).json()["data"]
    assert [x["learnware_id"] for x in page1["learnware_list_single"]] == [s.id for s in direct.single[3:6]]
    sem = {"Name": {"Type": "String", "Values": "model 1"}}
    r = httpx.post(base + "/search", data={"semantic_specification": json.dumps(sem), "limit": "100"})
    assert [x["learnware_id"] for x in r.json()["data"]["learnware_list_single"]] == \
        [s.id for s in Dock(path).search(None, semantic=sem).single]
    assert all(x["matching"] is None for x in r.json()["data"]["learnware_list_single"])


def test_bad_requests(server):
    base, _ = server
    assert httpx.post(base + "/search", data={}).status_code == 400
    r = httpx.post(base + "/search", files={"statistical_specification": ("u.json", b"{\"z\": 1}")})
    assert r.status_code == 400 and "missing key" in r.json()["msg"]
    r = httpx.post(base + "/search", data={"semantic_specification": "{bad"})
    assert r.status_code == 400 and "semantic_specification" in r.json()["msg"]
    r = httpx.post(base + "/search", data={"semantic_specification": "{}", "limit": "0"})
    assert r.status_code == 400 and "limit" in r.json()["msg"]
    assert httpx.get(base + "/learnwares/nope").status_code == 404


def test_writes_need_the_token_and_work(server):
    base, path = server
    auth = {"authorization": f"Bearer {TOKEN}"}
    files = {"learnware_file": ("p.zip", pkg(spec(100), "uploaded"))}
    assert httpx.post(base + "/learnwares", files=files).status_code == 401
    assert httpx.post(base + "/learnwares", files=files, headers={"authorization": "Bearer nope"}).status_code == 401
    r = httpx.post(base + "/learnwares", files=files, headers=auth)
    assert r.status_code == 200, r.text
    lid = r.json()["data"]["learnware_id"]
    info = httpx.get(f"{base}/learnwares/{lid}").json()["data"]
    assert info["semantic_specification"]["Name"]["Values"] == "uploaded" and info["status"] == 1
    top = httpx.post(base + "/search", files={"statistical_specification": ("u.json", spec(100).dumps().encode())})
    assert top.json()["data"]["learnware_list_single"][0]["learnware_id"] == lid
    r = httpx.patch(f"{base}/learnwares/{lid}", data={"status": "0"}, headers=auth)
    assert r.status_code == 200 and Dock(path).get(lid).status == 0
    z = httpx.get(f"{base}/learnwares/{lid}/package")
    assert z.status_code == 200 and zipfile.ZipFile(io.BytesIO(z.content)).read("rkme.json")
    evil = pkg(spec(1), extra={"../../evil": "x"})
    r = httpx.post(base + "/learnwares", files={"learnware_file": ("e.zip", evil)}, headers=auth)
    assert r.status_code == 400 and "unsafe member" in r.json()["msg"]
    big = pkg(spec(1), extra={"w.bin": np.random.default_rng(0).bytes(600_000)})
    r = httpx.post(base + "/learnwares", files={"learnware_file": ("b.zip", big)}, headers=auth)
    assert r.status_code == 413
    assert httpx.delete(f"{base}/learnwares/{lid}").status_code == 401
    assert httpx.delete(f"{base}/learnwares/{lid}", headers=auth).status_code == 200
    assert httpx.get(f"{base}/learnwares/{lid}").status_code == 404
    listing = httpx.get(base + "/learnwares", params={"limit": 5, "page": 1}).json()["data"]
    assert listing["total"] == 30 and [x["id"] for x in listing["learnwares"]] == [f"{i:08d}" for i in range(5, 10)]
    assert httpx.get(base + "/stats").json()["data"]["learnwares"] == 30


def test_searches_are_served_while_uploads_run(server):
    base, _ = server
    auth = {"authorization": f"Bearer {TOKEN}"}
    errors, counts = [], []
    stop = threading.Event()

    def searcher():
        n = 0
        with httpx.Client() as c:
            while not stop.is_set():
                r = c.post(base + "/search", files={"statistical_specification": ("u.json", spec(5).dumps().encode())})
                if r.status_code != 200 or r.json()["data"]["learnware_list_single"][0]["learnware_id"] != "00000005":
                    errors.append(r.text)
                n += 1
        counts.append(n)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    added = []
    with httpx.Client() as c:
        for i in range(8):
            r = c.post(base + "/learnwares", files={"learnware_file": ("p.zip", pkg(spec(200 + i)))}, headers=auth)
            assert r.status_code == 200, r.text
            added.append(r.json()["data"]["learnware_id"])
        stop.set()
        for t in threads:
            t.join()
        for lid in added:
            assert c.delete(f"{base}/learnwares/{lid}", headers=auth).status_code == 200
    assert errors == [] and sum(counts) >= 8
