"""Unstructured -> N:M conversion: choose n per layer, select the N:M mask, optionally re-fit the weights."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._validate import (
    as_array,
    as_scores,
    check_bool,
    check_group_length,
    check_int,
    check_nm,
    choose,
    reject_nan,
)
from nmsolve.oneshot.refit import refit_rows


@dataclass(frozen=True, eq=False)
class ConversionResult:
    """Outcome of :func:`unstructured_to_nm`.

    Attributes
    ----------
    mask : ndarray of bool, shape of W
        The N:M mask in W's own column order: ``mask[:, permutation]`` (of the 2-D view, see
        :func:`weight_to_2d`) keeps exactly ``n`` of every ``m`` consecutive columns.
    n, m : int
        The pattern (``n`` chosen by ``rule`` unless given).
    permutation : ndarray of int64, shape (in,)
        Input-channel order the mask is N:M in (the identity without ``permute``).
    density : float
        Share of entries the unstructured mask keeps.
    overlap : float
        Share of the unstructured survivors that ``mask`` keeps (1.0 when there are none).
    kept_magnitude : float
        ``sum |W|`` over ``mask``.
    surviving_kept : float
        ``sum |W|`` over ``mask`` and the unstructured mask.
    surviving_magnitude : float
        ``sum |W|`` over the unstructured mask.
    weights : ndarray, shape of W
        ``W * mask``, with each output row re-fitted on the calibration inputs when given.
    calibration_error_before, calibration_error_after : float or None
        ``||X W_q^T - X W^T||^2 / ||X W^T||^2`` for ``W * mask`` and for the re-fitted weights
        (None without calibration inputs).
    rule : str
        How ``n`` was chosen: ``"given"`` or the rule's name.
    """

    mask: np.ndarray
    n: int
    m: int
    permutation: np.ndarray
    density: float
    overlap: float
    kept_magnitude: float
    surviving_kept: float
    surviving_magnitude: float
    weights: np.ndarray
    calibration_error_before: float | None
    calibration_error_after: float | None
    rule: str

    @property
    def surviving_fraction(self) -> float:
        """Share of the unstructured survivors' magnitude that the N:M mask keeps (1.0 if none)."""
        return self.surviving_kept / self.surviving_magnitude if self.surviving_magnitude else 1.0


def expected_retention(density: float, n: int, m: int) -> float:
    """``E[min(X, n)] / E[X]`` for ``X ~ Binomial(m, density)``: the binomial-tail rule's quantity.

    The share of an unstructured mask's survivors that N:M can keep when survivors fall
    independently with probability ``density``; ``E[min(X, n)] = sum_{k=1..n} P(X >= k)``.

    Notes
    -----
    The binomial tails come from ``scipy.special.bdtrc`` (a regularised incomplete beta function),
    so large groups such as ``m = 4096`` neither overflow nor lose the tail to rounding; ``O(n)``.

    Examples
    --------
    >>> round(expected_retention(0.5, 2, 4), 4)
    0.8125
    """
    n, m = check_nm(n, m)
    if isinstance(density, (bool, np.bool_)) or not isinstance(density, (int, float, np.integer, np.floating)):
        raise TypeError(f"density must be a number in [0, 1], got {density!r} of type {type(density).__name__}")
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must lie in [0, 1], got {density}")
    density = float(density)
    if density == 0.0 or n == m:
        return 1.0
    from scipy.special import bdtrc  # P(X > k), computed without forming C(m, j) or p ** j

    # E[min(X, n)] = sum_{k=0..n-1} P(X > k), in chunks so that a huge n needs bounded memory
    expected_min = 0.0
    for start in range(0, n, 1 << 20):
        k = np.arange(start, min(n, start + (1 << 20)), dtype=np.float64)
        expected_min += float(bdtrc(k, m, density).sum())
    return min(1.0, expected_min / (m * density))


def _n_from_density(density: float, m: int, retain: float, survivors: np.ndarray) -> int:
    """The smallest n with n/m at least the density."""
    return min(m, max(1, math.ceil(density * m - 1e-12)))


def _n_from_binomial(density: float, m: int, retain: float, survivors: np.ndarray) -> int:
    """The smallest n whose expected retention of randomly placed survivors reaches ``retain``."""
    return next(n for n in range(1, m + 1) if expected_retention(density, n, m) >= retain - 1e-12)


def _n_from_survivors(density: float, m: int, retain: float, survivors: np.ndarray) -> int:
    """The smallest n that keeps ``retain`` of this mask's survivors (without permutation)."""
    total = survivors.sum()
    if total == 0:
        return 1
    counts = survivors.reshape(survivors.shape[0], -1, m).sum(axis=2)
    return next(n for n in range(1, m + 1) if np.minimum(counts, n).sum() >= retain * total - 1e-9)


# How unstructured_to_nm chooses n when it is not given (rule= name -> function).
RULES = {"density": _n_from_density, "binomial": _n_from_binomial, "empirical": _n_from_survivors}


def _select(absw: np.ndarray, survivors: np.ndarray, perm: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M on the columns in order ``perm``: survivors first (by |W|), then the largest other |W|.

    Ties break toward the lower position in permuted order; the mask is returned un-permuted.
    """
    rows, cols = absw.shape
    a = absw[:, perm].reshape(-1, m)
    s = survivors[:, perm].reshape(-1, m)
    position = np.broadcast_to(np.arange(m), a.shape)
    order = np.lexsort((position, -a, ~s), axis=-1)[:, :n]
    picked = np.zeros(a.shape, dtype=bool)
    np.put_along_axis(picked, order, True, axis=1)
    mask = np.empty((rows, cols), dtype=bool)
    mask[:, perm] = picked.reshape(rows, cols)
    return mask


def _row_errors(delta: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """Per row ``d^T G d``: the squared output error of each row on the calibration inputs (>= 0)."""
    return np.maximum(np.einsum("ij,ij->i", delta @ gram, delta), 0.0)


def _refit(
    w: np.ndarray, masked: np.ndarray, mask: np.ndarray, gram: np.ndarray, ridge: float, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge re-fit of the kept weights of every row; a row keeps ``masked`` unless strictly better.

    ``w`` (float64) and ``gram`` are scaled (``w = W / scale``), so that squares neither under- nor
    overflow; ``masked`` is ``W * mask`` in the output dtype. Returns (weights in the output dtype,
    row errors of ``masked``, row errors of the result), errors in scaled units.
    """
    rows, cols = w.shape
    err_masked = _row_errors(masked.astype(np.float64) / scale - w, gram)
    out = masked.copy()
    if not rows or not mask.any():
        return out, err_masked, err_masked.copy()
    diag = float(np.mean(np.diag(gram)))
    lam = ridge * (diag if diag > 0 else 1.0)
    ridged = gram + lam * np.eye(cols)
    with np.errstate(over="ignore", invalid="ignore"):
        out = (refit_rows(ridged, w @ gram, mask, definite=lam > 0) * scale).astype(out.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        err_out = _row_errors(out.astype(np.float64) / scale - w, gram)
    worse = ~(err_out < err_masked)  # keep W * mask unless strictly better (also catches NaN, inf)
    out[worse] = masked[worse]
    err_out[worse] = err_masked[worse]
    return out, err_masked, err_out


def unstructured_to_nm(
    W: Any,
    mask: Any = None,
    *,
    n: int | None = None,
    m: int = 4,
    permute: bool = False,
    calibration: Any = None,
    rule: str = "binomial",
    retain: float = 0.8,
    ridge: float = 1e-2,
    rng: Any = None,
    permutation_method: str = "tabu",
    time_limit: float | None = None,
    progress: bool = False,
) -> ConversionResult:
    """Convert an unstructured sparse layer to N:M, keeping as much of its surviving magnitude as possible.

    Parameters
    ----------
    W : array_like, shape (out, in) or (out, in, *kernel)
        Weights (dense or already pruned), any real dtype. Conv weights are handled on their
        channel-last view ``[out * prod(kernel), in]``; ``in`` must be a multiple of ``m``.
    mask : array_like of bool, shape of W, optional
        The unstructured mask (nonzero = kept). Default: ``W != 0`` (W already pruned).
    n : int, optional
        Keep ``n`` of every ``m``; chosen by ``rule`` from the mask's density when omitted.
    m : int, default 4
        Group length.
    permute : bool, default False
        Search an input-channel permutation first (:func:`channel_permutation` on the survivors'
        magnitudes ``|W| * mask``) and select the N:M mask in that column order.
    calibration : array_like, shape (samples, in) or (..., in), optional
        Inputs ``X`` of the layer (2-D ``W`` only). When given, every output row's kept weights are
        re-fitted by ridge least squares so that ``X @ W_q.T`` reproduces ``X @ W.T``.
    rule : {"binomial", "density", "empirical"}, default "binomial"
        How to choose ``n`` from the density ``d`` of the unstructured mask (see Notes).
    retain : float, default 0.8
        Target share of survivors kept, for the ``"binomial"`` and ``"empirical"`` rules.
    ridge : float, default 1e-2
        Ridge strength relative to the mean diagonal of ``X^T X``.
    rng : None, int or numpy Generator
        Seed of the permutation search.
    permutation_method : str, default "tabu"
        ``method`` passed to :func:`channel_permutation`.
    time_limit : float, optional
        Time limit of the permutation search in seconds.
    progress : bool, default False
        Progress bar for the permutation search.

    Returns
    -------
    ConversionResult
        The mask, the chosen ``n``, overlap with the unstructured mask, kept magnitudes, the
        (re-fitted) weights and the calibration error before/after the re-fit.

    Raises
    ------
    ValueError
        NaN in ``W`` or ``calibration``, ``in`` not a multiple of ``m``, shapes that do not match,
        calibration for a conv weight, an unknown rule.

    Notes
    -----
    **Choosing n.** ``"binomial"`` (default): the smallest ``n`` whose expected retention
    ``E[min(X, n)] / E[X]``, ``X ~ Binomial(m, d)`` (a sum of binomial tails, see
    :func:`expected_retention`), reaches ``retain``: the density at which N:M keeps that share of
    randomly placed survivors. ``"empirical"``: the smallest ``n`` whose N:M mask keeps
    ``retain`` of this mask's survivors (without permutation). ``"density"``: ``ceil(d * m)``.

    **Selection.** Per group, survivors are kept first (largest ``|W|`` first), free slots go to
    the largest other ``|W|`` (zero weights when W is already pruned), so exactly ``n`` of every
    ``m`` are kept; this maximises the surviving magnitude kept. Ties break toward the lower
    column (in permuted order).

    **Re-fit.** With ``G = X^T X``, row ``r`` keeps columns ``S`` and solves
    ``(G_SS + lambda I) w_S = (G w_r)_S``, ``lambda = ridge * mean(diag G)``; a row whose re-fit
    error ``(w - w_r)^T G (w - w_r)`` is not strictly below that of ``W * mask`` keeps ``W * mask``, so the
    calibration error never increases. Cost ``O(samples * in^2 + out * k^3)`` with ``k`` kept
    weights per row; numpy only.

    References
    ----------
    I. Hubara et al., "Accelerated Sparse Neural Training: A Provable and Efficient Method to Find
    N:M Transposable Masks", NeurIPS 2021.

    Examples
    --------
    >>> import numpy as np, nmsolve
    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(16, 32))
    >>> W[np.abs(W) < np.quantile(np.abs(W), 0.6)] = 0.0  # unstructured, 40% dense
    >>> res = unstructured_to_nm(W, m=4, calibration=rng.normal(size=(64, 32)))
    >>> res.n, round(res.density, 2)
    (2, 0.4)
    >>> bool(nmsolve.is_nm(res.mask, res.n, 4, exact=True))
    True
    >>> res.calibration_error_after <= res.calibration_error_before
    True
    """
    from nmsolve.layout import weight_from_2d, weight_to_2d

    permute = check_bool(permute, "permute")
    progress = check_bool(progress, "progress")
    w_in = as_scores(W, "W", min_ndim=2)
    reject_nan(w_in, "W")
    matrix, layout = weight_to_2d(w_in)
    m = check_int(m, "m", minimum=1)
    choose_n = choose(RULES, rule, "rule")
    if isinstance(retain, (bool, np.bool_)) or not isinstance(retain, (int, float, np.floating)) or not 0 < retain <= 1:
        raise ValueError(f"retain must be a number in (0, 1], got {retain!r}")
    if isinstance(ridge, (bool, np.bool_)) or not isinstance(ridge, (int, float, np.floating)) or not ridge >= 0:
        raise ValueError(f"ridge must be a number >= 0, got {ridge!r}")
    check_group_length(matrix.shape[1], m, 1, pad=False)

    if mask is None:
        survivors = matrix != 0
    else:
        given = as_array(mask, "mask")
        if given.shape != w_in.shape:
            raise ValueError(f"mask has shape {given.shape} but W has shape {w_in.shape}; they must match")
        if given.dtype.kind not in "biuf":
            raise TypeError(f"mask must be boolean or numeric (nonzero = kept), got dtype {given.dtype}")
        survivors = weight_to_2d(given != 0)[0]
    density = float(survivors.mean()) if survivors.size else 0.0

    if n is None:
        n = choose_n(density, m, float(retain), survivors)
        chosen_by = rule
    else:
        chosen_by = "given"
    n, m = check_nm(n, m)

    w64 = matrix.astype(np.float64)
    absw = np.abs(w64)
    cols = matrix.shape[1]
    perm = np.arange(cols, dtype=np.int64)
    if permute and survivors.any():
        from nmsolve.permutation import channel_permutation

        perm = channel_permutation(
            np.where(survivors, absw, 0.0),
            n,
            m,
            method=permutation_method,
            rng=rng,
            time_limit=time_limit,
            progress=progress,
        ).permutation
    nm = _select(absw, survivors, perm, n, m)

    out_dtype = matrix.dtype if matrix.dtype.kind == "f" else np.dtype(np.float64)
    err_before = err_after = None
    if calibration is not None:
        if w_in.ndim != 2:
            raise ValueError("calibration inputs need a 2-d weight [out, in]; convert conv layers without calibration")
        x = as_scores(calibration, "calibration", min_ndim=1)
        reject_nan(x, "calibration")
        if x.shape[-1] != cols:
            raise ValueError(f"calibration has {x.shape[-1]} features in its last axis, W has in={cols}")
        x = x.reshape(-1, cols).astype(np.float64)
        if not np.isfinite(x).all() or not np.isfinite(w64).all():
            raise ValueError("calibration re-fit needs finite W and calibration inputs (inf found)")
        # the relative error and the re-fit are invariant to scaling W and X: work on W / max|W| and
        # X / max|X| so that squared magnitudes neither underflow nor overflow
        w_scale = float(np.abs(w64).max()) if w64.size else 1.0
        w_scale = w_scale if w_scale > 0 else 1.0
        x_scale = float(np.abs(x).max()) if x.size else 1.0
        x_scale = x_scale if x_scale > 0 else 1.0
        xs = x / x_scale
        gram = xs.T @ xs
        ws = w64 / w_scale
        masked = np.where(nm, matrix, 0).astype(out_dtype)
        weights, err_masked, err_fit = _refit(ws, masked, nm, gram, float(ridge), w_scale)
        reference = float(_row_errors(ws, gram).sum())
        # X W^T can be zero by cancellation, leaving a reference of rounding noise: with no relative
        # scale, the errors are reported in scaled units (as for an exact zero)
        bound = float(_row_errors(np.abs(ws), np.abs(gram)).sum())
        denom = reference if reference > 1e-12 * bound else 1.0
        err_before = float(err_masked.sum()) / denom
        err_after = float(err_fit.sum()) / denom
    else:
        weights = np.where(nm, matrix, 0).astype(out_dtype)

    with np.errstate(over="ignore"):  # magnitudes near the float64 limit sum to inf, as they should
        kept_surv = float(absw[nm & survivors].sum())
        surv_total = float(absw[survivors].sum())
        kept_total = float(absw[nm].sum())
    n_surv = int(survivors.sum())
    return ConversionResult(
        mask=weight_from_2d(nm, layout),
        n=n,
        m=m,
        permutation=perm,
        density=density,
        overlap=float((nm & survivors).sum()) / n_surv if n_surv else 1.0,
        kept_magnitude=kept_total,
        surviving_kept=kept_surv,
        surviving_magnitude=surv_total,
        weights=weight_from_2d(weights, layout),
        calibration_error_before=err_before,
        calibration_error_after=err_after,
        rule=chosen_by,
    )
