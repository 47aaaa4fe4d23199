"""CUDA kernels (lwengine.cuda_backend) against the float64 twins and the CPU path.

Skipped as a module when the CUDA extension is missing or no device is visible.  Tolerances:
float32 stores / float32 x compute the pair terms in float32 with __expf (relative error of a
sum of positive terms ~1e-6, bound 2e-5); float64 paths differ from the oracle only by summation
order (1e-10).  The numpy host path poisons its device outputs with NaN, so an unwritten element
fails every comparison.
"""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import _backend, _reference, kernels

if _backend.cuda is None:
    pytest.skip(f"lwengine CUDA extension {_backend.cuda_error}", allow_module_level=True)
if _backend.cuda_device_count() == 0:
    pytest.skip("no CUDA device visible", allow_module_level=True)

from lwengine import cuda_backend  # noqa: E402

pytestmark = pytest.mark.cuda

TOL = {np.float32: 2e-5, np.float64: 1e-10}
DTYPES = [np.float32, np.float64]


def rel_err(out, ref):
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape
    assert np.all(np.isfinite(out)), "non-finite (unwritten?) output"
    den = np.linalg.norm(ref)
    return np.linalg.norm(out - ref) / (den if den > 0 else 1.0)


def make_store(rng, sizes, d, dtype):
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    m = int(offsets[-1])
    z = rng.standard_normal((m, d)).astype(dtype)
    beta = rng.uniform(0.0, 1.0, m)
    return z, beta, offsets


def cpu_or_none(fn):
    try:
        return fn()
    except RuntimeError:  # CPU kernel not in this build
        return None


STORE_CASES = [
    ([100] * 20, 64),
    ([1, 7, 97], 3),
    ([1], 1),
    ([0, 5, 0, 97, 0], 65),  # empty segments
    ([300, 2], 20),          # specs longer than a tile
    ([40, 9], 600),          # several column slices
    ([3] * 700, 8),          # many specs per block chunk
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q_sizes", [[100], [1, 7, 97], [0, 200, 3]])
@pytest.mark.parametrize("sizes,d", STORE_CASES)
def test_cross_inner(q_sizes, sizes, d, dtype):
    rng = np.random.default_rng(len(sizes) * 1000 + d + len(q_sizes))
    qz, qb, qo = make_store(rng, q_sizes, d, dtype)
    z, b, o = make_store(rng, sizes, d, dtype)
    gamma = 1.0 / d
    out = cuda_backend.cross_inner(qz, qb, qo, z, b, o, gamma)
    ref = _reference.cross_inner(qz, qb, qo, z, b, o, gamma)
    assert rel_err(out, ref) < TOL[dtype]
    cpu = cpu_or_none(lambda: kernels.cross_inner(qz, qb, qo, z, b, o, gamma))
    if cpu is not None:
        assert rel_err(out, cpu) < TOL[dtype]
    again = cuda_backend.cross_inner(qz, qb, qo, z, b, o, gamma)
    np.testing.assert_array_equal(again, out)  # deterministic: no atomics


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,d", STORE_CASES)
def test_self_inner_and_gram(sizes, d, dtype):
    rng = np.random.default_rng(7 * len(sizes) + d)
    z, b, o = make_store(rng, sizes, d, dtype)
    gamma = 0.5 / d
    s = cuda_backend.self_inner(z, b, o, gamma)
    if 0 not in sizes:  # _reference.self_inner cannot take empty segments
        assert rel_err(s, _reference.self_inner(z, b, o, gamma)) < TOL[dtype]
    if len(sizes) <= 100:
        g = cuda_backend.gram(z, b, o, gamma)
        assert rel_err(g, _reference.gram(z, b, o, gamma)) < TOL[dtype]
        np.testing.assert_array_equal(g, g.T)
        assert rel_err(s, np.diag(_reference.gram(z, b, o, gamma))) < TOL[dtype]
        np.testing.assert_allclose(np.diag(g), s, rtol=TOL[dtype] * 10, atol=0)


def test_empty_inputs():
    z = np.zeros((0, 4), np.float32)
    b = np.zeros(0)
    assert cuda_backend.cross_inner(z, b, [0, 0], z, b, [0, 0, 0], 0.1).shape == (1, 2)
    assert np.all(cuda_backend.cross_inner(z, b, [0, 0], z, b, [0, 0, 0], 0.1) == 0)
    assert cuda_backend.self_inner(z, b, [0], 0.1).shape == (0,)
    assert cuda_backend.gram(z, b, [0], 0.1).shape == (0, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_t", [True, False])
@pytest.mark.parametrize("K,n,d", [(1, 1, 1), (7, 63, 3), (97, 1000, 65), (100, 3000, 64),
                                    (200, 500, 20), (5, 300, 130), (9, 200, 600)])
def test_zx_moments(K, n, d, dtype, with_t):
    rng = np.random.default_rng(K * 31 + n + d)
    x = rng.standard_normal((n, d)).astype(dtype)
    z = x[rng.integers(0, n, K)].astype(np.float64) + 0.1 * rng.standard_normal((K, d))
    gamma = 1.0 / d
    C, T = cuda_backend.zx_moments(z, x, gamma, with_t=with_t)
    Cr, Tr = _reference.zx_moments(z, x, gamma)
    assert rel_err(C, Cr) < TOL[dtype]
    if with_t:
        assert rel_err(T, Tr) < TOL[dtype]
    else:
        assert T is None
    assert rel_err(cuda_backend.kernel_mean(z, x, gamma), Cr) < TOL[dtype]
    C2, T2 = cuda_backend.zx_moments(z, x, gamma, with_t=with_t)
    np.testing.assert_array_equal(C2, C)


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("K,d", [(1, 1), (7, 3), (97, 65), (100, 64)])
def test_rs_step(K, d, exact):
    rng = np.random.default_rng(K + 100 * d)
    x = rng.standard_normal((1500, d))
    z = x[rng.integers(0, 1500, K)] + 0.1 * rng.standard_normal((K, d))
    beta = rng.uniform(0, 1, K)
    beta /= beta.sum()
    gamma, step = 1.0 / d, 0.1
    C, T = _reference.zx_moments(z, x, gamma)
    out = cuda_backend.rs_step_from_moments(z, beta, C, T, gamma, step, exact_gradient=exact)
    ref = _reference.rs_step_from_moments(z, beta, C, T, gamma, step, exact_gradient=exact)
    assert rel_err(out, ref) < 1e-12
    e2e = cuda_backend.rs_step(z, beta, x, gamma, step, exact_gradient=exact)
    assert rel_err(e2e, _reference.rs_step(z, beta, x, gamma, step, exact_gradient=exact)) < 1e-12
    x32 = x.astype(np.float32)
    e32 = cuda_backend.rs_step(z, beta, x32, gamma, step, exact_gradient=exact)
    assert rel_err(e32, _reference.rs_step(z, beta, x32, gamma, step, exact_gradient=exact)) < 1e-5


def test_bad_input_is_refused():
    rng = np.random.default_rng(3)
    z, b, o = make_store(rng, [3, 4], 5, np.float32)
    with pytest.raises(ValueError, match="offsets"):
        cuda_backend.cross_inner(z, b, o, z, b, np.array([0, 5, 2]), 0.1)
    with pytest.raises(ValueError, match="beta"):
        cuda_backend.cross_inner(z, b, o, z, b[:-1], o, 0.1)
    with pytest.raises(ValueError, match="dimension"):
        cuda_backend.cross_inner(z[:, :4], b, o, z, b, o, 0.1)
    with pytest.raises(ValueError, match="gamma"):
        cuda_backend.self_inner(z, b, o, -1.0)
    with pytest.raises(ValueError, match="at least one row"):
        cuda_backend.zx_moments(z.astype(np.float64), np.zeros((0, 5)), 0.1)
    with pytest.raises(ValueError, match="T must have shape"):
        cuda_backend.rs_step_from_moments(z, np.ones(7), np.ones(7), np.ones((7, 4)), 0.1, 0.1)


def test_raw_entry_points_validate():
    cu = _backend.cuda
    with pytest.raises(ValueError, match="dtype"):
        cu.cross_inner("float16", 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 3, 0.5, 0)
    with pytest.raises(ValueError):
        cu.self_inner("float32", 0, 0, 0, 10, 1, 10, 3, 0.5, 0)  # null pointers with rows > 0
    with pytest.raises(ValueError, match="device"):
        cu.zx_moments("float32", 8, 1, 8, 1, 1, 0.5, 8, 0, device=10_000)


def test_torch_device_path():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    rng = np.random.default_rng(11)
    z, b, o = make_store(rng, [50, 0, 97, 7], 64, np.float32)
    qz, qb, qo = make_store(rng, [100], 64, np.float32)
    t = [torch.as_tensor(a, device="cuda") for a in (qz, qb, qo, z, b, o)]
    out = cuda_backend.cross_inner(*t, 0.05)
    assert out.is_cuda and out.dtype == torch.float64
    np.testing.assert_array_equal(out.cpu().numpy(), cuda_backend.cross_inner(qz, qb, qo, z, b, o, 0.05))
    x = rng.standard_normal((2000, 64)).astype(np.float32)
    zz = x[:30].astype(np.float64)
    C, T = cuda_backend.zx_moments(torch.as_tensor(zz, device="cuda"), torch.as_tensor(x, device="cuda"), 0.05)
    Ch, Th = cuda_backend.zx_moments(zz, x, 0.05)
    np.testing.assert_array_equal(C.cpu().numpy(), Ch)
    np.testing.assert_array_equal(T.cpu().numpy(), Th)


@pytest.mark.parametrize("qs,ss,d", [([100], [100] * 30, 20), ([1, 7], [1, 7, 97], 3), ([97], [5, 97], 65),
                                     ([3], [40, 9], 600)])
def test_cross_inner_float32_within_the_shared_bound(qs, ss, d):
    """The float32 screening form (pair.h) is evaluated by the CUDA tile too: the error bound of
    docs/kernels.md, derived once for both summation orders, holds on the GPU."""
    rng = np.random.default_rng(300 + d)
    qz, qb, qo = make_store(rng, qs, d, np.float32)
    z, b, o = make_store(rng, ss, d, np.float32)
    qz, z = qz * np.float32(2.0), z * np.float32(2.0)
    gamma = 0.5 / d
    got = kernels.cross_inner(qz, qb, qo, z, b, o, gamma, device="cuda")
    ref = _reference.cross_inner(qz.astype(np.float64), qb, qo, z.astype(np.float64), b, o, gamma)
    r2 = max(float((qz.astype(np.float64) ** 2).sum(1).max()), float((z.astype(np.float64) ** 2).sum(1).max()))
    eps = float(np.finfo(np.float32).eps)
    for q in range(len(qo) - 1):
        for i in range(len(o) - 1):
            s = np.abs(qb[qo[q]:qo[q + 1]]).sum() * np.abs(b[o[i]:o[i + 1]]).sum()
            bound = eps * s * (4 + (qo[q + 1] - qo[q]) + 4 * (d + 3) * gamma * r2)
            assert abs(got[q, i] - ref[q, i]) <= bound, (q, i, got[q, i] - ref[q, i], bound)
    cpu = kernels.cross_inner(qz, qb, qo, z, b, o, gamma, device="cpu")
    assert np.all(np.isfinite(got)) and got.shape == cpu.shape


def test_host_binding_rules_match_core():
    """One rule set: the numpy entry points of _cuda raise what _core raises, with the same message."""
    core, cu = _backend.require_core(), _backend.cuda
    b, o = np.ones(4), np.array([0, 4], dtype=np.int64)
    for z in (np.zeros((4, 3), dtype=np.int64), [[0.0] * 3] * 4):
        with pytest.raises(TypeError) as e_core:
            core.self_inner(z, b, o, 0.1, np.zeros(1))
        with pytest.raises(TypeError) as e_cuda:
            cu.self_inner_host(z, b, o, 0.1)
        assert str(e_core.value) == str(e_cuda.value)
    z = np.zeros((4, 3))
    with pytest.raises(ValueError) as e_core:
        core.self_inner(z, b, np.array([0, 5], dtype=np.int64), 0.1, np.zeros(1))
    with pytest.raises(ValueError) as e_cuda:
        cu.self_inner_host(z, b, np.array([0, 5], dtype=np.int64), 0.1)
    assert str(e_core.value) == str(e_cuda.value)
