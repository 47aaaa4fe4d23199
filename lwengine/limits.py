"""Caps on the work one untrusted spec may cost, and the dock's γ policy.

A search computes the user's self inner product (O(K² d)) and its cross products with every stored
spec (O(K · ΣKᵢ · d)); ingesting a spec costs O(K² d) in every reader that loads it.  These caps are
checked before any kernel runs.  The library's reference semantics are untouched: the caps and the
γ policy are applied by the dock, the HTTP service and the CLI.  See docs/security.md.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["SpecLimits", "DEFAULT_SPEC_LIMITS", "GammaPolicy", "ANY_GAMMA", "REFERENCE_GAMMA",
           "check_spec_cost", "check_spec_file_size", "check_spec_values", "MAX_NUM_POINTS", "MAX_ABS_Z"]

MAX_NUM_POINTS = (1 << 63) - 1   # num_points is stored as int64
MAX_ABS_Z = 1e150                # |z|² beyond ~1e308 overflows: such specs are refused


@dataclass(frozen=True)
class SpecLimits:
    """``max_K``: reduced-set points of one spec; ``max_Kd``: K times the flattened dimension d
    (the reference's fit cap is K·d ≤ 1,310,720); ``max_spec_bytes``: size of a spec file."""

    max_K: int = 2048
    max_Kd: int = 1_310_720
    max_spec_bytes: int = 64 << 20

    def __post_init__(self):
        for name in ("max_K", "max_Kd", "max_spec_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


DEFAULT_SPEC_LIMITS = SpecLimits()


def check_spec_cost(spec, limits: SpecLimits | None = None, what: str = "spec") -> None:
    """ValueError naming ``what`` when ``spec`` (anything with ``K`` and ``dim``) exceeds the caps."""
    lim = limits or DEFAULT_SPEC_LIMITS
    K, d = int(spec.K), int(spec.dim)
    if K > lim.max_K:
        raise ValueError(f"{what}: K = {K} reduced-set points, over the limit max_K = {lim.max_K}")
    if K * d > lim.max_Kd:
        raise ValueError(f"{what}: K·d = {K}·{d} = {K * d}, over the limit max_Kd = {lim.max_Kd}")


def check_spec_file_size(path, limits: SpecLimits | None = None) -> None:
    """ValueError when the spec file ``path`` is larger than ``max_spec_bytes`` (checked before parsing)."""
    lim = limits or DEFAULT_SPEC_LIMITS
    size = os.path.getsize(path)
    if size > lim.max_spec_bytes:
        raise ValueError(f"{os.fspath(path)}: spec file is {size} bytes, over the limit {lim.max_spec_bytes}")


def check_spec_values(z, num_points: int) -> None:
    """A spec's values the index and the dock can hold: ``num_points`` fits int64, finite ``|z|``
    below ``MAX_ABS_Z`` (squared distances of larger values overflow to NaN)."""
    if num_points > MAX_NUM_POINTS:
        raise ValueError(f"num_points must be < 2**63, got {num_points}")
    if z.size:
        m = max(float(z.max()), -float(z.min()))  # max |z| without an |z| array (NaN propagates)
        if not math.isfinite(m):  # non-finite values are allowed (search drops such specs)
            m = float(np.max(np.abs(np.where(np.isfinite(z), z, 0.0))))
        if m >= MAX_ABS_Z:
            raise ValueError(f"z holds a value of magnitude {m:.3g} >= {MAX_ABS_Z:g} (squared distances would "
                             "overflow); rescale the data")


REFERENCE_GAMMA = 0.1


class GammaPolicy:
    """The kernel parameters γ a dock accepts (ingest and user specs).

    The reference's ``dist`` uses the learnware's own γ for two of its three terms, so a learnware
    with a tiny γ gets a negative distance to every user and ranks first.  ``allowed``: the accepted
    values (compared with relative tolerance ``rtol``); ``None`` accepts any γ (the reference)."""

    def __init__(self, allowed=(REFERENCE_GAMMA,), rtol: float = 1e-12):
        if allowed is not None:
            vals = []
            for g in allowed:
                if isinstance(g, bool) or not isinstance(g, (int, float)) or not (math.isfinite(g) and g > 0):
                    raise ValueError(f"allowed gamma values must be finite positive numbers, got {g!r}")
                vals.append(float(g))
            if not vals:
                raise ValueError("allowed gamma values must not be empty (use None to accept any gamma)")
            allowed = tuple(sorted(set(vals)))
        self.allowed, self.rtol = allowed, float(rtol)

    @classmethod
    def parse(cls, text: str) -> "GammaPolicy":
        """From a command-line value: ``"any"`` or comma-separated numbers (``"0.1,0.05"``)."""
        if text.strip().lower() == "any":
            return cls(None)
        try:
            return cls([float(t) for t in text.split(",") if t.strip()])
        except ValueError as exc:
            raise ValueError(f"--allowed-gamma must be 'any' or comma-separated numbers, got {text!r}") from exc

    def check(self, gamma, what: str = "spec") -> None:
        if self.allowed is None:
            return
        g = float(gamma)
        if not any(abs(g - a) <= self.rtol * a for a in self.allowed):
            raise ValueError(f"{what}: gamma = {g!r} is not accepted by this dock (allowed: "
                             f"{', '.join(repr(a) for a in self.allowed)}); the operator can change this "
                             "with --allowed-gamma / gamma_policy")

    def __repr__(self) -> str:
        return f"GammaPolicy({self.allowed!r})"


ANY_GAMMA = GammaPolicy(None)
