"""What the two permutation searches share: the checks of a permutation and of a time limit, and the
kernel that swaps two items between groups.

Package-private: :mod:`nmsolve.permutation.bimask` (rows) and :mod:`nmsolve.permutation.channel`
(columns) import these; nothing else should.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nmsolve._jit import kernel
from nmsolve._validate import as_array


def check_permutation(perm: Any, size: int, name: str = "perm") -> np.ndarray:
    """Return ``perm`` as an int64 array after checking it is a permutation of ``range(size)``."""
    p = as_array(perm, name)
    if p.dtype.kind not in "iu" or p.ndim != 1:
        raise TypeError(
            f"{name} must be a 1-d integer array (a permutation of range({size})), got dtype {p.dtype} "
            f"with shape {p.shape}"
        )
    if p.shape[0] != size:
        raise ValueError(f"{name} has length {p.shape[0]}, expected {size} (one entry per row/column)")
    p = p.astype(np.int64)
    if size and (p.min() < 0 or p.max() >= size or np.bincount(p, minlength=size).max() != 1):
        raise ValueError(f"{name} must contain each of 0..{size - 1} exactly once (a permutation)")
    return p


def check_time_limit(time_limit: Any) -> float | None:
    """``time_limit`` as float seconds (> 0), or None for no limit."""
    if time_limit is None:
        return None
    if isinstance(time_limit, (bool, np.bool_)) or not isinstance(time_limit, (int, float, np.integer, np.floating)):
        raise TypeError(f"time_limit must be None or a number of seconds, got {time_limit!r}")
    if not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds (or None for no limit), got {time_limit}")
    return float(time_limit)


@kernel()
def swap_items(order, where, group, x, y):  # type: ignore[no-untyped-def]
    """Swap items x and y in ``order`` (position -> item), keeping its inverse ``where`` (item ->
    position) and the items' group labels ``group`` in step (each item takes the other's group)."""
    px = where[x]
    py = where[y]
    order[px] = y
    order[py] = x
    where[x] = py
    where[y] = px
    gx = group[x]
    group[x] = group[y]
    group[y] = gx
