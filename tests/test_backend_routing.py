"""``backend=`` on SpecIndex / search / topk reaches the kernels (Triton through its CPU interpreter
here: tests/conftest.py sets TRITON_INTERPRET=1), gives the native results, and is recorded."""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex, kernels


def _index(backend="auto", n=6, seed=0):
    rng = np.random.default_rng(seed)
    idx = SpecIndex(backend=backend)
    for i in range(n):
        idx.add(f"{i:08d}", RKMESpec(rng.normal(size=(3, 2)), rng.dirichlet(np.ones(3)), 0.1))
    user = RKMESpec(rng.normal(size=(4, 2)), rng.dirichlet(np.ones(4)), 0.1)
    return idx, user


def _triton_or_skip():
    ok, why = kernels.triton_status()
    if not ok:
        pytest.skip(f"triton backend unavailable: {why}")


def test_bad_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend must be"):
        SpecIndex(backend="cuDNN")
    idx, user = _index()
    with pytest.raises(ValueError, match="backend must be"):
        idx.search(user, backend="fast")


def test_native_route_is_recorded():
    idx, user = _index()
    idx.search(user, 3)
    assert idx.last_route["cross_inner"] == "cpu/native" and idx.last_route["simplex_qp_batch"] == "cpu/native"
    idx.topk(user, 2, mode="brute")
    assert idx.last_stats["route"]["cross_inner"] == "cpu/native"


def test_triton_search_and_topk_match_native():
    _triton_or_skip()
    idx, user = _index()
    native = idx.search(user, 3, backend="native")
    triton = idx.search(user, 3, backend="triton")
    # greedy fills the pool's Gram matrix through self_inner / cross_inner (search._PoolGram), auto via gram
    assert idx.last_route["cross_inner"] == "cpu/triton" and idx.last_route["self_inner"] == "cpu/triton"
    auto = idx.search(user, 3, method="auto", backend="triton")
    assert idx.last_route["gram"] == "cpu/triton"
    assert [s.id for s in auto.single] == [s.id for s in idx.search(user, 3, method="auto", backend="native").single]
    assert [s.id for s in triton.single] == [s.id for s in native.single]
    np.testing.assert_allclose([s.score for s in triton.single], [s.score for s in native.single],
                               rtol=0, atol=1e-9)
    assert (triton.mixture is None) == (native.mixture is None)
    top_native = idx.topk(user, 3, mode="brute", backend="native")
    top_triton = idx.topk(user, 3, mode="brute", backend="triton")
    assert idx.last_stats["route"]["cross_inner"] == "cpu/triton"
    assert [i for i, _ in top_triton] == [i for i, _ in top_native]
    np.testing.assert_allclose([d for _, d in top_triton], [d for _, d in top_native], rtol=0, atol=1e-12)


def test_index_default_backend_and_explicit_call_wins():
    _triton_or_skip()
    idx, user = _index(backend="triton")
    idx.search(user, 2)
    assert idx.last_route["cross_inner"] == "cpu/triton"
    z = np.zeros((1, 2))
    one, offs = np.ones(1), np.array([0, 1])
    with kernels.backend_scope("triton"):
        kernels.cross_inner(z, one, offs, z, one, offs, 0.1, backend="native")
        assert kernels.last_route()["backend"] == "native"
