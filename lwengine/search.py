"""Reference-compatible statistical search over a :class:`~lwengine.SpecIndex` (semantics §4-5).

Pipeline per user spec: semantic filter (optional) -> metadata filter (trailing shape) -> one batched
``cross_inner`` per packed group giving every ``d_i = learnware_i.dist(user)`` -> drop non-finite ->
stable sort (ties in list order) -> pool = first ``max_search_num**2`` -> greedy / auto mixture on the
pool's Gram matrix -> score conversion and filters (:mod:`lwengine.scores`).

The pool's Gram matrix follows the reference's bookkeeping exactly: ``A[a, b] = spec_a.inner_prod(spec_b)``
uses spec a's gamma, and the reference fills a symmetric matrix from it -- greedy with the gamma of the
spec chosen *later* (it appends one row per candidate), auto with the gamma of the spec listed *earlier*.
``C_i = user.inner_prod(spec_i)`` uses the user's gamma; a mixture's MMD^2 is ``<u,u> + 2 obj``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from . import device as devices
from . import kernels
from .distances import finish, prepare_user
from .packed import digest
from .scores import (DIST_RATIO, FILTER_SCORE, MIN_SCORE, postprocess, postprocess_prefix, postprocess_sorted,
                     score_eps)
from .semantic import semantic_filter
from .specs import registry
from .specs.kernel_family import GAUSSIAN

__all__ = ["GREEDY_DECAY", "AUTO_CUTOFF", "SingleResult", "MixtureResult", "SearchResult", "search",
           "search_batch", "greedy_mixture", "auto_mixture", "pool_matrices", "LocalBackend", "Refiner", "scan_groups",
           "pack_pool", "exact_dists", "SCREEN_MIN_SPECS"]

log = logging.getLogger(__name__)

GREEDY_DECAY = 0.95
AUTO_CUTOFF = 0.98
_METHODS = ("greedy", "auto")


# ------------------------------------------------------------------------------------ results
@dataclass
class SingleResult:
    __slots__ = ("id", "dist", "score")  # thousands per search: cheaper to build
    id: str
    dist: float | None
    score: float | None


@dataclass
class MixtureResult:
    ids: list
    weights: list
    mmd2: float
    score: float


@dataclass
class SearchResult:
    """``single`` (ranked, filtered like the reference) and ``mixture`` (None or one mixture).

    Extras: ``ranking`` / ``dists`` (every ranked id and its distance, ascending), ``pool`` (mixture
    candidate ids), ``nonfinite_dropped``, ``mixture_search`` (the mixture search's raw output: ids,
    weights, mmd2), ``mixture_dropped`` (None, "length_1", "same_score_2dp", "not_called"),
    ``greedy_rounds``, ``auto_pool_weights``, ``pool_K`` / ``pool_C``, ``scores_before_filter``,
    ``exact_recomputed`` (distances recomputed in float64 after the float32 screening scan),
    ``exact_direct`` (distances the scan computed in float64 at once, without screening them),
    ``pruned`` (specs whose distance the scan bounded by their covering ball instead of scanning them;
    ``ranking`` / ``dists`` / ``scores_before_filter`` scan them on first use).
    """

    single: list
    mixture: MixtureResult | None
    _dists: object = field(default_factory=lambda: np.empty(0), repr=False)  # array, or a callable giving it
    pool: list = field(default_factory=list)
    nonfinite_dropped: list = field(default_factory=list)
    mixture_search: dict | None = None
    mixture_dropped: str | None = None
    greedy_rounds: list = field(default_factory=list)
    auto_pool_weights: np.ndarray | None = None
    _pool_K: object = field(default=None, repr=False)  # array, or a callable giving it
    pool_C: np.ndarray | None = None
    _scores_before_filter: list = field(default_factory=list, repr=False)
    exact_recomputed: int = 0
    exact_direct: int = 0
    pruned: int = 0
    _ranking_fn: object = field(default=None, repr=False)
    _complete: object = field(default=None, repr=False)  # fills in distances the search did not need

    def _completed(self) -> None:
        if self._complete is not None:
            fn, self._complete = self._complete, None
            fn(self)

    @property
    def dists(self) -> np.ndarray:
        """Every ranked distance, ascending (sorted on first use for large searches)."""
        self._completed()
        if callable(self._dists):
            self._dists = self._dists()
        return self._dists

    @dists.setter
    def dists(self, value) -> None:
        self._dists = value

    @property
    def pool_K(self) -> np.ndarray | None:
        """The pool's Gram matrix as the mixture search sees it (filled on first use after greedy)."""
        if callable(self._pool_K):
            self._pool_K = self._pool_K()
        return self._pool_K

    @pool_K.setter
    def pool_K(self, value) -> None:
        self._pool_K = value

    @property
    def ranking(self) -> list:
        """Every ranked id (ascending distance, ties in list order)."""
        self._completed()
        return [] if self._ranking_fn is None else self._ranking_fn()

    @property
    def scores_before_filter(self) -> list:
        """The score of every ranked distance before the 0.6 filter."""
        self._completed()
        if callable(self._scores_before_filter):  # scored on first use (scores.postprocess_sorted)
            self._scores_before_filter = self._scores_before_filter()
        return self._scores_before_filter

    @scores_before_filter.setter
    def scores_before_filter(self, value) -> None:
        self._scores_before_filter = value

    def to_dict(self) -> dict:
        return {
            "single": [{"id": s.id, "dist": _num(s.dist), "score": _num(s.score)} for s in self.single],
            "mixture": None if self.mixture is None else {
                "ids": list(self.mixture.ids),
                "weights": [float(w) for w in self.mixture.weights],
                "mmd2": float(self.mixture.mmd2),
                "score": float(self.mixture.score),
            },
        }


def _num(x):
    return None if x is None else float(x)


# ------------------------------------------------------------------------------------ mixtures
def pool_matrices(z, beta, offsets, gammas, user_z, user_beta, user_gamma, *, device: str = "auto",
                  family=GAUSSIAN, shape=()):
    """``(A, C)`` for a packed pool: ``A[a, b] = spec_a.inner_prod(spec_b)`` (gamma of a) and
    ``C[b] = user.inner_prod(spec_b)`` (the user's gamma).  One ``cross_inner`` per distinct gamma.
    ``family``: the specs' kernel family (:class:`lwengine.specs.KernelFamily`; gammas are its
    kernel parameters), ``shape`` their trailing shape."""
    gammas = np.asarray(gammas, dtype=np.float64)
    P = len(gammas)
    A = np.empty((P, P), dtype=np.float64)
    uniq = np.unique(gammas)
    if len(uniq) == 1:
        A[:] = family.gram(z, beta, offsets, float(uniq[0]), shape, device=device)
    else:
        for g in uniq:
            rows = np.flatnonzero(gammas == g)
            qz, qb, qo = _subset(z, beta, offsets, rows)
            A[rows] = family.cross_inner(qz, qb, qo, z, beta, offsets, float(g), shape, device=device)
            if not family.copy_dist_zero:  # the diagonal is the one-object path
                A[rows, rows] = family.self_inner(qz, qb, qo, float(g), shape, device=device)
    user_off = np.array([0, len(user_beta)], dtype=np.int64)
    C = family.cross_inner(user_z, user_beta, user_off, z, beta, offsets, user_gamma, shape, device=device)[0]
    return A, C


def _subset(z, beta, offsets, idx):
    if isinstance(idx, range) and idx.step == 1 and len(idx):  # consecutive specs: views, no gather
        lo, hi = int(offsets[idx.start]), int(offsets[idx.stop])
        return z[lo:hi], beta[lo:hi], np.asarray(offsets[idx.start:idx.stop + 1], dtype=np.int64) - lo
    parts = [np.arange(offsets[i], offsets[i + 1]) for i in idx]
    rows = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    lens = np.array([offsets[i + 1] - offsets[i] for i in idx], dtype=np.int64)
    return z[rows], beta[rows], np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)


class _PoolGram:
    """``A`` of :func:`pool_matrices` for a one-gamma Gaussian pool on the CPU, filled a column at a
    time (``column(j)``): the greedy search reads only the diagonal and the columns of the specs it
    chooses.  Entry (a, b) with a < b is ``<spec a, spec b>`` with spec a as the query, the diagonal the
    one-object path, each value mirrored -- the orientation and bits of :func:`lwengine.kernels.gram`."""

    def __init__(self, z, beta, offsets, gamma, family, shape):
        self.z, self.beta, self.offsets, self.gamma, self.family, self.shape = z, beta, offsets, gamma, family, shape
        P = len(offsets) - 1
        self.A = np.full((P, P), np.nan)
        self.A[np.arange(P), np.arange(P)] = family.self_inner(z, beta, offsets, gamma, shape, device="cpu")
        self.done = np.zeros(P, dtype=bool)

    def column(self, j: int) -> None:
        if self.done[j]:
            return
        P, f = len(self.done), self.family
        zj, bj, oj = _subset(self.z, self.beta, self.offsets, range(j, j + 1))
        if j:  # earlier specs are the queries
            qz, qb, qo = _subset(self.z, self.beta, self.offsets, range(j))
            v = f.cross_inner(qz, qb, qo, zj, bj, oj, self.gamma, self.shape, device="cpu")[:, 0]
            self.A[:j, j] = self.A[j, :j] = v
        if j + 1 < P:  # spec j is the query of the later ones
            sz, sb, so = _subset(self.z, self.beta, self.offsets, range(j + 1, P))
            v = f.cross_inner(zj, bj, oj, sz, sb, so, self.gamma, self.shape, device="cpu")[0]
            self.A[j, j + 1:] = self.A[j + 1:, j] = v
        self.done[j] = True

    def full(self) -> np.ndarray:
        for j in np.flatnonzero(~self.done):
            self.column(int(j))
        return self.A


def _later_gamma_gram(A, order):
    """Greedy's matrix over ``order``: entry (i, j) is A[order[max(i,j)], order[min(i,j)]]."""
    o = np.asarray(order, dtype=np.int64)
    M = A[np.ix_(o, o)]
    low = np.tril(M)  # row = later spec
    return low + np.tril(M, -1).T


def _earlier_gamma_gram(A, order):
    """Auto's matrix over ``order``: entry (i, j) is A[order[min(i,j)], order[max(i,j)]]."""
    o = np.asarray(order, dtype=np.int64)
    M = A[np.ix_(o, o)]
    up = np.triu(M)
    return up + np.triu(M, 1).T


def greedy_mixture(A, C, user_self, max_search_num, *, decay_rate=GREEDY_DECAY, column=None):
    """Greedy mixture (semantics 4.1) on pool matrices -> ``(mmd2, weights, chosen, rounds)``.

    Each round solves every candidate's QP in one :func:`kernels.simplex_qp_batch` call.  ``column``:
    for a lazily filled ``A`` (its diagonal given), called with each chosen pool index before its
    column is read.
    """
    P = len(C)
    m = min(int(max_search_num), P)
    chosen, best_prev, weights, rounds = [], None, None, []
    for k in range(m):
        taken = set(chosen)
        cands = np.array([i for i in range(P) if i not in taken], dtype=np.int64)
        B = len(cands)
        Gs = np.empty((B, k + 1, k + 1), dtype=np.float64)
        if k:
            Gs[:, :k, :k] = _later_gamma_gram(A, chosen)
            cross = A[np.ix_(cands, chosen)]
            Gs[:, k, :k] = cross
            Gs[:, :k, k] = cross
        Gs[:, k, k] = A[cands, cands]
        cs = np.empty((B, k + 1), dtype=np.float64)
        cs[:, :k] = C[chosen]
        cs[:, k] = C[cands]
        xs, objs = kernels.simplex_qp_batch(Gs, cs)
        mmd = user_self + 2.0 * objs
        b = int(np.argmin(mmd))  # strictly smallest, first wins ties
        accepted = k == 0 or mmd[b] <= decay_rate * best_prev
        rounds.append({"round": k, "candidates": cands.tolist(), "mmd2": mmd, "best": int(cands[b]),
                       "best_mmd2": float(mmd[b]), "best_weights": xs[b].copy(), "accepted": bool(accepted)})
        if not accepted:
            break
        chosen.append(int(cands[b]))
        if column is not None and k + 1 < m:
            column(chosen[-1])
        best_prev, weights = float(mmd[b]), xs[b].copy()
    return best_prev, weights, chosen, rounds


def auto_mixture(A, C, user_self, max_search_num, *, weight_cutoff=AUTO_CUTOFF):
    """Auto mixture (semantics 4.2) -> ``(mmd2, weights, chosen, pool_weights)``."""
    P = len(C)
    m = min(int(max_search_num), P)
    w, _ = kernels.simplex_qp(_earlier_gamma_gram(A, range(P)), C)
    order = np.argsort(-w, kind="stable")
    keep, total = [], 0.0
    for idx in order:
        total += float(w[idx])
        if total <= weight_cutoff:
            keep.append(int(idx))
        else:
            break
    if len(keep) <= 1:
        top = int(order[0])
        return user_self - 2.0 * C[top] + A[top, top], np.array([1.0]), [top], w
    keep = keep[:m]
    wk, obj = kernels.simplex_qp(_earlier_gamma_gram(A, keep), C[keep])
    return user_self + 2.0 * obj, wk, keep, w


# ------------------------------------------------------------------------------------ search
def _check_args(max_search_num, method):
    if isinstance(max_search_num, bool) or not isinstance(max_search_num, (int, np.integer)):
        raise TypeError(f"max_search_num must be an integer, got {type(max_search_num).__name__}")
    if max_search_num < 1:
        raise ValueError(f"max_search_num must be >= 1, got {max_search_num}")
    if method is not None and method not in _METHODS:
        raise ValueError(f"method must be 'greedy', 'auto' or None (no mixture), got {method!r}")


def search(index, user_spec, max_search_num: int = 5, method: str | None = "greedy", semantic=None, *,
           screen: bool | None = None, device: str | None = None) -> SearchResult:
    """Search ``index`` like the reference market's combined searcher.

    ``semantic`` (a user semantic spec) filters first, with the reference's fuzzy rules; the statistical
    search then runs on the survivors in the filter's order.  ``user_spec=None`` with a semantic spec
    returns the semantic matches (dist and score None).  ``method=None`` skips the mixture search.

    ``screen``: scan float64 stores through their float32 copy first (None: for groups of at least
    ``SCREEN_MIN_SPECS`` specs).  Every distance that decides the output -- the mixture pool, the
    reported singles, the first rejected one and the largest distance -- is then recomputed in
    float64, chosen with a rigorous float32 error bound, so rankings, pool and mixture are those of
    the all-float64 scan; only the remaining distances (which enter the scores through their mean)
    keep their float32 error (bound in :func:`lwengine.kernels.cross_inner_f32_bound`, measured
    ~1e-8 relative).  ``screen=False`` computes every distance in float64.

    Only learnwares of the user's spec type whose match key (the type's grouping metadata, e.g. the
    trailing shape of z) equals the user's are compared, and the type's admission rule (text: the
    language subset rule) applies per learnware.  ``device``: "auto", "cpu" or "cuda" for every kernel
    call (None: the index's device).
    """
    return search_batch(index, [user_spec], max_search_num=max_search_num, method=method, semantic=semantic,
                        screen=screen, device=device)[0]


def search_batch(index, user_specs, max_search_num: int = 5, method: str | None = "greedy", semantic=None,
                 restrict=None, *, screen: bool | None = None, device: str | None = None) -> list:
    """:func:`search` for several users; users of one trailing shape share one scan of each group.

    ``restrict``: optional ordered ids; only these are searched, and ties follow this order (the
    market passes its own learnware list this way).

    ``index`` may provide ``search_backend`` (an object with the methods of :class:`LocalBackend`)
    to supply the scan from elsewhere (:class:`lwengine.distributed.ShardedIndex`); the pipeline
    after the scan is this one.
    """
    _check_args(max_search_num, method)
    dev = devices.resolve(device) if device is not None else getattr(index, "device", "cpu")
    backend = getattr(index, "search_backend", None) or LocalBackend(index, device=dev)
    if isinstance(backend, LocalBackend) and dev == "cpu":  # one awake helper thread for all kernel calls
        with kernels.call_team():
            return _search_batch(index, backend, dev, user_specs, max_search_num, method, semantic, screen,
                                 restrict)
    return _search_batch(index, backend, dev, user_specs, max_search_num, method, semantic, screen, restrict)


def _search_batch(index, backend, dev, user_specs, max_search_num, method, semantic, screen, restrict):
    user_specs = list(user_specs)
    allowed = None
    if semantic is not None or restrict is not None:
        allowed = {i: r for r, i in enumerate(backend.listing(semantic, restrict))}
    results = [None] * len(user_specs)
    by_shape: dict = {}
    for q, spec in enumerate(user_specs):
        if spec is None:
            if allowed is None:
                raise ValueError("user_spec is None: give a spec, or a semantic spec to filter by")
            results[q] = SearchResult(single=[SingleResult(i, None, None) for i in allowed], mixture=None)
            continue
        name = "user_spec" if len(user_specs) == 1 else f"user_specs[{q}]"
        u, z2, uself = prepare_user(spec, name, device=dev)
        by_shape.setdefault((registry.entry_of(u).type, u.z_shape), []).append((q, u, z2, uself))
    for kind, users in by_shape.items():
        # float64 at once only where nearly every scanned spec is a candidate (see scan_groups)
        direct = DIRECT_FLOAT64 and isinstance(backend, LocalBackend) and (
            allowed is None or len(allowed) >= 0.9 * len(index))
        groups, D, E, rep_all, seq, gi_all, li_all = backend.scan(kind, users, screen,
                                                                  **({"direct": True} if direct else {}))
        ids = None
        if allowed is not None:
            ids = [groups[g].ids[l] for g, l in zip(gi_all, li_all)]
            key = np.array([allowed.get(i, -1) for i in ids], dtype=np.int64)
        else:
            key = seq
        admits = registry.get(kind[0]).admits
        for row, (q, u, z2, us) in enumerate(users):
            key_u = key
            if admits is not None and len(key):
                if ids is None:
                    ids = [groups[g].ids[l] for g, l in zip(gi_all, li_all)]
                ok = np.array([admits(u, x) for x in backend.extras(ids)], dtype=bool)
                key_u = np.where(ok, key, -1)
            refiner = None
            if E[row].any():
                refiner = backend.refiner(groups, gi_all, li_all, rep_all, E[row], z2, u.beta, us)
                pruned = getattr(backend, "pruned", None)  # specs the scan bounded instead of scanning
                if pruned is not None:
                    refiner.pruned = np.flatnonzero(pruned)
            results[q] = _finish(groups, D[row], key_u, gi_all, li_all, u, z2, us, max_search_num, method, refiner,
                                 pack=backend.pack, device=dev)
            results[q].exact_direct = getattr(backend, "direct", 0) if len(users) == 1 else 0
    return results


class LocalBackend:
    """Where :func:`search_batch` gets its distances: the groups of a local :class:`SpecIndex`.

    ``listing(semantic, restrict)`` -> the searched ids in tie-break order; ``scan(kind, users, screen)``
    -> ``(groups, D, E, rep, seq, gi, li)`` over the alive specs comparable with ``kind = (spec type,
    trailing shape)`` (D: (Q, N) distances,
    E: their float32 screening error bounds, rep: position of each spec's bit-identical
    representative, seq: insertion sequence numbers, gi/li: group and local index of each position);
    ``refiner(...)`` -> a :class:`Refiner`; ``pack(groups, gis, lis)`` -> the pool store;
    ``extras(ids)`` -> the stored extra fields of each id (for the type's admission rule).
    """

    def __init__(self, index, device: str = "cpu"):
        self.index = index
        self.device = device

    def listing(self, semantic, restrict) -> list:
        index = self.index
        listed = index.ids() if restrict is None else [i for i in restrict if i in index]
        if semantic is None:
            return listed
        return semantic_filter([(i, index.semantic_of(i)) for i in listed], semantic)

    def scan(self, kind, users, screen, *, direct: bool = False):
        """``direct``: see :func:`scan_groups` (set when nearly every scanned spec is listed)."""
        out = scan_groups(self.index, kind, users, screen, device=self.device, prune=PRUNE_FAR, direct=direct)
        self.pruned = out[7] if PRUNE_FAR else None
        self.direct = out[8] if PRUNE_FAR else 0
        return out[:7]

    def refiner(self, groups, gi_all, li_all, rep_all, err, user_z2, user_beta, user_self):
        return Refiner(groups, gi_all, li_all, rep_all, err, user_z2, user_beta, user_self, device=self.device)

    @staticmethod
    def pack(groups, gis, lis):
        return pack_pool(groups, gis, lis)

    def extras(self, ids) -> list:
        return [self.index.extra_of(i) for i in ids]


def comparable_groups(index, kind) -> list:
    """The index's non-empty groups comparable with ``kind = (spec type, trailing shape)``: same
    registered type, same match key (:attr:`lwengine.specs.SpecType.match_key`)."""
    entry = registry.get(kind[0])
    want = entry.match_key(tuple(kind[1]))
    return [g for g in index.groups()
            if g.n_alive and registry.lookup(g.spec_type) is entry and entry.match_key(g.shape) == want]


def scan_groups(index, kind, users, screen, *, device: str | None = None, prune: bool = False,
                direct: bool = False):
    """Every alive spec comparable with ``kind = (spec type, trailing shape)`` against ``users`` (list of
    ``(q, spec, z2, self_ip)``); see :class:`LocalBackend`.  ``screen`` may be a dict {group key: bool
    or None}; ``device``: None for each store's.

    ``prune=True`` (screened Gaussian groups on the CPU): a spec whose covering ball is so far from
    every user that ``|<user, spec>| <= B`` (:func:`lwengine.kernels.ball_bound`) with ``2B`` within its
    float32 screening bound is not scanned: its distance is ``self + <u,u>`` with error bound ``2B``.
    Returns an 8th value then, the (N,) mask of those positions, pruned for every user (None when
    nothing was pruned); :meth:`Refiner.complete` scans them when the scores need every distance.

    ``direct=True`` (with ``prune``, one user, the CPU, at least ``DIRECT_MIN_SPECS`` scanned): a sample of the
    scanned specs is screened first; the other specs that it shows are likely to be reported singles
    (:func:`_direct_choice`) are computed in float64 at once (error bound 0) instead of being screened
    and then recomputed by the :class:`Refiner`.  With ``prune`` a 9th value is
    returned: how many specs were computed in float64 that way."""
    groups = comparable_groups(index, kind)
    qz = np.concatenate([z2 for _, _, z2, _ in users])
    qb = np.concatenate([u.beta for _, u, _, _ in users])
    qo = np.concatenate([[0], np.cumsum([u.K for _, u, _, _ in users])]).astype(np.int64)
    uself = np.array([s for *_, s in users])
    uparam = [registry.entry_of(u).family.param(u) for _, u, _, _ in users]
    udig = [np.frombuffer(digest(z2, u.beta), dtype=np.uint8) for _, u, z2, _ in users]
    q_l1 = np.array([np.abs(u.beta).sum() for _, u, _, _ in users])
    q_r2 = np.array([float((z2 * z2).sum(1).max()) for _, _, z2, _ in users])
    q_K = np.array([u.K for _, u, _, _ in users], dtype=np.float64)
    groups_of_user = None  # the one user's point groups for the projection bound, made on first use
    dists, errs, reps, seqs, gidx, lidx, fars = [], [], [], [], [], [], []
    n_direct = 0
    any_far = False
    base = 0
    for gi, g in enumerate(groups):
        n = g.n
        screened = _screens(g, screen.get(g.key) if isinstance(screen, dict) else screen)
        far = bound = None
        if screened:
            err = _screen_err(g, q_l1[:, None], q_K[:, None], q_r2[:, None], slice(0, n))
            if prune and g.family is GAUSSIAN and (device or g.device) == "cpu":
                bound, far = _far_specs(g, qz, qb, qo, err)
                far = far if far.any() else None
        project = PROJECT_FAR and bound is not None and len(users) == 1
        if project and groups_of_user is None:
            groups_of_user = (np.abs(qb),) + kernels.bound_groups(qz)

        def screen_rest(specs):  # screen ``specs``, except those the projection bound shows to be far
            nonlocal far
            if project:
                gone, two_b = _projected_far(g, qz, groups_of_user, specs, err[0], bound[0])
                if len(gone):
                    far = np.zeros(n, dtype=bool) if far is None else far
                    far[gone] = True
                    bound[0, gone] = two_b
                    specs = specs[~far[specs]]
            if len(specs):
                cross[:, specs] = g.cross(qz, qb, qo, screened=True, specs=specs, device=device)

        near = None
        if direct and bound is not None and len(users) == 1:  # the pruned path: bounds on the CPU
            near = np.arange(n) if far is None else np.flatnonzero(~far)
            near = near if len(near) >= DIRECT_MIN_SPECS else None
        if near is not None:  # screen a sample first, then each other spec screened or in float64
            at = _sample_at(near)
            sample, rest = near[at], np.delete(near, at)
            cross = np.zeros((1, n))
            cross[:, sample] = g.cross(qz, qb, qo, screened=True, specs=sample, device=device)
            exact = _direct_choice(g, users[0], sample, cross[0, sample], rest, far, bound[0])
            if exact.any():
                at64 = rest[exact]
                cross[:, at64] = g.cross(qz, qb, qo, specs=at64, device=device)
                err[:, at64] = 0.0
                n_direct += len(at64)
            if not exact.all():
                screen_rest(rest[~exact])
            if far is not None:
                err[:, far] = bound[:, far]
        elif bound is None or (far is None and not project):
            cross = g.cross(qz, qb, qo, screened=screened, device=device)
        else:
            cross = np.zeros((len(users), n))
            screen_rest(np.arange(n) if far is None else np.flatnonzero(~far))
            if far is not None:
                err[:, far] = bound[:, far]
        d = finish(g.self_terms()[None, :], cross, uself[:, None])
        if not screened:
            err = np.zeros(d.shape)  # calloc: untouched pages cost nothing
        rep = np.arange(n)
        dups = g.duplicates()
        if dups:  # bit-identical specs get bit-identical distances (exact ties, as the reference)
            d[:, dups[0]] = d[:, dups[1]]
            err[:, dups[0]] = err[:, dups[1]]
            rep[dups[0]] = dups[1]
            if far is not None:
                far[dups[0]] = far[dups[1]]
        for row, (_, u, _, _) in enumerate(users):  # p.dist(p) == 0.0 exactly, as the reference
            if g.family.copy_dist_zero and uparam[row] == g.gamma:
                words = np.ascontiguousarray(g.digest[:n]).view(np.uint64)  # (n, 2): two compares per spec
                u_words = udig[row].view(np.uint64)
                same = np.flatnonzero((words[:, 0] == u_words[0]) & (words[:, 1] == u_words[1]))
                d[row, same] = 0.0
                err[row, same] = 0.0
        if far is None:
            far = np.zeros(n, dtype=bool)
        else:
            any_far = True
        if g.n_dead == 0:  # every spec alive: no gathers
            live = np.arange(n)
            dists.append(d)
            errs.append(err)
            reps.append(rep + base if base else rep)
            fars.append(far)
        else:
            live = np.flatnonzero(g.alive[:n])
            pos_of = np.full(n, -1, dtype=np.int64)
            pos_of[live] = base + np.arange(len(live))
            dists.append(d[:, live])
            errs.append(err[:, live])
            reps.append(pos_of[rep[live]])
            fars.append(far[live])
        seqs.append(np.asarray(g.seq[live]) if g.n_dead else np.asarray(g.seq[:n]))
        gidx.append(np.full(len(live), gi, dtype=np.int64))
        lidx.append(live)
        base += len(live)
    if len(groups) == 1:
        D, E, rep_all, seq, gi_all, li_all = dists[0], errs[0], reps[0], seqs[0], gidx[0], lidx[0]
    elif groups:
        D, E, rep_all = np.concatenate(dists, axis=1), np.concatenate(errs, axis=1), np.concatenate(reps)
        seq, gi_all, li_all = np.concatenate(seqs), np.concatenate(gidx), np.concatenate(lidx)
    else:
        D = E = np.empty((len(users), 0))
        seq = gi_all = li_all = rep_all = np.empty(0, dtype=np.int64)
    if not prune:
        return groups, D, E, rep_all, seq, gi_all, li_all
    pruned = np.concatenate(fars) if any_far else None
    return groups, D, E, rep_all, seq, gi_all, li_all, pruned, n_direct


def _screen_err(g, q_l1, q_K, q_r2, specs):
    """Bound on the error of screened distances (twice the float32 cross bound) for users with
    ``sum |beta|`` ``q_l1``, size ``q_K``, largest squared row norm ``q_r2`` (broadcast) against the
    group's specs ``specs`` (a slice or local indices)."""
    _, bl1, r2 = g.screen()
    return 2.0 * kernels.cross_inner_f32_bound(q_l1, bl1[specs], q_K, g.dim, g.gamma, np.maximum(r2[specs], q_r2))


def _far_specs(g, qz, qb, qo, err):
    """``(2B, far)``: ``2B`` (Q, n) bounds ``2 |<user q, spec i>|`` by the specs' covering balls, ``far``
    (n,) the specs where ``2B <= err`` (the float32 screening bound) for every user."""
    n = g.n
    centers, radii = g.balls()
    _, bl1, _ = g.screen()
    two_b = _two_b(kernels.ball_bound(qz, np.abs(qb), qo, centers, radii, g.gamma), np.abs(qb).sum(), bl1[None, :n])
    return two_b, (two_b <= err).all(axis=0)


def _two_b(bound, w_sum, bl1):
    """``2B`` from a bound on ``sum_a |qb_a| max_b k(a, z_b)`` (``w_sum = sum_a |qb_a|``, ``bl1`` the
    specs' ``sum_b |beta_b|``): 2 |cross| <= 2 bound bl1, plus the float64 kernel's own rounding."""
    return 2.0 * bound * bl1 * (1.0 + 1e-9) + 1e-14 * w_sum * bl1


def _projected_far(g, qz, user_groups, specs, err, two_b):
    """``(gone, their 2B)``: the specs among ``specs`` (local indices, one user) that the projection
    bound (:func:`lwengine.kernels.projection_bound`) shows to be far -- ``2B <= err`` as in
    :func:`_far_specs` -- tried only where the ball bound ``two_b`` is within ``PROJECT_MAX_RATIO`` of
    ``err`` (beyond that the spec is almost surely near)."""
    cand = specs[two_b[specs] <= PROJECT_MAX_RATIO * err[specs]]
    if len(cand) == 0:
        return cand, np.zeros(0)
    w, labels, centres = user_groups
    centers, radii = g.balls()
    z32, bl1, _ = g.screen()
    b = kernels.projection_bound(qz, w, labels, centres, z32[: int(g.offsets[g.n])], g.offsets[: g.n + 1], cand,
                                 centers, radii, g.gamma)
    two = _two_b(b, w.sum(), bl1[cand])
    keep = two <= err[cand]
    return cand[keep], two[keep]


PROJECT_FAR = True  # LocalBackend, one user: bound the specs about to be screened along projections first
PROJECT_MAX_RATIO = 100.0  # ... those whose ball bound is at most this multiple of their screening bound

DIRECT_FLOAT64 = True  # LocalBackend: scan in float64 at once the specs likely to be reported
DIRECT_SAMPLE = 256  # scanned specs screened first, to learn which others to compute in float64 (_direct_choice)
DIRECT_MIN_SPECS = 1024  # fewer scanned specs: always screen first
DIRECT_COST = 2.0  # a float64 evaluation costs about two float32 screens (d = 20: 5.5 vs 2.8 cycles per pair)


def _direct_choice(g, user, sample, sample_cross, rest, far, ball):
    """Which of the scanned specs ``rest`` of group ``g`` to compute in float64 at once (a mask).

    Every single the reference reports (score >= 0.6) needs its float64 distance, so screening it
    first is wasted work.  The screened ``sample`` (``sample_cross``: its float32 cross terms; the
    specs not scanned, ``far``, have a negligible one) gives estimated distances, the score rule of
    :func:`lwengine.scores.postprocess` on them a threshold, hence which sample specs will be reported.
    The rule "float64 where the ball bound ``ball`` (2B per spec, larger for nearer specs) is at least
    b" is then fitted on the sample -- b minimises its cost, a screen counting 1, a float64 evaluation
    ``DIRECT_COST`` and a reported single one of each unless taken direct -- and applied to ``rest``.
    With an uninformative bound this is all or nothing, by the reported share.  Only a speed
    choice, never a result: the refiner recomputes whatever else it needs."""
    none = np.zeros(len(rest), dtype=bool)
    if len(sample) == 0:
        return none
    _, _, _, uself = user
    base = finish(g.self_terms(), 0.0, uself)
    d_sample = base[sample] - 2.0 * sample_cross
    alive = g.alive[: g.n] if g.n_dead else np.ones(g.n, dtype=bool)
    d_far = base[alive & far] if far is not None else base[:0]
    n_near = len(sample) + int(np.count_nonzero(alive[rest]))
    if not (np.isfinite(d_sample).all() and np.isfinite(d_far).all() and np.isfinite(ball[sample]).all()):
        return none
    lo = min(float(d_sample.min()), float(d_far.min(initial=np.inf)))
    hi = max(float(d_sample.max()), float(d_far.max(initial=-np.inf)))
    if not hi > lo:
        return none
    mean = (float(d_far.sum()) + float(d_sample.mean()) * n_near) / (len(d_far) + n_near)
    eps = score_eps(lo, hi, mean)
    # score >= FILTER_SCORE  <=>  (hi - d) / (hi - eps) >= FILTER_SCORE^2 (the lift is a square root)
    reported = d_sample <= hi - FILTER_SCORE ** 2 * (hi - eps)
    order = np.argsort(-ball[sample], kind="stable")  # nearest first
    screen_cost = 1.0 + DIRECT_COST * reported[order]  # cost of a sample spec left to the screen
    tail = np.concatenate([np.cumsum(screen_cost[::-1])[::-1], [0.0]])
    cost = DIRECT_COST * np.arange(len(sample) + 1) + tail  # the first j (by bound) taken direct
    j = int(np.argmin(cost))
    if j == 0:
        return none
    if j == len(sample):
        return ~none
    return ball[rest] >= ball[sample[order[j - 1]]]


def _sample_at(near):
    """Positions (into ``near``) of the evenly spaced sample of :func:`_direct_choice`."""
    return np.unique(np.linspace(0, len(near) - 1, min(DIRECT_SAMPLE, len(near))).astype(np.int64))


SCREEN_MIN_SPECS = 256
PRUNE_FAR = True  # LocalBackend: bound far specs by their covering balls instead of scanning them
PREFIX_MIN = 65536  # above this many candidates only the needed sorted prefix is ranked eagerly


def _screens(group, screen) -> bool:
    """Whether a group is scanned through its float32 copy (see :func:`search`)."""
    if not group.family.sketchable:
        return False
    if screen is None:
        return group.z.dtype == np.float64 and group.n >= SCREEN_MIN_SPECS
    return bool(screen) and group.z.dtype == np.float64


class Refiner:
    """Turns screened (float32) distances into float64 ones where they decide the output.

    ``err[p]`` bounds ``|d[p] - exact d[p]|``; :meth:`certify` recomputes in float64 every position
    that may rank within the first ``R`` or be the largest, and returns how long the sorted prefix is
    that is certainly exact and complete.
    """

    def __init__(self, groups, gi_all, li_all, rep_all, err, user_z2, user_beta, user_self, *, device=None):
        self.groups, self.gi, self.li, self.rep = groups, gi_all, li_all, rep_all
        self.device = device
        self.err = err.copy()
        self.has_dups = bool((rep_all != np.arange(len(rep_all))).any())
        self.user = (np.ascontiguousarray(user_z2), user_beta, np.array([0, len(user_beta)], dtype=np.int64))
        self.user_self = user_self
        self.recomputed = 0
        self.pruned = None  # positions whose distance is a ball-bound estimate (not scanned), see complete()

    def certify(self, d, cand, R: int) -> int:
        """Make ``d`` exact where needed for the first ``R`` ranks (in place); returns the certified length."""
        err = self.err
        pos = np.flatnonzero(cand)
        if len(pos) == 0:
            return 0
        upper = d[pos] + err[pos]
        T = np.partition(upper, R - 1)[R - 1] if R < len(pos) else upper.max()
        lower = d[pos] - err[pos]
        need = (err[pos] > 0) & ((lower <= T) | (upper >= lower.max()))  # may rank in the top R, or be the max
        todo = pos[need]
        if len(todo):
            if self.has_dups:  # keep duplicate ties exact
                todo = np.flatnonzero(np.isin(self.rep, self.rep[todo]) & (err > 0))
            d[todo] = self.exact(todo)
            d[todo] = d[self.rep[todo]]
            err[todo] = 0.0
            self.recomputed += len(todo)
        return int(np.count_nonzero(d[pos] <= T))

    def mean_interval(self, d, cand):
        """``(lo, hi)`` bounds on the mean of ``d[cand]`` (exact distances within ``err``)."""
        pos = np.flatnonzero(cand)
        v, e = d[pos], self.err[pos]
        slack = 1e-12 * float(np.abs(v).sum() + e.sum())  # rounding of the two sums
        return (float((v - e).sum()) - slack) / len(pos), (float((v + e).sum()) + slack) / len(pos)

    def complete(self, d) -> None:
        """Scan the pruned positions after all (float32 screening, as every other position): ``d`` and
        the error bounds become those of an unpruned search."""
        pos, self.pruned = self.pruned, None
        if pos is None:
            return
        pos = pos[self.err[pos] > 0]  # positions certify() already made exact keep their value
        z2, beta = self.user[0], self.user[1]
        q_l1, q_r2 = float(np.abs(beta).sum()), float((z2 * z2).sum(1).max())
        for gi in np.unique(self.gi[pos]):
            at = pos[self.gi[pos] == gi]
            g = self.groups[gi]
            lis = self.li[at]
            cross = g.cross(*self.user, screened=True, specs=lis, device=self.device)[0]
            d[at] = finish(g.self_terms(lis), cross, self.user_self)
            self.err[at] = _screen_err(g, q_l1, len(beta), q_r2, lis)
        dup = np.flatnonzero(self.rep != np.arange(len(self.rep)))  # duplicates follow their representative
        d[dup] = d[self.rep[dup]]
        self.err[dup] = self.err[self.rep[dup]]

    def exact(self, todo) -> np.ndarray:
        """float64 distances of the positions ``todo`` (one gathered kernel call per group); backends
        that hold the rows elsewhere override this."""
        return exact_dists(self.groups, self.gi[todo], self.li[todo], self.user, self.user_self, device=self.device)


def exact_dists(groups, gis, lis, user, user_self, *, device=None) -> np.ndarray:
    """float64 ``d`` of the specs ``(groups[gis[j]], lis[j])`` for ``user = (z2, beta, offsets)``."""
    out = np.empty(len(gis))
    for gi in np.unique(gis):
        at = np.flatnonzero(gis == gi)
        g = groups[gi]
        cross = g.cross(*user, specs=lis[at], device=device)[0]
        out[at] = finish(g.self_terms(lis[at]), cross, user_self)
    return out


def _finish(groups, d, key, gi_all, li_all, user, user_z2, user_self, max_search_num, method,
            refiner=None, *, pack=None, device: str = "cpu") -> SearchResult:
    def ident(pos):
        return groups[gi_all[pos]].ids[li_all[pos]]

    listed = key >= 0
    finite = np.isfinite(d)
    bad = np.flatnonzero(listed & ~finite)
    bad = bad[np.argsort(key[bad], kind="stable")]
    nonfinite = [ident(p) for p in bad]
    if nonfinite:
        log.warning("dropped %d learnware(s) with a non-finite distance", len(nonfinite))
    cand = listed & finite
    sel = np.flatnonzero(cand)
    m = int(max_search_num)
    certified = len(sel)
    if refiner is not None:  # the pool must be exact before the mixture search
        d = d.copy()
        n_pruned = 0 if refiner.pruned is None else len(refiner.pruned)
        certified = refiner.certify(d, cand, max(1, m * m))

    key_sel = key[sel]
    key_rising = len(sel) < 2 or bool((key_sel[1:] > key_sel[:-1]).all())

    def rank(prev=None):  # ascending distance, ties in key order
        if key_rising and prev is not None:  # re-rank after a refinement: from the previous order,
            ds = d[prev]  # nearly sorted, which the stable sort exploits; without ties the order is unique
            local = np.argsort(ds, kind="stable")
            sd = ds[local]
            if not (sd[1:] == sd[:-1]).any():
                return prev[local], sd
        if key_rising:  # a stable sort by distance alone keeps the key order of ties
            ds = d[sel]
            local = np.argsort(ds)  # the faster unstable sort: the same order when no two are equal
            sd = ds[local]
            if (sd[1:] == sd[:-1]).any():
                local = np.argsort(ds, kind="stable")
            order = sel[local]
        else:
            order = sel[np.lexsort((key_sel, d[sel]))]
        return order, d[order]

    every = len(sel) == len(d)

    def rank_prefix(R):  # the first R positions of rank() (and every tie of the R-th), no full sort
        ds = d if every else d[sel]
        T = np.partition(ds, R - 1)[R - 1]
        top = np.flatnonzero(ds <= T) if every else sel[ds <= T]
        order = top[np.lexsort((key[top], d[top]))]
        return order, d[order]

    prefix_R = 0
    if refiner is None and len(sel) > PREFIX_MIN:
        prefix_R = max(m * m, 64)
        order, sorted_d = rank_prefix(prefix_R)
        final = {"order": None}

        def full_order():
            if final["order"] is None:
                final["order"] = rank()[0]
            return final["order"]
        result = SearchResult(single=[], mixture=None, _dists=lambda: d[full_order()], nonfinite_dropped=nonfinite,
                              _ranking_fn=lambda: [ident(p) for p in full_order()])
    else:
        order, sorted_d = rank()
        final = {"order": order}
        result = SearchResult(single=[], mixture=None, _dists=sorted_d, nonfinite_dropped=nonfinite,
                              _ranking_fn=lambda: [ident(p) for p in final["order"]])
    if len(order) == 0:
        return result
    pool = order[: m * m]
    result.pool = [ident(p) for p in pool]
    mix_dist, mix_ids, mix_w = None, [], None
    if method in _METHODS and sorted_d[0] > 0:
        z, beta, offsets, gammas = (pack or pack_pool)(groups, gi_all[pool], li_all[pool])
        fam, shape = groups[0].family, groups[0].shape
        lazy = method == "greedy" and fam is GAUSSIAN and device == "cpu" and len(np.unique(gammas)) == 1
        if lazy:  # greedy reads only a few columns of A: fill them on demand
            gram = _PoolGram(z, beta, offsets, float(gammas[0]), fam, shape)
            A = gram.A
            C = fam.cross_inner(user_z2, user.beta, np.array([0, len(user.beta)], dtype=np.int64), z, beta, offsets,
                                fam.param(user), shape, device=device)[0]
        else:
            A, C = pool_matrices(z, beta, offsets, gammas, user_z2, user.beta, fam.param(user), device=device,
                                 family=fam, shape=shape)
        result.pool_C = C
        if method == "greedy":
            P = len(pool)
            result.pool_K = (lambda: _earlier_gamma_gram(gram.full(), range(P))) if lazy else \
                _earlier_gamma_gram(A, range(P))
            mix_dist, mix_w, chosen, rounds = greedy_mixture(A, C, user_self, m, column=gram.column if lazy else None)
            for r in rounds:
                r["candidates"] = [result.pool[c] for c in r["candidates"]]
                r["best"] = result.pool[r["best"]]
            result.greedy_rounds = rounds
        else:
            result.pool_K = _earlier_gamma_gram(A, range(len(pool)))
            mix_dist, mix_w, chosen, result.auto_pool_weights = auto_mixture(A, C, user_self, m)
        mix_ids = [result.pool[c] for c in chosen]
        result.mixture_search = {"ids": mix_ids, "weights": np.asarray(mix_w, dtype=np.float64).tolist(),
                                 "mmd2": float(mix_dist)}
    else:
        result.mixture_dropped = "not_called"
    transform = registry.get(groups[0].spec_type).distance_transform
    if prefix_R:
        all_d = d if every else d[sel]
        while True:
            pp = postprocess_prefix(sorted_d, all_d, mix_dist, mixture_len=len(mix_ids), transform=transform)
            if pp.n_single < len(order) or len(order) == len(sel):
                break
            prefix_R = min(len(sel), 4 * prefix_R)
            order, sorted_d = rank_prefix(prefix_R)
    else:
        if refiner is not None and refiner.pruned is not None and not _mean_free(
                d, cand, refiner, sorted_d[0], mix_dist if len(mix_ids) > 1 else None, transform):
            refiner.complete(d)  # the scores depend on the mean of every distance: scan the pruned specs
            order, sorted_d = rank()
            final["order"], result.dists = order, sorted_d
        pp = postprocess_sorted(sorted_d, mix_dist, mixture_len=len(mix_ids), transform=transform)
    while refiner is not None and certified < min(len(order), pp.n_single + 1):
        # the reported singles and the first rejected one must be exact too (the pool stays as it is:
        # more refinement only changes distances beyond the certified prefix)
        certified = refiner.certify(d, cand, max(2 * certified, pp.n_single + 1))
        order, sorted_d = rank(order)
        final["order"], result.dists = order, sorted_d
        pp = postprocess_sorted(sorted_d, mix_dist, mixture_len=len(mix_ids), transform=transform)
    if refiner is not None:
        result.exact_recomputed, result.pruned = refiner.recomputed, n_pruned
    result.scores_before_filter = pp.scores_before_filter
    if refiner is not None and refiner.pruned is not None:
        def complete(res):  # the extras (every distance, ranking, score) as an unpruned search has them
            refiner.complete(d)
            res.exact_recomputed = refiner.recomputed
            final["order"], res.dists = rank()
            res.scores_before_filter = postprocess(res.dists, mix_dist, mixture_len=len(mix_ids),
                                                   transform=transform).scores_before_filter
        result._complete = complete
    if result.mixture_dropped is None:
        result.mixture_dropped = pp.mixture_dropped
    top = order[: pp.n_single]
    if len(groups) == 1:
        ids = groups[0].ids
        names = [ids[i] for i in li_all[top].tolist()]
    else:
        names = [groups[g].ids[i] for g, i in zip(gi_all[top].tolist(), li_all[top].tolist())]
    scores = np.asarray(pp.single_scores, dtype=np.float64).tolist()  # floats (all-equal scores are ints)
    result.single = list(map(SingleResult, names, sorted_d[: pp.n_single].tolist(), scores))
    if pp.mixture_kept:
        result.mixture = MixtureResult(mix_ids, [float(w) for w in mix_w], float(mix_dist), float(pp.mixture_score))
    return result


def _mean_free(d, cand, refiner, lo, mix_dist, transform) -> bool:
    """True when the scores of this search do not depend on the mean of the distances beyond what
    their error bounds decide: the score's eps is the smallest distance (it is below a tenth of every
    possible mean) or set from the smallest and largest (the max score is below MIN_SCORE for every
    possible mean), never the mean itself.  ``lo`` and the largest candidate are exact here."""
    if transform is not None:
        return False
    m_lo, m_hi = refiner.mean_interval(d, cand)
    hi = float(d[cand].max())
    lo = float(lo)
    n = int(np.count_nonzero(cand))
    if mix_dist is not None:  # the mixture's distance is one more entry of the scored list
        m_lo, m_hi = (m_lo * n + mix_dist) / (n + 1), (m_hi * n + mix_dist) / (n + 1)
        lo, hi = min(lo, mix_dist), max(hi, mix_dist)
    if lo == hi:
        return True
    tight = 1e-9  # margin for the rounding of postprocess's own comparisons
    eps_lo, eps_hi = DIST_RATIO * m_lo, DIST_RATIO * m_hi
    if lo < eps_lo * (1 - tight):
        return True
    if lo >= eps_hi * (1 + tight) and hi > eps_hi:
        return (hi - lo) / (hi - eps_hi) < MIN_SCORE * (1 - tight)
    return False


def pack_pool(groups, gis, lis):
    """Pool specs (float64 rows) packed as one store, plus their gammas."""
    zs, bs, lens, gammas = [], [], [], []
    for gi, li in zip(gis, lis):
        g = groups[gi]
        a, b = int(g.offsets[li]), int(g.offsets[li + 1])
        zs.append(g.full_rows(li))
        bs.append(np.asarray(g.beta[a:b]))
        lens.append(b - a)
        gammas.append(g.gamma)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return np.concatenate(zs), np.concatenate(bs), offsets, np.array(gammas)
