"""Stateless RKME kernels: validated Python entry points over the native modules.

Every function here has a float64 numpy twin of the same signature in :mod:`lwengine._reference`
(the ``device`` option aside: ``"auto"`` runs on the GPU when the data are torch CUDA tensors,
``"cuda"`` / ``"cpu"`` force a backend; see :func:`_on_cuda`).
Data arguments come first, options are keyword-only.  Packed stores are CSR-like:
``z`` (M, d) float32 or float64, ``beta`` (M,) float64, ``offsets`` (N + 1,) int64 with
``offsets[0] == 0``, non-decreasing, ``offsets[-1] == M``.  Accumulation is always float64;
float32 ``z`` is the bulk-screening path (see docs/kernels.md for its error bound).
"""
from __future__ import annotations

import numpy as np

from . import _backend
from . import _reference

__all__ = [
    "cross_inner",
    "self_inner",
    "gram",
    "kernel_mean",
    "zx_moments",
    "rs_step",
    "rs_step_from_moments",
    "simplex_qp",
    "simplex_qp_batch",
    "kmeans",
    "cross_inner_f32_bound",
]


# ------------------------------------------------------------------------------ validation
def _as_points(a, name: str, dtype=None) -> np.ndarray:
    a = _to_numpy(a, name)
    if a.ndim == 1:
        a = a.reshape(-1, 1) if a.size else a.reshape(0, 1)
    if a.ndim != 2:
        a = a.reshape(a.shape[0], -1)
    if dtype is None:
        dtype = np.float32 if a.dtype == np.float32 else np.float64
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=dtype)


def _to_numpy(a, name: str) -> np.ndarray:
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch tensor
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be array-like, got {type(a).__name__}") from exc


def _as_vector(a, name: str, length: int | None = None) -> np.ndarray:
    a = np.ascontiguousarray(_to_numpy(a, name), dtype=np.float64).reshape(-1)
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {a.shape[0]}")
    return a


def _as_offsets(offsets, name: str, num_rows: int) -> np.ndarray:
    o = np.ascontiguousarray(_to_numpy(offsets, name), dtype=np.int64).reshape(-1)
    if o.shape[0] < 1 or o[0] != 0 or o[-1] != num_rows or np.any(np.diff(o) < 0):
        raise ValueError(
            f"{name} must be non-decreasing int64 offsets from 0 to the number of rows ({num_rows}), "
            f"got {o[:3].tolist()}...{o[-1:].tolist()} (length {o.shape[0]})"
        )
    return o


def _as_gamma(gamma, name: str = "gamma") -> float:
    try:
        g = float(gamma)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real number, got {type(gamma).__name__}") from exc
    if not np.isfinite(g) or g <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {gamma!r}")
    return g


def _store(z, beta, offsets, prefix: str, dtype=None):
    z = _as_points(z, f"{prefix}z", dtype)
    beta = _as_vector(beta, f"{prefix}beta", z.shape[0])
    offsets = _as_offsets(offsets, f"{prefix}offsets", z.shape[0])
    return z, beta, offsets


_DEVICES = ("auto", "cpu", "cuda")


def _on_cuda(name: str, device: str, data) -> object:
    """The CUDA twin of kernel ``name`` when the call belongs on the GPU, else None.

    ``device="cpu"``: always the CPU kernels (CUDA tensors are copied to the host); ``"cuda"``: the
    CUDA kernels (numpy in and out through device copies; RuntimeError without a CUDA build or
    device); ``"auto"``: the CUDA kernels when any data argument is a torch CUDA tensor.
    """
    if device not in _DEVICES:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return None
    if device == "auto" and not any(hasattr(a, "detach") and getattr(a, "is_cuda", False) for a in data):
        return None
    _backend.require_cuda()
    from . import _cuda_ops

    return getattr(_cuda_ops, name)


def _native(name: str):
    """The _core function ``name``; RuntimeError when the installed extension lacks it."""
    fn = getattr(_backend.require_core(), name, None)
    if fn is None:
        raise RuntimeError(f"lwengine's CPU extension _core has no function {name!r}: rebuild the package")
    return fn


# ------------------------------------------------------------------------------ kernels
def cross_inner(q_z, q_beta, q_offsets, z, beta, offsets, gamma, *, device: str = "auto"):
    """Inner products of query specs with store specs, shape (Q, N), float64.

    ``out[q, i] = sum_a sum_b q_beta_a beta_b exp(-gamma |q_z_a - z_b|^2)``.  The query is cast to
    the store's dtype (float32 store: bulk screening; float64 store: reference fidelity).
    """
    cuda_fn = _on_cuda('cross_inner', device, (q_z, q_beta, z, beta))
    if cuda_fn is not None:
        return cuda_fn(q_z, q_beta, q_offsets, z, beta, offsets, gamma)
    z, beta, offsets = _store(z, beta, offsets, "")
    q_z, q_beta, q_offsets = _store(q_z, q_beta, q_offsets, "q_", z.dtype)
    if q_z.shape[1] != z.shape[1] and q_z.shape[0] and z.shape[0]:
        raise ValueError(f"q_z has dimension {q_z.shape[1]} but z has dimension {z.shape[1]}")
    g = _as_gamma(gamma)
    out = np.zeros((q_offsets.shape[0] - 1, offsets.shape[0] - 1), dtype=np.float64)
    fn = _native("cross_inner")
    if out.size and z.shape[0] and q_z.shape[0]:
        fn(q_z, q_beta, q_offsets, z, beta, offsets, g, out)
    return out


def self_inner(z, beta, offsets, gamma, *, device: str = "auto"):
    """``<mu_i, mu_i>`` for every spec of a packed store, shape (N,)."""
    cuda_fn = _on_cuda('self_inner', device, (z, beta))
    if cuda_fn is not None:
        return cuda_fn(z, beta, offsets, gamma)
    z, beta, offsets = _store(z, beta, offsets, "")
    g = _as_gamma(gamma)
    out = np.zeros(offsets.shape[0] - 1, dtype=np.float64)
    fn = _native("self_inner")
    if out.size and z.shape[0]:
        fn(z, beta, offsets, g, out)
    return out


def gram(z, beta, offsets, gamma, *, device: str = "auto"):
    """Gram matrix ``<mu_i, mu_j>`` of the specs of one packed set, shape (N, N), symmetric."""
    cuda_fn = _on_cuda('gram', device, (z, beta))
    if cuda_fn is not None:
        return cuda_fn(z, beta, offsets, gamma)
    z, beta, offsets = _store(z, beta, offsets, "")
    g = _as_gamma(gamma)
    n = offsets.shape[0] - 1
    out = np.zeros((n, n), dtype=np.float64)
    fn = _native("gram")
    if n and z.shape[0]:
        fn(z, beta, offsets, g, out)
    return out


def zx_moments(z, x, gamma, *, with_t: bool = True, device: str = "auto"):
    """``(C, T)``: ``C_i = mean_j k(z_i, x_j)`` (K,) and ``T_i = mean_j k(z_i, x_j) x_j`` (K, d).

    Streams over ``x`` (float32 or float64, n up to 1e7) in tiles; never materializes K x n.
    ``with_t=False`` skips T (returned as None).
    """
    cuda_fn = _on_cuda('zx_moments', device, (z, x))
    if cuda_fn is not None:
        return cuda_fn(z, x, gamma, with_t=with_t)
    z = _as_points(z, "z", np.float64)
    x = _as_points(x, "x")
    if x.shape[0] == 0:
        raise ValueError("x must have at least one row, got 0")
    if z.shape[1] != x.shape[1]:
        raise ValueError(f"z has dimension {z.shape[1]} but x has dimension {x.shape[1]}")
    g = _as_gamma(gamma)
    fn = _native("zx_moments")
    C = np.zeros(z.shape[0], dtype=np.float64)
    T = np.zeros(z.shape, dtype=np.float64) if with_t else None
    fn(z, x, g, C, T)
    return C, T


def kernel_mean(z, x, gamma, *, device: str = "auto"):
    """``C_i = (1/n) sum_j exp(-gamma |z_i - x_j|^2)``, shape (K,)."""
    return zx_moments(z, x, gamma, with_t=False, device=device)[0]


def _step_args(z, beta, C, T):
    """Validated float64 ``(z (K, d), beta (K,), C (K,), T (K, d))`` of a reduced-set step."""
    z = _as_points(z, "z", np.float64)
    K = z.shape[0]
    beta = _as_vector(beta, "beta", K)
    C = _as_vector(C, "C", K)
    T = _as_points(T, "T", np.float64)
    if T.shape != z.shape:
        raise ValueError(f"T must have shape {z.shape}, got {T.shape}")
    return z, beta, C, T


def rs_step_from_moments(z, beta, C, T, gamma, step_size, *, exact_gradient: bool = False, device: str = "auto"):
    """One Jacobi Z update from the data moments at ``z`` (see :func:`zx_moments`)."""
    cuda_fn = _on_cuda('rs_step_from_moments', device, (z, beta, C, T))
    if cuda_fn is not None:
        return cuda_fn(z, beta, C, T, gamma, step_size, exact_gradient=exact_gradient)
    z, beta, C, T = _step_args(z, beta, C, T)
    g = _as_gamma(gamma)
    step = float(step_size)
    fn = _native("rs_step_from_moments")
    out = np.empty_like(z)
    fn(z, beta, C, T, g, step, 2.0 if exact_gradient else 1.0, out)
    return out


def rs_step(z, beta, x, gamma, step_size, *, exact_gradient: bool = False, device: str = "auto"):
    """One reduced-set Z update against data ``x``: the reference's factor (semantics 1.8) by
    default, the exact MMD^2 gradient with ``exact_gradient=True``."""
    C, T = zx_moments(z, x, gamma, device=device)
    return rs_step_from_moments(z, beta, C, T, gamma, step_size, exact_gradient=exact_gradient, device=device)


def _as_qp(G, c, prefix=""):
    G = np.ascontiguousarray(_to_numpy(G, f"{prefix}G"), dtype=np.float64)
    c = _as_vector(c, f"{prefix}c")
    n = c.shape[0]
    if n == 0:
        raise ValueError(f"{prefix}c must have at least one entry")
    if G.shape != (n, n):
        raise ValueError(f"{prefix}G must have shape ({n}, {n}) to match c, got {G.shape}")
    if not (np.isfinite(G).all() and np.isfinite(c).all()):
        raise ValueError(f"{prefix}G and {prefix}c must be finite")
    return G, c


def simplex_qp(G, c, *, x0=None):
    """Exact ``argmin 1/2 x'Gx - c'x  s.t. x >= 0, sum x = 1`` -> ``(x, obj)``.

    Bit-identical rows (duplicate points) share their weight equally, as the reference's
    interior-point solver does; G may be singular.  ``x0`` (n,), optional: a warm start (finite,
    >= 0, positive sum; it is normalised) whose support is the first active-set face, e.g. the
    previous solution of a slightly changed problem.  It changes the path, not the answer, when
    G is positive semidefinite (the minimum is then global; with a singular G another minimiser of
    the same objective may be returned); with an indefinite G the result is a KKT point reached
    from x0.
    """
    G, c = _as_qp(G, c)
    if x0 is not None:
        x0 = _as_vector(x0, "x0", c.shape[0])
        if not np.isfinite(x0).all():
            raise ValueError("x0 must be finite")
        if (x0 < 0).any() or not x0.sum() > 0:
            raise ValueError("x0 must be nonnegative with a positive sum")
    fn = _native("simplex_qp")
    x = np.zeros_like(c)
    obj = fn(G, c, x, x0)
    return x, float(obj)


def simplex_qp_batch(Gs, cs):
    """:func:`simplex_qp` for a batch of equal-sized problems: ``Gs`` (B, n, n), ``cs`` (B, n)."""
    Gs = np.ascontiguousarray(_to_numpy(Gs, "Gs"), dtype=np.float64)
    cs = np.ascontiguousarray(_to_numpy(cs, "cs"), dtype=np.float64)
    if cs.ndim != 2 or Gs.shape != (cs.shape[0], cs.shape[1], cs.shape[1]):
        raise ValueError(f"Gs must have shape (B, n, n) and cs (B, n), got {Gs.shape} and {cs.shape}")
    if not (np.isfinite(Gs).all() and np.isfinite(cs).all()):
        raise ValueError("Gs and cs must be finite")
    fn = _native("simplex_qp_batch")
    xs = np.zeros_like(cs)
    objs = np.zeros(cs.shape[0], dtype=np.float64)
    if cs.shape[0]:
        fn(Gs, cs, xs, objs)
    return xs, objs


def kmeans(x, k, *, max_iter: int = 100, tol: float = 1e-4, seed=None, init: str = "random", init_idx=None):
    """Lloyd's k-means (float32) with the reference's rules -> ``(centroids (k, d) float32, iterations)``.

    See :func:`lwengine._reference.kmeans` for the exact semantics.
    """
    x = _as_points(x, "x", np.float32)
    n = x.shape[0]
    k = int(k)
    if n == 0:
        raise ValueError("x must have at least one row, got 0")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if init_idx is not None:
        idx = np.asarray(init_idx, dtype=np.int64).reshape(-1)
        if idx.shape[0] != k or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"init_idx must hold {k} row indices in [0, {n}), got {idx.shape[0]} values")
    elif init == "random":
        idx = np.random.default_rng(seed).integers(0, n, size=k)
    elif init == "k-means++":
        idx = _reference._kmeanspp_indices(x, k, seed)
    else:
        raise ValueError(f"init must be 'random' or 'k-means++', got {init!r}")
    fn = _native("kmeans")
    c = np.ascontiguousarray(x[idx])
    it = fn(x, c, int(max_iter), float(tol))
    return c, int(it)


def cross_inner_f32_bound(q_beta_l1, beta_l1, q_K, dim, gamma, r2max):
    """Bound on ``|cross_inner(float32 rows) - cross_inner(float64 rows)|`` (elementwise, broadcasts).

    ``q_beta_l1`` / ``beta_l1``: sum |beta| of the query / store spec; ``q_K``: query spec size;
    ``r2max``: the largest squared row norm over both specs.  This is the kernel's float32 bound
    (docs/kernels.md: eps * S * (4 + Kq + 4 (d + 3) gamma R^2)) plus the rounding of float64 inputs
    to float32 (4 eps gamma R^2 relative per kernel value), doubled as a safety margin.
    """
    eps = float(np.finfo(np.float32).eps)
    S = np.asarray(q_beta_l1, dtype=np.float64) * np.asarray(beta_l1, dtype=np.float64)
    return 2.0 * eps * S * (4.0 + q_K + 4.0 * (dim + 4) * gamma * np.asarray(r2max, dtype=np.float64))


# --- NNGP (image specs) ---------------------------------------------------------------------
# ConvNet-NNGP kernel of the reference's image specs (lwengine/kernels/nngp.h, csrc/cpu/nngp-inl.h);
# float64 twin: lwengine._reference.nngp_kernel.
_NNGP_PRECISIONS = {"float32": np.float32, "float64": np.float64}


def _as_images(a, name: str, dtype) -> np.ndarray:
    a = _to_numpy(a, name)
    if a.ndim != 4 or a.shape[1] < 1 or a.shape[2:] != (32, 32):
        raise ValueError(f"{name} must have shape (N, C, 32, 32) with C >= 1, got {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=dtype)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    return a


def nngp_kernel(x, y=None, *, depth: int = 3, precision: str = "float32", device: str = "auto") -> np.ndarray:
    """ConvNet-NNGP kernel matrix (N1, N2) of images x (N1, C, 32, 32) and y (N2, C, 32, 32).

    ``y=None``: the reference's one-object path ``kernel_fn(x)`` (a spec with itself: the diagonal
    is the exact self-kernel); ``y`` given (even the same images): the two-object path.
    ``precision="float32"`` follows the reference's float32 order (entries ~1e-7 relative from the
    reference's); ``"float64"`` is the accurate kernel.  ``depth``: the caller's ``net_depth`` (1..5).
    """
    if precision not in _NNGP_PRECISIONS:
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    if isinstance(depth, bool) or int(depth) != depth or not 1 <= int(depth) <= 5:
        raise ValueError(f"depth must be an integer in 1..5, got {depth!r}")
    depth = int(depth)
    if device not in _DEVICES:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    dtype = _NNGP_PRECISIONS[precision]
    xs = _as_images(x, "x", dtype)
    same = y is None
    ys = xs if same else _as_images(y, "y", dtype)
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"x and y must have the same channel count, got {xs.shape[1]} and {ys.shape[1]}")
    on_gpu = device == "cuda" or (device == "auto" and any(
        hasattr(a, "detach") and getattr(a, "is_cuda", False) for a in (x, y)))
    suffix = "f32" if dtype == np.float32 else "f64"
    out = np.empty((xs.shape[0], ys.shape[0]), dtype=dtype)
    if out.size == 0:
        return out
    if on_gpu:
        cuda = _backend.require_cuda()
        fn = getattr(cuda, "nngp_kernel_host", None)
        if fn is None:
            raise RuntimeError("lwengine's CUDA extension has no NNGP kernel: rebuild the package")
        fn(xs, ys, depth, same, out)
        return out
    core_len = _native("nngp_prep_len")(depth)
    prep = _native("nngp_prep_" + suffix)
    px = np.empty((xs.shape[0], core_len), dtype=dtype)
    sx = np.empty(xs.shape[0], dtype=dtype)
    prep(xs, depth, px, sx)
    if same:
        py_, sy = px, None
        self_diag = sx
    else:
        py_ = np.empty((ys.shape[0], core_len), dtype=dtype)
        sy = np.empty(ys.shape[0], dtype=dtype)
        prep(ys, depth, py_, sy)
        self_diag = None
    _native("nngp_cross_" + suffix)(xs, px, ys, py_, depth, self_diag, out)
    return out


__all__ += ["nngp_kernel"]
