"""refine_mask: swap search on the exact reconstruction objective, starting from any N:M mask."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._jit import ONESHOT_PARALLEL_MIN, threads_for
from nmsolve._kernels import take_blocks
from nmsolve._progress import progress_bar
from nmsolve._validate import check_bool, check_int
from nmsolve.oneshot._common import check_fraction, check_layer, damped_cholesky, given_mask, row_errors
from nmsolve.oneshot._refine import NEEDS_REFRESH, search_rows

# float64 entries of the per-row search state (A, U and a temporary of U's size) held at once: 256 MiB
_STATE_ENTRIES = 1 << 25
# accepted swaps of a row between two recomputations of its state from scratch (bounds rounding drift;
# measured at in=384, 2:4: 4000 random swaps leave a relative error of 1.4e-14 in every part of the state)
_REFRESH_SWAPS = 4096
# defaults of refine_mask, also used by prune_layer(refine=True)
MAX_SWEEPS = 100
TOLERANCE = 1e-9


@dataclass(frozen=True, eq=False)
class RefineResult:
    """Outcome of :func:`refine_mask`.

    Attributes
    ----------
    mask : ndarray of bool, shape (out, in)
        The refined mask (N:M along ``in``); a row keeps its input mask unless refining lowered its error.
    weights : ndarray of float64, shape (out, in)
        The exact least-squares re-fit of the kept weights of ``mask`` (on the damped ``H``), zero elsewhere.
    error_before : float
        ``trace((W - W_0) H (W - W_0)^T)`` on the undamped ``H``, ``W_0`` the exact re-fit of the input mask.
    error : float
        The same error for ``weights``; never above ``error_before``.
    swaps : int
        Accepted swaps, summed over the rows whose refined mask was kept.
    sweeps : int
        The most passes over its groups that any row made (the last one found no improving swap,
        unless ``max_sweeps`` stopped it).
    seconds : float
        Wall time of the call.
    """

    mask: np.ndarray
    weights: np.ndarray
    error_before: float
    error: float
    swaps: int
    sweeps: int
    seconds: float

    @property
    def improvement(self) -> float:
        """``1 - error / error_before``: the fraction of the input mask's re-fitted error removed."""
        return 1.0 - self.error / self.error_before if self.error_before > 0 else 0.0


def _inverse_spd(blocks: np.ndarray) -> np.ndarray:
    """The inverses of symmetric positive definite ``blocks`` (rows, k, k), exactly symmetric.

    ``A = C^-1 C^-T`` from the Cholesky factor ``C`` (LAPACK potrf, trtri, BLAS syrk on one triangle):
    on 768 x 768 blocks twice as fast as numpy's LU-based ``inv``. A block that is numerically
    singular despite the damping gets its pseudo-inverse (least squares).
    """
    from scipy.linalg import blas, lapack

    out = np.empty_like(blocks)
    for i, block in enumerate(blocks):
        factor, info = lapack.dpotrf(block, lower=0, clean=1)
        if info == 0:
            factor, info = lapack.dtrtri(factor, lower=0)
        if info == 0:
            upper = blas.dsyrk(1.0, factor)  # factor @ factor.T on the upper triangle, zeros below
            np.add(upper, upper.T, out=out[i])
            out[i].flat[:: len(block) + 1] = upper.diagonal()
        else:
            inverse = np.linalg.pinv(block, hermitian=True)
            out[i] = 0.5 * (inverse + inverse.T)
    return out


def _search_state(hd: np.ndarray, b: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(S, D, A, c, U, r, s)`` of every row of ``keep`` (see ``_refine``), built with batched LAPACK/BLAS."""
    rows, cols = keep.shape
    k = int(keep[0].sum()) if rows else 0
    S = np.nonzero(keep)[1].reshape(rows, k)
    D = np.nonzero(~keep)[1].reshape(rows, cols - k)
    hss = np.empty((rows, k, k))
    hsd = np.empty((rows, k, cols - k))
    with threads_for(hss.size + hsd.size, ONESHOT_PARALLEL_MIN):
        take_blocks(hd, S, S, hss)
        take_blocks(hd, S, D, hsd)
    A = _inverse_spd(hss)
    bs = np.take_along_axis(b, S, axis=1)
    c = np.einsum("rkl,rl->rk", A, bs)
    U = A @ hsd
    s = hd[D, D] - np.einsum("rkd,rkd->rd", hsd, U)
    r = np.take_along_axis(b, D, axis=1) - np.einsum("rkd,rk->rd", hsd, c)
    return S, D, A, c, np.ascontiguousarray(U), r, s


def _scatter(values: np.ndarray, columns: np.ndarray, cols: int) -> np.ndarray:
    """Rows of width ``cols`` holding ``values[i]`` at ``columns[i]`` and zero elsewhere."""
    out = np.zeros((values.shape[0], cols))
    np.put_along_axis(out, columns, values, axis=1)
    return out


def _refine_rows(
    hd: np.ndarray, w: np.ndarray, keep: np.ndarray, m: int, tolerance: float, max_sweeps: int, bar: Any
) -> tuple[np.ndarray, ...]:
    """Search every row from ``keep``; return the refined mask, swaps and groups visited per row, and
    the re-fits (on ``hd``) of ``keep`` and of the refined mask.

    The re-fits are the search state's ``c``: the first state of a row holds the re-fit of its input
    mask, the last one (updated exactly by every swap, rebuilt every ``_REFRESH_SWAPS``) that of its
    refined mask, so no separate solve is needed (on a 384 x 1536 layer at 2:4 the two
    ``refit_rows`` calls took 7 of 53 s).
    """
    rows, cols = keep.shape
    out = keep.copy()
    swaps = np.zeros(rows, dtype=np.int64)
    visited = np.zeros(rows, dtype=np.int64)
    fit_first = np.zeros((rows, cols))
    fit_last = np.zeros((rows, cols))
    if not rows or not cols:
        return out, swaps, visited, fit_first, fit_last
    k = int(keep[0].sum())
    b = w @ hd
    threshold = tolerance * np.einsum("ij,ij->i", b, w)
    chunk = max(1, _STATE_ENTRIES // max(1, 3 * k * max(k, cols - k)))
    pos = np.zeros(rows, dtype=np.int64)
    quiet = np.zeros(rows, dtype=np.int64)
    status = np.zeros(rows, dtype=np.int8)
    for lo in range(0, rows, chunk):
        active = np.arange(lo, min(lo + chunk, rows))
        first = True
        while active.size:
            S, D, A, c, U, r, s = _search_state(hd, b[active], out[active])
            if first:
                fit_first[active] = _scatter(c, S, cols)
                first = False
            kept = out[active]
            slot = np.empty((active.size, cols), dtype=np.int64)
            np.put_along_axis(slot, S, np.arange(S.shape[1])[None, :], axis=1)
            np.put_along_axis(slot, D, np.arange(D.shape[1])[None, :], axis=1)
            part = (pos[active], quiet[active], visited[active], swaps[active], status[active])
            limits = (threshold[active], max_sweeps, _REFRESH_SWAPS)
            with threads_for(active.size * k * (cols - k), ONESHOT_PARALLEL_MIN):
                search_rows(hd, S, D, A, c, U, r, s, kept, slot, m, *limits, *part)
            out[active] = kept
            pos[active], quiet[active], visited[active], swaps[active], status[active] = part
            done = status[active] != NEEDS_REFRESH
            fit_last[active[done]] = _scatter(c[done], S[done], cols)
            if bar is not None:
                bar.update(int(done.sum()))
            active = active[~done]
    return out, swaps, visited, fit_first, fit_last


def refine_mask(
    W: Any,
    H: Any,
    mask: Any,
    n: int = 2,
    m: int = 4,
    *,
    structure: str = "nm",
    damping: float = 0.01,
    max_sweeps: int = MAX_SWEEPS,
    tolerance: float = TOLERANCE,
    progress: bool = False,
) -> RefineResult:
    """Improve an N:M mask of a layer by swaps that lower its exact re-fitted reconstruction error.

    Every row is searched independently: in each group of ``m`` along ``in`` the best swap of a kept
    and a dropped weight (keeping the group N:M) is taken if it lowers the row's error after an exact
    least-squares re-fit of its kept weights; groups are visited in order, pass after pass, until no
    swap improves (a local optimum of the row over all in-group swaps) or ``max_sweeps`` passes.

    Parameters
    ----------
    W : array_like, shape (out, in)
        Dense weights (never modified).
    H : array_like, shape (in, in)
        Gram matrix ``X^T X`` of the layer's calibration inputs (symmetric positive semidefinite, finite).
    mask : array_like of bool, shape (out, in)
        The starting mask (nonzero = kept), exactly ``n`` kept in every group of ``m`` along ``in``,
        e.g. the mask of :func:`prune_layer`.
    n, m : int
        The N:M pattern of ``mask`` (``0 < n < m``).
    structure : {"nm"}
        Only ``"nm"`` is supported so far; ``"transposable"`` raises ValueError.
    damping : float, default 0.01
        The search and the re-fits use ``H + damping * mean(diag H) * I`` (as :func:`prune_layer`).
    max_sweeps : int, default 100
        The most passes over the groups of a row.
    tolerance : float, default 1e-9
        A swap is taken only if it lowers the row's error by more than ``tolerance`` times the row's
        output energy ``w^T H w`` (damped).
    progress : bool, default False
        Show a progress bar over the rows (tqdm).

    Returns
    -------
    RefineResult

    Raises
    ------
    ValueError
        NaN or inf in ``W`` or ``H``, shapes that do not match, ``H`` not symmetric positive
        semidefinite (or singular with ``damping=0``), ``in`` not a multiple of ``m``, ``mask`` not
        N:M, ``structure="transposable"``.
    TypeError
        A non-numeric ``mask``, options of the wrong type.

    Notes
    -----
    With ``S`` a row's kept set, ``Hd`` the damped ``H`` and ``b = Hd w``, the re-fitted error of the
    row is ``w^T Hd w - b_S^T (Hd_SS)^-1 b_S``. The search keeps ``(Hd_SS)^-1``, the re-fitted
    weights and ``(Hd_SS)^-1 Hd_SD`` per row, which give the exact change of the error of every
    in-group swap in ``O(1)``; an accepted swap updates them by two rank-one steps, ``O(k (in - k))``
    for ``k`` kept weights (recomputed from scratch every 4096 swaps). Building them costs a
    ``k x k`` inverse and a ``k x k`` by ``k x (in - k)`` product per row (batched BLAS).

    The result is deterministic and independent of the thread count. The error never increases: a
    row whose re-fitted error (undamped ``H``) is not strictly lower after the search keeps its
    input mask.

    References
    ----------
    The swap move on the re-fitted objective follows SparseSwaps (arXiv 2512.10922).

    Examples
    --------
    >>> import numpy as np
    >>> from nmsolve import prune_layer
    >>> rng = np.random.default_rng(0)
    >>> W, X = rng.normal(size=(8, 16)), rng.normal(size=(64, 16)) @ rng.normal(size=(16, 16))
    >>> start = prune_layer(W, X.T @ X, 2, 4, method="magnitude")
    >>> res = refine_mask(W, X.T @ X, start.mask, 2, 4)
    >>> bool(res.mask.reshape(8, 4, 4).sum(-1).max() == 2), res.error < res.error_before
    (True, True)
    """
    start = time.perf_counter()
    w_in, h, n, m, structure = check_layer(W, H, n, m, structure)
    if structure != "nm":
        raise ValueError(
            f"refine_mask supports structure='nm' only so far, got structure={structure!r}; "
            "refine a transposable mask is not implemented"
        )
    keep = given_mask(mask, w_in.shape, n, m, structure, exact=True)
    damping = check_fraction(damping, "damping")
    max_sweeps = check_int(max_sweeps, "max_sweeps", minimum=0)
    tolerance = check_fraction(tolerance, "tolerance")
    progress = check_bool(progress, "progress")
    return refine_checked(w_in, h, keep, m, damping, max_sweeps, tolerance, progress, start)


def refine_checked(
    w_in: np.ndarray,
    h: np.ndarray,
    keep: np.ndarray,
    m: int,
    damping: float,
    max_sweeps: int,
    tolerance: float,
    progress: bool,
    start: float,
) -> RefineResult:
    """:func:`refine_mask` on validated inputs (``h`` float64 undamped, ``keep`` exact N:M bool)."""
    hd, dead, chol = damped_cholesky(h, damping)
    if chol is None:
        raise ValueError(
            f"refine_mask needs H + damping * mean(diag H) * I positive definite, but it is singular with "
            f"damping={damping} (fewer calibration samples than inputs); pass damping > 0"
        )
    w0 = w_in.astype(np.float64)
    w = w0.copy()
    w[:, dead] = 0.0
    bar = progress_bar(w.shape[0], progress, "refine_mask", "row")
    try:
        refined, swaps, visited, fit_before, fit = _refine_rows(hd, w, keep, m, tolerance, max_sweeps, bar)
    finally:
        if bar is not None:
            bar.close()
    before = row_errors(w0, fit_before, h)
    changed = (refined != keep).any(axis=1)
    fit[~changed] = fit_before[~changed]
    after = before.copy()
    if changed.any():
        after[changed] = row_errors(w0[changed], fit[changed], h)
    better = changed & (after < before)
    mask_out = np.where(better[:, None], refined, keep)
    fit = np.where(better[:, None], fit, fit_before)
    after = np.where(better, after, before)
    groups = w.shape[1] // m
    return RefineResult(
        mask=mask_out,
        weights=np.where(mask_out, fit, 0.0),
        error_before=float(before.sum()),
        error=float(after.sum()),
        swaps=int(swaps[better].sum()),
        sweeps=int(-(-visited.max() // groups)) if visited.size and groups else 0,
        seconds=time.perf_counter() - start,
    )


def _warmup() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8))
    w = rng.normal(size=(2, 8))
    refine_mask(w, x.T @ x, np.tile([True, True, False, False], (2, 2)), 2, 4)
