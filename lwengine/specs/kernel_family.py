"""Kernel families: how the packed store computes the inner products of one spec type.

A :class:`KernelFamily` is the extension point between the spec layer and everything above it
(packed groups, search, index, topk): a spec type's registry entry carries one
(:attr:`lwengine.specs.SpecType.family`), and :class:`~lwengine.packed.PackedGroup` and the search
pipeline call its methods instead of naming a kernel.  The base class is the Gaussian (RBF) family of
table and text specs: every method is one native call through :mod:`lwengine.kernels`.  Other families
(the image type's ConvNet NNGP, :mod:`lwengine.specs.image.family`) subclass it.

Vocabulary: a store is ``(z, beta, offsets)`` (rows (M, row_dim), weights (M,), offsets (n + 1,));
``param`` is the group's kernel parameter (gamma for Gaussian specs; the family decides what it
encodes) and ``shape`` the trailing shape of z.  In ``cross_inner(a..., b..., param)`` store a is the
caller: entry (i, j) is ``a_i.inner_prod(b_j)`` with ``param``.

Precision: :func:`precision_scope` sets, for this thread, the precision of the kernel entries a
family computes ("float32": the reference's semantics, the default; "float64": accurate entries).
The Gaussian family is float64 already and ignores it; the NNGP family reads it.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .. import kernels

__all__ = ["KernelFamily", "GAUSSIAN", "PRECISIONS", "check_precision", "precision_scope", "current_precision"]

PRECISIONS = ("float32", "float64")
_scope = threading.local()


def check_precision(precision) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ValueError naming it."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    return precision


@contextlib.contextmanager
def precision_scope(precision: str):
    """Within the block, this thread's kernel families compute their entries in ``precision``
    (how :class:`~lwengine.SpecIndex` search / topk pass ``precision=`` down without a keyword on
    every layer)."""
    check_precision(precision)
    previous = getattr(_scope, "precision", "float32")
    _scope.precision = precision
    try:
        yield
    finally:
        _scope.precision = previous


def current_precision() -> str:
    """This thread's kernel-entry precision (see :func:`precision_scope`)."""
    return getattr(_scope, "precision", "float32")


class KernelFamily:
    """The Gaussian family (table and text specs); subclass and override for another kernel."""

    name = "gaussian"
    copy_dist_zero = True  # a stored spec bit-identical to the user's has dist exactly 0
    sketchable = True  # float32 screening scans, Nystrom sketches and certified / approx topk apply
    param_is_gamma = True  # the kernel parameter is a Gaussian gamma (a dock's gamma policy applies)

    def param(self, spec) -> float:
        """The group's kernel parameter of ``spec`` (third element of a packed group's key)."""
        return float(spec.gamma)

    def row_dim(self, shape, param) -> int:
        """Columns of a stored z row for a group of trailing ``shape`` and ``param``."""
        return int(np.prod(shape)) if shape else 1

    def rows(self, spec, param) -> np.ndarray:
        """The stored rows (K, row_dim) of ``spec``."""
        return spec.z.reshape(spec.K, -1)

    def full_rows(self, z, K: int, shape, param) -> np.ndarray:
        """float64 rows (K, prod(shape)) of one stored spec from its stored rows ``z``."""
        return np.asarray(z, dtype=np.float64)

    def stored_self(self, group, local=None) -> np.ndarray:
        """Self inner products of a group's specs ``local`` (default: all ``group.n``) at the current
        precision (default: the ones computed when they were stored)."""
        return group.self_ip[: group.n] if local is None else np.asarray(group.self_ip)[local]

    def self_inner(self, z, beta, offsets, param, shape, *, device="auto") -> np.ndarray:
        """``spec_i.inner_prod(spec_i)`` of every stored spec (the one-object path)."""
        return kernels.self_inner(z, beta, offsets, param, device=device)

    def cross_inner(self, a_z, a_beta, a_off, b_z, b_beta, b_off, param, shape, *, device="auto") -> np.ndarray:
        """(n_a, n_b): ``a_i.inner_prod(b_j)`` with ``param`` (full rows on both sides)."""
        return kernels.cross_inner(a_z, a_beta, a_off, b_z, b_beta, b_off, param, device=device)

    def gram(self, z, beta, offsets, param, shape, *, device="auto") -> np.ndarray:
        """(n, n): ``spec_a.inner_prod(spec_b)`` with ``param`` (diagonal: the one-object path)."""
        return kernels.gram(z, beta, offsets, param, device=device)

    def scan(self, group, q_z, q_beta, q_off, *, z=None, beta=None, offsets=None, specs=None,
             device="auto") -> np.ndarray:
        """(Q, n): ``stored_i.inner_prod(query_q)`` with the group's parameter, the stored spec as the
        caller; ``z, beta, offsets``: the stored (sub-)store to scan (default: the whole group);
        ``specs``: only those specs of it (local indices, columns in that order)."""
        n = group.n
        if z is None:
            r = int(group.offsets[n])
            z, beta, offsets = group.z[:r], group.beta[:r], group.offsets[: n + 1]
        return kernels.cross_inner(q_z, q_beta, q_off, z, beta, offsets, group.gamma, specs=specs, device=device)


GAUSSIAN = KernelFamily()
