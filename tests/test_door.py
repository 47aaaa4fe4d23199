"""The one door into native code: kernels.point_gram / rs_step_from_gram against their float64
twins, the validated-once FitKernels path, device= reaching every kernel of a fit, backend= routing."""
from __future__ import annotations

import ast
import importlib.util
import pathlib
import sys
import types

import numpy as np
import pytest

from lwengine import _backend, _reference, cuda_backend, kernels
from lwengine.spec import RKMESpec, fit_many

PKG = pathlib.Path(kernels.__file__).parent
SHAPES = [(K, d) for K in (1, 7, 97) for d in (1, 3, 65)]


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


@pytest.mark.parametrize("K,d", SHAPES)
def test_point_gram_matches_twin(K, d):
    rng = np.random.default_rng(K * 100 + d)
    z = rng.normal(size=(K, d)) / np.sqrt(d)
    z[K // 2] = z[0]  # a duplicate point: identical rows
    G = kernels.point_gram(z, 0.3)
    assert G.shape == (K, K) and G.dtype == np.float64
    assert _rel(G, _reference.point_gram(z, 0.3)) < 1e-12
    np.testing.assert_array_equal(G, G.T)
    np.testing.assert_array_equal(G[K // 2], G[0])
    assert kernels.last_route() == {"op": "point_gram", "device": "cpu", "backend": "native"}


@pytest.mark.parametrize("K,d", SHAPES)
@pytest.mark.parametrize("exact", [False, True])
def test_rs_step_from_gram_matches_twin(K, d, exact):
    rng = np.random.default_rng(K + 7 * d)
    z = rng.normal(size=(K, d))
    x = rng.normal(size=(40, d))
    beta = rng.random(K)
    beta /= beta.sum()
    C, T = _reference.zx_moments(z, x, 0.2)
    G = _reference.point_gram(z, 0.2)
    out = kernels.rs_step_from_gram(z, beta, C, T, G, 0.2, 0.1, exact_gradient=exact)
    want = _reference.rs_step_from_gram(z, beta, C, T, G, 0.2, 0.1, exact_gradient=exact)
    assert _rel(out, want) < 1e-12
    # the same step as from the moments (G holds exactly the kernel values the step recomputes)
    assert _rel(out, _reference.rs_step_from_moments(z, beta, C, T, 0.2, 0.1, exact_gradient=exact)) < 1e-12


def test_rs_step_from_gram_bad_input():
    z = np.zeros((4, 3))
    with pytest.raises(ValueError, match="G must have shape"):
        kernels.rs_step_from_gram(z, np.ones(4), np.ones(4), z, np.eye(3), 0.1, 0.1)
    with pytest.raises(ValueError, match="step_size"):
        kernels.rs_step_from_gram(z, np.ones(4), np.ones(4), z, np.eye(4), 0.1, float("inf"))
    with pytest.raises(TypeError, match="z must hold real numbers"):
        kernels.point_gram(np.zeros((3, 2), dtype=complex), 0.1)
    with pytest.raises(ValueError, match="gamma"):
        kernels.point_gram(z, -1.0)


def test_fit_kernels_validated_once_matches_public_calls():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    z = rng.normal(size=(9, 5))
    fk = kernels.FitKernels(x, 0.25, device="cpu")
    C, T = fk.moments(z)
    C2, T2 = kernels.zx_moments(z, x, 0.25)
    np.testing.assert_array_equal(C, C2)
    np.testing.assert_array_equal(T, T2)
    np.testing.assert_array_equal(fk.point_gram(z), kernels.point_gram(z, 0.25))
    with pytest.raises(ValueError, match="dimension"):
        fk.moments(z[:, :4])
    with pytest.raises(ValueError, match="at least one row"):
        kernels.FitKernels(np.zeros((0, 5)), 0.1)
    with pytest.raises(ValueError, match="device must be"):
        kernels.FitKernels(x, 0.1, device="gpu")


@pytest.mark.skipif(_backend.cuda_device_count() > 0, reason="a CUDA device is present")
def test_fit_device_cuda_without_gpu_is_a_runtime_error():
    x = np.random.default_rng(0).normal(size=(60, 3))
    with pytest.raises(RuntimeError, match="device='cuda'"):
        RKMESpec.fit(x, K=5, device="cuda")
    with pytest.raises(RuntimeError, match="device='cuda'"):
        fit_many([x, x], K=5, device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        RKMESpec.fit(x, K=5, device="tpu")


@pytest.fixture
def fake_cuda(monkeypatch):
    """A pretend CUDA backend that records its calls and computes on the CPU kernels."""
    calls = []

    def zx(z, x, gamma, *, with_t=True):
        calls.append("zx_moments")
        return kernels.zx_moments(z, x, gamma, with_t=with_t, device="cpu")

    def step(z, beta, C, T, gamma, step_size, *, exact_gradient=False):
        calls.append("rs_step_from_moments")
        return kernels.rs_step_from_moments(z, beta, C, T, gamma, step_size, exact_gradient=exact_gradient,
                                            device="cpu")

    monkeypatch.setattr(_backend, "require_cuda", lambda: None)
    monkeypatch.setattr(cuda_backend, "available", lambda: True)
    monkeypatch.setattr(cuda_backend, "resident", lambda a: None)
    monkeypatch.setattr(cuda_backend, "zx_moments", zx)
    monkeypatch.setattr(cuda_backend, "rs_step_from_moments", step)
    return calls


@pytest.mark.parametrize("update", ["reference", "mmd-descent"])
def test_fit_device_reaches_every_data_kernel(fake_cuda, update):
    x = np.random.default_rng(1).normal(size=(200, 4))
    cpu = RKMESpec.fit(x, K=8, seed=2, steps=3, update=update, device="cpu")
    assert fake_cuda == []
    gpu = RKMESpec.fit(x, K=8, seed=2, steps=3, update=update, device="cuda")
    # 1 moments pass for the init + one per step (more when mmd-descent backtracks), 3 Z steps
    assert fake_cuda.count("zx_moments") >= 4 and fake_cuda.count("rs_step_from_moments") >= 3
    assert _rel(gpu.z, cpu.z) < 1e-9 and _rel(gpu.beta, cpu.beta) < 1e-9
    fake_cuda.clear()
    RKMESpec.fit(x, K=8, seed=2, steps=1, device="auto")  # "auto" = CUDA when a GPU is present
    assert fake_cuda.count("zx_moments") == 2
    fake_cuda.clear()
    fit_many([x, x[:100]], K=5, steps=1, seed=0, device="auto", n_jobs=1)
    assert fake_cuda.count("zx_moments") == 4


def _fake_triton(received):
    mod = types.ModuleType("lwengine.triton_kernels")

    def record(op, result):
        def fn(*args, device, **kw):
            received.append((op, args, device, kw))
            return result(*args, **kw)
        return fn

    mod.available = lambda: (True, "fake")
    mod.cross_inner = record("cross_inner", _reference.cross_inner)
    mod.self_inner = record("self_inner", _reference.self_inner)
    mod.gram = record("gram", _reference.gram)
    mod.zx_moments = record("zx_moments", lambda z, x, g, with_t: (
        _reference.zx_moments(z, x, g)[0], _reference.zx_moments(z, x, g)[1] if with_t else None))
    return mod


def test_backend_triton_gets_the_validated_arrays(monkeypatch):
    received = []
    monkeypatch.setitem(sys.modules, "lwengine.triton_kernels", _fake_triton(received))
    rng = np.random.default_rng(4)
    z = rng.normal(size=(7, 3)).astype(np.float32)
    b, off = rng.random(7), [0, 3, 7]
    out = kernels.cross_inner(z[:2].astype(np.float64), [1, 1], [0, 2], z, b, off, 0.5, backend="triton")
    op, args, device, _ = received[-1]
    assert op == "cross_inner" and device == "cpu" and len(args) == 7
    q_z, q_beta, q_off, zz, bb, oo, g = args
    assert q_z.dtype == zz.dtype == np.float32 and q_beta.dtype == bb.dtype == np.float64
    assert q_off.dtype == oo.dtype == np.int64 and all(a.flags.c_contiguous for a in args[:6]) and g == 0.5
    assert out.shape == (1, 2)
    assert kernels.last_route() == {"op": "cross_inner", "device": "cpu", "backend": "triton"}
    kernels.self_inner(z, b, off, 0.5, backend="triton")
    kernels.gram(z, b, off, 0.5, backend="triton")
    C, T = kernels.zx_moments(z.astype(np.float64), rng.normal(size=(20, 3)), 0.5, with_t=False, backend="triton")
    assert T is None and received[-1][3] == {"with_t": False}
    assert [r[0] for r in received] == ["cross_inner", "self_inner", "gram", "zx_moments"]
    kernels.cross_inner(z, b, off, z, b, off, 0.5)  # "auto" on the CPU: native
    assert kernels.last_route()["backend"] == "native" and len(received) == 4


def test_backend_errors(monkeypatch):
    z, b, off = np.zeros((2, 2)), np.ones(2), [0, 2]
    with pytest.raises(ValueError, match="backend must be"):
        kernels.self_inner(z, b, off, 0.1, backend="cuda")
    unavailable = types.ModuleType("lwengine.triton_kernels")
    unavailable.available = lambda: (False, "no GPU and TRITON_INTERPRET unset")
    monkeypatch.setitem(sys.modules, "lwengine.triton_kernels", unavailable)
    with pytest.raises(RuntimeError, match="triton backend unavailable: no GPU"):
        kernels.gram(z, b, off, 0.1, backend="triton")
    assert kernels.triton_status() == (False, "no GPU and TRITON_INTERPRET unset")


@pytest.mark.skipif(importlib.util.find_spec("lwengine.triton_kernels") is not None,
                    reason="lwengine.triton_kernels is installed")
def test_backend_triton_absent_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="triton backend unavailable"):
        kernels.self_inner(np.zeros((2, 2)), np.ones(2), [0, 2], 0.1, backend="triton")


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield (node.module or ""), [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_production_never_imports_the_twins_and_backends_stay_below_kernels():
    for path in PKG.rglob("*.py"):
        if path.name == "_reference.py":
            continue
        for mod, names in _imports(path):
            assert "_reference" not in mod.split(".") and "_reference" not in names, path
            if path.name in ("cuda_backend.py", "validate.py", "_backend.py"):
                assert "kernels" not in mod.split(".") and "kernels" not in names, path


def test_no_raw_native_module_outside_the_door():
    for path in PKG.rglob("*.py"):
        if path.name in ("kernels.py", "cuda_backend.py", "_backend.py", "_config.py"):
            continue
        text = path.read_text(encoding="utf-8")
        assert "require_core" not in text and "_backend.core" not in text and "_backend.cuda" not in text, path


def test_backend_triton_on_cuda_does_not_need_the_native_cuda_build(monkeypatch):
    received = []
    monkeypatch.setitem(sys.modules, "lwengine.triton_kernels", _fake_triton(received))
    z, b, off = np.ones((3, 2)), np.ones(3), [0, 1, 3]
    kernels.self_inner(z, b, off, 0.1, device="cuda", backend="triton")
    assert received[-1][2] == "cuda"
    assert kernels.last_route() == {"op": "self_inner", "device": "cuda", "backend": "triton"}
