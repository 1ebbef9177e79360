"""SparseGPT's OBS sweep (Frantar & Alistarh 2023) with N:M or transposable N:M selection.

One pass over the columns, left to right, in lazy blocks. With ``U`` the upper Cholesky factor of
``H^-1``, at the first column of every group of ``m`` the kept entries of the group are chosen by the
OBS saliency ``w^2 / U_jj^2`` (largest kept); every pruned weight's error ``(w_j - q_j) / U_jj`` is
then spread over the columns to its right (``W[:, j+1:] -= e U[j, j+1:]``), inside the block at once
and for the rest of the matrix once per block.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from nmsolve._jit import ONESHOT_PARALLEL_MIN, kernel, threads_for


def inverse_upper(chol: np.ndarray) -> np.ndarray:
    """The upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``) from the lower factor of the
    reversed ``H`` (``H[::-1, ::-1] = L L^T``): ``U = reverse(L^-1)``, one triangular inverse instead
    of an inverse and a second factorisation."""
    import scipy.linalg

    inverse = scipy.linalg.solve_triangular(chol, np.eye(len(chol)), lower=True)
    return np.ascontiguousarray(inverse[::-1, ::-1])


@kernel(parallel=True)
def _sweep_groups(part, u, first, stop, n, m, keep, select, errors):  # type: ignore[no-untyped-def]
    """Columns ``first .. stop`` (whole groups of ``m``) of the block ``part``, rows independent: at
    each group choose each row's ``n`` kept by saliency when ``select`` (ties toward the lower
    index), else use ``keep`` as given; zero the pruned, spread their errors over the block's later
    columns and record them in ``errors``."""
    rows, width = part.shape
    for r in prange(rows):
        for j in range(first, stop, m):
            if select:
                for a in range(m):
                    sa = part[r, j + a] ** 2 / u[j + a, j + a] ** 2
                    rank = 0
                    for b in range(m):
                        sb = part[r, j + b] ** 2 / u[j + b, j + b] ** 2
                        if sb > sa or (sb == sa and b < a):
                            rank += 1
                    keep[r, j + a] = rank < n
            for c in range(j, j + m):
                err = 0.0 if keep[r, c] else part[r, c] / u[c, c]
                errors[r, c] = err
                if err != 0.0:
                    for t in range(c + 1, width):
                        part[r, t] -= err * u[c, t]
                    part[r, c] = 0.0


def _select_nm(saliency: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the ``n`` largest of every ``m`` along the rows of ``saliency`` (ties toward the lower index)."""
    from nmsolve.nm import nm_mask

    return nm_mask(saliency, n, m)


def _select_transposable(saliency: np.ndarray, n: int, m: int) -> np.ndarray:
    """Exact transposable selection of each ``m x m`` tile of ``saliency`` (most saliency kept)."""
    from nmsolve.transposable import transposable_mask

    return transposable_mask(saliency, n, m, method="mcf")


SELECT = {"nm": _select_nm, "transposable": _select_transposable}


def sparsegpt_sweep(
    w: np.ndarray, upper: np.ndarray, n: int, m: int, structure: str, blocksize: int
) -> tuple[np.ndarray, np.ndarray]:
    """Run the sweep on float64 ``w[out, in]`` with ``upper`` = upper Cholesky factor of ``H^-1``.

    Returns ``(weights, mask)``; ``w`` is not modified. ``blocksize`` is rounded up to a multiple of
    ``m`` so that no group straddles two blocks. N:M groups are chosen inside the compiled kernel;
    transposable tiles need every row of a group at once and are chosen between kernel calls.
    """
    weights = w.copy()
    rows, cols = w.shape
    mask = np.zeros(w.shape, dtype=bool)
    block = -(-blocksize // m) * m
    inside = structure == "nm"
    with threads_for(rows * cols, ONESHOT_PARALLEL_MIN):
        for start in range(0, cols, block):
            stop = min(start + block, cols)
            part = np.ascontiguousarray(weights[:, start:stop])
            u = np.ascontiguousarray(upper[start:stop, start:stop])
            keep = np.zeros(part.shape, dtype=np.bool_)
            errors = np.zeros_like(part)
            if inside:
                _sweep_groups(part, u, 0, stop - start, n, m, keep, True, errors)
            for j in range(0, 0 if inside else stop - start, m):
                saliency = part[:, j : j + m] ** 2 / np.diag(u)[j : j + m] ** 2
                keep[:, j : j + m] = _select_transposable(saliency, n, m)
                _sweep_groups(part, u, j, j + m, n, m, keep, False, errors)
            weights[:, start:stop] = part
            mask[:, start:stop] = keep
            weights[:, stop:] -= errors @ upper[start:stop, stop:]
    return weights, mask


def _warmup() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8))
    h = x.T @ x + np.eye(8)
    upper = inverse_upper(np.linalg.cholesky(h[::-1, ::-1]))
    sparsegpt_sweep(rng.normal(size=(2, 8)), upper, 2, 4, "nm", 4)
