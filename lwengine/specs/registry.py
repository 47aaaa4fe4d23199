"""The spec-type registry: one :class:`SpecType` entry per specification type.

Everything above the spec classes (packed storage, search, index, dock, package reader, compat, HTTP)
asks this registry what a type is -- its class, JSON reader/writer, kernel family, grouping key,
admission rule and distance transform -- and never names a type string.  A new type is added by one
:func:`register` call in its own module (see docs/architecture.md, "Adding a spec type").
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .. import safe_io
from .kernel_family import GAUSSIAN, KernelFamily

__all__ = ["SpecType", "KernelFamily", "register", "unregister", "get", "lookup", "entry_of", "entry_of_class", "spec_types", "load_spec", "loads_spec", "as_spec",
           "kernel_param", "package_type_names", "DEFAULT_TYPE"]

DEFAULT_TYPE = "RKMETableSpecification"  # files without a ``type`` key are table specs


def _shape_key(shape: tuple):
    return tuple(shape)


@dataclass(frozen=True)
class SpecType:
    """What the engine knows about one specification type.

    ``type``: the type string written in spec files; ``cls``: the spec class (``cls.from_dict(d, source)``
    and ``spec.to_dict()`` are the default JSON reader / writer); ``aliases``: older type strings read as
    this type; ``kernel``: the kernel family of its inner products ("gaussian", "nngp", ...);
    ``match_key(shape)``: the metadata a user and a learnware must share to be compared, from the
    trailing shape of z (default: the shape itself; images: the channel count); ``admits(user, extra)``:
    an extra per-learnware rule on the user spec and the learnware's stored extra fields (text: the
    language subset rule), None for none; ``distance_transform``: applied to every distance (singles
    and mixture) before scores, None for the identity; ``package_names``: the class names a package's
    learnware.yaml may use for this type (default: the type string and the aliases); ``reader(d,
    source)`` / ``writer(spec)``: JSON reader / writer when not the class's ``from_dict`` / ``to_dict``;
    ``family``: the :class:`~lwengine.specs.kernel_family.KernelFamily` whose methods the packed store
    and the search call for this type's inner products (default: the Gaussian family).
    """

    type: str
    cls: type
    aliases: tuple = ()
    kernel: str = "gaussian"
    match_key: Callable = _shape_key
    admits: Callable | None = None
    distance_transform: Callable | None = None
    package_names: tuple = ()
    reader: Callable | None = None
    writer: Callable | None = None
    family: KernelFamily = GAUSSIAN

    def names(self) -> tuple:
        return (self.type,) + tuple(self.aliases)

    def yaml_names(self) -> tuple:
        return tuple(self.package_names) or self.names()

    def from_dict(self, d: dict, source: str = "spec"):
        return self.reader(d, source) if self.reader is not None else self.cls.from_dict(d, source)

    def to_dict(self, spec) -> dict:
        return self.writer(spec) if self.writer is not None else spec.to_dict()


_TYPES: dict = {}  # type string -> SpecType
_NAMES: dict = {}  # type string or alias -> SpecType
_BY_CLASS: dict = {}  # spec class -> SpecType (memo of entry_of_class)


def register(entry: SpecType, *, replace: bool = False) -> SpecType:
    """Add a spec type (ValueError if one of its names is taken, unless ``replace``)."""
    if not isinstance(entry, SpecType):
        raise TypeError(f"entry must be a SpecType, got {type(entry).__name__}")
    if not replace:
        taken = [n for n in entry.names() if n in _NAMES]
        if taken:
            raise ValueError(f"spec type name(s) already registered: {', '.join(taken)}")
    _TYPES[entry.type] = entry
    for n in entry.names():
        _NAMES[n] = entry
    _BY_CLASS.clear()
    return entry


def unregister(name: str) -> None:
    """Remove a registered type (by type string or alias) with all its names (KeyError if unknown)."""
    entry = _NAMES.get(name)
    if entry is None:
        raise KeyError(f"no registered spec type {name!r}")
    del _TYPES[entry.type]
    for n in entry.names():
        _NAMES.pop(n, None)
    _BY_CLASS.clear()


def lookup(name: str) -> SpecType | None:
    """The entry of a type string or alias, or None."""
    return _NAMES.get(name)


def get(name: str) -> SpecType:
    """The entry of a type string or alias (ValueError naming the registered types if unknown)."""
    entry = _NAMES.get(name)
    if entry is None:
        raise ValueError(f"unknown spec type {name!r}; registered: {', '.join(spec_types())}")
    return entry


def entry_of_class(cls) -> SpecType:
    """The entry of a spec class (the class itself, else its nearest registered base)."""
    entry = _BY_CLASS.get(cls)
    if entry is not None:
        return entry
    for klass in cls.__mro__:
        for entry in _TYPES.values():
            if entry.cls is klass:
                _BY_CLASS[cls] = entry
                return entry
    raise TypeError(f"{cls.__name__} is not a registered spec class")


def entry_of(spec) -> SpecType:
    """The entry of a spec object (by its class)."""
    return entry_of_class(type(spec))


def kernel_param(spec) -> float:
    """The kernel parameter a packed store keys ``spec`` by (gamma for Gaussian types; see
    :meth:`lwengine.specs.KernelFamily.param`)."""
    return entry_of(spec).family.param(spec)


def spec_types() -> list:
    """The registered type strings, in registration order."""
    return list(_TYPES)


def package_type_names() -> dict:
    """``{class name in learnware.yaml: SpecType}`` over every registered type."""
    return {n: e for e in _TYPES.values() for n in e.yaml_names()}


def load_spec(source, name: str = "spec"):
    """A spec of the right class from a decoded dict or a path to a spec JSON file (``type`` picks the
    class; files without ``type`` are table specs).  ValueError naming the file on any problem."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        # regular files only (no FIFO / device reads), bounded size and nesting depth
        source = safe_io.json_loads(safe_io.read_regular(path, what="spec file"), path)
        name = path
    if not isinstance(source, dict):
        raise ValueError(f"{name}: a spec must be a JSON object, got {type(source).__name__}")
    t = source.get("type", DEFAULT_TYPE)
    if not isinstance(t, str) or lookup(t) is None:
        raise ValueError(f"{name}: unknown spec type {t!r}; registered: {', '.join(spec_types())}")
    return get(t).from_dict(source, name)


def loads_spec(text: str, source: str = "spec"):
    """:func:`load_spec` of JSON text (ValueError naming ``source`` for invalid JSON)."""
    return load_spec(safe_io.json_loads(text, source), source)


def as_spec(spec, name: str = "spec"):
    """A registered spec object from a spec, a decoded spec dict, a path to a spec JSON file, or a
    duck-typed object with ``z``, ``beta`` and ``gamma`` (read as a table spec)."""
    if type(spec) in _BY_CLASS:  # a registered spec object (fast path)
        return spec
    try:
        entry_of(spec)
        return spec
    except TypeError:
        pass
    if isinstance(spec, (str, os.PathLike, dict)):
        return load_spec(spec, name)
    if all(hasattr(spec, a) for a in ("z", "beta", "gamma")):  # duck-typed spec (e.g. the market's)
        z = spec.z if not callable(getattr(spec, "get_z", None)) else spec.get_z()
        beta = spec.beta if not callable(getattr(spec, "get_beta", None)) else spec.get_beta()
        return get(DEFAULT_TYPE).cls(z, beta, spec.gamma, getattr(spec, "num_points", None))
    raise TypeError(f"{name} must be a spec object, a spec dict or a path to a spec JSON file, "
                    f"got {type(spec).__name__}")
