"""SR-STE: the sparse-refined straight-through gradient (Zhou et al., ICLR 2021)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nmsolve._jit import TRAINING_PARALLEL_MIN, kernel, prange, threads_for
from nmsolve._kernels import BLOCK_VALUES, NETWORK_MAX_M, ROW_CHUNKS, has_nan, keep_network, selection_network
from nmsolve._validate import as_array, as_scores, raise_nan, reject_nan
from nmsolve.training._fused import nm4_into

# Longest group that the fused kernel handles (nmsolve.nm's selection network); longer groups fall
# back to nmsolve.nm_mask.
FUSED_MAX_M = NETWORK_MAX_M

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


@kernel(parallel=True)
def _magnitude_nm(w, n, m, network, mask, masked, one):  # type: ignore[no-untyped-def]
    """For each row of w (groups of m along it): mask = top-n |w| (ties -> lower index) as 0/1 in
    the dtype of ``one``, masked = w * mask. Returns the first row holding NaN, or -1.

    For m != 4 (m = 4 has its own vectorised kernel, nmsolve.training._fused.nm4_into). The selection
    is nmsolve.nm's selection network run on |w| of one block of about BLOCK_VALUES entries at a time,
    copied into cache-sized scratch, so that w is read once and mask and masked are written once.
    """
    rows, length = w.shape
    step = max(1, BLOCK_VALUES // m) * m
    chunks = min(rows, ROW_CHUNKS)
    bad = np.zeros(rows, dtype=np.bool_)
    for c in prange(chunks):
        xa = np.empty(step, dtype=w.dtype)
        kept = np.empty(step, dtype=np.bool_)
        scratch = np.empty((m, step // m), dtype=w.dtype)
        for a in range(c * rows // chunks, (c + 1) * rows // chunks):
            wr, mr, sr = w[a], mask[a], masked[a]
            nan = False
            for start in range(0, length, step):
                size = min(step, length - start)
                for i in range(size):
                    xa[i] = abs(wr[start + i])
                nan = has_nan(xa[:size])
                if not nan:
                    keep_network(xa[:size], n, m, network, scratch, kept[:size])
                if nan:
                    break
                for i in range(size):
                    k = kept[i] * one
                    mr[start + i] = k
                    sr[start + i] = wr[start + i] * k  # the same product torch's weight * mask computes
            bad[a] = nan
    for a in range(rows):
        if bad[a]:
            return a
    return -1


@kernel(parallel=True)
def _decay(g, w, mask, lam):  # type: ignore[no-untyped-def]
    """g += lam * (1 - mask) * w over flat arrays (mask holds 0/1)."""
    for i in prange(g.shape[0]):
        g[i] += lam * (1 - mask[i]) * w[i]


def magnitude_nm_into(weight: np.ndarray, n: int, m: int, mask: np.ndarray, masked: np.ndarray) -> None:
    """Fill ``mask`` (0/1) with the N:M magnitude mask of ``weight`` along its last axis, and ``masked``
    with ``weight * mask``, in one pass (the SR-STE per-step refresh of a Linear weight).

    ``weight``, ``mask`` and ``masked`` are C-contiguous 2-D float arrays of one shape and dtype
    whose last axis is a multiple of ``m <= FUSED_MAX_M``. Ties keep the lower index, as
    :func:`nmsolve.nm_mask` does; NaN raises ``ValueError``.
    """
    if m == 4:  # the common case: one vectorised pass
        nm4_into(weight, n, mask, masked)
        return
    with threads_for(weight.size, TRAINING_PARALLEL_MIN):
        bad = _magnitude_nm(weight, n, m, selection_network(n, m), mask, masked, mask.dtype.type(1))
    if bad >= 0:
        raise_nan("weight", np.argwhere(np.isnan(weight))[0])


def srste_decay_into(grad: np.ndarray, weight: np.ndarray, mask: np.ndarray, decay: float) -> None:
    """``grad += decay * (1 - mask) * weight`` in place, one pass (C-contiguous arrays of one shape)."""
    with threads_for(grad.size, TRAINING_PARALLEL_MIN):
        _decay(grad.reshape(-1), weight.reshape(-1), mask.reshape(-1), decay)


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        for cols in (8, TRAINING_PARALLEL_MIN // 2):
            w = np.arange(2 * cols, dtype=dtype).reshape(2, cols)
            magnitude_nm_into(w, 2, 8, np.empty_like(w), np.empty_like(w))  # m = 4 is nmsolve.training._fused
            srste_decay_into(np.zeros_like(w), w, np.ones_like(w), 1e-4)
            srste_decay_into(np.zeros_like(w), w, np.ones(w.shape, np.uint8), 1e-4)  # Bi-Mask's masks
