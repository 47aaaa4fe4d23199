"""Float64 numpy twins of every native kernel (same signatures as :mod:`lwengine.kernels`).

These are the oracles the native (C++/CUDA) kernels are tested against.  They favour clarity over
speed, follow the reference package's formulas literally (``||a-b||^2`` through the expansion
``||a||^2 - 2 a.b + ||b||^2`` with no clamp) and compute everything in float64.

Packed stores: ``z`` is ``(M, d)``, ``beta`` ``(M,)``, ``offsets`` ``(N + 1,)`` int64 with
``offsets[0] == 0`` and ``offsets[-1] == M``; spec ``i`` owns rows ``offsets[i]:offsets[i+1]``.
"""
from __future__ import annotations

import numpy as np

from ._reference_nngp import nngp_kernel as numpy_nngp

from .kernels import kmeanspp_indices

__all__ = [
    "gauss_kernel",
    "cross_inner",
    "self_inner",
    "gram",
    "kernel_mean",
    "zx_moments",
    "point_gram",
    "rs_step",
    "rs_step_from_gram",
    "rs_step_from_moments",
    "simplex_qp",
    "simplex_qp_batch",
    "kmeans",
]


def gauss_kernel(a, b, gamma):
    """``k[i, j] = exp(-gamma * (|a_i|^2 - 2 a_i.b_j + |b_j|^2))`` in float64, shape (len(a), len(b))."""
    a, b = _rows(a), _rows(b)
    sq = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    return np.exp(-float(gamma) * sq)


def _rows(a):
    """``a`` as float64 (n, d) rows, d = product of the trailing dimensions (works for n = 0)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:])))


def _segments(offsets):
    offsets = np.asarray(offsets, dtype=np.int64)
    return [(int(offsets[i]), int(offsets[i + 1])) for i in range(len(offsets) - 1)]


def cross_inner(q_z, q_beta, q_offsets, z, beta, offsets, gamma):
    """``out[q, i] = sum_a sum_b qbeta_a beta_b k(qz_a, z_b)`` over query spec q and store spec i."""
    q_beta = np.asarray(q_beta, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    qs, ss = _segments(q_offsets), _segments(offsets)
    out = np.zeros((len(qs), len(ss)), dtype=np.float64)
    if len(qs) == 0 or len(ss) == 0:
        return out
    k = gauss_kernel(q_z, z, gamma)
    for qi, (qa, qb) in enumerate(qs):
        row = q_beta[qa:qb] @ k[qa:qb]  # (M,)
        for si, (sa, sb) in enumerate(ss):
            out[qi, si] = row[sa:sb] @ beta[sa:sb]
    return out


def self_inner(z, beta, offsets, gamma):
    """``out[i] = <mu_i, mu_i>`` for every spec of the store."""
    beta = np.asarray(beta, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    out = np.zeros(len(offsets) - 1, dtype=np.float64)
    for i, (a, b) in enumerate(_segments(offsets)):
        out[i] = beta[a:b] @ gauss_kernel(z[a:b], z[a:b], gamma) @ beta[a:b]
    return out


def gram(z, beta, offsets, gamma):
    """``out[i, j] = <mu_i, mu_j>`` over the specs of one packed set, shape (N, N)."""
    return cross_inner(z, beta, offsets, z, beta, offsets, gamma)


def zx_moments(z, x, gamma):
    """Streaming moments of the reduced set against data.

    Returns ``(C, T)`` with ``C_i = mean_j k(z_i, x_j)`` (the kernel mean) and
    ``T_i = mean_j k(z_i, x_j) x_j`` so that ``mean_j k(z_i, x_j)(z_i - x_j) = C_i z_i - T_i``.
    """
    x = _rows(x)
    k = gauss_kernel(z, x, gamma)  # (K, n)
    n = x.shape[0]
    return k.sum(1) / n, (k @ x) / n


def kernel_mean(z, x, gamma):
    """``C_i = (1/n) sum_j k(z_i, x_j)``, shape (K,)."""
    return zx_moments(z, x, gamma)[0]


def point_gram(z, gamma):
    """``G_ij = exp(-gamma ((|z_i|^2 + |z_j|^2) - 2 z_i.z_j))`` over the rows of z, (K, K)."""
    z = _rows(z)
    n = (z * z).sum(1)
    return np.exp(-float(gamma) * ((n[:, None] + n[None, :]) - 2.0 * (z @ z.T)))


def rs_step_from_gram(z, beta, C, T, G, gamma, step_size, *, exact_gradient=False):
    """:func:`rs_step_from_moments` with ``k(z_i, z_j)`` read from ``G`` (= point_gram(z))."""
    z = _rows(z)
    beta = np.asarray(beta, dtype=np.float64)
    w = np.asarray(G, dtype=np.float64) * beta[None, :]
    t1 = w.sum(1)[:, None] * z - w @ z
    t2 = -2.0 * (np.asarray(C)[:, None] * z - np.asarray(T))
    factor = 2.0 if exact_gradient else 1.0
    g = -2.0 * float(gamma) * beta[:, None] * (factor * t1 + t2)
    return z - float(step_size) * g


def rs_step_from_moments(z, beta, C, T, gamma, step_size, *, exact_gradient=False):
    """One Jacobi Z update given the data moments at ``z`` (see :func:`zx_moments`).

    Reference (semantics 1.8): ``g_i = -2 gamma beta_i (t1_i + t2_i)`` with
    ``t1_i = sum_j beta_j k(z_i, z_j)(z_i - z_j)`` and ``t2_i = -2 (C_i z_i - T_i)``;
    ``exact_gradient=True`` uses ``2 t1_i + t2_i`` (the true gradient of MMD^2).
    """
    z = np.asarray(z, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    kzz = gauss_kernel(z, z, gamma)
    w = kzz * beta[None, :]
    t1 = w.sum(1)[:, None] * z - w @ z
    t2 = -2.0 * (np.asarray(C)[:, None] * z - np.asarray(T))
    factor = 2.0 if exact_gradient else 1.0
    g = -2.0 * float(gamma) * beta[:, None] * (factor * t1 + t2)
    return z - float(step_size) * g


def rs_step(z, beta, x, gamma, step_size, *, exact_gradient=False):
    """One reduced-set Z update against data ``x`` (reference factor unless ``exact_gradient``)."""
    C, T = zx_moments(z, x, gamma)
    return rs_step_from_moments(z, beta, C, T, gamma, step_size, exact_gradient=exact_gradient)


# ----------------------------------------------------------------------------------------- QP
def _merge_identical(G, c):
    """Group indices whose rows of G and entries of c are bit-identical."""
    groups: dict[bytes, list[int]] = {}
    for i in range(len(c)):
        key = G[i].tobytes() + np.float64(c[i]).tobytes()
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _face_direction(H, g):
    """Step on the face {sum p = 0}: Newton step for min 1/2 p'Hp + g'p, or a descent ray.

    Returns ``(p, is_ray)``; ``p`` is None when the point is stationary on the face.
    """
    f = len(g)
    if f == 1:
        return None, False
    q, _ = np.linalg.qr(np.ones((f, 1)), mode="complete")
    N = q[:, 1:]  # orthonormal basis of {sum p = 0}
    Hr = N.T @ H @ N
    r = N.T @ g
    w, V = np.linalg.eigh(0.5 * (Hr + Hr.T))
    coef = V.T @ r
    scale = max(float(np.abs(w).max()), 1e-300)
    flat = w <= 1e-12 * scale
    rtol = 1e-13 * max(1.0, float(np.abs(g).max()))
    # zero or negative curvature with a gradient component along it: move along a descent ray
    ray = flat & ((np.abs(coef) > rtol) | (w < -1e-12 * scale))
    if ray.any():
        k = int(np.argmin(np.where(ray, w, np.inf)))
        d = -np.sign(coef[k]) * V[:, k] if coef[k] != 0 else V[:, k]
        return N @ d, True
    steps = np.where(flat, 0.0, -coef / np.where(flat, 1.0, w))
    p = N @ (V @ steps)
    if np.abs(p).max() <= 1e-15:
        return None, False
    return p, False


def _active_set_qp(G, c):
    n = len(c)
    x = np.zeros(n)
    i0 = int(np.argmin(0.5 * np.diag(G) - c))
    x[i0] = 1.0
    free = [i0]
    stationary = False
    for _ in range(100 * n + 100):
        g = G @ x - c
        if not stationary:
            F = np.array(sorted(free))
            p, is_ray = _face_direction(G[np.ix_(F, F)], g[F])
            if p is not None:
                neg = p < 0
                ratios = np.where(neg, -x[F] / np.where(neg, p, -1.0), np.inf)
                j = int(np.argmin(ratios))
                alpha = ratios[j] if is_ray else min(1.0, ratios[j])
                x[F] = x[F] + alpha * p
                if alpha == ratios[j]:
                    x[F[j]] = 0.0
                    free.remove(int(F[j]))
                    x[x < 0] = 0.0
                    x /= x.sum()
                    continue
                stationary = True
                continue
        # stationary on the face: check the multipliers of the bound constraints
        F = np.array(sorted(free))
        t = float(np.mean(g[F]))
        out = np.setdiff1d(np.arange(n), F)
        if len(out) == 0:
            break
        mu = g[out] - t
        j = int(np.argmin(mu))
        if mu[j] >= -1e-13 * max(1.0, float(np.abs(g).max())):
            break
        free.append(int(out[j]))
        stationary = False
    return x


def simplex_qp(G, c, *, x0=None):
    """Exact solution of ``min 1/2 x'Gx - c'x  s.t. x >= 0, sum x = 1``.

    Returns ``(x, obj)``.  Bit-identical rows (duplicate points) share their weight equally, as the
    reference's interior-point solver does.  ``x0`` (the native warm start) is accepted for
    signature parity and ignored: this twin always starts from the best vertex.
    """
    G = np.asarray(G, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    n = len(c)
    groups = _merge_identical(G, c)
    reps = [grp[0] for grp in groups]
    y = _active_set_qp(G[np.ix_(reps, reps)], c[reps])
    x = np.zeros(n)
    for grp, yg in zip(groups, y):
        x[grp] = yg / len(grp)
    obj = 0.5 * x @ G @ x - c @ x
    return x, float(obj)


def simplex_qp_batch(Gs, cs):
    """:func:`simplex_qp` over a batch: ``Gs`` (B, n, n), ``cs`` (B, n) -> ``(xs (B, n), objs (B,))``."""
    res = [simplex_qp(G, c) for G, c in zip(Gs, cs)]
    xs = np.array([r[0] for r in res]).reshape(len(res), -1)
    return xs, np.array([r[1] for r in res], dtype=np.float64)


# ------------------------------------------------------------------------------------ k-means
def kmeans(x, k, *, max_iter=100, tol=1e-4, seed=None, init="random", init_idx=None):
    """Lloyd's k-means in float32 with the reference's rules.

    init ``"random"``: k rows drawn uniformly with replacement (``numpy.random.default_rng(seed)``);
    ``"k-means++"``: D^2 seeding; ``init_idx`` overrides both.  Assignment: argmax of
    ``2 x.c - |x|^2 - |c|^2`` (ties to the lowest index); an empty cluster's centroid becomes zero;
    stop after the iteration whose summed squared centroid movement is ``<= tol``.
    Returns ``(centroids float32 (k, d), iterations)``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)
    n = x.shape[0]
    if init_idx is not None:
        idx = np.asarray(init_idx, dtype=np.int64)
    elif init == "random":
        idx = np.random.default_rng(seed).integers(0, n, size=k)
    elif init == "k-means++":
        idx = kmeanspp_indices(x, k, seed)
    else:
        raise ValueError(f"init must be 'random' or 'k-means++', got {init!r}")
    c = x[idx].copy()
    xn = (x * x).sum(1)
    it = 0
    for it in range(1, max_iter + 1):
        # Score each distinct centroid once so that duplicates tie exactly (BLAS may round two
        # identical columns differently); ties go to the lowest index.
        uniq, first = np.unique(c, axis=0, return_index=True)
        score = 2.0 * (x @ uniq.T) - xn[:, None] - (uniq * uniq).sum(1)[None, :]
        order = np.argsort(first, kind="stable")  # distinct centroids by their lowest index
        lab = first[order][np.argmax(score[:, order], axis=1)]
        new = np.zeros_like(c)
        for j in range(k):
            sel = x[lab == j]
            if len(sel):
                new[j] = sel.mean(0)
        shift = float(((new - c) ** 2).sum())
        c = new
        if shift <= tol:
            break
    return c, it


# --- NNGP (image specs) ---------------------------------------------------------------------
def nngp_kernel(x, y=None, *, depth: int = 3, precision: str = "float64", device: str = "cpu"):
    """float64 twin of :func:`lwengine.kernels.nngp_kernel` (the numpy recursion of
    :mod:`lwengine._reference_nngp`; ``precision="float32"`` runs it in float32)."""
    return numpy_nngp(x, y, depth=depth, dtype=np.float64 if precision == "float64" else np.float32)
