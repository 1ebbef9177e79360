"""Exact least-squares re-fit of the kept weights of every row, for any mask."""

from __future__ import annotations

import numpy as np

# stacked systems solved at once: at most this many float64 matrix entries (128 MiB)
_STACK_ENTRIES = 1 << 24


def solve_stack(a: np.ndarray, b: np.ndarray, definite: bool) -> np.ndarray:
    """Solve ``a[i] @ x[i] = b[i]`` for symmetric PSD ``a[i]``; ``b`` has shape (count, k) or (count, k, rhs).

    ``definite``: the caller knows every ``a[i]`` is positive definite (damped); otherwise the
    minimum-norm least-squares solution is returned, which is exact also when ``a[i]`` is singular
    (fewer calibration samples than kept weights), where a plain solve would return rounding noise.
    """
    rhs = b if b.ndim == 3 else b[:, :, None]
    out = np.linalg.solve(a, rhs) if definite else np.linalg.pinv(a, hermitian=True) @ rhs
    return out if b.ndim == 3 else out[:, :, 0]


def refit_rows(h: np.ndarray, target: np.ndarray, mask: np.ndarray, *, definite: bool = True) -> np.ndarray:
    """Rows ``w'`` that minimise ``w'^T H w' - 2 target_r^T w'`` with ``w'`` zero outside ``mask[r]``.

    For ``target = W @ H`` this is the least-squares re-fit ``argmin ||X w - X w'||^2`` of each row.
    Rows that keep the same set share one factorisation; the others are solved in batches.
    ``definite=False`` when ``h`` may be singular (see :func:`solve_stack`).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 4)); w = np.array([[1.0, 2.0, 3.0, 4.0]])
    >>> mask = np.array([[True, False, True, False]])
    >>> fit = refit_rows(X.T @ X, w @ (X.T @ X), mask)
    >>> bool(np.allclose(fit[0, [0, 2]], np.linalg.lstsq(X[:, [0, 2]], X @ w[0], rcond=None)[0]))
    True
    """
    rows, cols = mask.shape
    out = np.zeros((rows, cols))
    if not rows or not cols:
        return out
    sets, which = np.unique(mask, axis=0, return_inverse=True)
    which = which.reshape(-1)
    kept = sets.sum(axis=1)
    for k in np.unique(kept):
        if k == 0:
            continue
        set_ids = np.flatnonzero(kept == k)
        chunk = max(1, _STACK_ENTRIES // int(k * k))
        for lo in range(0, len(set_ids), chunk):
            part = set_ids[lo : lo + chunk]
            cols_of = np.nonzero(sets[part])[1].reshape(len(part), k)
            a = h[cols_of[:, :, None], cols_of[:, None, :]]
            rows_of = [np.flatnonzero(which == s) for s in part]
            single = np.array([len(r) == 1 for r in rows_of])
            if single.any():
                r = np.array([rows_of[i][0] for i in np.flatnonzero(single)])
                c = cols_of[single]
                out[r[:, None], c] = solve_stack(a[single], np.take_along_axis(target[r], c, axis=1), definite)
            for i in np.flatnonzero(~single):  # rows sharing a kept set: one factorisation, many right-hand sides
                r, c = rows_of[i], cols_of[i]
                out[r[:, None], c[None, :]] = solve_stack(a[i : i + 1], target[r][:, c].T[None], definite)[0].T
    return out
