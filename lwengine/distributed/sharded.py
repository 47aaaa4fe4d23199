"""``ShardedIndex``: a :class:`~lwengine.SpecIndex` spread over Ray actors (see docs/distributed.md).

Ids are routed to shards by :func:`shard_of` (blake2b, stable).  The driver keeps the global insertion
sequence numbers, a per-shard journal of the mutations it made (replayed into a restarted actor) and a
per-shard catalog cache (ids, seqs, digests per group, keyed by the actor's incarnation and version).

Search runs the pipeline of :mod:`lwengine.search` unchanged: the shards return their distance columns
(``scan``), the driver concatenates them in (shard, group) order with the global sequence numbers as tie
keys, and the float64 re-checks (``exact``) and the pool specs (``pack``) are fetched from the owning
shards.  ``topk`` merges each shard's certified top-k into the exact global top-k.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time

import numpy as np

from .. import package as ingest
from ..distances import UserQuery
from ..dock.store import check_status
from ..scale.sketch import SketchParams
from ..scale.topk import check_topk_args
from ..search import SCREEN_MIN_SPECS, Refiner, search_batch
from ..semantic import check_semantic_dict, semantic_filter
from ..specs import registry
from .resources import REMOTE_TIMEOUT, actor_options_for
from .shard import ShardWorker, shard_of

__all__ = ["ShardedIndex", "ShardError", "ShardUnavailableError"]

log = logging.getLogger(__name__)

_KEEP = object()


class ShardError(RuntimeError):
    """A shard could not answer (base class)."""


class ShardUnavailableError(ShardError):
    """Shard ``shard`` did not answer (died for good, or restarted and could not be rebuilt): the query
    is refused rather than answered from the other shards alone."""

    def __init__(self, shard: int, num_shards: int, reason: str):
        super().__init__(f"shard {shard} of {num_shards} is unavailable: {reason} -- no result was returned "
                         f"(a ranking without this shard would be silently incomplete)")
        self.shard, self.reason = shard, reason


class _Restarted(Exception):
    """A shard restarted between two phases of one query: its local indices changed, so start over."""


def _ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - exercised only without ray
        raise RuntimeError("lwengine.distributed needs Ray: pip install 'lwengine[distributed]' "
                           f"(or 'ray[default]') ({exc})") from exc
    return ray


class _RemoteGroup:
    """Driver-side stand-in of a shard's group: what :func:`lwengine.search._finish` reads (ids, type)."""

    def __init__(self, shard, entry):
        self.shard, self.key, self.ids = shard, entry["key"], entry["ids"]
        self.spec_type, self.shape, self.gamma = entry["spec_type"], tuple(entry["shape"]), entry["gamma"]
        self.family = registry.get(self.spec_type).family


class ShardedIndex:
    """Specs partitioned over ``num_shards`` Ray actors, each a :class:`~lwengine.SpecIndex`.

    Parameters
    ----------
    num_shards : number of actors (one per GPU or per node in a real cluster).
    address : Ray address for ``ray.init`` when Ray is not initialised yet (None: a local cluster).
    dock : a dock directory; every actor opens it read-only and loads only its ids (in parallel),
        and a restarted actor reloads them the same way.
    dtype : storage dtype of the shard indexes.
    actor_options : ``ray.remote`` options of the actors (default ``num_cpus = min(1, cluster CPUs /
        num_shards)``; a request the cluster cannot hold is a ValueError, never a hang; e.g.
        ``{"num_gpus": 1}`` for one shard per GPU, fractional CPUs to pack several on one node).
    max_restarts : Ray restarts of a dead actor (it re-runs ``__init__``: reload from the dock,
        then the driver replays its journal).
    retries : times a query is re-run after a shard restarted under it.
    journal : keep the mutations made through this object so a restarted actor can be rebuilt
        (memory: every added spec is also held by the driver).  Without a journal, a shard that
        restarts after direct mutations raises :class:`ShardUnavailableError`.
    restart_timeout : seconds to wait for a restarted actor.
    remote_timeout : seconds any remote call may take before :class:`ShardUnavailableError`.
    """

    def __init__(self, num_shards: int, address: str | None = None, *, dock=None, dtype: str = "float64",
                 actor_options: dict | None = None, max_restarts: int = 3, retries: int = 2,
                 journal: bool = True, restart_timeout: float = 60.0, init_kwargs: dict | None = None,
                 remote_timeout: float = REMOTE_TIMEOUT):
        if isinstance(num_shards, bool) or not isinstance(num_shards, (int, np.integer)):
            raise TypeError(f"num_shards must be an integer, got {type(num_shards).__name__}")
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        if dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        import os

        ray = _ray()
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            ray.init(address=address, **(init_kwargs or {}))
            self._owns_ray = True
        self.num_shards, self.dtype, self.retries = int(num_shards), dtype, int(retries)
        self.dock = None if dock is None else os.path.abspath(os.fspath(dock))
        if self.dock is not None and not os.path.exists(os.path.join(self.dock, "dock.sqlite")):
            raise FileNotFoundError(f"not a dock (no dock.sqlite): {self.dock}")
        self.restart_timeout, self.journal = float(restart_timeout), bool(journal)
        self.remote_timeout = float(remote_timeout)
        opts = actor_options_for(ray, self.num_shards, actor_options)  # fits the cluster or fails fast
        cls = ray.remote(ShardWorker).options(max_restarts=int(max_restarts), max_task_retries=0, **opts)
        self._actors = [cls.remote(i, self.num_shards, self.dock, dtype) for i in range(self.num_shards)]
        self._lock = threading.RLock()
        self._journal = [[] for _ in range(self.num_shards)]
        self._mutated = [False] * self.num_shards
        self._catalog = [None] * self.num_shards
        self._inc = [None] * self.num_shards
        self._dock_gen = -1
        self._rep_cache: dict = {}
        self._closed = False
        infos = self._call_list("info")  # waits for every shard to be loaded (in parallel)
        self._inc = [i["incarnation"] for i in infos]
        self._next_seq = max([i["next_seq"] for i in infos] + [0])
        if self.dock is not None:
            self._dock_gen = min(i["gen"] for i in infos)
            with self._dock_db() as c:
                top = c.execute("SELECT COALESCE(MAX(seq), -1) FROM learnwares").fetchone()[0]
            self._next_seq = max(self._next_seq, int(top) + 1)
        self.last_stats: dict = {}

    @classmethod
    def from_dock(cls, path, num_shards: int, address: str | None = None, **kwargs) -> "ShardedIndex":
        """A sharded index over a dock's committed learnwares (each actor loads only its own ids)."""
        return cls(num_shards, address, dock=path, **kwargs)

    # ------------------------------------------------------------------ plumbing
    @property
    def actors(self) -> list:
        """The Ray actor handles, shard by shard."""
        return list(self._actors)

    def shard_of(self, id) -> int:
        if not isinstance(id, str) or not id:
            raise TypeError(f"id must be a non-empty string, got {id!r}")
        return shard_of(id, self.num_shards)

    def _unwrap(self, exc):
        cause = getattr(exc, "cause", None)
        return cause if isinstance(cause, Exception) else exc

    def _submit(self, i, method, args):
        if self._closed:
            raise ShardError("the sharded index is closed")
        return getattr(self._actors[i], method).remote(*args)

    def _call_all(self, method, *args, shards=None, per_shard=None):
        """``{shard: reply}`` of ``method`` on every shard (or ``shards``), in parallel; a shard that
        died is waited for (restart + journal replay) and asked again, up to ``retries`` times."""
        ray = self._ray
        shards = range(self.num_shards) if shards is None else list(shards)
        argv = {i: (per_shard[i] if per_shard is not None else args) for i in shards}
        refs = {i: self._submit(i, method, argv[i]) for i in shards}
        out = {}
        for i in shards:
            for attempt in range(self.retries + 1):
                try:
                    out[i] = ray.get(refs[i], timeout=self.remote_timeout)
                    break
                except ray.exceptions.GetTimeoutError as exc:
                    raise ShardUnavailableError(i, self.num_shards, f"no answer within remote_timeout="
                                                f"{self.remote_timeout:g} s (not scheduled? busy?)") from exc
                except ray.exceptions.RayActorError as exc:
                    self._recover(i, exc)
                    if attempt == self.retries:
                        raise ShardUnavailableError(i, self.num_shards, f"failed {attempt + 1} times: {exc}") \
                            from exc
                    refs[i] = self._submit(i, method, argv[i])
                except ray.exceptions.RayTaskError as exc:
                    raise self._unwrap(exc) from None
        return out

    def _call_list(self, method, *args) -> list:
        """:meth:`_call_all` on every shard, replies as a list in shard order."""
        out = self._call_all(method, *args)
        return [out[i] for i in range(self.num_shards)]

    def _call(self, i, method, *args):
        return self._call_all(method, *args, shards=[i])[i]

    def _recover(self, i, exc) -> None:
        """Wait for shard ``i`` to come back; replay the journal into a new incarnation."""
        ray = self._ray
        deadline = time.monotonic() + self.restart_timeout
        while True:
            try:
                inc = ray.get(self._actors[i].ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
                break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                if time.monotonic() >= deadline or isinstance(err, ray.exceptions.ActorDiedError):
                    raise ShardUnavailableError(i, self.num_shards, f"did not come back: {err}") from exc
                time.sleep(0.1)
        if inc == self._inc[i]:
            return
        log.warning("shard %d restarted (%s); rebuilding it", i, exc.__class__.__name__)
        if self._mutated[i] and not self.journal:
            raise ShardUnavailableError(i, self.num_shards, "it restarted and lost the specs added to it "
                                        "directly (journal=False); rebuild the index")
        for op, payload in self._journal[i]:
            ray.get(self._actors[i].apply.remote(op, payload), timeout=self.remote_timeout)
        if self.dock is not None and self._dock_gen >= 0:
            ray.get(self._actors[i].sync.remote(), timeout=self.remote_timeout)
        self._inc[i] = inc
        self._catalog[i] = None

    def _apply(self, per_shard: dict) -> None:
        """Journaled mutations ``{shard: (op, payload)}``, in parallel."""
        with self._lock:
            replies = self._call_all("apply", per_shard={i: v for i, v in per_shard.items()}, shards=per_shard)
            for i, (op, payload) in per_shard.items():
                self._catalog[i] = None
                self._mutated[i] = True
                if self.journal:
                    self._journal[i].append((op, payload))
                self._inc[i] = replies[i][0]

    def _catalogs(self) -> list:
        stale = [i for i in range(self.num_shards) if self._catalog[i] is None]
        if stale:
            for i, cat in self._call_all("catalog", shards=stale).items():
                self._catalog[i] = cat
                self._inc[i] = cat["incarnation"]
        return self._catalog

    # ------------------------------------------------------------------ container
    def __len__(self) -> int:
        with self._lock:
            return sum(len(g["live"]) for cat in self._catalogs() for g in cat["groups"])

    def __contains__(self, id) -> bool:
        return isinstance(id, str) and bool(id) and self._call(self.shard_of(id), "contains", id)

    def __repr__(self) -> str:
        where = f", dock={self.dock}" if self.dock else ""
        return f"ShardedIndex({self.num_shards} shards{where}, dtype={self.dtype})"

    def ids(self) -> list:
        """All ids in global insertion order (the order that breaks ranking ties)."""
        with self._lock:
            seqs, ids = [], []
            for cat in self._catalogs():
                for g in cat["groups"]:
                    seqs.append(g["seq"])
                    ids.extend(g["ids"][l] for l in g["live"])
            if not ids:
                return []
            order = np.argsort(np.concatenate(seqs), kind="stable")
            return [ids[j] for j in order]

    def get(self, id):
        """The stored spec of ``id`` (from its shard)."""
        return self._call(self.shard_of(id), "get", id)

    def shard_info(self) -> list:
        """Per shard: incarnation, version, spec count, memory, dock generation, pid."""
        return self._call_list("info")

    # ------------------------------------------------------------------ mutation
    def add(self, id, spec, semantic=None) -> None:
        self.add_many([(id, spec, semantic)])

    def add_many(self, items) -> None:
        """Add ``(id, spec[, semantic])`` items under new ids (all-or-nothing across shards)."""
        prepared, seen = [], set()
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise TypeError("add_many items must be (id, spec) or (id, spec, semantic) tuples")
            id, spec = item[0], item[1]
            sem = item[2] if len(item) == 3 else None
            self.shard_of(id)
            if id in seen:
                raise ValueError(f"duplicate id {id!r}: already in the index")
            seen.add(id)
            prepared.append((id, registry.as_spec(spec, f"spec {id!r}"), None if sem is None else check_semantic_dict(sem)))
        if not prepared:
            return
        with self._lock:
            by_shard: dict = {}
            for j, (id, s, sem) in enumerate(prepared):
                by_shard.setdefault(self.shard_of(id), []).append((id, s, sem, self._next_seq + j))
            present = self._call_all("present", shards=by_shard,
                                     per_shard={i: ([r[0] for r in rows],) for i, rows in by_shard.items()})
            dup = [i for v in present.values() for i in v]
            if dup:
                raise ValueError(f"duplicate id {dup[0]!r}: already in the index")
            self._next_seq += len(prepared)
            self._apply({i: ("add", rows) for i, rows in by_shard.items()})

    def add_packed(self, ids, z, beta, offsets, gamma, *, num_points=None) -> None:
        """Bulk add of packed finite table specs (see :meth:`SpecIndex.add_packed`), split by shard."""
        ids = list(ids)
        z, beta, offsets = np.asarray(z), np.asarray(beta), np.asarray(offsets, dtype=np.int64)
        n = len(offsets) - 1
        if len(ids) != n:
            raise ValueError(f"ids must have {n} entries (one per spec), got {len(ids)}")
        if len(set(ids)) != n:
            raise ValueError("ids must be unique")
        npts = np.diff(offsets) if num_points is None else np.asarray(num_points, dtype=np.int64)
        owner = np.array([self.shard_of(i) for i in ids], dtype=np.int64)
        with self._lock:
            seqs = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
            per = {}
            for s in np.unique(owner):
                sel = np.flatnonzero(owner == s)
                lens = offsets[sel + 1] - offsets[sel]
                rows = np.repeat(offsets[sel], lens) + (np.arange(int(lens.sum())) -
                                                        np.repeat(np.cumsum(lens) - lens, lens))
                offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
                per[int(s)] = ("add_packed", ([ids[j] for j in sel], z[rows], beta[rows], offs, float(gamma),
                                              npts[sel], seqs[sel]))
            present = self._call_all("present", shards=per, per_shard={i: (v[1][0],) for i, v in per.items()})
            dup = [i for v in present.values() for i in v]
            if dup:
                raise ValueError(f"duplicate id {dup[0]!r}: already in the index")
            self._next_seq += n
            self._apply(per)

    def remove(self, id) -> None:
        """Remove ``id`` (KeyError if absent)."""
        self._apply({self.shard_of(id): ("remove", id)})

    def replace(self, id, spec, semantic=_KEEP) -> None:
        """Replace the spec of an existing id, keeping its place in the insertion order."""
        s = registry.as_spec(spec, f"spec {id!r}")
        keep = semantic is _KEEP
        self._apply({self.shard_of(id): ("replace", (id, s, None if keep else semantic, keep))})

    def set_semantic(self, id, semantic) -> None:
        self._apply({self.shard_of(id): ("set_semantic", (id, semantic))})

    def build_sketch(self, params=None, **kwargs) -> None:
        """(Re)build every shard's Nyström sketch (see :meth:`SpecIndex.build_sketch`)."""
        if params is None:
            params = SketchParams(**kwargs)
        self._apply({i: ("build_sketch", params) for i in range(self.num_shards)})

    # ------------------------------------------------------------------ search
    @property
    def search_backend(self):
        return _ShardedBackend(self)

    def search(self, user_spec, max_search_num: int = 5, method: str | None = "greedy", semantic=None, *,
               screen: bool | None = None):
        """Reference-compatible search, identical to :meth:`SpecIndex.search` on the same specs."""
        return self.search_batch([user_spec], max_search_num, method, semantic, screen=screen)[0]

    def search_batch(self, user_specs, max_search_num: int = 5, method: str | None = "greedy", semantic=None, *,
                     screen: bool | None = None, restrict=None) -> list:
        """:meth:`search` for many users (one fan-out per trailing shape)."""
        user_specs = list(user_specs)
        with self._lock:
            for attempt in range(self.retries + 1):
                try:
                    return search_batch(self, user_specs, max_search_num=max_search_num, method=method,
                                        semantic=semantic, restrict=restrict, screen=screen)
                except _Restarted as exc:
                    if attempt == self.retries:
                        raise ShardUnavailableError(int(str(exc)), self.num_shards,
                                                    "it kept restarting during the query") from None

    def topk(self, user_spec, k: int = 5, mode: str = "certified", **options) -> list:
        """The exact global top-``k`` ``[(id, dist)]`` (ties in global insertion order) from every shard's
        top-``k`` (certified, brute or approx, see :meth:`SpecIndex.topk`).  :attr:`last_stats` sums the
        shards' counters and keeps each shard's own statistics under ``"shards"``."""
        check_topk_args(k, mode)
        user = UserQuery(user_spec).spec  # validate on the driver (clear errors, no fan-out)
        t0 = time.perf_counter()
        with self._lock:
            replies = self._call_list("topk", user, int(k), mode, dict(options))
        merged = [r for _, res, _ in replies for r in res]
        merged.sort(key=lambda r: (r[1], r[2]))
        stats = [s for *_, s in replies]
        self.last_stats = {
            "mode": mode, "k": int(k), "shards": stats,
            **{f: sum(s.get(f, 0) for s in stats) for f in ("n_specs", "exact_evaluations", "candidates_scanned")},
            "fallback": [s.get("fallback") for s in stats],
            "time_total_s": time.perf_counter() - t0,
            "time_shard_max_s": max(s.get("time_total_s", 0.0) for s in stats),
        }
        return [(id, d) for id, d, _ in merged[:k]]

    # ------------------------------------------------------------------ dock
    def _dock_db(self):
        import contextlib

        @contextlib.contextmanager
        def conn():
            c = sqlite3.connect(f"file:{self.dock}/dock.sqlite?mode=ro", uri=True, isolation_level=None,
                                timeout=60.0)
            try:
                yield c
            finally:
                c.close()
        return conn()

    def sync(self) -> int:
        """Bring every shard to the dock's latest committed generation; returns it."""
        if self.dock is None:
            raise ValueError("sync() needs a dock-backed index (ShardedIndex.from_dock)")
        with self._lock:
            gens = [g for _, g in self._call_list("sync")]
            for i in range(self.num_shards):
                self._catalog[i] = None
            self._dock_gen = min(gens)
            with self._dock_db() as c:
                top = c.execute("SELECT COALESCE(MAX(seq), -1) FROM learnwares").fetchone()[0]
            self._next_seq = max(self._next_seq, int(top) + 1)
            return self._dock_gen

    def dock_search(self, user_spec, max_search_num: int = 5, method: str | None = "greedy", semantic=None, *,
                    status: int | None = 1):
        """:meth:`lwengine.dock.Dock.search` through the shards: same arguments, same result."""
        return self.dock_search_batch([user_spec], max_search_num, method, semantic, status=status)[0]

    def dock_search_batch(self, user_specs, max_search_num: int = 5, method: str | None = "greedy", semantic=None,
                          *, status: int | None = 1) -> list:
        if self.dock is None:
            raise ValueError("dock_search() needs a dock-backed index (ShardedIndex.from_dock)")
        if status is not None:
            status = check_status(status)
        if semantic is not None:
            ingest.check_semantic(semantic)
        user_specs = list(user_specs)
        with self._lock:
            with self._dock_db() as c:
                gen = int(c.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
            if gen != self._dock_gen:
                self.sync()
            with self._dock_db() as c:
                c.execute("BEGIN")
                rows = c.execute("SELECT id, status, semantic FROM learnwares ORDER BY seq").fetchall()
                c.execute("COMMIT")
            restrict = None
            if status is not None and any(int(s) != status for _, s, _ in rows):
                restrict = [i for i, s, _ in rows if int(s) == status]
            if semantic is not None:
                import json

                sems = {i: (None if s is None else json.loads(s)) for i, _, s in rows}
                listed = [i for i, _, _ in rows] if restrict is None else restrict
                restrict = semantic_filter([(i, sems.get(i)) for i in listed], semantic)
            if restrict is None and user_specs and any(u is None for u in user_specs):
                restrict = [i for i, _, _ in rows]
            return self.search_batch(user_specs, max_search_num, method, restrict=restrict)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Kill the actors (and shut Ray down if this object started it)."""
        if self._closed:
            return
        self._closed = True
        for a in self._actors:
            try:
                self._ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self._owns_ray:
            self._ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cross_shard_reps(groups, gi_all, digs):
    """Position of each spec's representative: the first position with the same group key and digest."""
    n = len(gi_all)
    key_id = {}
    gk = np.array([key_id.setdefault(g.key, len(key_id)) for g in groups], dtype=np.int64)[gi_all]
    d64 = np.ascontiguousarray(np.concatenate(digs)).view(np.uint64).reshape(n, 2)
    order = np.lexsort((np.arange(n), d64[:, 1], d64[:, 0], gk))
    sg, s0, s1 = gk[order], d64[order, 0], d64[order, 1]
    new = np.ones(n, dtype=bool)
    new[1:] = (sg[1:] != sg[:-1]) | (s0[1:] != s0[:-1]) | (s1[1:] != s1[:-1])
    first = order[np.maximum.accumulate(np.where(new, np.arange(n), 0))]
    out = np.empty(n, dtype=np.int64)
    out[order] = first
    return out


class _ShardedBackend:
    """The scan of :func:`lwengine.search.search_batch` over the shards (see :class:`LocalBackend`)."""

    def __init__(self, sharded: ShardedIndex):
        self.sx = sharded
        self.inc = {}  # shard -> incarnation seen by this query's scan

    def listing(self, semantic, restrict) -> list:
        sx = self.sx
        if semantic is None:
            present = set(sx.ids())
            return [i for i in restrict if i in present]
        rows = sorted(r for part in sx._call_list("listing") for r in part)
        sems = {i: sem for _, i, sem in rows}
        listed = [i for _, i, _ in rows] if restrict is None else [i for i in restrict if i in sems]
        return semantic_filter([(i, sems.get(i)) for i in listed], semantic)

    def scan(self, kind, users, screen):
        sx = self.sx
        cats = sx._catalogs()
        if screen is None:  # the single index's rule on the group's total size over all shards
            total: dict = {}
            for cat in cats:
                for g in cat["groups"]:
                    total[g["key"]] = total.get(g["key"], 0) + g["n"]
            screen = {k: n >= SCREEN_MIN_SPECS for k, n in total.items()}
        replies = sx._call_list("scan", kind, users, screen)
        groups, Ds, Es, reps, seqs, gis, lis, digs = [], [], [], [], [], [], [], []
        base = 0
        Q = len(users)
        for i, (inc, version, gkeys, D, E) in enumerate(replies):
            cat = sx._catalog[i]
            if cat is None or cat["incarnation"] != inc or cat["version"] != version:
                sx._catalog[i] = None
                cat = sx._catalogs()[i]
                if cat["incarnation"] != inc or cat["version"] != version:
                    raise _Restarted(str(i))
            self.inc[i] = inc
            by_key = {g["key"]: g for g in cat["groups"]}
            Ds.append(D)
            Es.append(np.zeros_like(D) if E is None else E)
            for key in gkeys:
                g = by_key[key]
                live = g["live"]
                gi = len(groups)
                groups.append(_RemoteGroup(i, g))
                reps.append(base + np.searchsorted(live, g["rep"]))
                seqs.append(g["seq"])
                gis.append(np.full(len(live), gi, dtype=np.int64))
                lis.append(live)
                digs.append(g["digest"])
                base += len(live)
        if not groups:
            D = E = np.empty((Q, 0))
            e = np.empty(0, dtype=np.int64)
            return [], D, E, e, e, e, e
        D, E = np.concatenate(Ds, axis=1), np.concatenate(Es, axis=1)
        rep, seq = np.concatenate(reps), np.concatenate(seqs)
        gi_all, li_all = np.concatenate(gis), np.concatenate(lis)
        # bit-identical specs on different shards: one representative per (group key, digest), as a
        # single index's group has (exact ties; the refiner recomputes duplicates together).  The map
        # depends only on the catalogs: cached per (shape, every shard's incarnation and version).
        if sx.num_shards > 1:
            ck = (tuple(kind), tuple((c["incarnation"], c["version"]) for c in sx._catalog))
            if sx._rep_cache.get("key") != ck:
                sx._rep_cache = {"key": ck, "rep": _cross_shard_reps(groups, gi_all, digs)}
            rep = sx._rep_cache["rep"]
            moved = np.flatnonzero(rep != np.arange(len(rep)))
            if len(moved):
                D[:, moved] = D[:, rep[moved]]
                E[:, moved] = E[:, rep[moved]]
        return groups, D, E, rep, seq, gi_all, li_all

    def refiner(self, groups, gi_all, li_all, rep_all, err, user_z2, user_beta, user_self):
        backend = self

        class _ShardRefiner(Refiner):
            def exact(self, todo):
                shard = np.array([groups[g].shard for g in self.gi[todo]], dtype=np.int64)
                per = {}
                for s in np.unique(shard):
                    at = np.flatnonzero(shard == s)
                    gs = self.gi[todo[at]]
                    wanted = [(groups[g].key, self.li[todo[at[gs == g]]]) for g in np.unique(gs)]
                    per[int(s)] = (at, gs, wanted)
                replies = backend.sx._call_all("exact", shards=per,
                                               per_shard={s: (w, self.user, self.user_self)
                                                          for s, (_, _, w) in per.items()})
                out = np.empty(len(todo))
                for s, (at, gs, wanted) in per.items():
                    inc, d = replies[s]
                    backend._check(s, inc)
                    order = np.concatenate([at[gs == g] for g in np.unique(gs)])
                    out[order] = d
                return out

        return _ShardRefiner(groups, gi_all, li_all, rep_all, err, user_z2, user_beta, user_self)

    def extras(self, ids) -> list:
        """The stored extra fields of ``ids`` (every shard answers for the ids it holds)."""
        found = {}
        for part in self.sx._call_list("extras", list(ids)):
            found.update(part)
        return [found.get(i, {}) for i in ids]

    def _check(self, shard, inc) -> None:
        if self.inc.get(shard) != inc:
            raise _Restarted(str(shard))

    def pack(self, groups, gis, lis):
        shard = np.array([groups[g].shard for g in gis], dtype=np.int64)
        per = {int(s): np.flatnonzero(shard == s) for s in np.unique(shard)}
        replies = self.sx._call_all("pack", shards=per, per_shard={
            s: ([(groups[gis[j]].key, int(lis[j])) for j in at],) for s, at in per.items()})
        zs, bs, gam = [None] * len(gis), [None] * len(gis), np.empty(len(gis))
        for s, at in per.items():
            inc, z, beta, offsets, gammas = replies[s]
            self._check(s, inc)
            for j, p in enumerate(at):
                zs[p], bs[p] = z[offsets[j]:offsets[j + 1]], beta[offsets[j]:offsets[j + 1]]
                gam[p] = gammas[j]
        lens = [len(b) for b in bs]
        return np.concatenate(zs), np.concatenate(bs), np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), gam
