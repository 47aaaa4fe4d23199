"""Canonical z and its float32 NNGP Grams: every default image spec's dists as quadratic forms.

Every spec generated with the default ``n_models`` / model shape has z = :func:`canonical_z` (K, C)
(a prefix of one fixed noise block), and NNGP entries do not depend on the batch they are computed
in, so the reference's inner products between such specs use slices of two float32 Grams per
(C, depth): ``same`` (one-object path, the ReLU diagonal forced) and ``cross`` (two-object path).
Sources, in order: this process's cache; the Grams shipped in ``data/canonical_grams.npz`` (C = 1, 3,
depth 3, K <= 100, computed with :mod:`.nngp_torch`, equal bit for bit to the reference's); the torch
replica (bit-exact where torch's CPU kernels reproduce the reference's entries, :func:`torch_replica_exact`;
else ~1e-7 per entry: logged); otherwise the native float32 kernel (~1e-7 per entry, not
bit-exact: logged).  :func:`canonical_grams64`: the same two Grams with the float64 kernel
(accurate-search mode), computed once per (C, depth) and block of K.
"""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

from ... import kernels
from .rng import NetConfig, canonical_z

__all__ = ["is_canonical_z", "canonical_grams", "canonical_grams64", "torch_replica_exact", "CANONICAL_K_BLOCK"]

log = logging.getLogger(__name__)

CANONICAL_K_BLOCK = 100
_DATA = os.path.join(os.path.dirname(__file__), "data", "canonical_grams.npz")
_GRAMS: dict = {}
_GRAMS64: dict = {}
_LOCK = threading.Lock()


def is_canonical_z(z: np.ndarray) -> bool:
    """True when z (K, C, 32, 32) float32 is bit-equal to the default generator's z for its K and C."""
    if z.ndim != 4 or z.dtype != np.float32 or z.shape[2:] != (32, 32) or z.shape[0] < 1:
        return False
    K, C = z.shape[0], z.shape[1]
    if K > 10 * CANONICAL_K_BLOCK:
        return False
    ref = canonical_z(K, NetConfig(C))
    return bool(np.array_equal(ref.view(np.uint32), z.view(np.uint32)))


_REPLICA_CHECK_K = 16
# The reference's own float32 NNGP outputs for depths 1 and 2 (the first 3 images of the image
# fixtures' nngp/noise_c1 and noise_c3 cases, their depth{1,2}_same_A / depth{1,2}_cross_AA blocks).
_CHECK_DATA = os.path.join(os.path.dirname(__file__), "data", "replica_check.npz")
_REPLICA: dict = {}


def torch_replica_exact(C: int = 1, depth: int = 3) -> bool:
    """Whether torch's CPU kernels on this machine reproduce the reference's float32 NNGP entries bit
    for bit at (C, depth): at depth 3 the torch replica of the shipped canonical Grams' first 16 x 16
    entries, at depths 1 and 2 of the reference's outputs for 3 noise images (``replica_check.npz``),
    must equal them.  torch's convolutions pick their code by CPU and by shape: an Intel Xeon with
    AVX-512 differed from the recording machine by ~6e-8 per entry at depth 2, an AMD EPYC with AVX2
    matched it at depth 3 only; so would the reference's own entries there."""
    key = (int(C), int(depth))
    if key not in _REPLICA:
        exact = False
        try:
            import torch  # noqa: F401

            from .nngp_torch import torch_nngp_kernel

            inputs, want = None, None  # the reference's (same, cross) for inputs, where shipped
            if key[1] == 3 and os.path.exists(_DATA):
                with np.load(_DATA) as d:
                    k, name = _REPLICA_CHECK_K, f"C{key[0]}_d3"
                    if f"same_{name}" in d:
                        inputs = canonical_z(k, NetConfig(key[0]))
                        want = (d[f"same_{name}"][:k, :k], d[f"cross_{name}"][:k, :k])
            elif os.path.exists(_CHECK_DATA):
                with np.load(_CHECK_DATA) as d:
                    name = f"C{key[0]}_d{key[1]}"
                    if f"same_{name}" in d:
                        inputs, want = d[f"A_C{key[0]}"], (d[f"same_{name}"], d[f"cross_{name}"])
            if inputs is not None:
                got = (torch_nngp_kernel(inputs, depth=key[1]), torch_nngp_kernel(inputs, inputs, depth=key[1]))
                exact = all(np.array_equal(g.view(np.uint32), w.view(np.uint32)) for g, w in zip(got, want))
        except ModuleNotFoundError:
            pass
        _REPLICA[key] = exact
    return _REPLICA[key]


def _compute(C: int, depth: int, K: int):
    z = canonical_z(K, NetConfig(C))
    try:
        from .nngp_torch import torch_nngp_kernel

        import torch  # noqa: F401

        exact = torch_replica_exact(C, depth)
        if not exact:
            log.warning("torch's CPU kernels here do not reproduce the reference's float32 NNGP entries bit for "
                        "bit: canonical Grams (C=%d, depth=%d, K=%d) agree with the reference to ~1e-7", C, depth, K)
        return torch_nngp_kernel(z, depth=depth), torch_nngp_kernel(z, z, depth=depth), exact
    except ModuleNotFoundError:
        log.warning("torch is missing: canonical Grams (C=%d, depth=%d, K=%d) come from the numpy float32 "
                    "kernel; dists agree with the reference to ~1e-7, not bit for bit", C, depth, K)
        return kernels.nngp_kernel(z, depth=depth), kernels.nngp_kernel(z, z, depth=depth), False


def canonical_grams(C: int, depth: int, K: int):
    """-> (same (K, K), cross (K, K)) float32 Grams of canonical_z(K, C) at ``depth`` (read-only views)."""
    key = (int(C), int(depth))
    with _LOCK:
        entry = _GRAMS.get(key)
        if entry is None or entry[0].shape[0] < K:
            kmax = max(int(K), CANONICAL_K_BLOCK)
            got = None
            if kmax <= CANONICAL_K_BLOCK and os.path.exists(_DATA):
                with np.load(_DATA) as d:
                    name = f"C{key[0]}_d{key[1]}"
                    if f"same_{name}" in d:
                        got = (d[f"same_{name}"], d[f"cross_{name}"], True)
            if got is None:
                got = _compute(key[0], key[1], kmax)
            same, cross, _exact = got
            same.setflags(write=False)
            cross.setflags(write=False)
            entry = (same, cross)
            _GRAMS[key] = entry
    return entry[0][:K, :K], entry[1][:K, :K]


def canonical_grams64(C: int, depth: int, K: int):
    """-> (same (K, K), cross (K, K)) float64 Grams of canonical_z(K, C) at ``depth`` (read-only views;
    NNGP entries do not depend on the batch, so a larger cached Gram's prefix is the smaller one)."""
    key = (int(C), int(depth))
    with _LOCK:
        entry = _GRAMS64.get(key)
        if entry is None or entry[0].shape[0] < K:
            kmax = max(int(K), CANONICAL_K_BLOCK)
            z = canonical_z(kmax, NetConfig(key[0]))
            same = kernels.nngp_kernel(z, depth=key[1], precision="float64")
            cross = kernels.nngp_kernel(z, z, depth=key[1], precision="float64")
            same.setflags(write=False)
            cross.setflags(write=False)
            entry = (same, cross)
            _GRAMS64[key] = entry
    return entry[0][:K, :K], entry[1][:K, :K]
