"""Synthetic task data of the demos (``lwengine demo`` and its dock run)."""
from __future__ import annotations

import numpy as np

__all__ = ["make_tasks"]


def make_tasks(num_tasks: int = 8, n: int = 2000, d: int = 10, seed: int = 0):
    """``num_tasks`` datasets, each a 3-component Gaussian mixture around its own centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(num_tasks, d))
    tasks = []
    for c in centres:
        comps = c + rng.normal(scale=1.0, size=(3, d))
        lab = rng.integers(0, 3, size=n)
        tasks.append((comps[lab] + rng.normal(scale=0.5, size=(n, d))).astype(np.float32))
    return tasks
