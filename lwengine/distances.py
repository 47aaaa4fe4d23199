"""The engine's distance: ``d_i = learnware_i.dist(user) = self_i - 2 cross_i + <u,u>`` (semantics §4).

``self_i`` is the stored spec's self inner product (its gamma), ``cross_i`` the cross inner product with
the learnware's gamma, ``<u,u>`` the user's self inner product with the user's gamma -- the reference's
bookkeeping, with the learnware as the caller.  :func:`finish` is the one place this sum is written
(search scan, certified / exact re-rank, sharded scans all call it); :class:`UserQuery` is a user spec
prepared once for every scan.
"""
from __future__ import annotations

import numpy as np

from .packed import digest
from .specs import registry

__all__ = ["finish", "UserQuery", "prepare_user"]


def finish(self_ip, cross, user_self):
    """``self_ip - 2 cross + user_self`` (broadcasting: (n,) stored, (Q, n) or (n,) cross, scalar or (Q, 1))."""
    return self_ip - 2.0 * cross + user_self


def prepare_user(spec, name: str = "user_spec", *, device: str = "auto"):
    """``(spec, z2, self_ip)``: the user spec (any accepted form), its float64 (K, d) rows and its
    self inner product; ValueError when that is not finite (the reference's applicability check)."""
    u = registry.as_spec(spec, name)
    z2 = np.ascontiguousarray(u.z.reshape(u.K, -1), dtype=np.float64)
    off = np.array([0, u.K], dtype=np.int64)
    fam = registry.entry_of(u).family
    self_ip = float(fam.self_inner(z2, u.beta, off, fam.param(u), u.z_shape, device=device)[0])
    if not np.isfinite(self_ip):
        raise ValueError(f"{name} has a non-finite self-distance (non-finite values in z or beta?)")
    return u, z2, self_ip


class UserQuery:
    """A user spec prepared for scans: rows, weights, offsets, self inner product, digest, gamma, type."""

    def __init__(self, spec, name: str = "user_spec", *, device: str = "auto"):
        self.device = device
        self.spec, self.z2, self.self_ip = prepare_user(spec, name, device=device)
        self.beta = np.ascontiguousarray(self.spec.beta, dtype=np.float64)
        self.offsets = np.array([0, self.spec.K], dtype=np.int64)
        self.digest = np.frombuffer(digest(self.z2, self.spec.beta), dtype=np.uint8)
        self.entry = registry.entry_of(self.spec)
        self.gamma = self.entry.family.param(self.spec)  # the user's kernel parameter (gamma for table specs)

    def matches(self, group) -> bool:
        """Whether ``group`` (a :class:`~lwengine.packed.PackedGroup`) holds specs comparable with this
        user: same registered type and the same match key of the trailing shape."""
        return (registry.lookup(group.spec_type) is self.entry
                and self.entry.match_key(group.shape) == self.entry.match_key(self.spec.z_shape))
