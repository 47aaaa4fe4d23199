"""CUDA backend of the RKME kernels (reached through :mod:`lwengine.kernels` with ``device="cuda"``).

This module sits below :mod:`lwengine.kernels` and never imports it; it shares its validators
through :mod:`lwengine.validate`.

Two paths, chosen by where the data lives (faiss ``torch_utils`` style):

* numpy arrays (or CPU tensors): validated exactly as :mod:`lwengine.kernels` does (the same
  :mod:`lwengine.validate` rules), copied to device 0, computed, copied back; numpy results.
* torch CUDA tensors (any argument): shapes and dtypes are checked on the tensors without copying
  them to the host (only ``offsets`` travel, to be validated), the kernels run on the tensors'
  device and on torch's current stream, and the results are torch tensors on that device.

Numerics match :mod:`lwengine.kernels`: float64 accumulation of every per-spec sum; a float32
store (or float32 ``x``) computes the pair terms in float32 with the fast ``__expf`` (bulk
screening, see docs/gpu.md); a float64 store computes everything in float64.
Every function raises RuntimeError when the CUDA extension is missing or no device is visible.
"""
from __future__ import annotations

import numpy as np

from . import _backend
from .validate import as_gamma, as_offsets, as_points, as_step_args, as_store, check_same_dim

__all__ = [
    "available",
    "cross_inner",
    "self_inner",
    "gram",
    "zx_moments",
    "kernel_mean",
    "rs_step_from_moments",
    "rs_step",
]


def available() -> bool:
    """True when the CUDA extension is importable and sees at least one device."""
    return _backend.cuda is not None and _backend.cuda_device_count() > 0


# ------------------------------------------------------------------------------ torch helpers
def _is_cuda_tensor(a) -> bool:
    return hasattr(a, "detach") and bool(getattr(a, "is_cuda", False))


def _cuda_device(*arrays):
    """The torch device of the first CUDA tensor among ``arrays`` (None: host path)."""
    for a in arrays:
        if _is_cuda_tensor(a):
            return a.device
    return None


class _Dev:
    """Device context of one call: torch module, device, its index and current stream."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device
        self.index = device.index if device.index is not None else torch.cuda.current_device()
        self.stream = int(torch.cuda.current_stream(self.index).cuda_stream)

    def tensor(self, a, name: str, dtype):
        """``a`` as a contiguous tensor of ``dtype`` on this device (numpy inputs are uploaded)."""
        torch = self.torch
        if not hasattr(a, "detach"):
            a = np.asarray(a)
            if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
                raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
            return torch.as_tensor(np.ascontiguousarray(a), device=self.device).to(dtype).contiguous()
        if a.is_complex() or a.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
        return a.detach().to(device=self.device, dtype=dtype).contiguous()

    def points(self, a, name: str, dtype=None):
        """Mirror of ``validate.as_points`` on a tensor: (n, d), float32 kept, else float64."""
        torch = self.torch
        if dtype is None:
            dtype = torch.float32 if getattr(a, "dtype", None) in (torch.float32, np.float32) else torch.float64
        t = self.tensor(a, name, dtype)
        if t.ndim == 1:
            t = t.reshape(-1, 1)
        elif t.ndim != 2:
            t = t.reshape(t.shape[0], -1)
        return t.contiguous()

    def vector(self, a, name: str, length: int):
        t = self.tensor(a, name, self.torch.float64).reshape(-1)
        if t.shape[0] != length:
            raise ValueError(f"{name} must have length {length}, got {t.shape[0]}")
        return t

    def offsets(self, a, name: str, rows: int):
        """Validated on the host (a small copy), returned on the device with the largest segment."""
        o = as_offsets(a, name, rows)
        max_rows = int(np.diff(o).max()) if o.shape[0] > 1 else 0
        return self.torch.as_tensor(o, device=self.device), max_rows

    def store(self, z, beta, offsets, prefix: str, dtype=None):
        z = self.points(z, f"{prefix}z", dtype)
        beta = self.vector(beta, f"{prefix}beta", z.shape[0])
        offsets, max_rows = self.offsets(offsets, f"{prefix}offsets", z.shape[0])
        return z, beta, offsets, max_rows

    def empty(self, shape):
        return self.torch.empty(shape, dtype=self.torch.float64, device=self.device)

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)


def _dtype_name(a) -> str:
    return str(a.dtype).replace("torch.", "")


# ------------------------------------------------------------------------------ kernels
def cross_inner(q_z, q_beta, q_offsets, z, beta, offsets, gamma):
    """Inner products of query specs with store specs, shape (Q, N), float64 (see kernels.cross_inner)."""
    cuda = _backend.require_cuda()
    dev = _cuda_device(q_z, q_beta, q_offsets, z, beta, offsets)
    g = as_gamma(gamma)
    if dev is None:
        z, beta, offsets = as_store(z, beta, offsets, "")
        q_z, q_beta, q_offsets = as_store(q_z, q_beta, q_offsets, "q_", z.dtype)
        _check_dims(q_z, z)
        shape = (q_offsets.shape[0] - 1, offsets.shape[0] - 1)
        if 0 in shape or z.shape[0] == 0 or q_z.shape[0] == 0:
            return np.zeros(shape, dtype=np.float64)
        return cuda.cross_inner_host(q_z, q_beta, q_offsets, z, beta, offsets, g)
    ctx = _Dev(dev)
    z, beta, offsets, _ = ctx.store(z, beta, offsets, "")
    q_z, q_beta, q_offsets, q_max = ctx.store(q_z, q_beta, q_offsets, "q_", z.dtype)
    _check_dims(q_z, z)
    nq, ns = q_offsets.shape[0] - 1, offsets.shape[0] - 1
    if nq == 0 or ns == 0 or z.shape[0] == 0 or q_z.shape[0] == 0:
        return ctx.zeros((nq, ns))
    out = ctx.empty((nq, ns))
    cuda.cross_inner(_dtype_name(z), q_z.data_ptr(), q_beta.data_ptr(), q_offsets.data_ptr(), q_z.shape[0], nq,
                     q_max, z.data_ptr(), beta.data_ptr(), offsets.data_ptr(), z.shape[0], ns, z.shape[1], g,
                     out.data_ptr(), ctx.index, ctx.stream)
    return out


def _check_dims(q_z, z):
    check_same_dim(q_z, z, "q_z", "z")


def _store_op(name: str, z, beta, offsets, gamma):
    cuda = _backend.require_cuda()
    dev = _cuda_device(z, beta, offsets)
    g = as_gamma(gamma)
    if dev is None:
        z, beta, offsets = as_store(z, beta, offsets, "")
        n = offsets.shape[0] - 1
        if n == 0 or z.shape[0] == 0:
            return np.zeros((n, n) if name == "gram" else n, dtype=np.float64)
        return getattr(cuda, f"{name}_host")(z, beta, offsets, g)
    ctx = _Dev(dev)
    z, beta, offsets, max_rows = ctx.store(z, beta, offsets, "")
    n = offsets.shape[0] - 1
    shape = (n, n) if name == "gram" else (n,)
    if n == 0 or z.shape[0] == 0:
        return ctx.zeros(shape)
    out = ctx.empty(shape)
    getattr(cuda, name)(_dtype_name(z), z.data_ptr(), beta.data_ptr(), offsets.data_ptr(), z.shape[0], n, max_rows,
                        z.shape[1], g, out.data_ptr(), ctx.index, ctx.stream)
    return out


def self_inner(z, beta, offsets, gamma):
    """``<mu_i, mu_i>`` for every spec of a packed store, shape (N,)."""
    return _store_op("self_inner", z, beta, offsets, gamma)


def gram(z, beta, offsets, gamma):
    """Gram matrix ``<mu_i, mu_j>``, shape (N, N), exactly symmetric (upper triangle mirrored)."""
    return _store_op("gram", z, beta, offsets, gamma)


def zx_moments(z, x, gamma, *, with_t: bool = True):
    """``(C, T)``: ``C_i = mean_j k(z_i, x_j)`` (K,), ``T_i = mean_j k(z_i, x_j) x_j`` (K, d)."""
    cuda = _backend.require_cuda()
    dev = _cuda_device(z, x)
    g = as_gamma(gamma)
    if dev is None:
        z = as_points(z, "z", np.float64)
        x = as_points(x, "x")
        _check_moments(z, x)
        if z.shape[0] == 0:
            return np.zeros(0), (np.zeros(z.shape) if with_t else None)
        return cuda.zx_moments_host(z, x, g, bool(with_t))
    ctx = _Dev(dev)
    z = ctx.points(z, "z", ctx.torch.float64)
    x = ctx.points(x, "x")
    _check_moments(z, x)
    K, d = z.shape
    if K == 0:
        return ctx.zeros((0,)), (ctx.zeros((0, d)) if with_t else None)
    C = ctx.empty((K,))
    T = ctx.empty((K, d)) if with_t else None
    cuda.zx_moments(_dtype_name(x), z.data_ptr(), K, x.data_ptr(), x.shape[0], d, g, C.data_ptr(),
                    T.data_ptr() if with_t else 0, ctx.index, ctx.stream)
    return C, T


def _check_moments(z, x):
    if x.shape[0] == 0:
        raise ValueError("x must have at least one row, got 0")
    if z.shape[1] != x.shape[1]:
        raise ValueError(f"z has dimension {z.shape[1]} but x has dimension {x.shape[1]}")


def kernel_mean(z, x, gamma):
    """``C_i = (1/n) sum_j exp(-gamma |z_i - x_j|^2)``, shape (K,)."""
    return zx_moments(z, x, gamma, with_t=False)[0]


def rs_step_from_moments(z, beta, C, T, gamma, step_size, *, exact_gradient: bool = False):
    """One Jacobi Z update from the data moments at ``z`` (float64; see kernels.rs_step_from_moments)."""
    cuda = _backend.require_cuda()
    dev = _cuda_device(z, beta, C, T)
    g = as_gamma(gamma)
    step = float(step_size)
    t1_factor = 2.0 if exact_gradient else 1.0
    if dev is None:
        z, beta, C, T = as_step_args(z, beta, C, T)
        K = z.shape[0]
        if K == 0:
            return np.empty_like(z)
        return cuda.rs_step_from_moments_host(z, beta, C, T, g, step, t1_factor)
    ctx = _Dev(dev)
    z = ctx.points(z, "z", ctx.torch.float64)
    K = z.shape[0]
    beta = ctx.vector(beta, "beta", K)
    C = ctx.vector(C, "C", K)
    T = ctx.points(T, "T", ctx.torch.float64)
    if tuple(T.shape) != tuple(z.shape):
        raise ValueError(f"T must have shape {tuple(z.shape)}, got {tuple(T.shape)}")
    out = ctx.empty(tuple(z.shape))
    if K == 0:
        return out
    cuda.rs_step_from_moments(z.data_ptr(), beta.data_ptr(), C.data_ptr(), T.data_ptr(), K, z.shape[1], g, step,
                              t1_factor, out.data_ptr(), ctx.index, ctx.stream)
    return out


def rs_step(z, beta, x, gamma, step_size, *, exact_gradient: bool = False):
    """One reduced-set Z update against data ``x`` (moments, then the step, both on the device)."""
    C, T = zx_moments(z, x, gamma)
    return rs_step_from_moments(z, beta, C, T, gamma, step_size, exact_gradient=exact_gradient)


def resident(a):
    """``a`` (numpy) as a torch CUDA tensor on the current device, for repeated calls on the same
    data (the fit's ``x``); None when torch is missing (callers then use the host-copy path)."""
    try:
        import torch  # optional: the host path needs no torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.as_tensor(np.ascontiguousarray(a), device="cuda")


def host(a):
    """A result of this module as a numpy array (torch CUDA tensors are copied back)."""
    if a is None or isinstance(a, np.ndarray):
        return a
    return a.detach().cpu().numpy()
