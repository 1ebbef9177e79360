"""SR-STE: the sparse-refined straight-through gradient (Zhou et al., ICLR 2021)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nmsolve._jit import kernel, prange
from nmsolve._validate import as_array, as_scores, raise_nan, reject_nan

# Longest group for which the fused kernel compares every pair of entries; longer groups fall back
# to nmsolve.nm_mask.
FUSED_MAX_M = 64
_BLOCK_GROUPS = 256

SRSTE_DECAY = 2e-4
"""The published lambda_W of SR-STE."""


def check_decay(decay: Any, name: str = "decay") -> float:
    """Return ``decay`` as a float after checking it is finite and >= 0."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {decay!r}")
    value = float(decay)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {name}={value}")
    return value


def srste_gradient(grad: Any, weight: Any, mask: Any, *, decay: float = SRSTE_DECAY) -> np.ndarray:
    """The SR-STE weight gradient ``grad + decay * (1 - mask) * weight``.

    Parameters
    ----------
    grad : array_like
        Gradient of the loss with respect to the masked weight, passed straight through to the
        dense weight (one step's gradient, already averaged over the batch).
    weight : array_like, same shape
        The dense weight.
    mask : array_like, same shape
        The N:M mask of this step (nonzero = kept).
    decay : float, default 2e-4
        lambda_W; the term is added once per optimiser step (not per batch element).

    Returns
    -------
    ndarray, same shape, dtype of ``grad`` (float64 for integer input)

    Notes
    -----
    The extra term decays pruned weights towards zero, which lowers how often the N:M mask flips
    between steps ("sparse-refined"). Cost ``O(size)``.

    References
    ----------
    A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch",
    ICLR 2021.

    Examples
    --------
    >>> import numpy as np
    >>> srste_gradient(np.zeros(4), np.array([1.0, -2.0, 3.0, 4.0]), np.array([0, 1, 1, 0]), decay=0.5)
    array([0.5, 0. , 0. , 2. ])
    """
    g = as_scores(grad, "grad")
    w = as_scores(weight, "weight")
    keep = as_array(mask, "mask")
    lam = check_decay(decay)
    if not (g.shape == w.shape == keep.shape):
        raise ValueError(f"grad, weight and mask must have one shape, got {g.shape}, {w.shape}, {keep.shape}")
    reject_nan(g, "grad")
    reject_nan(w, "weight")
    dtype = g.dtype if g.dtype.kind == "f" else np.float64
    return (g + lam * np.where(keep != 0, 0, w)).astype(dtype, copy=False)


# --------------------------------------------------------------------------- fused in-place kernels
# The torch hooks call these on zero-copy numpy views of CPU tensors, one pass over memory each.


def _magnitude_nm_py(w, n, m, mask, masked, one):  # type: ignore[no-untyped-def]
    """For each row of w (groups of m along it): mask = top-n |w| (ties -> lower index) as 0/1 in
    the dtype of ``one``, masked = w * mask. Returns the first row holding NaN, or -1.

    Blocks of groups are transposed into xt[j, g] so that every comparison of positions i < j runs
    as one vectorised loop over groups (as in nmsolve.nm); entry j is beaten by i when
    |w_i| > |w_j| or (|w_i| == |w_j| and i < j), and kept when fewer than n entries beat it.
    """
    rows, length = w.shape
    groups = length // m
    bad = np.zeros(rows, dtype=np.bool_)
    for a in prange(rows):
        wr, mr, sr = w[a], mask[a], masked[a]
        xt = np.empty((m, _BLOCK_GROUPS), dtype=w.dtype)
        beaten = np.empty((m, _BLOCK_GROUPS), dtype=np.int32)
        nan_seen = False
        for g0 in range(0, groups, _BLOCK_GROUPS):
            nb = min(_BLOCK_GROUPS, groups - g0)
            for j in range(m):
                for g in range(nb):
                    v = abs(wr[(g0 + g) * m + j])
                    xt[j, g] = v
                    nan_seen |= v != v
                    beaten[j, g] = 0
            for i in range(m):
                for j in range(i + 1, m):
                    for g in range(nb):
                        later_wins = xt[j, g] > xt[i, g]
                        beaten[i, g] += later_wins
                        beaten[j, g] += 1 - later_wins
            for j in range(m):
                for g in range(nb):
                    idx = (g0 + g) * m + j
                    kept = (beaten[j, g] < n) * one
                    mr[idx] = kept
                    sr[idx] = wr[idx] * kept  # the same product torch's weight * mask computes
        bad[a] = nan_seen
    for a in range(rows):
        if bad[a]:
            return a
    return -1


def _decay_py(g, w, mask, lam):  # type: ignore[no-untyped-def]
    """g += lam * (1 - mask) * w over flat arrays (mask holds 0/1)."""
    for i in prange(g.shape[0]):
        g[i] += lam * (1 - mask[i]) * w[i]


# Parallel regions cost a thread wake-up (tens of microseconds, much more on a loaded machine), so
# small arrays take the serial compilation of the same code.
_PARALLEL_MIN_SIZE = 1 << 18
_magnitude_nm_par = kernel(parallel=True)(_magnitude_nm_py)
_magnitude_nm_ser = kernel()(_magnitude_nm_py)
_decay_par = kernel(parallel=True)(_decay_py)
_decay_ser = kernel()(_decay_py)


def magnitude_nm_into(weight: np.ndarray, n: int, m: int, mask: np.ndarray, masked: np.ndarray) -> None:
    """Fill ``mask`` (0/1) with the N:M magnitude mask of ``weight`` along its last axis, and ``masked``
    with ``weight * mask``, in one pass (the SR-STE per-step refresh of a Linear weight).

    ``weight``, ``mask`` and ``masked`` are C-contiguous 2-D float arrays of one shape and dtype
    whose last axis is a multiple of ``m <= FUSED_MAX_M``. Ties keep the lower index, as
    :func:`nmsolve.nm_mask` does; NaN raises ``ValueError``.
    """
    fn = _magnitude_nm_par if weight.size >= _PARALLEL_MIN_SIZE else _magnitude_nm_ser
    if fn(weight, n, m, mask, masked, mask.dtype.type(1)) >= 0:
        raise_nan("weight", np.argwhere(np.isnan(weight))[0])


def srste_decay_into(grad: np.ndarray, weight: np.ndarray, mask: np.ndarray, decay: float) -> None:
    """``grad += decay * (1 - mask) * weight`` in place, one pass (C-contiguous arrays of one shape)."""
    fn = _decay_par if grad.size >= _PARALLEL_MIN_SIZE else _decay_ser
    fn(grad.reshape(-1), weight.reshape(-1), mask.reshape(-1), decay)


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        for cols in (8, _PARALLEL_MIN_SIZE // 2):
            w = np.arange(2 * cols, dtype=dtype).reshape(2, cols)
            magnitude_nm_into(w, 2, 4, np.empty_like(w), np.empty_like(w))
            srste_decay_into(np.zeros_like(w), w, np.ones_like(w), 1e-4)
