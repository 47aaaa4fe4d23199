"""Packed spec storage: the CSR-like store of one group of specs, shared by the index, the search
pipeline, the scale layer and the shards.

A :class:`PackedGroup` holds every spec of one ``(spec type, trailing shape of z, gamma)``: ``z`` rows
(M, d), ``beta`` (M,), ``offsets`` (n + 1,), per-spec self inner products, insertion sequence numbers,
liveness flags and content digests.  Arrays grow by doubling; removals are tombstones compacted lazily.
"""
from __future__ import annotations

import hashlib
import mmap

import numpy as np

from . import kernels
from .specs import registry

__all__ = ["PackedGroup", "grow", "empty", "digest"]


# ----------------------------------------------------------------------------------- helpers
_PLAIN_PAGES_MIN = 16 << 20  # bytes


def empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)``; from 16 MB up in an anonymous mapping of ordinary pages.  numpy
    advises huge pages for large arrays (``MADV_HUGEPAGE``); where the kernel then tries and fails to
    compact memory on every fault, the first touch is several times slower (measured on the dev box:
    160 MB in 0.38 s against 0.06 s without the advice; docs/benchmarks.md)."""
    shape = tuple(int(v) for v in np.atleast_1d(shape))
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if count * dtype.itemsize < _PLAIN_PAGES_MIN:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, count * dtype.itemsize), dtype=dtype, count=count).reshape(shape)


def grow(arr: np.ndarray, need: int) -> np.ndarray:
    """``arr`` with capacity >= need along axis 0 (doubling; a fresh array, never a view; exact for
    the first fill, so a bulk build does not reserve twice its size; a read-only memory map is copied)."""
    if arr.shape[0] >= need and arr.flags.writeable:
        return arr
    cap = need if arr.shape[0] == 0 else max(need, 2 * arr.shape[0], 16)
    out = empty((cap,) + arr.shape[1:], arr.dtype)
    out[: arr.shape[0]] = arr
    return out


def digest(z2d: np.ndarray, beta: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(z2d, dtype=np.float64))  # the buffers themselves: no byte copies
    h.update(np.ascontiguousarray(beta, dtype=np.float64))
    return h.digest()


# ------------------------------------------------------------------------------------ groups
class PackedGroup:
    """One packed store: every spec of one (type, trailing shape, gamma)."""

    def __init__(self, spec_type: str, shape: tuple, gamma: float, dtype, *, device: str = "cpu"):
        self.spec_type, self.shape, self.gamma, self.dtype = spec_type, tuple(shape), float(gamma), dtype
        self.device = device  # resolved ("cpu" / "cuda"): where this store's kernels run
        self.family = registry.get(spec_type).family  # the inner products of this type (specs.kernel_family)
        self.dim = self.family.row_dim(self.shape, self.gamma)
        self.z = np.empty((0, self.dim), dtype=dtype)
        self.beta = np.empty(0, dtype=np.float64)
        self.offsets = np.zeros(1, dtype=np.int64)
        self.self_ip = np.empty(0, dtype=np.float64)
        self.seq = np.empty(0, dtype=np.int64)
        self.alive = np.empty(0, dtype=bool)
        self.num_points = np.empty(0, dtype=np.int64)
        self.digest = np.empty((0, 16), dtype=np.uint8)
        self.ids: list = []
        self.slot = -1  # its slot in the SpecIndex that holds it (SpecIndex._where codes)
        self.n = 0  # specs stored (alive or not)
        self.rows = 0
        self.n_dead = 0
        self.dups_cache = None  # cached (dst, src) local indices of duplicate specs, or False if none
        self.sketch = None  # lwengine.scale.sketch.NystromSketch, built on demand (see SpecIndex.topk)
        self.ann = {}  # faiss indexes over the sketches, by sketch kind (not persisted)
        self.screen_cache = None  # (z32, beta_l1, r2max), see screen()
        self.balls_cache = None  # (centers, radii), see balls()

    @property
    def key(self):
        return (self.spec_type, self.shape, self.gamma)

    @property
    def n_alive(self) -> int:
        return self.n - self.n_dead

    def append(self, ids, specs, seqs, finite) -> list:
        """Append specs (already validated) in one packing step; returns their local indices."""
        Ks = np.array([s.K for s in specs], dtype=np.int64)
        new_rows = int(Ks.sum())
        z_new = empty((new_rows, self.dim), np.float64)
        b_new = empty(new_rows, np.float64)
        pos = 0
        rows = [self.family.rows(s, self.gamma) for s in specs]
        for s, z2, ok in zip(specs, rows, finite):
            if ok:
                z_new[pos:pos + s.K] = z2
                b_new[pos:pos + s.K] = s.beta
            else:  # stored inert: zero weight; its self inner product is NaN so search drops it
                z_new[pos:pos + s.K] = 0.0
                b_new[pos:pos + s.K] = 0.0
            pos += s.K
        offs_new = np.concatenate([[0], np.cumsum(Ks)]).astype(np.int64)
        self_new = self.family.self_inner(z_new, b_new, offs_new, self.gamma, self.shape, device=self.device)
        self_new[~np.asarray(finite, dtype=bool)] = np.nan
        digests = [np.frombuffer(digest(z2, s.beta), dtype=np.uint8) for s, z2 in zip(specs, rows)]
        return self.append_packed(ids, z_new, b_new, offs_new, self_new, seqs,
                                  [s.num_points for s in specs], digests)

    def append_packed(self, ids, z_new, b_new, offs_new, self_new, seqs, num_points, digests) -> list:
        """Append already packed specs (rows, weights, offsets from 0, self inner products, ...).
        An empty group adopts ``z_new`` without a copy when its dtype matches (bulk builds)."""
        k = len(ids)
        new_rows = int(offs_new[-1])
        n0, r0 = self.n, self.rows
        if n0 == 0 and r0 == 0 and z_new.dtype == self.dtype and z_new.flags.c_contiguous:
            self.z = z_new
            self.beta = np.ascontiguousarray(b_new, dtype=np.float64)
        else:
            self.z = grow(self.z, r0 + new_rows)
            self.beta = grow(self.beta, r0 + new_rows)
            self.z[r0:r0 + new_rows] = z_new
            self.beta[r0:r0 + new_rows] = b_new
        self.offsets = grow(self.offsets, n0 + k + 1)
        self.offsets[n0 + 1:n0 + k + 1] = r0 + offs_new[1:]
        for name, values in (("self_ip", self_new), ("seq", seqs), ("alive", np.ones(k, dtype=bool)),
                             ("num_points", num_points), ("digest", digests)):
            arr = grow(getattr(self, name), n0 + k)
            arr[n0:n0 + k] = values
            setattr(self, name, arr)
        self.ids.extend(ids)
        self.n += k
        self.rows += new_rows
        self.dups_cache = None
        self.screen_cache = None
        self.balls_cache = None
        return list(range(n0, n0 + k))

    def kill(self, local: int) -> None:
        self.alive[local] = False
        self.n_dead += 1
        self.dups_cache = None

    def compact(self) -> dict:
        """Drop dead specs; returns {id: new local index}."""
        keep = np.flatnonzero(self.alive[: self.n])
        lens = np.diff(self.offsets[: self.n + 1])[keep]
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep]) if len(keep) else \
            np.empty(0, dtype=np.int64)
        self.z = np.ascontiguousarray(self.z[rows])
        self.beta = np.ascontiguousarray(self.beta[rows])
        self.offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        for name in ("self_ip", "seq", "num_points", "digest"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name)[keep]))
        self.alive = np.ones(len(keep), dtype=bool)
        self.ids = [self.ids[i] for i in keep]
        self.n, self.rows, self.n_dead = len(keep), len(rows), 0
        self.dups_cache = None
        self.screen_cache = None
        self.balls_cache = None
        if self.sketch is not None:
            self.sketch.compact(keep)
        self.ann = {}
        return {i: j for j, i in enumerate(self.ids)}

    def spec(self, local: int, extra=None):
        """The stored spec ``local`` as an object of its registered class (``extra``: its extra fields)."""
        a, b = int(self.offsets[local]), int(self.offsets[local + 1])
        z = self.full_rows(local).reshape((b - a,) + self.shape)
        return registry.get(self.spec_type).cls.from_parts(z, np.array(self.beta[a:b]), self.gamma,
                                                            int(self.num_points[local]), **(extra or {}))

    def full_rows(self, local: int) -> np.ndarray:
        """float64 rows (K, prod(shape)) of the stored spec ``local`` (a store may hold fewer columns:
        see :meth:`lwengine.specs.KernelFamily.row_dim`)."""
        a, b = int(self.offsets[local]), int(self.offsets[local + 1])
        return np.array(self.family.full_rows(self.z[a:b], b - a, self.shape, self.gamma), dtype=np.float64)

    def self_terms(self, local=None) -> np.ndarray:
        """Self inner products of the specs ``local`` (default: all) at the current kernel precision
        (:func:`lwengine.specs.kernel_family.precision_scope`)."""
        return self.family.stored_self(self, local)

    def duplicates(self):
        """``(dst, src)``: local indices of alive specs bit-identical to an earlier representative."""
        if self.dups_cache is None:
            live = np.flatnonzero(self.alive[: self.n])
            self.dups_cache = False
            if len(live) > 1:
                keys = np.ascontiguousarray(self.digest[live]).view(np.dtype((np.void, 16))).ravel()
                _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
                src = live[first[inverse.ravel()]]
                mask = src != live
                if mask.any():
                    self.dups_cache = (live[mask], src[mask])
        return self.dups_cache

    def balls(self):
        """``(centers (n, dim), radii (n,))``: a covering ball of every stored spec's rows
        (:func:`lwengine.kernels.spec_balls`; the search's far-spec bound).  Cached."""
        if self.balls_cache is None or len(self.balls_cache[1]) != self.n:
            r = int(self.offsets[self.n])
            self.balls_cache = kernels.spec_balls(np.asarray(self.z[:r]), self.offsets[: self.n + 1])
        return self.balls_cache

    def cross(self, q_z, q_beta, q_offsets, *, screened: bool = False, specs=None, device=None) -> np.ndarray:
        """``stored_i.inner_prod(query_q)`` (this group's kernel parameter) for Q queries x the stored
        specs: (Q, n), through the type's kernel family.

        ``screened=True`` scans the float32 copy of the rows (bulk screening; error bound in
        :func:`lwengine.kernels.cross_inner_f32_bound`).  ``specs``: local indices to compute only
        those (columns in that order), read in place.  ``device``: None for the store's."""
        device = device or self.device
        if not screened:
            return self.family.scan(self, q_z, q_beta, q_offsets, specs=specs, device=device)
        n, r = self.n, int(self.offsets[self.n])
        return self.family.scan(self, q_z, q_beta, q_offsets, z=self.screen()[0][:r], beta=self.beta[:r],
                                offsets=self.offsets[: n + 1], specs=specs, device=device)

    def gather(self, local, dtype=None):
        """The packed sub-store ``(z, beta, offsets)`` of the specs ``local`` (in that order); ``z`` in
        ``dtype`` (default: the store's)."""
        z, beta, offs = kernels.gather_specs(self.z, self.beta, self.offsets, local)
        return (z if dtype is None else np.ascontiguousarray(z, dtype=dtype)), beta, offs

    def screen(self):
        """``(z32, beta_l1, r2max)``: the float32 copy of the rows and, per spec, sum |beta| and the
        largest squared row norm (inputs of the float32 screening error bound).  Cached."""
        if self.screen_cache is None or len(self.screen_cache[1]) != self.n:
            r = int(self.offsets[self.n])
            z = np.asarray(self.z[:r])
            z32 = z if z.dtype == np.float32 else z.astype(np.float32)
            starts = self.offsets[: self.n]
            empty = self.offsets[1: self.n + 1] == starts
            safe = np.minimum(starts, max(r - 1, 0))
            beta_l1 = np.add.reduceat(np.abs(self.beta[:r]), safe) if r else np.zeros(self.n)
            r2 = np.einsum("ij,ij->i", z, z, dtype=np.float64) if r else np.zeros(0)
            r2max = np.maximum.reduceat(r2, safe) if r else np.zeros(self.n)
            beta_l1 = np.where(empty, 0.0, beta_l1)
            r2max = np.where(empty, 0.0, r2max)
            self.screen_cache = (z32, beta_l1, r2max)
        return self.screen_cache


