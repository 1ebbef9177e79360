"""1-D N:M masks (keep the n largest of every m consecutive scores) and C(m, n) combination tables."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from nmsolve._jit import kernel, prange
from nmsolve._validate import (
    as_array,
    as_scores,
    check_axis,
    check_group_length,
    check_nm,
    reject_nan,
)
from nmsolve.layout import restore_rows, rows_along

# Groups up to this length use pairwise comparison across a block of groups (m/2 comparisons per
# entry, vectorised over groups); longer groups select the n-th largest value first by quickselect.
_PAIRWISE_MAX_M = 64
_BLOCK_GROUPS = 256

MAX_COMBINATIONS = 1 << 20


# --------------------------------------------------------------------------- kernels


@kernel()
def _kth_largest(buf, length, k):  # type: ignore[no-untyped-def]
    """The k-th largest (1-based) of buf[:length], by in-place quickselect (reorders buf)."""
    lo, hi, target = 0, length - 1, k - 1  # position in descending order
    while lo < hi:
        mid = (lo + hi) // 2
        # median of three as pivot, moved to hi
        if buf[mid] > buf[lo]:
            buf[mid], buf[lo] = buf[lo], buf[mid]
        if buf[hi] > buf[lo]:
            buf[hi], buf[lo] = buf[lo], buf[hi]
        if buf[mid] > buf[hi]:
            buf[mid], buf[hi] = buf[hi], buf[mid]
        pivot = buf[hi]
        store = lo
        for i in range(lo, hi):
            if buf[i] > pivot:
                buf[i], buf[store] = buf[store], buf[i]
                store += 1
        buf[store], buf[hi] = buf[hi], buf[store]
        if store == target:
            return buf[store]
        if store < target:
            lo = store + 1
        else:
            hi = store - 1
    return buf[lo]


@kernel()
def _keep_by_threshold(x, start, stop, keep, buf, out):  # type: ignore[no-untyped-def]
    """Same contract as _keep_by_rank, via the keep-th largest value and an index-ordered tie pass."""
    length = stop - start
    for i in range(length):
        v = x[start + i]
        if v != v:
            return False
        buf[i] = v
    threshold = _kth_largest(buf, length, keep)
    ties_allowed = keep
    for i in range(start, stop):
        ties_allowed -= x[i] > threshold
    for i in range(start, stop):
        v = x[i]
        if v > threshold:
            out[i] = True
        elif v == threshold and ties_allowed > 0:
            out[i] = True
            ties_allowed -= 1
        else:
            out[i] = False
    return True


@kernel()
def _keep_pairwise(xr, n, m, groups, xt, beaten, outr):  # type: ignore[no-untyped-def]
    """N:M mask of the first ``groups`` full groups of row xr; False on NaN.

    Blocks of groups are transposed into xt[j, g] so that every comparison of positions i < j runs
    as one vectorised loop over groups; entry j of group g is beaten by i when x_i > x_j or
    (x_i == x_j and i < j), and it is kept when fewer than n entries beat it.
    """
    block = xt.shape[1]
    for g0 in range(0, groups, block):
        nb = min(block, groups - g0)
        nan_seen = False
        for j in range(m):
            for g in range(nb):
                v = xr[(g0 + g) * m + j]
                xt[j, g] = v
                nan_seen |= v != v
                beaten[j, g] = 0
        if nan_seen:
            return False
        for i in range(m):
            for j in range(i + 1, m):
                for g in range(nb):
                    later_wins = xt[j, g] > xt[i, g]
                    beaten[i, g] += later_wins
                    beaten[j, g] += 1 - later_wins
        for j in range(m):
            for g in range(nb):
                outr[(g0 + g) * m + j] = beaten[j, g] < n
    return True


@kernel(parallel=True)
def _nm_rows(x, n, m, out):  # type: ignore[no-untyped-def]
    """Fill out[r] with the N:M mask of row x[r]; return the first row holding NaN, or -1."""
    rows, length = x.shape
    full = length // m if m <= _PAIRWISE_MAX_M else 0
    nan_in_row = np.zeros(rows, dtype=np.bool_)
    for r in prange(rows):
        xr = x[r]
        outr = out[r]
        ok = True
        if full:
            xt = np.empty((m, _BLOCK_GROUPS), dtype=x.dtype)
            beaten = np.empty((m, _BLOCK_GROUPS), dtype=np.int32)
            ok = _keep_pairwise(xr, n, m, full, xt, beaten, outr)
        buf = np.empty(m, dtype=x.dtype)
        for start in range(full * m, length, m):
            if not ok:
                break
            stop = min(start + m, length)
            ok = _keep_by_threshold(xr, start, stop, min(n, stop - start), buf, outr)
        nan_in_row[r] = not ok
    for r in range(rows):
        if nan_in_row[r]:
            return r
    return -1


# --------------------------------------------------------------------------- public API


def nm_mask(scores: Any, n: int = 2, m: int = 4, *, axis: int = -1, pad: bool = False) -> np.ndarray:
    """Keep the ``n`` largest scores in every group of ``m`` consecutive entries along ``axis``.

    Parameters
    ----------
    scores : array_like, shape (..., L, ...)
        Real scores of any dimension: magnitudes ``np.abs(W)`` (see :func:`magnitude_mask`), a
        saliency, learned scores. float16/32/64 and integer dtypes are accepted and never modified.
    n, m : int
        Keep ``n`` of every ``m`` (``0 < n <= m``).
    axis : int, default -1
        The axis along which groups of ``m`` run (the reduction axis: ``in`` of a Linear weight
        ``[out, in]``; use ``axis=1`` for a conv weight ``[out, in, kh, kw]``).
    pad : bool, default False
        If the length along ``axis`` is not a multiple of ``m``, raise (False) or treat the last,
        shorter group as padded with never-kept entries, keeping ``min(n, len)`` of it (True).

    Returns
    -------
    mask : ndarray of bool, same shape as ``scores``
        True where an entry is kept; exactly ``n`` per full group.

    Raises
    ------
    ValueError
        NaN in ``scores``, ``n``/``m`` out of range, a ragged last group without ``pad``.
    TypeError
        Non-integer ``n``/``m``; bool, complex or object ``scores``.

    Notes
    -----
    Ties break toward the lower index: among equal scores the earlier entry is kept. ``inf`` is
    ordered like any other number. Groups of ``m <= 64`` compare every pair of positions,
    vectorised across groups (``m / 2`` comparisons per entry); longer groups, and a padded last
    group, use quickselect (``O(1)`` expected per entry). Rows are processed in
    parallel; the result does not depend on the number of threads.

    Examples
    --------
    >>> import numpy as np
    >>> nm_mask(np.array([[0.1, -3.0, 2.0, 2.0, 5.0, 0.0, 1.0, 4.0]]), n=2, m=4).astype(int)
    array([[0, 0, 1, 1, 1, 0, 0, 1]])
    """
    n, m = check_nm(n, m)
    x = as_scores(scores)
    axis = check_axis(axis, x.ndim)
    check_group_length(x.shape[axis], m, axis, pad)
    x2, moved_shape = rows_along(x, axis)
    out = np.empty(x2.shape, dtype=np.bool_)
    if out.size:
        if _nm_rows(x2, n, m, out) >= 0:
            reject_nan(x)  # rare path: locate the NaN in the caller's coordinates
    return restore_rows(out, moved_shape, axis)


def magnitude_mask(weights: Any, n: int = 2, m: int = 4, *, axis: int = -1, pad: bool = False) -> np.ndarray:
    """N:M mask that keeps the ``n`` largest-magnitude weights of every ``m``: ``nm_mask(|weights|)``.

    Examples
    --------
    >>> import numpy as np
    >>> magnitude_mask(np.array([1.0, -5.0, 2.0, 0.5]), n=2, m=4).astype(int)
    array([0, 1, 1, 0])
    """
    w = as_scores(weights, "weights")
    return nm_mask(np.abs(w), n, m, axis=axis, pad=pad)


def is_nm(mask: Any, n: int, m: int, *, axis: int = -1, exact: bool = False, pad: bool = False) -> bool:
    """Whether ``mask`` keeps at most ``n`` (``exact=True``: exactly ``n``) of every ``m`` along ``axis``.

    Parameters
    ----------
    mask : array_like
        A boolean mask, or any numeric array where nonzero means kept (e.g. pruned weights).
    n, m : int
        The pattern.
    axis : int, default -1
        Axis along which groups run.
    exact : bool, default False
        Require exactly ``n`` kept per full group (and ``min(n, len)`` in a padded last group).
    pad : bool, default False
        Accept a ragged last group (checked against ``min(n, len)``); otherwise a ragged length
        raises, like :func:`nm_mask`.

    Examples
    --------
    >>> import numpy as np
    >>> is_nm(np.array([1, 0, 0, 1, 0, 0, 0, 1]), 2, 4)
    True
    >>> is_nm(np.array([1, 0, 0, 1, 0, 0, 0, 1]), 2, 4, exact=True)
    False
    """
    n, m = check_nm(n, m)
    arr = as_array(mask, "mask")
    if arr.ndim == 0:
        raise ValueError("mask must have at least 1 dimension, got a 0-d array")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"mask must be boolean or numeric, got dtype {arr.dtype}")
    axis = check_axis(axis, arr.ndim)
    length = arr.shape[axis]
    check_group_length(length, m, axis, pad)
    kept = np.moveaxis(arr != 0, axis, -1)
    full = length - length % m
    counts = kept[..., :full].reshape(*kept.shape[:-1], full // m, m).sum(axis=-1)
    tail = kept[..., full:].sum(axis=-1)
    limit = min(n, length % m)
    if exact:
        return bool((counts == n).all() and (length % m == 0 or (tail == limit).all()))
    return bool((counts <= n).all() and (tail <= limit).all())


@functools.lru_cache(maxsize=64)
def _combination_table(n: int, m: int) -> np.ndarray:
    count = math.comb(m, n)
    if count > MAX_COMBINATIONS:
        raise ValueError(
            f"C({m}, {n}) = {count} combinations is more than {MAX_COMBINATIONS} rows; "
            "combination tables are meant for small groups such as 2:4, 4:8 or 8:16"
        )
    table = np.zeros((count, m), dtype=np.bool_)
    # Rows in itertools.combinations order, built by recursion on the first kept index.
    row = 0

    def fill(first: int, chosen: list[int]) -> None:
        nonlocal row
        if len(chosen) == n:
            table[row, chosen] = True
            row += 1
            return
        for j in range(first, m - (n - len(chosen)) + 1):
            fill(j + 1, [*chosen, j])

    fill(0, [])
    table.setflags(write=False)
    return table


def combinations(n: int, m: int) -> np.ndarray:
    """The ``C(m, n)`` subsets of size ``n`` of a group of ``m``, as a read-only bool table.

    Row ``c`` is the ``c``-th tuple of ``itertools.combinations(range(m), n)`` (lexicographic order).
    Tables are cached; at most ``MAX_COMBINATIONS`` (about a million) rows are built.

    Returns
    -------
    table : ndarray of bool, shape (C(m, n), m), read-only

    Examples
    --------
    >>> combinations(2, 4).astype(int)
    array([[1, 1, 0, 0],
           [1, 0, 1, 0],
           [1, 0, 0, 1],
           [0, 1, 1, 0],
           [0, 1, 0, 1],
           [0, 0, 1, 1]])
    """
    return _combination_table(*check_nm(n, m))


def combination_scores(scores: Any, n: int, m: int, *, axis: int = -1) -> np.ndarray:
    """Sum of the scores of every combination in every group: ``groups @ combinations(n, m).T``.

    Parameters
    ----------
    scores : array_like, shape (..., L, ...) with L a multiple of m along ``axis``

    Returns
    -------
    ndarray of float64, shape (..., L // m, C(m, n))
        ``axis`` moved last and split into groups; entry ``[..., g, c]`` is the total score of
        combination ``c`` in group ``g``.

    Examples
    --------
    >>> import numpy as np
    >>> combination_scores(np.array([4.0, 1.0, 3.0, 2.0]), 2, 4)
    array([[5., 7., 6., 4., 3., 5.]])
    """
    n, m = check_nm(n, m)
    x = as_scores(scores)
    axis = check_axis(axis, x.ndim)
    check_group_length(x.shape[axis], m, axis, pad=False)
    moved = np.moveaxis(x, axis, -1)
    reject_nan(x)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m).astype(np.float64)
    return groups @ combinations(n, m).T.astype(np.float64)


def best_combination(combo_scores: Any) -> np.ndarray:
    """Index of the highest-scoring combination per group (the lowest index among ties).

    ``combo_scores`` has shape ``(..., C)``, e.g. from :func:`combination_scores` or learned LBC
    scores; the result has shape ``(...)``.

    Examples
    --------
    >>> import numpy as np
    >>> best_combination(np.array([[5.0, 7.0, 7.0, 1.0]]))
    array([1])
    """
    cs = as_scores(combo_scores, "combo_scores")
    reject_nan(cs, "combo_scores")
    return np.argmax(cs, axis=-1)


def combination_mask(selection: Any, n: int, m: int, *, axis: int = -1) -> np.ndarray:
    """Mask from chosen combinations: one index per group, or the union of an alive set per group.

    Parameters
    ----------
    selection : array_like
        Either integer combination indices of shape ``(..., G)`` (one per group), or a boolean
        alive set of shape ``(..., G, C(m, n))`` whose union per group is kept (as in LBC).
    n, m : int
    axis : int, default -1
        Where the grouped axis (of length ``G * m``) goes in the result.

    Returns
    -------
    mask : ndarray of bool, shape with ``G * m`` at ``axis``

    Examples
    --------
    >>> import numpy as np
    >>> combination_mask(np.array([0, 5]), 2, 4).astype(int)
    array([1, 1, 0, 0, 0, 0, 1, 1])
    """
    n, m = check_nm(n, m)
    table = combinations(n, m)
    sel = as_array(selection, "selection")
    if sel.dtype.kind == "b":
        if sel.ndim < 2 or sel.shape[-1] != len(table):
            raise ValueError(f"a boolean selection needs shape (..., G, {len(table)}) for C({m}, {n}), got {sel.shape}")
        groups = (sel.astype(np.uint8) @ table.astype(np.uint8)) > 0
    elif sel.dtype.kind in "iu":
        if sel.ndim < 1:
            raise ValueError("an index selection needs shape (..., G), got a 0-d array")
        if sel.size and (sel.min() < 0 or sel.max() >= len(table)):
            raise ValueError(f"combination indices must lie in [0, {len(table)}), got {sel.min()}..{sel.max()}")
        groups = table[sel]
    else:
        raise TypeError(f"selection must hold integer indices or booleans, got dtype {sel.dtype}")
    flat = groups.reshape(*groups.shape[:-2], groups.shape[-2] * m)
    axis = check_axis(axis, flat.ndim)
    return np.ascontiguousarray(np.moveaxis(flat, -1, axis))


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        x = np.arange(32, dtype=dtype).reshape(2, 16)
        nm_mask(x, 2, 4)
        nm_mask(x, 4, 16)
