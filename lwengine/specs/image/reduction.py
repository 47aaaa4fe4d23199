"""The float64 reduction order of torch's CPU ``sum`` (ATen ``cascade_sum``), in numpy.

The reference's image inner product is ``torch.sum(K * outer(beta1, beta2)).item()``: a float64 sum of
K1*K2 products.  Its rounding is fixed by ATen's vectorised cascade (lanes of ``width`` doubles,
4-way instruction-level parallelism, a 4-level cascade of partial sums).  Replaying that order makes
canonical-z dists bit-equal to the reference without importing torch.  ``width`` is the number of
doubles in one ATen vector: 4 (ATen's sum kernel has AVX2 and default builds only, so 4 even on
AVX-512 machines; checked against torch 2.13 for n <= 32768, the single-chunk range of its
parallel reduction).
"""
from __future__ import annotations

import numpy as np

__all__ = ["torch_sum_f64", "TORCH_VEC_WIDTH"]

TORCH_VEC_WIDTH = 4
_ILP = 4
_LEVELS = 4


def _ceil_log2(x: int) -> int:
    return 0 if x <= 1 else int(x - 1).bit_length()


def _multi_row_sum(rows: np.ndarray) -> np.ndarray:
    """ATen multi_row_sum: rows (size, ILP, ...) -> (ILP, ...) partial sums in ATen's cascade order."""
    size = rows.shape[0]
    level_power = max(4, _ceil_log2(size) // _LEVELS)
    level_step = 1 << level_power
    level_mask = level_step - 1
    acc = np.zeros((_LEVELS,) + rows.shape[1:], dtype=np.float64)
    i = 0
    while i + level_step <= size:
        # acc[0] is 0 here (moved up by the cascade), so its running sum over the chunk is numpy's
        # axis-0 reduction, which adds rows one after another (no pairwise blocking on that axis)
        acc[0] = np.add.reduce(rows[i:i + level_step], axis=0)
        i += level_step
        for j in range(1, _LEVELS):
            acc[j] += acc[j - 1]
            acc[j - 1] = 0.0
            if i & (level_mask << (j * level_power)):
                break
    while i < size:
        acc[0] += rows[i]
        i += 1
    for j in range(1, _LEVELS):
        acc[0] += acc[j]
    return acc[0]


def _row_sum(items: np.ndarray) -> np.ndarray:
    """ATen row_sum over items (n, ...) -> (...)."""
    n = items.shape[0]
    size_ilp = n // _ILP
    partial = _multi_row_sum(items[: size_ilp * _ILP].reshape((size_ilp, _ILP) + items.shape[1:]))
    for i in range(size_ilp * _ILP, n):
        partial[0] += items[i]
    for k in range(1, _ILP):
        partial[0] += partial[k]
    return partial[0]


def torch_sum_f64(a, width: int = TORCH_VEC_WIDTH):
    """Sum over the last axis of a float64 array in the order of torch's single-threaded CPU ``sum``.

    ``a`` (..., n) -> float for 1-D input, else an array of the leading shape (each row reduced
    independently, as torch would reduce each flattened tensor).
    """
    a = np.asarray(a, dtype=np.float64)
    lead = a.shape[:-1]
    n = a.shape[-1]
    rows = a.reshape((int(np.prod(lead, dtype=np.int64)), n)).T  # (n, B)
    if n >= width:
        vec_numel = n // width
        vecs = rows[: vec_numel * width].reshape(vec_numel, width, -1)
        vec_acc = _row_sum(vecs)  # (width, B)
        final = np.zeros(rows.shape[1], dtype=np.float64)
        for k in range(vec_numel * width, n):
            final += rows[k]
        for k in range(width):
            final += vec_acc[k]
    elif n:
        final = _row_sum(rows.copy())
    else:
        final = np.zeros(rows.shape[1], dtype=np.float64)
    return float(final[0]) if not lead else final.reshape(lead)
