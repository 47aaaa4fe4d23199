"""The reference market's fuzzy semantic filter (semantics §5), quirks included.

A semantic spec is ``{key: {"Type": ..., "Values": ...}}``.  :func:`semantic_filter` takes the
learnwares as an ordered list of ``(id, semantic_spec_or_None)`` and returns the surviving ids in the
reference's order (list order, or fuzzy score descending when the Name matched only fuzzily).
"""
from __future__ import annotations

import logging

__all__ = ["MAX_NUM", "MIN_FUZZY_SCORE", "match_tags", "semantic_filter", "check_semantic_dict"]

logger = logging.getLogger(__name__)

MAX_NUM = 50000
MIN_FUZZY_SCORE = 75.0
_TEXT_KEYS = ("Name", "Description")


def _values(entry):
    if isinstance(entry, dict):
        return entry.get("Values", "")
    return ""


def match_tags(user: dict, learnware: dict) -> bool:
    """Tag/class filter of one learnware (step 2).  Every user key with non-empty values is checked,
    ``learnware_id`` included (learnware specs do not carry it, so it rejects unless it contains
    "Others" -- the reference's behaviour)."""
    for key, entry in user.items():
        v1 = _values(entry)
        if len(v1) == 0:
            continue
        if key not in learnware:
            if "Others" in v1:
                continue
            return False
        if key in _TEXT_KEYS:
            continue
        v2 = _values(learnware[key])
        if len(v2) == 0:
            return False
        kind = entry.get("Type") if isinstance(entry, dict) else None
        if kind in ("Class", "Optional"):
            first = v2[0] if isinstance(v2, list) else v2
            if first not in v1:
                return False
        elif kind == "Tag":
            if not (set(v1) & set(v2)):
                return False
    return True


def _text(spec: dict, key: str) -> str:
    v = _values(spec.get(key)) if spec else ""
    return v.lower() if isinstance(v, str) else ""


def semantic_filter(learnwares, user: dict | None, *, max_num: int = MAX_NUM,
                    min_score: float = MIN_FUZZY_SCORE) -> list:
    """Ids of the learnwares that the reference's fuzzy semantic searcher keeps, in its order.

    ``learnwares``: ordered iterable of ``(id, semantic_spec or None)``.  ``user=None`` keeps all.
    """
    items = [(str(i), s or {}) for i, s in learnwares]
    if user is None:
        return [i for i, _ in items]
    if not isinstance(user, dict):
        raise TypeError(f"semantic must be a dict of {{key: {{'Type', 'Values'}}}}, got {type(user).__name__}")
    lw_id = _values(user.get("learnware_id"))
    if isinstance(lw_id, str) and lw_id:
        items = [(i, s) for i, s in items if lw_id in i]
    tagged = [(i, s) for i, s in items if match_tags(user, s)]
    name = _values(user.get("Name"))
    if not tagged or not isinstance(name, str) or not name:
        return [i for i, _ in tagged]
    name = name.lower()
    names = [_text(s, "Name") for _, s in tagged]
    descs = [_text(s, "Description") for _, s in tagged]
    exact = [i for (i, _), n, d in zip(tagged, names, descs) if name in n or name in d]
    if exact:
        return exact
    from rapidfuzz import fuzz

    hits = []
    for (i, _), n, d in zip(tagged, names, descs):
        score = max(fuzz.partial_ratio(name, n), fuzz.partial_ratio(name, d))
        if score >= min_score:
            hits.append((i, score))
    order = sorted(range(len(hits)), key=lambda k: hits[k][1], reverse=True)[:max_num]
    logger.debug("semantic filter: %d fuzzy matches", len(order))
    return [hits[k][0] for k in order]


def check_semantic_dict(semantic) -> dict:
    """A semantic spec as stored by an index: a dict (TypeError otherwise)."""
    if not isinstance(semantic, dict):
        raise TypeError(f"semantic must be a dict of {{key: {{'Type', 'Values'}}}}, got {type(semantic).__name__}")
    return semantic
