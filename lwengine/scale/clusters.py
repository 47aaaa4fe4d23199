"""Clusters of a group's lifted sketch vectors, so that certified top-k need not scan every sketch.

Lift every projected spec to ``a_i = [s̃_i, √r_i]`` (its stored sketch vector and the square root of
its residual; ``‖a_u − a_i‖²`` is the slack-free Nyström lower bound).  The specs are partitioned by
k-means centroids ``c`` of a sample of the ``a_i``; each spec keeps ``e_i = ‖a_i − c‖`` (float64) and
the members of a cluster are sorted by ``e``.  For a user ``a_u`` with ``q = ‖a_u − c‖`` the triangle
inequality gives ``‖a_u − a_i‖ ≥ |q − e_i|``, so for a threshold ``T`` on the distance only the
members with ``e_i ∈ [q − ρ_T, q + ρ_T]`` -- one contiguous slice per cluster -- can have a lower bound
``≤ T``.  The per-spec slack terms of :meth:`NystromSketch.bounds` are replaced by their maxima over
the cluster (see :meth:`SketchClusters.slices`; the storage errors δ_i by their maximum, added to η),
so the pruning is never tighter than the per-spec bound it stands for.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..packed import grow

__all__ = ["SketchClusters"]

# relative error allowed for the float64 distances ‖a − c‖ (r + 1 ≤ 1025 terms: ~1e-13 worst case)
LIFT_DELTA = 1e-10
_ASSIGN_CELLS = 1 << 20  # (chunk, C) float64 score block of the assignment: 8 MB
TAIL_MIN, TAIL_FRACTION = 4096, 0.05


class SketchClusters:
    """Cluster index of one :class:`~lwengine.scale.sketch.NystromSketch` (local spec indices).

    ``centroids`` (C, r + 1) float64, ``assign`` (n,) int32 (−1: not clustered, e.g. a non-finite
    sketch), ``e`` (n,) float64.  The sorted view (``order``, ``starts``) and the per-cluster maxima are
    built lazily (see :meth:`view`)."""

    def __init__(self, centroids):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float64)
        self.centroid_sq = np.einsum("ij,ij->i", self.centroids, self.centroids)
        self.assign = np.empty(0, dtype=np.int32)
        self.e = np.empty(0)
        self.n = 0
        self._view = None

    @property
    def count(self) -> int:
        return self.centroids.shape[0]

    @classmethod
    def fit(cls, sk, n_clusters, *, seed=0, sample_per_cluster=20, kmeans_iter=10):
        """k-means on a sample of the lifted vectors of ``sk`` (float32, native), then assign all.
        20 sample rows per cluster (40 before): no higher certified cost on the 10⁶-spec benchmark
        market (docs/benchmarks.md) with half the transient sample (41 MB at 10⁶ specs, r = 254)."""
        n = sk.n
        ok = np.flatnonzero(np.isfinite(sk.sq[:n]) & np.isfinite(sk.resid[:n]))
        C = int(max(1, min(n_clusters, len(ok))))
        rng = np.random.default_rng([int(seed), 7])
        take = np.sort(rng.choice(ok, size=min(len(ok), sample_per_cluster * C), replace=False)) if len(ok) \
            else np.empty(0, dtype=np.int64)
        x = sk.lifted(take, np.float32) if len(take) else np.zeros((1, sk.r + 1), np.float32)
        cent, _ = kernels.kmeans(x, min(C, len(x)), max_iter=kmeans_iter, seed=seed)
        del x  # (80 MB at 10⁶ specs) before the assignment pass allocates its blocks
        cl = cls(cent.astype(np.float64))
        cl.extend(sk)
        return cl

    def extend(self, sk):
        """Assign sketch specs ``self.n .. sk.n`` to their nearest centroid (float32 GEMM for the
        choice; ``e`` is then computed exactly in float64 -- any assignment is valid for the bound)."""
        start, stop = self.n, sk.n
        if stop <= start:
            return
        cent32 = self.centroids.astype(np.float32)
        assign = np.empty(stop - start, dtype=np.int32)
        e = np.empty(stop - start)
        chunk = max(256, _ASSIGN_CELLS // self.count)  # bounds the (chunk, C) score block
        for a in range(start, stop, chunk):
            b = min(stop, a + chunk)
            A = sk.lifted(slice(a, b))
            score = self.centroid_sq[None, :] - 2.0 * (A.astype(np.float32) @ cent32.T)
            j = np.argmin(score, axis=1).astype(np.int32)
            A -= self.centroids[j]
            ej = np.sqrt(np.einsum("ij,ij->i", A, A))
            bad = ~np.isfinite(ej)
            j[bad], ej[bad] = -1, np.inf
            assign[a - start: b - start], e[a - start: b - start] = j, ej
        self.assign, self.e = grow(self.assign, stop), grow(self.e, stop)
        self.assign[start:stop], self.e[start:stop] = assign, e
        self.n = stop  # the view (if any) stays: the new specs are its unsorted tail

    def compact(self, keep):
        self.assign = np.ascontiguousarray(self.assign[keep])
        self.e = np.ascontiguousarray(self.e[keep])
        self.n = len(keep)
        self._view = None

    # ------------------------------------------------------------------ query side
    def view(self, sk, group):
        """Sorted members and per-cluster maxima of the slack ingredients for specs ``0 .. v["n"]``
        (cached; the alive counts are refreshed after removals).  Specs added since form an unsorted
        tail that the query scans directly; the view is rebuilt once the tail exceeds
        ``max(TAIL_MIN, TAIL_FRACTION·n)``."""
        n, C = self.n, self.count
        v = self._view
        if v is not None and n - v["n"] > max(TAIL_MIN, TAIL_FRACTION * n):
            v = None
        if v is not None:
            if v["n_dead"] != group.n_dead:
                v["alive"] = self._alive_counts(v, group)
                v["n_dead"] = group.n_dead
            return v
        a = self.assign[:n]
        inc = np.flatnonzero(a >= 0)
        order = inc[np.lexsort((self.e[inc], a[inc]))]
        counts = np.bincount(a[inc], minlength=C)
        starts = np.zeros(C + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        e_sorted = self.e[order]

        def seg_max(v, empty):
            out = np.full(C, empty)
            nz = counts > 0
            if nz.any():
                out[nz] = np.maximum.reduceat(v[order], starts[:-1][nz])
            return out

        shift = sk.self_shift(group, slice(0, n))
        v = self._view = {
            "order": order, "starts": starts, "e": e_sorted, "n_dead": group.n_dead, "n": n,
            "rho": seg_max(self.e[:n], 0.0),
            "self_max": seg_max(np.abs(sk.self_stored[:n]), 0.0),
            "absb_max": seg_max(sk.abs_beta[:n], 0.0),
            "delta_max": seg_max(sk.delta[:n], 0.0),
            "shift_min": -seg_max(-shift, -np.inf),
            "shift_max": seg_max(shift, -np.inf),
        }
        v["alive"] = self._alive_counts(v, group)
        return v

    VIEW_ARRAYS = ("order", "starts", "e", "rho", "self_max", "absb_max", "delta_max", "shift_min", "shift_max")

    def state(self, sk, group):
        """Arrays to persist (the sorted view included, so a reopened index does not re-sort)."""
        v = self.view(sk, group)
        out = {"centroids": self.centroids, "assign": self.assign[: self.n], "e": self.e[: self.n]}
        if v["n"] == self.n:
            out.update({"view." + name: v[name] for name in self.VIEW_ARRAYS})
        return out

    @classmethod
    def restore(cls, arrays, group):
        cl = cls(arrays["centroids"])
        cl.assign, cl.e = arrays["assign"], arrays["e"]
        cl.n = len(cl.assign)
        if all("view." + name in arrays for name in cls.VIEW_ARRAYS):  # else rebuilt on first use
            v = cl._view = {name: arrays["view." + name] for name in cls.VIEW_ARRAYS}
            v["n"], v["n_dead"] = cl.n, group.n_dead
            v["alive"] = cls._alive_counts(v, group)
        return cl

    @staticmethod
    def _alive_counts(v, group):
        alive = np.asarray(group.alive)[v["order"]].astype(np.int64)
        c = np.concatenate([[0], np.cumsum(alive)])
        return c[v["starts"][1:]] - c[v["starts"][:-1]]

    def centroid_dist(self, v, au):
        """``(q, margin)``: ``‖a_u − c‖`` per centroid (float64) and the rounding allowance of
        ``|q − e_i|`` (both norms' float64 errors, with ``‖a_i‖ ≤ ‖c‖ + ρ``)."""
        diff = self.centroids - au[None, :]
        q = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        return q, LIFT_DELTA * (np.linalg.norm(au) + 2.0 * np.sqrt(self.centroid_sq) + q + v["rho"])

    def slices(self, v, q, margin, T, slack):
        """Member positions (into ``v["order"]``) of every cluster whose members may have a lower bound
        ``≤ T``.  ``slack(self_max, absb_max)`` -> the per-cluster maxima of the bound's additive slack
        and of its residual allowance η: a member is kept unless

            (|q − e_i| − η − margin)₊² − slack + shift_min > T.
        """
        s_add, eta = slack(v["self_max"], v["absb_max"])
        eta = eta + v["delta_max"]  # the members' storage error, in distance units like η
        Tc = T + s_add - v["shift_min"]
        with np.errstate(invalid="ignore"):
            rad = np.sqrt(np.maximum(Tc, 0.0)) + eta + margin
        live = (Tc >= 0) & (v["alive"] > 0) & (q - v["rho"] <= rad)
        live |= np.isnan(Tc)  # never prune on a NaN
        rad[np.isnan(rad)] = np.inf
        parts = []
        st, e = v["starts"], v["e"]
        for c in np.flatnonzero(live):
            a, b = int(st[c]), int(st[c + 1])
            lo = a + int(np.searchsorted(e[a:b], q[c] - rad[c], side="left"))
            hi = a + int(np.searchsorted(e[a:b], q[c] + rad[c], side="right"))
            if hi > lo:
                parts.append(np.arange(lo, hi))
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64), int(live.sum())

    def bounds(self, v, q, margin, q_hi, slack, shift_u):
        """Per-cluster ``(count, lower, upper)`` of the members' ``d`` (for the mean/max statistics):
        lower from ``(q − ρ)₊``, upper from the distance ``q_hi`` to ``[s_u, −√r_u]``."""
        s_add, eta = slack(v["self_max"], v["absb_max"])
        eta = eta + v["delta_max"]
        counts = v["alive"]
        lo = np.maximum(q - v["rho"] - eta - margin, 0.0) ** 2 - s_add + v["shift_min"] + shift_u
        hi = (q_hi + v["rho"] + eta + margin) ** 2 + s_add + v["shift_max"] + shift_u
        nz = counts > 0
        return counts[nz], lo[nz], hi[nz]
