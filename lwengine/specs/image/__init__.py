"""Image specifications (the reference's RKMEImageSpecification): spec, NNGP kernel, generator.

Importing this package does not import torch; only :meth:`RKMEImageSpec.fit` (and the optional
``update="nngp-descent"``) need it.  The search kernel itself is :func:`lwengine.kernels.nngp_kernel`
(native); its numpy recursion is the float64 twin :mod:`lwengine._reference_nngp` (the test oracle).
"""
from __future__ import annotations

from .gram_cache import canonical_grams, is_canonical_z
from .reduction import torch_sum_f64
from .rng import NetConfig, canonical_z
from .search import canonical_dists, canonical_self_terms
from .spec import DEFAULT_MODEL_CONFIG, TYPE_NAME, RKMEImageSpec, image_transform

__all__ = [
    "RKMEImageSpec",
    "TYPE_NAME",
    "DEFAULT_MODEL_CONFIG",
    "image_transform",
    "canonical_z",
    "canonical_grams",
    "is_canonical_z",
    "canonical_dists",
    "canonical_self_terms",
    "torch_sum_f64",
    "NetConfig",
]
