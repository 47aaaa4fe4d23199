"""Timing the real reference package (``learnware`` 0.4.x) beside lwengine, when it is importable.

It is never a dependency: every entry point returns None (or ``available() is False``) without it,
and the benchmarks print "skipped".  The reference is timed single-threaded (torch intra/inter-op
threads 1, and every BLAS / OpenMP pool of numpy, scipy and torch limited to 1 through threadpoolctl
while the reference runs; no environment variable is set, so lwengine's OpenMP pool is untouched):
it keeps the comparison reproducible on shared machines.  lwengine's own thread count is left to
the caller (``--threads`` in the benchmarks).

Used by bench_search.py (``reference_search``) and bench_fit.py (``reference_generate``).
"""
from __future__ import annotations

import contextlib
import logging
import statistics
import time

import numpy as np

from lwengine import _backend

TABLE = "RKMETableSpecification"
_STATE: dict = {}
# torch and lwengine may share one OpenMP runtime, where torch.set_num_threads(1) also lowers
# lwengine's pool: remember lwengine's default (read before torch is imported) and restore it.
LWENGINE_THREADS = _backend.core.get_num_threads() if _backend.core is not None else 1


@contextlib.contextmanager
def _reference_threads():
    import torch

    torch.set_num_threads(1)
    try:
        with single_threaded():
            yield
    finally:
        if _backend.core is not None:
            _backend.core.set_num_threads(LWENGINE_THREADS)


def available() -> bool:
    """True when the reference's EasyStatSearcher and generate_rkme_table_spec import (needs torch)."""
    if "ok" not in _STATE:
        try:
            import torch
            from learnware.market import EasyStatSearcher
            from learnware.specification import generate_rkme_table_spec

            with contextlib.suppress(RuntimeError):  # only settable once, before any parallel work
                torch.set_num_interop_threads(1)
            if _backend.core is not None:
                _backend.core.set_num_threads(LWENGINE_THREADS)
            logging.getLogger("easy_seacher").setLevel(logging.ERROR)  # its per-search INFO lines
            _STATE["ok"] = EasyStatSearcher is not None and generate_rkme_table_spec is not None
        except Exception as exc:  # noqa: BLE001 - any failure means "skipped"
            _STATE["ok"], _STATE["why"] = False, f"{type(exc).__name__}: {exc}"
    return _STATE["ok"]


def why_unavailable() -> str:
    available()
    return _STATE.get("why", "")


def version() -> str | None:
    if not available():
        return None
    import learnware
    import torch

    return f"learnware {learnware.__version__}, torch {torch.__version__}"


@contextlib.contextmanager
def single_threaded():
    """Limit every BLAS / OpenMP pool to one thread inside the block (threadpoolctl, if installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


def _quiet_reference_logs():
    # the reference logs through its own handlers (INFO per search, a WARNING per non-finite dist)
    for name in ("easy_seacher", "rkme"):
        logging.getLogger(name).setLevel(logging.ERROR)


def reference_learnwares(items):
    """In-memory reference learnwares from ``(id, RKMESpec)`` items (not timed by the callers)."""
    from lwengine.compat.learnware import to_reference_learnware

    return [to_reference_learnware(i, s) for i, s in items]


def reference_search(learnwares, user, *, max_search_num=5, method="greedy", repeats=1):
    """``(median seconds, result)`` of ``EasyStatSearcher(None)(learnwares, user_info, ...)``
    single-threaded; ``result`` = ``{"single": [(id, score)], "mixture": None | (ids, score)}``.
    None without the package."""
    if not available():
        return None
    from learnware.market import BaseUserInfo, EasyStatSearcher

    from lwengine.compat.learnware import to_reference_spec

    _quiet_reference_logs()
    searcher = EasyStatSearcher(None)
    info = BaseUserInfo(stat_info={TABLE: to_reference_spec(user)})
    times, res = [], None
    with _reference_threads():
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = searcher(learnwares, info, max_search_num, method)
            times.append(time.perf_counter() - t0)
    mix = res.get_multiple_results()
    out = {"single": [(it.learnware.id, float(it.score)) for it in res.get_single_results()],
           "mixture": ([lw.id for lw in mix[0].learnwares], float(mix[0].score)) if mix else None}
    return statistics.median(times), out


def lwengine_result(r) -> dict:
    """An lwengine SearchResult in :func:`reference_search`'s result form."""
    return {"single": [(s.id, float(s.score)) for s in r.single],
            "mixture": None if r.mixture is None else (list(r.mixture.ids), float(r.mixture.score))}


def same_result(a: dict, b: dict, tol: float = 1e-6) -> bool:
    """Same single ids in order, scores within ``tol``, same mixture ids, mixture score within ``tol``."""
    if [i for i, _ in a["single"]] != [i for i, _ in b["single"]]:
        return False
    if any(abs(x - y) > tol for (_, x), (_, y) in zip(a["single"], b["single"])):
        return False
    if (a["mixture"] is None) != (b["mixture"] is None):
        return False
    return a["mixture"] is None or (a["mixture"][0] == b["mixture"][0] and abs(a["mixture"][1] - b["mixture"][1]) <= tol)


def reference_generate(X, *, K=100, gamma=0.1, steps=3, repeats=1, seed=0):
    """``(median seconds, RKMETableSpecification)`` of ``generate_rkme_table_spec(X, gamma,
    reduced_set_size=K, steps=steps, cuda_idx=-1)`` single-threaded, after ``torch.manual_seed(seed)``.
    None without the package."""
    if not available():
        return None
    import torch
    from learnware.specification import generate_rkme_table_spec

    _quiet_reference_logs()
    times, spec = [], None
    with _reference_threads():
        for _ in range(repeats):
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            spec = generate_rkme_table_spec(X, gamma=gamma, reduced_set_size=K, steps=steps, cuda_idx=-1)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), spec


def main(argv=None) -> None:
    """``python benchmarks/_learnware_ref.py``: time the reference's generate_rkme_table_spec at
    n = 2e3 and 1e5 (d = 20, K = 100) against RKMESpec.fit on the same data (same run)."""
    import argparse

    import lwengine

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[2000, 100000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if not available():
        print(f"learnware reference: skipped ({why_unavailable()})")
        return
    print(f"reference: {version()} (single-threaded) | lwengine {lwengine.__version__}")
    rng = np.random.default_rng(0)
    for n in args.sizes:
        X = (rng.normal(size=(n, 20)) + rng.integers(0, 4, size=(n, 1))).astype(np.float32)
        reps = args.repeats if n <= 10000 else 1
        t_ref, spec = reference_generate(X, repeats=reps)
        lwengine.RKMESpec.fit(X, seed=0)  # warm-up
        t_lwe = statistics.median(_time(lambda: lwengine.RKMESpec.fit(X, seed=0)) for _ in range(max(reps, 3)))
        from lwengine.compat.learnware import from_reference_spec

        mmd_ref = from_reference_spec(spec).mmd2(X) if n <= 20000 else float("nan")
        mmd_lwe = lwengine.RKMESpec.fit(X, seed=0).mmd2(X) if n <= 20000 else float("nan")
        print(f"n={n:>7} d=20 K=100: reference {t_ref:8.3f} s | lwengine {t_lwe*1e3:8.1f} ms | "
              f"x{t_ref / t_lwe:.0f} | MMD^2 ref {mmd_ref:.3e} lwengine {mmd_lwe:.3e}")


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
