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
from .family import NNGP, NNGPFamily
from .. import registry

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
    "NNGPFamily",
    "NNGP",
    "image_match_key",
]


def image_match_key(shape) -> int:
    """Image users and learnwares are compared when their channel counts agree (the reference's
    ``str(list(z.shape[1:]))`` test on (C, 32, 32); K may differ)."""
    return int(shape[0])


# the image searcher: 1 - exp(-d / 5e-5) on every single and mixture distance (semantics §3)
registry.register(registry.SpecType(TYPE_NAME, RKMEImageSpec, kernel="nngp", match_key=image_match_key,
                                    distance_transform=image_transform, family=NNGP))
