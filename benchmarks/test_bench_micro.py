"""pytest-benchmark micro-benchmarks of the _core kernels (not part of tests/).

    pytest benchmarks/test_bench_micro.py --benchmark-only
"""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import kernels

RNG = np.random.default_rng(0)
K, D, N = 100, 20, 1000
Z64 = RNG.standard_normal((N * K, D))
BETA = RNG.random(N * K) / K
OFF = np.arange(N + 1, dtype=np.int64) * K
X = RNG.standard_normal((2000, D)).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_inner_q1_k100_n1000(benchmark, dtype):
    z = Z64.astype(dtype)
    q = z[:K].copy()
    benchmark(kernels.cross_inner, q, BETA[:K], [0, K], z, BETA, OFF, 0.1)


def test_zx_moments_n2000_k100(benchmark):
    benchmark(kernels.zx_moments, Z64[:K], X, 0.1)


def test_kmeans_n2000_k100(benchmark):
    idx = RNG.integers(0, len(X), K)
    benchmark(kernels.kmeans, X, K, init_idx=idx)


def test_simplex_qp_n100(benchmark):
    z = Z64[:K]
    G = np.exp(-0.1 * ((z[:, None] - z[None]) ** 2).sum(-1))
    c = kernels.kernel_mean(z, X, 0.1)
    benchmark(kernels.simplex_qp, G, c)
