"""RKMEImageSpec: the reference's ``RKMEImageSpecification`` (learnware 0.4.0.post1), numpy core.

A spec is a weighted set of K images z (K, C, 32, 32) float32 with weights beta; specs are compared
under the ConvNet-NNGP kernel of the calling spec's ``net_depth``.  ``inner_prod`` / ``dist`` keep the
reference's semantics: float32 kernel entries, float64 products summed in torch's order, the
one-object path for a spec with itself (``a.dist(a) == 0`` exactly; a copy gives ~1e-6), A's depth
for terms 1-2 and B's for term 3.  ``precision="float64"`` computes the same terms with the float64
kernel (rankings that float32 noise cannot flip).  Only :meth:`fit` needs torch.
"""
from __future__ import annotations

import gzip
import json
import os

import numpy as np

from ... import kernels
from .gram_cache import canonical_grams, is_canonical_z
from .rng import NetConfig, canonical_z_view
IMAGE_WIDTH = 32  # the reference resizes every image to 32 x 32
from .reduction import torch_sum_f64

__all__ = ["RKMEImageSpec", "TYPE_NAME", "DEFAULT_MODEL_CONFIG", "image_transform"]

TYPE_NAME = "RKMEImageSpecification"
VERSION = 1
DEFAULT_MODEL_CONFIG = {"k": 2, "mu": 0, "sigma": None, "net_width": 128, "net_depth": 3}
_PRECISIONS = ("float32", "float64")


def image_transform(d):
    """The image searcher's distance transform ``1 - exp(-d / 5e-5)`` (numpy, like the reference)."""
    with np.errstate(over="ignore"):
        return 1.0 - np.exp(-np.asarray(d, dtype=np.float64) / 0.00005)


def nngp_gram(x, y, depth: int, dtype) -> np.ndarray:
    """The search kernel through the native door (lwengine.kernels.nngp_kernel)."""
    return kernels.nngp_kernel(x, y, depth=depth, precision="float64" if dtype == np.float64 else "float32")


class RKMEImageSpec:
    """Image RKME specification: ``z`` (K, C, 32, 32) float32, ``beta`` (K,), ``n_models``, ``model_config``."""

    type = TYPE_NAME
    spec_type = TYPE_NAME

    def __init__(self, z, beta, *, n_models: int = 16, model_config=None, msg=None, version: int = VERSION):
        z = np.array(z, dtype=np.float32, copy=True)
        if z.ndim != 4 or z.shape[0] < 1 or z.shape[1] < 1 or z.shape[2:] != (IMAGE_WIDTH, IMAGE_WIDTH):
            raise ValueError(f"z must have shape (K, C, 32, 32) with K >= 1, C >= 1, got {z.shape}")
        b = np.asarray(beta)
        if not np.issubdtype(b.dtype, np.number) or np.iscomplexobj(b):
            raise TypeError(f"beta must hold real numbers, got dtype {b.dtype}")
        b = np.array(b, dtype=np.float32 if b.dtype == np.float32 else np.float64, copy=True).reshape(-1)
        if b.shape[0] != z.shape[0]:
            raise ValueError(f"beta must have length K = {z.shape[0]}, got {b.shape[0]}")
        if not (np.isfinite(z).all() and np.isfinite(b).all()):
            raise ValueError("z and beta must be finite")
        cfg = dict(DEFAULT_MODEL_CONFIG if model_config is None else model_config)
        depth = cfg.get("net_depth", 3)
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or not 1 <= int(depth) <= 5:
            raise ValueError(f"model_config['net_depth'] must be an integer in 1..5, got {depth!r}")
        canonical = is_canonical_z(z)
        if canonical:  # share the cached canonical block (a million default specs hold no z copies)
            z = canonical_z_view(z.shape[0], NetConfig(z.shape[1]))
        z.setflags(write=False)
        b.setflags(write=False)
        self.version = version
        self.msg = msg
        self.z = z
        self.beta = b
        self.n_models = n_models
        self._model_config = cfg
        self.fit_info = None
        self._canonical = canonical
        self._self_ip = {}  # precision -> inner_prod(self): z, beta and the config are read-only

    # ------------------------------------------------------------------ properties
    @property
    def model_config(self) -> dict:
        """A copy of the reference's ``model_config`` (only ``net_depth`` affects dists)."""
        return dict(self._model_config)

    @property
    def K(self) -> int:
        return int(self.z.shape[0])

    @property
    def channels(self) -> int:
        return int(self.z.shape[1])

    @property
    def net_depth(self) -> int:
        return int(self._model_config.get("net_depth", 3))

    @property
    def canonical(self) -> bool:
        """True when z is the default generator's z for this K and C (dists use cached Grams)."""
        if self._canonical is None:
            self._canonical = is_canonical_z(self.z)
        return self._canonical

    def __repr__(self) -> str:
        return (f"RKMEImageSpec(K={self.K}, C={self.channels}, net_depth={self.net_depth}, "
                f"canonical={self.canonical})")

    @property
    def z_shape(self) -> tuple:
        """The trailing shape of z, (C, 32, 32)."""
        return tuple(self.z.shape[1:])

    @property
    def dim(self) -> int:
        """Values per reduced-set point, C * 32 * 32."""
        return int(np.prod(self.z.shape[1:]))

    @property
    def num_points(self) -> int:
        """The reference's image spec records no data count: K here (stored, never used in search)."""
        return self.K

    # ------------------------------------------------------------------ packed storage (lwengine.packed)
    def extra(self) -> dict:
        """Fields a packed store keeps beside z and beta: the model settings when not the defaults
        (``net_depth`` is the store's kernel parameter)."""
        out = {}
        cfg = dict(self._model_config)
        cfg.pop("net_depth", None)
        default = dict(DEFAULT_MODEL_CONFIG)
        default.pop("net_depth")
        if cfg != default:
            out["model_config"] = self.model_config
        if self.n_models != 16:
            out["n_models"] = self.n_models
        if self.msg is not None:
            out["msg"] = self.msg
        return out

    @classmethod
    def extra_from_dict(cls, d: dict, source: str = "spec") -> dict:
        """The :meth:`extra` fields (with the full ``model_config``) read from a spec dict or a market
        spec object's ``__dict__``."""
        out = {}
        if isinstance(d.get("model_config"), dict):
            out["model_config"] = dict(d["model_config"])
        if d.get("n_models") is not None:
            out["n_models"] = int(d["n_models"])
        if d.get("msg") is not None:
            out["msg"] = d["msg"]
        return out

    @classmethod
    def from_parts(cls, z, beta, param, num_points=None, **extra) -> "RKMEImageSpec":
        """A spec from a packed store's parts: ``param`` is the store's kernel parameter (+-net_depth,
        see :mod:`.family`; None: the depth of ``model_config``), ``extra`` the fields of :meth:`extra`."""
        unknown = set(extra) - {"model_config", "n_models", "msg"}
        if unknown:
            raise TypeError(f"RKMEImageSpec takes only model_config, n_models and msg as extra fields, "
                            f"got {', '.join(sorted(unknown))}")
        cfg = dict(extra.get("model_config") or DEFAULT_MODEL_CONFIG)
        if param is not None:
            cfg["net_depth"] = int(round(abs(float(param))))
        return cls(np.asarray(z, dtype=np.float32), beta, n_models=extra.get("n_models", 16), model_config=cfg,
                   msg=extra.get("msg"))

    # ------------------------------------------------------------------ kernel algebra
    def _gram_with(self, other: "RKMEImageSpec", precision: str) -> np.ndarray:
        depth = self.net_depth
        same_object = other is self
        if precision == "float32" and self.canonical and other.canonical:
            same, cross = canonical_grams(self.channels, depth, max(self.K, other.K))
            return same[: self.K, : self.K] if same_object else cross[: self.K, : other.K]
        dtype = np.float32 if precision == "float32" else np.float64
        return nngp_gram(self.z, None if same_object else other.z, depth, dtype)

    def inner_prod(self, other: "RKMEImageSpec", *, precision: str = "float32") -> float:
        """``sum_ij beta_i beta'_j k(z_i, z'_j)`` with this spec's ``net_depth`` (the reference's rule)."""
        if other is self and isinstance(precision, str):  # cached self terms first (valid keys only)
            v = self._self_ip.get(precision)
            if v is not None:
                return v
        if not isinstance(other, RKMEImageSpec):
            raise TypeError(f"other must be an RKMEImageSpec, got {type(other).__name__}")
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
        if other.z.shape[1] != self.z.shape[1]:
            raise ValueError(f"specs must have the same channel count, got {self.channels} and {other.channels}")
        G = self._gram_with(other, precision)
        b1 = self.beta.astype(np.float64)
        b2 = other.beta.astype(np.float64)
        if precision == "float64":
            v = float(b1 @ G @ b2)
        else:
            v = float(torch_sum_f64((G.astype(np.float64) * (b1[:, None] * b2)).reshape(-1)))
        if other is self:
            self._self_ip[precision] = v
        return v

    def dist(self, other: "RKMEImageSpec", omit_term1: bool = False, *, precision: str = "float32") -> float:
        """MMD^2 ``A.A - 2 A.B + B.B`` (terms 1-2 with this spec's depth, term 3 with ``other``'s)."""
        t1 = 0.0 if omit_term1 else self.inner_prod(self, precision=precision)
        t2 = self.inner_prod(other, precision=precision)
        t3 = other.inner_prod(other, precision=precision)
        return float(t1 - 2 * t2 + t3)

    def mmd2(self, X_train, *, precision: str = "float64") -> float:
        """MMD^2 between this spec and preprocessed images ``X_train`` (N, C, 32, 32) under the search
        kernel (the data as a uniform-weight spec on the two-object path)."""
        data = RKMEImageSpec(X_train, np.full(len(X_train), 1.0 / len(X_train)), model_config=self.model_config)
        return self.dist(data, precision=precision)

    def herding(self, T: int, seed=None) -> np.ndarray:
        """T images drawn from z with probabilities beta, plus N(0, 0.01^2) noise (the reference's rule)."""
        T = int(T)
        if T < 0:
            raise ValueError(f"T must be >= 0, got {T}")
        b = self.beta.astype(np.float64)
        if (b < 0).any() or not b.sum() > 0:
            raise ValueError("herding needs nonnegative beta with a positive sum")
        rng = np.random.default_rng(seed)
        idx = rng.choice(self.K, size=T, replace=True, p=b / b.sum())
        return (self.z[idx] + rng.standard_normal((T,) + self.z.shape[1:]) * 0.01).astype(np.float32)

    # ------------------------------------------------------------------ JSON (reference format)
    def to_dict(self) -> dict:
        return {
            "RKME_IMAGE_VERSION": self.version,
            "msg": self.msg,
            "z": self.z.tolist(),
            "beta": self.beta.tolist(),
            "n_models": self.n_models,
            "model_config": self.model_config,
            "type": TYPE_NAME,
        }

    def dumps(self) -> str:
        """The exact text the reference's ``save()`` writes."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def save(self, path) -> None:
        text = self.dumps()
        path = os.fspath(path)
        if path.endswith(".gz"):
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)

    @classmethod
    def from_dict(cls, d, source: str = "spec") -> "RKMEImageSpec":
        """The reference's load rules: ``type`` must match; known keys are read, unknown ones ignored,
        absent ones keep the defaults.  Unlike the reference, shapes are validated here."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(d).__name__}")
        if "type" in d and d["type"] != TYPE_NAME:
            raise TypeError(f"The type of loaded RKME ({d['type']}) is different from the expected type "
                            f"({TYPE_NAME})!")
        for key in ("z", "beta"):
            if key not in d:
                raise ValueError(f"{source}: missing key {key!r}")
        try:
            z = np.array(d["z"], dtype=np.float32)
            beta = np.array(d["beta"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: z and beta must be numeric arrays ({exc})") from None
        cfg = d.get("model_config", DEFAULT_MODEL_CONFIG)
        if not isinstance(cfg, dict):
            raise ValueError(f"{source}: model_config must be an object, got {type(cfg).__name__}")
        try:
            return cls(z, beta, n_models=d.get("n_models", 16), model_config=cfg, msg=d.get("msg"),
                       version=d.get("RKME_IMAGE_VERSION", VERSION))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{source}: {exc}") from None

    @classmethod
    def loads(cls, text: str, source: str = "spec") -> "RKMEImageSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(d, source)

    @classmethod
    def load(cls, path) -> "RKMEImageSpec":
        """Read a spec file (plain or ``.gz`` JSON).  A missing file raises FileNotFoundError (the
        reference silently returns None)."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"image spec file not found: {path}")
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
        return cls.loads(text, source=path)

    # ------------------------------------------------------------------ generation
    @classmethod
    def fit(cls, X, K: int = 50, step_size: float = 0.01, steps: int = 100, resize: bool = True,
            sample_size: int = 5000, nonnegative_beta: bool = True, reduce: bool = True, whitening: bool = True,
            seed=None, device: str = "auto", *, update: str = "reference", qp_solver: str = "exact",
            descent_steps: int = 50) -> "RKMEImageSpec":
        """``generate_rkme_image_spec`` of the reference (see :mod:`.generate`); needs torch.

        ``update="reference"`` reproduces the reference's spec; ``"nngp-descent"`` starts from it and
        then optimises z and beta for the MMD under the search kernel (:mod:`.descent`), with
        ``descent_steps`` monotone steps.  ``qp_solver``: ``"exact"`` (lwengine's active-set simplex QP)
        or ``"clarabel"`` (the reference's interior-point solver via qpsolvers, if installed).
        ``step_size`` is accepted for the reference's signature; it has no effect there either.
        """
        from .generate import generate

        K = int(K)
        if K < 1:
            raise ValueError(f"K must be >= 1, got {K}")
        if int(steps) < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if int(sample_size) < 1:
            raise ValueError(f"sample_size must be >= 1, got {sample_size}")
        if update not in ("reference", "nngp-descent"):
            raise ValueError(f"update must be 'reference' or 'nngp-descent', got {update!r}")
        z, beta, info = generate(X, K, steps=int(steps), sample_size=int(sample_size),
                                 nonnegative_beta=bool(nonnegative_beta), reduce=bool(reduce),
                                 whitening=bool(whitening), resize=bool(resize), seed=seed, device=device,
                                 qp_solver=qp_solver, keep_x_train=(update != "reference"))
        spec = cls(z, beta)
        spec.fit_info = info
        if update == "nngp-descent" and reduce:
            from .descent import nngp_descent

            spec = nngp_descent(spec, info.x_train, steps=int(descent_steps))
            spec.fit_info = info
        return spec
