"""Dock benchmark: bulk ingest rate, reopen time, HTTP search throughput vs the library, and the
Beimingwu search route (``/engine/search_learnware``, what learnware.client calls) vs the dock's own.

    python benchmarks/bench_dock.py            # full: 1e4 packages, 1e5-learnware reopen, 4 HTTP clients
    python benchmarks/bench_dock.py --smoke    # tiny (CI), < 30 s

Reported as medians; the HTTP overhead is a ratio against direct ``Dock.search`` calls measured in the
same run on the same dock; the two HTTP routes alternate over ``rounds`` on one server.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

import numpy as np

from lwengine import RKMESpec
from lwengine.dock import Dock

YAML = "stat_specifications:\n  - class_name: RKMETableSpecification\n    file_name: rkme.json\n"


def specs(n, K, d, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3, size=(16, d))
    for i in range(n):
        z = centres[i % 16] + rng.normal(size=(K, d))
        yield RKMESpec(z, rng.dirichlet(np.ones(K)), 0.1, 200)


def write_packages(folder, n, K, d):
    paths = []
    for i, s in enumerate(specs(n, K, d, 0)):
        p = os.path.join(folder, f"p{i:06d}.zip")
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("learnware.yaml", YAML)
            zf.writestr("rkme.json", s.dumps())
            zf.writestr("semantic_specification.json",
                        json.dumps({"Name": {"Type": "String", "Values": f"model {i}"}}))
        paths.append(p)
    return paths


def bench_ingest(tmp, n, K, d):
    paths = write_packages(os.path.join(tmp, "pk") if os.makedirs(os.path.join(tmp, "pk")) is None else None,
                           n, K, d)
    dock = Dock.init(os.path.join(tmp, "ingest"))
    t = time.perf_counter()
    rep = dock.add_paths(paths, batch_size=256)
    t_pkg = time.perf_counter() - t
    assert not rep.failed
    raw = list(specs(n, K, d, 1))
    dock2 = Dock.init(os.path.join(tmp, "ingest_raw"))
    t = time.perf_counter()
    dock2.add_specs([(s, None) for s in raw], batch_size=1024)
    t_raw = time.perf_counter() - t
    return {"packages": n, "package_ingest_per_s": n / t_pkg, "raw_spec_ingest_per_s": n / t_raw,
            "K": K, "d": d}, dock


def bench_reopen(tmp, n, K, d, repeats=3):
    path = os.path.join(tmp, "big")
    dock = Dock.init(path)
    t = time.perf_counter()
    dock.add_specs([(s, None) for s in specs(n, K, d, 2)], batch_size=5000)
    t_fill = time.perf_counter() - t
    dock.checkpoint()
    u = next(specs(1, K, d, 3))
    dock.add_specs([(s, None) for s in specs(100, K, d, 4)])  # a few changes after the snapshot: patched at open
    dock.close()
    code = ("import time,sys; t=time.perf_counter(); from lwengine.dock import Dock; from lwengine import RKMESpec;"
            "t1=time.perf_counter(); d=Dock(sys.argv[1]); d.search(RKMESpec.loads(sys.argv[2]), method=None);"
            "print(time.perf_counter()-t1)")
    times = [float(subprocess.run([sys.executable, "-c", code, path, u.dumps()], capture_output=True, text=True,
                                  check=True).stdout) for _ in range(repeats)]
    return {"learnwares": n + 100, "fill_s": t_fill, "reopen_plus_first_search_s": statistics.median(times),
            "reopen_runs_s": times}


def bench_http(path, n_requests, clients=4, rounds=3):
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lwengine", "dock", "serve", path, "--port", str(port),
                             "--token", "bench-token"], stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        users = [s.dumps().encode() for s in specs(16, 20, 10, 5)]
        httpx.post(base + "/search", files={"statistical_specification": ("u.json", users[0])}, timeout=60)  # warm
        per = max(1, n_requests // (clients * rounds))  # per client and round; each route gets n_requests
        login = httpx.post(base + "/auth/login_by_token", json={"email": "bench@localhost", "token": "bench-token"})
        auth = {"Authorization": "Bearer " + login.json()["data"]["token"]}

        def own(c, u):  # the dock's own search route
            r = c.post(base + "/search", files={"statistical_specification": ("u.json", u)})
            r.raise_for_status()

        def beimingwu(c, u):  # the same search through the route learnware.client calls
            r = c.post(base + "/engine/search_learnware", headers=auth,
                       files={"statistical_specification": ("u.json", u)},
                       data={"semantic_specification": "{}", "limit": "10", "page": "0"})
            r.raise_for_status()
            assert r.json()["code"] == 0, r.text

        def rate(call):
            def client(k, out):
                with httpx.Client(timeout=60) as c:
                    for j in range(per):
                        call(c, users[(k + j) % 16])
                out.append(per)

            done: list = []
            t = time.perf_counter()
            threads = [threading.Thread(target=client, args=(k, done)) for k in range(clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            return sum(done) / (time.perf_counter() - t)

        beimingwu(httpx, users[0])
        own_rates, bmw_rates = [], []
        for _ in range(rounds):  # alternate the two routes so that machine noise hits both alike
            own_rates.append(rate(own))
            bmw_rates.append(rate(beimingwu))
        http_rate, bmw_rate = statistics.median(own_rates), statistics.median(bmw_rates)
    finally:
        proc.terminate()
        proc.wait()
    dock = Dock(path)
    us = [RKMESpec.loads(u.decode()) for u in users]
    dock.search(us[0])
    t = time.perf_counter()
    for j in range(n_requests):
        dock.search(us[j % 16])
    direct_rate = n_requests / (time.perf_counter() - t)
    return {"clients": clients, "requests": per * clients * rounds, "rounds": rounds, "http_searches_per_s": http_rate,
            "direct_searches_per_s": direct_rate, "http_over_direct_time_ratio": direct_rate / http_rate,
            "beimingwu_route_searches_per_s": bmw_rate,
            "beimingwu_over_own_route_time_ratio": http_rate / bmw_rate,
            "beimingwu_over_own_route_time_ratio_per_round": [o / b for o, b in zip(own_rates, bmw_rates)]}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    n_pkg, n_big, n_req = (200, 2000, 60) if args.smoke else (10_000, 100_000, 480)
    out = {"machine": f"{os.cpu_count()} CPUs", "smoke": args.smoke}
    with tempfile.TemporaryDirectory(prefix="bench-dock-") as tmp:
        out["ingest"], dock = bench_ingest(tmp, n_pkg, 20, 10)
        print("ingest:", json.dumps(out["ingest"]), flush=True)
        dock.checkpoint()
        out["http"] = bench_http(dock.path, n_req)
        print("http:", json.dumps(out["http"]), flush=True)
        out["reopen"] = bench_reopen(tmp, n_big, 10, 10)
        print("reopen:", json.dumps(out["reopen"]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
