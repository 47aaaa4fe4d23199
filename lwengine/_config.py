"""Build and run-time configuration report (``lwengine.show_config()``, ``python -m lwengine info``)."""
from __future__ import annotations

import importlib.util
import os
import platform

from . import _backend, kernels
from .version import VERSION


def config() -> dict:
    """Version, CPU features, threads, CUDA build and devices, optional packages, as a dict."""
    info: dict = {"lwengine": VERSION, "python": platform.python_version(), "machine": platform.machine()}
    core = _backend.core
    if core is None:
        info["core"] = f"unavailable: {_backend.core_error}"
    else:
        info["core"] = "ok"
        if hasattr(core, "cpu_info"):
            info.update({f"cpu_{k}": v for k, v in dict(core.cpu_info()).items()})
        info["openmp"] = bool(getattr(core, "has_openmp", False))
    info["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY")
    if _backend.cuda is None:
        info["cuda"] = _backend.cuda_error
    else:
        info["cuda"] = "built"
        if hasattr(_backend.cuda, "build_info"):
            info.update({f"cuda_{k}": v for k, v in dict(_backend.cuda.build_info()).items()})
        info["cuda_devices"] = _backend.cuda_device_count()
    ok, why = kernels.triton_status()
    info["triton_backend"] = "available" if ok else f"unavailable: {why}"
    info["default_device"] = kernels.default_device()
    info["backend_auto"] = {op: kernels.choose_backend(op, info["default_device"])
                            for op in ("cross_inner", "self_inner", "gram", "zx_moments")}
    for mod in ("numpy", "torch", "triton", "faiss", "rapidfuzz", "yaml", "tqdm"):
        info[f"has_{mod}"] = importlib.util.find_spec(mod) is not None
    return info


def show_config() -> None:
    """Print :func:`config` as aligned ``key: value`` lines."""
    cfg = config()
    width = max(map(len, cfg))
    for k, v in cfg.items():
        print(f"{k:<{width}} : {v}")
