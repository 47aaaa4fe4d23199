"""``lwengine demo``: the main job on an embedded default.

Part 1 (identification): generates a small synthetic market (a few tasks, each a Gaussian mixture),
fits an RKME spec per task, indexes them, then identifies the learnwares (and the mixture) that fit a
user whose data is drawn from two of the tasks.
Part 2 (dock): creates a dock, ingests a generated market of hundreds of learnwares (``--learnwares``
for more), reopens it and runs a few user searches.  Both parts print their results and timings.
"""
from __future__ import annotations

import json
import time

import numpy as np

from .demo_data import make_tasks
from .dock_demo import run_dock_demo

__all__ = ["run", "make_tasks", "register"]


def run(num_tasks: int = 8, n: int = 2000, d: int = 10, seed: int = 0, as_json: bool = False) -> dict:
    from .. import RKMESpec, SpecIndex, fit_many
    from .search import print_result

    t0 = time.perf_counter()
    tasks = make_tasks(num_tasks, n, d, seed)
    specs = fit_many(tasks, K=50, gamma=0.1, seed=seed)
    t_fit = time.perf_counter() - t0

    index = SpecIndex()
    for i, spec in enumerate(specs):
        index.add(f"{i:08d}", spec)

    # the user's data: 60% from task 1, 40% from task 3
    rng = np.random.default_rng(seed + 1)
    user_x = np.concatenate([tasks[1][rng.choice(n, 600)], tasks[3][rng.choice(n, 400)]])
    user = RKMESpec.fit(user_x, K=50, gamma=0.1, seed=seed)
    t1 = time.perf_counter()
    result = index.search(user, max_search_num=5, method="greedy")
    t_search = time.perf_counter() - t1
    doc = result.to_dict()
    doc["timings_s"] = {"fit_specs": round(t_fit, 4), "search": round(t_search, 4)}
    doc["truth"] = {"mixture": ["00000001", "00000003"], "weights": [0.6, 0.4]}
    if as_json:
        print(json.dumps(doc, indent=1))
        return doc
    print(f"market: {num_tasks} tasks, n={n}, d={d}; specs fitted in {t_fit:.3f} s (K=50)")
    print(f"user: 60% task 1 + 40% task 3; search took {t_search * 1e3:.2f} ms")
    print_result(result)
    return doc


def _cmd_demo(a) -> int:
    run(a.tasks, a.n, a.d, a.seed, a.json)
    if not a.no_dock:
        print()
        print(f"dock run: {a.learnwares} learnwares")
        run_dock_demo(a.learnwares, path=a.dock, seed=a.seed, verbose=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="fit specs for a synthetic market, identify a user's mixture, run a dock")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the identification result as JSON")
    p.add_argument("--learnwares", type=int, default=300, help="learnwares ingested by the dock run")
    p.add_argument("--dock", default=None, help="dock directory to create (default: a temporary one)")
    p.add_argument("--no-dock", action="store_true", help="skip the dock run")
    p.set_defaults(func=_cmd_demo)
