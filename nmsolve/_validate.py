"""Coercion and checks shared by every public function, so that every error reads the same way."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def check_nm(n: Any, m: Any, *, allow_dense: bool = True) -> tuple[int, int]:
    """Return ``(n, m)`` as Python ints after checking ``0 < n <= m`` (``n < m`` if not allow_dense)."""
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    n, m = int(n), int(m)
    if m <= 0:
        raise ValueError(f"m must be a positive integer, got m={m}")
    upper = "<=" if allow_dense else "<"
    if n <= 0 or n > m or (not allow_dense and n == m):
        raise ValueError(f"n must satisfy 0 < n {upper} m, got n={n}, m={m}")
    return n, m


def check_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, rejecting bools, floats and values below ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` as a Python bool, rejecting anything that is not ``True``/``False``.

    Truthiness is not enough: ``pad="no"`` would otherwise silently mean ``pad=True``.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} of type {type(value).__name__}")
    return bool(value)


def as_array(x: Any, name: str) -> np.ndarray:
    """``np.asarray`` in native byte order, with clear messages for ragged sequences and masked arrays.

    A big-endian (non-native) array is copied once into native order, since compiled kernels accept
    native byte order only; anything else is returned without a copy. A masked array with masked
    entries is refused: its mask would otherwise be silently ignored.
    """
    if isinstance(x, np.ma.MaskedArray) and np.ma.getmaskarray(x).any():
        raise TypeError(
            f"{name} is a masked array with {int(np.ma.count_masked(x))} masked entries, whose mask nmsolve "
            f"would ignore; pass {name}.filled(value) with the value masked entries should have"
        )
    try:
        arr = np.asarray(x)
    except ValueError as err:
        raise ValueError(
            f"{name} must be a rectangular array; np.asarray failed ({err}). Pass equally long rows or a numpy array."
        ) from None
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def exact_float64(arr: np.ndarray, name: str) -> np.ndarray:
    """A float array wider than float64 (``longdouble``) as float64, refused unless the cast is exact."""
    if arr.dtype.kind != "f" or arr.dtype.itemsize <= 8:
        return arr
    with np.errstate(all="ignore"):
        narrow = arr.astype(np.float64)
        lost = ~((narrow.astype(arr.dtype) == arr) | (np.isnan(arr) & np.isnan(narrow)))
    if lost.any():
        first = tuple(int(i) for i in np.argwhere(lost)[0]) if arr.ndim else ()
        raise TypeError(
            f"{name} has dtype {arr.dtype} and holds values float64 cannot represent exactly (first at index "
            f"{first}: {arr[first]!r}), and rounding could make distinct values equal; pass {name}.astype(np.float64) "
            "to accept the rounding"
        )
    return narrow


def as_scores(x: Any, name: str = "scores", *, min_ndim: int = 1) -> np.ndarray:
    """Return a real numeric array that compiled kernels accept, without copying when possible.

    float32/float64 and int64/uint64 pass through unchanged; float16 becomes float32 and smaller
    integers become int64 (both exact); ``longdouble`` becomes float64 when that is exact and is
    refused otherwise; non-native byte order is copied into native order. bool, complex, object and
    string arrays are rejected, since their ordering is either meaningless or ambiguous for a mask.
    """
    arr = as_array(x, name)
    kind = arr.dtype.kind
    if kind == "b":
        raise TypeError(
            f"{name} has dtype bool, which has no useful order; pass numeric scores (e.g. scores.astype(np.float32))"
        )
    if kind not in "fiu":
        raise TypeError(
            f"{name} must be a real numeric array, got dtype {arr.dtype}; "
            "pass float or integer scores (for complex weights use np.abs(W))"
        )
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got a {arr.ndim}-d array")
    if kind == "f" and arr.dtype.itemsize < 4:
        arr = arr.astype(np.float32)
    elif kind == "f" and arr.dtype.itemsize > 8:
        arr = exact_float64(arr, name)
    elif kind == "i" and arr.dtype != np.int64:
        arr = arr.astype(np.int64)
    elif kind == "u" and arr.dtype != np.uint64:
        arr = arr.astype(np.int64)
    return arr


def check_axis(axis: Any, ndim: int) -> int:
    """Return ``axis`` normalised to ``0 <= axis < ndim``."""
    axis = check_int(axis, "axis")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {ndim} dimension(s)")
    return axis % ndim


def check_group_length(length: int, m: int, axis: int, pad: bool) -> None:
    """Reject a ragged last group unless the caller asked for padding (``pad`` must be a bool)."""
    pad = check_bool(pad, "pad")
    if length % m and not pad:
        raise ValueError(
            f"axis {axis} has length {length}, not a multiple of m={m}; pass pad=True to treat the "
            f"last group of {length % m} as padded with never-kept entries, or crop the array"
        )


def reject_nan(x: np.ndarray, name: str = "scores") -> None:
    """Raise if a float array holds NaN (inf is allowed and ordered like any other number)."""
    if x.dtype.kind == "f" and x.size and np.isnan(x).any():
        raise_nan(name, np.argwhere(np.isnan(x))[0])


def raise_nan(name: str, index: Any) -> None:
    raise ValueError(
        f"{name} contains NaN (first at index {tuple(int(i) for i in np.atleast_1d(index))}); "
        "masks are decided by comparisons, so replace NaN first, e.g. np.nan_to_num(scores, nan=0.0)"
    )


def choose(table: Mapping[str, T], value: Any, what: str = "method") -> T:
    """The entry of a method table named ``value``; an unknown name lists the valid ones.

    Every solver family keeps one table (name -> entry) that both documents and dispatches its
    methods; this is the one place that reads it.

    Examples
    --------
    >>> choose({"fast": 1, "exact": 2}, "exact")
    2
    >>> choose({"fast": 1, "exact": 2}, "exakt")
    Traceback (most recent call last):
    ...
    ValueError: method must be one of ['exact', 'fast'], got 'exakt'
    """
    if not isinstance(value, str) or value not in table:
        raise ValueError(f"{what} must be one of {sorted(table)}, got {value!r}")
    return table[value]


def as_rng(rng: Any) -> np.random.Generator:
    """``None``, an int seed or a ``np.random.Generator`` -> a Generator (reproducible from a seed)."""
    if rng is None or isinstance(rng, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(rng, (bool, np.bool_)):
            raise TypeError("rng must be None, an int seed or a numpy Generator, got a bool")
        return np.random.default_rng(rng)  # type: ignore[arg-type]
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be None, an int seed or a numpy Generator, got {type(rng).__name__}")
