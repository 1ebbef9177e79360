"""Checks and quantities shared by the one-shot (layer reconstruction) solvers.

A Linear layer ``y = x W^T`` with calibration inputs ``X[samples, in]`` is described by its weights
``W[out, in]`` and the Gram matrix ``H = X^T X``; the reconstruction error of pruned weights ``W'`` is
``||X W^T - X W'^T||_F^2 = trace((W - W') H (W - W')^T)``, a sum of independent row errors.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from nmsolve._validate import as_array, as_scores, check_nm, raise_nan

STRUCTURES = ("nm", "transposable")


def check_structure(structure: Any) -> str:
    if not isinstance(structure, str) or structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {list(STRUCTURES)}, got {structure!r}")
    return structure


def check_fraction(value: Any, name: str) -> float:
    """A finite number >= 0 (damping fractions and tolerances)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number >= 0, got {value!r} of type {type(value).__name__}")
    number = float(value)
    if not (np.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")
    return number


def check_layer(W: Any, H: Any, n: Any, m: Any, structure: Any) -> tuple[np.ndarray, np.ndarray, int, int, str]:
    """Validate a layer problem; return ``(W, H as float64, n, m, structure)`` with ``W`` not copied.

    ``W`` must be a finite real ``[out, in]`` matrix and ``H`` a finite symmetric ``[in, in]`` matrix
    with a non-negative diagonal; ``in`` must be a multiple of ``m`` (and ``out`` too for transposable
    masks). Whether ``H`` is positive semidefinite is checked where it is factorised (:func:`damped_cholesky`).
    """
    n, m = check_nm(n, m, allow_dense=False)
    structure = check_structure(structure)
    w = as_scores(W, "W", min_ndim=2)
    if w.ndim != 2:
        raise ValueError(f"W must be a 2-d weight [out, in], got shape {w.shape}; reshape conv weights first")
    h = as_scores(H, "H", min_ndim=2)
    if h.shape != (w.shape[1], w.shape[1]):
        raise ValueError(
            f"H must have shape (in, in) = {(w.shape[1], w.shape[1])} for W of shape {w.shape}, got {h.shape}; "
            "H is X.T @ X of the layer's calibration inputs X[samples, in]"
        )
    for name, arr in (("W", w), ("H", h)):
        bad = ~np.isfinite(arr)
        if bad.any():
            first = np.argwhere(bad)[0]
            if np.isnan(arr[tuple(first)]):
                raise_nan(name, first)
            raise ValueError(f"{name} holds inf (first at index {tuple(int(i) for i in first)}); it must be finite")
    if w.shape[1] % m:
        raise ValueError(f"W has in={w.shape[1]} columns, not a multiple of m={m}; groups of m run along in")
    if structure == "transposable" and w.shape[0] % m:
        raise ValueError(
            f"W has out={w.shape[0]} rows, not a multiple of m={m}; transposable masks need whole m x m tiles"
        )
    h64 = h.astype(np.float64)
    scale = float(np.abs(h64).max()) if h64.size else 0.0
    if h64.size and np.abs(h64 - h64.T).max() > 1e-6 * scale:
        i, j = np.unravel_index(int(np.argmax(np.abs(h64 - h64.T))), h64.shape)
        raise ValueError(
            f"H must be symmetric, but H[{i}, {j}]={float(h64[i, j])!r} and H[{j}, {i}]={float(h64[j, i])!r}"
        )
    diag = np.diag(h64)
    if (diag < 0).any():
        d = int(np.argmax(diag < 0))
        raise ValueError(f"H is not positive semidefinite: H[{d}, {d}]={float(diag[d])!r} < 0; H should be X.T @ X")
    return w, h64, n, m, structure


def given_mask(mask: Any, shape: tuple[int, ...], n: int, m: int, structure: str, *, exact: bool = False) -> np.ndarray:
    """A caller's mask as bool (nonzero = kept), checked against ``shape`` and ``structure``.

    ``exact=True`` requires exactly ``n`` kept in every group (the swap search keeps that count).
    """
    arr = as_array(mask, "mask")
    if arr.shape != shape:
        raise ValueError(f"mask has shape {arr.shape} but W has shape {shape}; they must match")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"mask must be boolean or numeric (nonzero = kept), got dtype {arr.dtype}")
    keep = arr != 0
    from nmsolve.nm import is_nm
    from nmsolve.transposable import is_transposable

    ok = is_nm(keep, n, m) if structure == "nm" else is_transposable(keep, n, m)
    if not ok:
        what = "N:M along in" if structure == "nm" else "transposable N:M"
        raise ValueError(f"mask is not {what} for n={n}, m={m}; it keeps more than n of some group of m")
    if exact and keep.size:
        counts = keep.reshape(shape[0], -1, m).sum(axis=-1)
        if (counts != n).any():
            row, group = (int(i) for i in np.argwhere(counts != n)[0])
            raise ValueError(
                f"mask must keep exactly n={n} of every group of m={m}, but row {row} keeps "
                f"{int(counts[row, group])} in group {group} (columns {group * m}..{group * m + m - 1})"
            )
    return keep


def damped(h: np.ndarray, damping: float) -> tuple[np.ndarray, np.ndarray]:
    """``H + damping * mean(diag H) * I`` and the mask of dead inputs (``diag H == 0``).

    Dead inputs carry no information; their diagonal is set to 1 so that the matrix stays
    positive definite (their weights do not change the error, and every solver drops them first).
    """
    dead = np.diag(h) == 0
    out = h.copy()
    mean = float(np.mean(np.diag(h))) if len(h) else 0.0
    out[np.diag_indices(len(h))] += damping * (mean if mean > 0 else 1.0)
    out[dead, dead] = 1.0
    return out, dead


def damped_cholesky(h: np.ndarray, damping: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(H_damped, dead, L)`` with ``H_damped[::-1, ::-1] = L L^T`` (the factor of the *reversed*
    matrix, from which :func:`~nmsolve.oneshot.sparsegpt.inverse_upper` gets SparseGPT's factor of the
    inverse); ``L`` is None if ``H_damped`` is PSD but singular. A matrix that is not positive
    semidefinite (beyond rounding) gets a clear error.
    """
    hd, dead = damped(h, damping)
    try:
        return hd, dead, np.linalg.cholesky(hd[::-1, ::-1])
    except np.linalg.LinAlgError:
        lowest = float(np.linalg.eigvalsh(hd)[0])
        if lowest >= -1e-10 * float(np.abs(hd).max()):
            return hd, dead, None
    raise ValueError(
        f"H is not positive semidefinite (H + damping * mean(diag H) * I has eigenvalue {lowest:.3g} with "
        f"damping={damping}); H should be X.T @ X of real inputs"
    )


def row_errors(w: np.ndarray, w_pruned: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Per row ``(w - w')^T H (w - w')``, the squared output error of each row (float64, >= 0)."""
    delta = np.asarray(w, dtype=np.float64) - np.asarray(w_pruned, dtype=np.float64)
    return np.maximum(np.einsum("ij,ij->i", delta @ h, delta), 0.0)


def layer_error(W: Any, W_pruned: Any, H: Any) -> float:
    """Reconstruction error ``trace((W - W') H (W - W')^T)`` = ``||X W^T - X W'^T||_F^2`` for ``H = X^T X``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> layer_error(np.array([[1.0, 1.0]]), np.array([[1.0, 0.0]]), X.T @ X)
    4.0
    """
    w = as_scores(W, "W", min_ndim=2)
    wp = as_scores(W_pruned, "W_pruned", min_ndim=2)
    h = as_scores(H, "H", min_ndim=2)
    if wp.shape != w.shape or h.shape != (w.shape[-1], w.shape[-1]):
        raise ValueError(f"shapes must be W {w.shape}, W_pruned the same, H (in, in); got {wp.shape} and {h.shape}")
    return float(row_errors(w, wp, h.astype(np.float64)).sum())
