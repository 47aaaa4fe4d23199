"""A packed-index stat searcher for the ``learnware`` market (0.4.x): a drop-in for ``EasyStatSearcher``.

The market composes its searcher as ``SeqCombinedSearcher(organizer, [EasyFuzzSemanticSearcher],
[EasyStatSearcher])`` (``learnware.market.module.get_market_component``).  This module offers:

* ``PackedStatSearcher(organizer)`` -- a subclass of ``EasyStatSearcher`` with the same call
  ``searcher(learnware_list, user_info, max_search_num=5, search_method="greedy")`` returning the
  market's own ``SearchResults``.  Users whose spec type (the market's ``parse_specification_type``
  choice) is registered in :mod:`lwengine.specs` -- table and text specs, and any type registered
  later -- are searched through one :class:`~lwengine.SpecIndex` mirror per type (the type's match key
  and admission rule, e.g. the text language rule, apply); every other case (unregistered types, a
  ``max_search_num`` below 1) runs the reference code unchanged (``super().__call__``).
* :func:`install` -- swap the ``EasyStatSearcher`` of an existing market for a ``PackedStatSearcher``
  and hook its organizer (``add_learnware`` / ``delete_learnware`` / ``update_learnware`` /
  ``reload_learnware`` / ``reload_market``) so that the index follows the market eagerly.
* :func:`instantiate_learnware_market` -- the reference's function of that name, then :func:`install`.

Synchronisation: the index keeps one packed spec per learnware id, tagged with the identity of the
spec object (and of its ``z`` / ``beta`` tensors) it was packed from.  Besides the organizer hooks,
every search re-checks the learnwares it is given, so a learnware whose spec object changed (the easy
organizer builds a new ``Learnware`` on update and reload) is re-packed before it is ranked, and the
search is restricted to the given list in its order (semantic pre-filter, ``check_status`` and ties
behave as in the market).  In-place edits of a spec's tensors are not detected.

Every ``learnware`` import is guarded: this module imports without the package; using the searcher
without it raises ``RuntimeError``.  ``PackedStatSearcher`` is created on first access (PEP 562).
"""
from __future__ import annotations

import functools
import logging

import numpy as np

from ..index import SpecIndex
from ..search import SearchResult, search_batch
from ..specs import registry
from ..specs.table import RKMESpec

# ``PackedStatSearcher`` (lazy, needs learnware) is left out so that ``import *`` works without it
__all__ = ["available", "searcher_class", "make_searcher", "install", "instantiate_learnware_market",
           "from_reference_spec", "to_reference_spec", "to_reference_learnware"]

log = logging.getLogger(__name__)

TABLE = registry.DEFAULT_TYPE  # the key of table specs in stat_spec / stat_info (also for the legacy
# RKMEStatSpecification class, whose ``type`` is RKMETableSpecification); other registered types are
# keyed by their own type string
_HOOKED = ("add_learnware", "delete_learnware", "update_learnware", "reload_learnware", "reload_market")
_CLASS = None


def available() -> bool:
    """True when ``learnware.market`` imports and provides ``EasyStatSearcher`` (needs torch)."""
    try:
        from learnware.market.easy import EasyStatSearcher
    except Exception:  # noqa: BLE001 - any import failure means unavailable
        return False
    return EasyStatSearcher is not None


def _market_api():
    try:
        from learnware.market.base import MultipleSearchItem, SearchResults, SingleSearchItem
        from learnware.market.easy import EasyStatSearcher
        from learnware.market.utils import parse_specification_type
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"lwengine.compat.learnware needs the learnware package (0.4.x): {exc}") from exc
    if EasyStatSearcher is None:  # learnware imports without torch but then has no searchers
        raise RuntimeError("lwengine.compat.learnware needs learnware's EasyStatSearcher (torch is missing)")
    return EasyStatSearcher, SearchResults, SingleSearchItem, MultipleSearchItem, parse_specification_type


def _table_spec(learnware, spec_type: str = TABLE):
    """The learnware's spec object of ``spec_type``, or None (what ``get_stat_spec_by_name`` returns)."""
    try:
        return learnware.specification.get_stat_spec_by_name(spec_type)
    except AttributeError:
        return None


def _kernel_token(rkme):
    """The kernel settings of a market spec object: gamma (table, text) or model_config (image)."""
    cfg = getattr(rkme, "model_config", None)
    return getattr(rkme, "gamma", None), None if cfg is None else repr(sorted(dict(cfg).items()))


def _token(rkme) -> tuple:
    """What a packed spec was made from: the spec object, its z / beta objects and kernel settings."""
    return rkme, getattr(rkme, "z", None), getattr(rkme, "beta", None), _kernel_token(rkme)


def from_reference_spec(rkme, spec_type: str | None = None) -> RKMESpec:
    """The lwengine spec of a market spec object (torch tensors or arrays; z keeps its trailing shape), of
    the registered class of ``spec_type`` (default: the object's ``type``, else table) with its extra
    fields (e.g. a text spec's ``language``) read from the object."""
    z, beta = rkme.z, rkme.beta
    if hasattr(z, "detach"):
        z = z.detach().cpu().numpy()
    if hasattr(beta, "detach"):
        beta = beta.detach().cpu().numpy()
    beta = np.asarray(beta, dtype=np.float64).reshape(-1)
    npts = getattr(rkme, "num_points", None)
    try:
        npts = int(npts) if npts is not None and int(npts) >= 0 else None
    except (TypeError, ValueError):
        npts = None
    entry = registry.get(spec_type or (getattr(rkme, "type", None) if registry.lookup(str(getattr(rkme, "type", "")))
                                       else TABLE))
    extra = entry.cls.extra_from_dict(dict(getattr(rkme, "__dict__", {})), "market spec")
    gamma = getattr(rkme, "gamma", None)  # types without a gamma (image) read their settings from extra
    return entry.cls.from_parts(z, beta, None if gamma is None else float(gamma), npts, **extra)


def to_reference_spec(spec, *, cuda_idx: int = -1):
    """The reference's spec object of the same type holding ``spec`` (an lwengine spec, spec dict or path):
    float64 CPU tensors, same gamma and num_points, the extra fields (e.g. ``language``) set."""
    import torch
    import learnware.specification as reference

    s = registry.as_spec(spec)
    kw = {"gamma": float(s.gamma)} if hasattr(s, "gamma") else {}
    out = getattr(reference, registry.entry_of(s).type)(cuda_idx=cuda_idx, **kw)
    z = np.asarray(s.z)
    out.z = torch.from_numpy(np.array(z, dtype=np.float32 if z.dtype == np.float32 else np.float64))  # image z: f32
    out.beta = torch.from_numpy(np.array(s.beta, dtype=np.float64))
    if kw:
        out.num_points = int(s.num_points)
    for k, v in s.extra().items():
        setattr(out, k, v)
    if hasattr(s, "model_config"):
        out.model_config = s.model_config
    return out


def to_reference_learnware(learnware_id: str, spec, semantic_spec: dict | None = None):
    """An in-memory reference ``Learnware`` (no model, no folder) whose only stat spec is ``spec``
    (converted by :func:`to_reference_spec` unless it already is a reference spec object)."""
    from learnware.learnware import Learnware
    from learnware.specification import Specification

    rkme = spec if hasattr(spec, "get_z") else to_reference_spec(spec)
    specification = Specification(semantic_spec=semantic_spec or {}, stat_spec={getattr(rkme, "type", TABLE): rkme})
    return Learnware(id=learnware_id, model={}, specification=specification, learnware_dirpath=None)


class _Mirror:
    """A SpecIndex mirroring the specs of one type of a set of learnwares, keyed by learnware id."""

    def __init__(self, dtype: str, spec_type: str = TABLE):
        self.dtype = dtype
        self.spec_type = spec_type
        self.index = SpecIndex(dtype=dtype)
        self._tokens: dict = {}  # id -> _token of the packed spec

    def __len__(self) -> int:
        return len(self.index)

    def sync(self, learnwares) -> list:
        """Pack what is new or changed among ``learnwares``; returns their ids that have a table spec,
        in list order (duplicate ids: first occurrence).  O(len) attribute reads when nothing changed."""
        order, seen, new, tokens = [], set(), [], self._tokens
        for lw in learnwares:
            lid = lw.id
            if lid in seen:
                continue
            seen.add(lid)
            stat = getattr(getattr(lw, "specification", None), "stat_spec", None)
            rkme = stat.get(self.spec_type) if isinstance(stat, dict) else _table_spec(lw, self.spec_type)
            if rkme is None:
                if lid in tokens:
                    self.delete(lid)
                continue
            order.append(lid)
            t = tokens.get(lid)
            if t is not None and t[0] is rkme and t[1] is rkme.z and t[2] is rkme.beta and t[3] == _kernel_token(rkme):
                continue
            tok = _token(rkme)
            if lid in self.index:
                self.index.replace(lid, from_reference_spec(rkme, self.spec_type))
                tokens[lid] = tok
            else:
                new.append((lid, rkme, tok))
        if new:
            self.index.add_many([(lid, from_reference_spec(rkme, self.spec_type)) for lid, rkme, _ in new])
            for lid, _, tok in new:
                tokens[lid] = tok
        return order

    def delete(self, lid) -> None:
        if lid in self.index:
            self.index.remove(lid)
        self._tokens.pop(lid, None)

    def prune(self, keep_ids) -> None:
        keep = set(keep_ids)
        for lid in [i for i in self._tokens if i not in keep]:
            self.delete(lid)

    def clear(self) -> None:
        self.index = SpecIndex(dtype=self.dtype)
        self._tokens = {}


def searcher_class():
    """The ``PackedStatSearcher`` class (a subclass of ``EasyStatSearcher``); RuntimeError without learnware."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    EasyStatSearcher, SearchResults, SingleSearchItem, MultipleSearchItem, parse_type = _market_api()

    class PackedStatSearcher(EasyStatSearcher):
        """``EasyStatSearcher`` with the table-spec search on an lwengine :class:`~lwengine.SpecIndex`.

        Same results as the reference (rankings, scores, mixtures; see docs/compat.md).  Extras:
        ``index`` (the SpecIndex mirror) and ``last_result`` (lwengine's full result of the last table
        search: distances, mixture weights, pool).  ``dtype="float32"`` halves the index memory
        (distances then differ from the reference's by ~1e-8, see docs/search.md).
        """

        def __init__(self, organizer=None, dtype: str = "float64", **kwargs):
            self._dtype = dtype
            self._mirrors = {TABLE: _Mirror(dtype)}  # one mirror per registered spec type searched so far
            self.last_result: SearchResult | None = None
            super().__init__(organizer, **kwargs)

        @property
        def _mirror(self) -> _Mirror:
            return self._mirrors[TABLE]

        def _mirror_for(self, spec_type: str) -> _Mirror:
            if spec_type not in self._mirrors:
                self._mirrors[spec_type] = _Mirror(self._dtype, spec_type)
            return self._mirrors[spec_type]

        def reset(self, organizer, **kwargs):
            super().reset(organizer, **kwargs)
            for m in self._mirrors.values():
                m.clear()

        @property
        def index(self) -> SpecIndex:
            """The table-spec mirror (``indexes[type]`` for every type searched so far)."""
            return self._mirror.index

        @property
        def indexes(self) -> dict:
            return {t: m.index for t, m in self._mirrors.items()}

        # ---------------------------------------------------------- organizer events (see install)
        def add(self, learnware) -> None:
            if learnware is not None:
                for m in self._mirrors.values():
                    m.sync([learnware])

        update = add

        def delete(self, learnware_id) -> None:
            for m in self._mirrors.values():
                m.delete(learnware_id)

        def reload(self, learnwares=None) -> None:
            """Re-pack from ``learnwares`` (default: every learnware of the organizer)."""
            if learnwares is None and self.learnware_organizer is not None:
                learnwares = self.learnware_organizer.get_learnwares()
            for m in self._mirrors.values():
                m.clear()
                m.sync(learnwares or [])

        def _prune_stale(self) -> None:
            org = self.learnware_organizer
            if org is None or not hasattr(org, "get_learnware_ids"):
                return
            try:
                n = len(org)
            except TypeError:
                return
            for m in self._mirrors.values():
                if len(m) > n:  # something packed is no longer in the market
                    m.prune(org.get_learnware_ids())

        # ---------------------------------------------------------- search
        def __call__(self, learnware_list, user_info, max_search_num: int = 5, search_method: str = "greedy"):
            spec_type = parse_type(stat_specs=user_info.stat_info, spec_list=self.SPEC_TYPES)
            ok_num = isinstance(max_search_num, (int, np.integer)) and not isinstance(max_search_num, bool) \
                and max_search_num >= 1
            stat = getattr(user_info, "stat_info", None) or {}
            if registry.lookup(str(spec_type)) is None or not ok_num or stat.get(spec_type) is None:
                self.last_result = None  # unregistered types, odd arguments: the reference code
                return super().__call__(learnware_list, user_info, max_search_num, search_method)
            self.stat_spec_type = spec_type
            user = from_reference_spec(user_info.stat_info[spec_type], spec_type)
            mirror = self._mirror_for(spec_type)
            order = mirror.sync(learnware_list)
            self._prune_stale()
            if not (np.isfinite(user.z).all() and np.isfinite(user.beta).all()):
                # the reference computes a NaN distance to every learnware and drops them all
                log.warning("the user's spec holds non-finite values: no learnware can be ranked")
                self.last_result = None
                return SearchResults()
            method = search_method if search_method in ("greedy", "auto") else None
            if method is None:
                log.warning("%s not supported!", search_method)
            result = search_batch(mirror.index, [user], max_search_num=int(max_search_num), method=method,
                                  restrict=order)[0]
            self.last_result = result
            by_id = {lw.id: lw for lw in learnware_list}
            singles = [SingleSearchItem(learnware=by_id[s.id], score=s.score) for s in result.single]
            multiples = []
            if result.mixture is not None:
                multiples = [MultipleSearchItem(learnwares=[by_id[i] for i in result.mixture.ids],
                                                score=result.mixture.score)]
            return SearchResults(single_results=singles, multiple_results=multiples)

    _CLASS = PackedStatSearcher
    return _CLASS


def make_searcher(organizer=None, *, dtype: str = "float64"):
    """A ``PackedStatSearcher`` bound to ``organizer`` (RuntimeError without the learnware package)."""
    return searcher_class()(organizer, dtype=dtype)


def __getattr__(name):  # PEP 562: ``from lwengine.compat.learnware import PackedStatSearcher``
    if name == "PackedStatSearcher":
        return searcher_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------ market wiring
def _hook_organizer(organizer, searcher) -> None:
    """Wrap the organizer's mutating methods (once) so that they notify every installed searcher."""
    listeners = organizer.__dict__.get("_lwengine_listeners")
    if listeners is None:
        listeners = organizer.__dict__["_lwengine_listeners"] = []
        for name in _HOOKED:
            original = getattr(organizer, name, None)
            if original is not None:
                setattr(organizer, name, _notifying(organizer, name, original, listeners))
    if searcher not in listeners:
        listeners.append(searcher)


def _notifying(organizer, name, original, listeners):
    @functools.wraps(original)
    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        for s in list(listeners):
            if s.learnware_organizer is not organizer:  # the searcher was reset onto another organizer
                continue
            if name == "add_learnware":
                lid = out[0] if isinstance(out, tuple) and out else None
                if lid is not None:
                    s.add(organizer.get_learnware_by_ids(lid))
            elif name == "delete_learnware":
                lid = args[0] if args else kwargs.get("id")
                if out and lid is not None:
                    s.delete(lid)
            elif name in ("update_learnware", "reload_learnware"):
                lid = args[0] if args else kwargs.get("id", kwargs.get("learnware_id"))
                if lid is not None:
                    lw = organizer.get_learnware_by_ids(lid)
                    s.update(lw) if lw is not None else s.delete(lid)
            else:  # reload_market
                s.reload()
        return out

    return wrapped


def install(market, *, dtype: str = "float64"):
    """Replace the ``EasyStatSearcher`` of ``market`` (a ``LearnwareMarket`` whose searcher is a
    ``SeqCombinedSearcher``, as built by ``instantiate_learnware_market``) with a ``PackedStatSearcher``
    on the same organizer, hook the organizer and pack the market's learnwares.  Returns the searcher.

    Other stat searchers (e.g. the hetero market's ``HeteroStatSearcher``, tried first) are kept."""
    EasyStatSearcher = _market_api()[0]
    cls = searcher_class()
    combined = getattr(market, "learnware_searcher", None)
    stat_list = getattr(combined, "stat_searcher_list", None)
    if stat_list is None:
        raise ValueError("market must be a LearnwareMarket whose searcher has a stat_searcher_list "
                         f"(a SeqCombinedSearcher), got searcher {type(combined).__name__}")
    slots = [i for i, s in enumerate(stat_list) if type(s) is EasyStatSearcher or isinstance(s, cls)]
    if not slots:
        raise ValueError("market's stat_searcher_list holds no EasyStatSearcher to replace: "
                         f"{[type(s).__name__ for s in stat_list]}")
    organizer = market.learnware_organizer
    searcher = stat_list[slots[0]] if isinstance(stat_list[slots[0]], cls) else cls(organizer, dtype=dtype)
    for i in slots:
        stat_list[i] = searcher
    _hook_organizer(organizer, searcher)
    searcher.reload()
    return searcher


def instantiate_learnware_market(*args, dtype: str = "float64", **kwargs):
    """``learnware.market.instantiate_learnware_market(*args, **kwargs)`` with :func:`install` applied."""
    _market_api()
    from learnware.market import instantiate_learnware_market as _instantiate

    market = _instantiate(*args, **kwargs)
    install(market, dtype=dtype)
    return market
