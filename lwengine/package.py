"""Hostile-input-safe reading of learnware packages (zip or folder) and spec files.

Nothing here imports or executes package code.  Every problem is a :class:`PackageError`
(a ValueError) naming the package; nothing is written anywhere (the store writes only what a
successful read returns).
"""
from __future__ import annotations

import io
import os
import posixpath
import stat
import zipfile
from dataclasses import dataclass, field

from . import safe_io
from .spec_loading import parse_spec_bytes
from .specs import registry

__all__ = ["PackageError", "Limits", "Package", "read_package", "read_spec_file", "read_semantic",
           "check_semantic", "build_package_zip"]

SEMANTIC_FILE = "semantic_specification.json"


class PackageError(ValueError):
    """A learnware package or spec file that the dock refuses (the message names it and why)."""


@dataclass(frozen=True)
class Limits:
    """Size limits for untrusted input (bytes unless said otherwise)."""

    max_package_bytes: int = 256 << 20     # sum of uncompressed member sizes / folder file sizes
    max_members: int = 10_000
    max_ratio: float = 200.0               # uncompressed / compressed, members over 1 MiB
    max_spec_bytes: int = 64 << 20
    max_yaml_bytes: int = 1 << 20
    max_semantic_bytes: int = 1 << 20

    def __post_init__(self):
        for name in ("max_package_bytes", "max_members", "max_spec_bytes", "max_yaml_bytes", "max_semantic_bytes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.max_ratio > 1:
            raise ValueError(f"max_ratio must be > 1, got {self.max_ratio!r}")


DEFAULT_LIMITS = Limits()


@dataclass
class Package:
    """A validated package: its spec, optional semantic spec, and the normalised zip bytes to keep."""

    spec: object  # a registered spec class (lwengine.specs)
    semantic: dict | None
    spec_file: str
    zip_bytes: bytes
    meta: dict = field(default_factory=dict)


def _unsafe(name: str) -> bool:
    if not name or "\x00" in name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    return ".." in name.replace("\\", "/").split("/")


def _norm(name: str) -> str:
    return posixpath.normpath(name.replace("\\", "/"))


def _read_zip_members(path: str, data: bytes | None, limits: Limits) -> dict:
    """``{normalised name: bytes}`` of a zip after every safety check (sizes enforced while reading)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data) if data is not None else path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PackageError(f"{path}: not a readable zip file: {exc}") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise PackageError(f"{path}: too many zip members ({len(infos)} > {limits.max_members})")
        declared = 0
        for info in infos:
            if _unsafe(info.filename):
                raise PackageError(f"{path}: refusing unsafe member name {info.filename!r}")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise PackageError(f"{path}: refusing symlink member {info.filename!r}")
            if info.flag_bits & 0x1:
                raise PackageError(f"{path}: encrypted member {info.filename!r}")
            declared += info.file_size
            if info.file_size > (1 << 20) and info.file_size > limits.max_ratio * max(1, info.compress_size):
                raise PackageError(f"{path}: member {info.filename!r} compression ratio "
                                   f"{info.file_size / max(1, info.compress_size):.0f} exceeds {limits.max_ratio:g} "
                                   "(zip bomb?)")
        if declared > limits.max_package_bytes:
            raise PackageError(f"{path}: uncompressed size {declared} exceeds the limit {limits.max_package_bytes}")
        members, total = {}, 0
        for info in infos:
            if info.is_dir():
                continue
            key = _norm(info.filename)
            if key in members:
                raise PackageError(f"{path}: duplicate member {key!r}")
            cap = limits.max_package_bytes - total
            try:
                with zf.open(info) as f:  # never trust the header: read at most the remaining budget
                    blob = f.read(cap + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
                raise PackageError(f"{path}: cannot read member {info.filename!r}: {exc}") from exc
            total += len(blob)
            if total > limits.max_package_bytes:
                raise PackageError(f"{path}: uncompressed size exceeds the limit {limits.max_package_bytes}")
            members[key] = blob
    return members


def _read_folder_members(path: str, limits: Limits) -> dict:
    members, total = {}, 0
    for root, dirs, files in os.walk(path, followlinks=False):
        for d in dirs:
            if os.path.islink(os.path.join(root, d)):
                raise PackageError(f"{path}: refusing symlink {os.path.relpath(os.path.join(root, d), path)!r}")
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                raise PackageError(f"{path}: refusing symlink {rel!r}")
            if not stat.S_ISREG(st.st_mode):
                raise PackageError(f"{path}: refusing non-regular file {rel!r}")
            if len(members) >= limits.max_members:
                raise PackageError(f"{path}: too many files (> {limits.max_members})")
            total += st.st_size
            if total > limits.max_package_bytes:
                raise PackageError(f"{path}: package size exceeds the limit {limits.max_package_bytes}")
            with open(full, "rb") as f:
                members[_norm(rel)] = f.read(st.st_size + 1)[: limits.max_package_bytes + 1]
    return members


def _text(path, members, name, cap, what) -> str:
    key = _norm(name)
    if key not in members:
        raise PackageError(f"{path}: no {what} {name!r} in the package")
    blob = members[key]
    if len(blob) > cap:
        raise PackageError(f"{path}: {name} is {len(blob)} bytes, over the limit {cap}")
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageError(f"{path}: {name} is not UTF-8 text: {exc}") from exc


def check_semantic(semantic, source: str = "semantic") -> dict:
    """A semantic spec must be a JSON object of ``{key: {"Type", "Values"}}`` objects."""
    if not isinstance(semantic, dict):
        raise PackageError(f"{source}: a semantic specification must be a JSON object, got {type(semantic).__name__}")
    for key, entry in semantic.items():
        if not isinstance(key, str) or not isinstance(entry, dict):
            raise PackageError(f"{source}: semantic key {safe_io.short_repr(key, 60)} must map to an object with 'Type' and 'Values'")
    return semantic


def read_semantic(path, limits: Limits = DEFAULT_LIMITS) -> dict:
    """A semantic specification JSON file (size-limited, validated)."""
    path = os.fspath(path)
    try:
        blob = safe_io.read_regular(path, limits.max_semantic_bytes, "semantic specification")
        return check_semantic(safe_io.json_loads(blob, f"{path}: semantic specification"), path)
    except ValueError as exc:
        raise PackageError(str(exc)) from None


def _loads_spec(text: str, source: str, entry=None):
    """A spec from JSON text: of the registered type its ``type`` names (files without one: table), or of
    ``entry``'s type when given (a package's learnware.yaml says which)."""
    if entry is None:
        return registry.loads_spec(text, source)
    d = safe_io.json_loads(text, source)  # bounded depth
    if not isinstance(d, dict):
        raise ValueError(f"{source}: a spec must be a JSON object, got {type(d).__name__}")
    return entry.from_dict(d, source)


def read_spec_file(path, limits: Limits = DEFAULT_LIMITS):
    """A spec JSON file, size-limited, of the registered type its ``type`` names."""
    path = os.fspath(path)
    if os.path.islink(path):
        raise PackageError(f"{path}: refusing a symlink")
    try:
        blob = safe_io.read_regular(path, limits.max_spec_bytes, "spec file")  # no FIFO / device reads
    except ValueError as exc:
        raise PackageError(str(exc)) from None
    try:
        return parse_spec_bytes(blob, path)  # registry.loads_spec(blob.decode("utf-8"), path), faster
    except UnicodeDecodeError as exc:
        raise PackageError(f"{path}: spec file is not UTF-8: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise PackageError(str(exc)) from exc


def read_package(path, *, data: bytes | None = None, limits: Limits = DEFAULT_LIMITS) -> Package:
    """Read and validate a learnware package: a zip file, zip bytes (``data``), or an unzipped folder.

    Checks: member names (no absolute paths, ``..``, NUL), no symlinks or special files, member count,
    total uncompressed size and compression ratio (zip bombs), ``learnware.yaml`` present, valid YAML
    (``yaml.safe_load``) with a ``stat_specifications`` list naming a registered spec class (the first
    one listed is used; :func:`lwengine.specs.package_type_names`), the spec JSON's size and type, and the optional
    ``semantic_specification.json``.
    """
    path = "<upload>" if path is None else os.fspath(path)
    if data is None and os.path.islink(path):
        raise PackageError(f"{path}: refusing a symlink")
    if data is None and os.path.isdir(path):
        members = _read_folder_members(path, limits)
        zip_bytes = None
    else:
        if data is None:
            try:  # a regular file only (a FIFO would hang, /dev/zero never end)
                data = safe_io.read_regular(path, limits.max_package_bytes, "package")
            except OSError as exc:
                raise PackageError(f"{path}: cannot read: {exc}") from exc
            except ValueError as exc:
                raise PackageError(str(exc)) from None
        members = _read_zip_members(path, data, limits)
        zip_bytes = data
    try:  # alias-bomb-safe (aliases counted before anything is expanded)
        meta = safe_io.load_yaml(_text(path, members, "learnware.yaml", limits.max_yaml_bytes, "file"),
                                 f"{path}: learnware.yaml")
    except ValueError as exc:
        raise PackageError(str(exc)) from None
    if not isinstance(meta, dict):
        raise PackageError(f"{path}: learnware.yaml must be a mapping, got {type(meta).__name__}")
    entries = meta.get("stat_specifications")
    if not isinstance(entries, list):
        raise PackageError(f"{path}: learnware.yaml has no stat_specifications list")
    known = registry.package_type_names()
    entry = next((e for e in entries if isinstance(e, dict) and isinstance(e.get("class_name"), str)
                  and e.get("class_name") in known), None)
    if entry is None:
        found = [safe_io.short_repr(e.get("class_name"), 60) for e in entries[:8] if isinstance(e, dict)]
        raise PackageError(f"{path}: no {' / '.join(known)} in stat_specifications "
                           f"(found {', '.join(found)}{' ...' if len(entries) > 8 else ''})")
    spec_file = entry.get("file_name")
    if not isinstance(spec_file, str) or _unsafe(spec_file):
        raise PackageError(f"{path}: stat specification entry has a missing or unsafe file_name "
                           f"{safe_io.short_repr(spec_file)}")
    text = _text(path, members, spec_file, limits.max_spec_bytes, "spec file")
    try:
        spec = _loads_spec(text, f"{path}:{spec_file}", known[entry["class_name"]])
    except (ValueError, TypeError) as exc:
        raise PackageError(str(exc)) from exc
    semantic = None
    if _norm(SEMANTIC_FILE) in members:
        sem_text = _text(path, members, SEMANTIC_FILE, limits.max_semantic_bytes, "file")
        try:
            semantic = check_semantic(safe_io.json_loads(sem_text, f"{path}: {SEMANTIC_FILE}"),
                                      f"{path}:{SEMANTIC_FILE}")
        except ValueError as exc:
            raise PackageError(str(exc)) from None
    if zip_bytes is None:
        zip_bytes = build_package_zip(members)
    return Package(spec=spec, semantic=semantic, spec_file=_norm(spec_file), zip_bytes=zip_bytes, meta=meta)


def build_package_zip(members: dict) -> bytes:
    """Zip ``{name: bytes}`` (deflated, sorted names, fixed timestamps: same members -> same bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name])
    return buf.getvalue()


def package_members(zip_bytes: bytes, limits: Limits = DEFAULT_LIMITS) -> dict:
    """Members of a stored package zip (already validated at ingestion; checked again anyway)."""
    return _read_zip_members("<stored package>", zip_bytes, limits)


def default_yaml(spec_file: str, spec=None) -> str:
    """``learnware.yaml`` for a learnware added from a bare spec (no model: export only carries the spec);
    the class name is the spec's registered package name (table when ``spec`` is None)."""
    entry = registry.get(registry.DEFAULT_TYPE) if spec is None else registry.entry_of(spec)
    return ("model:\n  class_name: Model\n  kwargs: {}\nstat_specifications:\n"
            f"  - module_path: learnware.specification\n    class_name: {entry.yaml_names()[0]}\n"
            f"    file_name: {spec_file}\n    kwargs: {{}}\n")
