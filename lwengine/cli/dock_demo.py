"""Dock demo: a generated market ingested into a dock, then user searches (the main job's dock hook)."""
from __future__ import annotations

import logging
import os
import tempfile
import time

import numpy as np

__all__ = ["run_dock_demo"]

log = logging.getLogger(__name__)

_FIELDS = ["finance", "retail", "energy", "health", "transport", "weather"]


def _semantic(i: int, family: int) -> dict:
    field = _FIELDS[family % len(_FIELDS)]
    return {"Data": {"Type": "Class", "Values": ["Table"]},
            "Task": {"Type": "Class", "Values": ["Classification" if family % 2 == 0 else "Regression"]},
            "Scenario": {"Type": "Tag", "Values": [field.capitalize()]},
            "Name": {"Type": "String", "Values": f"{field} model {i}"},
            "Description": {"Type": "String", "Values": f"learnware {i} trained on {field} task family {family}"}}


def run_dock_demo(num_learnwares: int = 300, *, path=None, families: int = 12, n: int = 300, d: int = 10,
                  K: int = 20, seed: int = 0, verbose: bool = True) -> dict:
    """Create a dock (``path`` or a temp dir), ingest ``num_learnwares`` fitted specs from ``families``
    synthetic task families, run a few user searches; returns ids, results and timings."""
    from .. import RKMESpec, fit_many
    from .demo_data import make_tasks
    from ..dock.store import Dock

    say = print if verbose else (lambda *a, **k: None)
    timings = {}
    tmp = None
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="lwe-dock-")
        path = os.path.join(tmp.name, "dock")
    try:
        t = time.perf_counter()
        centres = make_tasks(families, n=n, d=d, seed=seed)
        rng = np.random.default_rng(seed)
        fam = np.arange(num_learnwares) % families
        datasets = [centres[f][rng.choice(n, n // 2, replace=False)] + rng.normal(0, 0.1, (n // 2, d)).astype(np.float32)
                    for f in fam]
        specs = fit_many(datasets, K=K, gamma=0.1, seed=seed)
        timings["fit_specs_s"] = time.perf_counter() - t

        t = time.perf_counter()
        dock = Dock.init(path)
        ids = dock.add_specs([(s, _semantic(i, int(f))) for i, (s, f) in enumerate(zip(specs, fam))])
        timings["ingest_s"] = time.perf_counter() - t
        dock.checkpoint()
        dock.close()

        t = time.perf_counter()
        dock = Dock(path)
        dock.search(specs[0], max_search_num=1, method=None)  # loads the snapshot
        timings["reopen_s"] = time.perf_counter() - t

        users = {
            "one family (2)": centres[2][rng.choice(n, 200)],
            "mix of families 1 and 3": np.concatenate([centres[1][rng.choice(n, 120)], centres[3][rng.choice(n, 80)]]),
        }
        results = {}
        for name, x in users.items():
            u = RKMESpec.fit(x, K=K, gamma=0.1, seed=seed)
            t = time.perf_counter()
            r = dock.search(u, max_search_num=5, method="greedy")
            timings[f"search[{name}]_ms"] = (time.perf_counter() - t) * 1e3
            results[name] = r.to_dict()
            say(f"user '{name}': {len(r.single)} single match(es); top "
                + ", ".join(f"{s.id} (score {s.score:.3f})" for s in r.single[:3]))
            if r.mixture is not None:
                say("  mixture: " + ", ".join(f"{i}:{w:.2f}" for i, w in zip(r.mixture.ids, r.mixture.weights))
                    + f"  score {r.mixture.score:.3f}")
        sem = {"Scenario": {"Type": "Tag", "Values": ["Energy"]}}
        t = time.perf_counter()
        r = dock.search(u, semantic=sem)
        timings["search[semantic+stat]_ms"] = (time.perf_counter() - t) * 1e3
        results["energy only"] = r.to_dict()
        say(f"user with Scenario=Energy: top {r.single[0].id if r.single else None}")
        stats = dock.stats()
        dock.close()
        say(f"dock {path}: {stats['learnwares']} learnwares; fit {timings['fit_specs_s']:.2f} s, "
            f"ingest {timings['ingest_s']:.3f} s, reopen {timings['reopen_s']:.3f} s")
        return {"path": path, "ids": ids, "families": fam.tolist(), "results": results, "timings": timings,
                "stats": stats}
    finally:
        if tmp is not None:
            tmp.cleanup()
