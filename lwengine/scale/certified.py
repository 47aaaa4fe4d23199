"""Top-k identification over a :class:`~lwengine.SpecIndex`: brute force, certified exact, approximate.

All three rank by the reference's ``d_i = learnware_i.dist(user)`` computed exactly as
:func:`lwengine.search.search` does (``self_i − 2 cross_i + ⟨u,u⟩_{γ_u}``, non-finite dropped, ties in
insertion order, a spec bit-identical to the user with the same gamma at exactly 0.0).

Certified mode: per group, Nyström bounds on the computed MMD² (:meth:`NystromSketch.bounds`) shifted by
the exact per-group offset ``⟨u,u⟩_{γ_u} − ⟨u,u⟩_γ`` and the per-spec ``self_ip − self_stored``; then
candidates are evaluated in batches in order of lower bound until the k-th best exact distance is
strictly below the next lower bound.  Adaptive: a group whose probe showed a large residual share is
scanned brute force, and when more than ``brute_fraction`` of all specs have a lower bound under the
k-th smallest upper bound, the query falls back to the batched brute-force kernel.
"""
from __future__ import annotations

import time

import numpy as np

from .. import kernels
from .sketch import EPS32, gather_store

__all__ = ["topk", "MODES"]

MODES = ("certified", "approx", "brute")
EPS_F64_STORE = 2.0 ** -50


class _User:
    def __init__(self, spec):
        from ..index import _digest
        from ..search import _user

        self.spec, self.z2, self.self_ip = _user(spec, "user_spec")
        self.beta = np.ascontiguousarray(self.spec.beta, dtype=np.float64)
        self.offsets = np.array([0, self.spec.K], dtype=np.int64)
        self.digest = np.frombuffer(_digest(self.z2, self.spec.beta), dtype=np.uint8)
        self.gamma = float(self.spec.gamma)


def _finish_dists(g, local, cross, user):
    """``d`` for the group's specs ``local`` from their cross inner products (search's formula)."""
    d = np.asarray(g.self_ip[local]) - 2.0 * cross + user.self_ip
    if user.gamma == g.gamma:
        same = (np.asarray(g.digest[local]) == user.digest).all(axis=1)
        d[same] = 0.0
    return d


def exact_subset(g, local, user):
    """Exact distances of the group's specs ``local`` (one native call over the gathered sub-store)."""
    if len(local) == 0:
        return np.empty(0)
    z, beta, offs = gather_store(g, local)
    cross = kernels.cross_inner(user.z2.astype(g.dtype), user.beta, user.offsets, z, beta, offs, g.gamma)[0]
    return _finish_dists(g, local, cross, user)


def exact_group(g, user):
    """Exact distances of every alive spec of ``g`` -> ``(local, d)`` (search's brute-force scan)."""
    n = g.n
    cross = g.cross(user.z2, user.beta, user.offsets)[0]
    local = np.arange(n)
    d = _finish_dists(g, local, cross, user)
    dups = g.duplicates()
    if dups:
        d[dups[0]] = d[dups[1]]
    live = np.flatnonzero(g.alive[:n])
    return live, d[live]


def _select(groups, found, k):
    """The top-k ``(id, dist)`` from ``found`` = list of (group index, local, d) arrays."""
    if not found:
        return []
    gi = np.concatenate([np.full(len(l), i, dtype=np.int64) for i, l, _ in found])
    li = np.concatenate([l for _, l, _ in found]).astype(np.int64)
    d = np.concatenate([x for _, _, x in found])
    seq = np.concatenate([np.asarray(groups[i].seq[l], dtype=np.int64) for i, l, _ in found])
    ok = np.isfinite(d)
    sel = np.flatnonzero(ok)
    order = sel[np.lexsort((seq[sel], d[sel]))][:k]
    return [(groups[gi[p]].ids[li[p]], float(d[p])) for p in order]


def _check(k, mode):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def topk(index, user_spec, k: int = 5, mode: str = "certified", *, brute_fraction: float = 0.5,
         pool: int | None = None, approx_sketch: str = "nystrom", ef_search: int | None = None):
    """``(results, stats)``; see :meth:`lwengine.SpecIndex.topk`."""
    _check(k, mode)
    t0 = time.perf_counter()
    user = _User(user_spec)
    groups = [g for g in index._groups.values() if g.shape == user.spec.z_shape and g.n_alive]
    n_total = sum(g.n_alive for g in groups)
    stats = {"mode": mode, "k": int(k), "n_specs": n_total, "groups": len(groups), "exact_evaluations": 0,
             "candidates_scanned": 0, "fallback": None}
    if mode == "brute" or not groups:
        found = []
        for i, g in enumerate(groups):
            live, d = exact_group(g, user)
            found.append((i, live, d))
            stats["exact_evaluations"] += len(live)
        res = _select(groups, found, k)
    elif mode == "approx":
        from .approx import approx_topk

        res = approx_topk(index, groups, user, k, stats, pool=pool, sketch=approx_sketch, ef_search=ef_search)
    else:
        res = _certified(index, groups, user, k, stats, brute_fraction)
    stats["time_total_s"] = time.perf_counter() - t0
    return res, stats


def group_bounds(index, g, user, sk=None):
    """``(local, lower, upper)`` of the computed ``d_i`` for the group's alive finite specs."""
    sk = sk or index._sketch_for(g, project=True)
    su = sk.user(user.z2.astype(g.dtype), user.beta)
    store_eps = EPS32 if g.dtype == np.float32 else EPS_F64_STORE
    lo, hi = sk.bounds(su, store_eps=store_eps, user_K=user.spec.K)
    n = g.n
    # exact shifts: the user's self term in gamma_u instead of the group's gamma (and, for a
    # float32 store, the stored-vs-original self terms)
    shift_u = user.self_ip - su[3]
    shift_i = np.asarray(g.self_ip[:n]) - sk.self_stored[:n]
    lo = lo + shift_u + shift_i
    hi = hi + shift_u + shift_i
    live = np.flatnonzero(np.asarray(g.alive[:n]) & np.isfinite(lo) & np.isfinite(hi))
    return live, lo[live], hi[live]


def _certified(index, groups, user, k, stats, brute_fraction):
    t = time.perf_counter()
    found, LB, UB, GI, LI = [], [], [], [], []
    regimes = {}
    for i, g in enumerate(groups):
        sk = index._sketch_for(g, project=False)
        regimes[f"gamma={g.gamma:g}"] = {"regime": sk.regime, "resid_share_median": sk.resid_share_median,
                                         "r": sk.r}
        if sk.regime == "brute":
            live, d = exact_group(g, user)
            found.append((i, live, d))
            stats["exact_evaluations"] += len(live)
            continue
        live, lo, hi = group_bounds(index, g, user, sk)
        stats["candidates_scanned"] += len(live)
        LB.append(lo), UB.append(hi), GI.append(np.full(len(live), i, dtype=np.int64)), LI.append(live)
    stats["regimes"] = regimes
    stats["time_bounds_s"] = time.perf_counter() - t
    if not LB:
        stats["fallback"] = "brute_regime"
        return _select(groups, found, k)
    LB, UB, GI, LI = (np.concatenate(a) for a in (LB, UB, GI, LI))
    known = np.concatenate([d for _, _, d in found]) if found else np.empty(0)
    known = known[np.isfinite(known)]
    both = np.concatenate([UB, known])
    u_k = np.partition(both, k - 1)[k - 1] if len(both) >= k else np.inf
    need = np.flatnonzero(LB <= u_k)
    stats["bounds_upper_k"] = float(u_k)
    stats["candidates_after_bounds"] = int(len(need))
    stats["dist_mean_bounds"] = [float(LB.mean()), float(UB.mean())]
    stats["dist_max_bounds"] = [float(LB.max()), float(UB.max())]
    order = need[np.argsort(LB[need], kind="stable")]
    best = known.copy()
    pos, batch, batches = 0, max(2 * k, 64), 0
    limit = brute_fraction * stats["n_specs"]
    while pos < len(order):
        take = order[pos: pos + batch]
        pos += len(take)
        batches += 1
        for i in np.unique(GI[take]):
            sel = take[GI[take] == i]
            d = exact_subset(groups[i], LI[sel], user)
            found.append((int(i), LI[sel], d))
            stats["exact_evaluations"] += len(sel)
            best = np.concatenate([best, d[np.isfinite(d)]])
        if len(best) >= k:
            best = np.partition(best, k - 1)[:k]
            kth = best[k - 1]
            if pos >= len(order) or kth < LB[order[pos]]:
                break
            # every remaining candidate with a lower bound <= kth must be looked at: take them all
            batch = max(int(np.searchsorted(LB[order[pos:]], kth, side="right")), batch)
        else:
            batch *= 2
        if pos + batch > limit:  # bounds too loose for this query: the batched brute-force kernel
            stats["fallback"] = "bounds_too_loose"
            found = [(i, l, d) for i, l, d in _brute_groups(groups, user, stats)]
            break
    stats["batches"] = batches
    return _select(groups, found, k)


def _brute_groups(groups, user, stats):
    out = []
    for i, g in enumerate(groups):
        live, d = exact_group(g, user)
        out.append((i, live, d))
        stats["exact_evaluations"] += len(live)
    return out
