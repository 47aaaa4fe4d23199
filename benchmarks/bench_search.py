"""End-to-end search benchmark: SpecIndex.search (greedy, max_search_num=5) over N synthetic specs.

Baselines measured in the same run:
* the reference ``learnware`` package's EasyStatSearcher, if importable (else "skipped"), single-threaded,
  on the same specs converted to its RKMETableSpecification objects (conversion not timed), with
  lwengine timed again right after it at the default and at one OpenMP thread, and the two results
  checked identical (same single ids, scores to 1e-6, same mixture).  N <= 1e4 always runs in full;
  larger N runs in full only when the 1e4 per-learnware time predicts < 2 minutes, else a subset of
  ``--ref-subset`` learnwares is timed and extrapolated per learnware (reported as such).
  Launch with the reference's interpreter, e.g. ``/work/venv-ref/bin/python benchmarks/bench_search.py``;
* a per-pair numpy float64 loop mimicking the reference's per-learnware ``dist`` calls, timed on a
  subset of learnwares and extrapolated per learnware to N (reported as such).
Also: index save/load time, memory against the raw float32 size of the specs, and the distance error
of the float32 store against the float64 one.

    python benchmarks/bench_search.py [--smoke] [--json OUT] [--sizes 1000 10000 100000]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _learnware_ref as lref  # noqa: E402

from lwengine import RKMESpec, SpecIndex, _backend  # noqa: E402

K, D, GAMMA = 100, 20, 0.1


def synthetic_specs(n, seed=0, clusters=8):
    """n specs: z from a few Gaussian task clusters, uniform normalised beta (no fitting)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(clusters, D))
    for i in range(n):
        c = centers[i % clusters]
        z = c + rng.normal(size=(K, D))
        beta = rng.uniform(size=K)
        yield f"{i:08d}", RKMESpec(z, beta / beta.sum(), GAMMA, 1000)


def build(n, dtype="float64", seed=0, chunk=5000):
    index = SpecIndex(dtype=dtype)
    batch = []
    for item in synthetic_specs(n, seed):
        batch.append(item)
        if len(batch) == chunk:
            index.add_many(batch)
            batch = []
    if batch:
        index.add_many(batch)
    return index


def user_spec(seed=123):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(scale=3.0, size=(8, D))
    z = np.concatenate([centers[0] + rng.normal(size=(60, D)), centers[1] + rng.normal(size=(40, D))])
    return RKMESpec(z, np.full(K, 1.0 / K), GAMMA, 1000)


def _gauss(a, b, gamma):
    sq = (a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
    return np.exp(-gamma * sq)


def per_pair_seconds(index, user, sample=200):
    """Seconds per learnware of the reference-style per-pair dist (3 inner products, float64)."""
    ids = index.ids()[:sample]
    specs = [index.get(i) for i in ids]
    uz = user.z.reshape(user.K, -1)
    t0 = time.perf_counter()
    for s in specs:
        z = s.z.reshape(s.K, -1)
        _ = (s.beta @ _gauss(z, z, s.gamma) @ s.beta - 2 * s.beta @ _gauss(z, uz, s.gamma) @ user.beta
             + user.beta @ _gauss(uz, uz, user.gamma) @ user.beta)
    return (time.perf_counter() - t0) / len(specs)


REF_FULL_LIMIT_S = 120.0


def reference_column(index, user, n, per_lw_hint, subset, repeats, ref_rounds=1):
    """The reference's search time at N = n (full or extrapolated) and lwengine's, same specs, same run.

    Returns a dict (or "skipped").  ``per_lw_hint``: seconds per learnware measured at a smaller N."""
    if not lref.available():
        return "skipped"
    ids = index.ids()
    full = n <= 10000 or (per_lw_hint is not None and per_lw_hint * n < REF_FULL_LIMIT_S)
    m = n if full else min(subset, n)
    items = [(i, index.get(i)) for i in ids[:m]]
    lws = lref.reference_learnwares(items)
    del items
    reps = repeats if m <= 1000 else 1
    if full:
        sub = index
    else:  # lwengine on the same subset, for the identity check
        sub = SpecIndex()
        sub.add_many([(i, index.get(i)) for i in ids[:m]])
    ours = lref.lwengine_result(sub.search(user))
    core = _backend.core
    default_threads = lref.LWENGINE_THREADS
    # rounds of (reference, lwengine, lwengine at 1 thread) in turn: this shared box's speed drifts
    # between runs, so each ratio compares timings taken side by side; medians over the rounds
    rounds = []
    for _ in range(ref_rounds):
        t_ref, ref_res = lref.reference_search(lws, user, repeats=reps)
        core.set_num_threads(default_threads)
        t_lwe = median_time(lambda: index.search(user), repeats)
        core.set_num_threads(1)
        try:
            t_lwe1 = median_time(lambda: index.search(user), repeats)
        finally:
            core.set_num_threads(default_threads)
        rounds.append((t_ref * n / m, t_lwe, t_lwe1))
    del lws
    t_ref_n, t_lwe, t_lwe1 = (statistics.median(r[i] for r in rounds) for i in range(3))
    return {"mode": "full" if full else f"extrapolated from {m} learnwares", "ref_s": t_ref_n,
            "ref_measured_s": t_ref_n * m / n, "ref_measured_n": m, "ref_per_learnware_s": t_ref_n / n,
            "lwengine_s": t_lwe, "lwengine_threads": default_threads, "lwengine_1thread_s": t_lwe1,
            "ratio": statistics.median(r[0] / r[1] for r in rounds),
            "ratio_1thread": statistics.median(r[0] / r[2] for r in rounds),
            "rounds": [{"ref_s": a, "lwengine_s": b, "lwengine_1thread_s": c} for a, b, c in rounds],
            "identical": lref.same_result(ref_res, ours), "n_single": len(ref_res["single"]),
            "mixture": ref_res["mixture"] is not None}


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    ap.add_argument("--sizes", type=int, nargs="*")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--no-reference", action="store_true", help="skip the learnware reference column")
    ap.add_argument("--ref-rounds", type=int, default=None,
                    help="rounds of reference + lwengine timings taken in turn (default 3, 1 with --smoke)")
    ap.add_argument("--ref-subset", type=int, default=10000,
                    help="learnwares timed for the reference when N is too large to run in full")
    args = ap.parse_args(argv)
    sizes = args.sizes or ([300, 1000] if args.smoke else [1000, 10000, 100000])
    repeats = 1 if args.smoke else 3
    user = user_spec()
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
                       "native_cross_inner": getattr(_backend.core, "cross_inner", None) is not None,
                       "reference": None if args.no_reference else lref.version()},
           "K": K, "d": D, "results": []}
    print(f"search benchmark: K={K} d={D} greedy max_search_num=5; native cross_inner="
          f"{out['machine']['native_cross_inner']}; reference: "
          f"{'disabled' if args.no_reference else (lref.version() or 'skipped (' + lref.why_unavailable() + ')')}")
    per_lw = None
    for n in sizes:
        t0 = time.perf_counter()
        index = build(n)
        t_build = time.perf_counter() - t0
        index.search(user)  # warm-up
        t_search = median_time(lambda: index.search(user), repeats)
        pp = per_pair_seconds(index, user)
        ref = "skipped" if args.no_reference else reference_column(index, user, n, per_lw, args.ref_subset, repeats,
                                                                      args.ref_rounds or (1 if args.smoke else 3))
        if isinstance(ref, dict):
            per_lw = ref["ref_per_learnware_s"]
        raw_f32 = n * K * (D + 1) * 4
        row = {"N": n, "build_s": t_build, "search_s": t_search, "per_pair_s_per_learnware": pp,
               "per_pair_extrapolated_s": pp * n, "speedup_vs_per_pair": pp * n / t_search,
               "reference": "skipped" if ref is None else ref,
               "speedup_vs_reference_0.6ms": 0.6e-3 * n / t_search,
               "memory_f64_bytes": index.memory_bytes(), "raw_f32_bytes": raw_f32}
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "idx.lwe")
            t0 = time.perf_counter()
            index.save(path)
            row["save_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            loaded = SpecIndex.load(path)
            row["load_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            loaded.search(user)
            row["first_search_after_load_s"] = time.perf_counter() - t0
            del loaded
        idx32 = SpecIndex(dtype="float32")
        idx32.add_many([(i, index.get(i)) for i in index.ids()])
        r64, r32 = index.search(user), idx32.search(user)
        row["memory_f32_bytes"] = idx32.memory_bytes()
        row["f32_max_abs_dist_err"] = float(np.max(np.abs(r64.dists - r32.dists)))
        row["f32_same_ranking"] = r64.ranking == r32.ranking
        s64 = np.array([s.score for s in r64.single])
        s32 = np.array([s.score for s in r32.single])
        row["f32_max_abs_score_err"] = float(np.max(np.abs(s64 - s32))) if len(s64) == len(s32) else None
        del idx32
        out["results"].append(row)
        print(f"N={n:>7}: search {t_search*1e3:9.1f} ms | per-pair loop {pp*1e3:.3f} ms/lw -> {pp*n:8.2f} s "
              f"(x{row['speedup_vs_per_pair']:.0f}) | vs reference 0.6 ms/lw x{row['speedup_vs_reference_0.6ms']:.0f}"
              f" | reference pkg: {'skipped' if ref == 'skipped' else 'see below'}")
        if isinstance(ref, dict):
            print(f"           reference EasyStatSearcher (1 thread, {ref['mode']}): {ref['ref_s']:8.2f} s | lwengine "
                  f"{ref['lwengine_s']*1e3:.1f} ms ({ref['lwengine_threads']} threads) -> x{ref['ratio']:.0f}, "
                  f"{ref['lwengine_1thread_s']*1e3:.1f} ms (1 thread) -> x{ref['ratio_1thread']:.0f} | identical "
                  f"results: {ref['identical']} ({ref['n_single']} singles, mixture {ref['mixture']})")
        print(f"           save {row['save_s']:.2f} s, load {row['load_s']:.3f} s (mmap), first search after "
              f"load {row['first_search_after_load_s']:.2f} s | memory f64 {row['memory_f64_bytes']/raw_f32:.2f}x, "
              f"f32 {row['memory_f32_bytes']/raw_f32:.2f}x raw f32 | f32 dist err {row['f32_max_abs_dist_err']:.1e}, "
              f"score err {row['f32_max_abs_score_err']}, same ranking {row['f32_same_ranking']}")
        del index
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
