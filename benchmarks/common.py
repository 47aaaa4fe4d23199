"""Shared helpers of the lwengine benchmarks: timing, machine info, tables, JSON output.

Every benchmark measures its baseline in the same run and reports medians (after warm-up), so the
ratios stay meaningful on shared machines.  ``--smoke`` shrinks every size for CI.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, few repeats (CI)")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats (median reported)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads for _core")
    return p


def timeit(fn, *, repeats: int = 7, warmup: int = 1, min_time: float = 0.0) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` runs; a run that is
    shorter than ``min_time`` is looped until it is not (and divided)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        loops, t = 0, 0.0
        t0 = time.perf_counter()
        while True:
            fn()
            loops += 1
            t = time.perf_counter() - t0
            if t >= min_time:
                break
        times.append(t / loops)
    return statistics.median(times)


def machine_info() -> dict:
    from lwengine import _backend

    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    core = _backend.require_core()
    info.update({f"core_{k}": v for k, v in core.cpu_info().items()})
    info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    return info


def print_table(rows: list[dict], columns: list[str]) -> None:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).rjust(w) for c, w in zip(columns, widths)))


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=1)
