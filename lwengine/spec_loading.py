"""Fast reading of many RKME spec JSON files: orjson decoding, parsing in worker processes.

Every spec read here is bit for bit the one :func:`lwengine.load_spec` gives (the registered class
its ``type`` names; same ``z``/``beta`` bytes, gamma, num_points, extra fields), and every file the fast
path does not take is read by :func:`lwengine.load_spec` itself, so bad files raise exactly the error
they always did (naming the file).

The fast path is orjson, taken only where it provably agrees with the stdlib parser: orjson refuses
NaN / Infinity tokens, a BOM, lone surrogates and overflowing floats (such files go to the stdlib
path), and it turns integer literals beyond 64 bits into floats, so a decoded spec whose arrays or
scalars hold a float of magnitude >= 2**63 (where such a literal could hide) goes to the stdlib path
too.  Parsing is CPU-bound Python work that holds the GIL; large batches can be shared with worker
interpreters (fresh processes, safe inside threaded servers; ``LWE_LOAD_WORKERS`` or ``workers=``).
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import subprocess
import sys
import threading

import numpy as np

from . import kernels, safe_io
from .specs import registry

try:  # an ordinary dependency; the stdlib path still works without it
    import orjson
except ImportError:  # pragma: no cover - orjson is a core dependency
    orjson = None

__all__ = ["parse_spec_bytes", "read_spec_file", "read_spec_files", "parallel_workers", "worker_main"]

log = logging.getLogger(__name__)

_BIG = float(2 ** 63)  # orjson returns integer literals beyond 64 bits as floats at least this large
_MIN_PARALLEL = 2048  # fewer files than this are read in this process (a worker starts in ~0.3 s)
_MIN_SHARE = 256  # at least this many files per worker
_OWN_EXTRA = 0.5  # this process's share is 1.5 workers' (a worker's start and its pickled reply)
# the worker takes its paths (and this process's sys.path, so that it imports this same lwengine)
# before importing anything, so the parent's write never waits on that
_WORKER = ("import pickle, sys; sys.path[:], paths = pickle.load(sys.stdin.buffer); "
           "from lwengine.spec_loading import worker_main; worker_main(paths)")


def _needs_stdlib(value) -> bool:
    """True when a decoded scalar could differ from the stdlib parser's (a big integer literal)."""
    return isinstance(value, float) and not abs(value) < _BIG


def _fast_spec(data: bytes, source: str):
    """The spec decoded by orjson, or None where only the stdlib path is sure to agree."""
    d = orjson.loads(data)
    if not isinstance(d, dict) or any(k not in d for k in ("z", "beta", "gamma", "num_points")):
        return None
    if "type" in d and not isinstance(d["type"], str):
        return None
    if _needs_stdlib(d["gamma"]) or _needs_stdlib(d["num_points"]):
        return None
    arrays = {}
    for key in ("z", "beta"):
        arr = kernels.float_array(d[key])  # numpy.array's values where it takes the lists, ~5x faster
        if arr is None:
            arr = np.array(d[key])  # what the spec classes' from_dict do; it copies this array back unchanged
        if arr.dtype.kind not in "iuf":
            return None  # ragged, nested wrongly, or non-numbers: the stdlib path words the error
        if arr.dtype.kind == "f" and arr.size and not max(float(arr.max()), -float(arr.min())) < _BIG:
            return None
        arrays[key] = arr
    d = dict(d, **arrays)
    entry = registry.lookup(d.get("type", registry.DEFAULT_TYPE))
    if entry is None:
        return None  # unknown type: the stdlib path words the error
    return entry.from_dict(d, source)


def parse_spec_bytes(data: bytes, source: str = "spec"):
    """``lwengine.specs.loads_spec(data, source)``, decoded with orjson where it agrees with
    the stdlib parser (the same spec bit for bit; any other input takes exactly that call)."""
    if orjson is not None:
        try:
            spec = _fast_spec(data, source)
            if spec is not None:
                return spec
        except Exception:  # noqa: BLE001 - any doubt: the stdlib path below decides (and words the error)
            pass
    return registry.loads_spec(data, source)


def read_spec_file(path):
    """:func:`lwengine.load_spec` of ``path``, decoded with orjson where it agrees with the stdlib parser
    (every file the fast path does not take is read by :func:`lwengine.load_spec` itself)."""
    path = os.fspath(path)
    if orjson is not None:
        try:
            spec = _fast_spec(safe_io.read_regular(path, what="spec file"), path)  # no FIFO / device reads
            if spec is not None:
                return spec
        except Exception:  # noqa: BLE001 - any doubt: the reference path below decides (and words the error)
            pass
    return registry.load_spec(path)


@contextlib.contextmanager
def _gc_paused():
    """The cyclic collector off for a bulk parse: the parsers' lists and dicts are freed by reference
    counting as each file is done (no cycles), yet their allocations would keep triggering collections
    that walk the specs read so far (~5 % of a 10^4-file load)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _read_chunk(paths) -> list:
    """``read_spec_file`` of every path: the spec or the exception it raised."""
    out = []
    with _gc_paused():
        for p in paths:
            try:
                out.append(read_spec_file(p))
            except Exception as exc:  # noqa: BLE001 - returned to the caller, raised or reported there
                out.append(exc)
    return out


def parallel_workers() -> int:
    """Processes (this one included) that parse a large batch by default: 1 (in-process) unless
    ``LWE_LOAD_WORKERS`` asks for more.  With the native list-to-array conversion a file parses in
    ~0.12 ms, and a worker's start, its pickled reply and the parent's unpickling cost about as much
    as the share it takes (10^4 files on 2 idle cores: 1.61 s in-process, 2.18 s with a worker;
    docs/benchmarks.md), so extra processes are opt-in."""
    env = os.environ.get("LWE_LOAD_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"LWE_LOAD_WORKERS must be an integer, got {env!r}") from None
    return 1


def read_spec_files(paths, *, workers: int | None = None) -> list:
    """``read_spec_file`` of every path, in order: a spec (its registered class) or the exception it raised.

    ``workers``: processes to parse in (None: :func:`parallel_workers` for batches of at least
    ``2048`` files, else in-process; 1: in-process).  Workers are fresh interpreters running
    :func:`worker_main` (never a fork, never a re-import of the caller's ``__main__``); a worker
    that fails leaves its share to this process."""
    paths = [os.fspath(p) for p in paths]
    if workers is None:
        workers = parallel_workers() if len(paths) >= _MIN_PARALLEL else 1
    workers = min(int(workers), len(paths) // _MIN_SHARE)
    if workers <= 1:
        out = _read_chunk(paths)
    else:
        # this process reads the first share, larger by what a worker spends starting and sending
        # its results back (measured: docs/benchmarks.md); a thread per worker drains its pipe as it
        # writes, so no worker waits for this process to finish its own share
        weights = np.array([1.0 + _OWN_EXTRA] + [1.0] * (workers - 1))
        bounds = np.concatenate([[0], np.cumsum(weights / weights.sum() * len(paths))]).round().astype(int)
        shares = [paths[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        procs = [_start_worker(share) for share in shares[1:]]
        readers = [_PipeReader(proc) for proc in procs]
        out = _read_chunk(shares[0])
        for share, proc, reader in zip(shares[1:], procs, readers):
            out.extend(_finish_worker(proc, share, reader))
    return out


class _PipeReader:
    """Reads a worker's stdout to the end in a background thread (blocking reads release the GIL)."""

    def __init__(self, proc):
        self.data, self.error = b"", None
        self.thread = None
        if proc is not None:
            self.thread = threading.Thread(target=self._run, args=(proc.stdout,), daemon=True)
            self.thread.start()

    def _run(self, stream):
        try:
            self.data = stream.read()
        except Exception as exc:  # noqa: BLE001 - reported by _finish_worker
            self.error = exc

    def result(self) -> bytes:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error
        return self.data


def _start_worker(paths):
    """A worker interpreter reading ``paths`` (None when it cannot start)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", LWE_LOAD_WORKERS="1")
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-c", _WORKER],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        pickle.dump((list(sys.path), paths), proc.stdin)
        proc.stdin.close()
        return proc
    except (OSError, ValueError) as exc:
        log.warning("parallel spec loading unavailable (%s); reading in-process", exc)
        if proc is not None:
            proc.kill()
            proc.wait()
        return None


def _finish_worker(proc, paths, reader):
    """The worker's results for ``paths``, or this process's own reading if the worker failed."""
    if proc is not None:
        try:
            out = pickle.loads(reader.result())
            proc.stdout.close()
            if proc.wait() == 0 and isinstance(out, list) and len(out) == len(paths):
                return out
        except Exception as exc:  # noqa: BLE001 - a broken worker: read its share here
            log.warning("spec loading worker failed (%s); reading its files in-process", exc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return _read_chunk(paths)


def worker_main(paths) -> None:
    """Body of a worker interpreter: reads ``paths``, writes the pickled results to stdout
    (the spec object, of its registered class, or the exception)."""
    out = _read_chunk(paths)
    try:
        pickle.dumps(out)
    except Exception:  # noqa: BLE001 - an exception that does not pickle: send its words instead
        out = [r if not isinstance(r, BaseException) else RuntimeError(f"{type(r).__name__}: {r}") for r in out]
    pickle.dump(out, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()
