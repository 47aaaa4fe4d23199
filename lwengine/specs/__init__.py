"""Specification types and their registry.

Importing this package registers every built-in type (table, text, hetero-map table, and the image
type when ``lwengine/specs/image/`` is present).  The registry API (:mod:`lwengine.specs.registry`):
``register(SpecType(...))``, ``get(type_or_alias)``, ``lookup``, ``entry_of(spec)``, ``spec_types()``,
``load_spec(path_or_dict)``, ``as_spec(obj)``, ``package_type_names()``.
"""
from __future__ import annotations

import importlib
import importlib.util

from . import registry
from .registry import (SpecType, as_spec, entry_of, get, load_spec, loads_spec, lookup, package_type_names, register,
                       spec_types)
from .table import RKMESpec, fit_many
from .text import RKMETextSpec, detect_language
from .hetero import HeteroMapTableSpec

__all__ = ["SpecType", "register", "get", "lookup", "entry_of", "spec_types", "load_spec", "loads_spec", "as_spec",
           "package_type_names", "RKMESpec", "RKMETextSpec", "HeteroMapTableSpec", "fit_many", "detect_language",
           "registry"]

# Further built-in types that live in their own sub-packages register themselves on import.
for _name in ("image",):
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")
