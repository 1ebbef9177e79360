"""The C(m, n) combinations of a group (seed: Learning Best Combination, LBC): tables, per-group
scores of every combination, the best one, and masks from chosen combinations or alive sets."""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any

import numpy as np

from nmsolve._jit import COMBINATION_PARALLEL_MIN, kernel, prange, threads_for
from nmsolve._validate import as_array, as_scores, check_axis, check_group_length, check_nm, reject_nan

MAX_COMBINATIONS = 1 << 20


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


def _exact_sum(values: np.ndarray) -> float:
    """Correctly rounded float64 sum of finite values (Python fractions: no intermediate overflow)."""
    total = sum((Fraction(float(v)) for v in values), Fraction(0))
    try:
        return float(total)
    except OverflowError:
        return math.inf if total > 0 else -math.inf


@kernel(parallel=True)
def _gather_sums(groups, idx, out):  # type: ignore[no-untyped-def]
    """``out[g, c] = ((groups[g, idx[c, 0]] + groups[g, idx[c, 1]]) + ...)``, left to right."""
    for g in prange(groups.shape[0]):
        for c in range(idx.shape[0]):
            acc = groups[g, idx[c, 0]]
            for j in range(1, idx.shape[1]):
                acc += groups[g, idx[c, j]]
            out[g, c] = acc


def _sums(groups: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``groups[..., idx].sum(-1)`` (finite float64 groups; sums may overflow to inf), bit for bit.

    numpy adds fewer than 8 terms left to right, so below ``n = 8`` a compiled loop in that order
    gives the same floats without forming the ``(..., C, n)`` gather: 4:8 on 1536 x 384 (70
    combinations) took 262 ms that way and 47 ms here, and LBC's training loop calls it twice per
    removal.
    """
    if idx.shape[1] >= 8 or not idx.shape[1]:  # numpy sums pairwise from 8 terms on
        with np.errstate(over="ignore", invalid="ignore"):
            return groups[..., idx].sum(axis=-1)
    flat = np.ascontiguousarray(groups).reshape(-1, groups.shape[-1])
    out = np.empty((flat.shape[0], idx.shape[0]))
    with threads_for(out.size * idx.shape[1], COMBINATION_PARALLEL_MIN):
        _gather_sums(flat, np.ascontiguousarray(idx, dtype=np.int64), out)
    return out.reshape(*groups.shape[:-1], idx.shape[0])


def _extended_sums(groups: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Sums of ``groups[..., idx]`` over the last axis, without ever forming ``0 * inf`` or ``inf - inf``."""
    finite = np.isfinite(groups)
    part_in = groups if finite.all() else np.where(finite, groups, 0.0)
    part = _sums(part_in, idx)
    overflowed = ~np.isfinite(part)
    if overflowed.any():  # rare: finite scores near the float64 limit; redo those sums exactly
        for where in zip(*np.nonzero(overflowed), strict=True):
            part[where] = _exact_sum(part_in[where[:-1]][idx[where[-1]]])
    if finite.all():
        return part
    more = (groups == np.inf).astype(np.int64)[..., idx].sum(axis=-1)
    more -= (groups == -np.inf).astype(np.int64)[..., idx].sum(axis=-1)
    return np.where(more > 0, np.inf, np.where(more < 0, -np.inf, part))


def combination_scores(scores: Any, n: int, m: int, *, axis: int = -1) -> np.ndarray:
    """Sum of the scores of every combination in every group (``groups @ combinations(n, m).T``).

    Parameters
    ----------
    scores : array_like, shape (..., L, ...) with L a multiple of m along ``axis``

    Returns
    -------
    ndarray of float64, shape (..., L // m, C(m, n))
        ``axis`` moved last and split into groups; entry ``[..., g, c]`` is the total score of
        combination ``c`` in group ``g``.

    Notes
    -----
    Sums are gathered, never formed as a product with the 0/1 table, so an infinite score reaches
    only the combinations that keep it (a product would give ``0 * inf = NaN`` everywhere else).
    With infinite scores the sum follows the extended reals, and ``inf - inf`` is resolved the way
    an ordering needs it: a combination keeping more ``+inf`` than ``-inf`` entries sums to ``+inf``,
    fewer to ``-inf``, and as many (the infinities cancel) to the sum of its finite entries. The
    result never holds NaN (NaN scores raise).

    Sums that reach ``+inf`` tie (``inf + a == inf + b``), and :func:`best_combination` takes the
    first of them (ties go to the lower index). So ``best_combination(combination_scores(x))`` keeps
    a ``+inf`` entry in every group where :func:`nmsolve.nm_mask` does (unless a finite sum
    overflows to ``inf``, or every combination of the group sums to ``-inf``), but not necessarily
    the same entries: a group holding two ``+inf`` keeps one of them with its first partner. For
    the full order (every infinity first, then the finite scores) use :func:`nmsolve.nm_mask`, or
    replace ``inf`` by a finite bound first.

    Examples
    --------
    >>> import numpy as np
    >>> combination_scores(np.array([4.0, 1.0, 3.0, 2.0]), 2, 4)
    array([[5., 7., 6., 4., 3., 5.]])
    >>> combination_scores(np.array([np.inf, 1.0, 3.0, 2.0]), 2, 4)
    array([[inf, inf, inf,  4.,  3.,  5.]])
    """
    n, m = check_nm(n, m)
    x = as_scores(scores)
    axis = check_axis(axis, x.ndim)
    check_group_length(x.shape[axis], m, axis, pad=False)
    moved = np.moveaxis(x, axis, -1)
    reject_nan(x)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m).astype(np.float64)
    idx = np.nonzero(combinations(n, m))[1].reshape(-1, n)  # kept positions of each combination
    return _extended_sums(groups, idx)


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
    if cs.shape[-1] == 0:
        raise ValueError(f"combo_scores has shape {cs.shape}: its last axis holds no combination to choose")
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
    combination_scores(np.arange(8.0), 2, 4)
