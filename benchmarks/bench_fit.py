"""Spec generation time: ``RKMESpec.fit`` vs a pure-numpy float64 twin of the same algorithm.

    python benchmarks/bench_fit.py [--smoke] [--quick] [--json out.json] [--threads N] [--repeats R] [--ref-rounds M]

Also prints the stages of one fit at each size (median ms of each native call of the fit's loop made
alone through FitKernels: k-means, moments with/without T, self-Gram, QP cold and warm-started, Z
step; ``python`` = fit minus all of them -- since the CPU fit runs them in one native call on one
thread team, FitKernels.fit_reference, that residual is no longer the Python glue and can be <= 0), fit_many's rate per spec over 64 small data sets next to one
fit, and one moments pass at 1 and 2 threads (the serial threshold of csrc/cpu/dispatch.cpp).

Sizes: n in {2e3, 1e5}, d = 20, K = 100, the reference's defaults (gamma 0.1, 3 steps, step 0.1).
Columns: ``lwengine`` (median s), ``numpy64`` (the same algorithm from ``lwengine._reference``:
float32 k-means, float64 moments, exact QP, reference Z step; same init rows), their ratio, and
``learnware`` (the reference package's ``generate_rkme_table_spec``) when it is importable — it is
not a dependency, so usually "skipped").  With the reference, ``--ref-rounds`` rounds (default 3)
time it and lwengine in turn (this shared box's speed drifts within a run); ``vs_learnware`` is
the median of the per-round ratios, each round's times are in the JSON.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_info, parser, print_table, timeit, write_json  # noqa: E402

import lwengine  # noqa: E402
from lwengine import _reference as ref  # noqa: E402


def numpy_fit(x32, K, gamma=0.1, step_size=0.1, steps=3, seed=0):
    """The fit's algorithm in float64 numpy (reference-style random init, seeded like lwengine's)."""
    idx = np.random.default_rng(seed).integers(0, len(x32), size=K)
    z = ref.kmeans(x32, K, init_idx=idx)[0].astype(np.float64)
    x = x32.astype(np.float64)
    C, T = ref.zx_moments(z, x, gamma)
    beta = ref.simplex_qp(ref.gauss_kernel(z, z, gamma), C)[0]
    for _ in range(steps):
        z = ref.rs_step_from_moments(z, beta, C, T, gamma, step_size)
        C, T = ref.zx_moments(z, x, gamma)
        beta = ref.simplex_qp(ref.gauss_kernel(z, z, gamma), C)[0]
    return z, beta


def _median_ms(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        ts.append(time.perf_counter_ns() - t0)
    return statistics.median(ts) / 1e6


def stage_times(X, K, repeats, gamma=0.1):
    """Median ms of every stage of one fit: the calls RKMESpec.fit makes (through FitKernels, the
    same arguments), and ``python`` = the whole fit minus those calls (validation, numpy glue)."""
    from lwengine.specs import table as S

    r = max(20, 4 * repeats)
    x, _ = S._prepare_data(X, "X")
    fk = lwengine.kernels.FitKernels(x, gamma, device="cpu")
    c, iters = lwengine.kernels.kmeans(x, K, seed=0)
    z = c.astype(np.float64)
    C, T = fk.moments(z, True)
    G = fk.point_gram(z)
    beta = fk.beta_qp(G, C)
    z2 = fk.step_from_gram(z, beta, C, T, G, 0.1)
    C2, _ = fk.moments(z2, False)
    G2 = fk.point_gram(z2)
    out = {"fit": _median_ms(lambda: lwengine.RKMESpec.fit(X, K=K, seed=0, device="cpu"), r),
           "prepare": _median_ms(lambda: S._prepare_data(X, "X"), r),
           "kmeans": _median_ms(lambda: lwengine.kernels.kmeans(x, K, seed=0), r), "kmeans_iters": iters,
           "moments_CT": _median_ms(lambda: fk.moments(z, True), r),
           "moments_C": _median_ms(lambda: fk.moments(z, False), r),
           "point_gram": _median_ms(lambda: fk.point_gram(z), r),
           "qp_cold": _median_ms(lambda: fk.beta_qp(G, C), r),
           "qp_warm": _median_ms(lambda: fk.beta_qp(G2, C2, beta), r),
           "z_step": _median_ms(lambda: fk.step_from_gram(z, beta, C, T, G, 0.1), r)}
    native = (out["prepare"] + out["kmeans"] + 3 * out["moments_CT"] + out["moments_C"] + 4 * out["point_gram"]
              + out["qp_cold"] + 3 * out["qp_warm"] + 3 * out["z_step"])
    out["python"] = out["fit"] - native
    return out


def fit_many_rate(n, d, K, count, repeats):
    """Median ms per spec of ``fit_many`` over ``count`` data sets of n rows (default n_jobs)."""
    rng = np.random.default_rng(7)
    sets = [rng.standard_normal((n, d)).astype(np.float32) for _ in range(count)]
    per = _median_ms(lambda: lwengine.fit_many(sets, K=K, seed=0, device="cpu"), max(3, repeats // 2)) / count
    single = _median_ms(lambda: lwengine.RKMESpec.fit(sets[0], K=K, seed=0, device="cpu"), max(20, 4 * repeats))
    return {"n": n, "datasets": count, "fit_many_ms_per_spec": per, "single_fit_ms": single,
            "ratio": single / per}


def threads_sweep(d=20, K=100, sizes=(2000, 10_000, 30_000, 100_000), gamma=0.1):
    """Median ms of one moments pass (C and T) at 1 and 2 threads, below and above the serial
    threshold of csrc/cpu/dispatch.cpp (K n d < 3.2e7 runs on one thread whatever is asked)."""
    core = lwengine._backend.require_core()
    prev = core.get_num_threads()
    rows = []
    try:
        for n in sizes:
            x = np.random.default_rng(n).standard_normal((n, d)).astype(np.float32)
            z = x[:K].astype(np.float64)
            C, T = np.zeros(K), np.zeros((K, d))
            row = {"n": n, "work": K * n * d}
            for nt in (1, 2):
                core.set_num_threads(nt)
                row[f"ms_{nt}t"] = _median_ms(lambda: core.zx_moments(z, x, gamma, C, T), max(5, int(4e5 / n)))
            rows.append(row)
    finally:
        core.set_num_threads(prev)
    return rows


def learnware_fit():
    """The reference's generate_rkme_table_spec, single-threaded (benchmarks/_learnware_ref.py), or None."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _learnware_ref as lref

    if not lref.available():
        return None
    return lambda X, K: lref.reference_generate(X, K=K)[0]


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n = 2e3 only (skip the n = 1e5 row)")
    p.add_argument("--ref-rounds", type=int, default=3, help="rounds of (reference, lwengine) timed in turn")
    args = p.parse_args(argv)
    core = lwengine._backend.require_core()
    if args.threads:
        core.set_num_threads(args.threads)
    sizes = [(300, 5, 20)] if args.smoke else [(2000, 20, 100)] + ([] if args.quick else [(100_000, 20, 100)])
    repeats = 2 if args.smoke else args.repeats
    lw = learnware_fit()
    rows = []
    for n, d, K in sizes:
        X = np.random.default_rng(n).standard_normal((n, d)).astype(np.float32)
        t_ours = timeit(lambda: lwengine.RKMESpec.fit(X, K=K, seed=0), repeats=repeats, min_time=0.05)
        base_repeats = repeats if n <= 10_000 else max(1, min(repeats, 3))
        t_np = timeit(lambda: numpy_fit(X, K), repeats=base_repeats, warmup=0 if n > 10_000 else 1)
        # both fits draw the same init rows; the objective shows they computed the same thing
        spec = lwengine.RKMESpec.fit(X, K=K, seed=0)
        zb, bb = numpy_fit(X, K)
        obj_np = float(bb @ ref.gauss_kernel(zb, zb, 0.1) @ bb - 2 * bb @ ref.kernel_mean(zb, X, 0.1))
        row = {"n": n, "d": d, "K": K, "lwengine_s": t_ours, "numpy64_s": t_np, "speedup": t_np / t_ours,
               "objective_diff": abs(spec.objective(X) - obj_np)}
        if lw is None:
            row["learnware_s"] = "skipped"
        else:  # rounds of (reference, lwengine) in turn; medians and the median per-round ratio
            rounds = []
            for _ in range(max(1, args.ref_rounds)):
                t_ref = timeit(lambda: lw(X, K), repeats=max(1, min(base_repeats, 3)), warmup=0 if rounds else 1)
                t_lwe = timeit(lambda: lwengine.RKMESpec.fit(X, K=K, seed=0), repeats=repeats, min_time=0.05)
                rounds.append({"learnware_s": t_ref, "lwengine_s": t_lwe})
            row["learnware_s"] = statistics.median(r["learnware_s"] for r in rounds)
            row["lwengine_s_rounds"] = statistics.median(r["lwengine_s"] for r in rounds)
            row["vs_learnware"] = statistics.median(r["learnware_s"] / r["lwengine_s"] for r in rounds)
            row["rounds"] = rounds
        rows.append(row)
    stages = [{"n": n, **stage_times(np.random.default_rng(n).standard_normal((n, d)).astype(np.float32), K,
                                     repeats)} for n, d, K in sizes if n <= 10_000 or not args.quick]
    print(f"threads={core.get_num_threads()}  learnware={'available' if lw else 'skipped (not installed)'}")
    print_table(rows, ["n", "d", "K", "lwengine_s", "numpy64_s", "speedup", "learnware_s", "vs_learnware",
                       "objective_diff"])
    print("stages of one fit (median ms per call made alone; a fit makes 1 kmeans, 3 moments_CT + 1 moments_C,\n"
          "4 point_gram, 1 qp_cold + 3 qp_warm, 3 z_step, in one native call on one thread team;\n"
          "python = fit - all of them):")
    print_table(stages, ["n", "fit", "prepare", "kmeans", "kmeans_iters", "moments_CT", "moments_C", "point_gram",
                         "qp_cold", "qp_warm", "z_step", "python"])
    many = [fit_many_rate(sizes[0][0], sizes[0][1], sizes[0][2], 8 if args.smoke else 64, repeats)]
    print("fit_many over many small data sets (ms per spec) vs one fit:")
    print_table(many, ["n", "datasets", "fit_many_ms_per_spec", "single_fit_ms", "ratio"])
    sweep = threads_sweep(sizes=(300,) if args.smoke else (2000, 10_000, 30_000, 100_000))
    print("one moments pass (ms) at 1 and 2 threads:")
    print_table(sweep, ["n", "work", "ms_1t", "ms_2t"])
    write_json(args.json, {"benchmark": "fit", "machine": machine_info(), "rows": rows, "stages": stages,
                            "fit_many": many, "threads_sweep": sweep})


if __name__ == "__main__":
    main()
