"""lwengine: fast RKME specifications and learnware identification (CPU + CUDA)."""
from __future__ import annotations

import sys as _sys

from . import kernels
from ._config import show_config
from .specs import RKMESpec, RKMETextSpec, fit_many, load_spec, spec_types
from .specs import table as spec  # the old module path lwengine.spec
from .specs.image import RKMEImageSpec  # registered with the other types; torch only for its fit
from .index import SpecIndex
from .dock import Dock
from .version import VERSION

_sys.modules[__name__ + ".spec"] = spec

__version__ = VERSION
__all__ = ["Dock", "RKMEImageSpec", "RKMESpec", "RKMETextSpec", "SpecIndex", "fit_many", "kernels", "load_spec",
           "show_config", "spec_types", "__version__"]
