"""In-process A/B of two builds of the CPU extension on the cross_inner hot loop.

    python benchmarks/ab_core.py BASE_CORE.so NEW_CORE.so [--rounds 15] [--N 10000] [--dims 20 64]

Both shared objects are loaded into one process (separate dlopen handles) and called alternately,
so the noise of a shared machine hits both alike; prints the median pairs/s of each and the median
of the per-round ratios new/base, for float32 and float64 stores (Q = 1 query spec, K = 100).
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import statistics
import time

import numpy as np


def load(path: str):
    loader = importlib.machinery.ExtensionFileLoader("_core", path)
    spec = importlib.util.spec_from_file_location("_core", path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def best_of(fn, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--N", type=int, default=10000)
    ap.add_argument("--dims", type=int, nargs="*", default=[20, 64])
    args = ap.parse_args()
    mods = {"base": load(args.base), "new": load(args.new)}
    K, gamma, rng = 100, 0.1, np.random.default_rng(0)
    for d in args.dims:
        z64 = rng.standard_normal((args.N * K, d)) * 0.5
        b = rng.random(args.N * K) / K
        off = np.arange(args.N + 1, dtype=np.int64) * K
        qb, qo = b[:K].copy(), np.array([0, K], dtype=np.int64)
        for dtype in (np.float32, np.float64):
            z = np.ascontiguousarray(z64.astype(dtype))
            q = np.ascontiguousarray(z[:K])
            outs = {k: np.zeros((1, args.N)) for k in mods}
            calls = {k: (lambda m=m, o=outs[k]: m.cross_inner(q, qb, qo, z, b, off, gamma, o)) for k, m in mods.items()}
            for c in calls.values():
                c()
            assert np.array_equal(outs["base"], outs["new"]), "the two builds disagree"
            t = {"base": [], "new": []}
            ratios = []
            for r in range(args.rounds):
                order = ("base", "new") if r % 2 == 0 else ("new", "base")
                for k in order:
                    t[k].append(best_of(calls[k]))
                ratios.append(t["base"][-1] / t["new"][-1])
            pairs = K * K * args.N
            print(f"d={d:3d} {np.dtype(dtype).name:7s} base {pairs / statistics.median(t['base']):.3g} pairs/s  "
                  f"new {pairs / statistics.median(t['new']):.3g} pairs/s  "
                  f"speed new/base: median of round ratios {statistics.median(ratios):.3f} "
                  f"(quartiles {np.percentile(ratios, 25):.3f}..{np.percentile(ratios, 75):.3f}), bit-identical")


if __name__ == "__main__":
    main()
