"""`SearchGate`: lets searches run outside the dock's index lock.

A search registers under the index lock (after the refresh that makes its view current), then
runs without it; code that mutates the index in place waits, under the index lock, until the
registered searches have left.  So one expensive search never holds up the others, and no search
sees an index being patched.
"""
from __future__ import annotations

import contextlib
import threading

__all__ = ["SearchGate"]


class SearchGate:
    def __init__(self):
        self._cond = threading.Condition()
        self._active = 0

    def enter(self) -> None:
        """Register a search (call with the index lock held)."""
        with self._cond:
            self._active += 1

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()

    @contextlib.contextmanager
    def searching(self):
        """Context of one search registered by :meth:`enter` (leaves on exit)."""
        try:
            yield
        finally:
            self.leave()

    def wait_idle(self) -> None:
        """Block until no registered search runs (call with the index lock held, before mutating)."""
        with self._cond:
            self._cond.wait_for(lambda: self._active == 0)
