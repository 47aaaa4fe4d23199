"""lwengine: fast RKME specifications and learnware identification (CPU + CUDA)."""
from __future__ import annotations

import sys as _sys

from . import kernels
from ._config import show_config
from .specs.table import RKMESpec, fit_many
from .index import SpecIndex
from .dock import Dock
from .specs import table as spec  # the old module path lwengine.spec

_sys.modules[__name__ + ".spec"] = spec

__version__ = "0.1.0"
__all__ = ["Dock", "RKMESpec", "SpecIndex", "fit_many", "kernels", "show_config", "__version__"]
