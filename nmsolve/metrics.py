"""Quality measures of a mask for a weight array."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nmsolve._validate import as_array, as_scores, reject_nan


def _weights_and_mask(weights: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    w = as_scores(weights, "weights", min_ndim=0)
    reject_nan(w, "weights")
    keep = as_array(mask, "mask")
    if keep.shape != w.shape:
        raise ValueError(f"mask has shape {keep.shape} but weights have shape {w.shape}; they must match")
    return np.abs(w.astype(np.float64)), keep != 0


def kept_magnitude(weights: Any, mask: Any) -> float:
    """Sum of ``|weights|`` over the kept entries of ``mask`` (float64 accumulation).

    Examples
    --------
    >>> import numpy as np
    >>> kept_magnitude(np.array([1.0, -2.0, 3.0]), np.array([True, True, False]))
    3.0
    """
    w, keep = _weights_and_mask(weights, mask)
    return float(w[keep].sum())


def kept_fraction(weights: Any, mask: Any) -> float:
    """Fraction of the total magnitude ``sum |weights|`` that ``mask`` keeps, in ``[0, 1]``.

    An all-zero (or empty) weight array keeps everything there is, so the fraction is 1.0.

    Notes
    -----
    Infinite weights are ordered like any other number, so they outweigh every finite one: when
    ``weights`` holds ``±inf``, the fraction is the share of the infinite entries that the mask keeps
    (the limit of the fraction as those entries grow equally large), never NaN. Finite sums that
    overflow float64 are computed after scaling by a power of two, so they do not become ``inf``.

    Examples
    --------
    >>> import numpy as np
    >>> kept_fraction(np.array([1.0, -2.0, 3.0, 4.0]), np.array([0, 0, 1, 1]))
    0.7
    """
    w, keep = _weights_and_mask(weights, mask)
    infinite = np.isinf(w)
    if infinite.any():
        return float(np.count_nonzero(infinite & keep)) / float(np.count_nonzero(infinite))
    top = float(w.max()) if w.size else 0.0
    if top == 0.0:
        return 1.0
    shift = max(0, math.frexp(top)[1] - 960)  # sums of up to 2**60 weights below 2**960 cannot overflow
    if shift:
        w = np.ldexp(w, -shift)  # a power of two: exact except for weights far below the largest
    return min(1.0, float(w[keep].sum()) / float(w.sum()))
