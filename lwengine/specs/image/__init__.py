"""Image specifications (the reference's RKMEImageSpecification): spec, NNGP kernel, generator.

Importing this package does not import torch; only :meth:`RKMEImageSpec.fit` needs it.
"""
from __future__ import annotations

from .gram_cache import canonical_grams, is_canonical_z
from .nngp import nngp_kernel
from .reduction import torch_sum_f64
from .rng import NetConfig, canonical_z
from .search import canonical_dists, canonical_self_terms
from .spec import DEFAULT_MODEL_CONFIG, TYPE_NAME, RKMEImageSpec, image_transform

__all__ = [
    "RKMEImageSpec",
    "TYPE_NAME",
    "DEFAULT_MODEL_CONFIG",
    "image_transform",
    "nngp_kernel",
    "canonical_z",
    "canonical_grams",
    "is_canonical_z",
    "canonical_dists",
    "canonical_self_terms",
    "torch_sum_f64",
    "NetConfig",
]
