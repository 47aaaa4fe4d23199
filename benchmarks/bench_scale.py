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
import subprocess
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


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_one(regime, d, n, K, queries, m, pools, seed=0, approx=True, rff=True, cluster_min_specs=None,
            save_index=None, grow=True, sketch_dtype=None):
    t = time.perf_counter()
    idx, mk = make_market(n, d, K, regime, seed=seed, dtype="float32")
    t_gen = time.perf_counter() - t
    rss_market = _peak_rss()
    t = time.perf_counter()
    extra = {} if cluster_min_specs is None else {"cluster_min_specs": cluster_min_specs}
    if sketch_dtype is not None:
        extra["dtype"] = sketch_dtype
    idx.build_sketch(m=m, progress=False, grow=grow, **extra)
    t_build = time.perf_counter() - t
    g = next(iter(idx._groups.values()))
    sk = g.sketch
    qs = make_queries(mk, queries, seed=seed + 1)
    z_bytes = n * K * d * 4
    row = {"regime": regime, "d": d, "n": n, "K": K, "m": m, "m_final": int(sk.landmarks.shape[0]),
           "sizing": sk.sizing, "r": sk.r, "gen_s": t_gen,
           "sketch_build_s": t_build, "regime_decision": sk.regime,
           "resid_share_median": sk.resid_share_median, "z_float32_bytes": z_bytes,
           "clusters": sk.clusters.count if sk.clusters is not None else 0,
           "sketch_dtype": str(sk.s.dtype),
           "sketch_bytes": int(sk.s[: sk.n].nbytes + 8 * len(sk.SPEC_ARRAYS[1:]) * sk.n) if sk.projected else 0,
           "index_bytes": idx.memory_bytes(),
           "peak_rss_market_bytes": rss_market, "peak_rss_bytes": _peak_rss()}
    brute_t, cert_t, cert_ev, scanned, exact = [], [], [], [], []
    for q in qs:
        tb, want = _median_time(lambda: idx.topk(q, 5, "brute"), 1)
        tc, got = _median_time(lambda: idx.topk(q, 5, "certified"), 1)
        st = idx.last_stats
        assert [i for i, _ in got] == [i for i, _ in want] or np.allclose([x for _, x in got], [x for _, x in want])
        brute_t.append(tb), cert_t.append(tc), cert_ev.append(st["exact_evaluations"]), exact.append(want)
        scanned.append(st["candidates_scanned"])
    row.update(brute_ms=1e3 * np.median(brute_t), certified_ms=1e3 * np.median(cert_t),
               certified_ms_all=[1e3 * x for x in cert_t],
               certified_exact_evals_median=float(np.median(cert_ev)),
               certified_exact_frac=float(np.median(cert_ev)) / n,
               certified_scanned_median=float(np.median(scanned)),
               certified_vs_brute=float(np.median(cert_t) / np.median(brute_t)))
    row["approx"] = _approx_sweep(idx, sk, qs, exact, pools, rff) if approx else []
    if approx:
        row["approx_clusters"] = sk.clusters.count if sk.clusters is not None else 0
    if save_index:  # the serving side, measured in a fresh process
        t = time.perf_counter()
        idx.save(save_index)
        row["save_s"] = time.perf_counter() - t
        cmd = [sys.executable, __file__, "--serve", save_index, "--regimes", regime, "--sizes", str(n),
               "--K", str(K), "--text-d", str(d), "--queries", str(queries)]
        row["serve"] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        os.remove(save_index)
    return row


def _approx_sweep(idx, sk, qs, exact, pools, rff):
    """Latency and recall@5 of approx mode per (sketch, clusters probed, pool) configuration."""
    out, first = [], {}
    t = time.perf_counter()  # the first call projects a brute-regime group / builds the ANN index
    idx.topk(qs[0], 5, "approx", pool=pools[0])
    first["nystrom"] = time.perf_counter() - t
    configs = [("nystrom", None, p) for p in pools]
    if sk.clusters is not None:  # IVF over the sketch clusters: sweep the clusters probed too
        configs = [("nystrom", npr, p) for npr in (2, 4, 8, 16, 32, 64, 128, 256) for p in (16, 64, 256)
                   if npr <= sk.clusters.count]
    if rff:
        configs += [("rff", None, p) for p in pools]
    for sketch, nprobe, pool in configs:
        if sketch not in first:
            t = time.perf_counter()
            idx.topk(qs[0], 5, "approx", pool=pool, approx_sketch=sketch, nprobe=nprobe)
            first[sketch] = time.perf_counter() - t
        ts, rec = [], []
        for q, want in zip(qs, exact):
            tq, got = _median_time(lambda: idx.topk(q, 5, "approx", pool=pool, approx_sketch=sketch,
                                                     nprobe=nprobe), 3)
            ts.append(tq)
            rec.append(len({i for i, _ in got} & {i for i, _ in want}) / len(want))
        out.append({"sketch": sketch, "index": idx.last_stats.get("approx_index"), "nprobe": nprobe,
                    "pool": pool, "ms": 1e3 * float(np.median(ts)), "recall5": float(np.mean(rec)),
                    "first_call_s": first[sketch]})
    return out


def serve_check(path, regime, d, n, K, queries, seed=0, nprobe=8, pool=64):
    """A fresh process's view of a saved index: memory-mapped load, certified and approx top-5,
    peak RSS (the pages actually touched)."""
    from lwengine import SpecIndex
    from lwengine.scale.market import MarketSpec

    t = time.perf_counter()
    idx = SpecIndex.load(path)
    load_s = time.perf_counter() - t
    qs = make_queries(MarketSpec(n, d, K, regime, seed=seed), queries, seed=seed + 1)
    cert, appr = [], []
    for q in qs:
        cert.append(_median_time(lambda: idx.topk(q, 5), 1)[0])
        appr.append(_median_time(lambda: idx.topk(q, 5, "approx", nprobe=nprobe, pool=pool), 1)[0])
    return {"load_s": load_s, "certified_ms_all": [1e3 * x for x in cert], "certified_ms": 1e3 * float(np.median(cert)),
            "approx_ms": 1e3 * float(np.median(appr)), "approx_nprobe": nprobe, "approx_pool": pool,
            **_proc_memory(), "file_bytes": os.path.getsize(path)}


def _proc_memory():
    """This process's own peak RSS and its private / file-backed parts (Linux /proc; ru_maxrss is not
    used here because Linux keeps the parent's high-water mark across fork + exec)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in ("VmHWM", "RssAnon", "RssFile"):
                    out[key.lower() + "_bytes"] = int(val.split()[0]) * 1024
    except OSError:
        pass
    return out


def best_approx(row):
    """The fastest Nyström configuration with recall@5 >= 0.99 (else the highest recall)."""
    ny = [x for x in row["approx"] if x["sketch"] == "nystrom"]
    if not ny:
        return None
    ok = [x for x in ny if x["recall5"] >= 0.99]
    return min(ok, key=lambda x: x["ms"]) if ok else max(ny, key=lambda x: (x["recall5"], -x["ms"]))


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
        ap = [(r["n"], best_approx(r)) for r in rs if best_approx(r)]
        if ap:
            ax.loglog([x for x, _ in ap], [a["ms"] for _, a in ap], "^-", label="approx (fastest with recall@5 ≥ 0.99)")
            low = [(x, a) for x, a in ap if a["recall5"] < 0.99]
            for x, a in low:
                ax.annotate(f"recall {a['recall5']:.2f}", (x, a["ms"]), textcoords="offset points", xytext=(-60, 8))
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
        series = {}
        for x in r["approx"]:  # clusters: one line per pool over nprobe; faiss: one line over pools
            key = f"{x['sketch']} clusters, pool {x['pool']}" if x["nprobe"] else f"{x['sketch']} ({x['index']}), pools"
            series.setdefault(key, []).append(x)
        for key, a in series.items():
            a.sort(key=lambda x: (x["nprobe"] or 0, x["pool"]))
            ax.plot([x["ms"] for x in a], [x["recall5"] for x in a], "o-", label=key, ms=4)
        ax.axvline(r["brute_ms"], color="gray", ls="--", label="brute")
        ax.set_xscale("log")
        ax.set_title(f"{regime}, N={r['n']}")
        ax.set_xlabel("latency, ms (median)")
        ax.set_ylabel("recall@5")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "scale_recall_vs_latency.png"), dpi=90)


def describe(r):
    ap = best_approx(r) or {"ms": float("nan"), "recall5": float("nan"), "pool": "-", "nprobe": "-"}
    return (f"{r['regime']:8s} d={r['d']:3d} K={r['K']:3d} N={r['n']:8d} build={r['sketch_build_s']:6.1f}s "
            f"r={r['r']:3d} share={r['resid_share_median']:.3f} {r['regime_decision']:6s} | "
            f"brute {r['brute_ms']:8.1f} ms | certified {r['certified_ms']:8.1f} ms "
            f"({r['certified_vs_brute']:.2f}x brute, {100 * r['certified_exact_frac']:.2f}% exact) | "
            f"approx {ap['ms']:6.2f} ms recall@5 {ap['recall5']:.2f} (pool {ap['pool']}, nprobe "
            f"{ap['nprobe']}) | scanned {r.get('certified_scanned_median', float('nan')):.0f} "
            f"C={r.get('clusters', 0)} | peakRSS/Z {r['peak_rss_bytes'] / max(1, r['z_float32_bytes']):.2f}")


def markdown_table(rows):
    out = ["| regime | d | K | N | build s | clusters | brute ms | certified ms | ×brute | exact evals | "
           "sketches scanned | approx ms (recall@5, nprobe/pool) | peak RSS / Z |", "|" + "---|" * 13]
    for r in rows:
        ap = best_approx(r)
        aps = f"{ap['ms']:.2f} ({ap['recall5']:.2f}, {ap['nprobe'] or '-'}/{ap['pool']})" if ap else "-"
        out.append(f"| {r['regime']} | {r['d']} | {r['K']} | {r['n']} | {r['sketch_build_s']:.1f} | "
                   f"{r.get('clusters', 0)} | {r['brute_ms']:.1f} | {r['certified_ms']:.1f} | "
                   f"{r['certified_vs_brute']:.3f} | {r['certified_exact_evals_median']:.0f} "
                   f"({100 * r['certified_exact_frac']:.3g} %) | {r.get('certified_scanned_median', float('nan')):.0f} | "
                   f"{aps} | {r['peak_rss_bytes'] / max(1, r['z_float32_bytes']):.2f} |")
    return "\n".join(out)


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
    p.add_argument("--no-approx", action="store_true", help="skip approx mode")
    p.add_argument("--no-grow", action="store_true", help="fixed sketch size --m (no adaptive growth)")
    p.add_argument("--cluster-min-specs", type=int, default=None,
                   help="cluster the sketches from this N on (default: the library's, 20000)")
    p.add_argument("--from-json", nargs="+", help="tabulate/plot rows of earlier --json runs instead of running")
    p.add_argument("--save-index", help="save each market's index here, then time a fresh process serving it")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--sketch-dtype", help="SketchParams.dtype (default: the library's)")
    p.add_argument("--rff-max", type=int, default=100000,
                   help="largest N for the RFF comparison (a full feature pass + an HNSW build)")
    a = p.parse_args(argv)
    if a.smoke:
        a.n, a.K, a.text_d, a.m, a.queries = 2000, 10, 32, 64, 3
        a.cluster_min_specs = a.cluster_min_specs or 1500  # exercise the clustered path too
    sizes = sorted({s for s in (1000, 3000, 10000, 30000, 100000, 300000, 1000000) if s < a.n} | {a.n})
    if a.sizes:
        sizes = sorted(a.sizes)
    pools = [8, 16, 32, 64, 128]
    dims = {"families": 8, "text": a.text_d, "overlap": 20}
    rows = []
    if a.serve:  # child process of --save-index: load the saved index and query it
        regime = a.regimes.split(",")[0]
        dims = {"families": 8, "text": a.text_d, "overlap": 20}
        print(json.dumps(serve_check(a.serve, regime, dims[regime], a.sizes[0], a.K, a.queries)))
        return 0
    if a.from_json:  # re-plot / re-tabulate earlier runs (e.g. one run per regime and size)
        for path in a.from_json:
            with open(path) as f:
                rows += json.load(f)
        for r in rows:
            print(describe(r))
        print(markdown_table(rows))
    for regime in ([] if a.from_json else a.regimes.split(",")):
        K = a.text_K or a.K if regime == "text" else a.K
        for n in sizes:
            r = run_one(regime, dims[regime], n, K, a.queries, a.m, pools, approx=not a.no_approx,
                        rff=n <= a.rff_max, cluster_min_specs=a.cluster_min_specs, save_index=a.save_index,
                        grow=not a.no_grow, sketch_dtype=a.sketch_dtype)
            rows.append(r)
            print(describe(r), flush=True)
            if "serve" in r:
                print("  serve (fresh process, mmap):", json.dumps(r["serve"]), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.plots:
        plots(rows, a.plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
