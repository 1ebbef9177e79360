"""What the exact (``mcf``) and approximate (``approx``) transposable solvers share.

* the exact solver of one tile (:func:`mcf_tile`, :func:`mcf_complete`), which ``mcf`` finishes its
  vectorised warm start with and ``approx`` falls back on where its guarantee is not certified;
* the selection networks that sort a tile's rows or columns (:func:`network`);
* how a solver's kernels are made and run (:func:`tile_solver`, :func:`solve_chunks`);
* the kept magnitude of a mask (:func:`kept_sum`), for :func:`~nmsolve.transposable_report`.

Compilation. Every solver path is one template function ``f(x, t0, t1, tiles_per_row, out, *args)``
that solves tiles t0..t1-1 in a prange loop over its work items and returns (first tile holding
NaN, first failed tile, a count), each tile -1 if none. It is compiled on its first use, as nm.py
does (_jit.specialise gives each kernel a name of its own): inputs below TRANSPOSABLE_PARALLEL_MIN
entries run a serial kernel (they would run on one thread anyway, and it compiles in a fraction of
the time of a parallel one), larger inputs a parallel one. Rare tiles (padding, inf, NaN, huge
magnitudes, approx's exact fallback) are left to a small kernel of their own (run_deferring),
compiled only when such a tile occurs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from nmsolve._jit import TRANSPOSABLE_PARALLEL_MIN, kernel, prange, specialise
from nmsolve._kernels import sort_lanes, sorting_network
from nmsolve._progress import progress_bar
from nmsolve._validate import reject_nan

# Tiles per parallel work item of the per-tile kernels, and tiles per vectorised m = 4 run; exact
# m > 4 tiles go in batches of about BATCH_VALUES values (at least 16 tiles, at most BLOCK).
BLOCK = 64
CHUNK4 = 256
BATCH_VALUES = 4096
# Tiles per kernel call when a progress bar is shown (without one, a call solves every tile).
PROGRESS_TILES = 1 << 14


def network(m: int, n: int = 0) -> np.ndarray:
    """The sorting network for m lanes (n = 0), or only the comparators that reach outputs n - 1 and
    n, which is all that selecting the n-th and (n+1)-th largest needs."""
    return sorting_network(m, frozenset({n - 1, n}) if n else None)


def is_parallel(x: np.ndarray) -> bool:
    """Whether ``x`` is large enough for the parallel kernels. Smaller inputs run serial ones: they
    would run on one thread anyway (waking the thread pool costs more than they take), and a serial
    kernel compiles in a fraction of the time."""
    return x.size >= TRANSPOSABLE_PARALLEL_MIN


def solve_chunks(
    x: np.ndarray, n: int, m: int, method: str, progress: bool, chunk: Callable[..., tuple[int, int, int]]
) -> tuple[np.ndarray, int]:
    """Solve every m x m tile of ``x`` (row-major order, zero-padded at the edges) with
    ``chunk(out, t0, t1, tiles_per_row)`` (see tile_solver).

    One call covers every tile, or, with a progress bar, chunks of at least PROGRESS_TILES tiles (and
    at least one tile row). A NaN raises the usual error (naming its first index); a failed tile,
    which would be a bug, raises RuntimeError. Returns the mask and the number of tiles solved
    exactly by approx's fallback.
    """
    out = np.zeros(x.shape, dtype=np.bool_)
    tiles_per_row = -(-x.shape[1] // m)
    total = -(-x.shape[0] // m) * tiles_per_row
    step = max(PROGRESS_TILES, tiles_per_row) if progress else max(total, 1)
    exact = 0
    bar = progress_bar(total, progress, f"transposable {n}:{m} {method}", "tile")
    for t0 in range(0, total, step):
        t1 = min(total, t0 + step)
        nan, fail, solved = chunk(out, t0, t1, tiles_per_row)
        if nan >= 0:
            reject_nan(x, "W")
        if fail >= 0:  # pragma: no cover - defensive, a bug if it ever happens
            raise RuntimeError(f"transposable {method} failed on tile {fail}; please report this input")
        exact += int(solved)
        if bar is not None:
            bar.update(t1 - t0)
    if bar is not None:
        bar.close()
    return out, exact


@functools.cache
def _kernel(template: Callable[..., Any], name: str, parallel: bool) -> Any:
    if parallel:
        return specialise(template, f"{name}_parallel", parallel=True)
    return specialise(template, f"{name}_serial")


def tile_solver(template: Callable[..., Any], name: str, x: np.ndarray) -> Callable[..., tuple[int, int, int]]:
    """``solve(out, t0, t1, tiles_per_row, *args)``: the kernel of ``template`` for ``x``, serial or
    parallel by its size (see the module docstring), compiled on first use. ``name`` names the
    kernels (one name per template)."""
    compiled = _kernel(template, name, is_parallel(x))

    def solve(out: np.ndarray, t0: int, t1: int, tiles_per_row: int, *args: Any) -> tuple[int, int, int]:
        return compiled(x, t0, t1, tiles_per_row, out, *args)  # type: ignore[no-any-return]

    return solve


def run_deferring(
    solve: Callable[..., tuple[int, int, int]],
    finish: Callable[[np.ndarray, np.ndarray, np.ndarray, int], tuple[int, int, int]],
    out: np.ndarray,
    t0: int,
    t1: int,
    tiles_per_row: int,
    *args: Any,
) -> tuple[int, int, int]:
    """Tiles t0..t1-1 by ``solve(out, t0, t1, tiles_per_row, flags, *args)``, which may leave some to
    ``finish(tiles, kinds, out, tiles_per_row)``; returns (first NaN tile, first failed tile, the
    third value of ``finish``, or 0 when nothing is left), each tile -1 if none.

    ``solve`` marks a tile t it leaves with ``flags[t - t0] = kind`` (nonzero) and returns their
    count third. These are rare tiles (padding, inf, NaN, huge magnitudes, approx's exact
    fallback) whose code is then a kernel of its own, compiled only when such a tile occurs: a
    first call on ordinary weights compiles less.
    """
    flags = np.zeros(t1 - t0, dtype=np.uint8)
    nan, fail, left = solve(out, t0, t1, tiles_per_row, flags, *args)
    if nan >= 0 or fail >= 0 or left == 0:
        return int(nan), int(fail), 0
    tiles = np.flatnonzero(flags)
    nan, fail, done = finish(tiles + t0, flags[tiles], out, tiles_per_row)
    return int(nan), int(fail), int(done)


# --------------------------------------------------------------------------- exact per-tile solver


@kernel()
def mcf_tile(w, n, m, net, keep, u, v, rdeg, cdeg, dist, dbits, par, fin, tmp, wT):  # type: ignore[no-untyped-def]
    """Maximum-weight b-matching of one tile (every row and column of degree n); False on failure.

    Primal-dual: keep[i, j] is a partial b-matching and (u, v) dual potentials with
    ``u[i] + v[j] <= w[i, j]`` on kept edges and ``>=`` on the others (complementary slackness of
    the LP with equality degree constraints, whose duals are free). Starting from any such pair,
    shortest augmenting paths in reduced costs keep the invariant, so the final perfect
    b-matching is optimal. Warm start: from the column potentials ``v`` given (any values; good
    ones come from the dual sweeps in _mcf), each row keeps its top n of ``w[i] - v`` and over-full
    columns drop their worst rows; only the dropped edges need augmenting paths (about 0.1 per 8 x 8
    tile at 4:8 after six sweeps, 4.4 without any).
    """
    for i in range(m):
        for j in range(m):
            wT[j, i] = w[i, j]
    # ---- every row keeps its top n of w[i] - v (ties: lower column); u[i] = the n-th value
    for j in range(m):
        vj = v[j]
        for i in range(m):
            tmp[j, i] = wT[j, i] - vj
    sort_lanes(tmp, m, net)
    for j in range(m):
        cdeg[j] = 0
    for i in range(m):
        th = tmp[n - 1, i]
        u[i] = th
        rdeg[i] = n
        if tmp[n, i] < th:  # no tie at the threshold: the top n are the entries >= th
            for j in range(m):
                sel = (w[i, j] - v[j]) >= th
                keep[i, j] = sel
                cdeg[j] += sel
            continue
        ties = n
        for j in range(m):
            ties -= (w[i, j] - v[j]) > th
        for j in range(m):
            r = w[i, j] - v[j]
            sel = r > th
            if r == th and ties > 0:
                sel = True
                ties -= 1
            keep[i, j] = sel
            cdeg[j] += sel
    return mcf_complete(w, n, m, net, keep, u, v, rdeg, cdeg, dist, dbits, par, fin, tmp)


@kernel()
def mcf_complete(w, n, m, net, keep, u, v, rdeg, cdeg, dist, dbits, par, fin, tmp):  # type: ignore[no-untyped-def]
    """The rest of mcf_tile once every row keeps n edges (``rdeg``, column degrees ``cdeg``) with
    potentials (u, v) in complementary slackness: over-full columns drop edges, then augment."""
    # ---- over-full columns keep their top n of w - u - v (ties: lower row); v[j] rises to match
    over = False
    for j in range(m):
        over |= cdeg[j] > n
    if over:
        for i in range(m):
            ui = u[i]
            for j in range(m):
                tmp[i, j] = (w[i, j] - ui) - v[j] if keep[i, j] else -np.inf
        sort_lanes(tmp, m, net)
        for j in range(m):
            if cdeg[j] > n:
                th = tmp[n - 1, j]
                vj = v[j]
                ties = n
                if tmp[n, j] == th:
                    for i in range(m):
                        ties -= keep[i, j] and ((w[i, j] - u[i]) - vj) > th
                for i in range(m):
                    if keep[i, j]:
                        r = (w[i, j] - u[i]) - vj
                        if r > th:
                            continue
                        if r == th and ties > 0:
                            ties -= 1
                            continue
                        keep[i, j] = False
                        rdeg[i] -= 1
                v[j] = vj + th
                cdeg[j] = n
    deficit = 0
    for i in range(m):
        deficit += n - rdeg[i]
    # ---- shortest augmenting paths (dense Dijkstra over m rows + m columns, multi-source)
    # dist[:m] rows, dist[m:] columns; a settled node's dist becomes NaN (so no relaxation reaches
    # it again) and its distance moves to fin. Distances are >= +0.0, so their int64 bit patterns
    # (dbits, a view of dist) order like the floats, and the minimum is an integer reduction.
    m2 = 2 * m
    for _ in range(deficit):
        for i in range(m):
            dist[i] = 0.0 if rdeg[i] < n else np.inf
            par[i] = -1
        for t in range(m, m2):
            dist[t] = np.inf
        target = -1
        top = 0.0
        while target < 0:
            low = dbits[0]
            for t in range(1, m2):
                low = min(low, dbits[t])
            node = 0
            for t in range(m2):
                if dbits[t] == low:
                    node = t
                    break
            best = dist[node]
            if not best < np.inf:
                return False  # unreachable for a feasible tile; guards against corrupt input
            fin[node] = best
            dist[node] = np.nan
            if node < m:  # row: forward along non-kept edges
                c0 = u[node] + best
                for j in range(m):
                    nd = (c0 + v[j]) - w[node, j]
                    nd = nd if nd > best else best
                    if (not keep[node, j]) and nd < dist[m + j]:
                        dist[m + j] = nd
                        par[m + j] = node
            else:  # column: backward along kept edges, or stop at a column with spare degree
                j = node - m
                if cdeg[j] < n:
                    target = j
                    top = best
                    break
                c0 = best - v[j]
                for i in range(m):
                    nd = (c0 + w[i, j]) - u[i]
                    nd = nd if nd > best else best
                    if keep[i, j] and nd < dist[i]:
                        dist[i] = nd
                        par[i] = j
        for i in range(m):
            if dist[i] != dist[i]:
                u[i] += fin[i] - top
        for j in range(m):
            if dist[m + j] != dist[m + j]:
                v[j] += top - fin[m + j]
        j = target
        cdeg[j] += 1
        while True:
            i = par[m + j]
            keep[i, j] = True
            jp = par[i]
            if jp < 0:
                rdeg[i] += 1
                break
            keep[i, jp] = False
            j = jp
    return True


@kernel()
def new_results(items):  # type: ignore[no-untyped-def]
    """What the work items of a template report, one row each: (first tile holding NaN, first
    failed tile, a count), to start with -1, -1, 0. (Plain loops: np.full and np.zeros would each
    compile an implementation of their own on a first call.)"""
    res = np.empty((items, 3), dtype=np.int64)
    for q in range(items):
        res[q, 0] = -1
        res[q, 1] = -1
        res[q, 2] = 0
    return res


@kernel()
def summary(res):  # type: ignore[no-untyped-def]
    """(first NaN tile, first failed tile) over the rows of new_results in item order (-1 if none),
    and the total count."""
    nan = -1
    fail = -1
    total = 0
    for q in range(res.shape[0]):
        if nan < 0:
            nan = res[q, 0]
        if fail < 0:
            fail = res[q, 1]
        total += res[q, 2]
    return nan, fail, total


# --------------------------------------------------------------------------- kept magnitude


def _kept_rows(x, keep):  # type: ignore[no-untyped-def]
    """sum(|x|) over kept entries, accumulated in float64 per row (the template of kept_sum's kernels)."""
    rows, cols = x.shape
    per_row = np.zeros(rows)
    for r in prange(rows):
        s = 0.0
        for c in range(cols):
            if keep[r, c]:
                s += abs(np.float64(x[r, c]))
        per_row[r] = s
    return per_row.sum()


@functools.cache
def _kept_kernel(parallel: bool) -> Any:
    if parallel:
        return specialise(_kept_rows, "_kept_rows_parallel", parallel=True)
    return specialise(_kept_rows, "_kept_rows_serial")


def kept_sum(x: np.ndarray, keep: np.ndarray) -> float:
    """``sum(|x|[keep])`` in float64 for a 2-D ``x`` and a bool mask of its shape."""
    if x.size == 0:
        return 0.0
    return float(_kept_kernel(is_parallel(x))(x, keep))
