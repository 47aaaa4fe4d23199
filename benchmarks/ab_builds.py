"""A/B of two builds of the native core in alternating processes: the installed one against another.

    python benchmarks/ab_builds.py --base OTHER/_core.cpython-311-x86_64-linux-gnu.so [--rounds 10]
                                   [--what fit|kmeans|search] [--json out.json]
    python benchmarks/ab_builds.py --base OTHER_CHECKOUT --what search     # Python and build of both
    python benchmarks/ab_builds.py --smoke      # the installed build against itself, briefly (CI)

Each round runs one process per build (base first in even rounds, the installed build first in odd
ones); both load OpenMP with lwengine's ``OMP_WAIT_POLICY=PASSIVE`` default (a base ``_core`` loaded
by path used to get libgomp's spinning default instead, which made its median batches faster); a process times
``RKMESpec.fit`` (n = 2000, d = 20, K = 100, the benchmark's data) or k-means alone in 25 batches of
8 calls after a warm-up, or ``SpecIndex.search`` on bench_search.py's market (N = 10^4) in 15 batches
of 1 call, and reports the fastest batch and the median batch (ms per call).  The
summary is the median over rounds of each.  Alternating processes keep the comparison fair on a
shared, noisy machine (the base build of a worktree: ``ninja -C build`` there, then this script).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import importlib.util, statistics, sys, time
import numpy as np
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as lwengine._backend, before any _core loads OpenMP
base, batches, calls = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
if base and os.path.isdir(base):  # another checkout (its Python and its built lwengine/_core*.so)
    sys.path.insert(0, base)
elif base:
    spec = importlib.util.spec_from_file_location("lwengine._core", base)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["lwengine._core"] = mod
    spec.loader.exec_module(mod)
import lwengine
from lwengine import kernels
if sys.argv[2] == "search":  # bench_search.py's market, N = 10^4
    sys.path.insert(0, sys.argv[5])
    import bench_search
    index, user = bench_search.build(10000), bench_search.user_spec()
    f = lambda: index.search(user)
else:
    X = np.random.default_rng(2000).standard_normal((2000, 20)).astype(np.float32)
    f = {"fit": lambda: lwengine.RKMESpec.fit(X, K=100, seed=0),
         "kmeans": lambda: kernels.kmeans(X, 100, seed=0)}[sys.argv[2]]
for _ in range(5):
    f()
times = []
for _ in range(batches):
    t = time.perf_counter()
    for _ in range(calls):
        f()
    times.append((time.perf_counter() - t) / calls * 1e3)
print(min(times), statistics.median(times))
"""


def run_once(base: str, what: str, batches: int = 25, calls: int = 8) -> tuple[float, float]:
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", CHILD, base, what, str(batches), str(calls), here],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"timing process failed ({base or 'installed build'}):\n{out.stderr}")
    best, median = out.stdout.split()
    return float(best), float(median)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", help="path of the other build's _core extension module, or of another checkout "
                                  "whose lwengine/ holds its built _core (then its Python code runs too)")
    p.add_argument("--smoke", action="store_true", help="the installed build against itself, one short round")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--what", choices=("fit", "kmeans", "search"), default="fit")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    size = (15, 1) if args.what == "search" else (25, 8)
    if args.smoke:
        import lwengine._core

        args.base, args.rounds, size = args.base or lwengine._core.__file__, 1, (2, 1)
    if not args.base:
        p.error("--base is required (or --smoke)")
    rows = {"base": [], "installed": []}
    for r in range(max(1, args.rounds)):  # the order alternates: a process run second can be slower
        order = (("base", args.base), ("installed", "")) if r % 2 == 0 else (("installed", ""), ("base", args.base))
        for name, base in order:
            rows[name].append(run_once(base, args.what, *size))
    summary = {k: {"fastest_batch_ms": statistics.median(b for b, _ in v),
                   "median_batch_ms": statistics.median(m for _, m in v)} for k, v in rows.items()}
    for k, s in summary.items():
        print(f"{k:9s} {args.what}: median over {len(rows[k])} rounds of the fastest batch "
              f"{s['fastest_batch_ms']:.3f} ms, of the median batch {s['median_batch_ms']:.3f} ms")
    ratios = [b[0] / i[0] for b, i in zip(rows["base"], rows["installed"])]
    summary["round_ratio_median"] = statistics.median(ratios)
    summary["rounds_installed_faster"] = sum(r > 1 for r in ratios)
    print(f"ratio base / installed (fastest batches): median over rounds {summary['round_ratio_median']:.2f}x, "
          f"installed faster in {summary['rounds_installed_faster']} of {len(ratios)} rounds")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"what": args.what, "base": args.base, "rounds": rows, "summary": summary}, fh, indent=1)


if __name__ == "__main__":
    main()
