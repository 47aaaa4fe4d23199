"""lwengine: fast RKME specifications and learnware identification (CPU + CUDA)."""
from __future__ import annotations

from . import kernels
from ._config import show_config
from .spec import RKMESpec, fit_many
from .index import SpecIndex
from .dock import Dock

__version__ = "0.1.0"
__all__ = ["Dock", "RKMESpec", "SpecIndex", "fit_many", "kernels", "show_config", "__version__"]


def __getattr__(name):  # lazy: lwengine.RKMEImageSpec without importing the image package (or torch) up front
    if name == "RKMEImageSpec":
        from .specs.image import RKMEImageSpec

        return RKMEImageSpec
    raise AttributeError(f"module 'lwengine' has no attribute {name!r}")
