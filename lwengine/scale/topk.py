"""``topk``: the k nearest specs of a user over a :class:`~lwengine.SpecIndex` in one of three modes
(``"brute"``, ``"certified"``, ``"approx"``; see :mod:`lwengine.scale.certified` and
:mod:`lwengine.scale.approx`).  Ranks by the reference's ``d_i = learnware_i.dist(user)``."""
from __future__ import annotations

import time

import numpy as np

from .. import device as devices
from ..distances import UserQuery
from .approx import approx_topk
from .certified import certified_topk, exact_group, select_topk

__all__ = ["topk", "MODES", "check_topk_args"]

MODES = ("certified", "approx", "brute")


def check_topk_args(k, mode) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def topk(index, user_spec, k: int = 5, mode: str = "certified", *, brute_fraction: float = 0.5,
         pool: int | None = None, approx_sketch: str = "nystrom", ef_search: int | None = None,
         nprobe: int | None = None, device: str | None = None):
    """``(results, stats)``; see :meth:`lwengine.SpecIndex.topk`.  ``device``: the exact kernels'
    device (None: the index's)."""
    check_topk_args(k, mode)
    t0 = time.perf_counter()
    user = UserQuery(user_spec, device=devices.resolve(device) if device is not None else getattr(index, "device", "cpu"))
    groups = [g for g in index.groups() if g.n_alive and user.matches(g)]
    admits = user.entry.admits  # a per-learnware rule (text: languages): exact scan of the admitted specs
    if admits is not None or not user.entry.family.sketchable:  # exact scan (no sketch for this kernel)
        mode_used = mode
        mode = "brute"
    n_total = sum(g.n_alive for g in groups)
    stats = {"mode": mode, "k": int(k), "n_specs": n_total, "groups": len(groups), "exact_evaluations": 0,
             "candidates_scanned": 0, "fallback": None}
    if mode == "brute" or not groups:
        found = []
        for i, g in enumerate(groups):
            live, d = exact_group(g, user)
            if admits is not None:
                ok = np.array([admits(user.spec, index.extra_of(g.ids[j])) for j in live], dtype=bool)
                live, d = live[ok], d[ok] if len(live) else d
            found.append((i, live, d))
            stats["exact_evaluations"] += len(live)
        res = select_topk(groups, found, k)
    elif mode == "approx":
        res = approx_topk(index, groups, user, k, stats, pool=pool, sketch=approx_sketch, ef_search=ef_search,
                          nprobe=nprobe)
    else:
        res = certified_topk(index, groups, user, k, stats, brute_fraction)
    if admits is not None or not user.entry.family.sketchable:
        stats["mode"] = mode_used
        stats["fallback"] = "admission_rule" if admits is not None else "kernel_family_exact_scan"
    stats["time_total_s"] = time.perf_counter() - t0
    return res, stats
