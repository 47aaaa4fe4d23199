"""Scalable identification: brute vs certified exact vs approximate top-k on synthetic markets.

    python benchmarks/bench_scale.py --n 20000 [--K 100] [--queries 5] [--json OUT] [--plots docs/]
    python benchmarks/bench_scale.py --smoke          # < 30 s, for CI

Per regime ((a) families d=8, (b) text-like unit-norm d=384 (or --text-d), (c) overlap d=20) and per
market size (1e3 ... --n): build time of the sketch, median latencies of brute / certified / approx
top-5 over the same queries in the same run, exact evaluations, recall@5 of approx per pool size.
Peak RSS is the process maximum (ru_maxrss) after each build.  Timings are medians; ratios are
against brute force measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lwengine.scale import make_market, make_queries  # noqa: E402


def _median_time(fn, reps):
    ts, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), out


def run_one(regime, d, n, K, queries, m, pools, seed=0, approx=True):
    t = time.perf_counter()
    idx, mk = make_market(n, d, K, regime, seed=seed, dtype="float32")
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    idx.build_sketch(m=m, progress=False)
    t_build = time.perf_counter() - t
    g = next(iter(idx._groups.values()))
    qs = make_queries(mk, queries, seed=seed + 1)
    z_bytes = n * K * d * 4
    row = {"regime": regime, "d": d, "n": n, "K": K, "m": m, "r": g.sketch.r, "gen_s": t_gen,
           "sketch_build_s": t_build, "regime_decision": g.sketch.regime,
           "resid_share_median": g.sketch.resid_share_median, "z_float32_bytes": z_bytes,
           "sketch_bytes": int(g.sketch.s[: g.sketch.n].nbytes + 32 * g.sketch.n) if g.sketch.projected else 0,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    brute_t, cert_t, cert_ev, exact = [], [], [], []
    for q in qs:
        tb, want = _median_time(lambda: idx.topk(q, 5, "brute"), 1)
        tc, got = _median_time(lambda: idx.topk(q, 5, "certified"), 1)
        st = idx.last_stats
        assert [i for i, _ in got] == [i for i, _ in want] or np.allclose([x for _, x in got], [x for _, x in want])
        brute_t.append(tb), cert_t.append(tc), cert_ev.append(st["exact_evaluations"]), exact.append(want)
    row.update(brute_ms=1e3 * np.median(brute_t), certified_ms=1e3 * np.median(cert_t),
               certified_exact_evals_median=float(np.median(cert_ev)),
               certified_exact_frac=float(np.median(cert_ev)) / n,
               certified_vs_brute=float(np.median(cert_t) / np.median(brute_t)))
    row["approx"] = []
    if not approx:
        return row
    idx.topk(qs[0], 5, "approx", pool=pools[0])  # build the ANN graph (timed separately)
    t = time.perf_counter()
    idx.topk(qs[0], 5, "approx", pool=pools[0])
    row["approx"] = []
    for sketch in ("nystrom", "rff"):
        t = time.perf_counter()
        idx.topk(qs[0], 5, "approx", pool=pools[0], approx_sketch=sketch)
        build = time.perf_counter() - t
        for pool in pools:
            ts, rec = [], []
            for q, want in zip(qs, exact):
                tq, got = _median_time(lambda: idx.topk(q, 5, "approx", pool=pool, approx_sketch=sketch), 3)
                ts.append(tq)
                rec.append(len({i for i, _ in got} & {i for i, _ in want}) / len(want))
            row["approx"].append({"sketch": sketch, "pool": pool, "ms": 1e3 * float(np.median(ts)),
                                  "recall5": float(np.mean(rec)), "first_call_s": build})
    return row


def plots(rows, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plots", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, regime in zip(axes, ("families", "text", "overlap")):
        rs = sorted([r for r in rows if r["regime"] == regime], key=lambda r: r["n"])
        if not rs:
            continue
        ns = [r["n"] for r in rs]
        ax.loglog(ns, [r["brute_ms"] for r in rs], "o-", label="brute")
        ax.loglog(ns, [r["certified_ms"] for r in rs], "s-", label="certified exact")
        best = [min((a for a in r["approx"] if a["sketch"] == "nystrom"), key=lambda a: -a["pool"]) for r in rs]
        ax.loglog(ns, [a["ms"] for a in best], "^-", label=f"approx (pool {best[0]['pool']})")
        ax.set_title(f"{regime} (d={rs[0]['d']}, K={rs[0]['K']})")
        ax.set_xlabel("N specs")
        ax.set_ylabel("top-5 latency, ms (median)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "scale_latency_vs_n.png"), dpi=90)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, regime in zip(axes, ("families", "text", "overlap")):
        rs = [r for r in rows if r["regime"] == regime]
        if not rs:
            continue
        r = max(rs, key=lambda r: r["n"])
        for sketch in ("nystrom", "rff"):
            a = [x for x in r["approx"] if x["sketch"] == sketch]
            ax.plot([x["ms"] for x in a], [x["recall5"] for x in a], "o-", label=sketch)
        ax.axvline(r["brute_ms"], color="gray", ls="--", label="brute")
        ax.set_xscale("log")
        ax.set_title(f"{regime}, N={r['n']}")
        ax.set_xlabel("latency, ms (median)")
        ax.set_ylabel("recall@5")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "scale_recall_vs_latency.png"), dpi=90)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000, help="largest market size")
    p.add_argument("--K", type=int, default=100)
    p.add_argument("--text-d", type=int, default=384)
    p.add_argument("--text-K", type=int, default=None, help="K for the text regime (default --K)")
    p.add_argument("--m", type=int, default=256)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--regimes", default="families,text,overlap")
    p.add_argument("--json", help="write all rows as JSON")
    p.add_argument("--plots", help="folder for the PNG plots")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (< 30 s)")
    p.add_argument("--sizes", type=int, nargs="*", default=None, help="exact sizes to run (default: a sweep up to --n)")
    p.add_argument("--no-approx", action="store_true", help="skip approx mode (its HNSW build is slow at 1e6 on 2 cores)")
    a = p.parse_args(argv)
    if a.smoke:
        a.n, a.K, a.text_d, a.m, a.queries = 2000, 10, 32, 64, 3
    sizes = sorted({s for s in (1000, 3000, 10000, 30000, 100000, 300000, 1000000) if s < a.n} | {a.n})
    if a.sizes:
        sizes = sorted(a.sizes)
    pools = [8, 16, 32, 64, 128]
    dims = {"families": 8, "text": a.text_d, "overlap": 20}
    rows = []
    for regime in a.regimes.split(","):
        K = a.text_K or a.K if regime == "text" else a.K
        for n in sizes:
            r = run_one(regime, dims[regime], n, K, a.queries, a.m, pools, approx=not a.no_approx)
            rows.append(r)
            best = [x for x in r["approx"] if x["sketch"] == "nystrom" and x["recall5"] >= 0.99]
            ap = (min(best, key=lambda x: x["ms"]) if best else max(r["approx"], key=lambda x: x["recall5"])) \
                if r["approx"] else {"ms": float("nan"), "recall5": float("nan"), "pool": "-"}
            print(f"{regime:8s} d={r['d']:3d} K={K:3d} N={n:8d} build={r['sketch_build_s']:6.1f}s "
                  f"r={r['r']:3d} share={r['resid_share_median']:.3f} {r['regime_decision']:6s} | "
                  f"brute {r['brute_ms']:8.1f} ms | certified {r['certified_ms']:8.1f} ms "
                  f"({r['certified_vs_brute']:.2f}x brute, {100 * r['certified_exact_frac']:.2f}% exact) | "
                  f"approx {ap['ms']:6.2f} ms recall@5 {ap['recall5']:.2f} (pool {ap['pool']}) | "
                  f"peakRSS/Z {r['peak_rss_bytes'] / max(1, r['z_float32_bytes']):.2f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.plots and not a.no_approx:
        plots(rows, a.plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
