"""Lloyd k-means (_core.kmeans) against the fixtures' k-means and the numpy twin."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lwengine import _backend, _reference, kernels

core = _backend.require_core()

CASES = ["g01_n50_d3", "g02_n300_d1", "g03_n2000_d20", "g04_n5000_d64", "g05_K_equals_n", "g06_n1",
         "g07_nonfinite_cells", "g08_all_nan_column", "g09_signed_beta", "g10_no_reduce",
         "g11_discrete_duplicates", "g12_custom_params", "g13_steps0"]


@pytest.mark.parametrize("case", CASES)
def test_kmeans_fixture(fixtures_dir, simd, case):
    root = fixtures_dir / "generate" / case
    if not (root / "z0.npy").exists():
        pytest.skip("case records no k-means (no z0)")
    man = json.loads((root / "manifest.json").read_text())
    X = np.load(root / ("X_clean.npy" if (root / "X_clean.npy").exists() else "X.npy"))
    X = X.reshape(len(X), -1)
    idx = np.load(root / "kmeans_init_idx.npy")
    z0 = np.load(root / "z0.npy").reshape(len(idx), -1)
    c, it = kernels.kmeans(X, len(idx), init_idx=idx)
    assert c.dtype == np.float32
    np.testing.assert_allclose(c, z0, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(z0).max()))
    assert it == man["expected"]["kmeans"]["iterations"]


@pytest.mark.parametrize("n,d,k", [(1, 1, 1), (50, 3, 7), (997, 20, 97), (300, 65, 10)])
def test_kmeans_matches_reference(simd, n, d, k):
    rng = np.random.default_rng(n + d + k)
    x = (rng.standard_normal((n, d)) + rng.integers(0, 3, (n, 1))).astype(np.float32)
    # distinct init rows: with duplicated centroids numpy's BLAS breaks exact ties by rounding
    # noise, while the rule (and _core) picks the lowest index
    idx = rng.choice(n, size=min(k, n), replace=False)
    c, it = kernels.kmeans(x, len(idx), init_idx=idx)
    cr, itr = _reference.kmeans(x, len(idx), init_idx=idx)
    assert it == itr
    np.testing.assert_allclose(c, cr, rtol=1e-5, atol=1e-5)


def test_kmeans_duplicate_init_ties_to_lowest_index_and_empty_to_zero(simd):
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]], dtype=np.float32)
    c, it = kernels.kmeans(x, 3, init_idx=[0, 0, 2], max_iter=1)
    np.testing.assert_allclose(c[0], [0.05, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(c[1], [0.0, 0.0])  # empty cluster (tie lost) -> zero vector
    np.testing.assert_allclose(c[2], [5.05, 5.0], rtol=1e-6)


def test_kmeans_max_iter_and_determinism():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4)).astype(np.float32)
    c1, it1 = kernels.kmeans(x, 20, seed=3, max_iter=2)
    assert it1 == 2
    threads = core.get_num_threads()
    try:
        core.set_num_threads(1)
        a = kernels.kmeans(x, 20, seed=3)
        core.set_num_threads(2)
        b = kernels.kmeans(x, 20, seed=3)
    finally:
        core.set_num_threads(threads)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_kmeans_bad_input():
    x = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="c"):
        core.kmeans(x, np.zeros((0, 2), dtype=np.float32), 10, 1e-4)
    with pytest.raises(ValueError, match="c"):
        core.kmeans(x, np.zeros((2, 3), dtype=np.float32), 10, 1e-4)
    with pytest.raises(TypeError, match="x must have dtype float32, got float64"):
        core.kmeans(x.astype(np.float64), np.zeros((2, 2), dtype=np.float32), 10, 1e-4)
    with pytest.raises(ValueError, match="max_iter"):
        core.kmeans(x, np.zeros((2, 2), dtype=np.float32), 0, 1e-4)
    with pytest.raises(ValueError, match="init_idx"):
        kernels.kmeans(x, 2, init_idx=[0, 9])
    with pytest.raises(ValueError, match="k must"):
        kernels.kmeans(x, 0)
