"""``HeteroMapTableSpecification`` files: a table spec whose z is the hetero market's learned embedding of
each reduced-set row (learnware 0.4.0.post1 ``specification/system/hetero_table.py``).

They load, save and search with the table formula on the embedded z (the reference's ``inner_prod`` /
``dist`` are the Gaussian-kernel ones).  The mapping model that produces the embedding (pretrained
weights) is out of scope: such specs are read from files, never fitted here.
"""
from __future__ import annotations

from . import registry
from .table import RKMESpec

__all__ = ["HeteroMapTableSpec", "HETERO_TYPE"]

HETERO_TYPE = "HeteroMapTableSpecification"


class HeteroMapTableSpec(RKMESpec):
    """A hetero-map table spec (z: embedded reduced set, beta: the table spec's weights).

    The reference's file has no ``num_points`` (read as K) and carries ``embedding`` / ``weight``
    fields (usually null), kept as they were read."""

    __slots__ = ("embedding", "weight")
    spec_type = HETERO_TYPE

    def __init__(self, z, beta, gamma=0.1, num_points=None, embedding=None, weight=None):
        super().__init__(z, beta, gamma, num_points)
        self.embedding, self.weight = embedding, weight

    def to_dict(self) -> dict:  # the reference's key order
        return {"z": self.z.tolist(), "beta": self.beta.tolist(), "embedding": self.embedding,
                "weight": self.weight, "gamma": float(self.gamma), "type": HETERO_TYPE,
                "num_points": int(self.num_points)}

    def extra(self) -> dict:
        return {"embedding": self.embedding, "weight": self.weight}

    @classmethod
    def extra_from_dict(cls, d: dict, source: str = "spec") -> dict:
        return {"embedding": d.get("embedding"), "weight": d.get("weight")}

    @classmethod
    def from_dict(cls, d, source: str = "spec") -> "HeteroMapTableSpec":
        if isinstance(d, dict) and "num_points" not in d and "z" in d:
            d = dict(d, num_points=None)
        return super().from_dict(d, source)

    @classmethod
    def from_parts(cls, z, beta, gamma, num_points=None, **extra) -> "HeteroMapTableSpec":
        unknown = set(extra) - {"embedding", "weight"}
        if unknown:
            raise TypeError(f"HeteroMapTableSpec takes only 'embedding' / 'weight', got {', '.join(unknown)}")
        return cls(z, beta, gamma, num_points, **extra)

    @classmethod
    def fit(cls, *args, **kwargs):
        raise NotImplementedError("hetero-map specs need the reference's mapping model (out of scope): "
                                  "load them from files")


registry.register(registry.SpecType(HETERO_TYPE, HeteroMapTableSpec, kernel="gaussian"))
