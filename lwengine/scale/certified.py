"""Top-k identification over a :class:`~lwengine.SpecIndex`: brute force, certified exact, approximate.

All three rank by the reference's ``d_i = learnware_i.dist(user)`` computed exactly as
:func:`lwengine.search.search` does (``self_i − 2 cross_i + ⟨u,u⟩_{γ_u}``, non-finite dropped, ties in
insertion order, a spec bit-identical to the user with the same gamma at exactly 0.0).

Certified mode: per group, Nyström bounds on the computed MMD² (:meth:`NystromSketch.bounds`) shifted by
the exact per-group offset ``⟨u,u⟩_{γ_u} − ⟨u,u⟩_γ`` and the per-spec ``self_ip − self_stored``; then
candidates are evaluated in batches in order of lower bound until the k-th best exact distance is
strictly below the next lower bound.  A clustered group (:mod:`lwengine.scale.clusters`) bounds only
the members of its nearest clusters first, then -- once an exact k-th distance gives a threshold --
the slices of the clusters that may hold a spec with a lower bound under it.  Adaptive: a group whose
probe showed a large residual share is scanned brute force, and when more than ``brute_fraction`` of
all specs have a lower bound under the k-th smallest upper bound, the query falls back to the batched
brute-force kernel.
"""
from __future__ import annotations

import time

import numpy as np

from .. import kernels
from ..distances import finish
from .sketch import EPS32, gather_store

__all__ = ["certified_topk", "exact_subset", "exact_group", "select_topk", "GroupQuery", "ClusteredScan",
           "group_bounds", "brute_groups"]

EPS_F64_STORE = 2.0 ** -50


def _finish_dists(g, local, cross, user):
    """``d`` for the group's specs ``local`` from their cross inner products (search's formula)."""
    d = finish(np.asarray(g.self_terms(local)), cross, user.self_ip)
    if g.family.copy_dist_zero and user.gamma == g.gamma:
        same = (np.asarray(g.digest[local]) == user.digest).all(axis=1)
        d[same] = 0.0
    return d


def exact_subset(g, local, user):
    """Exact distances of the group's specs ``local`` (one native call over the gathered sub-store)."""
    if len(local) == 0:
        return np.empty(0)
    z, beta, offs = gather_store(g, local)
    cross = kernels.cross_inner(user.z2.astype(g.dtype), user.beta, user.offsets, z, beta, offs, g.gamma,
                                device=getattr(user, "device", g.device))[0]
    return _finish_dists(g, local, cross, user)


def exact_group(g, user):
    """Exact distances of every alive spec of ``g`` -> ``(local, d)`` (search's brute-force scan)."""
    n = g.n
    cross = g.cross(user.z2, user.beta, user.offsets, device=getattr(user, "device", None))[0]
    local = np.arange(n)
    d = _finish_dists(g, local, cross, user)
    dups = g.duplicates()
    if dups:
        d[dups[0]] = d[dups[1]]
    live = np.flatnonzero(g.alive[:n])
    return live, d[live]


def select_topk(groups, found, k):
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


class GroupQuery:
    """The user projected into one sketched group, and the group's certified bounds."""

    def __init__(self, g, sk, user):
        self.g, self.sk = g, sk
        self.su = sk.user(user.z2.astype(g.dtype), user.beta)
        self.store_eps = EPS32 if g.dtype == np.float32 else EPS_F64_STORE
        self.user_K = user.spec.K
        # exact shift: the user's self term in gamma_u instead of the group's gamma
        self.shift_u = user.self_ip - self.su[3]

    def bounds(self, local=None):
        """``(local, lower, upper)`` of the computed ``d_i`` for the alive finite specs among
        ``local`` (default: all)."""
        g, sk = self.g, self.sk
        lo, hi = sk.bounds(self.su, store_eps=self.store_eps, user_K=self.user_K, idx=local)
        if local is None:
            local = np.arange(sk.n)
        shift = self.shift_u + sk.self_shift(g, local)
        lo, hi = lo + shift, hi + shift
        keep = np.asarray(g.alive)[local] & np.isfinite(lo) & np.isfinite(hi)
        return local[keep], lo[keep], hi[keep]

    def slack(self, self_i, abs_beta_i):
        return self.sk.slack_terms(self.su, self.store_eps, self.user_K, self_i, abs_beta_i)


def group_bounds(index, g, user, sk=None):
    """``(local, lower, upper)`` of the computed ``d_i`` for the group's alive finite specs."""
    return GroupQuery(g, sk or index.sketch_for(g, project=True), user).bounds()


class ClusteredScan:
    """Certified scan of a clustered group: seeds from the nearest clusters, then the slices of
    every cluster that may hold a spec with a lower bound <= the threshold."""

    SEED = 64

    def __init__(self, gq):
        self.gq = gq
        sk = gq.sk
        self.cl = sk.clusters
        self.v = self.cl.view(sk, gq.g)
        self.au = sk.lifted_user(gq.su)
        self.q, self.margin = self.cl.centroid_dist(self.v, self.au)

    def seeds(self):
        """Local indices of the nearest clusters' members (>= SEED alive specs) and of the specs
        added since the sorted view was built (its tail)."""
        v = self.v
        order_c = np.argsort(self.q, kind="stable")
        n_seed = int(np.searchsorted(np.cumsum(v["alive"][order_c]), self.SEED)) + 1
        self.seeded = order_c[:n_seed]
        st = v["starts"]
        pos = np.concatenate([np.arange(st[c], st[c + 1]) for c in self.seeded])
        return np.concatenate([v["order"][pos], np.arange(v["n"], self.cl.n)])

    def expand(self, T):
        """Members (local indices) outside the seeds whose lower bound may be <= ``T``."""
        pos, opened = self.cl.slices(self.v, self.q, self.margin, T, self.gq.slack)
        local = self.v["order"][pos]
        local = local[~np.isin(self.cl.assign[local], self.seeded)]
        return local, opened

    def bounds_summary(self):
        au_hi = self.au.copy()
        au_hi[-1] = -au_hi[-1]  # [s_u, −√r_u]: its distance to a_i bounds the upper bound
        q_hi, _ = self.cl.centroid_dist(self.v, au_hi)
        return self.cl.bounds(self.v, self.q, self.margin, q_hi, self.gq.slack, self.gq.shift_u)


class _Candidates:
    """Specs with certified bounds, by group: ``lb``, ``ub``, group index, local index, evaluated."""

    def __init__(self):
        self.lb = self.ub = np.empty(0)
        self.gi = self.li = np.empty(0, dtype=np.int64)
        self.done = np.empty(0, dtype=bool)

    def add(self, i, local, lo, hi):
        self.lb, self.ub = np.concatenate([self.lb, lo]), np.concatenate([self.ub, hi])
        self.gi = np.concatenate([self.gi, np.full(len(local), i, dtype=np.int64)])
        self.li = np.concatenate([self.li, np.asarray(local, dtype=np.int64)])
        self.done = np.concatenate([self.done, np.zeros(len(local), dtype=bool)])


def _kth(values, k):
    return np.partition(values, k - 1)[k - 1] if len(values) >= k else np.inf


def certified_topk(index, groups, user, k, stats, brute_fraction):
    t = time.perf_counter()
    found, cand, clustered, summary = [], _Candidates(), [], []
    regimes = {}
    for i, g in enumerate(groups):
        sk = index.sketch_for(g, project=False)
        regimes[f"gamma={g.gamma:g}"] = {"regime": sk.regime, "resid_share_median": sk.resid_share_median,
                                         "r": sk.r, "m": sk.landmarks.shape[0],
                                         "clusters": sk.clusters.count if sk.clusters else 0,
                                         "sizing": list(sk.sizing), "dtype": sk.s.dtype.name,
                                         "int8_error_ratio": sk.int8_error_ratio}
        if sk.regime == "brute":
            live, d = exact_group(g, user)
            found.append((i, live, d))
            stats["exact_evaluations"] += len(live)
            summary.append((np.ones(len(d)), d, d))
            continue
        gq = GroupQuery(g, sk, user)
        if sk.clusters is None:
            local, lo, hi = gq.bounds()
            stats["candidates_scanned"] += sk.n
            summary.append((np.ones(len(lo)), lo, hi))
        else:
            c = ClusteredScan(gq)
            seeds = c.seeds()
            local, lo, hi = gq.bounds(seeds)
            stats["candidates_scanned"] += len(seeds)
            summary.append(c.bounds_summary())
            clustered.append((i, c))
        cand.add(i, local, lo, hi)
    stats["regimes"] = regimes
    if not len(cand.lb) and not clustered:
        stats["fallback"] = "brute_regime"
        stats["time_bounds_s"] = time.perf_counter() - t
        return select_topk(groups, found, k)
    known = np.concatenate([d for _, _, d in found]) if found else np.empty(0)
    best = known[np.isfinite(known)]
    cnt, lo_s, hi_s = (np.concatenate(a) for a in zip(*summary))
    ok = np.isfinite(lo_s) & np.isfinite(hi_s) & (cnt > 0)
    if ok.any():
        cnt, lo_s, hi_s = cnt[ok], lo_s[ok], hi_s[ok]
        stats["dist_mean_bounds"] = [float(cnt @ lo_s / cnt.sum()), float(cnt @ hi_s / cnt.sum())]
        stats["dist_max_bounds"] = [float(lo_s.max()), float(hi_s.max())]
    limit = brute_fraction * stats["n_specs"]
    batch, batches, expanded, first = max(2 * k, 64), 0, not clustered, True
    stats["clusters_opened"] = 0
    while True:
        kth = _kth(best, k)
        # each spec counted once: by its exact distance once evaluated, else by its upper bound
        T = min(_kth(np.concatenate([cand.ub[~cand.done], best]), k), kth)
        pending = np.flatnonzero(~cand.done & (cand.lb <= T))
        if not expanded and (batches or not len(pending)):  # a threshold: open the clusters that may matter
            for i, c in clustered:
                local, opened = c.expand(T)
                stats["clusters_opened"] += opened
                stats["candidates_scanned"] += len(local)
                local, lo, hi = c.gq.bounds(local)
                keep = lo <= T
                cand.add(i, local[keep], lo[keep], hi[keep])
            expanded, first = True, True
            stats["time_bounds_s"] = time.perf_counter() - t
            continue
        if not len(pending) or (len(best) >= k and kth < cand.lb[pending].min()):
            break
        pending = pending[np.argsort(cand.lb[pending], kind="stable")]
        if first:  # the lowest lower bounds of a new candidate set first: a tighter kth
            batch, first = max(2 * k, 64), False
        elif len(best) >= k:  # every candidate with a lower bound <= kth must be looked at: take them all
            batch = max(int(np.searchsorted(cand.lb[pending], kth, side="right")), batch)
        take = pending[:batch]
        if stats["exact_evaluations"] + len(take) > limit:  # bounds too loose: batched brute force
            stats["fallback"] = "bounds_too_loose"
            found = brute_groups(groups, user, stats)
            break
        batches += 1
        cand.done[take] = True
        for i in np.unique(cand.gi[take]):
            sel = take[cand.gi[take] == i]
            d = exact_subset(groups[i], cand.li[sel], user)
            found.append((int(i), cand.li[sel], d))
            stats["exact_evaluations"] += len(sel)
            best = np.concatenate([best, d[np.isfinite(d)]])
        if len(best) > k:
            best = np.partition(best, k - 1)[:k]
        elif len(best) < k:
            batch *= 2
    stats.setdefault("time_bounds_s", time.perf_counter() - t)
    stats["bounds_upper_k"] = float(_kth(np.concatenate([cand.ub, known[np.isfinite(known)]]), k))
    stats["candidates_after_bounds"] = int(np.count_nonzero(cand.lb <= stats["bounds_upper_k"]))
    stats["batches"] = batches
    return select_topk(groups, found, k)


def brute_groups(groups, user, stats):
    out = []
    for i, g in enumerate(groups):
        live, d = exact_group(g, user)
        out.append((i, live, d))
        stats["exact_evaluations"] += len(live)
    return out
