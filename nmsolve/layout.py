"""Translation between N-D arrays and the 2-D ``(rows, cols)`` view every solver works on.

This is the only module that knows about layouts. Two views are offered:

* :func:`rows_along` moves any axis to the end and flattens the rest, so groups of ``m`` run along
  the rows of a 2-D array; :func:`restore_rows` is its inverse. ``nm_mask(x, axis=k)`` uses it.
* :func:`weight_to_2d` maps a weight tensor to the 2-D matrix that 2-D solvers (transposable,
  permutations) expect, with groups along *input channels*: a Linear weight ``[out, in]`` is used as
  is, a conv weight ``[out, in, *kernel]`` becomes the channel-last view ``[out * prod(kernel), in]``
  that sparse tensor cores and most published code use. :func:`weight_from_2d` maps back, and
  :func:`apply_2d` runs a 2-D solver on any weight tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._validate import as_array, check_axis


def rows_along(x: np.ndarray, axis: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Return ``(x2, moved_shape)``: ``x`` with ``axis`` moved last, as a C-contiguous 2-D array.

    No copy is made when ``axis`` is already last and ``x`` is C-contiguous.
    """
    axis = check_axis(axis, x.ndim)
    moved = np.moveaxis(x, axis, -1)
    length = moved.shape[-1]
    rows = int(np.prod(moved.shape[:-1], dtype=np.int64))
    return np.ascontiguousarray(moved.reshape(rows, length)), moved.shape


def restore_rows(x2: np.ndarray, moved_shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Inverse of :func:`rows_along`: reshape to ``moved_shape`` and move the last axis back to ``axis``."""
    return np.ascontiguousarray(np.moveaxis(x2.reshape(moved_shape), -1, axis))


@dataclass(frozen=True)
class WeightLayout:
    """How :func:`weight_to_2d` reshaped a weight tensor; pass it back to :func:`weight_from_2d`."""

    shape: tuple[int, ...]

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """Shape of the 2-D view: ``(out * prod(kernel), in)``."""
        out, inp = self.shape[0], self.shape[1]
        return out * int(np.prod(self.shape[2:], dtype=np.int64)), inp


def weight_to_2d(weight: Any) -> tuple[np.ndarray, WeightLayout]:
    """View a weight tensor as a 2-D matrix whose rows group along input channels.

    Parameters
    ----------
    weight : array_like, shape (out, in) or (out, in, *kernel)
        A Linear weight or a conv weight (1-D, 2-D or 3-D kernels).

    Returns
    -------
    matrix : ndarray, shape (out * prod(kernel), in)
        The channel-last view (a copy for conv weights, the input itself for 2-D ones).
    layout : WeightLayout
        What :func:`weight_from_2d` needs to map a result back.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.arange(2 * 4 * 3 * 3).reshape(2, 4, 3, 3)
    >>> mat, layout = weight_to_2d(w)
    >>> mat.shape
    (18, 4)
    >>> bool((weight_from_2d(mat, layout) == w).all())
    True
    """
    w = as_array(weight, "weight")
    if w.ndim < 2:
        raise ValueError(
            f"weight must have shape (out, in) or (out, in, *kernel), got a {w.ndim}-d array; "
            "reshape 1-d parameters to 2-d (or leave biases dense)"
        )
    layout = WeightLayout(tuple(int(s) for s in w.shape))
    if w.ndim == 2:
        return w, layout
    channel_last = np.moveaxis(w, 1, -1)  # (out, *kernel, in)
    return np.ascontiguousarray(channel_last).reshape(layout.matrix_shape), layout


def weight_from_2d(matrix: np.ndarray, layout: WeightLayout) -> np.ndarray:
    """Inverse of :func:`weight_to_2d`: map a 2-D result (a mask, pruned weights) back to the tensor."""
    matrix = np.asarray(matrix)
    if matrix.shape != layout.matrix_shape:
        raise ValueError(f"matrix has shape {matrix.shape}, expected {layout.matrix_shape} for {layout}")
    if len(layout.shape) == 2:
        return matrix
    out, inp, kernel = layout.shape[0], layout.shape[1], layout.shape[2:]
    return np.ascontiguousarray(np.moveaxis(matrix.reshape(out, *kernel, inp), -1, 1))


def apply_2d(solver: Callable[..., np.ndarray], weight: Any, /, *args: Any, **kwargs: Any) -> np.ndarray:
    """Run a 2-D solver on the channel-last view of ``weight`` and return its result in ``weight``'s shape.

    Examples
    --------
    >>> import numpy as np, nmsolve
    >>> w = np.random.default_rng(0).normal(size=(8, 4, 3, 3))
    >>> mask = apply_2d(nmsolve.magnitude_mask, w, n=2, m=4)
    >>> mask.shape, bool(nmsolve.is_nm(mask, 2, 4, axis=1, exact=True))
    ((8, 4, 3, 3), True)
    """
    matrix, layout = weight_to_2d(weight)
    return weight_from_2d(solver(matrix, *args, **kwargs), layout)
