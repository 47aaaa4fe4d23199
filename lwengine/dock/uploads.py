"""Chunked-upload staging for the Beimingwu API (``POST /user/chunked_upload``).

One staging file per declared file hash (md5 hex of the whole file): each chunk is written at its
byte offset (``os.pwrite``), so chunk order does not matter and a retried chunk overwrites itself.
The total size of one upload is capped (``max_bytes``) and so is the space all staged uploads may
take (``max_total_bytes``).  :meth:`UploadStaging.take` verifies the md5 of the staged file before
anything is ingested and removes the file either way; staged files untouched for ``ttl`` seconds
are abandoned uploads and are swept.  A per-hash lock serialises the chunks and the final take of
one hash (so two clients uploading the same file cannot interleave a take with a write).

A small SQLite table (``hashes.sqlite`` in the staging folder) remembers which learnware each
ingested file hash became, so the same file uploaded twice is refused ("already exists").
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sqlite3
import threading
import time

__all__ = ["UploadError", "UploadStaging"]

log = logging.getLogger(__name__)

_HASH = re.compile(r"^[0-9a-f]{32}$")


class UploadError(ValueError):
    """A chunk or a finished upload the staging area refuses (``code``: the Beimingwu-style code)."""

    def __init__(self, msg: str, code: int = 51):
        super().__init__(msg)
        self.code = code


class UploadStaging:
    """Staging folder ``path`` for chunked uploads of at most ``max_bytes`` each."""

    def __init__(self, path, *, max_bytes: int = 64 << 20, max_total_bytes: int | None = None,
                 ttl: float = 3600.0):
        self.path = os.path.abspath(os.fspath(path))
        os.makedirs(self.path, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.max_total_bytes = int(max_total_bytes if max_total_bytes is not None else 8 * self.max_bytes)
        self.ttl = float(ttl)
        if self.max_bytes < 1 or self.max_total_bytes < self.max_bytes or self.ttl <= 0:
            raise ValueError("UploadStaging needs max_bytes >= 1, max_total_bytes >= max_bytes and ttl > 0")
        self._locks: dict = {}
        self._guard = threading.Lock()
        self._last_sweep = 0.0
        self._db = sqlite3.connect(os.path.join(self.path, "hashes.sqlite"), timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
        self._db_lock = threading.Lock()
        with self._db_lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS hashes (hash TEXT PRIMARY KEY, learnware_id TEXT NOT NULL, "
                             "created REAL NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS hashes_id ON hashes(learnware_id)")
        self.sweep(force=True)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def check_hash(file_hash) -> str:
        if not isinstance(file_hash, str) or not _HASH.match(file_hash.lower()):
            raise UploadError("file_hash must be the md5 hex digest (32 hex characters) of the whole file", 21)
        return file_hash.lower()

    def _file(self, h: str) -> str:
        return os.path.join(self.path, h + ".part")

    @contextlib.contextmanager
    def lock(self, h: str):
        """The per-hash lock (chunk writes and the final take of one hash never interleave)."""
        with self._guard:
            entry = self._locks.setdefault(h, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    self._locks.pop(h, None)

    def staged_bytes(self) -> int:
        total = 0
        for n in os.listdir(self.path):
            if n.endswith(".part"):
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(self.path, n))
        return total

    def sweep(self, force: bool = False) -> int:
        """Delete staged files (and leftover download temporaries) untouched for ``ttl`` seconds
        (at most every ttl/10 unless ``force``)."""
        now = time.time()
        if not force and now - self._last_sweep < self.ttl / 10:
            return 0
        self._last_sweep = now
        removed = 0
        for n in os.listdir(self.path):
            if not (n.endswith(".part") or (n.startswith("lw-") and n.endswith(".zip"))):
                continue
            p = os.path.join(self.path, n)
            with contextlib.suppress(OSError):
                if now - os.path.getmtime(p) > self.ttl:
                    os.unlink(p)
                    removed += 1
        if removed:
            log.info("removed %d abandoned upload(s) from %s", removed, self.path)
        return removed

    # ------------------------------------------------------------------ the hash -> learnware table
    def known(self, h: str, exists=None):
        """The learnware id an ingested file of hash ``h`` became, or None.  ``exists(id)``: whether
        that learnware is still in the dock (a stale entry is dropped)."""
        with self._db_lock:
            row = self._db.execute("SELECT learnware_id FROM hashes WHERE hash=?", (h,)).fetchone()
        if row is None:
            return None
        if exists is not None and not exists(row[0]):
            self.forget(learnware_id=row[0])
            return None
        return row[0]

    def remember(self, h: str, learnware_id: str) -> None:
        with self._db_lock:
            self._db.execute("INSERT OR REPLACE INTO hashes(hash, learnware_id, created) VALUES (?, ?, ?)",
                             (h, learnware_id, time.time()))

    def forget(self, *, learnware_id: str) -> None:
        with self._db_lock:
            self._db.execute("DELETE FROM hashes WHERE learnware_id=?", (learnware_id,))

    # ------------------------------------------------------------------ chunks
    def write_chunk(self, file_hash, offset, data: bytes, *, exists=None) -> int:
        """Write ``data`` at byte ``offset`` of the staging file of ``file_hash``; returns the staged size.
        Refuses a hash that is already a learnware (``exists`` as in :meth:`known`)."""
        h = self.check_hash(file_hash)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise UploadError(f"chunk_begin must be a byte offset >= 0, got {offset!r}", 21)
        end = offset + len(data)
        if end > self.max_bytes:
            raise UploadError(f"upload over the limit of {self.max_bytes} bytes (chunk ends at byte {end})", 413)
        self.sweep()
        with self.lock(h):
            if self.known(h, exists) is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._file(h))
                raise UploadError("Learnware file already exist.", 51)
            p = self._file(h)
            size = os.path.getsize(p) if os.path.exists(p) else 0
            if end > size and self.staged_bytes() + (end - size) > self.max_total_bytes:
                raise UploadError("the upload staging area is full; retry later", 413)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                view, pos = memoryview(data), offset
                while view:
                    n = os.pwrite(fd, view, pos)
                    view, pos = view[n:], pos + n
                return max(size, end)
            finally:
                os.close(fd)

    def take(self, file_hash) -> bytes:
        """The staged file's bytes once its md5 equals ``file_hash`` (call with :meth:`lock` held).
        The staging file is removed either way (a mismatch means: upload it again)."""
        h = self.check_hash(file_hash)
        p = self._file(h)
        try:
            with open(p, "rb") as f:
                blob = f.read(self.max_bytes + 1)
        except FileNotFoundError:
            raise UploadError(f"no upload staged for file_hash {h} (upload its chunks first)", 21) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(p)
        if len(blob) > self.max_bytes:
            raise UploadError(f"upload over the limit of {self.max_bytes} bytes", 413)
        got = hashlib.md5(blob).hexdigest()
        if got != h:
            raise UploadError(f"md5 mismatch: the staged file hashes to {got}, not {h} (missing or damaged "
                              "chunks); upload the file again", 51)
        return blob

    def close(self) -> None:
        with self._db_lock:
            self._db.close()
