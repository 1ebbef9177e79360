"""Helpers the constant fan-in modules share: the row view of a weight, mask and fraction checks,
row counts. Package-private (imported by :mod:`nmsolve.fanin.mask`, :mod:`nmsolve.fanin.condensed`
and :mod:`nmsolve.fanin.rigl` only)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from nmsolve._validate import as_array, reject_nan


def rows_view(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as ``(rows, fan_in)``: first axis kept, the rest flattened (a view when contiguous)."""
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (rows, fan_in, ...) with at least 2 dimensions, got a {x.ndim}-d array; "
            "pass a Linear weight [out, in] or a conv weight [out, in, *kernel]"
        )
    fan_in = int(np.prod(x.shape[1:], dtype=np.int64))
    return np.ascontiguousarray(x).reshape(x.shape[0], fan_in)


def as_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    arr = as_array(mask, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be boolean or numeric (nonzero = kept), got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape} but weights have shape {shape}; they must match")
    if arr.dtype.kind == "f":
        reject_nan(arr, name)
    return arr != 0


def check_fraction(value: Any, name: str, *, upper_open: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    ok = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {name}={value}")
    return value


def row_counts(keep: np.ndarray) -> np.ndarray:
    return keep.sum(axis=1, dtype=np.int64)
