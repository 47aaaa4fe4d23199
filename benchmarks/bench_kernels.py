"""cross_inner throughput (useful pairs/s) against a vectorised numpy float64 baseline.

    python benchmarks/bench_kernels.py [--smoke] [--json out.json] [--threads N] [--sizes N ...] [--dims d ...]

A pair is one kernel evaluation k(q_a, z_b).  Setting: Q = 1 query spec of K = 100 points against
N store specs of K = 100 points each.  The numpy baseline computes the same formula (expansion
|q|^2 - 2 q.z + |z|^2, GEMM, exp, weighted segment sums) in float64, in chunks, measured in the
same run (on at most 2000 specs: its per-pair cost does not depend on N).  "% of limit" compares the
float32 rate with the machine's measured limit for this kernel: per pair it needs d FMAs and one exp,
so limit = min(fma_rate / d, exp_rate) (the two overlap perfectly: an optimistic limit), with fma_rate
(lane-FMAs/s) and exp_rate (the kernel's float32 exp, per second) measured by _core.peak_probe().
"""
from __future__ import annotations

import numpy as np

from common import machine_info, parser, print_table, timeit, write_json
from lwengine import _backend, kernels

core = _backend.require_core()


def numpy_cross_inner(qz, qb, z, b, offsets, gamma, chunk=200_000):
    """float64 numpy twin for one query spec (vectorised: GEMM + exp + reduceat)."""
    qz = qz.astype(np.float64)
    qn = (qz * qz).sum(1)
    out = np.empty(len(offsets) - 1)
    rows = np.empty(z.shape[0])
    for s in range(0, z.shape[0], chunk):
        zc = z[s:s + chunk].astype(np.float64)
        sq = qn[:, None] - 2.0 * (qz @ zc.T) + (zc * zc).sum(1)[None, :]
        rows[s:s + chunk] = qb @ np.exp(-gamma * sq)
    w = rows * b
    out[:] = np.add.reduceat(w, offsets[:-1]) if len(w) else 0.0
    return out


def main():
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", help="store sizes N (specs)")
    ap.add_argument("--dims", type=int, nargs="*", help="dimensions d")
    args = ap.parse_args()
    if args.threads:
        core.set_num_threads(args.threads)
    K, gamma = 100, 0.1
    Ns = args.sizes or ([100, 1000] if args.smoke else [1000, 10_000, 100_000])
    ds = args.dims or ([20] if args.smoke else [20, 64])
    repeats = 2 if args.smoke else args.repeats
    probe = core.peak_probe(0.05 if args.smoke else 0.5)
    fma_lanes = probe["fma_f32_flops"] / 2.0
    rng = np.random.default_rng(0)
    rows = []
    for d in ds:
        limit = min(fma_lanes / d, probe["exp_f32_per_s"])  # perfect FMA/exp overlap: optimistic
        for N in Ns:
            z64 = rng.standard_normal((N * K, d)) * 0.5
            b = rng.random(N * K) / K
            off = np.arange(N + 1, dtype=np.int64) * K
            qz, qb, qo = z64[:K].copy(), b[:K].copy(), np.array([0, K], dtype=np.int64)
            pairs = float(K * K * N)
            # numpy's per-pair cost is flat in N: time it on at most 2000 specs (rate, same run)
            Nb = min(N, 2000)
            t_np = timeit(lambda: numpy_cross_inner(qz, qb, z64[:Nb * K], b[:Nb * K], off[:Nb + 1], gamma),
                          repeats=max(1, repeats // 2)) * (N / Nb)
            ref = numpy_cross_inner(qz, qb, z64[:Nb * K], b[:Nb * K], off[:Nb + 1], gamma)
            for dtype in (np.float32, np.float64):
                z = z64.astype(dtype)
                q = qz.astype(dtype)
                got = kernels.cross_inner(q, qb, qo, z, b, off, gamma)[0, :Nb]
                err = float(np.abs(got - ref).max() / np.abs(ref).max())
                reps = repeats if pairs <= 1e8 else 3
                t = timeit(lambda: kernels.cross_inner(q, qb, qo, z, b, off, gamma), repeats=reps, min_time=0.05)
                row = {"d": d, "N": N, "dtype": np.dtype(dtype).name, "pairs_per_s": pairs / t,
                       "numpy_f64_pairs_per_s": pairs / t_np, "speedup_vs_numpy": t_np / t,
                       "max_rel_err_vs_f64": err, "ms": t * 1e3}
                if dtype == np.float32:
                    row["pct_of_limit"] = 100.0 * (pairs / t) / limit
                rows.append(row)
    print("machine:", machine_info())
    print(f"peak_probe: fp32 FMA {probe['fma_f32_flops']:.3g} flop/s, exp {probe['exp_f32_per_s']:.3g}/s "
          f"({probe['threads']} threads, {probe['simd']})")
    print_table(rows, ["d", "N", "dtype", "pairs_per_s", "numpy_f64_pairs_per_s", "speedup_vs_numpy",
                       "pct_of_limit", "max_rel_err_vs_f64", "ms"])
    write_json(args.json, {"machine": machine_info(), "probe": probe, "rows": rows})


if __name__ == "__main__":
    main()
