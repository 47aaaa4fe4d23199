"""`Dock`: a persistent, concurrent, crash-safe learnware store (a directory).

Layout of a dock directory::

    dock.sqlite (+ -wal, -shm)   records (id, status, semantic spec, package, spec location), meta, tombstones
    segments/seg-000001.bin      append-only spec records: header (magic, length, crc32) + payload
    packages/<id>-<hex>.zip      the stored package of each learnware that came as a package
    snapshot-<generation>.lwe    packed index (SpecIndex.save form, memory-mapped) at that generation
    write.lock, snapshot.lock    flock targets

Write protocol (commit = acknowledgement): spec bytes are appended to the active segment and the
package file is written, both fsync'd, *before* the SQLite transaction (WAL, synchronous=FULL) that
references them and bumps the generation counter.  A crash before the commit leaves unreferenced
bytes (ignored; the next writer truncates the segment tail and deletes orphan files); after it,
everything the row references is on disk.  Readers patch their in-memory index from the rows whose
``gen`` is newer than theirs (and the tombstones of removals) inside one read transaction, so a
search never sees a half-added learnware.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import mmap
import os
import sqlite3
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass

import numpy as np

from .. import device as devices
from ..index import BulkReport, SpecIndex
from ..progress import progress_iter
from ..search import search_batch
from ..semantic import semantic_filter
from ..specs import registry
from ..specs.table import RKMESpec
from .. import package as ingest
from ..package import Limits
from .. import ids as _ids, limits as spec_limits_mod
from .gate import SearchGate

__all__ = ["Dock", "DockError", "DockLockedError", "LearnwareRecord", "STATUS_INVALID", "STATUS_UNUSABLE",
           "STATUS_USABLE"]

log = logging.getLogger(__name__)

STATUS_INVALID, STATUS_UNUSABLE, STATUS_USABLE = -1, 0, 1
_STATUSES = (STATUS_INVALID, STATUS_UNUSABLE, STATUS_USABLE)
_FORMAT = 1
_REC_MAGIC = b"LWS1"
_REC_MAGIC_TYPED = b"LWS2"  # the LWS1 payload + a JSON trailer {"type", "extra"} (non-table spec types)
_REC_MAGIC_ROWS = b"LWS3"  # LWS2 with the kernel family's stored rows (uint32 row width after the shape):
# types whose stores keep fewer columns than the shape (image specs with the canonical z keep none)
_REC_HDR = struct.Struct("<4sII")          # magic, payload length, crc32(payload)
_REC_FIX = struct.Struct("<IdqI")          # K, gamma, num_points, number of trailing dims
_SEGMENT_MAX = 256 << 20
_KEEP = object()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS learnwares (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status INTEGER NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    semantic TEXT,
    package TEXT,
    spec_file TEXT,
    seg INTEGER NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL, crc INTEGER NOT NULL,
    K INTEGER NOT NULL, shape TEXT NOT NULL, gamma REAL NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL,
    gen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS lw_gen ON learnwares(gen);
CREATE INDEX IF NOT EXISTS lw_seg ON learnwares(seg, off);
CREATE TABLE IF NOT EXISTS tombstones (gen INTEGER NOT NULL, id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tomb_gen ON tombstones(gen);
"""


class DockError(RuntimeError):
    """A dock-level problem (not a dock, corrupt records, wrong format version)."""


class DockLockedError(DockError):
    """Another process holds the dock's write lock for longer than ``lock_timeout``."""


@dataclass
class LearnwareRecord:
    """One learnware's record (the spec itself: :meth:`Dock.get_spec`)."""

    id: str
    status: int
    semantic: dict | None
    has_package: bool
    K: int
    shape: tuple
    gamma: float
    created: float
    updated: float

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "semantic_specification": self.semantic,
                "has_package": self.has_package, "K": self.K, "shape": list(self.shape), "gamma": self.gamma,
                "created": self.created, "updated": self.updated}


# ----------------------------------------------------------------------------- spec records
def encode_spec(spec: RKMESpec) -> bytes:
    """One segment record: header + payload (K, gamma, num_points, trailing shape, z f64, beta f64)."""
    shape = spec.z_shape
    entry = registry.entry_of(spec)
    spec_type, extra = entry.type, spec.extra()
    typed = spec_type != registry.DEFAULT_TYPE or bool(extra)
    param = float(entry.family.param(spec))
    rows = entry.family.rows(spec, param)
    short = rows.shape[1] != (int(np.prod(shape)) if shape else 1)
    magic = _REC_MAGIC_ROWS if short else _REC_MAGIC_TYPED if typed else _REC_MAGIC
    payload = b"".join([_REC_FIX.pack(spec.K, param, int(spec.num_points), len(shape)),
                        struct.pack(f"<{len(shape)}I", *shape),
                        struct.pack("<I", rows.shape[1]) if short else b"",
                        np.ascontiguousarray(rows if short else spec.z, dtype="<f8").tobytes(),
                        np.ascontiguousarray(spec.beta, dtype="<f8").tobytes(),
                        json.dumps({"type": spec_type, "extra": extra}).encode() if typed or short else b""])
    return _REC_HDR.pack(magic, len(payload), zlib.crc32(payload)) + payload


def segment_path(dock_path, seg: int) -> str:
    """Where segment ``seg`` of the dock at ``dock_path`` lives."""
    return os.path.join(dock_path, "segments", f"seg-{seg:06d}.bin")


def read_records(dock_path, rows, on_damage):
    """Decode spec records ``rows`` (id, seq, seg, off, len, crc) from the segments, one mmap per segment.

    Returns ``(prepared, seqs, crcs)`` in insertion order (``prepared`` as ``SpecIndex.insert`` takes it,
    ``crcs``: id -> (crc, len)); a damaged record is skipped and reported as ``on_damage(id, message)``."""
    prepared, seqs, crcs = [], [], {}
    by_seg: dict = {}
    for r in rows:
        by_seg.setdefault(r[2], []).append(r)
    for seg, rs in by_seg.items():
        with open(segment_path(dock_path, seg), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            try:
                for id, seq, _, off, ln, crc in rs:
                    try:
                        if mm is None or off + ln > size:
                            raise ValueError("record beyond the end of its segment")
                        spec = decode_spec(mm[off:off + ln], crc)
                    except ValueError as exc:
                        on_damage(id, f"segment {seg} offset {off}: {exc}")
                        continue
                    prepared.append((id, spec, None))
                    seqs.append(int(seq))
                    crcs[id] = (crc, ln)
            finally:
                if mm is not None:
                    mm.close()
    order = np.argsort(seqs, kind="stable")
    return [prepared[i] for i in order], [seqs[i] for i in order], crcs


def decode_spec(blob, expect_crc: int | None = None) -> RKMESpec:
    """Inverse of :func:`encode_spec`; ValueError on any damage."""
    if len(blob) < _REC_HDR.size:
        raise ValueError("spec record truncated")
    magic, n, crc = _REC_HDR.unpack_from(blob, 0)
    payload = bytes(blob[_REC_HDR.size:_REC_HDR.size + n])
    if magic not in (_REC_MAGIC, _REC_MAGIC_TYPED, _REC_MAGIC_ROWS) or len(payload) != n:
        raise ValueError("spec record has a bad header or is truncated")
    if zlib.crc32(payload) != crc or (expect_crc is not None and crc != expect_crc):
        raise ValueError("spec record checksum mismatch")
    K, gamma, num_points, nd = _REC_FIX.unpack_from(payload, 0)
    pos = _REC_FIX.size
    shape = struct.unpack_from(f"<{nd}I", payload, pos)
    pos += 4 * nd
    dim = int(np.prod(shape, dtype=np.int64)) if nd else 1
    if magic == _REC_MAGIC_ROWS:
        if pos + 4 > n:
            raise ValueError("spec record truncated")
        dim = struct.unpack_from("<I", payload, pos)[0]
        pos += 4
    end = pos + 8 * (K * dim + K)
    if end != n if magic == _REC_MAGIC else end > n:
        raise ValueError("spec record length does not match its shape")
    z = np.frombuffer(payload, dtype="<f8", count=K * dim, offset=pos).reshape((K, dim))
    beta = np.frombuffer(payload, dtype="<f8", count=K, offset=pos + 8 * K * dim)
    if magic == _REC_MAGIC:
        return RKMESpec(z.reshape((K,) + tuple(shape)).astype(np.float64), beta.astype(np.float64), gamma, num_points)
    try:
        meta = json.loads(payload[end:].decode("utf-8"))
        entry = registry.get(meta["type"])
        if magic == _REC_MAGIC_ROWS:
            if dim != entry.family.row_dim(tuple(shape), gamma):
                raise ValueError("spec record row width does not match its type")
            z = entry.family.full_rows(z, K, tuple(shape), gamma)
        return entry.cls.from_parts(np.asarray(z, dtype=np.float64).reshape((K,) + tuple(shape)),
                                    beta.astype(np.float64), gamma, num_points, **meta["extra"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"spec record has a bad type trailer: {exc}") from exc


def _user_spec(u):
    return registry.as_spec(u, "user spec")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _semantic_name(semantic) -> str:
    if isinstance(semantic, dict) and isinstance(semantic.get("Name"), dict):
        v = semantic["Name"].get("Values")
        return v if isinstance(v, str) else ""
    return ""


def check_status(status) -> int:
    """A valid learnware status (ValueError / TypeError otherwise)."""
    return _check_status(status)


def _check_status(status) -> int:
    if isinstance(status, bool) or not isinstance(status, (int, np.integer)) or int(status) not in _STATUSES:
        raise ValueError(f"status must be -1 (invalid), 0 (unusable) or 1 (usable), got {status!r}")
    return int(status)


def _check_id(id) -> str:
    return _ids.check_id(id)  # alphabet and byte length: lwengine.ids


# ----------------------------------------------------------------------------- the dock
class Dock:
    """A learnware dock directory: durable records + a search index kept in step with them.

    Parameters
    ----------
    path : the dock directory.
    create : create it if missing (``Dock.init`` always creates).
    lock_timeout : seconds a write waits for another process's write lock before
        :class:`DockLockedError` (one writer at a time; readers never wait).
    limits : :class:`~lwengine.package.Limits` for package ingestion.
    dtype : storage dtype of the in-memory index (``"float64"`` reproduces the reference).
    spec_limits : :class:`~lwengine.limits.SpecLimits` caps on K and K·d of ingested and user specs.
    gamma_policy : :class:`~lwengine.limits.GammaPolicy` of accepted γ values (ingest and user specs;
        default: the reference's 0.1 only, as the CLI and ``serve``; ``lwengine.limits.ANY_GAMMA`` accepts
        any γ, as the reference library does).

    Any number of processes may open the same dock; searches see the latest committed state
    (checked at every call through a generation counter).  Thread-safe within a process.
    """

    def __init__(self, path, *, create: bool = False, lock_timeout: float = 10.0, limits: Limits | None = None,
                 dtype: str = "float64", spec_limits=None, gamma_policy=None, device: str = "auto"):
        self.path = os.path.abspath(os.fspath(path))
        self.device = devices.resolve(device)  # the in-memory index's stores and scans
        self.spec_limits = spec_limits or spec_limits_mod.DEFAULT_SPEC_LIMITS
        self.gamma_policy = gamma_policy or spec_limits_mod.GammaPolicy()  # the reference's 0.1 only
        self.lock_timeout = float(lock_timeout)
        self.limits = limits or ingest.DEFAULT_LIMITS
        self.dtype = dtype
        self._db_path = os.path.join(self.path, "dock.sqlite")
        if not os.path.exists(self._db_path):
            if not create:
                raise FileNotFoundError(f"not a dock (no dock.sqlite): {self.path}; create one with Dock.init()")
            os.makedirs(os.path.join(self.path, "segments"), exist_ok=True)
            os.makedirs(os.path.join(self.path, "packages"), exist_ok=True)
        self._local = threading.local()
        self._conns: list = []
        self._wlock = threading.RLock()     # writers within this process
        self._ilock = threading.RLock()     # the in-memory index
        self._gate = SearchGate()           # searches run outside _ilock; in-place patches wait for them
        self._lock_fd = None
        self._lock_depth = 0
        self._closed = False
        # in-memory view (built lazily on the first search)
        self._index: SpecIndex | None = None
        self._gen = -1
        self._status: dict = {}
        self._semantic: dict | None = None
        self._restrict_cache: tuple = (None, None)
        self._snapshot_gen = -1
        self._idx_crc: dict = {}            # id -> (crc, len) of the spec held by the index
        self.problems: list = []            # (id, message) of records quarantined at load
        if not self._has_schema():
            with self._writing(init=True):
                self._init_schema()
        fmt = self._meta("format")
        if int(fmt) != _FORMAT:
            raise DockError(f"{self.path}: dock format {fmt} is not supported (this lwengine reads {_FORMAT})")

    @classmethod
    def init(cls, path, **kwargs) -> "Dock":
        """Create (or open) a dock at ``path``."""
        return cls(path, create=True, **kwargs)

    # ------------------------------------------------------------------ plumbing
    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise DockError("the dock is closed")
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self._db_path, timeout=60.0, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            self._local.conn = c
            self._conns.append(c)
        return c

    def _has_schema(self) -> bool:
        row = self._conn().execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        return row is not None and self._meta("uuid") is not None

    def _init_schema(self) -> None:
        c = self._conn()
        c.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); we hold the write lock
        c.execute("BEGIN IMMEDIATE")
        try:
            for k, v in (("format", _FORMAT), ("generation", 0), ("next_id", 0), ("tomb_floor", 0),
                         ("uuid", uuid.uuid4().hex)):
                c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (k, v))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self._recover()

    def _meta(self, key, conn=None):
        row = (conn or self._conn()).execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    @contextlib.contextmanager
    def _writing(self, init: bool = False):
        """Hold the process-wide write lock (flock on write.lock), waiting up to lock_timeout."""
        with self._wlock:
            if self._lock_depth == 0:
                fd = os.open(os.path.join(self.path, "write.lock"), os.O_RDWR | os.O_CREAT, 0o644)
                deadline = time.monotonic() + self.lock_timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            os.close(fd)
                            raise DockLockedError(
                                f"{self.path}: another process is writing to this dock (write.lock held for "
                                f"more than {self.lock_timeout:g} s); retry later or raise lock_timeout") from None
                        time.sleep(0.02)
                self._lock_fd = fd
            self._lock_depth += 1
            try:
                if self._lock_depth == 1 and not init:
                    self._recover()
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def _recover(self) -> None:
        """Under the write lock: drop what a crashed writer left behind (segment tails, orphan files)."""
        c = self._conn()
        segdir = os.path.join(self.path, "segments")
        segs = sorted(int(n[4:10]) for n in os.listdir(segdir) if n.startswith("seg-") and n.endswith(".bin"))
        if segs:
            last = segs[-1]
            row = c.execute("SELECT off + len FROM learnwares WHERE seg=? ORDER BY off DESC LIMIT 1", (last,)).fetchone()
            end = max(row[0] if row else 0, self._committed_end(c, last))
            p = self._seg_path(last)
            if os.path.getsize(p) > end:  # never truncated: a reader may still map those bytes (SIGBUS)
                log.info("%d unreferenced byte(s) at the end of %s stay as dead space (compact reclaims them)",
                         os.path.getsize(p) - end, p)
        pkgdir = os.path.join(self.path, "packages")
        names = set(os.listdir(pkgdir))
        if names:
            referenced = {r[0] for r in c.execute("SELECT package FROM learnwares WHERE package IS NOT NULL")}
            for n in names - referenced:
                os.unlink(os.path.join(pkgdir, n))
        fd = os.open(os.path.join(self.path, "snapshot.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:  # leftover snapshot temporaries, unless someone is writing one right now
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for n in os.listdir(self.path):
                if n.endswith(".tmp"):
                    os.unlink(os.path.join(self.path, n))
        except BlockingIOError:
            pass
        finally:
            os.close(fd)

    def _seg_path(self, seg: int) -> str:
        return segment_path(self.path, seg)

    def _append_records(self, blobs) -> list:
        """Append records to the active segment, fsync; -> [(seg, off, len, crc)]."""
        segdir = os.path.join(self.path, "segments")
        segs = sorted(int(n[4:10]) for n in os.listdir(segdir) if n.startswith("seg-") and n.endswith(".bin"))
        seg = segs[-1] if segs else 1
        if segs and os.path.getsize(self._seg_path(seg)) > _SEGMENT_MAX:
            seg += 1
        new_file = not os.path.exists(self._seg_path(seg))
        out = []
        with open(self._seg_path(seg), "ab") as f:
            off = f.tell()
            f.write(b"".join(blobs))
            f.flush()
            os.fsync(f.fileno())
        if new_file:
            _fsync_dir(segdir)
        for b in blobs:
            out.append((seg, off, len(b), _REC_HDR.unpack_from(b, 0)[2]))
            off += len(b)
        return out

    def _write_packages(self, items) -> list:
        """Write the package files of a batch, then fsync them all (one journal commit covers most)."""
        d = os.path.join(self.path, "packages")
        names, fds = [], []
        try:
            for it in items:
                if it.get("package") is None:
                    names.append(None)
                    continue
                name = f"{it['id'] or 'auto'}-{uuid.uuid4().hex[:12]}.zip"
                fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                fds.append(fd)
                names.append(name)
                view = memoryview(it["package"])
                while view:
                    view = view[os.write(fd, view):]
            for fd in fds:
                os.fsync(fd)
        except BaseException:
            for n in names:
                if n is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(d, n))
            raise
        finally:
            for fd in fds:
                os.close(fd)
        if fds:
            _fsync_dir(d)
        return names

    def _bump(self, c) -> int:
        gen = int(self._meta("generation", c)) + 1
        c.execute("UPDATE meta SET value=? WHERE key='generation'", (gen,))
        self._mark_committed_end(c)
        return gen

    def _mark_committed_end(self, c) -> None:
        """In a write transaction: every byte of the active segment is now committed (a removed
        record's bytes may still be mapped by a reader, so recovery never truncates below this)."""
        segdir = os.path.join(self.path, "segments")
        segs = sorted(int(n[4:10]) for n in os.listdir(segdir) if n.startswith("seg-") and n.endswith(".bin"))
        if segs:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('seg_end', ?)",
                      (f"{segs[-1]}:{os.path.getsize(self._seg_path(segs[-1]))}",))

    def _committed_end(self, c, seg: int) -> int:
        mark = self._meta("seg_end", c)
        if not mark:
            return 0
        s, end = (int(x) for x in str(mark).split(":"))
        return end if s == seg else 0

    @contextlib.contextmanager
    def _txn(self):
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    # ------------------------------------------------------------------ writes
    def _new_ids(self, c, count: int) -> list:
        nxt = int(self._meta("next_id", c))
        out = []
        while len(out) < count:
            cand = f"{nxt:08d}"
            nxt += 1
            if c.execute("SELECT 1 FROM learnwares WHERE id=?", (cand,)).fetchone() is None:
                out.append(cand)
        c.execute("UPDATE meta SET value=? WHERE key='next_id'", (nxt,))
        return out

    def _commit_items(self, items, status) -> list:
        """items: dicts with spec, semantic, id (or None), package bytes (or None), spec_file.
        Writes segments + packages, then one transaction.  Returns the ids.  Caller holds the lock."""
        status = _check_status(status)
        for it in items:
            self.check_spec(it["spec"], "spec" if it.get("id") is None else f"spec of {it['id']!r}")
        blobs = [encode_spec(it["spec"]) for it in items]
        locs = self._append_records(blobs)
        pkgs = self._write_packages(items)
        try:
            now = time.time()
            with self._txn() as c:
                gen = self._bump(c)
                auto = self._new_ids(c, sum(1 for it in items if it["id"] is None))
                ids = []
                for it, (seg, off, ln, crc), pkg in zip(items, locs, pkgs):
                    id = it["id"] if it["id"] is not None else auto.pop(0)
                    s = it["spec"]
                    sem = it.get("semantic")
                    try:
                        c.execute("INSERT INTO learnwares(id, status, name, semantic, package, spec_file, seg, off, "
                                  "len, crc, K, shape, gamma, created, updated, gen) VALUES "
                                  "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                                  (id, status, _semantic_name(sem), None if sem is None else json.dumps(sem), pkg,
                                   it.get("spec_file"), seg, off, ln, crc, s.K, json.dumps(list(s.z_shape)),
                                   registry.kernel_param(s), now, now, gen))
                    except sqlite3.IntegrityError:
                        raise ValueError(f"duplicate id {id!r}: already in the dock") from None
                    ids.append(id)
        except BaseException:
            for p in pkgs:  # not committed: the files are garbage (the segment tail is truncated later)
                if p is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.path, "packages", p))
            raise
        return ids

    def check_spec(self, spec, what: str = "spec") -> None:
        """The dock's caps (K, K·d) and γ policy for an ingested or user spec; ValueError naming ``what``."""
        spec_limits_mod.check_spec_cost(spec, self.spec_limits, what)
        if registry.entry_of(spec).family.param_is_gamma:
            self.gamma_policy.check(spec.gamma, what)

    def add_spec(self, spec, semantic=None, *, id: str | None = None, status: int = STATUS_USABLE) -> str:
        """Add a raw spec (RKMESpec, spec dict or spec JSON path) with an optional semantic spec -> its id."""
        return self.add_specs([(spec, semantic, id)], status=status)[0]

    def add_specs(self, items, *, status: int = STATUS_USABLE, batch_size: int = 1024, on_commit=None) -> list:
        """Add ``(spec, semantic[, id])`` items in transactions of ``batch_size``; all-or-nothing per batch.
        ``on_commit(ids)`` is called after each committed (acknowledged) batch.  Returns all ids."""
        prepared = []
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise TypeError("add_specs items must be (spec, semantic) or (spec, semantic, id) tuples")
            spec = item[0] if isinstance(item[0], RKMESpec) else (
                ingest.read_spec_file(item[0], self.limits) if isinstance(item[0], (str, os.PathLike))
                else registry.as_spec(item[0], "spec"))
            sem = None if item[1] is None else ingest.check_semantic(item[1])
            id = _check_id(item[2]) if len(item) == 3 and item[2] is not None else None
            prepared.append({"spec": spec, "semantic": sem, "id": id, "package": None, "spec_file": None})
        ids = []
        with self._writing():
            for a in range(0, len(prepared), max(1, int(batch_size))):
                got = self._commit_items(prepared[a:a + batch_size], status)
                ids.extend(got)
                if on_commit is not None:
                    on_commit(got)
        return ids

    def add_package(self, path=None, *, data: bytes | None = None, id: str | None = None, semantic=None,
                    status: int = STATUS_USABLE) -> str:
        """Add a learnware package (zip path, folder, or zip bytes ``data``) -> its id.

        ``semantic`` overrides the package's ``semantic_specification.json``.  Validation happens
        before anything is written (see :func:`lwengine.package.read_package`)."""
        pkg = ingest.read_package(path, data=data, limits=self.limits)
        sem = pkg.semantic if semantic is None else ingest.check_semantic(semantic)
        with self._writing():
            return self._commit_items([{"spec": pkg.spec, "semantic": sem, "id": None if id is None else _check_id(id),
                                        "package": pkg.zip_bytes, "spec_file": pkg.spec_file}], status)[0]

    def add_paths(self, paths, *, semantic=None, status: int = STATUS_USABLE, batch_size: int = 256,
                  progress: bool | None = None, on_commit=None) -> BulkReport:
        """Bulk add of packages (zips / folders) and spec JSON files; failures are reported, not raised.
        Commits every ``batch_size`` valid entries (``on_commit(ids)`` after each)."""
        report = BulkReport()
        paths = [os.fspath(p) for p in paths]
        sem_override = None if semantic is None else ingest.check_semantic(semantic)
        pending = []

        def flush():
            if pending:
                got = self._commit_items(pending, status)
                report.added.extend(got)
                pending.clear()
                if on_commit is not None:
                    on_commit(got)

        with self._writing():
            for p in progress_iter(paths, progress, "adding"):
                try:
                    if p.endswith(".json") and os.path.isfile(p):
                        item = {"spec": ingest.read_spec_file(p, self.limits), "semantic": sem_override, "id": None,
                                "package": None, "spec_file": None}
                    else:
                        pkg = ingest.read_package(p, limits=self.limits)
                        item = {"spec": pkg.spec, "semantic": sem_override if sem_override is not None else pkg.semantic,
                                "id": None, "package": pkg.zip_bytes, "spec_file": pkg.spec_file}
                    self.check_spec(item["spec"], p)  # one refused path must not fail its batch
                except (ValueError, TypeError, OSError) as exc:
                    report.failed.append((p, str(exc)))
                    log.info("skipping %s: %s", p, exc)
                    continue
                pending.append(item)
                if len(pending) >= batch_size:
                    flush()
            flush()
        return report

    def update(self, id: str, *, semantic=_KEEP, spec=None, status: int | None = None, package=None) -> None:
        """Change a learnware's semantic spec, spec and/or status (its place in the order is kept).

        ``package`` (zip path, folder or zip bytes) replaces the stored package and its spec, atomically:
        validated first, new files written and fsync'd, then one transaction; the old package file goes
        after the commit.  The semantic spec is kept unless ``semantic`` is given."""
        updates, params = [], []
        pkg = None
        if package is not None:
            if spec is not None:
                raise ValueError("give spec or package, not both (a package carries its spec)")
            pkg = (ingest.read_package(None, data=bytes(package), limits=self.limits)
                   if isinstance(package, (bytes, bytearray, memoryview))
                   else ingest.read_package(package, limits=self.limits))
            spec = pkg.spec
        if semantic is not _KEEP:
            sem = None if semantic is None else ingest.check_semantic(semantic)
            updates += ["semantic=?", "name=?"]
            params += [None if sem is None else json.dumps(sem), _semantic_name(sem)]
        if status is not None:
            updates.append("status=?")
            params.append(_check_status(status))
        new_spec = None
        if spec is not None:
            new_spec = (ingest.read_spec_file(spec, self.limits) if isinstance(spec, (str, os.PathLike))
                        else registry.as_spec(spec, "spec"))
            self.check_spec(new_spec, f"spec of {id!r}")
        with self._writing():
            if self._conn().execute("SELECT 1 FROM learnwares WHERE id=?", (id,)).fetchone() is None:
                raise KeyError(f"no learnware with id {id!r} in the dock")
            if new_spec is not None:
                (seg, off, ln, crc), = self._append_records([encode_spec(new_spec)])
                updates += ["seg=?", "off=?", "len=?", "crc=?", "K=?", "shape=?", "gamma=?"]
                params += [seg, off, ln, crc, new_spec.K, json.dumps(list(new_spec.z_shape)),
                           registry.kernel_param(new_spec)]
            if not updates:
                return
            new_pkg = old_pkg = None
            if pkg is not None:
                old_pkg = self._conn().execute("SELECT package FROM learnwares WHERE id=?", (id,)).fetchone()[0]
                new_pkg, = self._write_packages([{"id": id, "package": pkg.zip_bytes}])
                updates += ["package=?", "spec_file=?"]
                params += [new_pkg, pkg.spec_file]
            try:
                with self._txn() as c:
                    gen = self._bump(c)
                    c.execute(f"UPDATE learnwares SET {', '.join(updates)}, updated=?, gen=? WHERE id=?",
                              params + [time.time(), gen, id])
            except BaseException:
                if new_pkg is not None:  # not committed: the new file is garbage (the record tail too)
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.path, "packages", new_pkg))
                raise
            if old_pkg is not None:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, "packages", old_pkg))

    def remove(self, id: str) -> None:
        """Delete a learnware (KeyError if absent); its package file goes after the commit."""
        with self._writing():
            with self._txn() as c:
                row = c.execute("SELECT package FROM learnwares WHERE id=?", (id,)).fetchone()
                if row is None:
                    raise KeyError(f"no learnware with id {id!r} in the dock")
                gen = self._bump(c)
                c.execute("DELETE FROM learnwares WHERE id=?", (id,))
                c.execute("INSERT INTO tombstones(gen, id) VALUES (?, ?)", (gen, id))
            if row[0]:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, "packages", row[0]))

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM learnwares").fetchone()[0])

    def __contains__(self, id) -> bool:
        return self._conn().execute("SELECT 1 FROM learnwares WHERE id=?", (id,)).fetchone() is not None

    @property
    def generation(self) -> int:
        return int(self._meta("generation"))

    _COLS = "id, status, semantic, package, K, shape, gamma, created, updated"

    @staticmethod
    def _record(row) -> LearnwareRecord:
        return LearnwareRecord(id=row[0], status=int(row[1]), semantic=None if row[2] is None else json.loads(row[2]),
                               has_package=row[3] is not None, K=int(row[4]), shape=tuple(json.loads(row[5])),
                               gamma=float(row[6]), created=float(row[7]), updated=float(row[8]))

    def get(self, id: str) -> LearnwareRecord:
        row = self._conn().execute(f"SELECT {self._COLS} FROM learnwares WHERE id=?", (id,)).fetchone()
        if row is None:
            raise KeyError(f"no learnware with id {id!r} in the dock")
        return self._record(row)

    def get_spec(self, id: str) -> RKMESpec:
        row = self._conn().execute("SELECT seg, off, len, crc FROM learnwares WHERE id=?", (id,)).fetchone()
        if row is None:
            raise KeyError(f"no learnware with id {id!r} in the dock")
        return self._read_record(*row)

    def _read_record(self, seg, off, ln, crc) -> RKMESpec:
        with open(self._seg_path(seg), "rb") as f:
            blob = os.pread(f.fileno(), ln, off)
        if len(blob) != ln:
            raise ValueError(f"segment {seg} is shorter than a committed record (offset {off})")
        return decode_spec(blob, crc)

    def list(self, *, status: int | None = None, name: str | None = None, page: int = 0, limit: int = 50):
        """``(records, total)``: records in insertion order, filtered by status and a case-insensitive
        substring of the semantic Name, page ``page`` (0-based) of ``limit``."""
        if isinstance(page, bool) or not isinstance(page, int) or page < 0:
            raise ValueError(f"page must be an integer >= 0, got {page!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ValueError(f"limit must be an integer in [1, 10000], got {limit!r}")
        where, params = [], []
        if status is not None:
            where.append("status=?")
            params.append(_check_status(status))
        if name:
            where.append("instr(lower(name), ?) > 0")
            params.append(str(name).lower())
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        c = self._conn()
        c.execute("BEGIN")
        try:
            total = int(c.execute(f"SELECT COUNT(*) FROM learnwares{clause}", params).fetchone()[0])
            rows = c.execute(f"SELECT {self._COLS} FROM learnwares{clause} ORDER BY seq LIMIT ? OFFSET ?",
                             params + [limit, page * limit]).fetchall()
        finally:
            c.execute("COMMIT")
        return [self._record(r) for r in rows], total

    def stats(self) -> dict:
        c = self._conn()
        by_status = {int(s): int(n) for s, n in c.execute("SELECT status, COUNT(*) FROM learnwares GROUP BY status")}
        live = int(c.execute("SELECT COALESCE(SUM(len), 0) FROM learnwares").fetchone()[0])
        segdir = os.path.join(self.path, "segments")
        seg_bytes = sum(os.path.getsize(os.path.join(segdir, n)) for n in os.listdir(segdir))
        pkgdir = os.path.join(self.path, "packages")
        pkg_bytes = sum(os.path.getsize(os.path.join(pkgdir, n)) for n in os.listdir(pkgdir))
        return {"path": self.path, "learnwares": sum(by_status.values()),
                "by_status": {str(k): v for k, v in sorted(by_status.items())},
                "generation": self.generation, "segment_bytes": seg_bytes, "live_spec_bytes": live,
                "garbage_bytes": seg_bytes - live, "package_bytes": pkg_bytes,
                "snapshot_generation": self._latest_snapshot()[0]}

    def export(self, id: str, out) -> str:
        """Write the learnware as a package zip: its stored package (or a generated learnware.yaml), with
        the *current* spec and semantic specification.  Returns the path."""
        row = self._conn().execute("SELECT package, spec_file, semantic, seg, off, len, crc FROM learnwares "
                                   "WHERE id=?", (id,)).fetchone()
        if row is None:
            raise KeyError(f"no learnware with id {id!r} in the dock")
        package, spec_file, semantic, *loc = row
        members = {}
        if package is not None:
            with open(os.path.join(self.path, "packages", package), "rb") as f:
                members = ingest.package_members(f.read(), self.limits)
        spec_file = spec_file or "rkme.json"
        stored = self._read_record(*loc)
        members.setdefault("learnware.yaml", ingest.default_yaml(spec_file, stored).encode())
        members[spec_file] = stored.dumps().encode()
        if semantic is not None:
            members[ingest.SEMANTIC_FILE] = semantic.encode()
        else:
            members.pop(ingest.SEMANTIC_FILE, None)
        out = os.fspath(out)
        tmp = out + ".part"
        with open(tmp, "wb") as f:
            f.write(ingest.build_package_zip(members))
        os.replace(tmp, out)
        return out

    def package_bytes(self, id: str) -> bytes:
        """The exported package zip of ``id`` as bytes."""
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            p = self.export(id, os.path.join(d, "p.zip"))
            with open(p, "rb") as f:
                return f.read()

    # ------------------------------------------------------------------ index maintenance
    def _latest_snapshot(self):
        best = (-1, None)
        for n in os.listdir(self.path):
            if n.startswith("snapshot-") and n.endswith(".lwe"):
                try:
                    g = int(n[9:-4])
                except ValueError:
                    continue
                if g > best[0]:
                    best = (g, os.path.join(self.path, n))
        return best

    def _refresh(self) -> None:
        """Bring the in-memory index to the committed state (call with _ilock held)."""
        c = self._conn()
        gen = int(self._meta("generation", c))
        if self._index is not None and gen == self._gen:
            return
        for attempt in range(5):
            try:
                c.execute("BEGIN")
                try:
                    if self._index is None or int(self._meta("tomb_floor", c)) > self._gen:
                        self._full_load(c)
                    else:
                        self._patch(c, self._gen)
                finally:
                    c.execute("COMMIT")
                return
            except FileNotFoundError:  # a segment was compacted away under us: retry on the new state
                self._index = None
                if attempt == 4:
                    raise

    def _full_load(self, c) -> None:
        gen = int(self._meta("generation", c))
        snap_gen, snap_path = self._latest_snapshot()
        index = None
        if snap_path is not None and snap_gen <= gen:
            try:
                index = SpecIndex.load(snap_path, mmap=True)
            except (ValueError, OSError, KeyError) as exc:
                log.warning("ignoring unreadable snapshot %s: %s", snap_path, exc)
                index = None
        self.problems = []
        self._status = dict(c.execute("SELECT id, status FROM learnwares"))
        self._restrict_cache = (None, None)
        self._semantic = None
        if index is not None and int(self._meta("tomb_floor", c)) <= snap_gen:
            self._index, self._gen = index, snap_gen
            self._snapshot_gen = snap_gen
            self._idx_crc = {i: (crc, ln) for i, crc, ln in
                             c.execute("SELECT id, crc, len FROM learnwares WHERE gen <= ?", (snap_gen,))}
            self._check_segments(c)
            self._patch(c, snap_gen)
            return
        self._index = SpecIndex(dtype=self.dtype, device=self.device)
        self._idx_crc = {}
        self._snapshot_gen = -1
        self._check_segments(c)
        rows = c.execute("SELECT id, seq, seg, off, len, crc FROM learnwares ORDER BY seg, off").fetchall()
        self._insert_rows(rows)
        self._gen = gen

    def _check_segments(self, c) -> None:
        """Cheap open-time check: every referenced segment exists and covers its records."""
        for seg, end in c.execute("SELECT seg, MAX(off + len) FROM learnwares GROUP BY seg"):
            p = self._seg_path(seg)
            size = os.path.getsize(p) if os.path.exists(p) else -1
            if size < end:
                bad = [r[0] for r in c.execute("SELECT id FROM learnwares WHERE seg=? AND off + len > ?",
                                               (seg, max(size, 0)))]
                for id in bad:
                    self.problems.append((id, f"segment {seg} is missing or truncated"))
                log.error("dock %s: %d record(s) reference missing bytes in segment %d (quarantined)",
                          self.path, len(bad), seg)

    def _insert_rows(self, rows) -> None:
        """Read spec records (rows: id, seq, seg, off, len, crc) and insert them into the index."""
        bad_ids = {p[0] for p in self.problems}

        def damaged(id, message):
            self.problems.append((id, message))
            log.error("dock %s: learnware %s quarantined: %s", self.path, id, message)

        prepared, seqs, crcs = read_records(self.path, [r for r in rows if r[0] not in bad_ids], damaged)
        self._idx_crc.update(crcs)
        if prepared:
            self._index.insert(prepared, seqs=seqs)

    def _patch(self, c, since: int) -> None:
        self._gate.wait_idle()  # in-place changes: no search may be reading this index
        gen = int(self._meta("generation", c))
        idx = self._index
        for (id,) in c.execute("SELECT id FROM tombstones WHERE gen > ? ORDER BY gen", (since,)):
            if id in idx:
                idx.remove(id)
            self._status.pop(id, None)
            self._idx_crc.pop(id, None)
            if self._semantic is not None:
                self._semantic.pop(id, None)
        rows = c.execute("SELECT id, seq, seg, off, len, crc, status, semantic FROM learnwares WHERE gen > ?",
                         (since,)).fetchall()
        fresh = []
        for id, seq, seg, off, ln, crc, status, sem in rows:
            self._status[id] = int(status)
            if self._semantic is not None:
                self._semantic[id] = None if sem is None else json.loads(sem)
            if id in idx:
                g, local = idx.locate(id)
                if int(g.seq[local]) == seq and self._idx_crc.get(id) == (crc, ln):
                    continue  # only status / semantic changed
                idx.remove(id)
                self._idx_crc.pop(id, None)
            fresh.append((id, seq, seg, off, ln, crc))
        self._insert_rows(fresh)
        self._gen = gen
        self._restrict_cache = (None, None)

    def _ensure_index(self) -> SpecIndex:
        self._refresh()
        return self._index

    def checkpoint(self, *, if_stale: bool = False, min_changes: int = 1000) -> bool:
        """Write a fresh index snapshot for the current generation (so the next open is fast).
        ``if_stale``: only when more than ``max(min_changes, 5% of the dock)`` generations passed
        since the newest snapshot.  Returns True if a snapshot was written."""
        with self._ilock:
            self._refresh()
            snap_gen, _ = self._latest_snapshot()
            if snap_gen == self._gen:
                return False
            if if_stale and self._gen - snap_gen <= max(min_changes, len(self._status) // 20):
                return False
            fd = os.open(os.path.join(self.path, "snapshot.lock"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False  # another process is writing one
                target = os.path.join(self.path, f"snapshot-{self._gen}.lwe")
                tmp = target + ".w.tmp"
                self._gate.wait_idle()  # save() compacts groups in place
                self._index.save(tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, target)
                _fsync_dir(self.path)
                self._snapshot_gen = self._gen
                for n in os.listdir(self.path):  # older snapshots (open mmaps keep their inode)
                    if n.startswith("snapshot-") and n.endswith(".lwe") and n != os.path.basename(target):
                        with contextlib.suppress(OSError):
                            os.unlink(os.path.join(self.path, n))
                self._prune_tombstones(self._gen)
                return True
            finally:
                os.close(fd)

    def _prune_tombstones(self, upto: int) -> None:
        """Tombstones at or below the newest snapshot are not needed to patch it; readers older than
        ``tomb_floor`` reload from the snapshot instead."""
        try:
            with self._writing():
                with self._txn() as c:
                    n = c.execute("SELECT COUNT(*) FROM tombstones WHERE gen <= ?", (upto,)).fetchone()[0]
                    if n:
                        c.execute("DELETE FROM tombstones WHERE gen <= ?", (upto,))
                        c.execute("UPDATE meta SET value=? WHERE key='tomb_floor'", (upto,))
        except DockLockedError:
            pass

    # ------------------------------------------------------------------ search
    def _restrict(self, status):
        """Ordered ids of the searchable learnwares (None: all of them)."""
        if status is None:
            return None
        key = (self._gen, status)
        if self._restrict_cache[0] == key:
            return self._restrict_cache[1]
        bad = {p[0] for p in self.problems}
        if not bad and all(s == status for s in self._status.values()):
            ids = None
        else:
            ids = [i for i in self._index.ids() if self._status.get(i) == status]
        self._restrict_cache = (key, ids)
        return ids

    def _semantic_of(self, c) -> dict:
        if self._semantic is None:
            self._semantic = {i: (None if s is None else json.loads(s))
                              for i, s in c.execute("SELECT id, semantic FROM learnwares")}
        return self._semantic

    def search(self, user_spec, max_search_num: int = 5, method: str | None = "greedy", semantic=None, *,
               status: int | None = STATUS_USABLE, device: str | None = None):
        """Reference-compatible search (exactly :meth:`SpecIndex.search` with ``semantic=``) over the
        learnwares with check status ``status`` (default 1, usable; None: every learnware).

        ``user_spec`` may be None when ``semantic`` is given (semantic matches only).  ``device``: None for
        the dock's."""
        return self.search_batch([user_spec], max_search_num, method, semantic, status=status, device=device)[0]

    def search_batch(self, user_specs, max_search_num: int = 5, method: str | None = "greedy", semantic=None, *,
                     status: int | None = STATUS_USABLE, device: str | None = None) -> list:

        if status is not None:
            status = _check_status(status)
        user_specs = [u if u is None or isinstance(u, RKMESpec) else _user_spec(u) for u in user_specs]
        for u in user_specs:  # caps before any kernel runs, outside the index lock
            if u is not None:
                self.check_spec(u, "user spec")
        with self._ilock:
            self._refresh()
            index = self._index
            restrict = self._restrict(status)
            if semantic is not None:
                ingest.check_semantic(semantic)
                c = self._conn()
                c.execute("BEGIN")
                try:
                    sems = self._semantic_of(c)
                finally:
                    c.execute("COMMIT")
                listed = index.ids() if restrict is None else restrict
                restrict = semantic_filter([(i, sems.get(i)) for i in listed], semantic)
            if restrict is None and user_specs and any(u is None for u in user_specs):
                restrict = index.ids()
            self._gate.enter()
        with self._gate.searching():  # the kernels run outside _ilock: other searches do not wait
            return search_batch(index, user_specs, max_search_num=max_search_num, method=method, restrict=restrict,
                                device=device)

    # ------------------------------------------------------------------ maintenance
    def verify(self) -> list:
        """Full check: every record's bytes read back with a matching checksum and shape.
        Returns ``[(id, problem)]`` (empty when the dock is consistent)."""
        c = self._conn()
        out = []
        c.execute("BEGIN")
        try:
            rows = c.execute("SELECT id, seg, off, len, crc, K, shape FROM learnwares").fetchall()
        finally:
            c.execute("COMMIT")
        for id, seg, off, ln, crc, K, shape in rows:
            try:
                s = self._read_record(seg, off, ln, crc)
                if s.K != K or list(s.z_shape) != json.loads(shape):
                    raise ValueError("record shape differs from the row")
            except (ValueError, OSError) as exc:
                out.append((id, str(exc)))
        out.extend(self.verify_snapshot())
        return out

    def verify_snapshot(self, *, repair: bool = True) -> list:
        """Check the newest snapshot's header and checksums (a full read); a damaged one is removed
        and, with ``repair``, rebuilt from the segments.  Returns ``[(snapshot file, problem)]``."""
        snap_gen, snap_path = self._latest_snapshot()
        if snap_path is None:
            return []
        try:
            SpecIndex.load(snap_path, mmap=False, verify=True)
            return []
        except (ValueError, OSError) as exc:
            msg = str(exc)
        name = os.path.basename(snap_path)
        if repair:
            with contextlib.suppress(OSError):
                os.unlink(snap_path)
            with self._ilock:
                if self._snapshot_gen == snap_gen:  # this process's index came from it: rebuild from segments
                    self._index = None
            msg += "; removed" + (" and rebuilt from the segments" if self.checkpoint() else "")
        log.error("dock %s: damaged snapshot %s: %s", self.path, name, msg)
        return [(name, msg)]

    def compact(self) -> dict:
        """Rewrite live spec records into a fresh segment and drop the old segments (garbage from
        updates, removals and crashed writes).  Returns ``{"before": bytes, "after": bytes}``."""
        with self._writing():
            c = self._conn()
            segdir = os.path.join(self.path, "segments")
            old = sorted(n for n in os.listdir(segdir) if n.startswith("seg-"))
            before = sum(os.path.getsize(os.path.join(segdir, n)) for n in old)
            rows = c.execute("SELECT id, seg, off, len, crc FROM learnwares ORDER BY seq").fetchall()
            new_seg = (max(int(n[4:10]) for n in old) + 1) if old else 1
            path = self._seg_path(new_seg)
            locs, pos = [], 0
            with open(path, "wb") as f:
                for id, seg, off, ln, crc in rows:
                    with open(self._seg_path(seg), "rb") as g:
                        blob = os.pread(g.fileno(), ln, off)
                    decode_spec(blob, crc)  # never copy a damaged record silently
                    f.write(blob)
                    locs.append((new_seg, pos, id))
                    pos += ln
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(segdir)
            with self._txn() as c2:  # locations change, content does not: no generation bump needed
                c2.executemany("UPDATE learnwares SET seg=?, off=? WHERE id=?", locs)
                self._mark_committed_end(c2)
            for n in old:
                os.unlink(os.path.join(segdir, n))
            return {"before": before, "after": pos}

    def close(self) -> None:
        for c in self._conns:
            with contextlib.suppress(sqlite3.Error):
                c.close()
        self._conns.clear()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"Dock({self.path!r})"
