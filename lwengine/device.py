"""The one device rule of the Python layers: ``device="auto"|"cpu"|"cuda"`` -> ``"cpu"`` or ``"cuda"``.

``"auto"`` is CUDA when the CUDA extension is built and a GPU is visible, else the CPU; ``"cuda"`` on a
build or machine without it is a RuntimeError saying which is missing.  The resolved name is what
:class:`~lwengine.SpecIndex`, the search, ``topk`` and the dock pass to every :mod:`lwengine.kernels` call.
"""
from __future__ import annotations

from . import kernels

__all__ = ["DEVICES", "resolve", "cuda_available"]

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """Whether the CUDA extension is built and at least one GPU is visible."""
    return kernels.default_device() == "cuda"


def resolve(device: str = "auto", name: str = "device") -> str:
    """``"cpu"`` or ``"cuda"`` for a device argument (ValueError for other values)."""
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"{name} must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        return kernels.default_device()
    return kernels.resolve_device(device)  # "cuda" without a build or a GPU: RuntimeError naming what is missing
