"""RKME text specifications: a table spec on sentence embeddings plus the texts' ``language`` codes.

Reference: learnware 0.4.0.post1 ``RKMETextSpecification`` (image-text semantics §2-3).  The fit is the
table fit on the embeddings without the table API's size cap (the K >= n rule stays); ``language`` is
given, or detected from the texts as the reference does (langdetect ``detect_langs`` on the joined texts,
codes with probability > 0.1, the first 10,000 characters, any failure -> []) but with langdetect seeded
(``DetectorFactory.seed = 0``) so the codes are reproducible.  The search compares a user with a text
learnware only when ``set(user.language) <= set(learnware.language)``.
"""
from __future__ import annotations

import inspect
import logging
import threading

import numpy as np

from . import registry
from .table import RKMESpec

__all__ = ["RKMETextSpec", "TEXT_TYPE", "detect_language", "language_admits"]

log = logging.getLogger(__name__)

TEXT_TYPE = "RKMETextSpecification"
_DETECT_LOCK = threading.Lock()
_FIT_TAKES_DEVICE = "device" in inspect.signature(RKMESpec.fit).parameters


def _check_language(language, name: str = "language") -> list:
    if language is None:
        return []
    if isinstance(language, str) or not isinstance(language, (list, tuple)):
        raise TypeError(f"{name} must be a list of language codes, got {type(language).__name__}")
    bad = [c for c in language if not isinstance(c, str)]
    if bad:
        raise TypeError(f"{name} must hold strings, got {bad[0]!r}")
    return list(language)


def _check_texts(texts, name: str = "texts") -> list:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or \
            not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{name} must be a list of strings")
    return list(texts)


def detect_language(texts) -> list:
    """Language codes of ``texts`` (a list of strings) as the reference's ``get_language_ids``:
    ``langdetect.detect_langs(" ".join(texts))``, codes with probability > 0.1 in decreasing
    probability, any langdetect exception -> [].  Seeded (``DetectorFactory.seed = 0``, restored
    afterwards) so the result is reproducible.  RuntimeError when langdetect is not installed
    (``pip install lwengine[text]``)."""
    texts = _check_texts(texts)
    try:
        import langdetect
        from langdetect import DetectorFactory
    except ImportError as exc:
        raise RuntimeError("language detection needs the optional package langdetect "
                           "(pip install 'lwengine[text]'), or pass language= explicitly") from exc
    with _DETECT_LOCK:
        old = DetectorFactory.seed
        DetectorFactory.seed = 0
        try:
            return [r.lang for r in langdetect.detect_langs(" ".join(texts))]
        except Exception as exc:  # the reference maps every failure to [] (e.g. "No features in text.")
            log.debug("langdetect failed (%s): language = []", exc)
            return []
        finally:
            DetectorFactory.seed = old


def _encode(encoder, texts) -> np.ndarray:
    if callable(encoder):
        return np.asarray(encoder(texts))
    if isinstance(encoder, str):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise RuntimeError(f"encoder={encoder!r} needs the optional package sentence-transformers; "
                               "pass embeddings= or a callable encoder instead") from exc
        return np.asarray(SentenceTransformer(encoder).encode(texts))
    raise TypeError(f"encoder must be a callable or a sentence-transformers model name / path, "
                    f"got {type(encoder).__name__}")


class RKMETextSpec(RKMESpec):
    """A table spec on sentence embeddings with the ``language`` codes of its texts."""

    __slots__ = ("language",)
    spec_type = TEXT_TYPE
    size_cap = None  # the reference's text generation has no size cap

    def __init__(self, z, beta, gamma=0.1, num_points=None, language=None):
        super().__init__(z, beta, gamma, num_points)
        self.language = _check_language(language)

    def __repr__(self) -> str:
        return (f"RKMETextSpec(K={self.K}, z_shape={self.z_shape}, gamma={self.gamma!r}, "
                f"num_points={self.num_points}, language={self.language})")

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["language"] = list(self.language)
        return d

    def extra(self) -> dict:
        return {"language": list(self.language)}

    @classmethod
    def extra_from_dict(cls, d: dict, source: str = "spec") -> dict:
        return {"language": _check_language(d.get("language", []))}

    @classmethod
    def from_parts(cls, z, beta, gamma, num_points=None, **extra) -> "RKMETextSpec":
        unknown = set(extra) - {"language"}
        if unknown:
            raise TypeError(f"RKMETextSpec takes only 'language' as an extra field, got {', '.join(unknown)}")
        return cls(z, beta, gamma, num_points, language=extra.get("language"))

    @classmethod
    def fit(cls, embeddings=None, language=None, texts=None, K: int = 100, gamma: float = 0.1,
            step_size: float = 0.1, steps: int = 3, nonnegative_beta: bool = True, reduce: bool = True,
            seed=None, init_z=None, device: str = "auto", *, encoder=None, **options) -> "RKMETextSpec":
        """Fit a text spec -- the reference's ``generate_rkme_text_spec`` on supplied embeddings.

        ``embeddings`` (n, d): the sentence embeddings (the reference's encoder is
        paraphrase-multilingual-MiniLM-L12-v2, 384-d; its specs are comparable only with specs of the
        same encoder).  Without ``embeddings``, ``texts`` are embedded by ``encoder`` (a callable
        ``texts -> (n, d)``, or a sentence-transformers model name / local path when that package is
        installed).  ``language``: the codes to store; None detects them from ``texts`` with
        :func:`detect_language` ([] without texts).  The other arguments are those of
        :meth:`RKMESpec.fit` (the K >= n rule applies; no size cap).
        """
        if texts is not None:
            texts = _check_texts(texts)
        if embeddings is None:
            if texts is None:
                raise ValueError("RKMETextSpec.fit needs embeddings (n, d), or texts together with an encoder")
            if encoder is None:
                raise ValueError("RKMETextSpec.fit got texts but no embeddings: pass embeddings=, or encoder= "
                                 "(a callable, or a sentence-transformers model name or path)")
            embeddings = _encode(encoder, texts)
        elif encoder is not None:
            raise ValueError("give embeddings or encoder, not both")
        if texts is not None and hasattr(embeddings, "__len__") and len(embeddings) != len(texts):
            raise ValueError(f"embeddings has {len(embeddings)} rows but texts has {len(texts)} entries")
        lang = _check_language(language) if language is not None else (
            detect_language(texts) if texts is not None else [])
        if _FIT_TAKES_DEVICE:
            options["device"] = device
        elif device not in ("auto", "cpu"):
            if device != "cuda":
                raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
            raise RuntimeError("device='cuda': the table fit of this build runs on the CPU only")
        spec = super().fit(embeddings, K=K, gamma=gamma, step_size=step_size, steps=steps,
                           nonnegative_beta=nonnegative_beta, reduce=reduce, seed=seed, init_z=init_z, **options)
        spec.language = lang
        return spec


def language_admits(user, extra: dict) -> bool:
    """The reference's text filter: ``set(user.language) <= set(learnware.language)``."""
    return set(getattr(user, "language", []) or []) <= set((extra or {}).get("language", []) or [])


registry.register(registry.SpecType(TEXT_TYPE, RKMETextSpec, kernel="gaussian", admits=language_admits))
