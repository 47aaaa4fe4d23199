"""The GEMM form of the scans (|a|^2 + |b|^2 - 2 a.b): its float32 bound, and the hoisted row terms."""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import _reference, kernels
from lwengine._backend import core

pytestmark = pytest.mark.skipif(core is None, reason="native extension not built")


def _store(rng, n, K, d, shift=0.0, spread=1.0):
    z = shift + spread * rng.normal(size=(n * K, d))
    beta = rng.dirichlet(np.ones(K), size=n).ravel()
    return z, beta, np.arange(0, n * K + 1, K, dtype=np.int64)


@pytest.mark.parametrize("shift", [0.0, 30.0, 300.0])
@pytest.mark.parametrize("d", [3, 20])
def test_float32_bound_holds_under_cancellation(shift, d):
    # points far from the origin but close to each other: the expansion cancels |a|^2 + |b|^2 down to
    # |a - b|^2, and the float32 error grows with the magnitude term, as the bound says
    rng = np.random.default_rng(d + int(shift))
    z, beta, off = _store(rng, 40, 16, d, shift=shift, spread=0.5)
    qz = shift + 0.5 * rng.normal(size=(16, d))
    qb, qo = np.full(16, 1 / 16), np.array([0, 16])
    gamma = 0.5
    exact = _reference.cross_inner(qz, qb, qo, z, beta, off, gamma)[0]
    f32 = kernels.cross_inner(qz.astype(np.float32), qb, qo, z.astype(np.float32), beta, off, gamma)[0]
    r2 = np.maximum((z * z).sum(1).reshape(40, 16).max(1), (qz * qz).sum(1).max())
    bound = kernels.cross_inner_f32_bound(1.0, 1.0, 16, d, gamma, r2)
    err = np.abs(f32 - exact)
    assert (err <= bound).all()
    if shift >= 300.0:
        # without the magnitude term the bound would fail: the error is far above eps * S * (4 + Kq)
        eps = float(np.finfo(np.float32).eps)
        assert err.max() > 2 * eps * (4 + 16)


def test_row_blocks_keep_specs_position_independent():
    # specs longer than one row block (64 rows) and of every residue mod 4, placed at different
    # offsets: identical specs give identical bits, and the values match the float64 twin
    rng = np.random.default_rng(3)
    d = 7
    specs = [(rng.normal(size=(k, d)), rng.dirichlet(np.ones(k))) for k in (1, 63, 64, 65, 130, 203)]
    qz, qb = rng.normal(size=(9, d)), rng.dirichlet(np.ones(9))
    qo = np.array([0, 9])
    for order in ([0, 1, 2, 3, 4, 5], [5, 3, 1, 4, 0, 2]):
        z = np.concatenate([specs[i][0] for i in order])
        b = np.concatenate([specs[i][1] for i in order])
        off = np.concatenate([[0], np.cumsum([len(specs[i][1]) for i in order])]).astype(np.int64)
        for dt in (np.float64, np.float32):
            got = kernels.cross_inner(qz.astype(dt), qb, qo, z.astype(dt), b, off, 0.3)[0]
            want = _reference.cross_inner(qz, qb, qo, z, b, off, 0.3)[0]
            tol = 1e-12 if dt == np.float64 else 1e-5
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
            by_spec = dict(zip(order, got))
            if order[0] == 0:
                first = {dt: by_spec} if dt == np.float64 else {**first, dt: by_spec}
            else:
                assert by_spec == first[dt]
    self = kernels.self_inner(z, b, off, 0.3)
    g = kernels.gram(z, b, off, 0.3)
    np.testing.assert_array_equal(self, np.diag(g))


def test_float64_exp_lanes_out_of_range_and_nan():
    # the float64 kernel's exp: NaN stays NaN, huge arguments underflow to exactly what std::exp gives
    z = np.array([[0.0], [1.0], [np.nan], [40.0]])
    beta = np.full(4, 0.25)
    off = np.array([0, 1, 2, 3, 4])
    out = kernels.cross_inner(np.array([[0.0]]), np.array([1.0]), np.array([0, 1]), z, beta, off, 0.5)[0]
    assert out[0] == 0.25 and np.isnan(out[2])
    assert out[1] == pytest.approx(0.25 * np.exp(-0.5), rel=1e-15)
    assert out[3] == 0.25 * np.exp(-0.5 * 1600.0)  # exp(-800): subnormal-free 0.0 as std::exp gives
