"""Argument validators shared by the kernel door (:mod:`lwengine.kernels`) and its backends.

One set of rules, mirrored by the native bindings (csrc/bind/array_checks.h):

* a value that is not array-like, or holds non-real numbers (bool, complex, object, strings), is a
  ``TypeError`` (``"z must hold real numbers, got dtype complex128"``);
* a wrong shape, length, CSR offsets or a non-finite / non-positive ``gamma`` is a ``ValueError``
  naming the argument, what was expected and what was received;
* an unknown ``device`` or ``backend`` is a ``ValueError``.

The Python side converts (casts to the kernel's dtype, makes arrays C-contiguous); the bindings
never convert, so a wrong dtype that reaches them directly is a ``TypeError`` there too.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "DEVICES",
    "BACKENDS",
    "to_numpy",
    "as_points",
    "as_vector",
    "as_offsets",
    "as_gamma",
    "as_store",
    "check_same_dim",
    "as_step_args",
    "as_qp",
    "as_device",
    "as_backend",
]

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "native", "triton")


def to_numpy(a, name: str) -> np.ndarray:
    """``a`` as a numpy array (torch tensors are copied to the host); TypeError if not array-like."""
    if type(a) is np.ndarray:  # the common case, first: these checks run on every kernel call
        return a
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch tensor (duck-typed: torch is optional)
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be array-like, got {type(a).__name__}") from exc


_STORE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_real(a: np.ndarray, name: str) -> None:
    if a.dtype.kind not in "iuf":  # signed, unsigned, floating (not bool, complex, timedelta, object)
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")


def as_points(a, name: str, dtype=None) -> np.ndarray:
    """Rows of points, C-contiguous (n, d): 1-D is (n, 1), trailing dimensions are flattened.
    ``dtype`` None keeps float32 and casts everything else to float64."""
    a = to_numpy(a, name)
    if a.ndim == 2 and a.flags.c_contiguous and (a.dtype == dtype if dtype is not None else
                                                 a.dtype in _STORE_FLOATS):
        return a  # already what the rest would make of it
    _check_real(a, name)
    if a.ndim == 0:
        raise ValueError(f"{name} must have shape (n, d), got a scalar")
    if a.ndim == 1:
        a = a.reshape(-1, 1) if a.size else a.reshape(0, 1)
    elif a.ndim != 2:
        a = a.reshape(a.shape[0], -1)
    if dtype is None:
        dtype = np.float32 if a.dtype == np.float32 else np.float64
    return np.ascontiguousarray(a, dtype=dtype)


def as_vector(a, name: str, length: int | None = None) -> np.ndarray:
    """A C-contiguous float64 vector, of ``length`` entries when given."""
    a = to_numpy(a, name)
    if not (a.ndim == 1 and a.dtype == np.float64 and a.flags.c_contiguous):
        _check_real(a, name)
        a = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {a.shape[0]}")
    return a


def as_indices(idx, name: str, n: int) -> np.ndarray:
    """A C-contiguous int64 vector of indices in ``[0, n)`` (no wrap-around of negative values)."""
    a = to_numpy(idx, name)
    if a.size and a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.ndim > 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.int64).reshape(-1)
    if a.size and (int(a.min()) < 0 or int(a.max()) >= n):
        raise ValueError(f"{name} must hold indices in [0, {n}), got values from {int(a.min())} to {int(a.max())}")
    return a


def as_offsets(offsets, name: str, num_rows: int) -> np.ndarray:
    """CSR offsets: int64, ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == num_rows``."""
    o = to_numpy(offsets, name)
    if o.size and o.dtype.kind not in "iu":
        if not (o.dtype.kind == "f" and np.all(np.mod(o, 1) == 0)):
            raise TypeError(f"{name} must hold integers, got dtype {o.dtype}")
    o = np.ascontiguousarray(o, dtype=np.int64).reshape(-1)
    if o.shape[0] < 1 or o[0] != 0 or o[-1] != num_rows or bool((o[1:] < o[:-1]).any()):
        raise ValueError(
            f"{name} must be non-decreasing int64 offsets from 0 to the number of rows ({num_rows}), "
            f"got {o[:3].tolist()}...{o[-1:].tolist()} (length {o.shape[0]})"
        )
    return o


def as_gamma(gamma, name: str = "gamma") -> float:
    """A finite positive float."""
    if isinstance(gamma, bool):
        raise TypeError(f"{name} must be a real number, got bool")
    try:
        g = float(gamma)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real number, got {type(gamma).__name__}") from exc
    if not np.isfinite(g) or g <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {gamma!r}")
    return g


def as_store(z, beta, offsets, prefix: str = "", dtype=None):
    """A packed store ``(z (M, d), beta (M,) float64, offsets (N + 1,) int64)``."""
    z = as_points(z, f"{prefix}z", dtype)
    beta = as_vector(beta, f"{prefix}beta", z.shape[0])
    offsets = as_offsets(offsets, f"{prefix}offsets", z.shape[0])
    return z, beta, offsets


def check_same_dim(a, b, a_name: str, b_name: str) -> None:
    """ValueError when two non-empty point sets have different dimensions."""
    if a.shape[1] != b.shape[1] and a.shape[0] and b.shape[0]:
        raise ValueError(f"{a_name} has dimension {a.shape[1]} but {b_name} has dimension {b.shape[1]}")


def as_step_args(z, beta, C, T):
    """Float64 ``(z (K, d), beta (K,), C (K,), T (K, d))`` of a reduced-set step."""
    z = as_points(z, "z", np.float64)
    K = z.shape[0]
    beta = as_vector(beta, "beta", K)
    C = as_vector(C, "C", K)
    T = as_points(T, "T", np.float64)
    if T.shape != z.shape:
        raise ValueError(f"T must have shape {z.shape}, got {T.shape}")
    return z, beta, C, T


def as_qp(G, c, prefix: str = ""):
    """A finite simplex QP ``(G (n, n), c (n,))`` with n >= 1."""
    G = to_numpy(G, f"{prefix}G")
    _check_real(G, f"{prefix}G")
    G = np.ascontiguousarray(G, dtype=np.float64)
    c = as_vector(c, f"{prefix}c")
    n = c.shape[0]
    if n == 0:
        raise ValueError(f"{prefix}c must have at least one entry")
    if G.shape != (n, n):
        raise ValueError(f"{prefix}G must have shape ({n}, {n}) to match c, got {G.shape}")
    if not (np.isfinite(G).all() and np.isfinite(c).all()):
        raise ValueError(f"{prefix}G and {prefix}c must be finite")
    return G, c


def as_device(device) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return device


def as_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto', 'native' or 'triton', got {backend!r}")
    return backend
