"""Reading untrusted bytes safely: index-file headers, JSON, YAML, plain files, short reprs.

Everything here raises ValueError (or OSError for files that cannot be opened) with a message that
names the file or argument; nothing formats an untrusted value at length.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
import zlib

import numpy as np

__all__ = ["short_repr", "json_loads", "load_yaml", "read_regular", "require_regular", "unique_temp",
           "atomic_path", "check_index_header", "header_crc", "check_group_arrays", "chunk_crcs", "verify_crcs",
           "MAX_YAML_ALIASES", "CRC_CHUNK"]

MAX_YAML_ALIASES = 16           # a learnware.yaml needs none; more than this is refused (alias bombs)
CRC_CHUNK = 16 << 20            # bytes per crc32 chunk of an index array
_REPR_MAX = 120

# dtypes an index file may declare (numpy dtype.str); object, void and structured dtypes are refused
_CORE = {"z": ("<f8", "<f4"), "beta": ("<f8",), "offsets": ("<i8",), "self_ip": ("<f8",), "seq": ("<i8",),
         "num_points": ("<i8",), "digest": ("|u1",), "screen.z32": ("<f4",), "screen.beta_l1": ("<f8",),
         "screen.r2max": ("<f8",), "sketch.s": ("|i1", "<i2", "<f2", "<f4")}
_ANY = ("<f8", "<f4", "<i8", "<i4", "|u1", "|b1", "<u8", "<u4")


def short_repr(value, limit: int = _REPR_MAX) -> str:
    """``repr(value)`` cut to ``limit`` characters, without building the repr of a huge container."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 8:
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        r = repr(value)
    except RecursionError:
        return f"<deeply nested {type(value).__name__}>"
    return r if len(r) <= limit else r[:limit] + f"... ({len(r)} chars)"


def json_loads(text, source: str):
    """``json.loads`` where every failure (bad JSON, too deep nesting, bad UTF-8) is a ValueError
    naming ``source``."""
    try:
        if isinstance(text, (bytes, bytearray, memoryview)):
            text = bytes(text).decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: invalid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{source}: JSON nested too deeply") from None


def load_yaml(text: str, source: str, max_aliases: int = MAX_YAML_ALIASES):
    """``yaml.safe_load`` that first counts alias events and refuses more than ``max_aliases``
    (so an alias bomb is never expanded); errors are ValueError naming ``source``."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        aliases = 0
        for ev in yaml.parse(text, Loader=loader):
            if isinstance(ev, yaml.AliasEvent):
                aliases += 1
                if aliases > max_aliases:
                    raise ValueError(f"{source}: more than {max_aliases} YAML aliases (alias bomb?)")
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {short_repr(str(exc), 300)}") from None
    except RecursionError:
        raise ValueError(f"{source}: YAML nested too deeply") from None


def require_regular(path, what: str = "file") -> os.stat_result:
    """``os.stat`` of ``path``; ValueError unless it is a regular file (FIFOs, devices, sockets and
    directories would block or never end)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{os.fspath(path)}: {what} is not a regular file")
    return st


def read_regular(path, cap: int | None = None, what: str = "file") -> bytes:
    """The bytes of the regular file ``path`` (opened non-blocking, checked with fstat: no FIFO
    hang, no /dev/zero), at most ``cap`` bytes (ValueError above it)."""
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path}: {what} is not a regular file")
        if cap is not None and st.st_size > cap:
            raise ValueError(f"{path}: {what} is {st.st_size} bytes, over the limit {cap}")
        # os.read on the descriptor: one read of the whole file where it has the size fstat gave
        # (a file object would stat it again and add a buffer); to EOF, or one byte past the cap
        limit = None if cap is None else cap + 1
        parts, n = [], 0
        while limit is None or n < limit:
            want = max(st.st_size + 1 - n, 1 << 16)
            chunk = os.read(fd, want if limit is None else min(want, limit - n))
            if not chunk:
                break
            parts.append(chunk)
            n += len(chunk)
    finally:
        os.close(fd)
    data = parts[0] if len(parts) == 1 else b"".join(parts)  # b"" for an empty file
    if cap is not None and len(data) > cap:
        raise ValueError(f"{path}: {what} is over the limit {cap} bytes")
    return data


def unique_temp(path) -> str:
    """A temporary name next to ``path``, unique to this writer (process, thread, call)."""
    return f"{os.fspath(path)}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"


@contextlib.contextmanager
def atomic_path(path):
    """Yield a unique temporary path; on success it replaces ``path`` atomically, on failure it is
    removed (concurrent writers never share or mix a temporary)."""
    tmp = unique_temp(path)
    try:
        yield tmp
        os.replace(tmp, os.fspath(path))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- index files
def _bad(path, msg):
    return ValueError(f"{path}: corrupt index file: {msg}")


def _nonneg_int(v, path, what) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= 1 << 62:
        raise _bad(path, f"{what} must be a non-negative integer, got {short_repr(v)}")
    return v


def check_index_header(path, header, start: int, size: int, family_of=None) -> None:
    """Validate a decoded index header before anything is mapped: known format and storage dtype,
    every array's dtype among those the format defines, shapes of non-negative integers that agree
    with the group sizes, every array inside the file.  ``family_of(spec_type)``: the type's kernel
    family or None (its kernel parameter and stored row width; default: Gaussian gamma, full rows)."""
    if not isinstance(header, dict):
        raise _bad(path, "the header is not a JSON object")
    if header.get("dtype") not in ("float64", "float32"):
        raise _bad(path, f"unknown storage dtype {short_repr(header.get('dtype'))}")
    _nonneg_int(header.get("next_seq"), path, "next_seq")
    offsets, groups = header.get("array_offsets"), header.get("groups")
    if not isinstance(offsets, list) or not isinstance(groups, list):
        raise _bad(path, "array_offsets and groups must be lists")
    for k, off in enumerate(offsets):
        _nonneg_int(off, path, f"array offset {k}")
    for key in ("semantic", "nonfinite"):
        if not isinstance(header.get(key, {}), dict):
            raise _bad(path, f"{key} must be an object")
    zdt = "<f8" if header["dtype"] == "float64" else "<f4"
    for gi, e in enumerate(groups):
        if not isinstance(e, dict) or not isinstance(e.get("arrays"), dict):
            raise _bad(path, f"group {gi} is not an object with arrays")
        shape = e.get("shape")
        if not isinstance(e.get("spec_type"), str):
            raise _bad(path, f"group {gi}: spec_type must be a string")
        if not isinstance(shape, list):
            raise _bad(path, f"group {gi}: shape must be a list")
        for s in shape:
            if _nonneg_int(s, path, f"group {gi} shape") < 1:
                raise _bad(path, f"group {gi}: shape entries must be >= 1")
        dim = int(np.prod(shape, dtype=np.int64)) if shape else 1
        g = e.get("gamma")
        fam = family_of(e["spec_type"]) if family_of is not None else None
        if fam is not None and not fam.param_is_gamma:  # another kernel parameter (e.g. +-net_depth)
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not np.isfinite(g):
                raise _bad(path, f"group {gi}: the kernel parameter must be a finite number")
            dim = fam.row_dim(tuple(shape), float(g))
        elif isinstance(g, bool) or not isinstance(g, (int, float)) or not (g > 0 and np.isfinite(g)):
            raise _bad(path, f"group {gi}: gamma must be a finite positive number")
        n, rows = _nonneg_int(e.get("n"), path, f"group {gi} n"), _nonneg_int(e.get("rows"), path, f"group {gi} rows")
        ids = e.get("ids")
        if not isinstance(ids, list) or len(ids) != n or not all(isinstance(i, str) and i for i in ids):
            raise _bad(path, f"group {gi}: ids must be a list of {n} non-empty strings")
        expect = {"z": (rows, dim), "beta": (rows,), "offsets": (n + 1,), "self_ip": (n,), "seq": (n,),
                  "num_points": (n,), "digest": (n, 16), "screen.z32": (rows, dim), "screen.beta_l1": (n,),
                  "screen.r2max": (n,)}
        for name in ("z", "beta", "offsets", "self_ip", "seq", "num_points", "digest"):
            if name not in e["arrays"]:
                raise _bad(path, f"group {gi}: array {name} missing")
        for name, a in e["arrays"].items():
            if not isinstance(a, list) or len(a) != 3:
                raise _bad(path, f"group {gi}: array {short_repr(name)} entry must be [index, dtype, shape]")
            k, dt, shp = a
            k = _nonneg_int(k, path, f"array {name} index")
            if k >= len(offsets):
                raise _bad(path, f"group {gi}: array {name} index {k} out of range")
            allowed = (zdt,) if name == "z" else _CORE.get(name, _ANY)
            if dt not in allowed:
                raise _bad(path, f"group {gi}: array {name} has dtype {short_repr(dt)}, expected one of {allowed}")
            if not isinstance(shp, list) or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 1 << 40
                                                    for s in shp):
                raise _bad(path, f"group {gi}: array {name} shape must be a list of non-negative integers")
            if name in expect and tuple(shp) != expect[name]:
                raise _bad(path, f"group {gi}: array {name} has shape {shp}, expected {list(expect[name])}")
            nbytes = int(np.prod(shp, dtype=np.int64)) * np.dtype(dt).itemsize
            if start + offsets[k] + nbytes > size:
                raise _bad(path, f"truncated (array {name} of group {gi} ends past the end of the file)")
        crcs = e.get("crc32")
        if crcs is not None and (not isinstance(crcs, dict) or not all(
                isinstance(v, list) and all(isinstance(c, int) for c in v) for v in crcs.values())):
            raise _bad(path, f"group {gi}: crc32 must map array names to lists of integers")


def check_group_arrays(path, offsets, rows: int) -> None:
    """The CSR offsets of a mapped group: start at 0, non-decreasing, end at ``rows``."""
    o = np.asarray(offsets)
    if len(o) and (o[0] != 0 or o[-1] != rows or (len(o) > 1 and np.any(o[1:] < o[:-1]))):
        raise _bad(path, "group offsets are not a non-decreasing sequence from 0 to the row count")


def header_crc(header: dict) -> int:
    """crc32 of an index header's JSON form (without its own ``header_crc32`` entry)."""
    h = {k: v for k, v in header.items() if k != "header_crc32"}
    return zlib.crc32(json.dumps(h, allow_nan=True).encode("utf-8"))


def chunk_crcs(a: np.ndarray) -> list:
    """crc32 of each ``CRC_CHUNK``-byte chunk of ``a``'s bytes (C order)."""
    b = memoryview(np.ascontiguousarray(a).reshape(-1)).cast("B")  # 1-D: arrays with a 0-length axis too
    return [zlib.crc32(b[i:i + CRC_CHUNK]) for i in range(0, len(b), CRC_CHUNK)] or [0]


def verify_crcs(path, name: str, a: np.ndarray, expect: list) -> None:
    """ValueError naming ``path`` and the array when a chunk's crc32 differs from ``expect``."""
    if chunk_crcs(a) != list(expect):
        raise ValueError(f"{path}: checksum mismatch in array {name} (the file is damaged)")
