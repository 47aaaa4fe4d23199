"""Adaptive Nyström sketch size on the market of issue 14: certified top-k with growth vs a fixed m.

    python benchmarks/bench_sketch_size.py [--smoke] [--n 20000] [--queries 5] [--json OUT]

Market: ``n`` specs (d = 8, K = 50, gamma 0.1, Dirichlet(5) weights), families of point clouds:
16 family centres N(0, 4²I), spec centres N(family, I), points N(spec centre, 0.7²I); queries are
fresh clouds around market spec centres.  Columns (median over queries, one run): build seconds,
final m, regime, exact evaluations, certified ms, brute ms -- ``fixed`` (``grow=False``, m = 256,
the previous behaviour) and ``adaptive`` (defaults).  Every certified answer is checked against brute.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_info, parser, write_json  # noqa: E402

from lwengine import RKMESpec, SpecIndex  # noqa: E402


def point_cloud_market(n, d=8, K=50, F=16, spread=0.7, seed=0):
    rng = np.random.default_rng(seed)
    fc = rng.normal(scale=4.0, size=(F, d))
    cen = fc[rng.integers(0, F, size=n)] + rng.normal(size=(n, d))
    z = (cen[:, None, :] + spread * rng.normal(size=(n, K, d))).reshape(n * K, d)
    b = rng.dirichlet(np.full(K, 5.0), size=n).reshape(-1)
    return z, b, np.arange(0, n * K + 1, K), cen


def main(argv=None):
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=5)
    args = ap.parse_args(argv)
    n = 2000 if args.smoke else args.n
    d, K = 8, 50
    z, b, off, cen = point_cloud_market(n, d, K)
    rng = np.random.default_rng(1)
    qs = [RKMESpec(cen[i] + 0.7 * rng.normal(size=(K, d)), np.full(K, 1.0 / K), 0.1)
          for i in rng.integers(0, n, 2 if args.smoke else args.queries)]
    rows = []
    for label, kw in (("fixed", {"grow": False}), ("adaptive", {})):
        idx = SpecIndex()
        idx.add_packed([f"s{i}" for i in range(n)], z, b, off, 0.1)
        t0 = time.perf_counter()
        idx.build_sketch(m=256, **kw)
        t_build = time.perf_counter() - t0
        t_cert, t_brute, evals = [], [], []
        for q in qs:
            idx.topk(q, 5)  # warm
            t0 = time.perf_counter()
            got = idx.topk(q, 5)
            t_cert.append(time.perf_counter() - t0)
            evals.append(idx.last_stats["exact_evaluations"])
            reg = next(iter(idx.last_stats["regimes"].values()))
            fallback = idx.last_stats["fallback"]
            t0 = time.perf_counter()
            want = idx.topk(q, 5, "brute")
            t_brute.append(time.perf_counter() - t0)
            if [r[0] for r in got] != [r[0] for r in want]:
                raise SystemExit("certified differs from brute")
        row = {"sketch": label, "n": n, "d": d, "K": K, "build_s": round(t_build, 2), "m": reg["m"],
               "regime": reg["regime"], "fallback": fallback, "exact_evals": int(np.median(evals)),
               "certified_ms": round(1e3 * float(np.median(t_cert)), 2),
               "brute_ms": round(1e3 * float(np.median(t_brute)), 2), "sizing": reg["sizing"]}
        row["x_brute"] = round(row["brute_ms"] / row["certified_ms"], 2)
        rows.append(row)
        print(f"{label:>8}: build {row['build_s']} s, m {row['m']}, regime {row['regime']}, fallback {fallback}, "
              f"exact evals {row['exact_evals']}, certified {row['certified_ms']} ms, brute {row['brute_ms']} ms "
              f"({row['x_brute']}x)")
        for s in reg["sizing"]:
            print("           ", s)
    write_json(args.json, {"machine": machine_info(), "rows": rows})


if __name__ == "__main__":
    main()
