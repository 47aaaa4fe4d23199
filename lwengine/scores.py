"""Score conversion and post-processing of the reference statistical search (semantics §4, steps 6-8).

Everything here works on plain Python lists / numpy arrays so that it can be tested against the
``score/`` fixtures without any spec.  The constants are the reference's defaults.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np


__all__ = [
    "DIST_RATIO",
    "MIN_SCORE",
    "IMPROVE_SCORE",
    "FILTER_SCORE",
    "IMAGE_DIST_SCALE",
    "convert_dist_to_score",
    "score_eps",
    "image_transform",
    "PostProcessed",
    "postprocess",
    "postprocess_prefix",
    "postprocess_sorted",
]

DIST_RATIO = 0.1
MIN_SCORE = 0.92
IMPROVE_SCORE = 0.7
FILTER_SCORE = 0.6
IMAGE_DIST_SCALE = 0.00005


def convert_dist_to_score(dist_list, *, dist_ratio: float = DIST_RATIO, min_score: float = MIN_SCORE,
                          improve_score: float = IMPROVE_SCORE) -> list:
    """The reference's min-max style score of every distance (``_convert_dist_to_score``).

    ``[] -> []``; all equal -> all ``1``; otherwise ``s_i = (max - d_i) / (max - eps)`` with
    ``eps = dist_ratio * mean`` moved so that the best score is 1 (``min < eps``) or exactly
    ``min_score``, and scores below ``improve_score`` lifted to ``min(sqrt(s), improve_score)``.
    """
    return _convert(_floats(dist_list), dist_ratio, min_score, improve_score)


def score_eps(lo: float, hi: float, mean: float, dist_ratio: float = DIST_RATIO,
              min_score: float = MIN_SCORE) -> float:
    """The reference's eps from the smallest, largest and mean distance (``lo < hi``): a tenth of the
    mean, moved to ``lo`` when ``lo`` is below it (best score 1) or to where the best score is exactly
    ``min_score`` when it would be below that."""
    eps = dist_ratio * mean
    max_score = (hi - lo) / (hi - eps)
    if lo < eps:
        eps = lo
    elif max_score < min_score:
        eps = hi - (hi - lo) / min_score
    return eps


def _lifted(v: np.ndarray, hi: float, eps: float, improve_score: float = IMPROVE_SCORE) -> np.ndarray:
    """``(hi - v) / (hi - eps)``, scores below ``improve_score`` lifted to ``min(sqrt(s), improve_score)``
    (elementwise IEEE arithmetic: the same bits as the reference's Python loop)."""
    s = (hi - v) / (hi - eps)
    lift = (s < improve_score) & (s >= 0)
    s[lift] = np.minimum(np.sqrt(s[lift]), improve_score)
    return s


_SEQUENTIAL_SUM = sys.version_info < (3, 12)  # CPython's sum() of floats is compensated from 3.12 on


def python_sum(v: np.ndarray) -> float:
    """``sum(v.tolist())`` bit for bit: before Python 3.12 a left-to-right float64 sum, which
    ``np.add.accumulate`` computes in the same order without making 10^4 Python floats."""
    if _SEQUENTIAL_SUM and len(v):
        return float(np.add.accumulate(v)[-1])
    return sum(v.tolist())


def _convert(d: list, dist_ratio: float = DIST_RATIO, min_score: float = MIN_SCORE,
             improve_score: float = IMPROVE_SCORE) -> list:
    """:func:`convert_dist_to_score` of a list of Python floats."""
    if not d:
        return []
    lo, hi = min(d), max(d)
    if lo == hi:
        return [1 for _ in d]
    eps = score_eps(lo, hi, sum(d) / len(d), dist_ratio, min_score)  # the reference's Python sum
    return _lifted(np.array(d), hi, eps, improve_score).tolist()


def _floats(values) -> list:
    """``values`` as a list of Python floats (one ``tolist`` for a numpy array)."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False).ravel().tolist()
    return [float(x) for x in values]


def image_transform(dists):
    """Image specs: every distance ``d`` becomes ``1 - exp(-d / 5e-5)`` before scoring."""
    return [1.0 - math.exp(-float(x) / IMAGE_DIST_SCALE) for x in dists]


@dataclass
class PostProcessed:
    """Output of :func:`postprocess`: kept singles (positions into the sorted list) and the mixture."""

    single_scores: list
    n_single: int
    mixture_score: float | None
    mixture_kept: bool
    scores_before_filter: list = field(default_factory=list)
    mixture_score_before_filter: float | None = None
    mixture_dropped: str | None = None


def postprocess_prefix(prefix, all_dists, mixture_dist=None, *, mixture_len: int = 0,
                       transform=None) -> PostProcessed:
    """:func:`postprocess` for large candidate sets, in numpy: ``prefix`` the first sorted distances,
    ``all_dists`` every candidate's distance in any order (the score statistics min, max and mean
    come from it; the mean is summed left to right in that order, the reference sums in sorted order:
    the two differ by rounding only).  Scores are computed for the prefix only
    (``scores_before_filter`` is the prefix's, an array).  When every prefix score passes the filter
    (``n_single == len(prefix)``) more singles may follow: the caller must give a longer prefix."""
    dropped = None
    if mixture_dist is not None and mixture_len <= 1:
        mixture_dist, dropped = None, "length_1"
    pre = np.asarray(prefix, dtype=np.float64)
    alld = np.asarray(all_dists, dtype=np.float64)
    if transform is not None:
        pre = np.asarray(transform(pre), dtype=np.float64)
        alld = np.asarray(transform(alld), dtype=np.float64)
        if mixture_dist is not None:
            mixture_dist = float(np.asarray(transform([mixture_dist]))[0])
    if mixture_dist is not None:
        alld = np.concatenate([alld, [mixture_dist]])
    lo, hi = float(alld.min()), float(alld.max())
    if lo == hi:
        scores = np.ones(len(pre))
        mix_score = None if mixture_dist is None else 1.0
    else:
        eps = score_eps(lo, hi, float(np.add.accumulate(alld)[-1]) / len(alld))
        vals = pre if mixture_dist is None else np.concatenate([pre, [mixture_dist]])
        sc = _lifted(vals, hi, eps)
        scores, mix_score = (sc, None) if mixture_dist is None else (sc[:-1], float(sc[-1]))
    before = scores.copy()
    mix_before = mix_score
    if mix_score is not None and len(scores) and int(100 * mix_score) == int(100 * scores[0]):
        mix_score, dropped = None, "same_score_2dp"
    below = np.flatnonzero(scores[1:] < FILTER_SCORE)
    idx = min(1, len(scores)) if not len(scores) else (1 + int(below[0]) if len(below) else len(scores))
    scores = [float(x) for x in scores[:idx]]
    mix_score = _single_rule(scores, mix_score)
    return PostProcessed(single_scores=scores, n_single=idx, mixture_score=mix_score,
                         mixture_kept=mix_score is not None, scores_before_filter=before,
                         mixture_score_before_filter=mix_before, mixture_dropped=dropped)


def _single_rule(scores: list, mix_score):
    """The reference's single-result rule, in place on ``scores``: a lone single below the filter is
    raised to FILTER_SCORE and the mixture's score scaled by the same ratio (capped at 1).  Returns
    the mixture's score."""
    if len(scores) == 1 and scores[0] < FILTER_SCORE:
        ratio = 100 if abs(scores[0]) < 1e-5 else FILTER_SCORE / scores[0]
        scores[0] = FILTER_SCORE
        if mix_score is not None:
            mix_score = min(1, mix_score * ratio)
    return mix_score


def _convert_array(v: np.ndarray) -> np.ndarray:
    """:func:`_convert` of a float64 array (the same bits; the Python list path where the min / max
    of a list differ from numpy's, i.e. with NaN, and for all-equal input, whose scores are ints)."""
    if not len(v) or not np.isfinite(v).all():
        return np.array(_convert(v.tolist()), dtype=object if len(v) else np.float64)
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return np.array(_convert(v.tolist()), dtype=object)
    return _lifted(v, hi, score_eps(lo, hi, python_sum(v) / len(v)))  # the reference's Python sum


def postprocess_sorted(sorted_dists: np.ndarray, mixture_dist=None, *, mixture_len: int = 0,
                       transform=None) -> PostProcessed:
    """:func:`postprocess` of a sorted float64 array, the same values, scoring only as far as the
    filter reads: the scores fall along the sorted distances (``(hi - d) / (hi - eps)`` and its lift
    are monotone), so the first score below 0.6 ends the singles.  ``scores_before_filter`` is a
    callable that scores every distance on demand.  Falls back to :func:`postprocess` for a
    transform, non-finite or all-equal input (the reference's list rules)."""
    v = sorted_dists
    if mixture_dist is not None and mixture_len <= 1:
        return postprocess(v, mixture_dist, mixture_len=mixture_len, transform=transform)
    if transform is not None or not isinstance(v, np.ndarray) or v.dtype != np.float64 or v.ndim != 1 or not len(v):
        return postprocess(v, mixture_dist, mixture_len=mixture_len, transform=transform)
    allv = v if mixture_dist is None else np.append(v, float(mixture_dist))
    if not np.isfinite(allv).all():
        return postprocess(v, mixture_dist, mixture_len=mixture_len)
    lo, hi = float(allv.min()), float(allv.max())
    if lo == hi:
        return postprocess(v, mixture_dist, mixture_len=mixture_len)
    eps = score_eps(lo, hi, python_sum(allv) / len(allv))
    mix_score = None if mixture_dist is None else float(_lifted(np.array([float(mixture_dist)]), hi, eps)[0])
    n, c = len(v), min(len(v), 4096)
    while True:
        sc = _lifted(v[:c], hi, eps)
        stop = np.flatnonzero(~(sc[1:] >= FILTER_SCORE))
        if len(stop) or c == n:
            break
        c = min(n, 4 * c)
    dropped = None
    mix_before = mix_score
    if mix_score is not None and int(100 * mix_score) == int(100 * float(sc[0])):
        mix_score, dropped = None, "same_score_2dp"
    idx = 1 + int(stop[0]) if len(stop) else c
    scores = sc[:idx].tolist()
    mix_score = _single_rule(scores, mix_score)
    return PostProcessed(single_scores=scores, n_single=idx, mixture_score=mix_score,
                         mixture_kept=mix_score is not None,
                         scores_before_filter=lambda frozen=v.copy(): _lifted(frozen, hi, eps).tolist(),
                         mixture_score_before_filter=mix_before, mixture_dropped=dropped)


def postprocess(sorted_dists, mixture_dist=None, *, mixture_len: int = 0, image: bool = False,
                transform=None) -> PostProcessed:
    """Steps 6-8 of the reference search given the sorted single distances and the mixture distance.

    ``mixture_dist`` is None when no mixture search ran (or it returned nothing); a mixture of
    ``mixture_len <= 1`` learnwares is discarded before scoring (the reference's length-1 rule).
    ``transform``: the spec type's distance transform (a callable on a list of distances, see
    :class:`lwengine.specs.SpecType`), applied to the singles and the mixture before scoring;
    ``image=True`` is the image transform.  Elementwise IEEE arithmetic in numpy: the same values
    as the reference's Python loops.
    """
    dropped = None
    if mixture_dist is not None and mixture_len <= 1:
        mixture_dist, dropped = None, "length_1"
    if image:
        transform = image_transform
    if transform is not None:
        vals = np.array(_floats(transform(_floats(sorted_dists))), dtype=np.float64)
        if mixture_dist is not None:
            mixture_dist = float(transform([mixture_dist])[0])
    else:
        vals = np.array(sorted_dists, dtype=np.float64).ravel()
    if mixture_dist is not None:
        vals = np.append(vals, float(mixture_dist))
    merged = _convert_array(vals)
    scores, mix_score = (merged, None) if mixture_dist is None else (merged[:-1], merged[-1])
    if mix_score is not None:
        mix_score = mix_score if isinstance(mix_score, int) else float(mix_score)
    before = scores.tolist()
    mix_before = mix_score
    if mix_score is not None and len(before) and int(100 * mix_score) == int(100 * before[0]):
        mix_score, dropped = None, "same_score_2dp"
    # single filter: keep the best one, then every following score >= 0.6 (not capped)
    stop = np.flatnonzero(~(np.asarray(scores[1:], dtype=np.float64) >= FILTER_SCORE))
    idx = min(1, len(before)) if not len(before) else (1 + int(stop[0]) if len(stop) else len(before))
    scores = before[:idx]
    mix_score = _single_rule(scores, mix_score)
    return PostProcessed(
        single_scores=scores,
        n_single=idx,
        mixture_score=mix_score,
        mixture_kept=mix_score is not None,
        scores_before_filter=before,
        mixture_score_before_filter=mix_before,
        mixture_dropped=dropped,
    )
