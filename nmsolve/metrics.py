"""Quality measures of a mask for a weight array."""

from __future__ import annotations

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

    Examples
    --------
    >>> import numpy as np
    >>> kept_fraction(np.array([1.0, -2.0, 3.0, 4.0]), np.array([0, 0, 1, 1]))
    0.7
    """
    w, keep = _weights_and_mask(weights, mask)
    total = float(w.sum())
    if total == 0.0:
        return 1.0
    return float(w[keep].sum()) / total
