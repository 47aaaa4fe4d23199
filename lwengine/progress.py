"""Optional progress bars (tqdm, when installed) for long loops of the library."""
from __future__ import annotations

import sys

__all__ = ["progress_iter"]


def progress_iter(items, progress, desc):
    """``items``, wrapped in a tqdm bar when ``progress`` (None: more than 2000 items and a terminal)."""
    if progress is None:
        progress = len(items) > 2000 and sys.stderr.isatty()
    if not progress:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        return items
    return tqdm(items, desc=desc)
