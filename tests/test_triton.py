"""Triton kernels (lwengine.triton_kernels) against the float64 twins, within the derived bounds.

Without a GPU these run in Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py before
anything imports triton), which computes tl.dot in float32 whatever the requested precision:
the "tf32"/"bf16" input rounding is done by the kernels themselves and is exercised here, the
tensor-core accumulation and Triton's tf32x3 split are not (see docs/triton.md). Grids are tiny.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

import torch  # noqa: E402

from lwengine import _reference as ref  # noqa: E402
from lwengine import triton_kernels as tk  # noqa: E402

if tk.available("cpu")[0]:
    DEVICE = "cpu"
elif tk.available("cuda")[0]:
    DEVICE = "cuda"
else:  # pragma: no cover - depends on the environment
    pytest.skip(f"Triton kernels cannot run here: {tk.available('cpu')[1]}; {tk.available('cuda')[1]}",
                allow_module_level=True)

GAMMA = 0.3


def _offsets(sizes):
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _store(rng, sizes, d, dtype, scale=1.0, shift=0.0):
    m = int(sum(sizes))
    z = (rng.normal(size=(m, d)) * scale + shift).astype(dtype)
    beta = rng.normal(size=m)
    return np.ascontiguousarray(z), beta, _offsets(sizes)


def _seg_l1(beta, off):
    return np.array([np.abs(beta[a:b]).sum() for a, b in zip(off[:-1], off[1:])])


def _r2(*zs):
    return max([float((np.asarray(z, np.float64) ** 2).sum(1).max()) for z in zs if len(z)] + [0.0])


def _bound(mode, qz, qb, qo, z, b, o, gamma):
    f64 = z.dtype == np.float64
    return tk.error_bound(mode, _seg_l1(qb, qo)[:, None], _seg_l1(b, o)[None, :], int(np.diff(qo).max()),
                          z.shape[1], gamma, _r2(qz, z), float64_inputs=f64 and mode != "ieee",
                          float64_compute=f64 and mode == "ieee")


CASES = [  # (store sizes, query sizes, d)
    ([1, 7, 97, 0, 3], [7], 3),
    ([97, 2], [1, 97], 1),
    ([7, 0, 1], [3, 0, 7], 65),
]


@pytest.mark.parametrize("sizes,qsizes,d", CASES)
@pytest.mark.parametrize("mode", tk.PRECISIONS)
def test_cross_inner_within_bound(sizes, qsizes, d, mode):
    rng = np.random.default_rng(len(sizes) * 100 + d)
    for dtype in (np.float32, np.float64):
        z, b, o = _store(rng, sizes, d, dtype, scale=0.7)
        qz, qb, qo = _store(rng, qsizes, d, dtype, scale=0.7)
        out = tk.cross_inner(qz, qb, qo, z, b, o, GAMMA, device=DEVICE, precision=mode)
        exact = ref.cross_inner(qz, qb, qo, z, b, o, GAMMA)
        assert out.shape == exact.shape == (len(qsizes), len(sizes)) and out.dtype == np.float64
        bound = _bound(mode, qz, qb, qo, z, b, o, GAMMA)
        S = _seg_l1(qb, qo)[:, None] * _seg_l1(b, o)[None, :]
        assert np.all(bound <= 0.05 * S + 1e-300), "bound too loose to mean anything"
        assert np.all(np.abs(out - exact) <= bound), (mode, dtype, np.abs(out - exact).max(), bound.min())
        empty = (np.diff(qo)[:, None] == 0) | (np.diff(o)[None, :] == 0)
        assert np.all(out[empty] == 0.0)


def test_float64_store_ieee_is_float64_accurate():
    rng = np.random.default_rng(1)
    z, b, o = _store(rng, [7, 97], 3, np.float64)
    qz, qb, qo = _store(rng, [7], 3, np.float64)
    out = tk.cross_inner(qz, qb, qo, z, b, o, GAMMA, device=DEVICE)
    exact = ref.cross_inner(qz, qb, qo, z, b, o, GAMMA)
    assert np.abs(out - exact).max() <= 1e-12 * np.abs(exact).max()


def test_reduced_modes_really_round():
    """tf32 / bf16 must not silently compute at float32 accuracy: their error exceeds ieee's bound."""
    rng = np.random.default_rng(2)
    z, b, o = _store(rng, [7, 7, 7], 3, np.float32)
    qz, qb, qo = _store(rng, [7], 3, np.float32)
    exact = ref.cross_inner(qz, qb, qo, z, b, o, GAMMA)
    ieee_bound = _bound("ieee", qz, qb, qo, z, b, o, GAMMA)
    for mode in ("tf32", "bf16"):
        out = tk.cross_inner(qz, qb, qo, z, b, o, GAMMA, device=DEVICE, precision=mode)
        assert np.abs(out - exact).max() > ieee_bound.max(), mode


@pytest.mark.parametrize("mode", ["ieee", "tf32x3", "bf16"])
def test_cancellation_close_points_far_from_origin(mode):
    """Close points at |z| ~ 30: the GEMM form's absolute loss ~eps |z|^2; bound must still hold."""
    rng = np.random.default_rng(3)
    d = 3
    c = rng.normal(size=d) * 30.0 / np.sqrt(d)
    z = (c + 1e-3 * rng.normal(size=(16, d))).astype(np.float32)
    qz = (c + 1e-3 * rng.normal(size=(5, d))).astype(np.float32)
    b, qb = rng.random(16), rng.random(5)
    o, qo = _offsets([9, 7]), _offsets([5])
    g = 0.05
    out = tk.cross_inner(qz, qb, qo, z, b, o, g, device=DEVICE, precision=mode)
    exact = ref.cross_inner(qz, qb, qo, z, b, o, g)
    assert np.all(np.abs(out - exact) <= _bound(mode, qz, qb, qo, z, b, o, g))


def _emulated_sqdist(mode, a, b):
    """numpy emulation of each mode's distance (float32 arithmetic) to check distance_error_bound,
    including the TF32 split of tf32x3 that the interpreter cannot run."""
    a, b = a.astype(np.float32), b.astype(np.float32)

    def tf32(v, trunc):
        i = v.view(np.int32)
        return ((i if trunc else i + 0x1000) & np.int32(-8192)).view(np.float32)

    if mode == "tf32":
        a, b = tf32(a, False), tf32(b, False)
    if mode == "bf16":
        a = torch.from_numpy(a).to(torch.bfloat16).float().numpy()
        b = torch.from_numpy(b).to(torch.bfloat16).float().numpy()
    na, nb = (a * a).sum(1, dtype=np.float32), (b * b).sum(1, dtype=np.float32)
    if mode == "tf32x3":
        ah, bh = tf32(a, True), tf32(b, True)
        al, bl = tf32(a - ah, True), tf32(b - bh, True)
        dot = (al @ bh.T + ah @ bl.T) + ah @ bh.T
    else:
        dot = a @ b.T
    return (na[:, None] + nb[None, :]) - np.float32(2.0) * dot


@pytest.mark.parametrize("mode", tk.PRECISIONS)
def test_distance_bound_emulated(mode):
    rng = np.random.default_rng(4)
    for d, far in ((1, 1.0), (20, 1.0), (65, 1.0), (20, 50.0)):
        c = rng.normal(size=d) * far
        a = (c + rng.normal(size=(40, d)) * 0.1).astype(np.float32)
        b = (c + rng.normal(size=(50, d)) * 0.1).astype(np.float32)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        exact = ((a64[:, None, :] - b64[None, :, :]) ** 2).sum(-1)
        got = _emulated_sqdist(mode, a, b).astype(np.float64)
        dist = np.sqrt(exact)
        bound = tk.distance_error_bound(mode, d, _r2(a, b), dist)
        assert np.all(np.abs(got - exact) <= bound), (mode, d, far)


@pytest.mark.parametrize("sizes,d", [([1, 7, 97], 3), ([97, 0, 2], 65), ([1], 1)])
def test_self_inner_and_gram(sizes, d):
    rng = np.random.default_rng(5)
    z, b, o = _store(rng, sizes, d, np.float32, scale=0.7)
    s = tk.self_inner(z, b, o, GAMMA, device=DEVICE)
    G = tk.gram(z, b, o, GAMMA, device=DEVICE)
    bound = _bound("ieee", z, b, o, z, b, o, GAMMA)
    assert np.all(np.abs(s - ref.self_inner(z, b, o, GAMMA)) <= np.diag(bound))
    assert np.all(np.abs(G - ref.gram(z, b, o, GAMMA)) <= bound)
    assert np.array_equal(G, G.T)
    assert np.array_equal(np.diag(G), s)  # the same program computes both


def test_empty_and_single():
    rng = np.random.default_rng(6)
    z, b, o = _store(rng, [], 3, np.float32)
    qz, qb, qo = _store(rng, [4, 2], 3, np.float32)
    assert tk.cross_inner(qz, qb, qo, z, b, o, GAMMA, device=DEVICE).shape == (2, 0)
    assert tk.self_inner(z, b, o, GAMMA, device=DEVICE).shape == (0,)
    assert tk.gram(z, b, o, GAMMA, device=DEVICE).shape == (0, 0)
    z, b, o = _store(rng, [0, 0], 3, np.float32)  # specs without rows: zeros, also over a poisoned out
    out = torch.full((2, 2), float("nan"), dtype=torch.float64)
    tk.cross_inner_tensors(*(torch.from_numpy(a) for a in (qz, qb, qo, z, b, o)), GAMMA, out=out)
    assert np.array_equal(out.numpy(), np.zeros((2, 2)))
    assert np.array_equal(tk.gram(z, b, o, GAMMA, device=DEVICE), np.zeros((2, 2)))
    z, b, o = _store(rng, [1], 3, np.float32)
    out = tk.cross_inner(qz, qb, qo, z, b, o, GAMMA, device=DEVICE)
    assert np.all(np.abs(out - ref.cross_inner(qz, qb, qo, z, b, o, GAMMA)) <= _bound("ieee", qz, qb, qo, z, b, o, GAMMA))


def test_poisoned_output_fully_written_and_deterministic():
    rng = np.random.default_rng(7)
    z, b, o = _store(rng, [3, 0, 9, 1], 5, np.float32)
    qz, qb, qo = _store(rng, [2, 5], 5, np.float32)
    t = [torch.from_numpy(a) for a in (qz, qb, qo, z, b, o)]
    outs = []
    for _ in range(2):
        out = torch.full((2, 4), float("nan"), dtype=torch.float64)
        tk.cross_inner_tensors(*t, GAMMA, out=out)
        outs.append(out.numpy().copy())
    assert not np.isnan(outs[0]).any()
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("K,d,n,mode", [(1, 1, 1, "ieee"), (7, 3, 150, "ieee"), (97, 65, 70, "ieee"),
                                         (7, 3, 150, "tf32"), (97, 1, 70, "tf32"), (7, 3, 150, "bf16"),
                                         (97, 20, 70, "bf16"), (1, 65, 33, "tf32x3")])
def test_zx_moments_within_bound(K, d, n, mode):
    rng = np.random.default_rng(K + d)
    z = rng.normal(size=(K, d)) * 0.7
    for xdt in (np.float32, np.float64):
        x = (rng.normal(size=(n, d)) * 0.7).astype(xdt)
        C, T = tk.zx_moments(z, x, GAMMA, device=DEVICE, precision=mode)
        Ce, Te = ref.zx_moments(z, x, GAMMA)
        f64 = xdt == np.float64 and mode == "ieee"
        bc, bt = tk.zx_error_bound(mode, d, GAMMA, _r2(z, x), np.abs(x).max(0), float64_inputs=not f64,
                                   float64_compute=f64)
        assert C.shape == (K,) and T.shape == (K, d)
        assert np.all(np.abs(C - Ce) <= bc), (mode, xdt, np.abs(C - Ce).max(), bc)
        assert np.all(np.abs(T - Te) <= bt[None, :])
    C2, T2 = tk.zx_moments(z, x, GAMMA, device=DEVICE, precision=mode, with_t=False)
    assert T2 is None and np.array_equal(C2, C)


def test_ieee_bound_fits_the_screening_bound():
    """The certified screening's float32 bound (kernels.cross_inner_f32_bound) covers mode "ieee"."""
    from lwengine.kernels import cross_inner_f32_bound

    for d in (1, 3, 20, 64, 200):
        for g, r2 in ((0.01, 1.0), (0.1, 40.0), (1.0, 400.0)):
            for qk in (1, 100):
                ours = tk.error_bound("ieee", 1.0, 1.0, qk, d, g, r2, float64_inputs=True)
                assert ours <= cross_inner_f32_bound(1.0, 1.0, qk, d, g, r2)
                # tf32x3 stays of the same order (the screening carries it with error_bound), tf32 / bf16 do not
                f32 = cross_inner_f32_bound(1.0, 1.0, qk, d, g, r2)
                assert tk.error_bound("tf32x3", 1.0, 1.0, qk, d, g, r2, float64_inputs=True) <= 2.0 * f32
                assert tk.error_bound("tf32", 1.0, 1.0, qk, d, g, r2, float64_inputs=True) > f32


def test_bad_arguments():
    assert isinstance(tk.available("cpu"), tuple) and len(tk.available("cpu")) == 2
    assert tk.available() == tk.available(DEVICE) == (True, "")
    ok, why = tk.available("tpu")
    assert not ok and "device" in why
    z = np.zeros((2, 2), np.float32)
    b, o = np.ones(2), _offsets([2])
    with pytest.raises(ValueError, match="precision"):
        tk.cross_inner(z, b, o, z, b, o, GAMMA, device=DEVICE, precision="tf16")
    with pytest.raises(ValueError, match="device"):
        tk.self_inner(z, b, o, GAMMA, device="gpu")
    with pytest.raises(ValueError, match="precision"):
        tk.error_bound("fast", 1, 1, 1, 1, 1, 1)


def test_gpu_check_triton_smoke(tmp_path):
    """benchmarks/gpu_check_triton.py --smoke in-process (interpreter, toy sizes): every check passes
    and every output slot is written; its timings say nothing about speed."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check_triton.py"
    spec = importlib.util.spec_from_file_location("gpu_check_triton", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rep = mod.run(str(tmp_path), smoke=True)
    assert rep["status"] == "ran" and rep["failing_checks"] == 0, [c for c in rep["checks"] if c["verdict"] != "pass"]
    assert "timings_error" not in rep and all(e.get("unwritten_or_nonfinite") == 0 for e in rep["timings"])
    assert json.loads((tmp_path / "gpu_check_triton.json").read_text())["status"] == "ran"
