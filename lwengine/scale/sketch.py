"""RKHS sketches of packed spec groups: Nyström projection with certified MMD² bounds, and random
Fourier features (approximate, no bound).

Nyström (one per ``(shape, gamma)`` group).  Landmarks ``C`` (m, d) are k-means centroids of a sample of
the group's stored reduced-set rows.  With ``W = k(C, C) = V Λ Vᵀ`` and the eigenpairs kept where
``λ > eig_cutoff·λ_max``, ``B = V_r Λ_r^{-1/2}`` (m, r) spans an orthonormal basis ``e_j = Σ_c B_cj k(c, ·)``
of a subspace of the RKHS.  The sketch of a spec is ``s_i = Bᵀ k(C, Z_i) β_i`` (the coordinates of the
orthogonal projection ``P μ_i``) and its residual ``r_i = ‖μ_i‖² − ‖s_i‖² = ‖(I − P) μ_i‖² ≥ 0``.  Then

    ‖s_u − s_i‖² + (√r_u − √r_i)²  ≤  MMD²(u, i)  ≤  ‖s_u − s_i‖² + (√r_u + √r_i)²

(Pythagoras plus the triangle inequality on the residual parts).  Floating point: see :func:`bounds`
and docs/scale.md for every slack term.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .. import kernels
from ..packed import grow
from .clusters import SketchClusters

__all__ = ["SketchParams", "NystromSketch", "rff_sketch", "EPS32", "EPS64"]

log = logging.getLogger(__name__)

EPS32 = 2.0 ** -23
EPS64 = 2.0 ** -52
# relative error of ‖s‖² and of the residual from the float64 projection (eigensolver + accumulation);
# measured ~1e-13 on ill-conditioned Grams (tests), so this keeps three orders of magnitude of margin
BASIS_DELTA = 1e-10
_MAX_A_BYTES = 1 << 28  # bound on the (m, chunk) float64 block of k(C, Z) β
SKETCH_DTYPES = ("auto", "int8", "int16", "float16", "float32")
_F16_TOP = 15  # float16 vectors are scaled so that their largest |coordinate| is in [2^14, 2^15)
_GEMV_ROWS = 1 << 14  # rows of an integer / float16 sketch converted at a time


@dataclass(frozen=True)
class SketchParams:
    """``m`` landmarks (capped by the rows available), k-means on ``sample_rows`` rows, eigenvalues
    kept above ``eig_cutoff·λ_max``; the group goes to brute force when the median residual share
    ``r_i / ‖μ_i‖²`` of ``probe`` specs exceeds ``brute_share``.

    Adaptive size (``grow``): while the probe says "brute" but the median residual share is within
    ``grow_from`` times ``brute_share`` (a near miss; far misses such as heavily overlapping specs
    stay brute without the cost of trying), m doubles (up to ``m_max``) as long as the median
    residual share falls by at least ``grow_gain`` (relative), the rate of fall can reach
    ``brute_share`` within the reachable m, and the sketch vectors
    (n·m of ``dtype``) stay within ``memory_budget`` times the group's stored Z; the decisions are kept
    in ``NystromSketch.sizing`` (and ``last_stats["regimes"]``).  A group that passes at ``m`` is built
    exactly as without growth.

    ``dtype``: how the sketch vectors are stored -- ``"int8"`` / ``"int16"`` (fixed point scaled per
    vector: a quarter / half the bytes of float32), ``"float16"``, ``"float32"``, or ``"auto"``
    (default): int8 where the probe's median int8 storage error is at most ``int8_max_error`` times
    the spec's Nyström residual norm √r (the residual then dominates the bounds' looseness and int8
    costs no pruning), else int16.  Each vector's exact storage error is kept and the bounds add it
    (docs/scale.md)."""

    m: int = 256
    sample_rows: int = 20000
    kmeans_iter: int = 10
    eig_cutoff: float = 1e-6
    probe: int = 2000
    brute_share: float = 0.25
    seed: int = 0
    clusters: int | None = None
    cluster_min_specs: int = 20000
    grow: bool = True
    m_max: int = 4096
    memory_budget: float = 1.5
    grow_gain: float = 0.2
    grow_from: float = 2.0
    dtype: str = "auto"
    int8_max_error: float = 0.1

    def __post_init__(self):
        if int(self.m) < 1:
            raise ValueError(f"m must be >= 1, got {self.m}")
        if not 0 < float(self.eig_cutoff) < 1:
            raise ValueError(f"eig_cutoff must be in (0, 1), got {self.eig_cutoff}")
        if not 0 < float(self.brute_share) <= 1:
            raise ValueError(f"brute_share must be in (0, 1], got {self.brute_share}")
        if int(self.probe) < 1 or int(self.sample_rows) < 1 or int(self.kmeans_iter) < 1:
            raise ValueError("probe, sample_rows and kmeans_iter must be >= 1")
        if self.clusters is not None and int(self.clusters) < 0:
            raise ValueError(f"clusters must be None (auto), 0 (off) or > 0, got {self.clusters}")
        if int(self.cluster_min_specs) < 1:
            raise ValueError(f"cluster_min_specs must be >= 1, got {self.cluster_min_specs}")
        if int(self.m_max) < 1:
            raise ValueError(f"m_max must be >= 1, got {self.m_max}")
        if not float(self.memory_budget) > 0:
            raise ValueError(f"memory_budget must be > 0, got {self.memory_budget}")
        if not 0 <= float(self.grow_gain) < 1:
            raise ValueError(f"grow_gain must be in [0, 1), got {self.grow_gain}")
        if not float(self.grow_from) >= 1:
            raise ValueError(f"grow_from must be >= 1, got {self.grow_from}")
        if self.dtype not in SKETCH_DTYPES:
            raise ValueError(f"dtype must be one of {SKETCH_DTYPES}, got {self.dtype!r}")
        if not float(self.int8_max_error) >= 0:
            raise ValueError(f"int8_max_error must be >= 0, got {self.int8_max_error}")

    def n_clusters(self, n: int) -> int:
        """Clusters of the lifted sketches for ``n`` projected specs (0: scan them all)."""
        if self.clusters is not None:
            return int(min(self.clusters, n))
        return int(round(2 * np.sqrt(n))) if n >= self.cluster_min_specs else 0


def _rows_f64(z, a, b):
    return np.ascontiguousarray(z[a:b], dtype=np.float64)


def _chunks(n, max_specs):
    i = 0
    while i < n:
        j = min(n, i + max_specs)
        yield i, j
        i = j


class NystromSketch:
    """The sketch of one group (see the module docstring).  Arrays aligned with the group's local
    indices: ``s`` (n, r) of ``params.dtype`` and ``scale`` (float64; the stored vector is
    ``s̃_i = scale_i · s[i]``, see :func:`stored_vectors`), ``delta`` = ‖s̃_i − s_i‖ (the storage error,
    rounded up; NaN for a non-finite projection), ``sq`` = ‖s̃_i‖²
    (float64), ``resid`` (float64, ≥ 0), ``self_stored`` = ‖μ_i‖² of the *stored* (possibly
    float32-rounded) values, ``abs_beta`` = Σ|β|, plus the group-wide ``R2`` = max ‖z‖²."""

    def __init__(self, gamma, landmarks, basis, params: SketchParams, *, device: str = "cpu"):
        self.gamma = float(gamma)
        self.device = device  # where its kernel calls run (the group's device)
        self.landmarks = np.ascontiguousarray(landmarks, dtype=np.float64)
        self.basis = np.ascontiguousarray(basis, dtype=np.float64)
        self.params = params
        self.r = self.basis.shape[1]
        self.n = 0
        # "auto": int16 until the regime probe has measured what int8 would cost (_probe)
        self.s = np.empty((0, self.r), dtype="int16" if params.dtype == "auto" else params.dtype)
        self.int8_error_ratio = None  # the probe's median δ_int8 / √r (measured for the "auto" dtype)
        self.scale = np.empty(0)
        self.delta = np.empty(0)
        self.sq = np.empty(0)
        self.resid = np.empty(0)
        self.self_stored = np.empty(0)
        self.abs_beta = np.empty(0)
        self.R2 = 0.0
        self.projected = False
        self.resid_share_median = float("nan")
        self.regime = "sketch"
        self.clusters = None  # lwengine.scale.clusters.SketchClusters, once n >= params.cluster_min_specs
        self.sizing = []  # the adaptive-size decisions of fit(): one dict per size tried

    # ------------------------------------------------------------------ build
    @classmethod
    def fit(cls, group, params: SketchParams):
        """Landmarks and basis from a sample of ``group``'s rows; then a probe decides the regime
        (and, with ``params.grow``, whether a larger sketch would avoid the brute-force regime)."""
        rng = np.random.default_rng(params.seed)
        rows = group.rows
        take = rng.choice(rows, size=min(rows, params.sample_rows), replace=False) if rows else np.empty(0, int)
        x = np.asarray(group.z[np.sort(take)], dtype=np.float32)
        x = x[np.isfinite(x).all(axis=1)] if len(x) else x
        if len(x) == 0:
            x = np.zeros((1, group.dim), dtype=np.float32)
        probe_state = rng.bit_generator.state  # every candidate size probes the same specs
        m = int(min(params.m, len(x)))
        sk = cls._build(group, x, m, params, rng)
        sk.sizing = [{"m": m, "r": sk.r, "resid_share_median": sk.resid_share_median, "decision": sk.regime}]
        if not params.grow:
            return sk
        budget = float(params.memory_budget) * group.z.itemsize * group.rows * group.dim
        while sk.regime == "brute":
            if sk.resid_share_median > params.grow_from * params.brute_share:
                sk.sizing.append({"m": m, "decision": "stop: share over grow_from x brute_share"})
                break
            m_next = int(min(2 * m, len(x), params.m_max))
            if m_next <= m:
                sk.sizing.append({"m": m_next, "decision": "stop: m_max or sample rows reached"})
                break
            vec_bytes = sk.s.itemsize * group.n * m_next
            if vec_bytes > budget:
                sk.sizing.append({"m": m_next, "decision": f"stop: sketch {vec_bytes / 2**20:.0f} MiB "
                                  f"over the memory budget {budget / 2**20:.0f} MiB"})
                break
            rng.bit_generator.state = probe_state
            cand = cls._build(group, x, m_next, params, rng)
            gain = 1.0 - cand.resid_share_median / max(sk.resid_share_median, np.finfo(float).tiny)
            ok = gain >= params.grow_gain
            sk.sizing.append({"m": m_next, "r": cand.r, "resid_share_median": cand.resid_share_median,
                              "decision": cand.regime if ok else f"stop: share fell by {gain:.3f} < grow_gain"})
            if not ok:
                break
            if cand.regime == "brute":  # at this rate of fall, can the share reach brute_share in reach?
                m_cap = min(params.m_max, len(x), budget / (cand.s.itemsize * max(1, group.n)))
                rate = cand.resid_share_median / sk.resid_share_median
                steps = np.ceil(np.log(params.brute_share / cand.resid_share_median) / np.log(rate)) \
                    if 0 < rate < 1 and cand.resid_share_median > 0 else np.inf
                if not m_next * 2.0 ** steps <= m_cap:
                    sk.sizing.append({"m": m_next, "decision": f"stop: at this rate brute_share needs m ~ "
                                      f"{m_next * 2.0 ** steps:.0f} > {m_cap:.0f} reachable"})
                    break
            cand.sizing, sk, m = sk.sizing, cand, m_next
        return sk

    @classmethod
    def _build(cls, group, x, m, params, rng):
        # duplicates are fine (the eigen cutoff drops the null space); float32 values so that the
        # float32 store path sees exactly the same landmarks
        C, _ = kernels.kmeans(x, m, max_iter=params.kmeans_iter, seed=params.seed)
        C = C.astype(np.float64)
        W = _point_gram(C, group.gamma)
        lam, V = np.linalg.eigh(W)
        keep = lam > params.eig_cutoff * max(lam[-1], 0.0)
        if not keep.any():
            keep[-1] = True
        basis = V[:, keep] / np.sqrt(lam[keep])
        sk = cls(group.gamma, C, basis, params, device=getattr(group, "device", "cpu"))
        sk._probe(group, rng)
        return sk

    def _probe(self, group, rng):
        alive = np.flatnonzero(group.alive[: group.n] & np.isfinite(group.self_ip[: group.n]))
        if len(alive) == 0:
            self.resid_share_median = 0.0
            return
        pick = np.sort(rng.choice(alive, size=min(len(alive), self.params.probe), replace=False))
        s64, resid, self_st, _ = self.project_subset(group, pick)
        share = resid / np.maximum(self_st, np.finfo(float).tiny)
        self.resid_share_median = float(np.median(share))
        self.regime = "brute" if self.resid_share_median > self.params.brute_share else "sketch"
        if self.params.dtype == "auto":
            delta8 = stored_vectors(s64, np.int8)[2]
            ratio = delta8 / np.sqrt(np.maximum(resid, np.finfo(float).tiny))
            ratio = ratio[np.isfinite(ratio)]
            self.int8_error_ratio = float(np.median(ratio)) if len(ratio) else float("inf")
            small = self.int8_error_ratio <= self.params.int8_max_error
            self.s = np.empty((0, self.r), dtype=np.int8 if small else np.int16)

    def _kernel_block(self, z, beta, offsets):
        """``k(C, Z_i) β_i`` for a packed block: (n, m) float64, one native call (the block's specs as
        queries against the landmarks as m single-point specs of weight 1; float64 on the stored values)."""
        m = self.landmarks.shape[0]
        return kernels.cross_inner(z, beta, offsets, self.landmarks, np.ones(m),
                                   np.arange(m + 1, dtype=np.int64), self.gamma, device=self.device)

    def project_packed(self, z, beta, offsets, self_stored=None):
        """``(s (n, r) float64, resid, self_stored, abs_beta)`` for a packed float64 store."""
        z = np.ascontiguousarray(z, dtype=np.float64)
        beta = np.asarray(beta, dtype=np.float64)
        A = self._kernel_block(z, beta, offsets)
        s64 = A @ self.basis
        if self_stored is None:
            self_stored = kernels.self_inner(z, beta, offsets, self.gamma, device=self.device)
        resid = self_stored - np.einsum("ij,ij->i", s64, s64)
        tol = BASIS_DELTA * np.abs(self_stored)
        bad = resid < -tol - 1e-300
        if bad.any():  # more negative than the analysis allows: report, never hide
            log.warning("Nystrom residual below its error bound for %d spec(s) (min %.3g)",
                        int(bad.sum()), float(resid.min()))
        resid = np.maximum(resid, 0.0)
        abs_beta = np.add.reduceat(np.abs(beta), offsets[:-1]) if len(beta) else np.zeros(len(offsets) - 1)
        abs_beta[np.diff(offsets) == 0] = 0.0
        return s64, resid, self_stored, abs_beta

    def project_subset(self, group, local):
        z, beta, offs = gather(group, local)
        return self.project_packed(z, beta, offs)

    def extend(self, group, progress=None):
        """Project group specs ``self.n .. group.n`` (insert hook; the whole group on first use),
        by chunks written straight into the (grown once) arrays; then cluster or assign them."""
        start, stop = self.n, group.n
        if stop <= start:
            return
        per = max(1, _MAX_A_BYTES // (8 * max(1, self.landmarks.shape[0])) // max(1, int(
            np.ceil(group.rows / max(1, group.n)))))
        chunks = list(_chunks(stop - start, per))
        it = chunks
        if progress:
            from tqdm import tqdm
            it = tqdm(chunks, desc=f"sketching gamma={self.gamma:g}", unit="chunk")
        for name in self.SPEC_ARRAYS:
            setattr(self, name, grow(getattr(self, name), stop))
        for a, b in it:
            local = np.arange(start + a, start + b)
            s64, resid, self_st, absb = self.project_subset(group, local)
            sl = slice(start + a, start + b)
            self.s[sl], self.scale[sl], self.delta[sl], self.sq[sl] = stored_vectors(s64, self.s.dtype)
            self.resid[sl], self.self_stored[sl], self.abs_beta[sl] = resid, self_st, absb
            z = np.asarray(group.z[int(group.offsets[start + a]): int(group.offsets[start + b])], dtype=np.float64)
            r2 = np.einsum("ij,ij->i", z, z)
            r2 = r2[np.isfinite(r2)]
            if len(r2):
                self.R2 = max(self.R2, float(r2.max()))
        self.n = stop
        self.projected = True
        if self.clusters is not None:
            self.clusters.extend(self)
        else:
            C = self.params.n_clusters(self.n)
            if C > 0:
                self.clusters = SketchClusters.fit(self, C, seed=self.params.seed)

    # per-spec arrays (aligned with the group's local indices), saved with the index
    SPEC_ARRAYS = ("s", "scale", "delta", "sq", "resid", "self_stored", "abs_beta")

    def compact(self, keep):
        if self.projected:
            for name in self.SPEC_ARRAYS:
                setattr(self, name, np.ascontiguousarray(getattr(self, name)[keep]))
            self.n = len(keep)
            if self.clusters is not None:
                self.clusters.compact(keep)

    # ------------------------------------------------------------------ query side
    def user(self, uz_store, ubeta):
        """``(s_u float32, sq_u, r_u, self_u, abs_beta_u, R2_u)`` of a user spec in this group's gamma,
        ``uz_store`` already rounded to the store's dtype."""
        z = np.ascontiguousarray(uz_store, dtype=np.float64)
        offs = np.array([0, len(ubeta)], dtype=np.int64)
        s64, resid, self_st, absb = self.project_packed(z, ubeta, offs)
        s = s64[0].astype(np.float32)
        s_back = s.astype(np.float64)
        return s, float(s_back @ s_back), float(resid[0]), float(self_st[0]), float(absb[0]), \
            float(np.einsum("ij,ij->i", z, z).max())

    def lifted(self, rows, dtype=np.float64):
        """``[s̃_i, √r_i]`` of the specs ``rows`` (a slice or local indices), written straight into a
        ``dtype`` array (float64: exact): the vectors whose squared distance to the user's
        ``[s̃_u, √r_u]`` is the slack-free lower bound."""
        rows = np.arange(self.n)[rows] if isinstance(rows, slice) else np.asarray(rows)
        a = np.empty((len(rows), self.r + 1), dtype=dtype)
        for c in range(0, len(rows), _GEMV_ROWS):  # by blocks: no gathered copy of every row
            sel = rows[c:c + _GEMV_ROWS]
            np.multiply(self.s[sel], self.scale[sel][:, None], out=a[c:c + _GEMV_ROWS, :-1], casting="same_kind")
        a[:, -1] = np.sqrt(self.resid[rows])
        a[~np.isfinite(self.sq[rows])] = np.nan  # a non-finite projection stays non-finite
        return a

    @staticmethod
    def lifted_user(user):
        """``[s̃_u, √r_u]`` (float64) of a projected user (:meth:`user`)."""
        return np.append(user[0].astype(np.float64), np.sqrt(user[2]))

    def self_shift(self, group, idx):
        """``self_ip − self_stored`` of the specs ``idx``: a float32 store's self terms were computed
        from the original values while the sketch (and the ranking kernel's cross term) sees the
        stored ones -- an exact per-spec shift of every bound."""
        return np.asarray(group.self_ip)[idx] - self.self_stored[idx]

    def sketch_dist(self, su, squ, idx=None):
        """``‖s̃_u − s̃_i‖²`` (float32 GEMM for the cross term, float64 norms) for ``idx`` or all."""
        rows = slice(None, self.n) if idx is None else idx
        S = self.s[rows]
        if S.dtype == np.float32:
            dot = S @ su
        else:  # integer / float16 storage: converted (exactly) to float32 by blocks of rows
            dot = np.empty(S.shape[0], dtype=np.float32)
            for a in range(0, S.shape[0], _GEMV_ROWS):
                dot[a:a + _GEMV_ROWS] = S[a:a + _GEMV_ROWS].astype(np.float32) @ su
        return self.sq[rows] + squ - 2.0 * (dot.astype(np.float64) * self.scale[rows])

    def bounds(self, user, *, store_eps, user_K, idx=None):
        """Certified ``(lower, upper)`` of the *computed* MMD² of the stored values with the user
        (self terms in this group's gamma), for ``idx`` or every projected spec.

        Slack terms (all relative to ``T = ‖μ_u‖² + ‖μ_i‖²``):
        * float32 sketch arithmetic: the user's float32 rounding (2·2⁻²⁴) and the float32 dot product
          (r·2⁻²⁴·‖s_u‖‖s_i‖) -> ``τ_s = (r + 8)·2⁻²³``, a 2x margin;
        * the stored spec vectors: their exact rounding error ``δ_i = ‖s̃_i − s_i‖`` moves the
          lifted distance by at most δ_i (triangle inequality), so the bounds are
          ``(√L − δ_i)₊² − slack`` and ``(√(U + slack) + δ_i)² + slack`` (the first is valid because
          ``(√x − δ)₊²`` grows with slope ≤ 1);
        * projection (eigensolver, accumulation): ``BASIS_DELTA`` on ‖s‖² and on the residuals, which
          moves √r by at most √(BASIS_DELTA·‖μ‖²);
        * the exact kernel that ranks (float32 store: docs/kernels.md bound
          ``ε·S·(4 + Kq + 4(d+3)γR²)`` on the cross term, doubled by the −2; float64: the same form
          with 2⁻⁵⁰) -- ``store_eps`` selects it.
        """
        su, squ, ru, selfu, absbu, R2u = user
        idx_all = slice(None, self.n) if idx is None else idx
        D = self.sketch_dist(su, squ, idx)
        ri = self.resid[idx_all]
        slack, eta = self.slack_terms(user, store_eps, user_K, self.self_stored[idx_all], self.abs_beta[idx_all])
        delta = self.delta[idx_all]
        sru, sri = np.sqrt(ru), np.sqrt(ri)
        lo_res = np.maximum(np.abs(sru - sri) - eta, 0.0) ** 2
        hi_res = (sru + sri + eta) ** 2
        lo = np.maximum(np.sqrt(np.maximum(D + lo_res, 0.0)) - delta, 0.0) ** 2
        hi = (np.sqrt(np.maximum(D + hi_res + slack, 0.0)) + delta) ** 2
        return lo - slack, hi + slack

    def slack_terms(self, user, store_eps, user_K, self_i, abs_beta_i):
        """``(slack, η)`` of :meth:`bounds` for specs with ``‖μ_i‖² = self_i`` and ``Σ|β_i| = abs_beta_i``
        (both increasing in those, so per-cluster maxima give valid cluster-wide terms)."""
        _, _, _, selfu, absbu, R2u = user
        T = selfu + self_i
        tau = (self.r + 8) * EPS32 + 2 * BASIS_DELTA
        eta = np.sqrt(BASIS_DELTA * selfu) + np.sqrt(BASIS_DELTA * np.abs(self_i))
        d = self.landmarks.shape[1]
        R2 = max(self.R2, R2u)
        ker = 2.0 * store_eps * absbu * abs_beta_i * (4 + user_K + 4 * (d + 3) * self.gamma * R2)
        return tau * T + ker + 16 * EPS64 * T, eta


def stored_vectors(s64, dtype):
    """``(stored, scale, delta, sq)`` of float64 sketch vectors ``s64`` (n, r) kept as ``dtype``: the
    stored vector is ``scale_i · stored[i]`` -- int8 / int16: ``scale_i = max|s64_i| / 127`` or
    ``/ 32767`` (fixed point per vector); float16: the power of two that puts the largest
    |coordinate| in [2^14, 2^15) (no overflow, small vectors keep their digits); float32: 1 --,
    ``delta_i`` its distance to ``s64_i`` (float64, rounded up) and ``sq_i`` its squared norm (NaN
    where ``s64_i`` is not finite)."""
    dtype = np.dtype(dtype)
    amax = np.max(np.abs(s64), axis=1) if s64.shape[1] else np.zeros(len(s64))
    finite = np.isfinite(amax)
    if dtype.kind == "i":  # fixed point: the largest |coordinate| is stored as ±(2^(bits-1) − 1)
        top = float(np.iinfo(dtype).max)
        scale = np.where(finite & (amax > 0), amax, 1.0) / top
        stored = np.clip(np.rint(np.where(finite[:, None], s64, 0.0) / scale[:, None]), -top, top).astype(dtype)
    elif dtype == np.float16:
        scale = np.ldexp(1.0, np.frexp(np.where(finite, amax, 0.0))[1] - _F16_TOP)
        stored = (s64 / scale[:, None]).astype(np.float16)
    else:
        scale = np.ones(len(s64))
        stored = s64.astype(dtype)
    back = stored.astype(np.float64) * scale[:, None]
    err = back - s64
    sq = np.einsum("ij,ij->i", back, back)
    # float64 rounding of ‖err‖ ((r + 2)·2⁻⁵³ relative: 1e-12 covers r ≤ 4000) and of back (2⁻⁵³|back|)
    delta = np.sqrt(np.einsum("ij,ij->i", err, err)) * (1.0 + 1e-12) + 2.0 ** -50 * np.sqrt(sq)
    sq[~finite], delta[~finite] = np.nan, np.nan
    return stored, scale, delta, sq


def _point_gram(C, gamma):
    sq = np.einsum("ij,ij->i", C, C)
    D = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (C @ C.T), 0.0)
    return np.exp(-gamma * D)


def gather(group, local):
    """The packed float64 sub-store ``(z, beta, offsets)`` of the group's specs ``local``."""
    return group.gather(local, np.float64)


def gather_store(group, local):
    """Like :func:`gather` but keeps the store's dtype (what the ranking kernel sees)."""
    return group.gather(local)


# ------------------------------------------------------------------------------ random features
def rff_sketch(z, beta, offsets, gamma, D=256, *, seed=0, chunk_rows=1 << 16):
    """Orthogonal random Fourier features: ``s_i = Σ_b β_b φ(z_b)`` with
    ``φ(x) = √(2/D) cos(Wx + b)``, W rows orthogonal blocks scaled by χ_d norms times √(2γ), so that
    ``E⟨φ(x), φ(y)⟩ = exp(−γ‖x − y‖²)`` and ``‖s_u − s_i‖² ≈ MMD²``.  Data-independent, no bound.
    Returns float32 (n, D)."""
    z = np.asarray(z)
    d = z.shape[1]
    rng = np.random.default_rng(seed)
    blocks = []
    while sum(b.shape[0] for b in blocks) < D:
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        norms = np.sqrt(rng.chisquare(d, size=d))
        blocks.append(q.T * norms[:, None])
    W = np.concatenate(blocks)[:D] * np.sqrt(2.0 * gamma)
    phase = rng.uniform(0, 2 * np.pi, size=D)
    n = len(offsets) - 1
    out = np.zeros((n, D), dtype=np.float64)
    seg = np.repeat(np.arange(n), np.diff(offsets))
    for a in range(0, z.shape[0], chunk_rows):
        b = min(z.shape[0], a + chunk_rows)
        F = np.cos(np.asarray(z[a:b], dtype=np.float64) @ W.T + phase) * np.asarray(beta[a:b])[:, None]
        segment_add(out, seg[a:b], F)
    return (out * np.sqrt(2.0 / D)).astype(np.float32), (W, phase)


def segment_add(out, seg, F):
    if len(seg) == 0:
        return
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    out[seg[starts]] += np.add.reduceat(F, starts, axis=0)
