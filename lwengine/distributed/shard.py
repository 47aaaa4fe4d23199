"""One shard of a :class:`~lwengine.distributed.ShardedIndex`: a :class:`~lwengine.SpecIndex` holding the
specs whose id hashes to it, plus the replies the driver's search pipeline needs.

:class:`ShardWorker` is a plain class (testable without Ray); the driver wraps it in ``ray.remote``.
A worker built from a dock opens the dock read-only and loads only its own ids (global insertion
sequence numbers kept), so a restarted actor rebuilds its shard by running ``__init__`` again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import uuid

import numpy as np

from ..dock.store import read_records
from ..index import SpecIndex
from ..search import exact_dists, pack_pool, scan_groups
from ..specs import registry

__all__ = ["shard_of", "ShardWorker"]

log = logging.getLogger(__name__)


def shard_of(id: str, num_shards: int) -> int:
    """The shard of ``id``: blake2b-64 of its UTF-8 bytes modulo ``num_shards`` (stable across processes,
    machines and Python versions, unlike ``hash()``)."""
    h = hashlib.blake2b(id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") % int(num_shards)


class ShardWorker:
    """The specs of shard ``shard`` of ``num_shards``; ``dock``: a dock directory to load them from."""

    def __init__(self, shard: int, num_shards: int, dock: str | None = None, dtype: str = "float64"):
        self.shard, self.num_shards, self.dock, self.dtype = int(shard), int(num_shards), dock, dtype
        self.incarnation = uuid.uuid4().hex  # a restarted actor gets a new one: the driver replays its journal
        self.version = 0  # bumped by every mutation: the driver's catalog cache key
        self.index = SpecIndex(dtype=dtype)
        self.gen = -1
        self.crc: dict = {}
        self.problems: list = []
        if dock is not None:
            self._load_dock()

    # ------------------------------------------------------------------ dock loading / sync
    def _db(self):
        path = os.path.join(self.dock, "dock.sqlite")
        if not os.path.exists(path):
            raise FileNotFoundError(f"not a dock (no dock.sqlite): {self.dock}")
        c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=60.0)
        return c

    def _mine(self, id) -> bool:
        return shard_of(id, self.num_shards) == self.shard

    def _load_dock(self) -> None:
        c = self._db()
        try:
            c.execute("BEGIN")
            gen = int(c.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
            rows = [r for r in c.execute("SELECT id, seq, seg, off, len, crc FROM learnwares") if self._mine(r[0])]
            c.execute("COMMIT")
        finally:
            c.close()
        self.index, self.crc, self.problems = SpecIndex(dtype=self.dtype), {}, []
        self._insert_rows(rows)
        self.gen = gen
        self.version += 1

    def _insert_rows(self, rows) -> None:
        def damaged(id, message):
            self.problems.append((id, message))
            log.error("shard %d: learnware %s quarantined: %s", self.shard, id, message)

        prepared, seqs, crcs = read_records(self.dock, rows, damaged)
        self.crc.update(crcs)
        if prepared:
            self.index.insert(prepared, seqs=seqs)

    def sync(self) -> tuple:
        """Catch up with the dock's committed state (removed, added and re-specced learnwares of this
        shard); a full reload when the tombstones needed were pruned.  Returns ``(incarnation, gen)``."""
        if self.dock is None:
            return self.incarnation, self.gen
        c = self._db()
        try:
            c.execute("BEGIN")
            gen = int(c.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
            if gen == self.gen:
                c.execute("COMMIT")
                return self.incarnation, gen
            floor = int(c.execute("SELECT value FROM meta WHERE key='tomb_floor'").fetchone()[0])
            if floor > self.gen:
                c.execute("COMMIT")
                c.close()
                c = None
                self._load_dock()
                return self.incarnation, self.gen
            idx = self.index
            for (id,) in c.execute("SELECT id FROM tombstones WHERE gen > ? ORDER BY gen", (self.gen,)):
                if self._mine(id) and id in idx:
                    idx.remove(id)
                    self.crc.pop(id, None)
            fresh = []
            for id, seq, seg, off, ln, crc in c.execute(
                    "SELECT id, seq, seg, off, len, crc FROM learnwares WHERE gen > ?", (self.gen,)).fetchall():
                if not self._mine(id):
                    continue
                if id in idx:
                    g, local = idx.locate(id)
                    if int(g.seq[local]) == seq and self.crc.get(id) == (crc, ln):
                        continue  # status / semantic only: the driver reads those from the dock
                    idx.remove(id)
                fresh.append((id, seq, seg, off, ln, crc))
            self._insert_rows(fresh)
            c.execute("COMMIT")
        finally:
            if c is not None:
                c.close()
        self.gen = gen
        self.version += 1
        return self.incarnation, gen

    # ------------------------------------------------------------------ mutation (driver-assigned seqs)
    def ping(self) -> str:
        return self.incarnation

    def apply(self, op: str, payload) -> tuple:
        """One journaled mutation: ``("add", [(id, spec, semantic, seq)])``, ``("remove", id)``,
        ``("replace", (id, spec, semantic, keep_semantic))``, ``("set_semantic", (id, semantic))``,
        ``("add_packed", (ids, z, beta, offsets, gamma, num_points, seqs))``."""
        idx = self.index
        if op == "add":
            for id, *_ in payload:
                idx._check_new_id(id)
            idx.insert([(id, registry.as_spec(s, f"spec {id!r}"), sem) for id, s, sem, _ in payload],
                        seqs=[seq for *_, seq in payload])
        elif op == "remove":
            idx.remove(payload)
        elif op == "replace":
            id, spec, sem, keep = payload
            if keep:
                idx.replace(id, spec)
            else:
                idx.replace(id, spec, sem)
        elif op == "set_semantic":
            idx.set_semantic(*payload)
        elif op == "build_sketch":
            idx.build_sketch(payload)
        elif op == "add_packed":
            ids, z, beta, offsets, gamma, num_points, seqs = payload
            before = idx.next_seq
            idx.add_packed(ids, z, beta, offsets, gamma, num_points=num_points)
            g, local = idx.locate(ids[0]) if len(ids) else (None, None)
            if g is not None:  # the driver's global sequence numbers, not the shard's counter
                g.seq[local:local + len(ids)] = seqs
                idx.advance_seq(max(before, int(np.max(seqs)) + 1))
        else:
            raise ValueError(f"unknown shard operation {op!r}")
        self.version += 1
        return self.incarnation, self.version

    # ------------------------------------------------------------------ reads
    def catalog(self) -> dict:
        """What the driver caches per ``(incarnation, version)``: per group, in the index's group order,
        its key, full id list (local order), alive locals, their seqs, within-shard duplicate
        representatives (as local indices) and digests, and the group's stored count ``n``."""
        groups = []
        for g in self.index.groups():
            n = g.n
            live = np.flatnonzero(g.alive[:n])
            rep = np.arange(n)
            dups = g.duplicates()
            if dups:
                rep[dups[0]] = dups[1]
            groups.append({"key": g.key, "spec_type": g.spec_type, "shape": g.shape, "gamma": g.gamma,
                           "n": n, "ids": list(g.ids), "live": live, "seq": np.asarray(g.seq[live]),
                           "rep": rep[live], "digest": np.asarray(g.digest[live])})
        return {"incarnation": self.incarnation, "version": self.version, "groups": groups}

    def scan(self, kind, users, screen) -> tuple:
        """``(incarnation, version, group keys, D, E)`` of :func:`lwengine.search.scan_groups` on this shard
        (``kind = (spec type, trailing shape)``)."""
        groups, D, E, *_ = scan_groups(self.index, (kind[0], tuple(kind[1])), users, screen)
        return self.incarnation, self.version, [g.key for g in groups], D, E if E.any() else None

    def exact(self, wanted, user, user_self) -> tuple:
        """float64 distances of ``wanted = [(group key, locals)]`` (the refiner's recomputation)."""
        groups = [self.index.group(k) for k, _ in wanted]
        gis = np.concatenate([np.full(len(l), i, dtype=np.int64) for i, (_, l) in enumerate(wanted)])
        lis = np.concatenate([np.asarray(l, dtype=np.int64) for _, l in wanted])
        return self.incarnation, exact_dists(groups, gis, lis, user, user_self)

    def pack(self, wanted) -> tuple:
        """The pool specs ``wanted = [(group key, local)]`` packed in that order (``search.pack_pool``)."""
        keys = list(dict.fromkeys(k for k, _ in wanted))
        groups = [self.index.group(k) for k in keys]
        gis = [keys.index(k) for k, _ in wanted]
        return (self.incarnation,) + tuple(pack_pool(groups, gis, [int(l) for _, l in wanted]))

    def topk(self, user_spec, k, mode, options) -> tuple:
        """``(incarnation, [(id, dist, seq)], last_stats)``."""
        res = self.index.topk(user_spec, k, mode, **options)
        out = []
        for id, d in res:
            g, local = self.index.locate(id)
            out.append((id, d, int(g.seq[local])))
        return self.incarnation, out, self.index.last_stats

    def get(self, id):
        return self.index.get(id)

    def extras(self, ids) -> dict:
        """``{id: extra fields}`` of the ids of ``ids`` in this shard that have any."""
        return {i: self.index.extra_of(i) for i in ids if i in self.index and self.index.extra_of(i)}

    def present(self, ids) -> list:
        """The ids of ``ids`` already in this shard (the driver asks before adding)."""
        return [i for i in ids if i in self.index]

    def contains(self, id) -> bool:
        return id in self.index

    def listing(self) -> list:
        """``[(seq, id, semantic)]`` of every spec (the driver sorts by seq for :meth:`SpecIndex.ids`)."""
        out = []
        for id in self.index.ids():
            g, local = self.index.locate(id)
            out.append((int(g.seq[local]), id, self.index.semantic_of(id)))
        return out

    def info(self) -> dict:
        return {"shard": self.shard, "incarnation": self.incarnation, "version": self.version,
                "specs": len(self.index), "memory_bytes": self.index.memory_bytes(), "gen": self.gen,
                "problems": list(self.problems), "next_seq": self.index.next_seq, "pid": os.getpid()}
