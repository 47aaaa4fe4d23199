"""RKME table specifications: the :class:`RKMESpec` class, spec generation and batch fitting.

A spec is ``(z, beta, gamma, num_points)``: ``z`` (K, *trailing) is the reduced set, ``beta`` (K,)
its weights, ``gamma`` the Gaussian kernel parameter ``k(a, b) = exp(-gamma |a - b|^2)`` and
``num_points`` the number of rows of the data it summarises.  The kernel mean embedding is
``mu = sum_i beta_i k(z_i, .)``.

:meth:`RKMESpec.fit` reproduces the reference package's ``generate_rkme_table_spec`` (semantics §1)
step by step; ``update="mmd-descent"`` is a documented better variant (exact MMD^2 gradient with a
step size that never increases MMD^2), never the default.  All heavy math goes through
:mod:`lwengine.kernels` (native, with float64 numpy twins).  See docs/spec.md.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np

from .. import kernels, limits as _limits, safe_io, validate
from . import registry

__all__ = ["RKMESpec", "FitInfo", "fit_many", "SPEC_TYPE"]

log = logging.getLogger(__name__)

SPEC_TYPE = "RKMETableSpecification"
_LEGACY_TYPES = ("RKMEStatSpecification",)
_SIZE_CAP = 1_310_720  # reference: K * d must not exceed this (semantics §1.2)
_SIGNED_RIDGE = 1e-5  # reference: beta = (G + 1e-5 I)^-1 C when nonnegative_beta=False
_UPDATES = ("reference", "mmd-descent")
FUSED_FIT = True  # the CPU reference fit runs its loop in one native call (FitKernels.fit_reference)


# ----------------------------------------------------------------------------- input helpers
def _to_numpy(a, name: str) -> np.ndarray:
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch tensor (duck-typed; torch is optional)
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a rectangular array of numbers: {exc}") from exc
    if arr.dtype.kind not in "iuf":  # integers or floats (not bool, complex, object, strings)
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _as_gamma(gamma, name: str = "gamma") -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(gamma).__name__}")
    g = float(gamma)
    if not math.isfinite(g) or g <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {gamma!r}")
    return g


def _as_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _single(K: int) -> np.ndarray:
    return np.array([0, K], dtype=np.int64)


def _point_gram(z2d: np.ndarray, gamma: float) -> np.ndarray:
    """``G_ij = k(z_i, z_j)`` (K x K): the Gram matrix of K one-point specs of weight 1
    (symmetric bit for bit: identical points give identical rows)."""
    return kernels.point_gram(z2d, gamma)


# ----------------------------------------------------------------------------- the spec
@dataclass
class FitInfo:
    """What :meth:`RKMESpec.fit` did.

    ``K`` the reduced-set size used (after the size cap and the ``K >= n`` rule),
    ``kmeans_iterations`` (None when ``init_z`` was given or ``reduce=False``),
    ``objective`` the MMD^2 to the data minus its constant data term (``beta'G beta - 2 beta'C``)
    after every beta update, ``step_sizes`` the step accepted at every Z step, and, with
    ``record_trajectory=True``, ``z_traj`` (steps+1, K, d) and ``beta_traj`` (steps+1, K).
    """

    K: int
    update: str
    kmeans_iterations: int | None = None
    objective: list = field(default_factory=list)
    step_sizes: list = field(default_factory=list)
    z_traj: np.ndarray | None = None
    beta_traj: np.ndarray | None = None


class RKMESpec:
    """A reduced kernel mean embedding: ``mu = sum_i beta_i exp(-gamma |z_i - .|^2)``.

    Parameters
    ----------
    z : array-like (K, *trailing), K >= 1 — reduced set (stored float64, trailing shape kept).
    beta : array-like (K,) — weights (stored float64).
    gamma : float > 0 — kernel parameter.
    num_points : int >= 0 or None — rows of the summarised data (None: K).

    Inputs may be numpy arrays, nested lists or torch tensors.  Non-finite values in ``z`` and
    ``beta`` are accepted (files in the field contain them; search drops such specs).
    """

    __slots__ = ("z", "beta", "gamma", "num_points", "fit_info", "_z2d")

    spec_type = SPEC_TYPE  # the file's ``type`` (subclasses override it)
    size_cap = _SIZE_CAP  # the fit's cap on K * d (None: no cap; text specs have none)

    def __init__(self, z, beta, gamma=0.1, num_points=None):
        z = _to_numpy(z, "z")
        if z.ndim < 1 or z.shape[0] < 1:
            raise ValueError(f"z must have shape (K, ...) with K >= 1, got {z.shape}")
        z = np.ascontiguousarray(z, dtype=np.float64)
        if z.size == 0:
            raise ValueError(f"z must have at least one value per row, got shape {z.shape}")
        K = z.shape[0]
        beta = _to_numpy(beta, "beta")
        if beta.ndim != 1 or beta.shape[0] != K:
            raise ValueError(f"beta must have shape ({K},) to match z's {K} rows, got {beta.shape}")
        self.z = z
        self.beta = np.ascontiguousarray(beta, dtype=np.float64)
        self.gamma = _as_gamma(gamma)
        self.num_points = K if num_points is None else _as_int(num_points, "num_points", 0)
        _limits.check_spec_values(self.z, self.num_points)  # int64 num_points, |z| that cannot overflow
        self.fit_info: FitInfo | None = None
        self._z2d = z.reshape(K, -1)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        """Every slot but ``_z2d`` (a view of ``z``: pickled, it would be a second copy of z)."""
        return {name: getattr(self, name) for cls in type(self).__mro__ for name in getattr(cls, "__slots__", ())
                if name != "_z2d" and hasattr(self, name)}

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)
        self._z2d = self.z.reshape(self.z.shape[0], -1)

    # ------------------------------------------------------------------ shape
    @property
    def K(self) -> int:
        """Number of reduced-set points."""
        return self.z.shape[0]

    @property
    def z_shape(self) -> tuple:
        """Trailing shape of one reduced-set point (the original data's row shape)."""
        return tuple(self.z.shape[1:])

    @property
    def dim(self) -> int:
        """Flattened dimension d of one point."""
        return self._z2d.shape[1]

    def __repr__(self) -> str:
        return (f"RKMESpec(K={self.K}, z_shape={self.z_shape}, gamma={self.gamma!r}, "
                f"num_points={self.num_points})")

    # ------------------------------------------------------------------ kernel products
    def inner_prod(self, other: "RKMESpec") -> float:
        """``<mu_self, mu_other> = sum_ij beta_i beta'_j exp(-gamma_self |z_i - z'_j|^2)`` (self's gamma)."""
        if not isinstance(other, RKMESpec):
            raise TypeError(f"other must be an RKMESpec, got {type(other).__name__}")
        if other.dim != self.dim:
            raise ValueError(f"other has point dimension {other.dim} but this spec has {self.dim} "
                             f"(z shapes {other.z_shape} and {self.z_shape})")
        out = kernels.cross_inner(self._z2d, self.beta, _single(self.K),
                                  other._z2d, other.beta, _single(other.K), self.gamma)
        return float(out[0, 0])

    def dist(self, other: "RKMESpec") -> float:
        """Squared MMD ``<p,p>_p - 2 <p,q>_p + <q,q>_q`` (the reference's, asymmetric when gammas differ)."""
        return self.inner_prod(self) - 2.0 * self.inner_prod(other) + other.inner_prod(other)

    def objective(self, X) -> float:
        """``beta'G beta - 2 beta'C`` against data X: the MMD^2 to X minus its constant data term.

        X is prepared as :meth:`fit` sees it (float32 copy, non-finite cells cleaned).
        """
        x = _data_matrix(X, self.z_shape, "X")
        G = _point_gram(self._z2d, self.gamma)
        C = kernels.kernel_mean(self._z2d, x, self.gamma)
        return float(self.beta @ G @ self.beta - 2.0 * self.beta @ C)

    def mmd2(self, X) -> float:
        """Squared MMD between the embedding and the empirical distribution of X (O(n^2 d))."""
        x = _data_matrix(X, self.z_shape, "X")
        data_term = float(kernels.kernel_mean(x, x, self.gamma).mean())
        return self.objective(x) + data_term

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict:
        return {"z": self.z.tolist(), "beta": self.beta.tolist(), "gamma": float(self.gamma),
                "num_points": int(self.num_points), "type": self.spec_type}

    def dumps(self) -> str:
        """One-line JSON in the learnware format (semantics §3)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def save(self, path) -> None:
        """Write the spec as one-line JSON (floats as shortest round-trip repr: loads back bit-exact)."""
        with open(os.fspath(path), "w", encoding="utf-8") as f:
            f.write(self.dumps())

    @classmethod
    def from_dict(cls, d, source: str = "spec") -> "RKMESpec":
        """Build from a decoded spec dict (current or older format); errors name ``source``."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: a spec must be a JSON object, got {type(d).__name__}")
        names = registry.entry_of_class(cls).names()
        if "type" in d and d["type"] not in names:
            raise ValueError(f"{source}: type must be {cls.spec_type!r}, got {d['type']!r}")
        missing = [k for k in ("z", "beta", "gamma", "num_points") if k not in d]
        if missing:
            raise ValueError(f"{source}: missing key(s) {', '.join(missing)}")
        try:
            z = _json_array(d["z"], "z")
            beta = _json_array(d["beta"], "beta")
            return cls.from_parts(z, beta, d["gamma"], d["num_points"], **cls.extra_from_dict(d, source))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc

    # ------------------------------------------------------------------ extra fields (subclasses)
    def extra(self) -> dict:
        """JSON-safe fields beyond (z, beta, gamma, num_points) that storage keeps (table: none)."""
        return {}

    @classmethod
    def extra_from_dict(cls, d: dict, source: str = "spec") -> dict:
        """The :meth:`extra` fields read from a spec dict (table: none)."""
        return {}

    @classmethod
    def from_parts(cls, z, beta, gamma, num_points=None, **extra) -> "RKMESpec":
        """A spec of this class from its arrays and its :meth:`extra` fields."""
        if extra:
            raise TypeError(f"{cls.__name__} takes no extra fields, got {', '.join(extra)}")
        return cls(z, beta, gamma, num_points)

    @classmethod
    def loads(cls, text: str, source: str = "spec") -> "RKMESpec":
        return cls.from_dict(safe_io.json_loads(text, source), source)  # bad / too deep JSON: ValueError

    @classmethod
    def load(cls, path) -> "RKMESpec":
        """Read a spec file (also the older format without ``type``; extra keys are ignored).

        NaN / Infinity tokens load as non-finite values; every other problem is a ValueError
        naming the file.
        """
        path = os.fspath(path)
        return cls.loads(safe_io.read_regular(path, what="spec file"), path)  # bytes: UTF-8 errors name the file

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, X, K: int = 100, gamma: float = 0.1, step_size: float = 0.1, steps: int = 3,
            nonnegative_beta: bool = True, reduce: bool = True, seed=None, init_z=None, *,
            update: str = "reference", init: str = "random", n_init: int = 1,
            record_trajectory: bool = False, max_kmeans_iter: int = 100,
            device: str = "auto") -> "RKMESpec":
        """Fit a spec to data X (n, *trailing) — the reference's ``generate_rkme_table_spec``.

        Follows semantics §1: float32 copy of X, K capped to ``max(20, 1310720 // d)`` when
        ``K d > 1310720`` and to ``max(1, 2n // 3)`` when ``K >= n``, non-finite cells replaced by
        the column mean (a column with no finite value is a ValueError), ``reduce=False`` keeps the
        rows with ``beta = 1/n``; else k-means init (``init="random"``: K rows with replacement,
        the reference's rule, or ``"k-means++"``; seeded by ``seed``), one beta update, then
        ``steps`` times (Z step, beta update).  ``init_z`` (K0, *trailing) replaces the k-means
        init and fixes K = K0.  ``n_init > 1`` runs that many seeded k-means inits and keeps the
        one with the lowest MMD^2 after its first beta update (the reference draws one init; a
        single draw's MMD^2 varies by about +-15% from seed to seed, see docs/spec.md).

        ``update="reference"`` is the reference's Z step (its gradient factor, fixed
        ``step_size``); ``update="mmd-descent"`` uses the exact MMD^2 gradient with a backtracking
        step (starting at ``step_size``, halved until MMD^2 does not increase, doubled after a
        success), so every step and every beta update is monotone in MMD^2.

        The result's ``fit_info`` (:class:`FitInfo`) records K, the k-means iterations, the
        objective after each beta update and (``record_trajectory=True``) the z / beta trajectory.

        ``device``: where the data passes (moments) and Z steps run, ``"auto"`` (CUDA when the build
        and a GPU are present), ``"cpu"`` or ``"cuda"`` (RuntimeError without a CUDA build or GPU);
        k-means, the point Gram and the QP run on the CPU (see docs/kernels.md).
        """
        gamma = _as_gamma(gamma)
        validate.as_device(device)
        K = _as_int(K, "K", 1)
        steps = _as_int(steps, "steps", 0)
        step_size = float(step_size)
        if not math.isfinite(step_size) or step_size < 0:
            raise ValueError(f"step_size must be a finite number >= 0, got {step_size!r}")
        if update not in _UPDATES:
            raise ValueError(f"update must be one of {_UPDATES}, got {update!r}")
        if update == "mmd-descent" and not nonnegative_beta:
            raise ValueError("update='mmd-descent' needs nonnegative_beta=True (signed beta has no "
                             "MMD^2 guarantee)")

        n_init = _as_int(n_init, "n_init", 1)
        x, trailing = _prepare_data(X, "X")
        n, d = x.shape

        if not reduce:
            spec = cls(x.astype(np.float64).reshape((n,) + trailing), np.full(n, 1.0 / n), gamma, n)
            spec.fit_info = FitInfo(K=n, update=update)
            return spec

        need_t = steps > 0
        fk = kernels.FitKernels(x, gamma, device=device)
        # the reference update on the CPU runs its whole loop in one native call (the same bits)
        fused = (FUSED_FIT and fk.device == "cpu" and update == "reference" and nonnegative_beta
                 and not record_trajectory and n_init == 1)
        state = kmeans_c = None
        if init_z is not None:
            z = _to_numpy(init_z, "init_z")
            if z.ndim < 1 or z.shape[0] < 1 or z.size != z.shape[0] * d:
                raise ValueError(f"init_z must have shape (K, *{trailing}) with K >= 1, got {z.shape}")
            z = np.array(z, dtype=np.float64, order="C", copy=True).reshape(z.shape[0], d)
            if not np.isfinite(z).all():
                raise ValueError("init_z must be finite")
            K = z.shape[0]
            info = FitInfo(K=K, update=update)
            if not fused:
                state = _beta_state(fk, z, nonnegative_beta, need_t)
        else:
            if cls.size_cap is not None and K * d > cls.size_cap:
                K = max(20, cls.size_cap // d)
            if K >= n:
                K = max(1, (2 * n) // 3)
            if fused:  # k-means runs inside the fused call, from the same initial rows
                if max_kmeans_iter < 1:
                    raise ValueError(f"max_iter must be >= 1, got {max_kmeans_iter}")
                z, kmeans_c = None, kernels.kmeans_init(x, K, seed=seed, init=init)
            else:
                seeds = [seed] if n_init == 1 else np.random.SeedSequence(_entropy(seed)).spawn(n_init)
                best = None
                for s in seeds:  # best of n_init k-means inits by the objective after the first beta
                    centroids, iters = kernels.kmeans(x, K, max_iter=max_kmeans_iter, seed=s, init=init)
                    z_try = centroids.astype(np.float64)
                    st = _beta_state(fk, z_try, nonnegative_beta, need_t)
                    obj = _objective(st[3], st[2], st[0])
                    if best is None or obj < best[0]:
                        best = (obj, z_try, st, iters)
                _, z, state, iters = best
            info = FitInfo(K=K, update=update, kmeans_iterations=None if fused else int(iters))

        if fused:
            z, beta, objectives, status, iters = fk.fit_reference(z, steps, step_size, kmeans_c=kmeans_c,
                                                                  max_iter=max_kmeans_iter)
            if kmeans_c is not None:
                info.kmeans_iterations = iters
            if status == 1:
                raise ValueError("G and c must be finite")
            if status == 2:
                raise ValueError(_diverged(step_size))
            info.objective = objectives.tolist()
            info.step_sizes = [step_size] * steps
        else:
            try:
                z, beta = _optimize(fk, z, state, step_size, steps, nonnegative_beta, update, info,
                                    record_trajectory)
            except ValueError as exc:
                if "must be finite" not in str(exc):
                    raise
                raise ValueError(_diverged(step_size)) from None
        spec = cls(z.reshape((K,) + trailing), beta, gamma, n)
        spec.fit_info = info
        return spec

    # ------------------------------------------------------------------ sampling
    def herding(self, T: int, seed=None, *, num_candidates: int | None = None) -> np.ndarray:
        """Draw T pseudo-samples from the embedding by kernel herding -> (T, *trailing) float64.

        Candidates: the K points of z plus ``num_candidates`` (default ``max(1000, 20 K)``) points
        ``z_i + e`` with i drawn with probability proportional to ``max(beta_i, 0)`` and e normal
        with standard deviation ``1 / sqrt(2 gamma)`` per coordinate (the kernel's own width),
        seeded by ``seed``.  Then greedily, for t = 0 .. T-1, pick the candidate maximising
        ``mu(x) - (1 / (t + 1)) sum_{s < t} k(x, x_s)`` (Chen, Welling & Smola, 2010); a candidate
        may be picked more than once.
        """
        T = _as_int(T, "T", 0)
        K, d = self._z2d.shape
        m = max(1000, 20 * K) if num_candidates is None else _as_int(num_candidates, "num_candidates", 0)
        out = np.empty((T, d), dtype=np.float64)
        if T == 0:
            return out.reshape((0,) + self.z_shape)
        if not (np.isfinite(self._z2d).all() and np.isfinite(self.beta).all()):
            raise ValueError("herding needs a spec with finite z and beta")
        rng = np.random.default_rng(seed)
        w = np.clip(self.beta, 0.0, None)
        p = w / w.sum() if w.sum() > 0 else np.full(K, 1.0 / K)
        centre = rng.choice(K, size=m, p=p)
        noise = rng.standard_normal((m, d)) / math.sqrt(2.0 * self.gamma)
        cand = np.ascontiguousarray(np.vstack([self._z2d, self._z2d[centre] + noise]))
        M = cand.shape[0]
        cand_offsets = np.arange(M + 1, dtype=np.int64)
        ones = np.ones(M)
        mu = kernels.cross_inner(self._z2d, self.beta, _single(K), cand, ones, cand_offsets, self.gamma)[0]
        penalty = np.zeros(M)
        for t in range(T):
            j = int(np.argmax(mu - penalty / (t + 1)))
            out[t] = cand[j]
            penalty += kernels.cross_inner(cand[j:j + 1], np.ones(1), _single(1), cand, ones,
                                           cand_offsets, self.gamma)[0]
        return out.reshape((T,) + self.z_shape)


# ----------------------------------------------------------------------------- fit internals
def _json_array(value, name: str) -> np.ndarray:
    try:
        arr = np.array(value)
    except ValueError as exc:
        raise ValueError(f"{name} is ragged or malformed: {exc}") from exc
    if arr.dtype == object:
        raise ValueError(f"{name} is ragged or holds non-numbers")
    if arr.dtype.kind not in "iuf":  # integers or floats (not bool, complex, strings)
        raise ValueError(f"{name} must hold numbers, got {arr.dtype} values")
    return arr


def _prepare_data(X, name: str):
    """The fit's view of data X: cleaned float32 (n, d) copy (semantics §1.1, §1.4) and the row shape."""
    xa = _to_numpy(X, name)
    if xa.ndim < 1 or xa.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n, ...) with n >= 1 rows, got {xa.shape}")
    trailing = tuple(xa.shape[1:])
    d = int(np.prod(trailing, dtype=np.int64))
    if d < 1:
        raise ValueError(f"{name} rows must hold at least one value, got shape {xa.shape}")
    x = np.array(xa, dtype=np.float32, order="C", copy=True).reshape(xa.shape[0], d)
    _clean_columns(x)
    return x, trailing


def _data_matrix(X, trailing: tuple, name: str) -> np.ndarray:
    """Data prepared as the fit sees it, checked against a spec's row shape."""
    x, xt = _prepare_data(X, name)
    if x.shape[1] != int(np.prod(trailing, dtype=np.int64)):
        raise ValueError(f"{name} rows have shape {xt} but the spec's points have shape {trailing}")
    return x


def _entropy(seed):
    """SeedSequence entropy from a seed argument (None, int, SeedSequence or Generator)."""
    if isinstance(seed, np.random.SeedSequence):
        return seed.entropy if seed.spawn_key == () else seed.generate_state(4)
    if isinstance(seed, np.random.Generator):
        return seed.integers(0, 2**63, size=4)
    return seed


def _clean_columns(x: np.ndarray) -> None:
    """In place (float32, (n, d)): +-Inf -> NaN, NaN -> column mean of the finite cells."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    x[bad] = np.nan
    for col in np.flatnonzero(bad.any(axis=0)):
        column = x[:, col]
        if bad[:, col].all():
            raise ValueError(f"All values in column {col} are exceptional, e.g., NaN and Inf.")
        column[bad[:, col]] = np.nanmean(column, dtype=np.float32)


def _beta_update(fk, G: np.ndarray, C: np.ndarray, nonnegative: bool, warm=None) -> np.ndarray:
    """The beta update; ``warm`` (the previous beta) only seeds the QP's active set."""
    if nonnegative:
        return fk.beta_qp(G, C, warm)
    return np.linalg.solve(G + _SIGNED_RIDGE * np.eye(G.shape[0]), C)


def _moments(fk, z, with_t):
    """The data moments ``(C, T)`` at ``z`` through the fit's validated-once kernels."""
    return fk.moments(z, with_t)


def _objective(beta, G, C) -> float:
    return kernels.fit_objective(G, C, beta)


def _diverged(step_size) -> str:
    return f"the fit diverged (non-finite reduced set): step_size={step_size!r} is too large for this data"


def _beta_state(fk, z, nonnegative, with_t):
    """Data moments, Gram matrix and optimal beta at a fixed Z (one zx_moments pass)."""
    C, T = _moments(fk, z, with_t)
    G = fk.point_gram(z)
    beta = _beta_update(fk, G, C, nonnegative)
    return C, T, G, beta


def _optimize(fk, z, state, step_size, steps, nonnegative, update, info: FitInfo, record: bool):
    """From Z0 and its beta ``state`` (C, T, G, beta): ``steps`` x (Z step, beta update)."""
    C, T, G, beta = state
    z_traj, beta_traj = [z.copy()], [beta.copy()]
    info.objective.append(_objective(beta, G, C))
    step = step_size
    for t in range(steps):
        last = t == steps - 1
        if update == "reference":
            z = fk.step_from_gram(z, beta, C, T, G, step)  # G = k(z, z)
            C, T = _moments(fk, z, not last)
            G = fk.point_gram(z)
            info.step_sizes.append(step)
        else:
            z, C, T, G, step = _descent_step(fk, z, beta, C, T, G, step, need_t=not last)
            info.step_sizes.append(step)
            step = 2.0 * step if step > 0 else step_size
        beta = _beta_update(fk, G, C, nonnegative, warm=beta)
        info.objective.append(_objective(beta, G, C))
        if record:
            z_traj.append(z.copy())
            beta_traj.append(beta.copy())
    if record:
        info.z_traj = np.stack(z_traj)
        info.beta_traj = np.stack(beta_traj)
    return z, beta


def _descent_step(fk, z, beta, C, T, G, step, *, need_t, max_halvings: int = 30):
    """Exact-gradient Z step with backtracking: returns the new (z, C, T, G, accepted step);
    the old ones (step 0.0) when no tried step lowers the objective at fixed beta."""
    base = _objective(beta, G, C)
    for _ in range(max_halvings + 1):
        z_new = fk.step_from_moments(z, beta, C, T, step, exact_gradient=True)
        C_new, T_new = _moments(fk, z_new, True)
        G_new = fk.point_gram(z_new)
        if _objective(beta, G_new, C_new) <= base:
            return z_new, C_new, (T_new if need_t else None), G_new, step
        step *= 0.5
    return z, C, T, G, 0.0


# ----------------------------------------------------------------------------- batch fitting
_PROGRESS_MIN = 8  # datasets; fewer never show a bar unless progress=True


_SMALL_ROWS = 20_000


def fit_many(datasets, K: int = 100, gamma: float = 0.1, step_size: float = 0.1, steps: int = 3,
             nonnegative_beta: bool = True, reduce: bool = True, seed=None, init_z=None, *,
             n_jobs: int | None = None, progress: bool | None = None, device: str = "auto",
             **options) -> list:
    """Fit one spec per data set -> list of :class:`RKMESpec` in input order.

    Options are those of :meth:`RKMESpec.fit`; ``init_z`` is None or one initial Z per data set.
    Data set i is seeded by the i-th child of ``numpy.random.SeedSequence(seed)`` (reproducible
    and independent of ``n_jobs``).  ``n_jobs`` threads fit data sets concurrently (the native
    kernels release the GIL); the default, None, uses one thread per CPU when every data set is
    small (< 20,000 rows: there the kernels' own threading pays little, and data-set parallelism
    keeps the cores busy) and 1 otherwise (each fit's kernels then use every core through OpenMP).  ``progress``: a tqdm bar when True, or when None
    and stderr is a terminal and there are at least 8 data sets.  ``device`` as in
    :meth:`RKMESpec.fit` (resolved once for every data set).
    """
    datasets = list(datasets)
    N = len(datasets)
    if init_z is not None:
        init_z = list(init_z)
        if len(init_z) != N:
            raise ValueError(f"init_z must hold one initial Z per data set ({N}), got {len(init_z)}")
    if n_jobs is None:
        small = all(len(x) < _SMALL_ROWS for x in datasets if hasattr(x, "__len__"))
        n_jobs = (os.cpu_count() or 1) if small else 1
    n_jobs = _as_int(n_jobs, "n_jobs", 1)
    seeds = np.random.SeedSequence(seed).spawn(N)
    validate.as_device(device)
    device = kernels.default_device() if device == "auto" else kernels.resolve_device(device)

    def one(i):
        return RKMESpec.fit(datasets[i], K=K, gamma=gamma, step_size=step_size, steps=steps,
                            nonnegative_beta=nonnegative_beta, reduce=reduce, seed=seeds[i],
                            init_z=None if init_z is None else init_z[i], device=device, **options)

    bar = _progress_bar(N, progress)
    results = [None] * N
    try:
        if n_jobs == 1 or N <= 1:
            for i in range(N):
                results[i] = one(i)
                if bar is not None:
                    bar.update(1)
        else:
            # each job's kernels on one thread: the jobs already fill the cores (no oversubscription,
            # no k-means team spinning beside another job)
            with ThreadPoolExecutor(max_workers=min(n_jobs, N), initializer=kernels.single_threaded_here) as pool:
                futures = {pool.submit(one, i): i for i in range(N)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results


def _progress_bar(total: int, progress: bool | None):
    show = progress if progress is not None else (total >= _PROGRESS_MIN and sys.stderr.isatty())
    if not show:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        log.debug("tqdm not installed: no progress bar")
        return None
    return tqdm(total=total, desc="fit", unit="spec")


registry.register(registry.SpecType(SPEC_TYPE, RKMESpec, aliases=_LEGACY_TYPES, kernel="gaussian"))
