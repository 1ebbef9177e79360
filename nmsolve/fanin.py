"""Constant fan-in masks, the condensed format, and the SRigL / RigL mask update on numpy arrays.

Constant fan-in (SRigL, Lasby et al. 2024) is N:M sparsity with ``m`` the whole fan-in: every *active*
output row keeps exactly ``k`` inputs, and a row may also be *ablated* (keep nothing). Such a matrix
is stored without waste in the **condensed format**: per active row its ``k`` values and their ``k``
column indices, so ``x @ W.T`` becomes a gather and a row-wise dot product
(:class:`CondensedMatrix`, :func:`condense`, :func:`condensed_linear`).

Rows are the first axis and the fan-in is everything else flattened, as in torch
(``weight[out, in]`` or a conv ``weight[out, in, kh, kw]`` with fan-in ``in * kh * kw``).

The mask update of SRigL (:func:`rigl_update`) drops the smallest-magnitude active weights, grows the
inactive ones with the largest dense gradient, keeps the fan-in constant and ablates rows with too
few salient weights; :func:`cosine_drop_fraction` is RigL's schedule of the drop fraction.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._jit import FANIN_PARALLEL_MIN, kernel, prange
from nmsolve._kernels import kth_largest
from nmsolve._validate import as_array, as_scores, check_int, reject_nan
from nmsolve.nm import nm_mask

__all__ = [
    "CondensedMatrix",
    "RigLStep",
    "condense",
    "condensed_linear",
    "cosine_drop_fraction",
    "fanin_for_sparsity",
    "fanin_mask",
    "is_constant_fanin",
    "rigl_update",
]

# --------------------------------------------------------------------------- kernels


@kernel()
def _select_row(x, allowed, want, buf, out):  # type: ignore[no-untyped-def]
    """out marks the ``want`` largest x[j] with allowed[j] (ties: lower j first); all if fewer allowed."""
    count = 0
    for j in range(x.shape[0]):
        out[j] = False
        if allowed[j]:
            buf[count] = x[j]
            count += 1
    if want <= 0 or count == 0:
        return
    if want >= count:
        for j in range(x.shape[0]):
            out[j] = allowed[j]
        return
    threshold = kth_largest(buf, count, want)
    ties_allowed = want
    for j in range(x.shape[0]):
        if allowed[j] and x[j] > threshold:
            ties_allowed -= 1
    for j in range(x.shape[0]):
        if allowed[j]:
            v = x[j]
            if v > threshold:
                out[j] = True
            elif v == threshold and ties_allowed > 0:
                out[j] = True
                ties_allowed -= 1


@kernel(parallel=True)
def _select_rows_parallel(x, allowed, need, out):  # type: ignore[no-untyped-def]
    """Row r of out marks the need[r] largest allowed entries of row r of x (rows in parallel)."""
    for r in prange(x.shape[0]):
        _select_row(x[r], allowed[r], need[r], np.empty(x.shape[1], dtype=x.dtype), out[r])


@kernel()
def _select_rows_serial(x, allowed, need, out):  # type: ignore[no-untyped-def]
    buf = np.empty(x.shape[1], dtype=x.dtype)
    for r in range(x.shape[0]):
        _select_row(x[r], allowed[r], need[r], buf, out[r])


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


@kernel(parallel=True)
def _condensed_vec_parallel(values, indices, x, out):  # type: ignore[no-untyped-def]
    """out[r] = sum_j values[r, j] * x[indices[r, j]] for one input vector (rows in parallel)."""
    for r in prange(values.shape[0]):
        out[r] = _dot_gather(values[r], indices[r], x)


@kernel()
def _condensed_vec_serial(values, indices, x, out):  # type: ignore[no-untyped-def]
    for r in range(values.shape[0]):
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


@kernel(parallel=True)
def _condensed_batch_parallel(values, indices, xt, out):  # type: ignore[no-untyped-def]
    """out[r, b] = sum_j values[r, j] * xt[indices[r, j], b] (rows in parallel)."""
    for r in prange(values.shape[0]):
        _gather_axpy(values[r], indices[r], xt, out[r])


@kernel()
def _condensed_batch_serial(values, indices, xt, out):  # type: ignore[no-untyped-def]
    for r in range(values.shape[0]):
        _gather_axpy(values[r], indices[r], xt, out[r])


# --------------------------------------------------------------------------- helpers


def _rows_view(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as ``(rows, fan_in)``: first axis kept, the rest flattened (a view when contiguous)."""
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (rows, fan_in, ...) with at least 2 dimensions, got a {x.ndim}-d array; "
            "pass a Linear weight [out, in] or a conv weight [out, in, *kernel]"
        )
    fan_in = int(np.prod(x.shape[1:], dtype=np.int64))
    return np.ascontiguousarray(x).reshape(x.shape[0], fan_in)


def _as_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    arr = as_array(mask, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be boolean or numeric (nonzero = kept), got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape} but weights have shape {shape}; they must match")
    if arr.dtype.kind == "f":
        reject_nan(arr, name)
    return arr != 0


def _check_fraction(value: Any, name: str, *, upper_open: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    ok = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {name}={value}")
    return value


def _row_counts(keep: np.ndarray) -> np.ndarray:
    return keep.sum(axis=1, dtype=np.int64)


def _magnitude(x: np.ndarray) -> np.ndarray:
    """``|x|``: floats keep their dtype, integers become float64 first (``|int64 min|`` would overflow)."""
    return np.abs(x) if x.dtype.kind == "f" else np.abs(x.astype(np.float64))


def _select(x: np.ndarray, allowed: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Per row, the ``need[r]`` largest allowed entries of ``x`` (ties: lower index)."""
    out = np.empty(x.shape, dtype=np.bool_)
    if out.size:
        parallel = x.shape[0] > 1 and x.size >= FANIN_PARALLEL_MIN
        (_select_rows_parallel if parallel else _select_rows_serial)(x, allowed, need.astype(np.int64), out)
    return out


def _select_flat(x: np.ndarray, allowed: np.ndarray, need: int) -> np.ndarray:
    """The ``need`` largest allowed entries of the whole array (ties: lower flat index).

    A threshold from ``np.partition`` of the allowed values, then one vectorised tie pass: about
    twice as fast as one quickselect over the whole layer, which cannot run in parallel.
    """
    flat, ok = x.reshape(-1), allowed.reshape(-1)
    if need <= 0:
        return np.zeros(x.shape, dtype=np.bool_)
    values = flat[ok]
    if need >= values.size:
        return allowed.copy()
    threshold = np.partition(values, values.size - need)[values.size - need]
    out = flat > threshold
    out &= ok
    ties = np.flatnonzero((flat == threshold) & ok)
    out[ties[: need - int(np.count_nonzero(out))]] = True
    return out.reshape(x.shape)


# --------------------------------------------------------------------------- masks


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
    sparsity = _check_fraction(sparsity, "sparsity", upper_open=True)
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
    x2 = _rows_view(x, "scores")
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
    arr = as_array(mask, "mask")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"mask must be boolean or numeric (nonzero = kept), got dtype {arr.dtype}")
    counts = _row_counts(_rows_view(arr, "mask") != 0)
    if k is not None:
        k = check_int(k, "k", minimum=0)
    used = counts[counts > 0] if allow_ablated else counts
    if used.size == 0:
        return True
    target = int(used[0]) if k is None else k
    return bool((used == target).all())


# --------------------------------------------------------------------------- condensed format


@dataclass(frozen=True, eq=False)
class CondensedMatrix:
    """A constant fan-in matrix stored as, per active row, its ``k`` values and ``k`` column indices.

    Parameters
    ----------
    values : ndarray of float32 or float64, shape (n_active, k)
        The kept weights of each active row, in increasing column order. float16 is stored as float32.
    indices : ndarray of int32, shape (n_active, k)
        Their columns, strictly increasing within a row, in ``[0, shape[1])``.
    rows : ndarray of int64, shape (n_active,)
        The dense row of each condensed row, strictly increasing; rows not listed are ablated (zero).
    shape : tuple of int
        The dense shape ``(out_features, fan_in)``.

    Notes
    -----
    Memory is ``n_active * k * (itemsize + 4)`` bytes (plus the row list) instead of
    ``out * fan_in * itemsize``: a 90%-sparse float32 layer takes 20% of its dense size. The
    constructor validates everything, so a ``CondensedMatrix`` is always well formed; build one with
    :func:`condense` (or :meth:`from_dense`) rather than by hand.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[0.0, 2.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, -1.0]])
    >>> c = CondensedMatrix.from_dense(w)
    >>> c.k, c.rows.tolist(), c.indices.tolist()
    (2, [0, 2], [[1, 3], [0, 3]])
    >>> bool((c.to_dense() == w).all()), (c @ np.ones(4)).tolist()
    (True, [5.0, 0.0, 0.0])
    """

    values: np.ndarray
    indices: np.ndarray
    rows: np.ndarray
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        if not (isinstance(self.shape, tuple) and len(self.shape) == 2):
            raise ValueError(f"shape must be a tuple (out_features, fan_in), got {self.shape!r}")
        out_features = check_int(self.shape[0], "shape[0]", minimum=0)
        fan_in = check_int(self.shape[1], "shape[1]", minimum=0)
        values = as_array(self.values, "values")
        if values.dtype.kind != "f":
            raise TypeError(f"values must be a floating-point array, got dtype {values.dtype}")
        if values.ndim != 2:
            raise ValueError(f"values must have shape (n_active, k), got shape {values.shape}")
        if values.dtype.itemsize < 4:
            values = values.astype(np.float32)
        elif values.dtype.itemsize > 8:
            values = values.astype(np.float64)
        reject_nan(values, "values")
        indices = as_array(self.indices, "indices")
        rows = as_array(self.rows, "rows")
        if indices.dtype.kind not in "iu" or rows.dtype.kind not in "iu":
            raise TypeError(f"indices and rows must be integer arrays, got dtypes {indices.dtype} and {rows.dtype}")
        if indices.shape != values.shape:
            raise ValueError(f"indices has shape {indices.shape} but values have shape {values.shape}; they must match")
        if rows.shape != (values.shape[0],):
            raise ValueError(f"rows must have shape ({values.shape[0]},) (one per condensed row), got {rows.shape}")
        n_active, k = values.shape
        if k > fan_in:
            raise ValueError(f"k={k} values per row do not fit in fan_in={fan_in}")
        if indices.size and (indices.min() < 0 or indices.max() >= fan_in):
            raise ValueError(f"indices must lie in [0, {fan_in}), got {indices.min()}..{indices.max()}")
        if k > 1 and not (np.diff(indices, axis=1) > 0).all():
            raise ValueError("indices must be strictly increasing within each row (sorted, no duplicates)")
        if n_active and (rows.min() < 0 or rows.max() >= out_features):
            raise ValueError(f"rows must lie in [0, {out_features}), got {rows.min()}..{rows.max()}")
        if n_active > 1 and not (np.diff(rows) > 0).all():
            raise ValueError("rows must be strictly increasing (sorted, no duplicates)")
        object.__setattr__(self, "values", np.ascontiguousarray(values))
        object.__setattr__(self, "indices", np.ascontiguousarray(indices, dtype=np.int32))
        object.__setattr__(self, "rows", np.ascontiguousarray(rows, dtype=np.int64))
        object.__setattr__(self, "shape", (out_features, fan_in))

    @property
    def k(self) -> int:
        """Inputs kept by every active row."""
        return int(self.values.shape[1])

    @property
    def n_active(self) -> int:
        """Number of active (not ablated) rows."""
        return int(self.values.shape[0])

    @property
    def density(self) -> float:
        """Kept fraction of the dense matrix, ``n_active * k / (out * fan_in)``."""
        size = self.shape[0] * self.shape[1]
        return self.values.size / size if size else 0.0

    @property
    def active(self) -> np.ndarray:
        """Boolean flag per dense row: True where the row is active."""
        flags = np.zeros(self.shape[0], dtype=bool)
        flags[self.rows] = True
        return flags

    @classmethod
    def from_dense(cls, weights: Any, mask: Any = None) -> CondensedMatrix:
        """Condense a 2-D weight matrix; see :func:`condense`."""
        return condense(weights, mask)

    def to_dense(self) -> np.ndarray:
        """The dense ``(out_features, fan_in)`` matrix, zeros outside the kept entries."""
        dense = np.zeros(self.shape, dtype=self.values.dtype)
        if self.values.size:
            dense[self.rows[:, None], self.indices] = self.values
        return dense

    def mask(self) -> np.ndarray:
        """The boolean ``(out_features, fan_in)`` mask of kept entries."""
        keep = np.zeros(self.shape, dtype=bool)
        if self.values.size:
            keep[self.rows[:, None], self.indices] = True
        return keep

    def linear(self, x: Any, bias: Any = None) -> np.ndarray:
        """``x @ W.T + bias`` for inputs ``x`` of shape ``(..., fan_in)``; see :func:`condensed_linear`."""
        return condensed_linear(x, self, bias)

    def __matmul__(self, other: Any) -> np.ndarray:
        """``W @ other`` for a vector ``(fan_in,)`` or a matrix ``(fan_in, cols)``."""
        arr = as_array(other, "other")
        if arr.ndim not in (1, 2):
            raise ValueError(f"W @ x needs x of shape (fan_in,) or (fan_in, cols), got {arr.shape}")
        if arr.ndim == 1:
            return condensed_linear(arr, self)
        return condensed_linear(arr.T, self).T


def condense(weights: Any, mask: Any = None) -> CondensedMatrix:
    """Store a constant fan-in weight matrix in the condensed format.

    Parameters
    ----------
    weights : array_like, shape (out_features, fan_in)
        Real weights (float16/32/64; integers become float64). Never modified.
    mask : array_like of bool, shape (out_features, fan_in), optional
        Kept entries (e.g. from :func:`fanin_mask`); every row keeps the same number ``k`` or
        nothing. Default ``weights != 0``, which needs the pruned zeros in place and cannot keep an
        explicit zero weight: pass the mask when it exists.

    Returns
    -------
    CondensedMatrix
        ``values[i]`` and ``indices[i]`` of dense row ``rows[i]``, columns in increasing order.

    Raises
    ------
    ValueError
        Not constant fan-in (the message names two rows that differ), NaN weights, bad shapes.

    Notes
    -----
    ``O(out_features * fan_in)`` time. ``condense(W, mask).to_dense()`` equals ``W * mask``.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[5.0, -1.0, 0.5, 2.0], [0.1, 0.2, 3.0, 0.4]])
    >>> c = condense(w, fanin_mask(np.abs(w), 2))
    >>> c.values.tolist(), c.indices.tolist()
    ([[5.0, 2.0], [3.0, 0.4]], [[0, 3], [2, 3]])
    """
    w = as_array(weights, "weights")
    if w.dtype.kind not in "fiu":
        raise TypeError(f"weights must be a real numeric array, got dtype {w.dtype}")
    if w.ndim != 2:
        raise ValueError(
            f"weights must have shape (out_features, fan_in), got {w.shape}; "
            "reshape a conv weight to (out, in * kh * kw) first"
        )
    if w.dtype.kind != "f":
        w = w.astype(np.float64)
    reject_nan(w, "weights")
    keep = w != 0 if mask is None else _as_mask(mask, w.shape)
    counts = _row_counts(keep)
    active_rows = np.flatnonzero(counts)
    k = int(counts[active_rows[0]]) if active_rows.size else 0
    wrong = active_rows[counts[active_rows] != k]
    if wrong.size:
        source = "weights != 0" if mask is None else "mask"
        raise ValueError(
            f"{source} is not constant fan-in: row {active_rows[0]} keeps {k} entries but row {wrong[0]} keeps "
            f"{counts[wrong[0]]}; build the mask with nmsolve.fanin_mask(np.abs(W), k)"
        )
    cols = np.nonzero(keep[active_rows])[1].reshape(active_rows.size, k)  # row-major: columns ascending
    values = w[active_rows[:, None], cols]
    return CondensedMatrix(values=values, indices=cols, rows=active_rows, shape=(w.shape[0], w.shape[1]))


def _linear_unchecked(
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
            (_condensed_vec_parallel if parallel else _condensed_vec_serial)(values, indices, xs[0], part)
        if not all_rows:
            y[0, rows] = part
        return y
    part_t = np.empty((n_active, batch), dtype=values.dtype)
    if part_t.size:
        kernel_fn = _condensed_batch_parallel if parallel else _condensed_batch_serial
        kernel_fn(values, indices, np.ascontiguousarray(xs.T), part_t)
    if all_rows:
        return np.ascontiguousarray(part_t.T)
    y = np.zeros((batch, out_features), dtype=values.dtype)
    y[:, rows] = part_t.T
    return y


def condensed_linear(x: Any, weight: CondensedMatrix, bias: Any = None) -> np.ndarray:
    """``x @ W.T + bias`` with ``W`` condensed: a gather and a row-wise dot product per active row.

    Parameters
    ----------
    x : array_like, shape (..., fan_in)
        Inputs (a single vector, a batch, or any leading dimensions).
    weight : CondensedMatrix
        ``W`` of dense shape ``(out_features, fan_in)``.
    bias : array_like, shape (out_features,), optional

    Returns
    -------
    y : ndarray, shape (..., out_features)
        In the common floating dtype of ``x`` and the values (float32 stays float32). Ablated rows
        give ``bias`` (or 0).

    Notes
    -----
    ``O(batch * n_active * k)`` multiply-adds instead of ``O(batch * out * fan_in)``. A single
    vector runs one row-wise gather-dot per active row (four partial sums, rows in parallel);
    batches gather whole input columns so that the inner loop runs over the batch. Summation order
    differs from a dense product, so results agree with ``x @ W.to_dense().T`` to rounding. Small
    products (under ``2**16`` multiply-adds) run on one thread, where a parallel launch would cost more
    than the work.

    References
    ----------
    Lasby et al., "Dynamic Sparse Training with Structured Sparsity", ICLR 2024 (condensed
    representation).

    Examples
    --------
    >>> import numpy as np
    >>> c = condense(np.array([[0.0, 2.0, 0.0, 3.0], [1.0, 0.0, 0.0, -1.0]]))
    >>> condensed_linear(np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0]]), c, bias=[0.5, 0.0]).tolist()
    [[5.5, 0.0], [11.5, -3.0]]
    """
    if not isinstance(weight, CondensedMatrix):
        raise TypeError(f"weight must be a CondensedMatrix (see nmsolve.condense), got {type(weight).__name__}")
    arr = as_array(x, "x")
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"x must be a real numeric array, got dtype {arr.dtype}")
    out_features, fan_in = weight.shape
    if arr.ndim == 0 or arr.shape[-1] != fan_in:
        raise ValueError(f"x must have shape (..., {fan_in}) to match W of shape {weight.shape}, got {arr.shape}")
    dtype = np.result_type(arr.dtype, weight.values.dtype)
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)
    values = weight.values if weight.values.dtype == dtype else weight.values.astype(dtype)
    lead = arr.shape[:-1]
    batch = int(np.prod(lead, dtype=np.int64))
    xs = np.ascontiguousarray(arr.reshape(batch, fan_in), dtype=dtype)
    y = _linear_unchecked(values, weight.indices, weight.rows, out_features, xs)
    if bias is not None:
        b = as_array(bias, "bias")
        if b.shape != (out_features,):
            raise ValueError(f"bias must have shape ({out_features},), got {b.shape}")
        y += b.astype(dtype, copy=False)
    return y.reshape(*lead, out_features)


# --------------------------------------------------------------------------- RigL / SRigL update


def cosine_drop_fraction(step: int, *, t_end: int, alpha: float = 0.3) -> float:
    """RigL's cosine-annealed drop fraction ``alpha / 2 * (1 + cos(pi * step / t_end))``, 0 from ``t_end`` on.

    Parameters
    ----------
    step : int
        Training step (``>= 0``).
    t_end : int
        Step at which mask updates stop (RigL and SRigL use 75% of the training steps).
    alpha : float, default 0.3
        Initial drop fraction, in ``[0, 1]``.

    References
    ----------
    U. Evci, T. Gale, J. Menick, P. S. Castro, E. Elsen, "Rigging the Lottery: Making All Tickets
    Winners", ICML 2020.

    Examples
    --------
    >>> cosine_drop_fraction(0, t_end=100), cosine_drop_fraction(50, t_end=100), cosine_drop_fraction(100, t_end=100)
    (0.3, 0.15, 0.0)
    """
    step = check_int(step, "step", minimum=0)
    t_end = check_int(t_end, "t_end", minimum=1)
    alpha = _check_fraction(alpha, "alpha")
    if step >= t_end:
        return 0.0
    return round(alpha / 2.0 * (1.0 + math.cos(math.pi * step / t_end)), 15)


@dataclass(frozen=True, eq=False)
class RigLStep:
    """The outcome of one :func:`rigl_update`.

    Attributes
    ----------
    mask : ndarray of bool, shape of the weights
        The new constant fan-in mask.
    grown : ndarray of bool, shape of the weights
        Entries active now that were not active before: set these weights to zero (RigL's
        initialisation of new connections) and reset their optimiser state.
    active : ndarray of bool, shape (rows,)
        Rows that keep ``k`` inputs; the others are ablated.
    k : int
        The new constant fan-in (``budget // active.sum()``).
    n_dropped : int
        Previously active entries that are no longer active.
    n_grown : int
        ``grown.sum()``.
    saliency : ndarray of int64, shape (rows,)
        Salient weights per row (kept by magnitude or grown by gradient), which decided ablation.
    """

    mask: np.ndarray
    grown: np.ndarray
    active: np.ndarray
    k: int
    n_dropped: int
    n_grown: int
    saliency: np.ndarray


def rigl_update(
    weights: Any,
    grads: Any,
    mask: Any,
    *,
    drop_fraction: float,
    gamma_sal: float = 0.3,
    budget: int | None = None,
) -> RigLStep:
    """One SRigL mask update: drop by magnitude, grow by gradient, constant fan-in, neuron ablation.

    Parameters
    ----------
    weights : array_like, shape (rows, fan_in) or (rows, *fan_in_dims)
        Current weights (values outside ``mask`` are ignored). Never modified.
    grads : array_like, same shape
        The *dense* gradient of the loss with respect to the masked weight ``W * mask`` (not masked
        itself), which ranks the inactive entries for growth.
    mask : array_like of bool, same shape
        The current mask: constant fan-in ``k`` on its active rows, nothing on ablated rows.
    drop_fraction : float
        Fraction of the active weights to drop and regrow, in ``[0, 1]`` (see
        :func:`cosine_drop_fraction`).
    gamma_sal : float, default 0.3
        A row with fewer than ``gamma_sal * k`` salient weights is ablated; 0 disables ablation.
    budget : int, optional
        Number of active weights the layer may hold (default: ``mask.sum()``). Pass the layer's
        original budget on every update, so that ablations do not erode it by rounding.

    Returns
    -------
    RigLStep
        The new mask, the grown entries, active rows, the new ``k`` and counts.

    Raises
    ------
    ValueError
        Mismatched shapes, NaN, a mask that is not constant fan-in or keeps nothing, a budget
        outside ``[1, size]``.

    Notes
    -----
    With ``n`` active weights and ``d = floor(n * drop_fraction)``:

    1. *Saliency.* Keep-set: the ``n - d`` largest ``|w|`` among the active entries (layer-wide).
       Grow-set: the ``d`` largest ``|g|`` among the entries outside the keep-set. A weight in either
       set is salient; ``s_r`` counts them per row.
    2. *Ablation.* Rows with ``s_r < gamma_sal * k`` are ablated, but at least
       ``ceil(budget / fan_in)`` and at most ``budget`` rows stay active (the rows with the most
       salient weights, ties to the lower row). The new fan-in is ``k' = budget // active rows``.
    3. *Drop.* Among the active rows' entries, the ``n - d`` largest ``|w|`` are kept (layer-wide),
       then each row keeps at most its ``k'`` largest.
    4. *Grow.* Each active row is filled up to ``k'`` with the largest ``|g|`` among its entries
       outside the kept set (a just-dropped weight may come back and keeps its value).

    Every selection breaks ties toward the lower (flattened) index. ``O(size)`` expected time
    (quickselect). Ablated rows may come back when their gradients make them salient again, as in
    the published code.

    References
    ----------
    M. Lasby, A. Golubeva, U. Evci, M. Nica, Y. Ioannou, "Dynamic Sparse Training with Structured
    Sparsity", ICLR 2024. U. Evci et al., "Rigging the Lottery", ICML 2020.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.8, 0.7]])
    >>> g = np.array([[0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    >>> step = rigl_update(w, g, w != 0, drop_fraction=0.25)
    >>> step.mask.astype(int), step.k, step.n_grown
    (array([[1, 0, 1, 0],
           [0, 0, 1, 1]]), 2, 1)
    """
    w = as_scores(weights, "weights", min_ndim=2)
    g = as_scores(grads, "grads", min_ndim=2)
    if g.shape != w.shape:
        raise ValueError(f"grads has shape {g.shape} but weights have shape {w.shape}; they must match")
    reject_nan(w, "weights")
    reject_nan(g, "grads")
    keep_old = _rows_view(_as_mask(mask, w.shape), "mask")
    drop_fraction = _check_fraction(drop_fraction, "drop_fraction")
    if isinstance(gamma_sal, (bool, np.bool_)) or not isinstance(gamma_sal, numbers.Real):
        raise TypeError(f"gamma_sal must be a real number, got {gamma_sal!r} of type {type(gamma_sal).__name__}")
    if not gamma_sal >= 0:
        raise ValueError(f"gamma_sal must be >= 0 (0 disables ablation), got gamma_sal={gamma_sal}")
    mag = _magnitude(_rows_view(w, "weights"))
    grow_score = _magnitude(_rows_view(g, "grads"))
    rows, fan_in = keep_old.shape
    counts = _row_counts(keep_old)
    n_ones = int(counts.sum())
    if n_ones == 0:
        raise ValueError("mask keeps nothing; start from a constant fan-in mask, e.g. nmsolve.fanin_mask(scores, k)")
    k_old = int(counts[counts > 0][0])
    if not (counts[counts > 0] == k_old).all():
        bad = int(np.flatnonzero((counts > 0) & (counts != k_old))[0])
        raise ValueError(
            f"mask is not constant fan-in: rows keep {k_old} and {counts[bad]} entries (row {bad}); "
            "build it with nmsolve.fanin_mask"
        )
    budget = n_ones if budget is None else check_int(budget, "budget", minimum=1)
    if budget > rows * fan_in:
        raise ValueError(f"budget must be at most the layer size {rows * fan_in}, got budget={budget}")
    n_drop = math.floor(n_ones * drop_fraction)
    n_keep = n_ones - n_drop

    keep = _select_flat(mag, keep_old, n_keep)
    saliency = _row_counts(keep | _select_flat(grow_score, ~keep, n_drop))

    # rows ranked by (saliency descending, index ascending); the first n_active stay active
    order = np.lexsort((np.arange(rows), -saliency))
    wanted = int((saliency >= gamma_sal * k_old).sum()) if gamma_sal > 0 else rows
    n_active = min(max(wanted, -(-budget // fan_in)), rows, budget)
    active = np.zeros(rows, dtype=bool)
    active[order[:n_active]] = True
    k_new = budget // n_active

    if active[counts > 0].all():  # no active row was ablated: the keep-set stands
        kept = keep
    else:
        allowed = keep_old & active[:, None]
        kept = _select_flat(mag, allowed, min(n_keep, int(allowed.sum())))
    kept_counts = _row_counts(kept)
    if (kept_counts > k_new).any():  # only when revived rows lowered the fan-in
        kept = _select(mag, kept, np.minimum(kept_counts, k_new))
    need = np.where(active, k_new - _row_counts(kept), 0)
    grown_any = _select(grow_score, ~kept & active[:, None], need)
    new_mask = kept | grown_any
    grown = new_mask & ~keep_old
    return RigLStep(
        mask=new_mask.reshape(w.shape),
        grown=grown.reshape(w.shape),
        active=active,
        k=k_new,
        n_dropped=int((keep_old & ~new_mask).sum()),
        n_grown=int(grown.sum()),
        saliency=saliency,
    )


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        w = np.arange(32, dtype=dtype).reshape(4, 8) - 10
        mask = fanin_mask(np.abs(w), 2)
        c = condense(w, mask)
        x = np.ones((8, 2), dtype=dtype)
        for vec, batch in (
            (_condensed_vec_serial, _condensed_batch_serial),
            (_condensed_vec_parallel, _condensed_batch_parallel),
        ):
            vec(c.values, c.indices, x[:, 0].copy(), np.empty(4, dtype=dtype))
            batch(c.values, c.indices, x, np.empty((4, 2), dtype=dtype))
        need = np.full(4, 2, dtype=np.int64)
        for select in (_select_rows_serial, _select_rows_parallel):
            select(np.abs(w), mask, need, np.empty(w.shape, dtype=np.bool_))
    rigl_update(w, w, mask, drop_fraction=0.3)
