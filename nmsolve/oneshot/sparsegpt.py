"""SparseGPT's OBS sweep (Frantar & Alistarh 2023) with N:M or transposable N:M selection.

One pass over the columns, left to right, in lazy blocks. With ``U`` the upper Cholesky factor of
``H^-1``, at the first column of every group of ``m`` the kept entries of the group are chosen by the
OBS saliency ``w^2 / U_jj^2`` (largest kept); every pruned weight's error ``(w_j - q_j) / U_jj`` is
then spread over the columns to its right (``W[:, j+1:] -= e U[j, j+1:]``), inside the block at once
and for the rest of the matrix once per block.
"""

from __future__ import annotations

import numpy as np


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
    ``m`` so that no group straddles two blocks.
    """
    select = SELECT[structure]
    weights = w.copy()
    cols = w.shape[1]
    mask = np.zeros(w.shape, dtype=bool)
    block = -(-blocksize // m) * m
    for start in range(0, cols, block):
        stop = min(start + block, cols)
        part = weights[:, start:stop]  # a view: updated in place
        u = upper[start:stop, start:stop]
        errors = np.zeros_like(part)
        for j in range(stop - start):
            if j % m == 0:
                d = np.diag(u)[j : j + m]
                mask[:, start + j : start + j + m] = select(part[:, j : j + m] ** 2 / d**2, n, m)
            err = np.where(mask[:, start + j], 0.0, part[:, j]) / u[j, j]
            part[:, j:] -= np.outer(err, u[j, j:])
            part[:, j] = np.where(mask[:, start + j], part[:, j], 0.0)
            errors[:, j] = err
        weights[:, stop:] -= errors @ upper[start:stop, stop:]
    return weights, mask
