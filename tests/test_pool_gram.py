"""The greedy search's lazily filled pool Gram matrix: the same bits as kernels.gram, and the same
mixture as greedy on the full matrix."""
from __future__ import annotations

import numpy as np

from lwengine import kernels
from lwengine.search import _PoolGram, greedy_mixture
from lwengine.specs.kernel_family import GAUSSIAN


def _pool(seed, P=25, K=12, d=5):
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, K, size=P)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    z = rng.normal(size=(offsets[-1], d))
    beta = rng.dirichlet(np.ones(offsets[-1]))
    return z, beta, offsets, rng


def test_lazy_pool_gram_equals_gram_bit_for_bit():
    z, beta, offsets, _ = _pool(0)
    lazy = _PoolGram(z, beta, offsets, 0.3, GAUSSIAN, ())
    full = kernels.gram(z, beta, offsets, 0.3)
    assert np.array_equal(np.diag(lazy.A), np.diag(full))
    lazy.column(7)
    assert np.array_equal(lazy.A[:, 7], full[:, 7]) and np.array_equal(lazy.A[7], full[7])
    assert np.isnan(lazy.A[3, 4])  # not filled yet
    assert np.array_equal(lazy.full(), full)


def test_greedy_on_the_lazy_gram_equals_greedy_on_the_full_one():
    for seed in range(5):
        z, beta, offsets, rng = _pool(seed)
        C = rng.uniform(0.0, 0.5, size=len(offsets) - 1)
        full = greedy_mixture(kernels.gram(z, beta, offsets, 0.3), C, 1.0, 5)
        lazy = _PoolGram(z, beta, offsets, 0.3, GAUSSIAN, ())
        got = greedy_mixture(lazy.A, C, 1.0, 5, column=lazy.column)
        assert got[0] == full[0] and got[2] == full[2] and np.array_equal(got[1], full[1])
        assert lazy.done.sum() <= 4  # at most one column per accepted round before the last
