"""Transposable N:M masks: N:M along the rows AND along the columns of every aligned m x m tile.

A transposable mask serves ``W`` in the forward pass and ``W.T`` in the backward pass (Hubara et al.,
2021). Every constraint lies inside one aligned ``m x m`` tile, so tiles are solved independently;
each tile is a maximum-weight bipartite b-matching (rows and columns of degree exactly ``n``, unit
edge capacities) whose LP is integral.

Solvers (``method=``):

* ``"mcf"`` (default, exact): a Numba primal-dual (Hungarian-type) b-matching solver written for tiny
  dense tiles, its warm start vectorised over batches of tiles, parallel over tiles; ``m = 4`` uses a
  vectorised enumeration of every valid tile.
* ``"approx"``: the greedy 1/2-approximation of the paper, repaired so that every row and column of
  every tile keeps exactly ``n``, improved by one pass of 2-row exchanges, with a checked guarantee.
* ``"networkx"`` / ``"ortools"``: reference exact solvers (min-cost flow on integer-scaled costs), used
  as oracles and benchmark baselines.

``METHODS`` is the one table of these methods: it documents them and ``transposable_mask`` dispatches
through it. Modules: ``_mcf`` (exact), ``_approx`` (approximation), ``_flow`` (reference flows),
``_tiles`` (what ``_mcf`` and ``_approx`` share: the exact solver of one tile, the loop over tiles).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._jit import TRANSPOSABLE_PARALLEL_MIN
from nmsolve._validate import as_array, as_scores, check_bool, check_group_length, check_nm, choose
from nmsolve.transposable._approx import approx_mask
from nmsolve.transposable._flow import FLOW_RESOLUTION, networkx_mask, ortools_mask
from nmsolve.transposable._mcf import mcf_mask
from nmsolve.transposable._tiles import kept_sum

__all__ = [
    "FLOW_RESOLUTION",
    "METHODS",
    "Method",
    "TransposableResult",
    "is_transposable",
    "transposable_mask",
    "transposable_report",
]


@dataclass(frozen=True)
class Method:
    """One entry of :data:`METHODS`: what a method does, and the function that runs it.

    Attributes
    ----------
    summary : str
        One line for documentation and listings.
    solve : callable
        ``solve(x, n, m, progress) -> mask`` on a checked, non-empty, C-contiguous 2-D float
        matrix ``x`` (see ``_check_matrix``); returns a bool mask of its shape.

    Examples
    --------
    >>> from nmsolve.transposable import METHODS
    >>> sorted(METHODS)
    ['approx', 'mcf', 'networkx', 'ortools']
    >>> METHODS["mcf"].summary.split(":")[0]
    'exact'
    """

    summary: str
    solve: Callable[[np.ndarray, int, int, bool], np.ndarray]


# The methods of transposable_mask by name: the one table that documents and dispatches them.
METHODS: dict[str, Method] = {
    "mcf": Method("exact: Numba primal-dual b-matching per tile (enumeration of all valid tiles for m = 4)", mcf_mask),
    "approx": Method(
        "greedy 1/2-approximation, repaired to exactly n per row and column, one exchange pass", approx_mask
    ),
    "networkx": Method("exact reference: networkx network simplex per tile on integer-scaled costs", networkx_mask),
    "ortools": Method(
        "exact reference: one OR-Tools min-cost flow for many tiles on integer-scaled costs", ortools_mask
    ),
}

# The method whose kept magnitude is the optimum of transposable_report.
_OPTIMUM = "mcf"


# The largest tile side: each m x m tile is one b-matching with m x m workspace per thread.
MAX_M = 1024


def _check_matrix(weights: Any, n: int, m: int, pad: bool) -> tuple[np.ndarray, int, int]:
    """``(x, n, m)`` checked: x a C-contiguous 2-D float32 or float64 matrix (integers become float64),
    its dimensions multiples of m unless ``pad``; the same errors as every public function."""
    n, m = check_nm(n, m, allow_dense=False)
    if m > MAX_M:
        raise ValueError(
            f"m={m} is larger than the transposable solvers handle (m <= {MAX_M}): every m x m tile is solved "
            "as one b-matching with m x m workspace; use a smaller m"
        )
    x = as_scores(weights, "W")
    if x.ndim != 2:
        raise ValueError(
            f"W must be a 2-D matrix, got a {x.ndim}-d array of shape {x.shape}; for conv or other N-D weights "
            "use nmsolve.apply_2d(nmsolve.transposable_mask, W, ...) or nmsolve.weight_to_2d"
        )
    check_group_length(x.shape[0], m, 0, pad)
    check_group_length(x.shape[1], m, 1, pad)
    if x.dtype.kind in "iu":  # compared as float64 anyway; keeps to two compiled variants
        x = x.astype(np.float64)
    return np.ascontiguousarray(x), n, m


def _run(x: np.ndarray, n: int, m: int, method: Method, progress: bool) -> np.ndarray:
    """The mask of the checked matrix ``x`` by ``method`` (an entry of METHODS)."""
    if x.size == 0:
        return np.zeros(x.shape, dtype=bool)
    return method.solve(x, n, m, progress)


def transposable_mask(
    W: Any, n: int = 2, m: int = 4, *, method: str = "mcf", pad: bool = False, progress: bool = False
) -> np.ndarray:
    """Transposable N:M mask: exactly ``n`` of every ``m`` along rows AND columns, keeping most ``|W|``.

    Every aligned ``m x m`` tile keeps exactly ``n`` entries in each of its rows and each of its
    columns, so the mask is N:M for ``W`` (groups along rows) and for ``W.T``; the kept magnitude
    ``sum(|W|[mask])`` is maximised (exactly, or approximately for ``method="approx"``).

    Parameters
    ----------
    W : array_like, shape (rows, cols)
        Weights or scores. Their magnitudes ``|W|`` are maximised, so signed weights can be passed
        as they are; to maximise a signed score instead, shift it to be non-negative first.
        float16/32/64 and integer dtypes are accepted (integers are compared as float64);
        ``inf`` counts as larger than any finite value; NaN is an error. Never modified.
    n, m : int
        Keep ``n`` of every ``m`` (``0 < n < m``, any such pair, e.g. 2:4, 4:8, 8:16, 3:8).
    method : {"mcf", "approx", "networkx", "ortools"}, default "mcf"
        ``"mcf"``: the exact optimum of every tile (fast, compiled, parallel over tiles).
        ``"approx"``: the greedy 1/2-approximation of Hubara et al., repaired and improved; at
        least half the optimum of every tile (see Notes), usually within 0.5%.
        ``"networkx"``, ``"ortools"``: reference min-cost-flow solvers (slow; for checking).
    pad : bool, default False
        If a dimension is not a multiple of ``m``: raise (False), or solve the matrix as if
        zero-padded to whole tiles and crop the result (True); then rows and columns of a partial
        tile that are shorter than ``m`` keep at most ``n`` (see :func:`is_transposable`).
    progress : bool, default False
        Show a tqdm progress bar over tiles.

    Returns
    -------
    mask : ndarray of bool, shape (rows, cols)

    Raises
    ------
    ValueError
        NaN in ``W``, ``n``/``m`` out of range, a non-2-D ``W``, a dimension that is not a multiple
        of ``m`` without ``pad``, an unknown ``method``.
    TypeError
        Non-integer ``n``/``m``; bool, complex or object ``W``.

    Notes
    -----
    **Exact solver.** Each tile is a maximum-weight bipartite b-matching (row and column degrees
    exactly ``n``, unit capacities). ``"mcf"`` runs a primal-dual (Hungarian-type) algorithm in
    float64: a few sweeps of coordinate descent on the LP dual give potentials, each row keeps its
    best ``n`` edges in reduced weight, over-full columns shed their worst edges, and successive
    shortest augmenting paths (dense Dijkstra on ``2m`` nodes) place the shed units while keeping
    complementary slackness, which certifies optimality. The sweeps and the rows' selection run
    vectorised over batches of tiles (sorting networks, one loop over the tiles per comparator);
    most tiles are optimal after them and need no augmenting path. ``O(n m^3)`` worst case per
    tile, far less in practice. For ``m = 4`` every valid tile (90 for 2:4, 24 for 1:4 and 3:4) is
    scored, vectorised over tiles (2:4: each of the 36 choices for the top two rows with the best
    compatible bottom two rows, a straight-line kernel). "Exact" means
    up to the rounding of float64 sums over a tile: masks whose kept magnitudes differ by less
    than about ``n * m * 2**-52 * max|W_tile|`` (that times ``m*m + 1`` in a tile holding
    ``inf``) may be ranked either way, e.g. the choice among entries of 1.0 next to a 1e300.

    **Ties.** The result is a deterministic function of each tile's values, the same for any
    number of threads. Among tiles of equal weight, ``m = 4`` returns the first in lexicographic
    order of the per-row subsets (rows top to bottom, subsets in ``itertools.combinations``
    order); other sizes return the one the solver reaches scanning rows and columns in
    increasing index. Different methods may return different masks of equal weight: compare
    objectives, not masks. ``inf`` entries: the optimum keeps as many as possible, then the most
    finite magnitude.

    **Approximation.** The greedy keeps edges in decreasing weight while their row and column
    have room; it may leave rows and columns short of ``n``. Repair: a short row ``i`` and a
    short column ``j`` always admit a swap that adds ``(i, j1)`` and ``(i2, j)`` and drops
    ``(i2, j1)``; the best such swap is applied until every degree is ``n``. One pass of 2-row
    exchanges (swap one kept column between two rows when that gains weight) follows.

    *Guarantee: every tile keeps at least half of its optimum.* Let ``G`` be the greedy
    b-matching and ``O`` an optimal tile. Each edge of ``O`` not in ``G`` was rejected because
    an endpoint ``x`` already held ``n`` heavier edges; at ``x``, ``O`` has at most as many such
    edges as ``G`` has edges not in ``O``, so charge them one-to-one; each edge of ``G`` is
    charged at most twice (once per endpoint) by lighter edges, hence ``w(O) <= 2 w(G)``. The
    repair may remove weight, so it is not trusted blindly: the result ``R`` is kept only if
    ``2 w(R) >= min(2 w(G), D)``, where ``D >= w(O)`` is the LP-dual bound of the greedy
    potentials (weak duality); otherwise that tile is solved exactly. Either way
    ``w(R) >= w(O) / 2``. The check rarely fails (about one 2:4 tile in 100 000 on Gaussian and
    MiniLM weights, none at 4:8 and above in the benchmark). Cost: ``O(m^3)`` per tile (sorting
    networks, Gale-Shapley proposals, the exchange pass), linear in the size of ``W``. On CPU
    this is several times slower than ``"mcf"``, whose warm start is vectorised over tiles and
    leaves little to do (see the benchmark): use ``"approx"`` to reproduce the paper's method or
    as a baseline, ``"mcf"`` otherwise.

    **Reference backends.** ``"networkx"`` and ``"ortools"`` solve the same flow with integer
    profits: each tile is scaled so its largest finite magnitude becomes ``FLOW_RESOLUTION``
    (``2**30``) and rounded, so masks whose weights differ by less than about
    ``n * m * max|W_tile| / 2**30`` can be ordered wrongly (near-ties) and the reference
    objective is optimal only within that. Float costs are avoided because float network
    simplex may fail to terminate.

    References
    ----------
    .. [1] I. Hubara, B. Chmiel, M. Island, R. Banner, S. Naor, D. Soudry, "Accelerated Sparse
       Neural Training: A Provable and Efficient Method to Find N:M Transposable Masks",
       NeurIPS 2021.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.array([[16.0, -8, 11, 2],
    ...               [15, 7, -5, 12],
    ...               [-14, 13, 1, 9],
    ...               [4, 3, 6, -10]])
    >>> mask = transposable_mask(W, n=2, m=4)
    >>> mask.astype(int)
    array([[1, 0, 1, 0],
           [0, 1, 0, 1],
           [1, 1, 0, 0],
           [0, 0, 1, 1]])
    >>> float(np.abs(W)[mask].sum())
    89.0

    On this tile the plain greedy keeps 16, 15, 13, 12, 11, 10, 6 and then finds no edge for row 2
    and column 1 (83.0 kept, one entry short); ``"approx"`` repairs it:

    >>> approx = transposable_mask(W, 2, 4, method="approx")
    >>> is_transposable(approx, 2, 4, exact=True), float(np.abs(W)[approx].sum())
    (True, 89.0)
    """
    solver = choose(METHODS, method)
    x, n, m = _check_matrix(W, n, m, pad)
    return _run(x, n, m, solver, check_bool(progress, "progress"))


def is_transposable(mask: Any, n: int, m: int, *, exact: bool = False, pad: bool = False) -> bool:
    """Whether ``mask`` keeps at most (``exact=True``: exactly) ``n`` of every ``m`` in EVERY row group
    and EVERY column group of every aligned ``m x m`` tile.

    Parameters
    ----------
    mask : array_like, shape (rows, cols)
        A boolean mask, or any numeric matrix where nonzero means kept (e.g. pruned weights).
    n, m : int
        The pattern (``0 < n <= m``).
    exact : bool, default False
        Require exactly ``n`` per group.
    pad : bool, default False
        Accept dimensions that are not multiples of ``m``: groups shorter than ``m`` (in the
        last, partial tiles) must keep at most ``min(n, length)``, even with ``exact``, since a
        zero-padded tile may place some of its ``n`` in the padding. Otherwise a ragged
        dimension raises, like :func:`transposable_mask`.

    Notes
    -----
    A row group is ``m`` consecutive entries of one row inside a tile, a column group ``m``
    consecutive entries of one column; all ``rows * cols / m`` of each kind are checked.

    Examples
    --------
    >>> import numpy as np
    >>> eye = np.kron(np.eye(2, dtype=bool), np.ones((2, 2), dtype=bool))
    >>> is_transposable(eye, 2, 4, exact=True)
    True
    >>> rows_only = np.array([[1, 1, 0, 0]] * 4)
    >>> is_transposable(rows_only, 2, 4)
    False
    """
    n, m = check_nm(n, m)
    exact = check_bool(exact, "exact")
    arr = as_array(mask, "mask")
    if arr.ndim != 2:
        raise ValueError(f"mask must be a 2-D matrix, got a {arr.ndim}-d array of shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"mask must be boolean or numeric, got dtype {arr.dtype}")
    check_group_length(arr.shape[0], m, 0, pad)
    check_group_length(arr.shape[1], m, 1, pad)
    kept = arr != 0
    return _groups_ok(kept, n, m, exact) and _groups_ok(kept.T, n, m, exact)


def _groups_ok(kept: np.ndarray, n: int, m: int, exact: bool) -> bool:
    """Check every group of m consecutive entries along the last axis (a ragged tail: <= min(n, len))."""
    length = kept.shape[1]
    full = length - length % m
    counts = kept[:, :full].reshape(kept.shape[0], full // m, m).sum(axis=-1)
    ok = bool((counts == n).all()) if exact else bool((counts <= n).all())
    tail = kept[:, full:].sum(axis=-1)
    return ok and bool((tail <= min(n, length % m)).all())


@dataclass(frozen=True)
class TransposableResult:
    """A transposable mask with its quality (from :func:`transposable_report`).

    Attributes
    ----------
    mask : ndarray of bool, shape (rows, cols)
        The mask returned by the method.
    method : str
        The method that produced ``mask``.
    n, m : int
        The pattern.
    objective : float
        Kept magnitude ``sum(|W|[mask])`` (float64 accumulation).
    optimum : float
        The exact optimum: the kept magnitude of ``method="mcf"``.
    gap : float
        Relative optimality gap ``(optimum - objective) / optimum``: 0.0 for an exact method (or
        when both are equal, including 0), at most 0.5 for ``"approx"``; NaN if ``W`` holds
        ``inf`` and the two differ. The integer-scaled reference methods may show gaps of the
        order of 1e-9 (near-ties, see :func:`transposable_mask`).
    seconds : float
        Wall time of ``method`` alone (the exact optimum for ``optimum`` is not included).
    """

    mask: np.ndarray
    method: str
    n: int
    m: int
    objective: float
    optimum: float
    gap: float
    seconds: float

    @property
    def ratio(self) -> float:
        """``objective / optimum`` (1.0 when both are equal), i.e. ``1 - gap``."""
        return 1.0 - self.gap


def transposable_report(
    W: Any, n: int = 2, m: int = 4, *, method: str = "mcf", pad: bool = False, progress: bool = False
) -> TransposableResult:
    """Solve like :func:`transposable_mask` and report the objective, the exact optimum and the gap.

    Parameters
    ----------
    W, n, m, method, pad, progress
        As for :func:`transposable_mask`.

    Returns
    -------
    TransposableResult
        ``mask``, ``objective`` (kept ``|W|``), ``optimum`` (kept ``|W|`` of the exact ``"mcf"``
        mask, computed as well unless ``method="mcf"``), relative ``gap``, ``seconds``.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).normal(size=(64, 64))
    >>> exact = transposable_report(W, 4, 8)
    >>> exact.gap
    0.0
    >>> approx = transposable_report(W, 4, 8, method="approx")
    >>> bool(approx.objective <= approx.optimum == exact.objective), bool(approx.gap < 0.02)
    (True, True)
    """
    solver = choose(METHODS, method)
    x, n, m = _check_matrix(W, n, m, pad)
    start = time.perf_counter()
    mask = _run(x, n, m, solver, check_bool(progress, "progress"))
    seconds = time.perf_counter() - start
    objective = _objective(x, mask)
    exact = METHODS[_OPTIMUM]
    optimum = objective if solver is exact else _objective(x, _run(x, n, m, exact, False))
    return TransposableResult(mask, method, n, m, objective, optimum, _gap(objective, optimum), seconds)


def _objective(x: np.ndarray, mask: np.ndarray) -> float:
    """Kept magnitude ``sum(|x|[mask])`` of a checked matrix, accumulated in float64."""
    return kept_sum(x, mask)


def _gap(objective: float, optimum: float) -> float:
    if objective == optimum:
        return 0.0
    if not (math.isfinite(objective) and math.isfinite(optimum)):
        return math.nan
    return (optimum - objective) / optimum


def _warmup() -> None:
    """Compile the serial and the parallel kernels of mcf and approx for 2:4 and 4:8, both dtypes."""
    for dtype in (np.float32, np.float64):
        for rows in (8, TRANSPOSABLE_PARALLEL_MIN // 64):  # the serial and the parallel kernels
            x = np.arange(64 * rows, dtype=dtype).reshape(rows, 64)
            for method in ("mcf", "approx"):
                transposable_mask(x, 2, 4, method=method)
                transposable_mask(x, 4, 8, method=method)
            _objective(x, np.ones(x.shape, dtype=bool))
