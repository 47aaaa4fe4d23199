"""Learnware ids: the alphabet and the length (in UTF-8 bytes) every store accepts.

An id becomes part of a file name (``<id>-<hex>.zip``), an HTTP path segment and a
``content-disposition`` header, so it must be short in bytes, printable, and free of path
separators, quotes and line breaks.
"""
from __future__ import annotations

import unicodedata

__all__ = ["check_id", "MAX_ID_BYTES", "FORBIDDEN_ID_CHARS"]

MAX_ID_BYTES = 128
FORBIDDEN_ID_CHARS = "/\\\"'`<>|:*?"


def check_id(id, name: str = "learnware id") -> str:
    """``id`` if valid, else ValueError (TypeError for non-strings) naming ``name``.

    Valid: 1..128 UTF-8 bytes, no control / format / separator-other characters (Unicode categories
    C*, Zl, Zp), no whitespace other than inner ASCII spaces, none of ``/ \\ " ' ` < > | : * ?``,
    not ``.`` or ``..``, not blank."""
    from .safe_io import short_repr

    if not isinstance(id, str):
        raise TypeError(f"{name} must be a string, got {type(id).__name__}")
    try:
        nbytes = len(id.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid Unicode text: {short_repr(id)}") from None
    if not id or nbytes > MAX_ID_BYTES:
        raise ValueError(f"{name} must be 1..{MAX_ID_BYTES} UTF-8 bytes, got {nbytes}: {short_repr(id, 60)}")
    if id.strip() != id or not id.strip() or id in (".", ".."):
        raise ValueError(f"{name} must not be blank or start/end with whitespace: {short_repr(id, 60)}")
    for c in id:
        if c in FORBIDDEN_ID_CHARS or (c.isspace() and c != " ") or unicodedata.category(c)[0] == "C" \
                or unicodedata.category(c) in ("Zl", "Zp"):
            raise ValueError(f"{name} holds a forbidden character {c!r}: {short_repr(id, 60)}")
    return id
