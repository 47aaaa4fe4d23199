"""The ConvNet-NNGP kernel family: how packed stores of image specs compute their inner products.

Group parameter (the third element of a packed group's key): ``net_depth`` for specs with their own
z, ``-net_depth`` for specs with the canonical z (:func:`.gram_cache.is_canonical_z`).  A canonical
store keeps no z rows at all (``row_dim`` 0: z is ``canonical_z_view(K, C)``), only beta and offsets, so a
million default specs cost their weights.

Every inner product keeps the reference's semantics (image-text semantics §1.7): the caller's depth,
float32 kernel entries (the reference's own canonical Grams where both sides are canonical), the
one-object path for a spec with itself, float64 products summed in torch's order.  A canonical store
scanned against a user computes the user's cross kernel against the canonical z once (``X``, (Kmax,
K_user)); each stored cross term is then ``sum_ab beta_ia beta_u_b X[a, b]``.  Up to
:data:`EXACT_SUM_ELEMS` products per scan these sums are replayed in torch's order (bit-equal to the
reference); above, every term is ``beta_i . v`` with ``v = X beta_u`` (the same float64 values summed
in another order: the two differ by a few ulp of the terms, ~1e-16 absolute, against the float32
noise of the reference's dists, ~1e-6).

Under ``kernel_family.precision_scope("float64")`` every kernel entry is float64 instead
(``nngp_kernel(..., precision="float64")``; canonical blocks from :func:`.gram_cache.canonical_grams64`),
stored specs' self terms included (:meth:`NNGPFamily.stored_self`): dists equal
``lw.dist(user, precision="float64")``.
"""
from __future__ import annotations

import numpy as np

from ... import kernels
from ..kernel_family import KernelFamily, current_precision
from .gram_cache import canonical_grams, canonical_grams64
from .reduction import torch_sum_f64
from .rng import NetConfig, canonical_z_view

__all__ = ["NNGPFamily", "NNGP", "EXACT_SUM_ELEMS"]

EXACT_SUM_ELEMS = 1 << 24  # torch-order sums up to this many products per scan, dot products above
_CHUNK = 1 << 22


def _depth(param) -> int:
    return int(round(abs(float(param))))


def _images(rows, shape) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(rows).reshape((-1,) + tuple(shape)), dtype=np.float32)


def _grams(C: int, depth: int, K: int, precision: str):
    """(same, cross) canonical Grams in ``precision`` (float32: the reference's own)."""
    return (canonical_grams64 if precision == "float64" else canonical_grams)(C, depth, K)


def _canonical_flags(z, offsets, shape, param) -> np.ndarray:
    """Per spec of a store: True when its z is the canonical z (store rows of 0 columns, or full rows
    bit-equal to the canonical prefix)."""
    n = len(offsets) - 1
    if float(param) < 0 or z.shape[1] == 0:
        return np.ones(n, dtype=bool)
    K = np.diff(offsets)
    if n == 0:
        return np.zeros(0, dtype=bool)
    ref = canonical_z_view(int(K.max()), NetConfig(int(shape[0]))).reshape(int(K.max()), -1)
    out = np.empty(n, dtype=bool)
    for i in range(n):
        a, b = int(offsets[i]), int(offsets[i + 1])
        rows = z[a:b]
        out[i] = bool(np.array_equal(rows.astype(np.float32), ref[: b - a]))
    return out


class _Bank:
    """One side's images: the canonical block (indices 0..kc-1) then the foreign specs' own images."""

    def __init__(self, z, offsets, shape, param):
        self.K = np.diff(offsets).astype(np.int64)
        self.canon = _canonical_flags(z, offsets, shape, param)
        self.kc = int(self.K[self.canon].max()) if self.canon.any() else 0
        self.start = np.empty(len(self.K), dtype=np.int64)  # first bank index of each spec
        foreign = []
        pos = self.kc
        for i in np.flatnonzero(~self.canon):
            self.start[i] = pos
            foreign.append(z[int(offsets[i]):int(offsets[i + 1])])
            pos += int(self.K[i])
        self.start[self.canon] = 0
        self.foreign = _images(np.concatenate(foreign), shape) if foreign else None
        self.size = pos

    def images(self, shape) -> np.ndarray:
        parts = []
        if self.kc:
            parts.append(canonical_z_view(self.kc, NetConfig(int(shape[0]))))
        if self.foreign is not None:
            parts.append(self.foreign)
        return np.concatenate(parts)


def _bank_kernel(A: _Bank, B: _Bank, shape, depth: int, precision: str = "float32") -> np.ndarray:
    """Two-object kernel (float32, or float64 in ``precision``) between two banks; the canonical x
    canonical block is the canonical cross Gram (float32: the reference's)."""
    if A.foreign is None and B.foreign is None:
        return _grams(int(shape[0]), depth, max(A.kc, B.kc), precision)[1][: A.kc, : B.kc]
    G = kernels.nngp_kernel(A.images(shape), B.images(shape), depth=depth, precision=precision)
    if A.kc and B.kc:
        G[: A.kc, : B.kc] = _grams(int(shape[0]), depth, max(A.kc, B.kc), precision)[1][: A.kc, : B.kc]
    return G


def _pair_sums(G, A: _Bank, a_beta, a_off, B: _Bank, b_beta, b_off) -> np.ndarray:
    """(n_a, n_b): torch-order ``sum(G_block * outer(beta_a_i, beta_b_j))`` for every pair, batched by
    block size."""
    na, nb = len(A.K), len(B.K)
    out = np.empty((na, nb))
    ia, jb = np.meshgrid(np.arange(na), np.arange(nb), indexing="ij")
    ia, jb = ia.ravel(), jb.ravel()
    G64 = G.astype(np.float64)
    keys = A.K[ia] * (int(B.K.max()) + 1) + B.K[jb]
    for key in np.unique(keys):
        sel = np.flatnonzero(keys == key)
        Ka, Kb = int(A.K[ia[sel[0]]]), int(B.K[jb[sel[0]]])
        step = max(1, _CHUNK // (Ka * Kb))
        ar, br = np.arange(Ka), np.arange(Kb)
        for s in range(0, len(sel), step):
            part = sel[s:s + step]
            i, j = ia[part], jb[part]
            rows = A.start[i][:, None] + ar[None, :]  # (p, Ka) bank rows
            cols = B.start[j][:, None] + br[None, :]
            blocks = G64[rows[:, :, None], cols[:, None, :]]
            ba = a_beta[a_off[i][:, None] + ar[None, :]]
            bb = b_beta[b_off[j][:, None] + br[None, :]]
            prod = blocks * (ba[:, :, None] * bb[:, None, :])
            out[i, j] = torch_sum_f64(prod.reshape(len(part), -1))
    return out


def _self_sums(z, beta, offsets, param, shape, precision: str = "float32") -> np.ndarray:
    """``spec_i.inner_prod(spec_i)`` (one-object path) of every spec of a store, kernel entries in
    ``precision``."""
    depth = _depth(param)
    K = np.diff(offsets).astype(np.int64)
    canon = _canonical_flags(z, offsets, shape, param)
    out = np.empty(len(K))
    C = int(shape[0])
    for k in np.unique(K[canon]):
        sel = np.flatnonzero(canon & (K == k))
        S = _grams(C, depth, int(k), precision)[0].astype(np.float64)
        b = beta[offsets[sel][:, None] + np.arange(k)[None, :]]
        if len(sel) * k * k <= EXACT_SUM_ELEMS:
            step = max(1, _CHUNK // int(k * k))
            for s in range(0, len(sel), step):
                bs = b[s:s + step]
                out[sel[s:s + step]] = torch_sum_f64((S[None] * (bs[:, :, None] * bs[:, None, :]))
                                                     .reshape(len(bs), -1))
        else:
            out[sel] = np.einsum("bi,bi->b", b @ S, b)
    for i in np.flatnonzero(~canon):
        a, b_ = int(offsets[i]), int(offsets[i + 1])
        G = kernels.nngp_kernel(_images(z[a:b_], shape), depth=depth, precision=precision).astype(np.float64)
        bi = beta[a:b_]
        out[i] = torch_sum_f64((G * np.outer(bi, bi)).reshape(-1))
    return out


_ROWS64: dict = {}


def _canonical_rows64(C: int, K: int) -> np.ndarray:
    """float64 rows (K, C*1024) of the canonical z, read-only, cached per C (prefix views)."""
    rows = _ROWS64.get(C)
    if rows is None or rows.shape[0] < K:
        rows = canonical_z_view(max(K, 100), NetConfig(C)).reshape(max(K, 100), -1).astype(np.float64)
        rows.setflags(write=False)
        _ROWS64[C] = rows
    return rows[:K]


class NNGPFamily(KernelFamily):
    """Image specs under the reference's ConvNet-NNGP search kernel (see the module docstring)."""

    name = "nngp"
    copy_dist_zero = False  # a copy of a spec is ~1e-6 away (two-object path); only the same object is 0
    sketchable = False  # no RKHS sketch for this kernel: topk is the exact scan
    param_is_gamma = False  # +-net_depth

    def param(self, spec) -> float:
        d = float(spec.net_depth)
        return -d if spec.canonical else d

    def row_dim(self, shape, param) -> int:
        return 0 if float(param) < 0 else int(np.prod(shape))

    def rows(self, spec, param) -> np.ndarray:
        if float(param) < 0:
            return np.empty((spec.K, 0), dtype=np.float32)
        return spec.z.reshape(spec.K, -1)

    def full_rows(self, z, K: int, shape, param) -> np.ndarray:
        if float(param) < 0 or np.asarray(z).shape[-1] == 0:
            return _canonical_rows64(int(shape[0]), int(K))
        return np.asarray(z, dtype=np.float64)

    def stored_self(self, group, local=None) -> np.ndarray:
        stored = super().stored_self(group, local)
        if current_precision() == "float32":
            return stored
        idx = np.arange(group.n, dtype=np.int64) if local is None else np.asarray(local, dtype=np.int64)
        z, beta, offsets = group.gather(idx)
        out = _self_sums(np.asarray(z), beta, offsets, group.gamma, group.shape, "float64")
        return np.where(np.isnan(stored), np.nan, out)  # specs stored inert stay dropped

    def self_inner(self, z, beta, offsets, param, shape, *, device="auto") -> np.ndarray:
        return _self_sums(np.asarray(z), np.asarray(beta, dtype=np.float64), np.asarray(offsets, dtype=np.int64),
                          param, shape, current_precision())

    def cross_inner(self, a_z, a_beta, a_off, b_z, b_beta, b_off, param, shape, *, device="auto") -> np.ndarray:
        a_off, b_off = np.asarray(a_off, dtype=np.int64), np.asarray(b_off, dtype=np.int64)
        A = _Bank(np.asarray(a_z), a_off, shape, param)
        B = _Bank(np.asarray(b_z), b_off, shape, 1.0)  # the other side's canonical flags from its rows
        G = _bank_kernel(A, B, shape, _depth(param), current_precision())
        return _pair_sums(G, A, np.asarray(a_beta, dtype=np.float64), a_off, B,
                          np.asarray(b_beta, dtype=np.float64), b_off)

    def gram(self, z, beta, offsets, param, shape, *, device="auto") -> np.ndarray:
        M = self.cross_inner(z, beta, offsets, z, beta, offsets, param, shape)
        M[np.diag_indices_from(M)] = self.self_inner(z, beta, offsets, param, shape)
        return M

    def scan(self, group, q_z, q_beta, q_off, *, z=None, beta=None, offsets=None, specs=None,
             device="auto") -> np.ndarray:
        n = group.n
        if specs is not None:
            z, beta, offsets = group.gather(specs)
        elif z is None:
            r = int(group.offsets[n])
            z, beta, offsets = group.z[:r], group.beta[:r], group.offsets[: n + 1]
        offsets = np.asarray(offsets, dtype=np.int64)
        q_off = np.asarray(q_off, dtype=np.int64)
        if float(group.gamma) >= 0:  # specs with their own z: the general pairwise path
            return self.cross_inner(z, beta, offsets, q_z, q_beta, q_off, group.gamma, group.shape).T
        return canonical_scan(group.shape, _depth(group.gamma), beta, offsets, q_z, q_beta, q_off)


def canonical_scan(shape, depth: int, beta, offsets, q_z, q_beta, q_off) -> np.ndarray:
    """(Q, n): ``lw_i.inner_prod(user_q)`` for a store of canonical-z specs (beta, offsets) -- one
    cross kernel per user against the canonical z, then torch-order sums or ``beta_i . v``."""
    beta = np.asarray(beta, dtype=np.float64)
    K = np.diff(offsets).astype(np.int64)
    n = len(K)
    out = np.empty((len(q_off) - 1, n))
    if n == 0:
        return out
    kmax = int(K.max())
    Bq = _Bank(np.asarray(q_z), q_off, shape, 1.0)
    Bs = _Bank(np.empty((int(offsets[-1]), 0)), offsets, shape, -1.0)
    X = _bank_kernel(Bs, Bq, shape, depth, current_precision())  # (kmax, user bank) float32 (or float64)
    X64 = X.astype(np.float64)
    uniform = bool((K == kmax).all())
    for q in range(len(q_off) - 1):
        ku = int(q_off[q + 1] - q_off[q])
        bu = np.asarray(q_beta[q_off[q]:q_off[q + 1]], dtype=np.float64)
        Xq = X64[:, Bq.start[q]:Bq.start[q] + ku]  # (kmax, ku)
        if int(offsets[-1]) * ku <= EXACT_SUM_ELEMS:
            Bq1 = _Bank(np.asarray(q_z)[q_off[q]:q_off[q + 1]], np.array([0, ku]), shape, 1.0)
            Gq = np.ascontiguousarray(X[:, Bq.start[q]:Bq.start[q] + ku])
            Bq1.start[:] = 0
            out[q] = _pair_sums(Gq, Bs, beta, offsets, Bq1, bu, np.array([0, ku]))[:, 0]
            continue
        v = Xq @ bu  # (kmax,)
        if uniform:
            out[q] = beta[: n * kmax].reshape(n, kmax) @ v
        else:
            pos = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], K)
            out[q] = np.add.reduceat(beta * v[pos], offsets[:-1])
    return out


NNGP = NNGPFamily()
