"""The compiled condensed product ``x @ W.T``: its kernels and :func:`linear_unchecked`, which
:func:`nmsolve.condensed_linear` and the torch ``CondensedLinear`` (zero-copy views) both call.

Package-private: import :func:`linear_unchecked` from here, not from the public modules.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from nmsolve._jit import FANIN_PARALLEL_MIN, kernel, prange, specialise

# --------------------------------------------------------------------------- kernels


@kernel()
def _dot_gather(values, indices, x):  # type: ignore[no-untyped-def]
    """sum_j values[j] * x[indices[j]] with four independent partial sums (the loads, not the adds, limit)."""
    k = values.shape[0]
    a0 = x.dtype.type(0)
    a1 = a0
    a2 = a0
    a3 = a0
    j = 0
    while j + 4 <= k:
        a0 += values[j] * x[indices[j]]
        a1 += values[j + 1] * x[indices[j + 1]]
        a2 += values[j + 2] * x[indices[j + 2]]
        a3 += values[j + 3] * x[indices[j + 3]]
        j += 4
    while j < k:
        a0 += values[j] * x[indices[j]]
        j += 1
    return (a0 + a1) + (a2 + a3)


def _condensed_vec(values, indices, x, out):  # type: ignore[no-untyped-def]
    """out[r] = sum_j values[r, j] * x[indices[r, j]] for one input vector.

    The source of two kernels (vec_kernel): rows in parallel, and serial for small products.
    """
    for r in prange(values.shape[0]):
        out[r] = _dot_gather(values[r], indices[r], x)


@kernel()
def _gather_axpy(values, indices, xt, acc):  # type: ignore[no-untyped-def]
    """acc[b] = sum_j values[j] * xt[indices[j], b]; the inner loop runs over the batch (vectorised)."""
    acc[:] = 0
    for j in range(values.shape[0]):
        v = values[j]
        src = xt[indices[j]]
        for b in range(acc.shape[0]):
            acc[b] += v * src[b]


def _condensed_batch(values, indices, xt, out):  # type: ignore[no-untyped-def]
    """out[r, b] = sum_j values[r, j] * xt[indices[r, j], b].

    The source of two kernels (batch_kernel): rows in parallel, and serial for small products.
    """
    for r in prange(values.shape[0]):
        _gather_axpy(values[r], indices[r], xt, out[r])


# Products under FANIN_PARALLEL_MIN run a serial kernel compiled from the same source as the parallel
# one, not the parallel kernel under threads_for: at batch 1 a 256 -> 64 layer at 90% sparsity took
# 2.3 us serial and 4.6 us parallel under threads_for (64 -> 16: 0.8 and 3.7 us), most of it the
# switch of numba's thread count; on the 3072 -> 768 layer on one thread both took 121 us.


@functools.cache
def vec_kernel(parallel: bool) -> Any:
    """The kernel of one input vector: rows in parallel, or serial (one source, two compiled names)."""
    name = "_condensed_vec_parallel" if parallel else "_condensed_vec_serial"
    return specialise(_condensed_vec, name, parallel=parallel)


@functools.cache
def batch_kernel(parallel: bool) -> Any:
    """The kernel of a batch (inputs transposed): rows in parallel, or serial (one source, two names)."""
    name = "_condensed_batch_parallel" if parallel else "_condensed_batch_serial"
    return specialise(_condensed_batch, name, parallel=parallel)


def linear_unchecked(
    values: np.ndarray, indices: np.ndarray, rows: np.ndarray, out_features: int, xs: np.ndarray
) -> np.ndarray:
    """``xs @ W.T`` of shape ``(batch, out_features)`` for C-contiguous ``xs`` of ``values``' dtype (no checks).

    Shared by :func:`condensed_linear` and the torch ``CondensedLinear`` (which passes zero-copy views).
    """
    batch = xs.shape[0]
    n_active = values.shape[0]
    all_rows = n_active == out_features
    parallel = n_active > 1 and values.size * batch >= FANIN_PARALLEL_MIN
    if batch == 1:
        y = np.zeros((1, out_features), dtype=values.dtype)
        part = y[0] if all_rows else np.empty(n_active, dtype=values.dtype)
        if n_active:
            vec_kernel(parallel)(values, indices, xs[0], part)
        if not all_rows:
            y[0, rows] = part
        return y
    part_t = np.empty((n_active, batch), dtype=values.dtype)
    if part_t.size:
        batch_kernel(parallel)(values, indices, np.ascontiguousarray(xs.T), part_t)
    if all_rows:
        return np.ascontiguousarray(part_t.T)
    y = np.zeros((batch, out_features), dtype=values.dtype)
    y[:, rows] = part_t.T
    return y


def _warmup() -> None:
    indices = np.array([[0, 3], [1, 2], [4, 7], [5, 6]], dtype=np.int32)
    for dtype in (np.float32, np.float64):
        values = np.arange(8, dtype=dtype).reshape(4, 2) - 3
        x = np.ones((8, 2), dtype=dtype)
        for parallel in (False, True):
            vec_kernel(parallel)(values, indices, x[:, 0].copy(), np.empty(4, dtype=dtype))
            batch_kernel(parallel)(values, indices, x, np.empty((4, 2), dtype=dtype))
