"""Reference exact solvers (``method="networkx"`` and ``"ortools"``): every tile as a min-cost flow on
integer-scaled costs, solved by networkx's network simplex (one tile per graph) or by OR-Tools (one
graph for many tiles). Slow; they are oracles and benchmark baselines. Both libraries are imported
only when a method runs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nmsolve._progress import progress_bar
from nmsolve._validate import reject_nan

# Integer resolution of the reference flow backends: a tile's largest finite magnitude -> 2**30.
FLOW_RESOLUTION = 2**30
# Arcs per OR-Tools graph (tiles are grouped into graphs of about this many arcs).
ORTOOLS_MAX_ARCS = 1 << 19


def tiles_of(x: np.ndarray, m: int, first: int, last: int) -> np.ndarray:
    """float64 magnitudes of tiles first..last-1 (row-major), zero-padded: shape (T, m, m)."""
    tiles_per_row = -(-x.shape[1] // m)
    out = np.zeros((last - first, m, m))
    for k, t in enumerate(range(first, last)):
        r0, c0 = (t // tiles_per_row) * m, (t % tiles_per_row) * m
        block = x[r0 : r0 + m, c0 : c0 + m]
        out[k, : block.shape[0], : block.shape[1]] = np.abs(block.astype(np.float64))
    return out


def integer_costs(tiles: np.ndarray) -> np.ndarray:
    """Integer profits of shape (T, m, m): each tile scaled so its largest finite magnitude becomes
    FLOW_RESOLUTION, rounded to the nearest integer; inf becomes (m*m + 1) * FLOW_RESOLUTION."""
    m = tiles.shape[-1]
    infinite = np.isinf(tiles)
    finite = np.where(infinite, 0.0, tiles)
    top = finite.reshape(len(tiles), -1).max(axis=1, initial=0.0)
    unit = np.where(top > 0, top, 1.0)[:, None, None]  # divide first: 1e308 * 2**30 would overflow
    profit = np.rint(finite / unit * FLOW_RESOLUTION).astype(np.int64)
    profit[infinite] = (m * m + 1) * FLOW_RESOLUTION
    return profit


def networkx_tiles(tiles: np.ndarray, n: int) -> np.ndarray:
    import networkx as nx

    count, m, _ = tiles.shape
    profit = integer_costs(tiles)
    keep = np.zeros(tiles.shape, dtype=bool)
    for k in range(count):
        graph = nx.DiGraph()
        graph.add_nodes_from(range(m), demand=-n)
        graph.add_nodes_from(range(m, 2 * m), demand=n)
        graph.add_edges_from(
            (i, m + j, {"capacity": 1, "weight": -int(profit[k, i, j])}) for i in range(m) for j in range(m)
        )
        _, flow = nx.network_simplex(graph)
        for i in range(m):
            for j, f in flow[i].items():
                keep[k, i, j - m] = f > 0
    return keep


def ortools_tiles(tiles: np.ndarray, n: int) -> np.ndarray:
    from ortools.graph.python import min_cost_flow

    count, m, _ = tiles.shape
    profit = integer_costs(tiles)
    keep = np.zeros(tiles.shape, dtype=bool)
    per_graph = max(1, ORTOOLS_MAX_ARCS // (m * m))
    ii, jj = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    for start in range(0, count, per_graph):
        stop = min(count, start + per_graph)
        base = (np.arange(stop - start) * 2 * m)[:, None, None]
        tails = (base + ii).ravel()
        heads = (base + m + jj).ravel()
        flow = min_cost_flow.SimpleMinCostFlow()
        arcs = flow.add_arcs_with_capacity_and_unit_cost(
            tails, heads, np.ones(tails.size, dtype=np.int64), -profit[start:stop].ravel()
        )
        nodes = np.arange((stop - start) * 2 * m)
        supplies = np.where(nodes % (2 * m) < m, n, -n)
        flow.set_nodes_supplies(nodes, supplies)
        status = flow.solve()
        if status != flow.OPTIMAL:
            raise RuntimeError(f"OR-Tools min-cost flow returned status {status} for tiles {start}..{stop - 1}")
        keep[start:stop] = (flow.flows(arcs) > 0).reshape(stop - start, m, m)
    return keep


def _solve(
    x: np.ndarray,
    n: int,
    m: int,
    progress: bool,
    method: str,
    solve: Callable[[np.ndarray, int], np.ndarray],
    step: int,
) -> np.ndarray:
    """Solve the tiles of the checked 2-D matrix ``x`` in groups of ``step`` with ``solve``."""
    reject_nan(x, "W")
    tiles_per_row = -(-x.shape[1] // m)
    total = -(-x.shape[0] // m) * tiles_per_row
    out = np.zeros(x.shape, dtype=bool)
    bar = progress_bar(total, progress, f"transposable {n}:{m} {method}", "tile")
    for first in range(0, total, step):
        last = min(total, first + step)
        keep = solve(tiles_of(x, m, first, last), n)
        for k, t in enumerate(range(first, last)):
            r0, c0 = (t // tiles_per_row) * m, (t % tiles_per_row) * m
            block = out[r0 : r0 + m, c0 : c0 + m]
            block[...] = keep[k, : block.shape[0], : block.shape[1]]
        if bar is not None:
            bar.update(last - first)
    if bar is not None:
        bar.close()
    return out


def networkx_mask(x: np.ndarray, n: int, m: int, progress: bool) -> np.ndarray:
    """``method="networkx"``: the mask of a checked 2-D matrix ``x``, 64 tiles per progress step."""
    return _solve(x, n, m, progress, "networkx", networkx_tiles, 64)


def ortools_mask(x: np.ndarray, n: int, m: int, progress: bool) -> np.ndarray:
    """``method="ortools"``: the mask of a checked 2-D matrix ``x``, one flow graph per ORTOOLS_MAX_ARCS."""
    return _solve(x, n, m, progress, "ortools", ortools_tiles, max(1, ORTOOLS_MAX_ARCS // (m * m)))
