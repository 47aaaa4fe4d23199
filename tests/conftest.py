"""Shared pytest fixtures for lwengine tests."""
from __future__ import annotations

import os
from pathlib import Path

# Triton's interpreter for tests/test_triton.py on machines without a GPU; read when a kernel is defined,
# so it must be set before anything imports lwengine.triton_kernels. A user's own setting wins.
if "TRITON_INTERPRET" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["TRITON_INTERPRET"] = "1"

import pytest

SIMD_PATHS = ["portable", "avx2", "avx512"]

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO_ROOT.parent / "shared" / "fixtures" / "learnware-0.4.0.post1"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Root of the learnware 0.4.0.post1 golden fixtures; skips the test when they are absent."""
    if not FIXTURES_DIR.is_dir():
        pytest.skip(f"golden fixtures not found at {FIXTURES_DIR}")
    return FIXTURES_DIR


@pytest.fixture(scope="session", autouse=True)
def _run_outside_the_source_tree(tmp_path_factory):
    """Work from a scratch directory: child processes (``python -c``, ``python -m lwengine``) put their
    working directory first on sys.path, and the repo root would shadow the installed, built package."""
    import os

    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)


@pytest.fixture(params=SIMD_PATHS)
def simd(request):
    """Run the test on each SIMD path of the native kernels the CPU has (``_core.set_simd_path``)."""
    from lwengine._backend import require_core

    core = require_core()
    info = core.cpu_info()
    if request.param == "avx2" and not (info["avx2"] and info["fma"]):
        pytest.skip("no AVX2 on this CPU")
    if request.param == "avx512" and not info["avx512"]:
        pytest.skip("no AVX-512 on this CPU (or in this build)")
    core.set_simd_path(request.param)
    if core.cpu_info()["simd"] != request.param:  # LWE_DISABLE_AVX2 / LWE_DISABLE_AVX512 in the environment
        core.set_simd(True)
        pytest.skip(f"{request.param} path disabled by the environment")
    yield request.param
    core.set_simd(True)
