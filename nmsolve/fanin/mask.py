"""Constant fan-in masks: every active output row keeps the same number ``k`` of its inputs.

Constant fan-in (SRigL, Lasby et al. 2024) is N:M sparsity with ``m`` the whole fan-in: every *active*
output row keeps exactly ``k`` inputs, and a row may also be *ablated* (keep nothing). Rows are the
first axis and the fan-in is everything else flattened, as in torch (``weight[out, in]`` or a conv
``weight[out, in, kh, kw]`` with fan-in ``in * kh * kw``). The masks are computed by
:func:`nmsolve.nm_mask`, so this module has no kernels of its own.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nmsolve._validate import as_array, as_scores, check_bool, check_int
from nmsolve.fanin._common import check_fraction, row_counts, rows_view
from nmsolve.nm import nm_mask


def fanin_for_sparsity(fan_in: int, sparsity: float) -> int:
    """The constant fan-in ``k = floor((1 - sparsity) * fan_in)`` (at least 1) for a target sparsity.

    Parameters
    ----------
    fan_in : int
        Inputs per output row (``in`` of a Linear weight, ``in * kh * kw`` of a conv weight).
    sparsity : float
        Fraction of zeros in ``[0, 1)``; 0.5 keeps as many weights as 2:4, 0.75 as 1:4.

    Returns
    -------
    k : int, ``1 <= k <= fan_in``

    Examples
    --------
    >>> fanin_for_sparsity(3072, 0.9), fanin_for_sparsity(64, 0.5), fanin_for_sparsity(8, 0.99)
    (307, 32, 1)
    """
    fan_in = check_int(fan_in, "fan_in", minimum=1)
    sparsity = check_fraction(sparsity, "sparsity", upper_open=True)
    # the small slack keeps floor((1 - 0.9) * 3070) = 307, not 306, despite rounding of 1 - 0.9
    return max(1, min(fan_in, math.floor((1.0 - sparsity) * fan_in + 1e-9)))


def fanin_mask(scores: Any, k: int, *, active: Any = None) -> np.ndarray:
    """Constant fan-in mask: keep the ``k`` largest scores of every (active) output row.

    This is N:M sparsity with ``m`` the whole fan-in, computed by :func:`nmsolve.nm_mask`.

    Parameters
    ----------
    scores : array_like, shape (rows, fan_in) or (rows, *fan_in_dims)
        Real scores, e.g. ``np.abs(W)`` of a Linear weight ``[out, in]``; for a conv weight
        ``[out, in, kh, kw]`` every output channel keeps ``k`` of its ``in * kh * kw`` inputs.
        Never modified.
    k : int
        Inputs kept per active row, ``1 <= k <= fan_in`` (see :func:`fanin_for_sparsity`).
    active : array_like of bool, shape (rows,), optional
        Rows that keep ``k`` inputs; the others are ablated (keep nothing). Default: all rows.

    Returns
    -------
    mask : ndarray of bool, same shape as ``scores``

    Raises
    ------
    ValueError
        NaN in ``scores``, ``k`` out of range, fewer than 2 dimensions, a bad ``active`` shape.
    TypeError
        Non-integer ``k``; bool, complex or object ``scores``.

    Notes
    -----
    Ties break toward the lower (flattened) index within a row; ``inf`` is ordered like any other
    number. ``O(rows * fan_in)`` expected time (quickselect per row), rows in parallel.

    References
    ----------
    M. Lasby, A. Golubeva, U. Evci, M. Nica, Y. Ioannou, "Dynamic Sparse Training with Structured
    Sparsity", ICLR 2024 (SRigL).

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[0.1, -3.0, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, -5.0]])
    >>> fanin_mask(np.abs(w), 2, active=[True, True, False]).astype(int)
    array([[0, 1, 1, 0],
           [1, 1, 0, 0],
           [0, 0, 0, 0]])
    """
    x = as_scores(scores, min_ndim=2)
    x2 = rows_view(x, "scores")
    fan_in = x2.shape[1]
    if fan_in == 0:
        raise ValueError(f"scores has shape {x.shape}: a fan-in of 0 cannot keep k={k} inputs per row")
    k = check_int(k, "k")
    if not 1 <= k <= fan_in:
        raise ValueError(f"k must satisfy 1 <= k <= fan_in, got k={k}, fan_in={fan_in}")
    mask = nm_mask(x2, k, fan_in)
    if active is not None:
        rows_on = as_array(active, "active")
        if rows_on.shape != (x2.shape[0],):
            raise ValueError(f"active must have shape ({x2.shape[0]},) (one flag per row), got {rows_on.shape}")
        if rows_on.dtype.kind != "b":
            raise TypeError(f"active must be boolean (True = row kept), got dtype {rows_on.dtype}")
        mask[~rows_on] = False
    return mask.reshape(x.shape)


def is_constant_fanin(mask: Any, k: int | None = None, *, allow_ablated: bool = True) -> bool:
    """Whether every row keeps exactly ``k`` entries (or, with ``allow_ablated``, none at all).

    Parameters
    ----------
    mask : array_like, shape (rows, fan_in) or (rows, *fan_in_dims)
        A boolean mask, or pruned weights (nonzero = kept).
    k : int, optional
        The required fan-in; by default any common fan-in of the non-empty rows.
    allow_ablated : bool, default True
        Accept rows that keep nothing (SRigL's ablated neurons).

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 0]])
    >>> is_constant_fanin(mask), is_constant_fanin(mask, 2), is_constant_fanin(mask, allow_ablated=False)
    (True, True, False)
    >>> is_constant_fanin(np.array([[1, 1, 0], [1, 0, 0]]))
    False
    """
    allow_ablated = check_bool(allow_ablated, "allow_ablated")
    arr = as_array(mask, "mask")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"mask must be boolean or numeric (nonzero = kept), got dtype {arr.dtype}")
    counts = row_counts(rows_view(arr, "mask") != 0)
    if k is not None:
        k = check_int(k, "k", minimum=0)
    used = counts[counts > 0] if allow_ablated else counts
    if used.size == 0:
        return True
    target = int(used[0]) if k is None else k
    return bool((used == target).all())
