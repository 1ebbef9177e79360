"""The SRigL / RigL mask update on numpy arrays, and RigL's drop-fraction schedule.

The mask update of SRigL (:func:`rigl_update`) drops the smallest-magnitude active weights, grows the
inactive ones with the largest dense gradient, keeps the fan-in constant and ablates rows with too
few salient weights; :func:`cosine_drop_fraction` is RigL's schedule of the drop fraction.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._jit import FANIN_PARALLEL_MIN, kernel, prange, specialise
from nmsolve._kernels import ROW_CHUNKS, kth_largest
from nmsolve._validate import as_scores, check_int, reject_nan
from nmsolve.fanin._common import as_mask, check_fraction, row_counts, rows_view
from nmsolve.fanin.mask import fanin_mask

# --------------------------------------------------------------------------- kernels


@kernel()
def _select_row(x, allowed, want, buf, out):  # type: ignore[no-untyped-def]
    """out marks the ``want`` largest x[j] with allowed[j] (ties: lower j first); all if fewer allowed."""
    count = 0
    for j in range(x.shape[0]):
        out[j] = False
        if allowed[j]:
            buf[count] = x[j]
            count += 1
    if want <= 0 or count == 0:
        return
    if want >= count:
        for j in range(x.shape[0]):
            out[j] = allowed[j]
        return
    threshold = kth_largest(buf, count, want)
    ties_allowed = want
    for j in range(x.shape[0]):
        if allowed[j] and x[j] > threshold:
            ties_allowed -= 1
    for j in range(x.shape[0]):
        if allowed[j]:
            v = x[j]
            if v > threshold:
                out[j] = True
            elif v == threshold and ties_allowed > 0:
                out[j] = True
                ties_allowed -= 1


def _select_rows(x, allowed, need, out):  # type: ignore[no-untyped-def]
    """Row r of out marks the need[r] largest allowed entries of row r of x.

    The source of two kernels (_select_kernel): rows in ROW_CHUNKS contiguous chunks in parallel,
    each with its own row of scratch (one allocation), and serial for small inputs.
    """
    rows = x.shape[0]
    chunks = min(rows, ROW_CHUNKS)
    scratch = np.empty((chunks, x.shape[1]), dtype=x.dtype)
    for c in prange(chunks):
        buf = scratch[c]
        for r in range(c * rows // chunks, (c + 1) * rows // chunks):
            _select_row(x[r], allowed[r], need[r], buf, out[r])


@functools.cache
def _select_kernel(parallel: bool) -> Any:
    """The row-selection kernel: parallel, or serial under FANIN_PARALLEL_MIN entries (one source, two
    compiled names). On 16 x 32 the parallel kernel under threads_for took 5.7 us, the serial 2.7 us."""
    name = "_select_rows_parallel" if parallel else "_select_rows_serial"
    return specialise(_select_rows, name, parallel=parallel)


# --------------------------------------------------------------------------- helpers


def _magnitude(x: np.ndarray) -> np.ndarray:
    """``|x|``: floats keep their dtype, integers become float64 first (``|int64 min|`` would overflow)."""
    return np.abs(x) if x.dtype.kind == "f" else np.abs(x.astype(np.float64))


def _select(x: np.ndarray, allowed: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Per row, the ``need[r]`` largest allowed entries of ``x`` (ties: lower index)."""
    out = np.empty(x.shape, dtype=np.bool_)
    if out.size:
        parallel = x.shape[0] > 1 and x.size >= FANIN_PARALLEL_MIN
        _select_kernel(parallel)(x, allowed, need.astype(np.int64), out)
    return out


def _select_flat(x: np.ndarray, allowed: np.ndarray, need: int) -> np.ndarray:
    """The ``need`` largest allowed entries of the whole array (ties: lower flat index).

    A threshold from ``np.partition`` of the allowed values, then one vectorised tie pass: about
    twice as fast as one quickselect over the whole layer, which cannot run in parallel.
    """
    flat, ok = x.reshape(-1), allowed.reshape(-1)
    if need <= 0:
        return np.zeros(x.shape, dtype=np.bool_)
    values = flat[ok]
    if need >= values.size:
        return allowed.copy()
    threshold = np.partition(values, values.size - need)[values.size - need]
    out = flat > threshold
    out &= ok
    ties = np.flatnonzero((flat == threshold) & ok)
    out[ties[: need - int(np.count_nonzero(out))]] = True
    return out.reshape(x.shape)


# --------------------------------------------------------------------------- public API


def cosine_drop_fraction(step: int, *, t_end: int, alpha: float = 0.3) -> float:
    """RigL's cosine-annealed drop fraction ``alpha / 2 * (1 + cos(pi * step / t_end))``, 0 from ``t_end`` on.

    Parameters
    ----------
    step : int
        Training step (``>= 0``).
    t_end : int
        Step at which mask updates stop (RigL and SRigL use 75% of the training steps).
    alpha : float, default 0.3
        Initial drop fraction, in ``[0, 1]``.

    References
    ----------
    U. Evci, T. Gale, J. Menick, P. S. Castro, E. Elsen, "Rigging the Lottery: Making All Tickets
    Winners", ICML 2020.

    Examples
    --------
    >>> cosine_drop_fraction(0, t_end=100), cosine_drop_fraction(50, t_end=100), cosine_drop_fraction(100, t_end=100)
    (0.3, 0.15, 0.0)
    """
    step = check_int(step, "step", minimum=0)
    t_end = check_int(t_end, "t_end", minimum=1)
    alpha = check_fraction(alpha, "alpha")
    if step >= t_end:
        return 0.0
    return round(alpha / 2.0 * (1.0 + math.cos(math.pi * step / t_end)), 15)


@dataclass(frozen=True, eq=False)
class RigLStep:
    """The outcome of one :func:`rigl_update`.

    Attributes
    ----------
    mask : ndarray of bool, shape of the weights
        The new constant fan-in mask.
    grown : ndarray of bool, shape of the weights
        Entries active now that were not active before: set these weights to zero (RigL's
        initialisation of new connections) and reset their optimiser state.
    active : ndarray of bool, shape (rows,)
        Rows that keep ``k`` inputs; the others are ablated.
    k : int
        The new constant fan-in (``budget // active.sum()``).
    n_dropped : int
        Previously active entries that are no longer active.
    n_grown : int
        ``grown.sum()``.
    saliency : ndarray of int64, shape (rows,)
        Salient weights per row (kept by magnitude or grown by gradient), which decided ablation.
    """

    mask: np.ndarray
    grown: np.ndarray
    active: np.ndarray
    k: int
    n_dropped: int
    n_grown: int
    saliency: np.ndarray


def rigl_update(
    weights: Any,
    grads: Any,
    mask: Any,
    *,
    drop_fraction: float,
    gamma_sal: float = 0.3,
    budget: int | None = None,
) -> RigLStep:
    """One SRigL mask update: drop by magnitude, grow by gradient, constant fan-in, neuron ablation.

    Parameters
    ----------
    weights : array_like, shape (rows, fan_in) or (rows, *fan_in_dims)
        Current weights (values outside ``mask`` are ignored). Never modified.
    grads : array_like, same shape
        The *dense* gradient of the loss with respect to the masked weight ``W * mask`` (not masked
        itself), which ranks the inactive entries for growth.
    mask : array_like of bool, same shape
        The current mask: constant fan-in ``k`` on its active rows, nothing on ablated rows.
    drop_fraction : float
        Fraction of the active weights to drop and regrow, in ``[0, 1]`` (see
        :func:`cosine_drop_fraction`).
    gamma_sal : float, default 0.3
        A row with fewer than ``gamma_sal * k`` salient weights is ablated; 0 disables ablation.
    budget : int, optional
        Number of active weights the layer may hold (default: ``mask.sum()``). Pass the layer's
        original budget on every update, so that ablations do not erode it by rounding.

    Returns
    -------
    RigLStep
        The new mask, the grown entries, active rows, the new ``k`` and counts.

    Raises
    ------
    ValueError
        Mismatched shapes, NaN, a mask that is not constant fan-in or keeps nothing, a budget
        outside ``[1, size]``.

    Notes
    -----
    With ``n`` active weights and ``d = floor(n * drop_fraction)``:

    1. *Saliency.* Keep-set: the ``n - d`` largest ``|w|`` among the active entries (layer-wide).
       Grow-set: the ``d`` largest ``|g|`` among the entries outside the keep-set. A weight in either
       set is salient; ``s_r`` counts them per row.
    2. *Ablation.* Rows with ``s_r < gamma_sal * k`` are ablated, but at least
       ``ceil(budget / fan_in)`` and at most ``budget`` rows stay active (the rows with the most
       salient weights, ties to the lower row). The new fan-in is ``k' = budget // active rows``.
    3. *Drop.* Among the active rows' entries, the ``n - d`` largest ``|w|`` are kept (layer-wide),
       then each row keeps at most its ``k'`` largest.
    4. *Grow.* Each active row is filled up to ``k'`` with the largest ``|g|`` among its entries
       outside the kept set (a just-dropped weight may come back and keeps its value).

    Every selection breaks ties toward the lower (flattened) index. ``O(size)`` expected time
    (quickselect). Ablated rows may come back when their gradients make them salient again, as in
    the published code.

    References
    ----------
    M. Lasby, A. Golubeva, U. Evci, M. Nica, Y. Ioannou, "Dynamic Sparse Training with Structured
    Sparsity", ICLR 2024. U. Evci et al., "Rigging the Lottery", ICML 2020.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.8, 0.7]])
    >>> g = np.array([[0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    >>> step = rigl_update(w, g, w != 0, drop_fraction=0.25)
    >>> step.mask.astype(int), step.k, step.n_grown
    (array([[1, 0, 1, 0],
           [0, 0, 1, 1]]), 2, 1)
    """
    w = as_scores(weights, "weights", min_ndim=2)
    g = as_scores(grads, "grads", min_ndim=2)
    if g.shape != w.shape:
        raise ValueError(f"grads has shape {g.shape} but weights have shape {w.shape}; they must match")
    reject_nan(w, "weights")
    reject_nan(g, "grads")
    keep_old = rows_view(as_mask(mask, w.shape), "mask")
    drop_fraction = check_fraction(drop_fraction, "drop_fraction")
    if isinstance(gamma_sal, (bool, np.bool_)) or not isinstance(gamma_sal, numbers.Real):
        raise TypeError(f"gamma_sal must be a real number, got {gamma_sal!r} of type {type(gamma_sal).__name__}")
    if not gamma_sal >= 0:
        raise ValueError(f"gamma_sal must be >= 0 (0 disables ablation), got gamma_sal={gamma_sal}")
    mag = _magnitude(rows_view(w, "weights"))
    grow_score = _magnitude(rows_view(g, "grads"))
    rows, fan_in = keep_old.shape
    counts = row_counts(keep_old)
    n_ones = int(counts.sum())
    if n_ones == 0:
        raise ValueError("mask keeps nothing; start from a constant fan-in mask, e.g. nmsolve.fanin_mask(scores, k)")
    k_old = int(counts[counts > 0][0])
    if not (counts[counts > 0] == k_old).all():
        bad = int(np.flatnonzero((counts > 0) & (counts != k_old))[0])
        raise ValueError(
            f"mask is not constant fan-in: rows keep {k_old} and {counts[bad]} entries (row {bad}); "
            "build it with nmsolve.fanin_mask"
        )
    budget = n_ones if budget is None else check_int(budget, "budget", minimum=1)
    if budget > rows * fan_in:
        raise ValueError(f"budget must be at most the layer size {rows * fan_in}, got budget={budget}")
    n_drop = math.floor(n_ones * drop_fraction)
    n_keep = n_ones - n_drop

    keep = _select_flat(mag, keep_old, n_keep)
    saliency = row_counts(keep | _select_flat(grow_score, ~keep, n_drop))

    # rows ranked by (saliency descending, index ascending); the first n_active stay active
    order = np.lexsort((np.arange(rows), -saliency))
    wanted = int((saliency >= gamma_sal * k_old).sum()) if gamma_sal > 0 else rows
    n_active = min(max(wanted, -(-budget // fan_in)), rows, budget)
    active = np.zeros(rows, dtype=bool)
    active[order[:n_active]] = True
    k_new = budget // n_active

    if active[counts > 0].all():  # no active row was ablated: the keep-set stands
        kept = keep
    else:
        allowed = keep_old & active[:, None]
        kept = _select_flat(mag, allowed, min(n_keep, int(allowed.sum())))
    kept_counts = row_counts(kept)
    if (kept_counts > k_new).any():  # only when revived rows lowered the fan-in
        kept = _select(mag, kept, np.minimum(kept_counts, k_new))
    need = np.where(active, k_new - row_counts(kept), 0)
    grown_any = _select(grow_score, ~kept & active[:, None], need)
    new_mask = kept | grown_any
    grown = new_mask & ~keep_old
    return RigLStep(
        mask=new_mask.reshape(w.shape),
        grown=grown.reshape(w.shape),
        active=active,
        k=k_new,
        n_dropped=int((keep_old & ~new_mask).sum()),
        n_grown=int(grown.sum()),
        saliency=saliency,
    )


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        w = np.arange(32, dtype=dtype).reshape(4, 8) - 10
        mask = fanin_mask(np.abs(w), 2)
        need = np.full(4, 2, dtype=np.int64)
        for parallel in (False, True):
            _select_kernel(parallel)(np.abs(w), mask, need, np.empty(w.shape, dtype=np.bool_))
    rigl_update(w, w, mask, drop_fraction=0.3)
