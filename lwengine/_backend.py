"""Which native modules loaded, and why not.

``core`` is the CPU extension (always built); ``cuda`` the CUDA extension (only when built with
CUDA and importable).  Nothing here raises at import: callers ask :func:`require_cuda` when they need it.
"""
from __future__ import annotations

import importlib
import os

# Shared 2-vCPU machines: busy-waiting OpenMP threads were measured to slow work 30x under
# contention.  Default to passive waiting unless the user chose otherwise (must precede the import).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

core = None
core_error: str | None = None
cuda = None
cuda_error: str | None = None

try:
    from . import _core as core  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - only on a broken install
    core_error = f"{type(exc).__name__}: {exc}"

try:
    cuda = importlib.import_module(f"{__package__}._cuda")
except ModuleNotFoundError as exc:
    cuda_error = "not built (install with LWE_CUDA=ON)" if exc.name == f"{__package__}._cuda" else str(exc)
except ImportError as exc:  # built, but its runtime cannot load
    cuda_error = f"{type(exc).__name__}: {exc}"


def require_core():
    if core is None:
        raise RuntimeError(f"lwengine's CPU extension _core failed to import: {core_error}")
    return core


def cuda_device_count() -> int:
    if cuda is None:
        return 0
    try:
        return int(cuda.device_count())
    except Exception:  # noqa: BLE001 - a broken driver means no usable device
        return 0


def require_cuda():
    if cuda is None:
        raise RuntimeError(f"device='cuda' asked for, but lwengine's CUDA extension is {cuda_error}")
    if cuda_device_count() == 0:
        raise RuntimeError("device='cuda' asked for, but no CUDA device is visible")
    return cuda
