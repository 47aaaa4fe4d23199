"""`SpecIndex`: many RKME specs packed for the native kernels, with reference-compatible search.

Layout: specs are grouped by ``(spec type, trailing shape of z, gamma)``; each group is a CSR-like
packed store (``z`` rows (M, d), ``beta`` (M,), ``offsets`` (n + 1,), per-spec self inner products,
insertion sequence numbers, liveness flags and content digests).  Arrays grow by doubling, removals
are tombstones compacted lazily, and every spec keeps a global insertion sequence number so that
rankings break ties in insertion order (the reference's list order).

Search lives in :mod:`lwengine.search`; this module owns storage, bulk loading and persistence.
"""
from __future__ import annotations

import contextlib
import json
import logging
import mmap as mmap_module
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from . import device as devices
from . import kernels, limits, safe_io, validate
from .packed import PackedGroup, digest
from .progress import progress_iter
from .scale.clusters import SketchClusters
from .scale.sketch import NystromSketch, SketchParams
from .scale.topk import topk as scale_topk
from .search import search as run_search
from .search import search_batch as run_search_batch
from .semantic import check_semantic_dict
from .spec_loading import read_spec_files
from .specs import registry
from .specs.kernel_family import precision_scope

__all__ = ["SpecIndex", "BulkReport", "read_package_spec", "TABLE_TYPE", "PackedGroup"]

log = logging.getLogger(__name__)

TABLE_TYPE = registry.DEFAULT_TYPE
_DTYPES = {"float64": np.float64, "float32": np.float32}
_MAGIC = b"LWEIDX\x00\x01"
_ALIGN = 64
_KEEP = object()  # replace(): keep the current semantic spec
_SLOT_BITS = 24  # SpecIndex._where codes: local index << _SLOT_BITS | group slot
_SLOT_MASK = (1 << _SLOT_BITS) - 1


def _is_finite_spec(spec) -> bool:
    return bool(np.isfinite(spec.z).all() and np.isfinite(spec.beta).all())


def _entry_is(entry: os.DirEntry, kind: str) -> bool:
    """``entry.is_file()`` / ``is_dir()`` as ``os.path.isfile`` / ``isdir`` answer: False where the
    entry cannot be examined (a symlink loop, no permission), never an OSError."""
    try:
        return entry.is_file() if kind == "file" else entry.is_dir()
    except OSError:
        return False


def read_package_spec(path):
    """The stat spec of a learnware package (zip, or its unzipped folder), read with the
    hostile-input checks of :func:`lwengine.package.read_package` (package code is never imported)."""
    from .package import read_package

    return read_package(path).spec


@dataclass
class BulkReport:
    """Outcome of a bulk add: ids added (in order) and ``(path, message)`` for every failure."""

    added: list = field(default_factory=list)
    failed: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.failed


# ------------------------------------------------------------------------------------- index
class SpecIndex:
    """Many RKME specs packed for batched kernels, searchable like the reference market.

    Parameters
    ----------
    dtype : "float64" (default) or "float32" — storage of the reduced sets.  float64 reproduces the
        reference's distances to ~1e-15; float32 halves the memory (see docs/search.md for the
        measured error, ~1e-8 on distances).  Self inner products are always computed in float64
        from the original values.
    """

    def __init__(self, *, dtype: str = "float64", device: str = "auto", backend: str = "auto"):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        self.dtype = dtype
        self.device = devices.resolve(device)  # "cpu" or "cuda": every kernel call of the stores and scans
        self.backend = validate.as_backend(backend)  # "auto" | "native" | "triton" for searches and topk
        self.last_route: dict | None = None  # {op: "device/backend"} of the last search's / topk's kernels
        self._np_dtype = _DTYPES[dtype]
        self._groups: dict = {}
        self._where: dict = {}  # id -> location code (local index << _SLOT_BITS | group slot): one int
        self._slots: list = []  # group slot -> PackedGroup (None once its group is gone)
        self._semantic: dict = {}
        self._nonfinite: dict = {}  # id -> original (z, beta) of specs stored inert
        self._extra: dict = {}  # id -> the spec's extra fields (e.g. a text spec's language), when any
        self._next_seq = 0
        self._sketch_params = None  # lwengine.scale.SketchParams (defaults when None)
        self.last_stats: dict = {}  # statistics of the last topk() call

    # ------------------------------------------------------------------ basic container
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, id) -> bool:
        return id in self._where

    def __repr__(self) -> str:
        return f"SpecIndex({len(self)} specs, {len(self._groups)} groups, dtype={self.dtype})"

    def ids(self) -> list:
        """All ids in insertion order (the order that breaks ranking ties)."""
        pairs = []
        for i, c in self._where.items():
            g, local = self._decode(c)
            pairs.append((int(g.seq[local]), i))
        pairs.sort()
        return [i for _, i in pairs]

    def get(self, id):
        """The stored spec of ``id`` (a fresh object of its registered class)."""
        g, local = self._locate(id)
        extra = self._extra.get(id)
        spec = g.spec(local, extra)
        if id in self._nonfinite:
            z, beta = self._nonfinite[id]
            spec = type(spec).from_parts(z, beta, g.gamma, spec.num_points, **(extra or {}))
        return spec

    # ------------------------------------------------------------------ read access (search, scale, shards)
    def groups(self) -> list:
        """The packed stores (:class:`~lwengine.packed.PackedGroup`), one per (type, shape, gamma)."""
        return list(self._groups.values())

    def group(self, key) -> PackedGroup:
        """The packed store of ``key = (type, shape, gamma)`` (KeyError if none)."""
        return self._groups[key]

    def locate(self, id):
        """``(group, local index)`` of ``id`` (KeyError if absent)."""
        return self._locate(id)

    def semantic_of(self, id):
        """The semantic spec of ``id``, or None (also for ids not in the index)."""
        return self._semantic.get(id)

    def extra_of(self, id) -> dict:
        """The stored spec's extra fields (``{}`` for table specs; ``{"language": [...]}`` for text)."""
        return self._extra.get(id) or {}

    @property
    def next_seq(self) -> int:
        """The insertion sequence number the next added spec gets."""
        return self._next_seq

    def advance_seq(self, next_seq: int) -> None:
        """Make the next sequence number at least ``next_seq`` (shards follow the driver's numbering)."""
        self._next_seq = max(self._next_seq, int(next_seq))

    def get_semantic(self, id):
        self._locate(id)
        return self._semantic.get(id)

    def set_semantic(self, id, semantic) -> None:
        self._locate(id)
        if semantic is None:
            self._semantic.pop(id, None)
        else:
            self._semantic[id] = check_semantic_dict(semantic)

    def _locate(self, id):
        """``(group, local index)`` of ``id``."""
        try:
            c = self._where[id]
        except KeyError:
            raise KeyError(f"no spec with id {id!r} in the index") from None
        return self._decode(c)

    def _decode(self, code):
        """``(group, local index)`` of a ``_where`` code (see :meth:`_place`)."""
        return self._slots[code & _SLOT_MASK], code >> _SLOT_BITS

    def _place(self, ids, g, locals_) -> None:
        """Record where ``ids`` live (a location code per id instead of a (group, index) tuple: at
        10⁶ specs that tuple alone was 72 MB)."""
        slot, where = g.slot, self._where
        for i, local in zip(ids, locals_):
            where[i] = (local << _SLOT_BITS) | slot

    def _new_group(self, key):
        g = self._groups[key] = PackedGroup(*key, self._np_dtype, device=self.device)
        self._register(g)
        return g

    def _register(self, g) -> None:
        free = next((k for k, x in enumerate(self._slots) if x is None), len(self._slots))
        if free > _SLOT_MASK:
            raise ValueError(f"more than {_SLOT_MASK + 1} (spec type, shape, gamma) groups in one index")
        if free == len(self._slots):
            self._slots.append(None)
        self._slots[free], g.slot = g, free

    # ------------------------------------------------------------------ mutation
    def add(self, id, spec, semantic=None) -> None:
        """Add one spec under a new string id (ValueError if the id exists)."""
        self.add_many([(id, spec, semantic)])

    def add_many(self, items) -> None:
        """Add ``(id, spec[, semantic])`` items, packing each group once.  All-or-nothing."""
        prepared = []
        seen = set()
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise TypeError("add_many items must be (id, spec) or (id, spec, semantic) tuples")
            id, spec = item[0], item[1]
            semantic = item[2] if len(item) == 3 else None
            self._check_new_id(id, seen)
            seen.add(id)
            s = registry.as_spec(spec, f"spec {id!r}")
            prepared.append((id, s, None if semantic is None else check_semantic_dict(semantic)))
        self._insert(prepared, seqs=None)

    def _check_new_id(self, id, seen=()):
        if not isinstance(id, str) or not id:
            raise TypeError(f"id must be a non-empty string, got {id!r}")
        if id in self._where or id in seen:
            raise ValueError(f"duplicate id {id!r}: already in the index")

    def insert(self, prepared, seqs) -> None:
        """Insert validated ``(id, spec, semantic)`` rows with given sequence numbers (None: the next
        ones); the ids must be new (shards and the dock keep a global insertion order this way)."""
        self._insert(prepared, seqs)

    def _insert(self, prepared, seqs) -> None:
        if seqs is None:
            seqs = list(range(self._next_seq, self._next_seq + len(prepared)))
        self._next_seq = max([self._next_seq] + [s + 1 for s in seqs])
        by_group: dict = {}
        for (id, s, sem), seq in zip(prepared, seqs):
            entry = registry.entry_of(s)
            key = (entry.type, s.z_shape, float(entry.family.param(s)))
            by_group.setdefault(key, []).append((id, s, sem, seq))
        for key, rows in by_group.items():
            g = self._groups.get(key)
            if g is None:
                g = self._new_group(key)
            finite = [_is_finite_spec(s) for _, s, _, _ in rows]
            locals_ = g.append([r[0] for r in rows], [r[1] for r in rows], [r[3] for r in rows], finite)
            if g.sketch is not None and g.sketch.projected:  # keep the landmarks, project the new specs
                g.sketch.extend(g)
            self._place([r[0] for r in rows], g, locals_)
            for (id, s, sem, _), ok in zip(rows, finite):
                if sem is not None:
                    self._semantic[id] = sem
                extra = s.extra()
                if extra:
                    self._extra[id] = extra
                if not ok:
                    self._nonfinite[id] = (s.z.copy(), s.beta.copy())
                    log.warning("spec %r holds non-finite values; search will drop it", id)

    def add_packed(self, ids, z, beta, offsets, gamma, *, num_points=None, progress: bool | None = None) -> None:
        """Bulk add of finite table specs already packed (``z`` (M, d), ``beta`` (M,), ``offsets``
        (n + 1,), one ``gamma``) under new ids, without building spec objects (market generators,
        1e6 specs).  Self inner products are computed in float64 from ``z``; with a float32 index and a
        float32 ``z`` into an empty group, ``z`` is adopted without a copy."""
        ids = list(ids)
        z = np.asarray(z)
        if z.ndim != 2:
            raise ValueError(f"z must have shape (M, d), got {z.shape}")
        beta, offsets, gamma = kernels.check_packed_store(z, beta, offsets, gamma)
        n = len(offsets) - 1
        if len(ids) != n:
            raise ValueError(f"ids must have {n} entries (one per spec), got {len(ids)}")
        if n and np.any(np.diff(offsets) < 1):
            raise ValueError("offsets must give every spec at least one row")
        seen = set()
        for i in ids:
            self._check_new_id(i, seen)
            seen.add(i)
        self_ip = np.empty(n)
        digests = np.empty((n, 16), dtype=np.uint8)
        step = max(1, (1 << 22) // max(1, z.shape[1] * max(1, z.shape[0] // max(1, n))))
        for a in progress_iter(range(0, n, step), progress, "packing specs"):
            b = min(n, a + step)
            ra, rb = int(offsets[a]), int(offsets[b])
            z64 = np.ascontiguousarray(z[ra:rb], dtype=np.float64)
            if not (np.isfinite(z64).all() and np.isfinite(beta[ra:rb]).all()):  # by chunks: no n×d mask
                raise ValueError("z and beta must be finite (use add/add_many for non-finite specs)")
            self_ip[a:b] = kernels.self_inner(z64, beta[ra:rb], offsets[a:b + 1] - ra, gamma, device=self.device)
            for i in range(a, b):
                p, q = int(offsets[i]) - ra, int(offsets[i + 1]) - ra
                digests[i] = np.frombuffer(digest(z64[p:q], beta[ra + p:ra + q]), dtype=np.uint8)
        key = (TABLE_TYPE, (z.shape[1],), float(gamma))
        g = self._groups.get(key)
        if g is None:
            g = self._new_group(key)
        seqs = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
        self._next_seq += n
        npts = np.diff(offsets) if num_points is None else np.asarray(num_points, dtype=np.int64)
        locals_ = g.append_packed(ids, z if z.dtype == self._np_dtype else z.astype(self._np_dtype), beta,
                                  offsets, self_ip, seqs, npts, digests)
        self._place(ids, g, locals_)
        if g.sketch is not None and g.sketch.projected:
            g.sketch.extend(g)

    def add_store(self, ids, spec_type: str, shape, param, z, beta, offsets) -> None:
        """Bulk add of finite specs of any registered type already packed as its kernel family
        stores them (``z`` (M, row_dim), ``beta`` (M,), ``offsets`` (n + 1,), the group's ``shape`` and
        kernel ``param``; see :class:`lwengine.specs.KernelFamily`), without building spec objects.
        E.g. a million default image specs: ``add_store(ids, "RKMEImageSpecification", (3, 32, 32),
        -3.0, np.empty((M, 0)), beta, offsets)`` (a canonical-z store holds no z rows)."""
        entry = registry.get(spec_type)
        fam, shape, param = entry.family, tuple(int(x) for x in shape), float(param)
        ids = list(ids)
        z = np.asarray(z)
        beta = np.ascontiguousarray(beta, dtype=np.float64).reshape(-1)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1)
        dim = fam.row_dim(shape, param)
        n = len(offsets) - 1
        if z.ndim != 2 or z.shape[1] != dim:
            raise ValueError(f"z must have shape (M, {dim}) for this store, got {z.shape}")
        if n < 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 1) or offsets[-1] != len(beta) \
                or len(beta) != z.shape[0]:
            raise ValueError("offsets must start at 0, give every spec at least one row and end at len(beta) "
                             "== len(z)")
        if len(ids) != n:
            raise ValueError(f"ids must have {n} entries (one per spec), got {len(ids)}")
        if not (np.isfinite(beta).all() and np.isfinite(z).all()):
            raise ValueError("z and beta must be finite")
        seen = set()
        for i in ids:
            self._check_new_id(i, seen)
            seen.add(i)
        self_ip = fam.self_inner(z, beta, offsets, param, shape, device=self.device)
        digests = np.empty((n, 16), dtype=np.uint8)
        for i in range(n):
            a, b = int(offsets[i]), int(offsets[i + 1])
            digests[i] = np.frombuffer(digest(z[a:b], beta[a:b]), dtype=np.uint8)
        key = (entry.type, shape, param)
        g = self._groups.get(key)
        if g is None:
            g = self._new_group(key)
        seqs = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
        self._next_seq += n
        locals_ = g.append_packed(ids, z.astype(self._np_dtype, copy=False), beta, offsets, self_ip, seqs,
                                  np.diff(offsets), digests)
        self._place(ids, g, locals_)

    def remove(self, id) -> None:
        """Remove ``id`` (KeyError if absent)."""
        g, local = self._locate(id)
        g.kill(local)
        del self._where[id]
        self._semantic.pop(id, None)
        self._extra.pop(id, None)
        self._nonfinite.pop(id, None)
        if g.n_alive == 0:
            del self._groups[g.key]
            self._slots[g.slot] = None
        elif g.n_dead > 64 and g.n_dead * 2 > g.n:
            moved = g.compact()
            self._place(moved.keys(), g, moved.values())

    def replace(self, id, spec, semantic=_KEEP) -> None:
        """Replace the spec of an existing id, keeping its place in the insertion order."""
        g, local = self._locate(id)
        s = registry.as_spec(spec, f"spec {id!r}")
        seq = int(g.seq[local])
        sem = self._semantic.get(id) if semantic is _KEEP else semantic
        sem = None if sem is None else check_semantic_dict(sem)
        self.remove(id)
        self._insert([(id, s, sem)], seqs=[seq])

    # ------------------------------------------------------------------ bulk loading
    def add_folder(self, path, *, progress: bool | None = None, spec_limits=None) -> BulkReport:
        """Add every spec JSON file (id = file stem), learnware zip (id = zip stem) and unzipped
        package folder (id = folder name, must hold learnware.yaml) of ``path``, in sorted file-name
        order.  Unreadable entries, and specs over ``spec_limits`` (:class:`lwengine.limits.SpecLimits`,
        default caps), are reported (path, message) and the rest still added."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"specs folder not found: {path}")
        report = BulkReport()
        prepared, seen = [], set()
        with os.scandir(path) as it:  # the entry types come with the listing: no stat per file
            listing = sorted(it, key=lambda e: e.name)
        entries = []
        for e in listing:
            name, full = e.name, os.path.join(path, e.name)
            if name.endswith(".json") and _entry_is(e, "file"):
                entries.append((full, name[:-5], "json"))
            elif name.endswith(".zip") and _entry_is(e, "file"):
                entries.append((full, name[:-4], read_package_spec))
            elif _entry_is(e, "dir") and os.path.isfile(os.path.join(full, "learnware.yaml")):
                entries.append((full, name, read_package_spec))
        # spec files are parsed in one batch (orjson, worker processes; see lwengine.spec_loading)
        oversize = {}
        for full, id, kind in entries:
            if kind == "json" and id not in self._where:
                try:
                    limits.check_spec_file_size(full, spec_limits)  # before anything is parsed
                except (ValueError, OSError) as exc:
                    oversize[full] = exc
        batch = [full for full, id, kind in entries if kind == "json" and id not in self._where
                 and full not in oversize]
        parsed = {**dict(zip(batch, read_spec_files(batch))), **oversize}
        for full, id, loader in progress_iter(entries, progress, "reading specs"):
            try:
                self._check_new_id(id, seen)
                spec = loader(full) if callable(loader) else parsed[full]
                if isinstance(spec, BaseException):
                    raise spec
                limits.check_spec_cost(spec, spec_limits, full)  # bounded work per file
            except (ValueError, TypeError, OSError, UnicodeDecodeError) as exc:
                report.failed.append((full, str(exc)))
                log.warning("skipping %s: %s", full, exc)
                continue
            seen.add(id)
            prepared.append((id, spec, None))
        self._insert(prepared, seqs=None)
        report.added = [p[0] for p in prepared]
        return report

    def add_packages(self, paths) -> BulkReport:
        """Add learnware packages (zips or unzipped folders); id = file stem / folder name."""
        report, prepared, seen = BulkReport(), [], set()
        for p in paths:
            p = os.fspath(p)
            base = os.path.basename(os.path.normpath(p))
            id = base[:-4] if base.endswith(".zip") else base
            try:
                self._check_new_id(id, seen)
                prepared.append((id, read_package_spec(p), None))
                seen.add(id)
            except (ValueError, TypeError, OSError, UnicodeDecodeError) as exc:
                report.failed.append((p, str(exc)))
        self._insert(prepared, seqs=None)
        report.added = [x[0] for x in prepared]
        return report

    @classmethod
    def from_folder(cls, path, *, dtype: str = "float64", progress: bool | None = None, device: str = "auto"):
        """``(index, report)`` built from a folder (see :meth:`add_folder`)."""
        index = cls(dtype=dtype, device=device)
        report = index.add_folder(path, progress=progress)
        return index, report

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the index as one binary file: a magic, a JSON header and 64-byte-aligned raw arrays."""
        groups, arrays = [], []
        for g in self._groups.values():
            if g.n_dead:
                moved = g.compact()
                self._place(moved.keys(), g, moved.values())
            entry = {"spec_type": g.spec_type, "shape": list(g.shape), "gamma": g.gamma, "n": g.n,
                     "rows": g.rows, "ids": g.ids, "arrays": {}}
            for name in ("z", "beta", "offsets", "self_ip", "seq", "num_points", "digest"):
                a = getattr(g, name)
                a = a[: g.rows] if name in ("z", "beta") else a[: g.n + 1] if name == "offsets" else a[: g.n]
                entry["arrays"][name] = [len(arrays), a.dtype.str, list(a.shape)]
                arrays.append(np.ascontiguousarray(a))
                entry.setdefault("crc32", {})[name] = safe_io.chunk_crcs(arrays[-1])  # checked at load
            z32, beta_l1, r2max = g.screen()
            screen = {"screen.beta_l1": beta_l1, "screen.r2max": r2max}
            if g.z.dtype != np.float32:
                screen["screen.z32"] = z32
            for name, a in screen.items():
                entry["arrays"][name] = [len(arrays), a.dtype.str, list(a.shape)]
                arrays.append(np.ascontiguousarray(a))
            if g.sketch is not None:
                meta, sk_arrays = _sketch_state(g.sketch, g)
                entry["sketch"] = meta
                for name, a in sk_arrays.items():
                    entry["arrays"][name] = [len(arrays), a.dtype.str, list(a.shape)]
                    arrays.append(np.ascontiguousarray(a))
            groups.append(entry)
        header = {"format": "lwengine-index", "version": 1, "dtype": self.dtype, "next_seq": self._next_seq,
                  "groups": groups, "semantic": self._semantic, "extra": self._extra,
                  "nonfinite": {i: [z.tolist(), b.tolist()] for i, (z, b) in self._nonfinite.items()}}
        offsets, pos = [], 0
        for a in arrays:
            offsets.append(pos)
            pos += -(-a.nbytes // _ALIGN) * _ALIGN
        header["array_offsets"] = offsets
        header["header_crc32"] = safe_io.header_crc(header)
        blob = json.dumps(header, allow_nan=True).encode("utf-8")
        start = -(-(len(_MAGIC) + 8 + len(blob)) // _ALIGN) * _ALIGN
        blob += b" " * (start - len(_MAGIC) - 8 - len(blob))
        with safe_io.atomic_path(path) as tmp:  # unique per writer; removed on failure
            with open(tmp, "wb") as f:
                f.write(_MAGIC)
                f.write(np.uint64(len(blob)).tobytes())
                f.write(blob)
                for a, off in zip(arrays, offsets):
                    f.seek(start + off)
                    a.tofile(f)  # no bytes copy of a (possibly multi-GB) array
                f.truncate(start + pos)

    @classmethod
    def load(cls, path, *, mmap: bool = True, verify: bool = True, device: str = "auto") -> "SpecIndex":
        """Read an index written by :meth:`save`.  ``mmap=True`` maps the arrays read-only (pages are
        read on first use; any later add copies the touched group into memory).  The header is
        validated before anything is mapped (dtypes, shapes, offsets); ``verify`` also checks every
        array's crc32 chunks (one sequential read of the file; files without checksums load unchecked)."""
        path = os.fspath(path)
        size = safe_io.require_regular(path, "index file").st_size
        with open(path, "rb") as f:
            if f.read(len(_MAGIC)) != _MAGIC:
                raise ValueError(f"{path}: not an lwengine index file (bad magic)")
            raw = f.read(8)
            n = int(np.frombuffer(raw, dtype=np.uint64)[0]) if len(raw) == 8 else -1
            if not 0 < n <= size - len(_MAGIC) - 8:
                raise ValueError(f"{path}: corrupt index file: header length {n} does not fit the file")
            try:
                header = json.loads(f.read(n).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise ValueError(f"{path}: corrupt index header: {safe_io.short_repr(str(exc))}") from None
        start = len(_MAGIC) + 8 + n
        safe_io.check_index_header(path, header, start, size,
                                   family_of=lambda t: getattr(registry.lookup(t), "family", None))
        if verify and "header_crc32" in header and header.pop("header_crc32") != safe_io.header_crc(header):
            raise ValueError(f"{path}: checksum mismatch in the index header (the file is damaged)")
        index = cls(dtype=header["dtype"], device=device)
        index._next_seq = int(header["next_seq"])
        offsets = header["array_offsets"]
        for entry in header["groups"]:
            if registry.lookup(entry["spec_type"]) is None:
                raise ValueError(f"{path}: unknown spec type {entry['spec_type']!r} in the index")
            g = PackedGroup(registry.get(entry["spec_type"]).type, tuple(entry["shape"]), float(entry["gamma"]),
                            index._np_dtype, device=index.device)
            sk_arrays = {}
            for name, (k, dt, shape) in entry["arrays"].items():
                dt = np.dtype(dt)
                count = int(np.prod(shape))
                off = start + offsets[k]
                if off + count * dt.itemsize > size:
                    raise ValueError(f"{path}: truncated index file (array {name})")
                if mmap and count:
                    a = np.memmap(path, dtype=dt, mode="r", offset=off, shape=tuple(shape))
                    if name == "sketch.s":  # read by scattered rows (clusters): no read-ahead
                        _advise_random(a)
                else:
                    a = np.fromfile(path, dtype=dt, count=count, offset=off).reshape(shape)
                if verify and name in entry.get("crc32", {}):
                    safe_io.verify_crcs(path, name, a, entry["crc32"][name])
                if name.startswith(("sketch.", "screen.")):
                    sk_arrays[name] = a
                else:
                    setattr(g, name, a)
            safe_io.check_group_arrays(path, g.offsets, int(entry["rows"]))
            g.ids = list(entry["ids"])
            g.n, g.rows = int(entry["n"]), int(entry["rows"])
            g.alive = np.ones(g.n, dtype=bool)
            if "screen.beta_l1" in sk_arrays:
                g.screen_cache = (sk_arrays.pop("screen.z32", None), sk_arrays.pop("screen.beta_l1"),
                                  sk_arrays.pop("screen.r2max"))
                if g.screen_cache[0] is None:  # a float32 store screens its own rows
                    g.screen_cache = (g.z,) + g.screen_cache[1:]
            if "sketch" in entry:
                try:
                    g.sketch = _sketch_restore(g, entry["sketch"], sk_arrays)
                except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                    raise ValueError(f"{path}: corrupt index file: bad sketch state "
                                     f"({safe_io.short_repr(str(exc))})") from None
            index._groups[g.key] = g
            index._register(g)
            index._place(g.ids, g, range(g.n))
        index._semantic = dict(header.get("semantic", {}))
        index._extra = dict(header.get("extra", {}))
        try:
            index._nonfinite = {i: (np.array(z, dtype=np.float64), np.array(b, dtype=np.float64))
                                for i, (z, b) in header.get("nonfinite", {}).items()}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: corrupt index file: bad nonfinite entry ({safe_io.short_repr(str(exc))})") \
                from None
        return index

    # ------------------------------------------------------------------ search
    def search(self, user_spec, max_search_num: int = 5, method: str = "greedy", semantic=None, *,
               screen: bool | None = None, device: str | None = None, backend: str | None = None,
               precision: str = "float32"):
        """Reference-compatible search (semantics §4-5): see :func:`lwengine.search.search`.

        A batched scan of every candidate (the reference's scores need the mean and max distance over
        *all* candidates, so the RKHS sketches of :meth:`topk` are never used here); ``screen`` picks
        the float32 screening scan with certified float64 re-ranking (default for large groups);
        ``device`` ("auto" | "cpu" | "cuda") the kernels' device for this call (None: the index's);
        ``backend`` ("auto" | "native" | "triton") their backend (None: the index's); the route the
        kernels took is left in :attr:`last_route`.  ``precision``: the kernel entries' precision
        ("float32": the reference's semantics; "float64": image specs ranked by
        ``lw.dist(user, precision="float64")``; table and text specs are float64 either way)."""
        with self._routed(backend, precision):
            return run_search(self, user_spec, max_search_num=max_search_num, method=method, semantic=semantic,
                              screen=screen, device=device)

    def search_batch(self, user_specs, max_search_num: int = 5, method: str = "greedy", semantic=None, *,
                     screen: bool | None = None, device: str | None = None, backend: str | None = None,
                     precision: str = "float32"):
        """:meth:`search` for many users sharing one store scan per group."""
        with self._routed(backend, precision):
            return run_search_batch(self, user_specs, max_search_num=max_search_num, method=method,
                                    semantic=semantic, screen=screen, device=device)

    @contextlib.contextmanager
    def _routed(self, backend, precision="float32"):
        """Run a search / topk under ``backend`` (None: the index's) and the kernel-entry ``precision``,
        and record the kernels' routes."""
        with precision_scope(precision), \
                kernels.backend_scope(self.backend if backend is None else backend) as routes:
            try:
                yield
            finally:
                self.last_route = dict(routes)

    # ------------------------------------------------------------------ scalable identification
    def topk(self, user_spec, k: int = 5, mode: str = "certified", **options) -> list:
        """The ``k`` nearest specs as ``[(id, dist)]`` ascending, ``dist = learnware.dist(user)``
        exactly as :meth:`search` ranks (ties in insertion order, non-finite dropped).

        ``mode``: ``"brute"`` (one batched kernel over every spec of the user's shape), ``"certified"``
        (Nyström lower bounds order the work and prove when to stop: same result as brute, fewer
        exact kernel evaluations where the bounds are tight, brute force where they are not), or
        ``"approx"`` (the sketch clusters, or faiss, + exact re-rank of a pool; options ``pool``,
        ``approx_sketch="nystrom"|"rff"``, ``nprobe`` (clusters), ``ef_search`` (HNSW)).  Certified
        option: ``brute_fraction``.  ``device``: the kernels' device for this call (None: the index's);
        ``backend``: their backend (None: the index's; the route is in ``last_stats["route"]``);
        ``precision``: as in :meth:`search`.
        Types with an admission rule (text: languages) are ranked by the brute-force scan of the
        admitted specs.
        Sketches are built on first use (see :meth:`build_sketch`).  Statistics of the call (exact
        evaluations, candidates scanned, timings, regime decisions) are left in :attr:`last_stats`.
        See docs/scale.md.
        """
        backend = options.pop("backend", None)
        precision = options.pop("precision", "float32")
        with self._routed(backend, precision):
            res, stats = scale_topk(self, user_spec, k, mode, **options)
        stats["route"] = self.last_route
        self.last_stats = stats
        return res

    def build_sketch(self, params=None, *, progress: bool | None = None, **kwargs) -> None:
        """(Re)build the Nyström sketch of every group: landmarks, basis, regime probe and, where the
        regime is "sketch", the projection of every spec.  ``params``: a
        :class:`lwengine.scale.SketchParams` or its fields as keyword arguments."""
        if params is None:
            params = SketchParams(**kwargs) if kwargs else (self._sketch_params or SketchParams())
        elif kwargs:
            raise TypeError("give either params or keyword fields, not both")
        if not isinstance(params, SketchParams):
            raise TypeError(f"params must be a SketchParams, got {type(params).__name__}")
        self._sketch_params = params
        for g in self._groups.values():
            if not g.family.sketchable:  # no RKHS sketch for this kernel family (topk scans it exactly)
                continue
            g.sketch, g.ann = None, {}
            sk = self.sketch_for(g, project=None, progress=progress)
            if sk.clusters is not None:
                sk.clusters.view(sk, g)  # sort the clusters now rather than in the first query

    def refresh_sketch(self, *, progress: bool | None = None) -> None:
        """Recompute landmarks and every projection (after the data drifted); same parameters."""
        self.build_sketch(self._sketch_params, progress=progress)

    def sketch_for(self, g, project, progress=None):
        """The group's sketch, fitted on demand; projected when ``project`` (True), or when its
        regime is "sketch" (``project`` False/None)."""
        if g.sketch is None:
            g.sketch = NystromSketch.fit(g, self._sketch_params or SketchParams())
            g.ann = {}
        sk = g.sketch
        if (project or sk.regime == "sketch") and sk.n < g.n:
            if progress is None:
                progress = g.n - sk.n > 20000 and sys.stderr.isatty()
            sk.extend(g, progress=progress)
        return sk

    def memory_bytes(self) -> int:
        """Bytes held by the packed arrays (capacity included)."""
        total = 0
        for g in self._groups.values():
            for name in ("z", "beta", "offsets", "self_ip", "seq", "alive", "num_points", "digest"):
                total += getattr(g, name).nbytes
        return total


def _advise_random(a):
    mm = getattr(a, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap_module, "MADV_RANDOM"):
        mm.madvise(mmap_module.MADV_RANDOM)


def _sketch_state(sk, g):
    meta = {"params": dict(vars(sk.params)), "R2": sk.R2, "n": sk.n, "projected": sk.projected,
            "resid_share_median": sk.resid_share_median, "regime": sk.regime, "sizing": sk.sizing,
            "dtype": sk.s.dtype.name, "int8_error_ratio": sk.int8_error_ratio}
    arrays = {"sketch.landmarks": sk.landmarks, "sketch.basis": sk.basis}
    if sk.projected:
        for name in sk.SPEC_ARRAYS:
            arrays["sketch." + name] = getattr(sk, name)[: sk.n]
    if sk.clusters is not None:
        arrays.update({"sketch.clusters." + k: v for k, v in sk.clusters.state(sk, g).items()})
    return meta, arrays


def _sketch_restore(g, meta, arrays):
    # files written before the compact sketches have float32 vectors and no dtype/scale/delta
    params = SketchParams(**{"dtype": "float32", **meta["params"]})
    sk = NystromSketch(g.gamma, arrays["sketch.landmarks"], arrays["sketch.basis"], params, device=g.device)
    sk.R2, sk.projected = float(meta["R2"]), bool(meta["projected"])
    sk.resid_share_median, sk.regime = float(meta["resid_share_median"]), meta["regime"]
    sk.sizing = list(meta.get("sizing", []))
    ratio = meta.get("int8_error_ratio")
    sk.int8_error_ratio = None if ratio is None else float(ratio)
    dtype = meta.get("dtype", params.dtype)  # the vectors' dtype ("auto" resolved by the probe)
    allowed = ("int8", "int16") if params.dtype == "auto" else (params.dtype,)
    if dtype not in allowed:
        raise ValueError(f"sketch dtype {safe_io.short_repr(dtype)} for sketch parameters dtype {params.dtype!r}")
    sk.s = np.empty((0, sk.r), dtype=dtype)
    if sk.projected:
        n = int(meta["n"])
        if "sketch.scale" not in arrays:  # float32 vectors: rounding ≤ 2⁻²⁴‖s‖ per vector (2x margin)
            arrays["sketch.scale"] = np.ones(n)
            arrays["sketch.delta"] = 2.0 ** -23 * np.sqrt(np.abs(np.asarray(arrays["sketch.sq"], dtype=np.float64)))
        for name in sk.SPEC_ARRAYS:
            a = arrays["sketch." + name]
            if a.shape[0] != n or (name == "s" and (a.ndim != 2 or a.shape[1] != sk.r)):
                raise ValueError(f"sketch.{name} has shape {list(a.shape)} for {n} specs of rank {sk.r}")
            setattr(sk, name, a)
        if sk.s.dtype != np.dtype(dtype):
            raise ValueError(f"sketch.s has dtype {sk.s.dtype}, the sketch's parameters say {dtype}")
        sk.n = n
    if "sketch.clusters.centroids" in arrays:
        pre = "sketch.clusters."
        sk.clusters = SketchClusters.restore({k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}, g)
    return sk
