"""One way for every ``lwengine`` command to end: ``lwengine: error: ...`` and a non-zero exit
code for expected failures, a quiet exit when stdout is a closed pipe (``lwengine ... | head``)."""
from __future__ import annotations

import os
import sys

__all__ = ["run_command", "EXPECTED_ERRORS", "EXIT_ERROR", "EXIT_PIPE"]

EXIT_ERROR = 2
EXIT_PIPE = 141  # 128 + SIGPIPE, what a tool killed by SIGPIPE reports

# bad input, damaged files, unwritable outputs, missing backends, locked docks (DockError is a RuntimeError)
EXPECTED_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, OSError, RuntimeError,
                   MemoryError, RecursionError, UnicodeError)


def _message(exc) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, MemoryError):
        return "out of memory (input too large?)"
    msg = str(exc)
    return msg if len(msg) <= 2000 else msg[:2000] + "..."


def _quiet_pipe() -> int:
    try:  # later flushes (at exit) must not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_PIPE


def run_command(func, args) -> int:
    """``func(args)`` as an exit code (see the module docstring)."""
    try:
        code = int(func(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_pipe()
    except KeyboardInterrupt:
        print("lwengine: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:
        try:
            print(f"lwengine: error: {_message(exc)}", file=sys.stderr)
        except BrokenPipeError:
            pass
        return EXIT_ERROR
