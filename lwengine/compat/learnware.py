"""A packed-index stat searcher for the ``learnware`` market (0.4.x), usable in place of
``EasyStatSearcher``.

``PackedStatSearcher(organizer)`` has the reference's call signature
``searcher(learnware_list, user_info, max_search_num=5, search_method="greedy")`` and returns the
market's own ``SearchResults``.  It keeps a :class:`~lwengine.SpecIndex` in sync with the organizer
(``add`` / ``delete`` / ``update`` / ``reload``; an id whose spec object changed is re-packed lazily) and
restricts every search to the ``learnware_list`` it is given, in that list's order, so ties and the
semantic pre-filter behave as in the market.  Only table specs are packed; other user spec types
fall back to the market's own searcher.

Every ``learnware`` import is guarded: this module imports without the package, and
:func:`make_searcher` raises ``RuntimeError`` when it is missing.
"""
from __future__ import annotations

import logging

import numpy as np

from ..index import SpecIndex
from ..search import SearchResult, search_batch

__all__ = ["available", "make_searcher", "PackedStatSearcher"]

log = logging.getLogger(__name__)
_TABLE = ("RKMETableSpecification", "RKMEStatSpecification")


def available() -> bool:
    try:
        import learnware.market  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means unavailable
        return False
    return True


def _market_classes():
    try:
        from learnware.market.base import MultipleSearchItem, SearchResults, SingleSearchItem
        from learnware.market.easy import EasyStatSearcher
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"the learnware package (0.4.x) is required for lwengine.compat.learnware: {exc}") from exc
    return EasyStatSearcher, SearchResults, SingleSearchItem, MultipleSearchItem


def _table_spec(learnware):
    spec = learnware.specification
    for name in _TABLE:
        try:
            s = spec.get_stat_spec_by_name(name)
        except Exception:  # noqa: BLE001
            s = None
        if s is not None:
            return s
    return None


def _arrays(rkme):
    z = rkme.get_z() if hasattr(rkme, "get_z") else rkme.z
    beta = rkme.get_beta() if hasattr(rkme, "get_beta") else rkme.beta
    z = z.detach().cpu().numpy() if hasattr(z, "detach") else np.asarray(z)
    beta = beta.detach().cpu().numpy() if hasattr(beta, "detach") else np.asarray(beta)
    return {"z": z.tolist(), "beta": beta.reshape(-1).tolist(), "gamma": float(rkme.gamma),
            "num_points": int(getattr(rkme, "num_points", len(beta)))}


class _Sync:
    """Keeps a SpecIndex mirroring the table specs of the organizer's learnwares."""

    def __init__(self):
        self.index = SpecIndex()
        self._src: dict = {}  # id -> id() of the spec object packed

    def add(self, learnware) -> None:
        rkme = _table_spec(learnware)
        lid = learnware.id
        if rkme is None:
            return
        if lid in self.index:
            if self._src.get(lid) == id(rkme):
                return
            self.index.replace(lid, _arrays(rkme))
        else:
            self.index.add(lid, _arrays(rkme))
        self._src[lid] = id(rkme)

    def delete(self, lid) -> None:
        if lid in self.index:
            self.index.remove(lid)
        self._src.pop(lid, None)

    def reload(self, learnwares) -> None:
        self.index, self._src = SpecIndex(), {}
        for lw in learnwares:
            self.add(lw)


def make_searcher(organizer=None):
    """A ``PackedStatSearcher`` instance (RuntimeError without the learnware package)."""
    EasyStatSearcher, SearchResults, SingleSearchItem, MultipleSearchItem = _market_classes()

    class _PackedStatSearcher(EasyStatSearcher):
        def __init__(self, organizer=None):
            super().__init__(organizer)
            self._sync = _Sync()

        def reset(self, organizer):
            super().reset(organizer)
            self._sync = _Sync()

        # organizer hooks
        def add(self, learnware):
            self._sync.add(learnware)

        def delete(self, learnware_id):
            self._sync.delete(learnware_id)

        def update(self, learnware):
            self._sync.add(learnware)

        def reload(self, learnwares):
            self._sync.reload(learnwares)

        def __call__(self, learnware_list, user_info, max_search_num: int = 5, search_method: str = "greedy"):
            stat_info = getattr(user_info, "stat_info", {}) or {}
            user = None
            for name in _TABLE:
                if name in stat_info:
                    user = stat_info[name]
                    break
            if user is None:  # image / text specs: the market's own searcher
                return super().__call__(learnware_list, user_info, max_search_num, search_method)
            for lw in learnware_list:
                self._sync.add(lw)
            by_id = {lw.id: lw for lw in learnware_list}
            method = search_method if search_method in ("greedy", "auto") else None
            if method is None:
                log.warning("%s not supported!", search_method)
            order = list(by_id)
            result = _restricted_search(self._sync.index, order, _arrays(user), max_search_num, method)
            singles = [SingleSearchItem(learnware=by_id[s.id], score=s.score) for s in result.single]
            multiples = []
            if result.mixture is not None:
                multiples = [MultipleSearchItem(learnwares=[by_id[i] for i in result.mixture.ids],
                                                score=result.mixture.score)]
            return SearchResults(single_results=singles, multiple_results=multiples)

    return _PackedStatSearcher(organizer)


def PackedStatSearcher(organizer=None):  # noqa: N802 - reads like the class it builds
    """Alias of :func:`make_searcher` (the class is created only when learnware is importable)."""
    return make_searcher(organizer)


def _restricted_search(index, order, user, max_search_num, method) -> SearchResult:
    """Search restricted to ``order`` (ids in the market list's order)."""
    return search_batch(index, [user], max_search_num=max_search_num, method=method, restrict=order)[0]
