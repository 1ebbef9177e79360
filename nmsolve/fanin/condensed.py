"""The condensed format of a constant fan-in matrix, and its product with inputs.

Per active row the ``k`` kept values and their ``k`` column indices (:class:`CondensedMatrix`,
:func:`condense`), so ``x @ W.T`` becomes a gather and a row-wise dot product
(:func:`condensed_linear`, compiled in :mod:`nmsolve.fanin._product`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._validate import as_array, check_int, exact_float64, reject_nan
from nmsolve.fanin._common import as_mask, row_counts
from nmsolve.fanin._product import linear_unchecked


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
            values = exact_float64(values, "values")
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
    >>> from nmsolve import fanin_mask
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
    keep = w != 0 if mask is None else as_mask(mask, w.shape)
    counts = row_counts(keep)
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
    arr = exact_float64(arr, "x")  # the compiled product has no longdouble
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
    y = linear_unchecked(values, weight.indices, weight.rows, out_features, xs)
    if bias is not None:
        b = as_array(bias, "bias")
        if b.shape != (out_features,):
            raise ValueError(f"bias must have shape ({out_features},), got {b.shape}")
        y += b.astype(dtype, copy=False)
    return y.reshape(*lead, out_features)
