"""float64 (and reference-order float32) numpy twin of the ConvNet NNGP kernel (cnn_gp's ``_build_ConvNet_NNGP``): the test oracle behind ``lwengine._reference.nngp_kernel``.

Layers for ``depth`` d: d x [Conv(3, pad 1, var_w=sqrt 2, var_b=0.1), ReLU, Conv(2, stride 2)], then
Conv(32 / 2^d, pad 0) to a 1x1 map.  On (xy, xx, yy) maps per pixel:

* Conv(k, v_w, v_b): zero-padded k x k window sum of ``w * a`` with ``w = float32(v_w / k^2)``, + v_b;
* ReLU: ``t = xx*yy + tiny``; ``cos = clamp(xy / sqrt t, -1, 1)``; ``sin = sqrt(max(t - xy^2, 0))``;
  ``xy = (sin + (pi - acos cos) * xy) / 2pi``; ``xx /= 2``; ``yy /= 2``.  On the one-object path
  (``kernel(x)``, a spec with itself) the diagonal of xy is forced to xx after every ReLU.

``dtype=float32`` follows the reference's float32 operation order (entries ~1 ulp from torch's off the
diagonal; the two-object diagonal goes through a float32 acos, whose error is reproduced in size
only); ``float64`` is the accurate kernel.  Work is chunked over pairs so memory stays bounded.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["nngp_kernel", "IMAGE_WIDTH", "F32_TINY"]

IMAGE_WIDTH = 32
F32_TINY = float(np.finfo(np.float32).tiny)
_PAIR_CHUNK = 2048


def _layers(depth: int):
    """(kind, k, stride, pad, v_w, v_b) of the reference's module for ``depth``."""
    out = []
    for _ in range(depth):
        out.append(("conv", 3, 1, 1, math.sqrt(2.0), 0.1))
        out.append(("relu",))
        out.append(("conv", 2, 2, 0, 1.0, 0.0))
    out.append(("conv", IMAGE_WIDTH // 2 ** depth, 1, 0, 1.0, 0.0))
    return out


def _conv(a: np.ndarray, k: int, stride: int, pad: int, v_w: float, v_b: float) -> np.ndarray:
    """a (M, H, W) -> (M, H', W'): window sum of w*a, + v_b.

    ``w`` is float32(v_w / k^2) in both precisions: the reference's weight is a float32 buffer,
    widened when its module is cast to float64.
    """
    dt = a.dtype
    w = dt.type(np.float32(v_w / k ** 2))
    if pad:
        a = np.pad(a, ((0, 0), (pad, pad), (pad, pad)))
    M, H, W = a.shape
    Ho = (H - k) // stride + 1
    Wo = (W - k) // stride + 1
    out = np.zeros((M, Ho, Wo), dtype=dt)
    for di in range(k):
        for dj in range(k):
            out += w * a[:, di:di + stride * (Ho - 1) + 1:stride, dj:dj + stride * (Wo - 1) + 1:stride]
    if v_b:
        out += dt.type(v_b)
    return out


def _relu(xy, xx, yy, same_diag):
    """xy (n1, n2, H, W), xx (n1, 1, H, W), yy (1, n2, H, W) -> new maps."""
    dt = xy.dtype
    t = xx * yy + dt.type(F32_TINY)
    cos = np.clip(xy * (dt.type(1) / np.sqrt(t)), -1, 1).astype(dt, copy=False)
    sin = np.sqrt(np.maximum(t - xy * xy, dt.type(0)))
    theta = np.arccos(cos)
    new = (sin + (dt.type(math.pi) - theta) * xy) / dt.type(2 * math.pi)
    xx2 = xx / dt.type(2)
    yy2 = yy / dt.type(2)
    if same_diag is not None:  # one-object path: rows i and columns i with i in same_diag coincide
        r, c = same_diag
        new[r, c] = xx2[r, 0]
    return new, xx2, yy2


def _block(x, y, depth, same_diag):
    n1, n2 = x.shape[0], y.shape[0]
    xy = np.mean(x[:, None] * y[None, :], axis=2, dtype=x.dtype)  # (n1, n2, H, W)
    xx = np.mean(x * x, axis=1, dtype=x.dtype)[:, None]  # (n1, 1, H, W)
    yy = np.mean(y * y, axis=1, dtype=y.dtype)[None, :]
    for layer in _layers(depth):
        if layer[0] == "conv":
            _, k, s, p, vw, vb = layer
            H = xy.shape[-1]
            xy = _conv(xy.reshape(n1 * n2, H, H), k, s, p, vw, vb)
            H2 = xy.shape[-1]
            xy = xy.reshape(n1, n2, H2, H2)
            xx = _conv(xx.reshape(n1, H, H), k, s, p, vw, vb).reshape(n1, 1, H2, H2)
            yy = _conv(yy.reshape(n2, H, H), k, s, p, vw, vb).reshape(1, n2, H2, H2)
        else:
            xy, xx, yy = _relu(xy, xx, yy, same_diag)
    return xy.reshape(n1, n2)


def _check_images(a, name, dtype):
    a = np.asarray(a)
    if a.ndim != 4 or a.shape[2:] != (IMAGE_WIDTH, IMAGE_WIDTH):
        raise ValueError(f"{name} must have shape (N, C, 32, 32), got {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=dtype)


def nngp_kernel(x, y=None, *, depth: int = 3, dtype=np.float32) -> np.ndarray:
    """ConvNet-NNGP kernel matrix (N1, N2) of images x (N1, C, 32, 32) and y (N2, C, 32, 32).

    ``y=None`` is the reference's one-object path ``kernel_fn(x)`` (a spec with itself: the ReLU
    diagonal is forced to xx); ``y`` given (even equal to x) is the two-object path.
    ``depth`` in 1..5 is the ``net_depth`` of the calling spec.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    depth = int(depth)
    if not 1 <= depth <= 5:
        raise ValueError(f"depth must be in 1..5 (32 / 2^depth >= 1), got {depth}")
    x = _check_images(x, "x", dtype)
    same = y is None
    y = x if same else _check_images(y, "y", dtype)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same channel count, got {x.shape[1]} and {y.shape[1]}")
    n1, n2 = x.shape[0], y.shape[0]
    out = np.empty((n1, n2), dtype=dtype)
    if n1 == 0 or n2 == 0:
        return out
    step = max(1, _PAIR_CHUNK // max(n2, 1))
    cols = max(1, min(n2, _PAIR_CHUNK))
    for i0 in range(0, n1, step):
        i1 = min(n1, i0 + step)
        for j0 in range(0, n2, cols):
            j1 = min(n2, j0 + cols)
            diag = None
            if same:
                idx = np.arange(max(i0, j0), min(i1, j1))
                if idx.size:
                    diag = (idx - i0, idx - j0)
            out[i0:i1, j0:j1] = _block(x[i0:i1], y[j0:j1], depth, diag)
    return out
