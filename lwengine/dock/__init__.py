"""A persistent, concurrent, crash-safe learnware store (``lwengine.Dock``) with a CLI and an HTTP service.

The store and its CLI need only numpy, PyYAML and rapidfuzz; ``lwengine dock serve`` needs the
optional extra ``dock`` (starlette, uvicorn, python-multipart).  See docs/dock.md.
"""
from ..package import Limits, PackageError
from .store import (STATUS_INVALID, STATUS_UNUSABLE, STATUS_USABLE, Dock, DockError, DockLockedError,
                    LearnwareRecord)

__all__ = ["Dock", "DockError", "DockLockedError", "LearnwareRecord", "Limits", "PackageError",
           "STATUS_INVALID", "STATUS_UNUSABLE", "STATUS_USABLE"]
