"""Approximate top-k: a faiss index over per-spec sketch vectors, then an exact re-rank of a pool.

Sketch vectors (``sketch=``):
* ``"nystrom"`` (default): the augmented Nyström sketch ``[s_i, √r_i]``; its squared L2 distance to
  ``[s_u, √r_u]`` is exactly the certified *lower* bound ``‖s_u − s_i‖² + (√r_u − √r_i)²`` (without
  slack), so the ANN graph orders specs by the same quantity certified mode uses.
* ``"rff"``: orthogonal random Fourier features (data-independent, an unbiased MMD² estimate, no bound).

A group whose Nyström sketch is clustered (:mod:`lwengine.scale.clusters`, ``n >= cluster_min_specs``)
is searched IVF-style over those clusters -- the ``nprobe`` clusters nearest to the user's lifted
sketch, their members ranked by the same lower bound -- with no second copy of the vectors and no graph
to build.  Otherwise faiss: HNSW (``IndexHNSWFlat``, M = 32) for groups above ``FLAT_MAX`` specs, an
exact flat L2 scan below.  Results are exact distances of the pool's best k; recall is what the
benchmark measures.
"""
from __future__ import annotations

import time

import numpy as np

from .. import kernels
from .certified import ClusteredScan, GroupQuery, exact_subset, select_topk
from .sketch import gather_store, rff_sketch, segment_add

__all__ = ["approx_topk", "AnnIndex", "FLAT_MAX", "NPROBE"]

FLAT_MAX = 20000
HNSW_M = 32
NPROBE = 16


class AnnIndex:
    """faiss index of one group's sketch vectors (faiss ids = local indices)."""

    def __init__(self, vectors, kind):
        import faiss

        self.kind = kind
        self.dim = vectors.shape[1]
        n = vectors.shape[0]
        if n > FLAT_MAX:
            self.index = faiss.IndexHNSWFlat(self.dim, HNSW_M)
            self.index.hnsw.efConstruction = 64
        else:
            self.index = faiss.IndexFlatL2(self.dim)
        self.add(vectors)
        self.rff = None  # (W, phase) for kind == "rff"

    @property
    def n(self):
        return self.index.ntotal

    def add(self, vectors):
        if len(vectors):
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, q, count, ef):
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efSearch = int(max(ef, count))
        D, I = self.index.search(np.ascontiguousarray(q.reshape(1, -1), dtype=np.float32), int(count))
        keep = I[0] >= 0
        return I[0][keep], D[0][keep]


def nystrom_vectors(sk, start=0, stop=None):
    return sk.lifted(slice(start, sk.n if stop is None else stop), np.float32)


def ann_for(index, g, sketch):
    """The group's ANN index for ``sketch`` (built or extended on demand)."""
    anns = g.ann
    ann = anns.get(sketch)
    if sketch == "nystrom":
        sk = index.sketch_for(g, project=True)
        if ann is None:
            ann = anns[sketch] = AnnIndex(nystrom_vectors(sk), "nystrom")
        elif ann.n < sk.n:
            ann.add(nystrom_vectors(sk, ann.n))
    elif sketch == "rff":
        sk = index.sketch_for(g, project=False)
        D = max(64, sk.r)
        if ann is None or ann.n < g.n:
            start = 0 if ann is None else ann.n
            z, beta, offs = gather_store(g, np.arange(start, g.n))
            seed = None if ann is None else ann.rff
            feats, rff = _rff(z, beta, offs, g.gamma, D, seed)
            if ann is None:
                ann = anns[sketch] = AnnIndex(feats, "rff")
                ann.rff = rff
            else:
                ann.add(feats)
    else:
        raise ValueError(f"approx_sketch must be 'nystrom' or 'rff', got {sketch!r}")
    return ann


def _rff(z, beta, offs, gamma, D, params):
    if params is None:
        return rff_sketch(z, beta, offs, gamma, D, seed=0)
    W, phase = params
    return _rff_apply(z, beta, offs, W, phase), params


def _rff_apply(z, beta, offs, W, phase):
    n = len(offs) - 1
    out = np.zeros((n, W.shape[0]))
    seg = np.repeat(np.arange(n), np.diff(offs))
    F = np.cos(np.asarray(z, dtype=np.float64) @ W.T + phase) * np.asarray(beta)[:, None]
    segment_add(out, seg, F)
    return (out * np.sqrt(2.0 / W.shape[0])).astype(np.float32)


def _user_vector(index, g, ann, user):
    if ann.kind == "nystrom":
        sk = index.sketch_for(g, project=True)
        su = sk.user(user.z2.astype(g.dtype), user.beta)
        return sk.lifted_user(su).astype(np.float32), user.self_ip - su[3]
    W, phase = ann.rff
    v = _rff_apply(user.z2, user.beta, user.offsets, W, phase)[0]
    off = user.self_ip - float(kernels.self_inner(user.z2, user.beta, user.offsets, g.gamma, device=g.device)[0])
    return v, off


def _cluster_probe(g, sk, user, pool, nprobe):
    """``(local, approx d, scanned)``: the pool best of the ``nprobe`` nearest clusters' alive members,
    by the slack-free lower bound (shifted like ``d``)."""
    gq = GroupQuery(g, sk, user)
    c = ClusteredScan(gq)
    near = np.argsort(c.q, kind="stable")[:nprobe]
    st = c.v["starts"]
    pos = np.concatenate([np.arange(st[j], st[j + 1]) for j in near]) if len(near) else np.empty(0, np.int64)
    local = np.concatenate([c.v["order"][pos], np.arange(c.v["n"], c.cl.n)])  # + the unsorted tail
    scanned = len(local)
    local = local[np.asarray(g.alive)[local]]
    su, squ, ru = gq.su[0], gq.su[1], gq.su[2]
    D = sk.sketch_dist(su, squ, local) + (np.sqrt(ru) - np.sqrt(sk.resid[local])) ** 2
    D += gq.shift_u + sk.self_shift(g, local)
    keep = np.isfinite(D)
    local, D = local[keep], D[keep]
    if len(D) > pool:
        sel = np.argpartition(D, pool - 1)[:pool]
        local, D = local[sel], D[sel]
    return local, D, scanned


def approx_topk(index, groups, user, k, stats, *, pool=None, sketch="nystrom", ef_search=None, nprobe=None):
    pool = int(pool) if pool is not None else max(8 * k, 32)
    if pool < k:
        raise ValueError(f"pool must be >= k ({k}), got {pool}")
    nprobe = NPROBE if nprobe is None else nprobe
    if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or nprobe < 1:
        raise ValueError(f"nprobe must be an integer >= 1, got {nprobe!r}")
    ef = ef_search if ef_search is not None else 2 * pool
    t = time.perf_counter()
    cands = []
    for i, g in enumerate(groups):
        if sketch == "nystrom":
            sk = index.sketch_for(g, project=True)
            if sk.clusters is not None:
                local, D, scanned = _cluster_probe(g, sk, user, pool, int(nprobe))
                cands.append((i, local, D))
                stats["candidates_scanned"] += scanned
                stats["approx_index"] = "clusters"
                continue
        ann = ann_for(index, g, sketch)
        stats["approx_index"] = "hnsw" if hasattr(ann.index, "hnsw") else "flat"
        q, off = _user_vector(index, g, ann, user)
        want = min(ann.n, pool + g.n_dead)
        I, D = ann.search(q, want, ef)
        alive = np.asarray(g.alive[: g.n])[I]
        cands.append((i, I[alive][:pool], D[alive][:pool] + off))
        stats["candidates_scanned"] += len(I)
    stats["time_ann_s"] = time.perf_counter() - t
    # merge groups by approximate distance, keep the pool's best
    allD = np.concatenate([c[2] for c in cands]) if cands else np.empty(0)
    cut = np.inf if len(allD) <= pool else np.partition(allD, pool - 1)[pool - 1]
    found = []
    for i, I, D in cands:
        sel = I[D <= cut]
        d = exact_subset(groups[i], sel, user)
        found.append((i, sel, d))
        stats["exact_evaluations"] += len(sel)
    stats["pool"] = pool
    stats["approx_sketch"] = sketch
    return select_topk(groups, found, k)
