"""Dists from one user spec to many learnwares that share the canonical z (differ only in beta).

The reference ranks by ``lw.dist(user) = lw.lw - 2 lw.user + user.user`` (the learnware as caller).
With z shared, ``lw_i.lw_i = beta_i' S beta_i`` (S: the one-object Gram, precomputable per learnware)
and ``lw_i.user = beta_i . v`` with ``v = X beta_user`` computed once per query (X: the two-object
kernel between the canonical z and the user's z).  ``exact=True`` instead evaluates each term as the
reference does (float32 entries, float64 products summed in torch's order): bit-equal dists, at
O(K * K_user) per learnware.
"""
from __future__ import annotations

import numpy as np

from .gram_cache import canonical_grams
from .reduction import torch_sum_f64

__all__ = ["canonical_self_terms", "canonical_dists"]

_CHUNK_ELEMS = 1 << 22


def _as_betas(betas, name="betas") -> np.ndarray:
    b = np.asarray(betas)
    if b.ndim != 2 or b.shape[1] < 1:
        raise ValueError(f"{name} must have shape (B, K) with K >= 1, got {b.shape}")
    if not np.issubdtype(b.dtype, np.number) or np.iscomplexobj(b):
        raise TypeError(f"{name} must hold real numbers, got dtype {b.dtype}")
    b = np.ascontiguousarray(b, dtype=np.float64)
    if not np.isfinite(b).all():
        raise ValueError(f"{name} must be finite")
    return b


def _exact_forms(G: np.ndarray, left: np.ndarray, right: np.ndarray | None) -> np.ndarray:
    """Per row i: torch_sum_f64(G * outer(left_i, right_i or right)) in chunks."""
    G64 = G.astype(np.float64)
    B = left.shape[0]
    out = np.empty(B, dtype=np.float64)
    step = max(1, _CHUNK_ELEMS // G.size)
    for s in range(0, B, step):
        L = left[s:s + step]
        R = L if right is None else np.broadcast_to(right, (L.shape[0], right.shape[-1]))
        prod = G64[None] * (L[:, :, None] * R[:, None, :])
        out[s:s + step] = torch_sum_f64(prod.reshape(L.shape[0], -1))
    return out


def canonical_self_terms(betas, channels: int, *, depth: int = 3, exact: bool = False) -> np.ndarray:
    """``lw_i.inner_prod(lw_i)`` for learnwares with canonical z: betas (B, K) -> (B,) float64."""
    b = _as_betas(betas)
    S, _ = canonical_grams(int(channels), int(depth), b.shape[1])
    if exact:
        return _exact_forms(S, b, None)
    return np.einsum("bi,bi->b", b @ S.astype(np.float64), b)


def canonical_dists(user, betas, *, depth: int = 3, self_terms=None, exact: bool = False) -> np.ndarray:
    """Reference dists ``lw_i.dist(user)`` for learnwares (canonical z of K = betas.shape[1], the
    user's channel count, net_depth ``depth``) -> (B,) float64.

    ``self_terms`` (B,): precomputed :func:`canonical_self_terms` (else computed here, O(K^2) each).
    The user may have any z; its cross kernel against the canonical z is computed once.
    """
    from .spec import RKMEImageSpec

    if not isinstance(user, RKMEImageSpec):
        raise TypeError(f"user must be an RKMEImageSpec, got {type(user).__name__}")
    b = _as_betas(betas)
    B, K = b.shape
    C = user.channels
    same, cross = canonical_grams(C, int(depth), max(K, user.K) if user.canonical else K)
    if user.canonical:
        X = cross[:K, : user.K]
    else:
        from .rng import NetConfig, canonical_z
        from .spec import nngp_gram

        X = nngp_gram(canonical_z(K, NetConfig(C)), user.z, int(depth), np.float32)
    bu = user.beta.astype(np.float64)
    t3 = user.inner_prod(user)
    if self_terms is None:
        t1 = canonical_self_terms(b, C, depth=depth, exact=exact)
    else:
        t1 = np.asarray(self_terms, dtype=np.float64).reshape(-1)
        if t1.shape[0] != B:
            raise ValueError(f"self_terms must have length {B}, got {t1.shape[0]}")
    if exact:
        t2 = _exact_forms(X, b, bu[None, :])
    else:
        v = X.astype(np.float64) @ bu
        t2 = b @ v
    return t1 - 2 * t2 + t3
