"""Stateless RKME kernels: the one door into the native modules (``_core``, ``_cuda``).

Every function here validates its arguments once (:mod:`lwengine.validate`) and forwards them to
a backend; each has a float64 numpy twin of the same signature in :mod:`lwengine._reference`
(tests only: production code never imports the twins).

Data arguments come first, options are keyword-only.  Packed stores are CSR-like:
``z`` (M, d) float32 or float64, ``beta`` (M,) float64, ``offsets`` (N + 1,) int64 with
``offsets[0] == 0``, non-decreasing, ``offsets[-1] == M``.  Accumulation is always float64;
float32 ``z`` is the bulk-screening path (see docs/kernels.md for its error bound).

Routing (:func:`last_route` tells which one ran in the calling thread):

* ``device="cpu"`` runs ``_core`` (torch tensors are copied to the host); ``"cuda"`` runs ``_cuda``
  (numpy in and out through device copies; RuntimeError on a build without CUDA or with no
  visible GPU); ``"auto"`` runs ``_cuda`` when a data argument is a torch CUDA tensor, else
  ``_core``.  Callers that own a whole loop (the spec fit, :class:`FitKernels`) resolve "auto"
  with :func:`default_device` instead: CUDA when the build and a GPU are present.
* ``backend="native"`` is the C++/CUDA code above; ``"triton"`` sends the validated numpy arrays
  to :mod:`lwengine.triton_kernels` (RuntimeError "triton backend unavailable: ..." when it is
  missing or cannot run); ``"auto"`` is native unless :func:`choose_backend` says Triton is
  faster for the shape on a GPU.
"""
from __future__ import annotations

import contextlib
import importlib
import threading

import numpy as np

from . import _backend, cuda_backend
from .validate import (
    as_backend,
    as_device,
    as_gamma,
    as_indices,
    as_offsets,
    as_points,
    as_qp,
    as_step_args,
    as_store,
    as_vector,
    check_same_dim,
    to_numpy,
)

__all__ = [
    "cross_inner",
    "self_inner",
    "gram",
    "kernel_mean",
    "zx_moments",
    "point_gram",
    "rs_step",
    "rs_step_from_moments",
    "rs_step_from_gram",
    "simplex_qp",
    "simplex_qp_batch",
    "kmeans",
    "kmeans_init",
    "kmeanspp_indices",
    "cross_inner_f32_bound",
    "cross_inner_f32_bound_cuda",
    "FitKernels",
    "default_device",
    "resolve_device",
    "choose_backend",
    "triton_status",
    "last_route",
    "backend_scope",
    "check_packed_store",
    "spec_balls",
    "ball_bound",
    "projection_bound",
    "bound_groups",
    "float_array",
    "gather_specs",
    "single_threaded_here",
    "call_team",
    "fit_objective",
    "nngp_kernel",
]

# ------------------------------------------------------------------------------ routing
_route = threading.local()


def last_route() -> dict | None:
    """``{"op", "device", "backend"}`` of the last kernel call made by this thread (None before any)."""
    r = getattr(_route, "value", None)
    return dict(r) if r is not None else None


def _record(op: str, device: str, backend: str = "native") -> None:
    _route.value = {"op": op, "device": device, "backend": backend}
    routes = getattr(_scope, "routes", None)
    if routes is not None:  # inside backend_scope: every op's route of the block
        routes[op] = f"{device}/{backend}"


def _is_cuda_tensor(a) -> bool:
    return hasattr(a, "detach") and bool(getattr(a, "is_cuda", False))


def default_device() -> str:
    """"cuda" when the CUDA extension is built and sees a GPU, else "cpu" (what "auto" means for a loop)."""
    return "cuda" if cuda_backend.available() else "cpu"


def resolve_device(device: str = "auto", data=(), *, backend: str = "native") -> str:
    """``"cpu"`` or ``"cuda"`` for one call (see the module docstring); RuntimeError when
    ``"cuda"`` is asked for and the native CUDA backend cannot run (for ``backend="triton"`` the
    Triton module's own ``available()`` decides instead)."""
    as_device(device)
    backend = _scoped(backend)
    if device == "cpu":
        return "cpu"
    if device == "auto" and not any(_is_cuda_tensor(a) for a in data):
        return "cpu"
    if backend != "triton":
        _backend.require_cuda()
    return "cuda"


# Shapes on which the Triton kernels beat the native ones, per op, as measured on a GPU by
# benchmarks/gpu_check.py: op -> predicate(shape dict) (see docs/gpu.md).  Empty until a GPU run
# records numbers, so "auto" stays native.
TRITON_FASTER: dict = {}


def _triton_module():
    try:
        return importlib.import_module(f"{__package__}.triton_kernels")  # optional: imports triton
    except ImportError as exc:
        raise RuntimeError(f"triton backend unavailable: {type(exc).__name__}: {exc}") from exc


def triton_status() -> tuple:
    """``(available, reason)`` of the Triton backend, never raising."""
    try:
        mod = _triton_module()
    except RuntimeError as exc:
        return False, str(exc).removeprefix("triton backend unavailable: ")
    try:
        ok, why = mod.available()
    except Exception as exc:  # noqa: BLE001 - a broken optional backend is reported, not raised
        return False, f"{type(exc).__name__}: {exc}"
    return bool(ok), str(why)


def choose_backend(op: str, device: str, shape: dict | None = None) -> str:
    """The backend "auto" picks for ``op`` on ``device`` ("cpu"/"cuda"): "triton" only on a GPU
    where :data:`TRITON_FASTER` says so for the shape and Triton can run, else "native"."""
    rule = TRITON_FASTER.get(op)
    if device != "cuda" or rule is None or not rule(shape or {}):
        return "native"
    return "triton" if triton_status()[0] else "native"


def _triton(op: str, device: str):
    mod = _triton_module()
    ok, why = mod.available()
    if not ok:
        raise RuntimeError(f"triton backend unavailable: {why}")
    _record(op, device, "triton")
    return getattr(mod, op)


_scope = threading.local()


@contextlib.contextmanager
def backend_scope(backend: str):
    """Within the block, this thread's kernel calls made with ``backend="auto"`` use ``backend``
    ("auto" | "native" | "triton"): how :class:`~lwengine.SpecIndex`, its search and ``topk`` route a
    whole pipeline without a keyword on every layer.  An explicit ``backend=`` on a call still wins.
    Yields a dict that collects ``{op: "device/backend"}`` of every kernel call made in the block (ops
    without a Triton kernel, e.g. the QPs, stay native)."""
    as_backend(backend)
    previous = getattr(_scope, "backend", "auto"), getattr(_scope, "routes", None)
    _scope.backend, _scope.routes = backend, {}
    try:
        yield _scope.routes
    finally:
        if previous[1] is not None:  # a nested scope's calls belong to the outer block too
            previous[1].update(_scope.routes)
        _scope.backend, _scope.routes = previous


def _scoped(backend: str) -> str:
    as_backend(backend)
    return getattr(_scope, "backend", "auto") if backend == "auto" else backend


def _pick_backend(op: str, backend: str, device: str, shape: dict) -> str:
    backend = _scoped(backend)
    return choose_backend(op, device, shape) if backend == "auto" else backend


def _native_cuda_direct(op: str, backend: str, device: str) -> bool:
    """True when the call goes to the native CUDA backend without looking at shapes (so torch
    CUDA tensors stay on the device)."""
    backend = _scoped(backend)
    return device == "cuda" and (backend == "native" or (backend == "auto" and op not in TRITON_FASTER))


def _native(name: str):
    """The _core function ``name``; RuntimeError when the installed extension lacks it."""
    fn = getattr(_backend.require_core(), name, None)
    if fn is None:
        raise RuntimeError(f"lwengine's CPU extension _core has no function {name!r}: rebuild the package")
    return fn


@contextlib.contextmanager
def call_team():
    """Within the block, the native CPU kernels this thread calls share one second thread that stays
    awake between the calls (pause, then yield) instead of waking a passive OpenMP thread for each
    one (~70 us a call on a shared VM).  A no-op where the team is unavailable: another thread or a
    fit holds it, one thread is allowed, or two threads do not add throughput here.  Nestable
    (the inner block does nothing)."""
    began = bool(_backend.core is not None and _native("call_team_begin")())
    try:
        yield began
    finally:
        if began:
            _native("call_team_end")()


def single_threaded_here() -> None:
    """Native CPU kernels called from this thread run on one OpenMP thread from now on (the
    setting is per thread): for worker threads that parallelise over data sets themselves."""
    _native("set_num_threads")(1)


# ------------------------------------------------------------------------------ kernels
def _store_checked(z, beta, offsets, q=None):
    """Validated ``(z, beta, offsets)`` and, when ``q`` = (q_z, q_beta, q_offsets), the query cast
    to the store's dtype."""
    z, beta, offsets = as_store(z, beta, offsets, "")
    if q is None:
        return z, beta, offsets
    q_z, q_beta, q_offsets = as_store(*q, "q_", z.dtype)
    check_same_dim(q_z, z, "q_z", "z")
    return (q_z, q_beta, q_offsets), (z, beta, offsets)


def cross_inner(q_z, q_beta, q_offsets, z, beta, offsets, gamma, *, specs=None, device: str = "auto",
                backend: str = "auto"):
    """Inner products of query specs with store specs, shape (Q, N), float64.

    ``out[q, i] = sum_a sum_b q_beta_a beta_b exp(-gamma |q_z_a - z_b|^2)``.  The query is cast to
    the store's dtype (float32 store: bulk screening; float64 store: reference fidelity).
    ``specs``: store spec indices; column i is then spec ``specs[i]`` (N = len(specs)), read in
    place on the CPU (the other routes gather those specs' rows first).
    """
    dev = resolve_device(device, (q_z, q_beta, z, beta), backend=backend)
    g = as_gamma(gamma)
    if specs is not None:
        n_store = int(np.shape(offsets)[0]) - 1
        specs = as_indices(specs, "specs", max(n_store, 0))
        if dev != "cpu" or backend not in ("auto", "native"):
            z, beta, offsets = gather_specs(z, beta, offsets, specs)
            specs = None
    if _native_cuda_direct("cross_inner", backend, dev):
        _record("cross_inner", "cuda")
        return cuda_backend.cross_inner(q_z, q_beta, q_offsets, z, beta, offsets, g)
    q, s = _store_checked(z, beta, offsets, (q_z, q_beta, q_offsets))
    out_shape = (q[2].shape[0] - 1, s[2].shape[0] - 1)
    shape = {"Q": out_shape[0], "N": out_shape[1], "rows": s[0].shape[0], "d": s[0].shape[1], "dtype": str(s[0].dtype)}
    if _pick_backend("cross_inner", backend, dev, shape) == "triton":
        if specs is not None:
            s = gather_specs(*s, specs)
        return _triton("cross_inner", dev)(*q, *s, g, device=dev)
    if dev == "cuda":
        _record("cross_inner", "cuda")
        return cuda_backend.cross_inner(*q, *s, g)
    _record("cross_inner", "cpu")
    if specs is not None:
        out_shape = (out_shape[0], specs.shape[0])
    out = np.zeros(out_shape, dtype=np.float64)
    if out.size and s[0].shape[0] and q[0].shape[0]:
        _native("cross_inner")(*q, *s, g, out, specs)
    return out


def gather_specs(z, beta, offsets, specs):
    """The packed sub-store ``(z, beta, offsets)`` of the store specs ``specs`` (int64 indices, in that
    order; rows copied, offsets from 0)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    specs = np.asarray(specs, dtype=np.int64)
    starts = offsets[specs]
    lens = offsets[specs + 1] - starts
    offs = np.zeros(len(specs) + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    rows = np.repeat(starts - offs[:-1], lens) + np.arange(offs[-1], dtype=np.int64)
    return np.ascontiguousarray(np.asarray(z)[rows]), np.ascontiguousarray(np.asarray(beta)[rows]), offs


def _store_op(op: str, z, beta, offsets, gamma, device, backend):
    dev = resolve_device(device, (z, beta), backend=backend)
    g = as_gamma(gamma)
    if _native_cuda_direct(op, backend, dev):
        _record(op, "cuda")
        return getattr(cuda_backend, op)(z, beta, offsets, g)
    z, beta, offsets = _store_checked(z, beta, offsets)
    n = offsets.shape[0] - 1
    shape = {"N": n, "rows": z.shape[0], "d": z.shape[1], "dtype": str(z.dtype)}
    if _pick_backend(op, backend, dev, shape) == "triton":
        return _triton(op, dev)(z, beta, offsets, g, device=dev)
    if dev == "cuda":
        _record(op, "cuda")
        return getattr(cuda_backend, op)(z, beta, offsets, g)
    _record(op, "cpu")
    out = np.zeros((n, n) if op == "gram" else n, dtype=np.float64)
    if n and z.shape[0]:
        _native(op)(z, beta, offsets, g, out)
    return out


def self_inner(z, beta, offsets, gamma, *, device: str = "auto", backend: str = "auto"):
    """``<mu_i, mu_i>`` for every spec of a packed store, shape (N,)."""
    return _store_op("self_inner", z, beta, offsets, gamma, device, backend)


def gram(z, beta, offsets, gamma, *, device: str = "auto", backend: str = "auto"):
    """Gram matrix ``<mu_i, mu_j>`` of the specs of one packed set, shape (N, N), symmetric."""
    return _store_op("gram", z, beta, offsets, gamma, device, backend)


def _moments_checked(z, x):
    z = as_points(z, "z", np.float64)
    x = as_points(x, "x")
    if x.shape[0] == 0:
        raise ValueError("x must have at least one row, got 0")
    if z.shape[1] != x.shape[1]:
        raise ValueError(f"z has dimension {z.shape[1]} but x has dimension {x.shape[1]}")
    return z, x


def _moments_cpu(z, x, g, with_t):
    C = np.zeros(z.shape[0], dtype=np.float64)
    T = np.zeros(z.shape, dtype=np.float64) if with_t else None
    _native("zx_moments")(z, x, g, C, T)
    return C, T


def zx_moments(z, x, gamma, *, with_t: bool = True, device: str = "auto", backend: str = "auto"):
    """``(C, T)``: ``C_i = mean_j k(z_i, x_j)`` (K,) and ``T_i = mean_j k(z_i, x_j) x_j`` (K, d).

    Streams over ``x`` (float32 or float64, n up to 1e7) in tiles; never materializes K x n.
    ``with_t=False`` skips T (returned as None).
    """
    dev = resolve_device(device, (z, x), backend=backend)
    g = as_gamma(gamma)
    if _native_cuda_direct("zx_moments", backend, dev):
        _record("zx_moments", "cuda")
        return cuda_backend.zx_moments(z, x, g, with_t=with_t)
    z, x = _moments_checked(z, x)
    shape = {"K": z.shape[0], "n": x.shape[0], "d": x.shape[1], "dtype": str(x.dtype)}
    if _pick_backend("zx_moments", backend, dev, shape) == "triton":
        return _triton("zx_moments", dev)(z, x, g, with_t=bool(with_t), device=dev)
    if dev == "cuda":
        _record("zx_moments", "cuda")
        return cuda_backend.zx_moments(z, x, g, with_t=with_t)
    _record("zx_moments", "cpu")
    return _moments_cpu(z, x, g, with_t)


def kernel_mean(z, x, gamma, *, device: str = "auto", backend: str = "auto"):
    """``C_i = (1/n) sum_j exp(-gamma |z_i - x_j|^2)``, shape (K,)."""
    return zx_moments(z, x, gamma, with_t=False, device=device, backend=backend)[0]


def _point_gram_cpu(z, g):
    G = np.empty((z.shape[0], z.shape[0]), dtype=np.float64)
    if z.shape[0]:
        _native("point_gram")(z, g, G)
    return G


def spec_balls(z, offsets):
    """Covering balls of a packed store's specs: ``(centers (N, d), radii (N,))``, the row mean and a
    radius >= the largest distance of a row from it (rigorous in float64; CPU)."""
    z = as_points(z, "z")
    offsets = as_offsets(offsets, "offsets", z.shape[0])
    n = offsets.shape[0] - 1
    centers, radii = np.zeros((n, z.shape[1])), np.zeros(n)
    if n:
        _record("spec_balls", "cpu")
        _native("spec_balls")(z, offsets, centers, radii)
    return centers, radii


def ball_bound(q_z, q_w, q_offsets, centers, radii, gamma):
    """(Q, N): ``sum_a q_w_a exp(-gamma max(0, |a - c_i| - r_i)^2)`` over the points a of query q, an
    upper bound (rigorous in float64) on ``sum_a q_w_a max_b k(a, z_b)`` for any points z_b of the
    ball (c_i, r_i); ``q_w >= 0``.  With ``q_w = |q_beta|`` and ``sum_b |beta_b|`` of spec i it
    bounds ``|<query q, spec i>|`` (the search's far-spec pruning; CPU)."""
    q_z = as_points(q_z, "q_z", np.float64)
    centers = as_points(centers, "centers", np.float64)
    q_w = as_vector(q_w, "q_w", q_z.shape[0])
    radii = as_vector(radii, "radii", centers.shape[0])
    q_offsets = as_offsets(q_offsets, "q_offsets", q_z.shape[0])
    out = np.zeros((q_offsets.shape[0] - 1, centers.shape[0]))
    if out.size:
        _record("ball_bound", "cpu")
        _native("ball_bound")(q_z, q_w, q_offsets, centers, radii, as_gamma(gamma), out)
    return out


MAX_BOUND_GROUPS = 8  # csrc/cpu/ops.h kMaxBoundGroups


def bound_groups(q_z, k: int = MAX_BOUND_GROUPS):
    """``(labels (K,) int64, centers (g, d))``: the query's points in at most ``k`` groups for
    :func:`projection_bound` -- farthest-point seeds (the first the point farthest from the mean),
    each point to its nearest seed, each group's centre its mean.  Deterministic; any grouping gives
    a valid bound, compact groups a tight one."""
    q_z = as_points(q_z, "q_z", np.float64)
    n = q_z.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((1, q_z.shape[1]))
    k = max(1, min(int(k), MAX_BOUND_GROUPS, n))
    norms = np.einsum("ij,ij->i", q_z, q_z)
    seeds = [int(np.argmax(((q_z - q_z.mean(0)) ** 2).sum(1)))]
    dist = norms + norms[seeds[0]] - 2.0 * (q_z @ q_z[seeds[0]])  # to the nearest seed
    while len(seeds) < k and dist.max() > 0:
        seeds.append(int(np.argmax(dist)))
        dist = np.minimum(dist, norms + norms[seeds[-1]] - 2.0 * (q_z @ q_z[seeds[-1]]))
    labels = np.argmin(norms[seeds][None, :] - 2.0 * (q_z @ q_z[seeds].T), axis=1)
    counts = np.bincount(labels, minlength=len(seeds))
    if not counts.all():  # a seed that lost its own point (rounding): renumber the groups
        labels = np.cumsum(counts > 0)[labels] - 1
        counts = counts[counts > 0]
    centers = (labels[None, :] == np.arange(len(counts))[:, None]) @ q_z / counts[:, None]
    return labels.astype(np.int64), np.ascontiguousarray(centers)


def projection_bound(q_z, q_w, q_group, group_centers, z, offsets, specs, centers, radii, gamma):
    """(M,) for the store specs ``specs`` (rows ``z``, either precision, ``offsets``; covering balls
    ``centers``, ``radii`` of the float64 rows): ``sum_a q_w_a exp(-gamma g_a^2)``, an upper bound
    (rigorous for the float64 rows, also when ``z`` is their float32 copy) on ``sum_a q_w_a max_b
    k(a, z_b)``.  ``g_a``: the larger of :func:`ball_bound`'s gap and the distance of a's projection
    from the interval of the rows' projections onto the direction from the spec's centre to the
    centre of a's group (``q_group``, ``group_centers`` from :func:`bound_groups`).  One query; CPU."""
    q_z = as_points(q_z, "q_z", np.float64)
    z = as_points(z, "z")
    q_w = as_vector(q_w, "q_w", q_z.shape[0])
    q_group = as_indices(q_group, "q_group", max(len(group_centers), 1))
    group_centers = as_points(group_centers, "group_centers", np.float64)
    offsets = as_offsets(offsets, "offsets", z.shape[0])
    centers = as_points(centers, "centers", np.float64)
    radii = as_vector(radii, "radii", centers.shape[0])
    specs = as_indices(specs, "specs", centers.shape[0])
    out = np.zeros(specs.shape[0])
    if out.size:
        _record("projection_bound", "cpu")
        _native("projection_bound")(q_z, q_w, q_group, group_centers, z, offsets, specs, centers, radii,
                                    as_gamma(gamma), out)
    return out


def float_array(obj):
    """A decoded JSON value as a float64 array when it is a list of numbers or a list of equal-length
    lists of numbers (exact ``float`` / ``int`` objects only), else None (the caller then takes
    ``numpy.array``, whose result it matches value for value on the lists it accepts)."""
    return _native("float_array")(obj)


def point_gram(z, gamma):
    """``G_ij = exp(-gamma ((|z_i|^2 + |z_j|^2) - 2 z_i.z_j))`` over the rows of ``z``, (K, K) float64.

    Exactly symmetric, and bit-identical points give bit-identical rows (the QP merges those).
    CPU only (K x K is small next to the data passes; see docs/kernels.md).
    """
    z = as_points(z, "z", np.float64)
    g = as_gamma(gamma)
    _record("point_gram", "cpu")
    return _point_gram_cpu(z, g)


def _step_factor(exact_gradient) -> float:
    return 2.0 if exact_gradient else 1.0


def _as_step(step_size) -> float:
    try:
        step = float(step_size)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"step_size must be a real number, got {type(step_size).__name__}") from exc
    if not np.isfinite(step):
        raise ValueError(f"step_size must be finite, got {step_size!r}")
    return step


def rs_step_from_moments(z, beta, C, T, gamma, step_size, *, exact_gradient: bool = False, device: str = "auto"):
    """One Jacobi Z update from the data moments at ``z`` (see :func:`zx_moments`)."""
    dev = resolve_device(device, (z, beta, C, T))
    g, step = as_gamma(gamma), _as_step(step_size)
    _record("rs_step_from_moments", dev)
    if dev == "cuda":
        return cuda_backend.rs_step_from_moments(z, beta, C, T, g, step, exact_gradient=exact_gradient)
    z, beta, C, T = as_step_args(z, beta, C, T)
    out = np.empty_like(z)
    _native("rs_step_from_moments")(z, beta, C, T, g, step, _step_factor(exact_gradient), out)
    return out


def _as_gram_of(G, K):
    G = as_points(G, "G", np.float64)
    if G.shape != (K, K):
        raise ValueError(f"G must have shape ({K}, {K}) (point_gram of z), got {G.shape}")
    return G


def rs_step_from_gram(z, beta, C, T, G, gamma, step_size, *, exact_gradient: bool = False, device: str = "auto"):
    """:func:`rs_step_from_moments` given ``G = point_gram(z, gamma)`` (the beta update's matrix),
    which saves recomputing the K x K kernel values.  On CUDA the step recomputes them on the device
    (same formula, lwengine/kernels/rs_step.h), so ``G`` is only checked there."""
    dev = resolve_device(device, (z, beta, C, T, G))
    g, step = as_gamma(gamma), _as_step(step_size)
    z, beta, C, T = as_step_args(z, beta, C, T)
    G = _as_gram_of(G, z.shape[0])
    _record("rs_step_from_gram", dev)
    if dev == "cuda":
        return cuda_backend.rs_step_from_moments(z, beta, C, T, g, step, exact_gradient=exact_gradient)
    out = np.empty_like(z)
    _native("rs_step_from_gram")(z, beta, C, T, G, g, step, _step_factor(exact_gradient), out)
    return out


def rs_step(z, beta, x, gamma, step_size, *, exact_gradient: bool = False, device: str = "auto"):
    """One reduced-set Z update against data ``x``: the reference's factor (semantics 1.8) by
    default, the exact MMD^2 gradient with ``exact_gradient=True``."""
    C, T = zx_moments(z, x, gamma, device=device)
    return rs_step_from_moments(z, beta, C, T, gamma, step_size, exact_gradient=exact_gradient, device=device)


def fit_objective(G, C, beta) -> float:
    """The fit's objective ``beta'G beta - 2 beta'C`` (its MMD^2 to the data minus the data's own
    term), one native formula for every fit path."""
    C = np.ascontiguousarray(C, dtype=np.float64)
    G = np.ascontiguousarray(G, dtype=np.float64)
    beta = np.ascontiguousarray(beta, dtype=np.float64)
    return float(_native("fit_objective")(G, C, beta))


def _as_x0(x0, n):
    x0 = as_vector(x0, "x0", n)
    if not np.isfinite(x0).all():
        raise ValueError("x0 must be finite")
    if (x0 < 0).any() or not x0.sum() > 0:
        raise ValueError("x0 must be nonnegative with a positive sum")
    return x0


def simplex_qp(G, c, *, x0=None):
    """Exact ``argmin 1/2 x'Gx - c'x  s.t. x >= 0, sum x = 1`` -> ``(x, obj)``.

    Bit-identical rows (duplicate points) share their weight equally, as the reference's
    interior-point solver does; G may be singular.  ``x0`` (n,), optional: a warm start (finite,
    >= 0, positive sum; it is normalised) whose support is the first active-set face, e.g. the
    previous solution of a slightly changed problem.  It changes the path, not the answer, when
    G is positive semidefinite (the minimum is then global; with a singular G another minimiser of
    the same objective may be returned); with an indefinite G the result is a KKT point reached
    from x0.  CPU only.
    """
    G, c = as_qp(G, c)
    if x0 is not None:
        x0 = _as_x0(x0, c.shape[0])
    _record("simplex_qp", "cpu")
    x = np.zeros_like(c)
    obj = _native("simplex_qp")(G, c, x, x0)
    return x, float(obj)


def simplex_qp_batch(Gs, cs):
    """:func:`simplex_qp` for a batch of equal-sized problems: ``Gs`` (B, n, n), ``cs`` (B, n)."""
    Gs = np.ascontiguousarray(to_numpy(Gs, "Gs"), dtype=np.float64)
    cs = np.ascontiguousarray(to_numpy(cs, "cs"), dtype=np.float64)
    if cs.ndim != 2 or Gs.shape != (cs.shape[0], cs.shape[1], cs.shape[1]):
        raise ValueError(f"Gs must have shape (B, n, n) and cs (B, n), got {Gs.shape} and {cs.shape}")
    if not (np.isfinite(Gs).all() and np.isfinite(cs).all()):
        raise ValueError("Gs and cs must be finite")
    _record("simplex_qp_batch", "cpu")
    xs = np.zeros_like(cs)
    objs = np.zeros(cs.shape[0], dtype=np.float64)
    if cs.shape[0]:
        _native("simplex_qp_batch")(Gs, cs, xs, objs)
    return xs, objs


def kmeanspp_indices(x, k, seed=None) -> np.ndarray:
    """k-means++ (D^2) seeding: ``k`` row indices of ``x`` drawn with ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    xd = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n = xd.shape[0]
    idx = [int(rng.integers(0, n))]
    d2 = ((xd - xd[idx[0]]) ** 2).sum(1)
    for _ in range(1, int(k)):
        tot = d2.sum()
        j = int(rng.integers(0, n)) if tot <= 0 else int(rng.choice(n, p=d2 / tot))
        idx.append(j)
        d2 = np.minimum(d2, ((xd - xd[j]) ** 2).sum(1))
    return np.array(idx, dtype=np.int64)


def kmeans_init(x, k, *, seed=None, init: str = "random", init_idx=None) -> np.ndarray:
    """The initial centroids of :func:`kmeans`: a float32 C-contiguous copy of ``k`` rows of ``x``
    (``init`` / ``init_idx`` as there)."""
    return _kmeans_start(x, k, seed, init, init_idx)[1]


def _kmeans_start(x, k, seed, init, init_idx):
    """``(x, c0)``: the validated float32 data and its initial centroids (:func:`kmeans_init`)."""
    x = as_points(x, "x", np.float32)
    n = x.shape[0]
    k = int(k)
    if n == 0:
        raise ValueError("x must have at least one row, got 0")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if init_idx is not None:
        idx = np.asarray(init_idx, dtype=np.int64).reshape(-1)
        if idx.shape[0] != k or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"init_idx must hold {k} row indices in [0, {n}), got {idx.shape[0]} values")
    elif init == "random":
        idx = np.random.default_rng(seed).integers(0, n, size=k)
    elif init == "k-means++":
        idx = kmeanspp_indices(x, k, seed)
    else:
        raise ValueError(f"init must be 'random' or 'k-means++', got {init!r}")
    return x, np.ascontiguousarray(x[idx])


def kmeans(x, k, *, max_iter: int = 100, tol: float = 1e-4, seed=None, init: str = "random", init_idx=None):
    """Lloyd's k-means (float32) with the reference's rules -> ``(centroids (k, d) float32, iterations)``.

    init ``"random"``: k rows drawn uniformly with replacement (``numpy.random.default_rng(seed)``);
    ``"k-means++"``: :func:`kmeanspp_indices`; ``init_idx`` overrides both.  Assignment: argmax of
    ``2 x.c - |x|^2 - |c|^2`` (ties to the lowest index); an empty cluster's centroid becomes zero;
    stop after the iteration whose summed squared centroid movement is ``<= tol``.  CPU only.
    """
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    x, c = _kmeans_start(x, k, seed, init, init_idx)
    _record("kmeans", "cpu")
    it = _native("kmeans")(x, c, int(max_iter), float(tol))
    return c, int(it)


# ------------------------------------------------------------------------------ the fit's kernels
class FitKernels:
    """The kernels of one spec fit on one data set, validated once (the validated-once path).

    ``FitKernels(x, gamma, device="auto")`` checks ``x`` (n, d) (kept float32 or cast to float64,
    C-contiguous) and ``gamma`` once and resolves the device once ("auto": :func:`default_device`).
    Its methods take the fit's own float64 Z, beta, C, T (checked cheaply: shapes and dtype, no
    copies) and run on that device; on CUDA, ``x`` is uploaded once when torch is installed (else
    every moments call copies it in).  Calls with no CUDA twin (point Gram, QP) run on the CPU.
    """

    def __init__(self, x, gamma, *, device: str = "auto"):
        as_device(device)
        self.gamma = as_gamma(gamma)
        self.x = as_points(x, "x")
        if self.x.shape[0] == 0:
            raise ValueError("x must have at least one row, got 0")
        self.device = default_device() if device == "auto" else resolve_device(device)
        self._x_dev = cuda_backend.resident(self.x) if self.device == "cuda" else None

    def _z(self, z):
        if (type(z) is np.ndarray and z.dtype == np.float64 and z.ndim == 2 and z.flags.c_contiguous
                and z.shape[1] == self.x.shape[1]):
            return z  # the fit's own array: already what the kernels take
        z = as_points(z, "z", np.float64)
        if z.shape[1] != self.x.shape[1]:
            raise ValueError(f"z has dimension {z.shape[1]} but x has dimension {self.x.shape[1]}")
        return z

    @staticmethod
    def _own(a, shape) -> bool:
        """True for a float64 C-contiguous numpy array of ``shape`` (the fit's own C, T, G, beta)."""
        return type(a) is np.ndarray and a.dtype == np.float64 and a.shape == shape and a.flags.c_contiguous

    def moments(self, z, with_t: bool = True):
        """``(C, T)`` of ``z`` against the data (see :func:`zx_moments`), numpy float64."""
        z = self._z(z)
        _record("zx_moments", self.device)
        if self.device == "cuda":
            x = self._x_dev if self._x_dev is not None else self.x
            C, T = cuda_backend.zx_moments(z, x, self.gamma, with_t=with_t)
            return cuda_backend.host(C), cuda_backend.host(T)
        return _moments_cpu(z, self.x, self.gamma, with_t)

    def point_gram(self, z):
        """:func:`point_gram` of ``z`` (CPU)."""
        _record("point_gram", "cpu")
        return _point_gram_cpu(self._z(z), self.gamma)

    def beta_qp(self, G, C, warm=None):
        """The nonnegative beta update: :func:`simplex_qp` of ``(G, C)`` warm-started at ``warm``.

        The fit's own arrays skip the generic conversions; the checks that can fail on them
        (finite G and C, a valid warm start) always run."""
        K = C.shape[0] if isinstance(C, np.ndarray) and C.ndim == 1 else -1
        if K < 1 or not (self._own(C, (K,)) and self._own(G, (K, K))
                         and (warm is None or self._own(warm, (K,)))):
            return simplex_qp(G, C, x0=warm)[0]
        if not (np.isfinite(G).all() and np.isfinite(C).all()):
            raise ValueError("G and c must be finite")
        if warm is not None:
            warm = _as_x0(warm, K)
        _record("simplex_qp", "cpu")
        x = np.zeros(K)
        _native("simplex_qp")(G, C, x, warm)
        return x

    def fit_reference(self, z, steps: int, step_size, *, kmeans_c=None, max_iter: int = 100, tol: float = 1e-4):
        """The reference fit in one native call (CPU): with ``kmeans_c`` (:func:`kmeans_init`'s
        centroids; ``x`` float32) first :func:`kmeans` from them and ``z`` = its centroids (float64),
        else ``z`` as given; then one beta update and ``steps`` x (Z step, beta update) -- exactly
        the calls of :func:`kmeans`, :meth:`moments`, :meth:`point_gram`, :meth:`beta_qp` and
        :meth:`step_from_gram` in RKMESpec.fit's loop (the same bits).  Returns ``(z, beta,
        objectives, status, kmeans_iterations)``: status 0, or 1 / 2 where G or C turned non-finite
        at the first / a later beta update."""
        if self.device != "cpu":
            raise ValueError(f"fit_reference runs on the CPU, this FitKernels is on {self.device!r}")
        if kmeans_c is None:
            z = np.array(self._z(z), dtype=np.float64, order="C", copy=True)
        else:
            z = np.empty((len(kmeans_c), self.x.shape[1]))
            _record("kmeans", "cpu")
        steps = int(steps)
        beta = np.zeros(z.shape[0])
        objectives = np.zeros(steps + 1)
        _record("fit_reference", "cpu")
        status, iters = _native("fit_reference")(self.x, z, self.gamma, steps, _as_step(step_size), beta, objectives,
                                                 kmeans_c, int(max_iter), float(tol))
        return z, beta, objectives, int(status), int(iters)

    def step_from_gram(self, z, beta, C, T, G, step_size):
        """The reference's Z step (:func:`rs_step_from_gram`) on this device."""
        K = z.shape[0] if isinstance(z, np.ndarray) and z.ndim == 2 else -1
        if (self.device != "cpu" or K < 1 or not (self._own(z, (K, self.x.shape[1])) and self._own(beta, (K,))
                                                   and self._own(C, (K,)) and self._own(T, z.shape)
                                                   and self._own(G, (K, K)))):
            return rs_step_from_gram(z, beta, C, T, G, self.gamma, step_size, device=self.device)
        _record("rs_step_from_gram", "cpu")
        out = np.empty_like(z)
        _native("rs_step_from_gram")(z, beta, C, T, G, self.gamma, _as_step(step_size), 1.0, out)
        return out

    def step_from_moments(self, z, beta, C, T, step_size, *, exact_gradient: bool = False):
        """:func:`rs_step_from_moments` on this device (numpy result)."""
        out = rs_step_from_moments(z, beta, C, T, self.gamma, step_size, exact_gradient=exact_gradient,
                                   device=self.device)
        return cuda_backend.host(out)


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


def check_packed_store(z, beta, offsets, gamma):
    """Validated ``(beta, offsets, gamma)`` of a packed store with rows ``z`` (M, d), by the rules of
    every kernel entry point (for callers that validate once and call the kernels many times)."""
    z = np.asarray(z)
    return as_vector(beta, "beta", z.shape[0]), as_offsets(offsets, "offsets", z.shape[0]), as_gamma(gamma)


# --- NNGP (image specs) ---------------------------------------------------------------------
# ConvNet-NNGP kernel of the reference's image specs (lwengine/kernels/nngp.h, csrc/cpu/nngp-inl.h);
# float64 twin: lwengine._reference.nngp_kernel.
_NNGP_PRECISIONS = {"float32": np.float32, "float64": np.float64}


def _as_images(a, name: str, dtype) -> np.ndarray:
    a = to_numpy(a, name)
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
    as_device(device)
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


def mt19937_skip(bitgen, n: int, *, gauss_pairs: bool = False) -> None:
    """Advance a numpy ``MT19937`` bit generator in place by ``n`` output words, or (``gauss_pairs``)
    by ``n`` accepted attempts of numpy's legacy polar Gaussian (2n Gaussians, nothing cached);
    bit-exact with drawing them (csrc/cpu/nngp_rng.cpp)."""
    if not isinstance(bitgen, np.random.MT19937):
        raise TypeError(f"bitgen must be a numpy.random.MT19937, got {type(bitgen).__name__}")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    st = bitgen.state
    key = np.array(st["state"]["key"], dtype=np.uint32)
    name = "mt19937_skip_gauss_pairs" if gauss_pairs else "mt19937_skip_words"
    pos = _native(name)(key, int(st["state"]["pos"]), n)
    st["state"] = {"key": key, "pos": pos}
    bitgen.state = st


__all__ += ["nngp_kernel", "mt19937_skip"]
