"""Native ConvNet-NNGP kernel (lwengine.kernels.nngp_kernel) vs the reference's kernels and the twin."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lwengine import _reference, kernels

FIX = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "learnware-0.4.0.post1-image" / "nngp"
CASES = ["noise_c3", "images_c3", "noise_c1", "scaled_c1"]


def _load(case, name):
    if not FIX.is_dir():
        pytest.skip(f"image fixtures not found at {FIX}")
    return np.load(FIX / case / name)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_against_reference(case, depth, simd):
    A, B = _load(case, "A.npy"), _load(case, "B.npy")
    same = _load(case, f"depth{depth}_same_A.npy")
    ab = _load(case, f"depth{depth}_cross_AB.npy")
    aa = _load(case, f"depth{depth}_cross_AA.npy")
    scale = np.abs(_load(case, f"depth{depth}_same_A_f64.npy")).max()
    # float32: within the reference's own float32 error (f32 vs f64 <= 1.6e-7 of the largest entry)
    assert np.abs(kernels.nngp_kernel(A, depth=depth) - same).max() <= 8e-7 * scale
    assert np.abs(kernels.nngp_kernel(A, B, depth=depth) - ab).max() <= 4e-7 * scale
    off = ~np.eye(len(A), dtype=bool)
    assert np.abs(kernels.nngp_kernel(A, A, depth=depth) - aa)[off].max() <= 4e-7 * scale
    # two-object diagonal: the reference's float32 acos error there is reproduced in size only
    assert np.abs(np.diag(kernels.nngp_kernel(A, A, depth=depth)) - np.diag(aa)).max() <= 2e-4 * scale
    # float64: the reference's module in float64
    s64 = _load(case, f"depth{depth}_same_A_f64.npy")
    ab64 = _load(case, f"depth{depth}_cross_AB_f64.npy")
    assert np.abs(kernels.nngp_kernel(A, depth=depth, precision="float64") - s64).max() <= 1e-13 * scale
    assert np.abs(kernels.nngp_kernel(A, B, depth=depth, precision="float64") - ab64).max() <= 1e-13 * scale


@pytest.mark.parametrize("n1,n2,C", [(1, 1, 1), (3, 7, 2), (5, 1, 4)])
@pytest.mark.parametrize("depth", [1, 3, 5])
def test_against_twin(n1, n2, C, depth, simd):
    rng = np.random.default_rng(n1 * 10 + n2 + C)
    x = rng.standard_normal((n1, C, 32, 32)).astype(np.float32) * 2
    y = rng.standard_normal((n2, C, 32, 32)).astype(np.float32) + 0.5
    ref = _reference.nngp_kernel(x, y, depth=depth)
    scale = np.abs(ref).max()
    assert np.abs(kernels.nngp_kernel(x, y, depth=depth, precision="float64") - ref).max() <= 1e-13 * scale
    assert np.abs(kernels.nngp_kernel(x, y, depth=depth) - ref).max() <= 1e-6 * scale
    same = kernels.nngp_kernel(x, depth=depth, precision="float64")
    assert np.abs(same - _reference.nngp_kernel(x, depth=depth)).max() <= 1e-13 * np.abs(same).max()
    assert np.allclose(same, same.T, rtol=1e-14, atol=0)


def test_canonical_gram_entries_close():
    from lwengine.specs.image import canonical_grams, canonical_z, NetConfig

    z = canonical_z(20, NetConfig(3))
    same, cross = canonical_grams(3, 3, 20)
    assert np.abs(kernels.nngp_kernel(z) - same).max() <= 4e-7 * np.abs(same).max()
    if FIX.is_dir():
        assert np.array_equal(same, np.load(FIX / "canonical" / "gram_same_C3_K100.npy")[:20, :20])
        assert np.array_equal(cross, np.load(FIX / "canonical" / "gram_cross_C3_K100.npy")[:20, :20])


def test_bad_input():
    x = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, 32, 32\)"):
        kernels.nngp_kernel(np.zeros((2, 3, 16, 16)))
    with pytest.raises(ValueError, match="same channel count"):
        kernels.nngp_kernel(x, np.zeros((2, 1, 32, 32)))
    with pytest.raises(ValueError, match="depth"):
        kernels.nngp_kernel(x, depth=6)
    with pytest.raises(ValueError, match="precision"):
        kernels.nngp_kernel(x, precision="bf16")
    with pytest.raises(ValueError, match="finite"):
        kernels.nngp_kernel(np.full((1, 1, 32, 32), np.inf))
    with pytest.raises(TypeError, match="real numbers"):
        kernels.nngp_kernel(np.zeros((1, 1, 32, 32), complex))
    assert kernels.nngp_kernel(np.zeros((0, 3, 32, 32)), x).shape == (0, 2)
    from lwengine import _backend

    core = _backend.require_core()
    with pytest.raises(ValueError):
        core.nngp_cross_f32(x, np.zeros((2, 5), np.float32), x, np.zeros((2, 5), np.float32), 3, None,
                            np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError):
        core.nngp_prep_f32(x, 0, np.zeros((2, 1), np.float32), np.zeros(2, np.float32))


def test_device_option():
    from lwengine import _backend

    x = np.random.default_rng(0).standard_normal((3, 2, 32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="device"):
        kernels.nngp_kernel(x, device="tpu")
    if _backend.cuda_device_count() == 0:
        with pytest.raises(RuntimeError, match="cuda"):
            kernels.nngp_kernel(x, device="cuda")
        return
    for prec, tol in (("float32", 1e-6), ("float64", 1e-13)):  # GPU run (not exercised on the dev box)
        for y in (None, x[:2]):
            cpu = kernels.nngp_kernel(x, y, precision=prec, device="cpu")
            gpu = kernels.nngp_kernel(x, y, precision=prec, device="cuda")
            assert np.abs(gpu - cpu).max() <= tol * np.abs(cpu).max()


@pytest.mark.parametrize("depth", [1, 3])
def test_float32_relu_edges_against_twin(depth):
    """Aligned, anti-aligned, scaled and zero images (cos theta at +-1, the clamps; theta near 0 and pi)
    through the float32 path's polynomial atan2 ReLU, against the float64 twin."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    x = np.concatenate([base, -base, 3 * base, np.zeros_like(base), base * 1e-3,
                        rng.standard_normal((3, 3, 32, 32)).astype(np.float32)])
    ref = _reference.nngp_kernel(x.astype(np.float64), x.astype(np.float64), depth=depth)
    got = kernels.nngp_kernel(x, x, depth=depth)
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
