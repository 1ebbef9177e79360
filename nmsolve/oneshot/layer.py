"""prune_layer: N:M (or transposable N:M) pruning of one layer on its calibration Gram matrix."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._validate import check_bool, check_int, choose
from nmsolve.oneshot._common import check_fraction, check_layer, damped_cholesky, given_mask, row_errors
from nmsolve.oneshot.refine import MAX_SWEEPS, TOLERANCE, refine_checked
from nmsolve.oneshot.refit import refit_rows
from nmsolve.oneshot.sparsegpt import SELECT, inverse_upper, sparsegpt_sweep


@dataclass(frozen=True, eq=False)
class LayerPruneResult:
    """Outcome of :func:`prune_layer`.

    Attributes
    ----------
    mask : ndarray of bool, shape (out, in)
        The kept entries: N:M along ``in`` (and along ``out`` too for ``structure="transposable"``);
        with ``refine=True``, the method's mask improved by :func:`refine_mask`.
    weights : ndarray, shape (out, in)
        The pruned weights, zero outside ``mask``: ``W * mask``, or updated to compensate for the
        pruned ones (``"sparsegpt"``; ``refit=True`` and ``refine=True`` give the exact least-squares
        re-fit of ``mask``). Float dtype of ``W`` (float64 for integer ``W``).
    error : float
        Reconstruction error ``trace((W - weights) H (W - weights)^T)`` on the undamped ``H``.
    magnitude_error : float
        The same error for plain magnitude pruning (``W * magnitude mask``), the baseline to beat.
    reference : float
        ``trace(W H W^T) = ||X W^T||^2``, the output energy of the dense layer.
    method, structure : str
        How the mask was chosen.
    seconds : float
        Wall time of the call.
    """

    mask: np.ndarray
    weights: np.ndarray
    error: float
    magnitude_error: float
    reference: float
    method: str
    structure: str
    seconds: float

    @property
    def relative_error(self) -> float:
        """``error / reference`` (0.0 for a layer whose dense output is zero on the calibration inputs)."""
        return self.error / self.reference if self.reference > 0 else 0.0


@dataclass(frozen=True)
class _Problem:
    w: np.ndarray  # float64 [out, in], dead inputs zeroed
    h: np.ndarray  # damped H (positive definite)
    input_norms: np.ndarray  # ||X_j||: sqrt of the undamped diagonal
    chol: np.ndarray | None  # lower Cholesky factor of the reversed h (None: h is singular)
    n: int
    m: int
    structure: str
    blocksize: int


def _select(scores: np.ndarray, p: _Problem) -> np.ndarray:
    return SELECT[p.structure](scores, p.n, p.m)


def _magnitude(p: _Problem) -> tuple[np.ndarray, np.ndarray | None]:
    return _select(np.abs(p.w), p), None


def _wanda(p: _Problem) -> tuple[np.ndarray, np.ndarray | None]:
    return _select(np.abs(p.w) * p.input_norms, p), None


def _sparsegpt(p: _Problem) -> tuple[np.ndarray, np.ndarray | None]:
    if p.chol is None:
        raise ValueError("H is singular (fewer independent samples than inputs): method='sparsegpt' needs damping > 0")
    weights, mask = sparsegpt_sweep(p.w, inverse_upper(p.chol), p.n, p.m, p.structure, p.blocksize)
    return mask, weights


# method -> (description, mask selection returning (mask, updated weights or None))
METHODS: dict[str, tuple[str, Callable[[_Problem], tuple[np.ndarray, np.ndarray | None]]]] = {
    "magnitude": ("largest |W| per group; no weight update unless refit=True", _magnitude),
    "wanda": ("largest |W| * sqrt(diag H) per group (Sun et al. 2023); no update unless refit=True", _wanda),
    "sparsegpt": ("OBS sweep with error compensation (Frantar & Alistarh 2023)", _sparsegpt),
    "refit": ("the given mask, kept weights re-fitted exactly (least squares per row)", lambda p: (p.w, None)),
}


def _refine_sweeps(refine: Any) -> int:
    """``refine`` as a number of sweeps: False -> 0, True -> MAX_SWEEPS, an int k >= 0 -> k."""
    if isinstance(refine, (bool, np.bool_)):
        return MAX_SWEEPS if refine else 0
    return check_int(refine, "refine", minimum=0)


def prune_layer(
    W: Any,
    H: Any,
    n: int = 2,
    m: int = 4,
    *,
    method: str = "sparsegpt",
    structure: str = "nm",
    mask: Any = None,
    refit: bool = False,
    refine: bool | int = False,
    damping: float = 0.01,
    blocksize: int = 128,
) -> LayerPruneResult:
    """Prune one layer ``W[out, in]`` to N:M, minimising its output error on calibration inputs.

    The layer computes ``y = x W^T``; ``H = X^T X`` over calibration inputs ``X[samples, in]`` is all
    the solvers need. The error of pruned weights ``W'`` is ``trace((W - W') H (W - W')^T)``.

    Parameters
    ----------
    W : array_like, shape (out, in)
        Dense weights (float or integer; never modified).
    H : array_like, shape (in, in)
        Gram matrix ``X^T X`` of the layer's inputs (symmetric positive semidefinite, finite).
    n, m : int
        Keep ``n`` of every ``m`` consecutive weights along ``in`` (``0 < n < m``).
    method : {"sparsegpt", "magnitude", "wanda", "refit"}
        How the mask is chosen (see ``METHODS``): ``"sparsegpt"`` also updates the kept weights to
        compensate for the pruned ones; ``"refit"`` takes ``mask`` and only re-fits.
    structure : {"nm", "transposable"}
        ``"transposable"``: every ``m x m`` tile keeps ``n`` per row and per column (N:M for ``W``
        and ``W.T``); each tile is chosen by the exact transposable solver on the method's scores.
    mask : array_like of bool, shape (out, in), optional
        The mask for ``method="refit"`` (must satisfy ``structure``).
    refit : bool, default False
        Re-fit the kept weights of every row exactly (least squares on ``H``) after selecting the mask.
    refine : bool or int, default False
        Improve the method's mask with :func:`refine_mask` (swaps inside groups that lower the exact
        re-fitted error; ``structure="nm"`` only) and return it with its exact re-fit weights:
        ``True`` searches to a local optimum (at most ``MAX_SWEEPS`` sweeps), an int ``k`` at most
        ``k`` sweeps over the groups (most of the gain comes in the first few).
    damping : float, default 0.01
        ``H + damping * mean(diag H) * I`` is what the solvers see (keeps it positive definite);
        inputs with ``diag H == 0`` carry no information and are pruned first.
    blocksize : int, default 128
        Columns per lazy block of the SparseGPT sweep.

    Returns
    -------
    LayerPruneResult

    Raises
    ------
    ValueError
        NaN or inf in ``W`` or ``H``, shapes that do not match, ``H`` not symmetric positive
        semidefinite, ``in`` (or ``out`` for transposable) not a multiple of ``m``, an invalid mask.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W, X = rng.normal(size=(8, 16)), rng.normal(size=(256, 16))
    >>> res = prune_layer(W, X.T @ X, 2, 4)
    >>> bool(res.mask.reshape(8, 4, 4).sum(-1).max() == 2), res.error < res.magnitude_error
    (True, True)
    """
    start = time.perf_counter()
    w_in, h, n, m, structure = check_layer(W, H, n, m, structure)
    _, select = choose(METHODS, method)
    refit = check_bool(refit, "refit")
    sweeps = _refine_sweeps(refine)
    if sweeps and structure != "nm":
        raise ValueError(f"refine=True supports structure='nm' only so far, got structure={structure!r}")
    damping = check_fraction(damping, "damping")
    blocksize = check_int(blocksize, "blocksize", minimum=1)
    if method == "refit":
        if mask is None:
            raise ValueError("method='refit' re-fits a given mask: pass mask=")
        given = given_mask(mask, w_in.shape, n, m, structure, exact=bool(sweeps))
    elif mask is not None:
        raise ValueError(f"mask= is only used by method='refit', got method={method!r}")
    hd, dead, chol = damped_cholesky(h, damping)
    w = w_in.astype(np.float64)
    w[:, dead] = 0.0
    problem = _Problem(w, hd, np.sqrt(np.diag(h)), chol, n, m, structure, blocksize)
    keep, updated = (given, None) if method == "refit" else select(problem)
    magnitude_mask = keep if method == "magnitude" else _magnitude(problem)[0]  # the baseline, solved once
    if sweeps:
        refined = refine_checked(w_in, h, keep, m, damping, sweeps, TOLERANCE, False, start)
        keep, updated = refined.mask, refined.weights
    elif refit or method == "refit":
        updated = refit_rows(hd, w @ hd, keep, definite=damping > 0 and problem.chol is not None)
    pruned = np.where(keep, w, 0.0) if updated is None else np.where(keep, updated, 0.0)

    w0 = w_in.astype(np.float64)
    baseline = np.where(magnitude_mask, w0, 0.0)
    out_dtype = w_in.dtype if w_in.dtype.kind == "f" else np.dtype(np.float64)
    return LayerPruneResult(
        mask=keep,
        weights=pruned.astype(out_dtype),
        error=float(row_errors(w0, pruned, h).sum()),
        magnitude_error=float(row_errors(w0, baseline, h).sum()),
        reference=float(row_errors(w0, np.zeros_like(w0), h).sum()),
        method=method,
        structure=structure,
        seconds=time.perf_counter() - start,
    )
