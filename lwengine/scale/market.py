"""Synthetic markets: many task specs generated directly (no fit), for tests and benchmarks.

Regimes (each task is a mixture of 1-3 Gaussian components; its spec is K points sampled from the
task, ``β`` Dirichlet(5) or uniform, ``γ`` = 0.1 unless given):

* ``families``: tasks belong to 16 families (centres N(0, 4²I)), each with its own 3-d frame: a task's
  components sit N(0, 1)·frame·2 around the family centre with spreads in [0.3, 1] along the frame
  plus 0.05 isotropic noise -- clustered, low intrinsic dimension (real tables have correlated features).
* ``text``: unit-norm embeddings (text-like, d typically 384): 256 topic directions; points are
  normalised ``topic + noise`` -- a kernel wide relative to the data.
* ``overlap``: every task is N(μ_t, σ_t²I) with μ_t ~ N(0, 0.5²I) and σ_t in [0.8, 1.2]: heavily
  overlapping clouds in d = 20, where no low-rank sketch separates specs.

Queries (:func:`make_queries`) are fresh samples of tasks drawn like the market's (new points), so a
query has near neighbours but no identical spec.
"""
from __future__ import annotations

import numpy as np

__all__ = ["REGIMES", "MarketSpec", "market_arrays", "make_market", "make_queries"]

REGIMES = ("families", "text", "overlap")


class MarketSpec:
    """The task distribution of a market (shared by its specs and its queries)."""

    def __init__(self, n, d, K, regime="families", *, seed=0, gamma=0.1, beta="dirichlet"):
        if regime not in REGIMES:
            raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
        if int(n) < 0 or int(d) < 1 or int(K) < 1:
            raise ValueError(f"need n >= 0, d >= 1, K >= 1, got n={n}, d={d}, K={K}")
        if beta not in ("dirichlet", "uniform"):
            raise ValueError(f"beta must be 'dirichlet' or 'uniform', got {beta!r}")
        self.n, self.d, self.K, self.regime = int(n), int(d), int(K), regime
        self.gamma, self.beta_kind, self.seed = float(gamma), beta, seed
        rng = np.random.default_rng([int(seed), 12345])
        if regime == "families":
            F, q = 16, min(3, self.d)
            self.centres = rng.normal(scale=4.0, size=(F, self.d))
            self.frames = np.linalg.qr(rng.normal(size=(F, self.d, q)))[0] * 2.0  # (F, d, q)
        elif regime == "text":
            t = rng.normal(size=(256, self.d))
            self.centres = t / np.linalg.norm(t, axis=1, keepdims=True)
        else:
            self.centres = None

    def _tasks(self, rng, B):
        """Component centres (B, 3, d), spreads (B, 3) and mixture weights (B, 3)."""
        d = self.d
        ncomp = rng.integers(1, 4, size=B)
        w = rng.dirichlet(np.ones(3), size=B) * (np.arange(3)[None, :] < ncomp[:, None])
        w /= w.sum(axis=1, keepdims=True)
        if self.regime == "families":
            fam = rng.integers(0, len(self.centres), size=B)
            q = self.frames.shape[2]
            mu = self.centres[fam][:, None, :] + rng.normal(scale=1.0, size=(B, 3, q)) @ \
                self.frames[fam].transpose(0, 2, 1)
            sig = rng.uniform(0.3, 1.0, size=(B, 3))
            self._fam = fam
        elif self.regime == "text":
            top = rng.integers(0, len(self.centres), size=(B, 3))
            mu = self.centres[top]
            sig = rng.uniform(0.3, 0.8, size=(B, 3)) / np.sqrt(d) * 2.0
        else:
            mu = np.repeat(rng.normal(scale=0.5, size=(B, 1, d)), 3, axis=1)
            sig = np.repeat(rng.uniform(0.8, 1.2, size=(B, 1)), 3, axis=1)
        return mu, sig, w

    def sample(self, rng, B):
        """``(z (B*K, d) float32, beta (B*K,))`` for B fresh tasks."""
        K, d = self.K, self.d
        mu, sig, w = self._tasks(rng, B)
        comp = (rng.random((B, K, 1)) > np.cumsum(w, axis=1)[:, None, :]).sum(axis=2)
        comp = np.minimum(comp, 2)
        b_idx = np.arange(B)[:, None]
        if self.regime == "families":  # within-family noise lives in the family's 3-d frame
            frames = self.frames[self._fam]  # (B, d, q)
            noise = np.einsum("bkq,bdq->bkd", rng.normal(size=(B, K, frames.shape[2])), frames) / 2.0 \
                + 0.05 * rng.normal(size=(B, K, d))
        else:
            noise = rng.normal(size=(B, K, d))
        z = mu[b_idx, comp] + sig[b_idx, comp][..., None] * noise
        if self.regime == "text":
            z /= np.linalg.norm(z, axis=2, keepdims=True)
        if self.beta_kind == "dirichlet":
            beta = rng.dirichlet(np.full(K, 5.0), size=B)
        else:
            beta = np.full((B, K), 1.0 / K)
        return z.reshape(B * K, d).astype(np.float32), beta.reshape(-1)


def market_arrays(market: MarketSpec, *, chunk=None):
    """``(z (n*K, d) float32, beta, offsets)`` of the whole market (preallocated, filled by chunks)."""
    n, K, d = market.n, market.K, market.d
    z = np.empty((n * K, d), dtype=np.float32)
    beta = np.empty(n * K)
    chunk = chunk or max(1, (1 << 22) // (K * d))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        rng = np.random.default_rng([int(market.seed), a])  # chunk-seeded: independent of chunk count
        z[a * K:b * K], beta[a * K:b * K] = market.sample(rng, b - a)
    offsets = np.arange(0, n * K + 1, K, dtype=np.int64)
    return z, beta, offsets


def make_market(n, d, K, regime="families", *, seed=0, gamma=0.1, beta="dirichlet", dtype="float32",
                progress=None):
    """A :class:`~lwengine.SpecIndex` holding ``n`` generated specs with ids ``"00000000"``..., and
    the :class:`MarketSpec` (for :func:`make_queries`)."""
    from ..index import SpecIndex

    market = MarketSpec(n, d, K, regime, seed=seed, gamma=gamma, beta=beta)
    index = SpecIndex(dtype=dtype)
    if n:
        z, b, offs = market_arrays(market)
        index.add_packed([f"{i:08d}" for i in range(n)], z, b, offs, gamma, progress=progress)
    return index, market


def make_queries(market: MarketSpec, q, *, seed=1):
    """``q`` user specs (:class:`~lwengine.RKMESpec`) drawn from the market's task distribution."""
    from ..specs.table import RKMESpec

    rng = np.random.default_rng([int(seed), 999])
    z, beta = market.sample(rng, q)
    K = market.K
    return [RKMESpec(z[i * K:(i + 1) * K].astype(np.float64), beta[i * K:(i + 1) * K], market.gamma, K)
            for i in range(q)]
