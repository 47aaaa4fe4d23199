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

import math

import numpy as np

__all__ = ["torch_sum_f64", "TORCH_VEC_WIDTH"]

TORCH_VEC_WIDTH = 4
_ILP = 4
_LEVELS = 4


def _ceil_log2(x: int) -> int:
    return 0 if x <= 1 else int(x - 1).bit_length()


def _multi_row_sum(rows: np.ndarray) -> np.ndarray:
    """ATen multi_row_sum: rows (size, ILP, ...) -> (ILP, ...) partial sums in ATen's cascade order.

    ATen adds chunks of ``step`` rows into acc[0], moves acc[0] into acc[1] after every chunk and
    acc[j] into acc[j + 1] after every ``step`` moves into acc[j] (the top level keeps everything),
    then adds acc[1..] to the leftover rows' sum in acc[0].  Each of those runs of additions starts
    from 0 and adds its items one after another: numpy's reduce over a non-innermost axis, so every
    level is one reduce here.
    """
    size = rows.shape[0]
    level_power = max(4, _ceil_log2(size) // _LEVELS)
    step = 1 << level_power
    inner = rows.shape[1:]
    n_chunks = size // step
    sums = [np.add.reduce(rows[n_chunks * step:], axis=0, initial=0.0)]  # acc[0]: the leftover rows
    items = np.add.reduce(rows[: n_chunks * step].reshape((n_chunks, step) + inner), axis=1)
    for _ in range(1, _LEVELS - 1):
        groups = items.shape[0] // step
        sums.append(np.add.reduce(items[groups * step:], axis=0, initial=0.0))  # what stays in acc[j]
        items = np.add.reduce(items[: groups * step].reshape((groups, step) + inner), axis=1)
    sums.append(np.add.reduce(items, axis=0, initial=0.0))  # the top level
    return np.add.reduce(np.stack(sums), axis=0)


def _row_sum(items: np.ndarray) -> np.ndarray:
    """ATen row_sum over items (n, ...) -> (...)."""
    n = items.shape[0]
    size_ilp = n // _ILP
    partial = _multi_row_sum(items[: size_ilp * _ILP].reshape((size_ilp, _ILP) + items.shape[1:]))
    # partial[0] + the leftover items + partial[1] + ... + partial[ILP-1], one after another
    return np.add.reduce(np.concatenate((partial[:1], items[size_ilp * _ILP:], partial[1:])), axis=0)


def torch_sum_f64(a, width: int = TORCH_VEC_WIDTH):
    """Sum over the last axis of a float64 array in the order of torch's single-threaded CPU ``sum``.

    ``a`` (..., n) -> float for 1-D input, else an array of the leading shape (each row reduced
    independently, as torch would reduce each flattened tensor).
    """
    a = np.asarray(a, dtype=np.float64)
    lead = a.shape[:-1]
    n = a.shape[-1]
    rows = a.reshape((math.prod(lead), n)).T  # (n, B)
    if n >= width:
        vec_numel = n // width
        vecs = rows[: vec_numel * width].reshape(vec_numel, width, -1)
        vec_acc = _row_sum(vecs)  # (width, B)
        # 0 + the leftover elements + the width lane sums, one after another
        final = np.add.reduce(np.concatenate((rows[vec_numel * width:], vec_acc)), axis=0, initial=0.0)
    elif n:
        final = _row_sum(rows.copy())
    else:
        final = np.zeros(rows.shape[1], dtype=np.float64)
    return float(final[0]) if not lead else final.reshape(lead)
