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
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._jit import TRANSPOSABLE_PARALLEL_MIN, kernel, prange, threads_for
from nmsolve._kernels import SCALE_ABOVE, load_tile, sort_lanes, sorting_network, store_tile
from nmsolve._validate import as_array, as_scores, check_group_length, check_nm, reject_nan

# Tiles per parallel work item of the per-tile kernels, and tiles per vectorised m = 4 chunk; exact
# m > 4 tiles go in batches of about _BATCH_VALUES values (at least 16 tiles, at most _BLOCK).
_BLOCK = 64
_CHUNK4 = 256
_BATCH_VALUES = 4096


def _sweeps(m: int) -> int:
    """Coordinate-descent sweeps on the dual before the exact augmentations (see _batch_sweeps):
    each sweep costs two sorting-network passes and saves augmenting paths; tuned on Gaussian tiles."""
    return 1 if m <= 4 else 6


# Integer resolution of the reference flow backends: a tile's largest finite magnitude -> 2**30.
FLOW_RESOLUTION = 2**30
_ORTOOLS_MAX_ARCS = 1 << 19
_PROGRESS_TILES = 1 << 14


# --------------------------------------------------------------------------- tables


def _network(m: int, n: int = 0) -> np.ndarray:
    """The sorting network for m lanes (n = 0), or only the comparators that reach outputs n - 1 and
    n, which is all that selecting the n-th and (n+1)-th largest needs."""
    return sorting_network(m, frozenset({n - 1, n}) if n else None)


@functools.lru_cache(maxsize=4)
def _tiles4(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every valid 4 x 4 tile for ``n``: combos (C, n), configs (K, 4) and keys (K,).

    ``combos`` are the n-subsets of a row in itertools order; a config picks one combo per row, and
    configs are listed in lexicographic order of (row 0 combo, row 1 combo, ...). A key holds the
    tile's kept entries as bits: bit ``4 * r + j`` for row r, column j.
    """
    combos = np.array(list(itertools.combinations(range(4), n)), dtype=np.int64)
    rows = np.zeros((len(combos), 4), dtype=np.int64)
    for c, combo in enumerate(combos):
        rows[c, combo] = 1
    configs = [
        cfg for cfg in itertools.product(range(len(combos)), repeat=4) if (rows[list(cfg)].sum(axis=0) == n).all()
    ]
    cfg = np.array(configs, dtype=np.int64)
    keys = (rows[cfg] << np.arange(16).reshape(4, 4)).sum(axis=(1, 2))
    for arr in (combos, cfg, keys):
        arr.setflags(write=False)
    return combos, cfg, keys


# --------------------------------------------------------------------------- exact per-tile solver


@kernel()
def _batch_sweeps(wr, wc, n, m, nb, sweeps, net, t, u, v):  # type: ignore[no-untyped-def]
    """Coordinate descent on the LP duals of nb tiles at once, vectorised over tiles: u[i] <- the
    midpoint of the n-th and (n+1)-th largest of ``w[i] - v``, then v[j] likewise on the columns of
    ``w - u``. Layouts (float32, tile b in lane position b): ``wr[j, i * nb + b] = wc[i, j * nb + b]
    = w_b[i, j]``, ``u[i * nb + b]``, ``v[j * nb + b]``; ``t`` is scratch of wr's shape. Each
    comparator of the selection network ``net`` is one loop over all m * nb lanes."""
    lanes = m * nb
    for k in range(lanes):
        v[k] = 0.0
    for _ in range(sweeps):
        for j in range(m):
            for i in range(m):
                for b in range(nb):
                    t[j, i * nb + b] = wr[j, i * nb + b] - v[j * nb + b]
        sort_lanes(t, lanes, net)
        for k in range(lanes):
            u[k] = np.float32(0.5) * (t[n - 1, k] + t[n, k])
        for i in range(m):
            for j in range(m):
                for b in range(nb):
                    t[i, j * nb + b] = wc[i, j * nb + b] - u[i * nb + b]
        sort_lanes(t, lanes, net)
        for k in range(lanes):
            v[k] = np.float32(0.5) * (t[n - 1, k] + t[n, k])


@kernel()
def _mcf_tile(w, n, m, net, keep, u, v, rdeg, cdeg, dist, dbits, par, fin, tmp, wT):  # type: ignore[no-untyped-def]
    """Maximum-weight b-matching of one tile (every row and column of degree n); False on failure.

    Primal-dual: keep[i, j] is a partial b-matching and (u, v) dual potentials with
    ``u[i] + v[j] <= w[i, j]`` on kept edges and ``>=`` on the others (complementary slackness of
    the LP with equality degree constraints, whose duals are free). Starting from any such pair,
    shortest augmenting paths in reduced costs keep the invariant, so the final perfect
    b-matching is optimal. Warm start: from the column potentials ``v`` given (any values; good
    ones come from _batch_sweeps), each row keeps its top n of ``w[i] - v`` and over-full columns
    drop their worst rows; only the dropped edges need augmenting paths (about 0.1 per 8 x 8 tile
    at 4:8 after six sweeps, 4.4 without any).
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
    return _mcf_complete(w, n, m, net, keep, u, v, rdeg, cdeg, dist, dbits, par, fin, tmp)


@kernel()
def _mcf_complete(w, n, m, net, keep, u, v, rdeg, cdeg, dist, dbits, par, fin, tmp):  # type: ignore[no-untyped-def]
    """The rest of _mcf_tile once every row keeps n edges (``rdeg``, column degrees ``cdeg``) with
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


@kernel(parallel=True)
def _mcf_kernel(x, n, m, t0, t1, tiles_per_row, sweeps, net, out):  # type: ignore[no-untyped-def]
    """Exact masks of tiles t0..t1-1 (row-major); returns (first tile with NaN, first failed tile).

    Tiles go in batches of consecutive tiles of one tile row, vectorised over the tiles of a batch
    (tile b in lane position b): loaded into ``wr[j, i * nb + b] = w_b[i, j]`` (tiles with inf,
    huge values or padding through load_tile); dual potentials for the whole batch
    (_batch_sweeps on float32 copies, each tile scaled by a power of two so that its largest value
    is below 1; the potentials are scaled back exactly); then the first step of _mcf_tile for the
    whole batch in float64: every row's top n of ``w[i] - v``. A tile where that is already a
    b-matching (no tie at a row's threshold, every column kept n times) is optimal and stored; the
    others continue in _mcf_complete, or where a row has a tie at its threshold, in _mcf_tile with
    the same potentials (which takes the same first step, breaking the tie).
    """
    rows, cols = x.shape
    size = min(_BLOCK, max(16, _BATCH_VALUES // (m * m)))
    runs_per_row = (tiles_per_row + size - 1) // size
    band0 = t0 // tiles_per_row
    nblocks = ((t1 + tiles_per_row - 1) // tiles_per_row - band0) * runs_per_row
    nan_at = np.full(nblocks, -1, dtype=np.int64)
    fail_at = np.full(nblocks, -1, dtype=np.int64)
    for blk in prange(nblocks):  # a batch: up to `size` consecutive tiles of one tile row
        band = band0 + blk // runs_per_row
        first = band * tiles_per_row + (blk % runs_per_row) * size
        last = min(first + size, (band + 1) * tiles_per_row, t1)
        first = max(first, t0)
        if first >= last:
            continue
        nb = last - first
        lanes = m * nb
        r0 = band * m
        cb = (first % tiles_per_row) * m
        w = np.empty((m, m))
        wr = np.empty((m, lanes))
        fmax = np.zeros(nb)
        special = np.zeros(nb, dtype=np.bool_)
        inside = r0 + m <= rows and cb + lanes <= cols
        if inside:  # vectorised load; tiles with inf, NaN or huge values are reloaded below
            for i in range(m):
                xr = x[r0 + i, cb : cb + lanes]
                for j in range(m):
                    for b in range(nb):
                        a = abs(np.float64(xr[b * m + j]))
                        wr[j, i * nb + b] = a
                        fmax[b] = a if a > fmax[b] else fmax[b]
                        special[b] |= not (a <= SCALE_ABOVE)
        for b in range(nb):
            if inside and not special[b]:
                continue
            fmax[b] = load_tile(x, r0, cb + b * m, m, w)
            if fmax[b] < 0.0:
                nan_at[blk] = first + b
                break
            for i in range(m):
                for j in range(m):
                    wr[j, i * nb + b] = w[i, j]
        if nan_at[blk] >= 0:
            continue
        scale = np.empty(nb)
        for b in range(nb):
            scale[b] = math.ldexp(1.0, min(1000, -math.frexp(fmax[b])[1])) if fmax[b] > 0.0 else 1.0
        t64 = np.empty((m, lanes))
        wr32 = np.empty((m, lanes), dtype=np.float32)
        wc32 = np.empty((m, lanes), dtype=np.float32)
        t32 = np.empty((m, lanes), dtype=np.float32)
        ub = np.empty(lanes, dtype=np.float32)
        vb = np.empty(lanes, dtype=np.float32)
        vr = np.empty(lanes)
        th = np.empty(lanes)
        untied = np.ones(nb, dtype=np.bool_)
        full = np.ones(nb, dtype=np.bool_)
        cnt = np.zeros(lanes, dtype=np.int64)
        for j in range(m):
            for i in range(m):
                for b in range(nb):
                    wr32[j, i * nb + b] = np.float32(wr[j, i * nb + b] * scale[b])
        for i in range(m):
            for j in range(m):
                for b in range(nb):
                    wc32[i, j * nb + b] = wr32[j, i * nb + b]
        _batch_sweeps(wr32, wc32, n, m, nb, sweeps, net, t32, ub, vb)
        for j in range(m):
            for b in range(nb):
                vr[j * nb + b] = np.float64(vb[j * nb + b]) / scale[b]
        # ---- every row's top n of w[i] - v (float64, exact), as the first step of _mcf_tile
        for j in range(m):
            for i in range(m):
                for b in range(nb):
                    t64[j, i * nb + b] = wr[j, i * nb + b] - vr[j * nb + b]
        sort_lanes(t64, lanes, net)
        for k in range(lanes):
            th[k] = t64[n - 1, k]
            untied[k % nb] &= t64[n, k] < th[k]
        for j in range(m):
            for i in range(m):
                for b in range(nb):
                    cnt[j * nb + b] += (wr[j, i * nb + b] - vr[j * nb + b]) >= th[i * nb + b]
        for k in range(lanes):
            full[k % nb] &= cnt[k] == n
        keep = np.empty((m, m), dtype=np.bool_)
        wT = np.empty((m, m))
        tmp = np.empty((m, m))
        u = np.empty(m)
        v = np.empty(m)
        rdeg = np.empty(m, dtype=np.int64)
        cdeg = np.empty(m, dtype=np.int64)
        dist = np.empty(2 * m)
        dbits = dist.view(np.int64)
        fin = np.empty(2 * m)
        par = np.empty(2 * m, dtype=np.int64)
        for b in range(nb):
            for i in range(m):
                for j in range(m):
                    w[i, j] = wr[j, i * nb + b]
                    keep[i, j] = (w[i, j] - vr[j * nb + b]) >= th[i * nb + b]
            if not (untied[b] and full[b]):
                for j in range(m):
                    v[j] = vr[j * nb + b]
                    u[j] = th[j * nb + b]
                    rdeg[j] = n
                    cdeg[j] = cnt[j * nb + b]
                args = (n, m, net, keep, u, v, rdeg, cdeg, dist, dbits, par, fin, tmp)
                if not (_mcf_complete(w, *args) if untied[b] else _mcf_tile(w, *args, wT)):
                    fail_at[blk] = first + b
                    break
            store_tile(keep, r0, cb + b * m, m, out)
    first_nan = -1
    first_fail = -1
    for b in range(nblocks):
        if first_nan < 0 and nan_at[b] >= 0:
            first_nan = nan_at[b]
        if first_fail < 0 and fail_at[b] >= 0:
            first_fail = fail_at[b]
    return first_nan, first_fail


# --------------------------------------------------------------------------- exact m = 4: enumeration


@kernel()
def _enum4_tile(w, combos, configs):  # type: ignore[no-untyped-def]
    """Index of the best valid 4 x 4 tile (``configs`` order, the first among equal sums).

    A tile's weight is summed as (row 0 + row 1) + (row 2 + row 3), like _score24_run.
    """
    ncombo, n = combos.shape
    sums = np.empty((4, ncombo))
    for r in range(4):
        for c in range(ncombo):
            s = 0.0
            for q in range(n):
                s += w[r, combos[c, q]]
            sums[r, c] = s
    best = -np.inf
    arg = 0
    for k in range(configs.shape[0]):
        tot = (sums[0, configs[k, 0]] + sums[1, configs[k, 1]]) + (sums[2, configs[k, 2]] + sums[3, configs[k, 3]])
        if tot > best:
            best = tot
            arg = k
    return arg


@kernel()
def _better(v, k, best, key):  # type: ignore[no-untyped-def]
    return (v, k) if v > best else (best, key)


@kernel()
def _score24_run(x, r0, c0, length, vals, keys, special):  # type: ignore[no-untyped-def]
    """Exact 2:4 tiles in rows r0..r0+3, columns c0..c0+4*length (inside x): keys[t] <- the best tile's
    key (row r's kept columns as bits 4r..4r+3), special[t] <- whether the tile holds inf, NaN or a
    magnitude above SCALE_ABOVE (its key is then garbage). Vectorised over tiles.

    ``p{r}{c}`` is row r's sum over combo c (01 02 03 12 13 23; combo 5 - c is the complement of c).
    Choosing combos (c0, c1) for rows 0 and 1 fixes what rows 2 and 3 must cover, so each of the 36
    tops needs only the best bottom of its class: (c, c) -> (5 - c, 5 - c); (c, 5 - c) -> any
    (c2, 5 - c2); two combos sharing one column, {lo, hi} -> (5 - hi, 5 - lo) or (5 - lo, 5 - hi).
    Bottoms and then tops are scanned in lexicographic order with strict comparisons, and a tile's
    weight is (p0 + p1) + (p2 + p3): the same sums and the same first-of-equals rule as
    _enum4_tile over all 90 valid tiles.
    """
    for r in range(4):  # |x| as float64 in structure-of-arrays form: vals[4 r + j, t]
        xr = x[r0 + r, c0 : c0 + 4 * length]
        for t in range(length):
            vals[4 * r, t] = abs(np.float64(xr[4 * t]))
            vals[4 * r + 1, t] = abs(np.float64(xr[4 * t + 1]))
            vals[4 * r + 2, t] = abs(np.float64(xr[4 * t + 2]))
            vals[4 * r + 3, t] = abs(np.float64(xr[4 * t + 3]))
    for t in range(length):
        a00, a01, a02, a03 = vals[0, t], vals[1, t], vals[2, t], vals[3, t]
        a10, a11, a12, a13 = vals[4, t], vals[5, t], vals[6, t], vals[7, t]
        a20, a21, a22, a23 = vals[8, t], vals[9, t], vals[10, t], vals[11, t]
        a30, a31, a32, a33 = vals[12, t], vals[13, t], vals[14, t], vals[15, t]
        p00, p01, p02, p03, p04, p05 = a00 + a01, a00 + a02, a00 + a03, a01 + a02, a01 + a03, a02 + a03
        p10, p11, p12, p13, p14, p15 = a10 + a11, a10 + a12, a10 + a13, a11 + a12, a11 + a13, a12 + a13
        p20, p21, p22, p23, p24, p25 = a20 + a21, a20 + a22, a20 + a23, a21 + a22, a21 + a23, a22 + a23
        p30, p31, p32, p33, p34, p35 = a30 + a31, a30 + a32, a30 + a33, a31 + a32, a31 + a33, a32 + a33
        total = (p00 + p05) + (p10 + p15) + ((p20 + p25) + (p30 + p35))
        special[t] = not (total <= SCALE_ABOVE)  # inf, NaN or huge somewhere in the tile
        # rows 2-3 under tops (c, c): (5 - c, 5 - c); under (c, 5 - c): the best (c2, 5 - c2)
        d0, d1, d2, d3, d4, d5 = p25 + p35, p24 + p34, p23 + p33, p22 + p32, p21 + p31, p20 + p30
        o, ok = p20 + p35, 49920.0
        o, ok = _better(p21 + p34, 42240.0, o, ok)
        o, ok = _better(p22 + p33, 26880.0, o, ok)
        o, ok = _better(p23 + p32, 38400.0, o, ok)
        o, ok = _better(p24 + p31, 23040.0, o, ok)
        o, ok = _better(p25 + p30, 15360.0, o, ok)
        # under tops {lo, hi} sharing one column: the better of (5 - hi, 5 - lo), (5 - lo, 5 - hi)
        q01, k01 = _better(p25 + p34, 44032.0, p24 + p35, 51712.0)
        q02, k02 = _better(p25 + p33, 27648.0, p23 + p35, 50688.0)
        q03, k03 = _better(p25 + p32, 39936.0, p22 + p35, 51456.0)
        q04, k04 = _better(p25 + p31, 23552.0, p21 + p35, 50432.0)
        q12, k12 = _better(p24 + p33, 27136.0, p23 + p34, 42496.0)
        q13, k13 = _better(p24 + p32, 39424.0, p22 + p34, 43264.0)
        q15, k15 = _better(p24 + p30, 14848.0, p20 + p34, 41728.0)
        q24, k24 = _better(p23 + p31, 22016.0, p21 + p33, 25856.0)
        q25, k25 = _better(p23 + p30, 13824.0, p20 + p33, 25344.0)
        q34, k34 = _better(p22 + p31, 22784.0, p21 + p32, 38144.0)
        q35, k35 = _better(p22 + p30, 14592.0, p20 + p32, 37632.0)
        q45, k45 = _better(p21 + p30, 13568.0, p20 + p31, 21248.0)
        # every top (c0, c1) in lexicographic order
        best, key = (p00 + p10) + d0, 52275.0
        best, key = _better((p00 + p11) + q01, 83 + k01, best, key)
        best, key = _better((p00 + p12) + q02, 147 + k02, best, key)
        best, key = _better((p00 + p13) + q03, 99 + k03, best, key)
        best, key = _better((p00 + p14) + q04, 163 + k04, best, key)
        best, key = _better((p00 + p15) + o, 195 + ok, best, key)
        best, key = _better((p01 + p10) + q01, 53 + k01, best, key)
        best, key = _better((p01 + p11) + d1, 43605.0, best, key)
        best, key = _better((p01 + p12) + q12, 149 + k12, best, key)
        best, key = _better((p01 + p13) + q13, 101 + k13, best, key)
        best, key = _better((p01 + p14) + o, 165 + ok, best, key)
        best, key = _better((p01 + p15) + q15, 197 + k15, best, key)
        best, key = _better((p02 + p10) + q02, 57 + k02, best, key)
        best, key = _better((p02 + p11) + q12, 89 + k12, best, key)
        best, key = _better((p02 + p12) + d2, 26265.0, best, key)
        best, key = _better((p02 + p13) + o, 105 + ok, best, key)
        best, key = _better((p02 + p14) + q24, 169 + k24, best, key)
        best, key = _better((p02 + p15) + q25, 201 + k25, best, key)
        best, key = _better((p03 + p10) + q03, 54 + k03, best, key)
        best, key = _better((p03 + p11) + q13, 86 + k13, best, key)
        best, key = _better((p03 + p12) + o, 150 + ok, best, key)
        best, key = _better((p03 + p13) + d3, 39270.0, best, key)
        best, key = _better((p03 + p14) + q34, 166 + k34, best, key)
        best, key = _better((p03 + p15) + q35, 198 + k35, best, key)
        best, key = _better((p04 + p10) + q04, 58 + k04, best, key)
        best, key = _better((p04 + p11) + o, 90 + ok, best, key)
        best, key = _better((p04 + p12) + q24, 154 + k24, best, key)
        best, key = _better((p04 + p13) + q34, 106 + k34, best, key)
        best, key = _better((p04 + p14) + d4, 21930.0, best, key)
        best, key = _better((p04 + p15) + q45, 202 + k45, best, key)
        best, key = _better((p05 + p10) + o, 60 + ok, best, key)
        best, key = _better((p05 + p11) + q15, 92 + k15, best, key)
        best, key = _better((p05 + p12) + q25, 156 + k25, best, key)
        best, key = _better((p05 + p13) + q35, 108 + k35, best, key)
        best, key = _better((p05 + p14) + q45, 172 + k45, best, key)
        best, key = _better((p05 + p15) + d5, 13260.0, best, key)
        keys[t] = np.int64(key)


@kernel(parallel=True)
def _enum4_kernel(x, t0, t1, tiles_per_row, combos, configs, cfgkeys, out, out32):  # type: ignore[no-untyped-def]
    """Exact 4 x 4 tiles t0..t1-1 by enumerating every valid tile, vectorised over runs of tiles.

    Tiles are taken in runs of up to _CHUNK4 consecutive tiles of one tile row. 2:4 runs inside the
    matrix go to _score24_run; otherwise the n-subset sums of every row are laid out tile-last, so
    that scoring a candidate tile is one vectorised loop over the run. Tiles with inf, huge
    magnitudes or padding are re-solved by _enum4_tile on the safe values from load_tile (same
    candidate order, same sums, same tie rule). Each tile's result is a key (``cfgkeys``: row r's
    kept columns as bits 4r..4r+3), written with one 32-bit store per tile row into ``out32``
    (``out`` viewed as uint32, 4 bools per element, or empty when the width does not allow it).
    Returns the first tile holding NaN, or -1.
    """
    ncombo, n = combos.shape
    nconfig = configs.shape[0]
    rows, cols = x.shape
    runs_per_row = (tiles_per_row + _CHUNK4 - 1) // _CHUNK4
    band0 = t0 // tiles_per_row
    band1 = (t1 + tiles_per_row - 1) // tiles_per_row
    nruns = (band1 - band0) * runs_per_row
    nan_at = np.full(nruns, -1, dtype=np.int64)
    for q in prange(nruns):
        band = band0 + q // runs_per_row
        first = band * tiles_per_row + (q % runs_per_row) * _CHUNK4
        last = min(first + _CHUNK4, (band + 1) * tiles_per_row, t1)
        first = max(first, t0)
        if first >= last:
            continue
        length = last - first
        r0 = band * 4
        cbase = (first % tiles_per_row) * 4
        inside = r0 + 4 <= rows and cbase + 4 * length <= cols
        keys = np.empty(_CHUNK4, dtype=np.int64)
        special = np.zeros(_CHUNK4, dtype=np.bool_)
        vals = np.empty((16, _CHUNK4))
        if n == 2 and inside:
            _score24_run(x, r0, cbase, length, vals, keys, special)
        else:
            sums = np.zeros((4, ncombo, _CHUNK4))
            for r in range(4):
                row_ok = r0 + r < rows
                for p in range(4):
                    for t in range(length):
                        c = cbase + 4 * t + p
                        a = abs(np.float64(x[r0 + r, c])) if row_ok and c < cols else np.inf
                        usual = a <= SCALE_ABOVE  # False for inf, huge, padding and NaN
                        vals[p, t] = a if usual else 0.0
                        special[t] |= not usual
                for c in range(ncombo):
                    for qq in range(n):
                        p = combos[c, qq]
                        for t in range(length):
                            sums[r, c, t] += vals[p, t]
            best = np.full(_CHUNK4, -np.inf)
            arg = np.zeros(_CHUNK4, dtype=np.int64)
            for k in range(nconfig):
                s0 = sums[0, configs[k, 0]]
                s1 = sums[1, configs[k, 1]]
                s2 = sums[2, configs[k, 2]]
                s3 = sums[3, configs[k, 3]]
                for t in range(length):
                    tot = (s0[t] + s1[t]) + (s2[t] + s3[t])
                    better = tot > best[t]
                    best[t] = tot if better else best[t]
                    arg[t] = k if better else arg[t]
            for t in range(length):
                keys[t] = cfgkeys[arg[t]]
        w = np.empty((4, 4))
        for t in range(length):
            if special[t]:
                if load_tile(x, r0, cbase + 4 * t, 4, w) < 0.0:
                    nan_at[q] = first + t
                    break
                keys[t] = cfgkeys[_enum4_tile(w, combos, configs)]
        if nan_at[q] >= 0:
            continue
        if inside and out32.shape[1] > 0:
            word0 = first % tiles_per_row
            for r in range(4):
                orow = out32[r0 + r, word0 : word0 + length]
                for t in range(length):  # 4 bits -> 4 bytes of 0/1 (the multiply spreads bit j to byte j)
                    orow[t] = np.uint32((((keys[t] >> (4 * r)) & 15) * 0x204081) & 0x01010101)
        else:
            for t in range(length):
                for r in range(min(4, rows - r0)):
                    for j in range(min(4, cols - cbase - 4 * t)):
                        out[r0 + r, cbase + 4 * t + j] = (keys[t] >> (4 * r + j)) & 1
    for q in range(nruns):
        if nan_at[q] >= 0:
            return nan_at[q]
    return -1


# --------------------------------------------------------------------------- approximation


@kernel()
def _greedy_tile(w, n, m, net, keep, rdeg, cdeg, tmp, order, ptr, hold, stack, instack, wslot):  # type: ignore[no-untyped-def]
    """The greedy b-matching of one tile: scan edges by decreasing weight (ties: lower flat index
    ``i * m + j``) and keep an edge while its row and column both have fewer than n.

    Computed as the row-proposing Gale-Shapley b-matching in which both sides rank edges by that
    same strict order; with such globally ranked pairs the stable b-matching is unique and equals
    the greedy one, and it needs only each row's sorted list (a vectorised sorting network).
    """
    for k in range(m):
        for i in range(m):
            tmp[k, i] = w[i, k]
            order[k, i] = k
    for c in range(net.shape[0]):  # sort every row's (weight desc, column asc)
        p = net[c, 0]
        q = net[c, 1]
        for i in range(m):
            a = tmp[p, i]
            b = tmp[q, i]
            ia = order[p, i]
            ib = order[q, i]
            swap = (b > a) | ((b == a) & (ib < ia))
            tmp[p, i] = b if swap else a
            tmp[q, i] = a if swap else b
            order[p, i] = ib if swap else ia
            order[q, i] = ia if swap else ib
    for i in range(m):
        for j in range(m):
            keep[i, j] = False
        rdeg[i] = 0
        cdeg[i] = 0
        ptr[i] = 0
        stack[i] = m - 1 - i
        instack[i] = True
    top = m
    while top > 0:
        i = stack[top - 1]
        if rdeg[i] == n or ptr[i] == m:
            top -= 1
            instack[i] = False
            continue
        j = order[ptr[i], i]
        ptr[i] += 1
        wij = w[i, j]
        if cdeg[j] < n:
            hold[j, cdeg[j]] = i
            cdeg[j] += 1
            keep[i, j] = True
            rdeg[i] += 1
            if cdeg[j] == n:
                wslot[j] = _worst_held(w, hold, j, n)
            continue
        rw = hold[j, wslot[j]]
        if wij > w[rw, j] or (wij == w[rw, j] and i < rw):  # i displaces the worst row held by j
            hold[j, wslot[j]] = i
            keep[i, j] = True
            rdeg[i] += 1
            keep[rw, j] = False
            rdeg[rw] -= 1
            wslot[j] = _worst_held(w, hold, j, n)
            if not instack[rw]:
                stack[top] = rw
                top += 1
                instack[rw] = True


@kernel()
def _worst_held(w, hold, j, n):  # type: ignore[no-untyped-def]
    """Slot of the last row, in the greedy order, among the n rows that column j holds."""
    worst = 0
    for s in range(1, n):
        r = hold[j, s]
        rw = hold[j, worst]
        if w[r, j] < w[rw, j] or (w[r, j] == w[rw, j] and r > rw):
            worst = s
    return worst


@kernel()
def _greedy_bound(w, n, m, keep, rdeg, cdeg, yr, yc):  # type: ignore[no-untyped-def]
    """(weight of the greedy b-matching G, an LP upper bound on the tile optimum).

    Dual of the tile LP: min n*sum(y) + sum_e max(0, w_e - y_row - y_col) over free y. With y = the
    smallest kept weight at every vertex of degree n in G (0 elsewhere), every edge not in G was
    blocked by a full endpoint whose kept edges are all at least as heavy, so its term is 0.
    ``yr`` and ``yc`` are scratch of length m.
    """
    total = 0.0
    for i in range(m):
        lo = np.inf
        for j in range(m):
            a = w[i, j] if keep[i, j] else np.inf
            lo = a if a < lo else lo
            total += w[i, j] if keep[i, j] else 0.0
        yr[i] = lo if rdeg[i] == n else 0.0
    for j in range(m):
        yc[j] = np.inf
    for i in range(m):
        for j in range(m):
            a = w[i, j] if keep[i, j] else np.inf
            yc[j] = a if a < yc[j] else yc[j]
    for j in range(m):
        yc[j] = yc[j] if cdeg[j] == n else 0.0
    bound = 0.0
    for i in range(m):
        bound += n * yr[i]
    for j in range(m):
        bound += n * yc[j]
    for i in range(m):
        row = 0.0
        for j in range(m):
            slack = (w[i, j] - yr[i]) - yc[j]
            row += slack if slack > 0.0 else 0.0
        bound += row
    return total, bound


@kernel()
def _repair_tile(w, wT, n, m, keep, kT, rdeg, cdeg, inner, arg):  # type: ignore[no-untyped-def]
    """Complete a maximal b-matching to exactly n per row and column by 3-edge swaps.

    For a short row i and a short column j (the edge (i, j) is kept, or the greedy would have
    taken it) pick a column j1 not kept in row i and a row i2 kept in column j1 but not in
    column j, then add (i, j1), (i2, j) and drop (i2, j1). Such a pair always exists: column j1
    is full (else the greedy would have kept (i, j1)), so it holds n rows, column j misses more
    than m - n rows, and some row is in both sets; swaps keep these facts. Each swap fixes one
    unit of shortage; the best swap (largest weight change) is applied first. ``kT`` mirrors
    ``keep`` transposed. Returns False if no swap is found (impossible for a maximal b-matching).
    """
    while True:
        best = -np.inf
        bi = -1
        bj = -1
        bj1 = -1
        bi2 = -1
        for j in range(m):
            if cdeg[j] == n:
                continue
            # inner[j1]: the best w[i2, j] - w[i2, j1] over rows i2 kept in column j1 but not in j
            for j1 in range(m):
                top = -np.inf
                at = -1
                for i2 in range(m):
                    val = wT[j, i2] - wT[j1, i2]
                    ok = (kT[j1, i2] != 0) & (kT[j, i2] == 0) & (val > top)
                    top = val if ok else top
                    at = i2 if ok else at
                inner[j1] = top
                arg[j1] = at
            for i in range(m):
                if rdeg[i] == n:
                    continue
                for j1 in range(m):
                    if keep[i, j1] or arg[j1] < 0:
                        continue
                    gain = w[i, j1] + inner[j1]
                    if gain > best:
                        best = gain
                        bi, bj, bj1, bi2 = i, j, j1, arg[j1]
        if bi < 0:
            for i in range(m):
                if rdeg[i] != n:
                    return False
            return True
        keep[bi, bj1] = True
        kT[bj1, bi] = 1
        keep[bi2, bj1] = False
        kT[bj1, bi2] = 0
        keep[bi2, bj] = True
        kT[bj, bi2] = 1
        rdeg[bi] += 1
        cdeg[bj] += 1


@kernel()
def _exchange_pass(w, wT, m, keep, kT, ga, gb):  # type: ignore[no-untyped-def]
    """One pass of 2-row exchanges: for every row i, the best swap with another row i2 (i gives a
    kept column a to i2 and takes a column b kept by i2), applied if it gains weight. Degrees are
    unchanged; the weight never decreases. The best gain per partner row is computed vectorised
    over i2 on the transposed copies (``kT`` is ``keep.T`` as uint8); the columns of the chosen
    swap are then recovered for that partner alone (lowest column among equal gains)."""
    for i in range(m):
        for i2 in range(m):
            ga[i2] = -np.inf
            gb[i2] = -np.inf
        for j in range(m):
            wij = wT[j, i]
            gives = kT[j, i] != 0  # i may give column j to rows that do not keep it, or take it
            for i2 in range(m):
                d = wT[j, i2] - wij
                k2 = kT[j, i2] != 0
                dg = d if gives & (not k2) else -np.inf
                dt = -d if (not gives) & k2 else -np.inf
                ga[i2] = dg if dg > ga[i2] else ga[i2]
                gb[i2] = dt if dt > gb[i2] else gb[i2]
        best = 0.0
        partner = -1
        for i2 in range(m):
            gain = ga[i2] + gb[i2]
            if gain > best:
                best = gain
                partner = i2
        if partner < 0:
            continue
        a = -1
        b = -1
        for j in range(m):
            d = w[partner, j] - w[i, j]
            if keep[i, j] and not keep[partner, j] and (a < 0 or d > w[partner, a] - w[i, a]):
                a = j
            if keep[partner, j] and not keep[i, j] and (b < 0 or -d > w[i, b] - w[partner, b]):
                b = j
        keep[i, a] = False
        kT[a, i] = 0
        keep[partner, a] = True
        kT[a, partner] = 1
        keep[partner, b] = False
        kT[b, partner] = 0
        keep[i, b] = True
        kT[b, i] = 1


@kernel()
def _tile_weight(w, m, keep):  # type: ignore[no-untyped-def]
    total = 0.0
    for i in range(m):
        for j in range(m):
            if keep[i, j]:
                total += w[i, j]
    return total


@kernel()
def _approx_rest(w, n, m, sel, stage, keep, rdeg, cdeg, wT, kT, u, v, ga, gb, ja):  # type: ignore[no-untyped-def]
    """The stages of ``approx`` after the greedy b-matching ``keep`` (degrees rdeg, cdeg) of tile w:
    stage 1 repairs it, 2 also improves and certifies it (else solves the tile exactly), 3 solves it
    exactly. Returns 0, 1 if solved exactly, -2 if the repair or the exact solver failed. The
    other arguments are scratch; the exact solver's own scratch is allocated only when it runs
    (rarely), as every array argument costs time on each call."""
    greedy, bound = _greedy_bound(w, n, m, keep, rdeg, cdeg, u, v)
    for i in range(m):
        for j in range(m):
            wT[j, i] = w[i, j]
            kT[j, i] = keep[i, j]
    if not _repair_tile(w, wT, n, m, keep, kT, rdeg, cdeg, ga, ja):
        return -2
    if stage < 2:
        return 0
    _exchange_pass(w, wT, m, keep, kT, ga, gb)
    # certificate: OPT <= min(2 * greedy, bound) <= 2 * weight, else solve exactly
    if stage == 3 or 2.0 * _tile_weight(w, m, keep) < min(2.0 * greedy, bound):
        v[:] = 0.0
        dist = np.empty(2 * m)
        ok = _mcf_tile(
            w,
            n,
            m,
            sel,
            keep,
            u,
            v,
            rdeg,
            cdeg,
            dist,
            dist.view(np.int64),
            np.empty(2 * m, dtype=np.int64),
            np.empty(2 * m),
            np.empty((m, m)),
            wT,
        )
        return 1 if ok else -2
    return 0


@kernel(parallel=True)
def _approx_kernel(x, n, m, t0, t1, tiles_per_row, net, sel, out, stage):  # type: ignore[no-untyped-def]
    """Approximate masks of tiles t0..t1-1; returns (first NaN tile, first failed tile, tiles solved
    exactly because the guarantee could not be certified). ``stage`` 0 stops after the greedy
    (an under-filled b-matching, for tests), 1 after the repair, 2 is the full method, 3 takes
    the exact fallback for every tile (to test that path)."""
    count = t1 - t0
    nblocks = (count + _BLOCK - 1) // _BLOCK
    nan_at = np.full(nblocks, -1, dtype=np.int64)
    fail_at = np.full(nblocks, -1, dtype=np.int64)
    exact = np.zeros(nblocks, dtype=np.int64)
    for b in prange(nblocks):
        w = np.empty((m, m))
        wT = np.empty((m, m))
        tmp = np.empty((m, m))
        keep = np.empty((m, m), dtype=np.bool_)
        kT = np.empty((m, m), dtype=np.uint8)
        order = np.empty((m, m), dtype=np.int64)
        hold = np.empty((m, n), dtype=np.int64)
        ptr = np.empty(m, dtype=np.int64)
        stack = np.empty(m, dtype=np.int64)
        instack = np.empty(m, dtype=np.bool_)
        rdeg = np.empty(m, dtype=np.int64)
        cdeg = np.empty(m, dtype=np.int64)
        u = np.empty(m)
        v = np.empty(m)
        ga = np.empty(m)
        gb = np.empty(m)
        ja = np.empty(m, dtype=np.int64)
        for t in range(t0 + b * _BLOCK, min(t1, t0 + (b + 1) * _BLOCK)):
            r0 = (t // tiles_per_row) * m
            c0 = (t % tiles_per_row) * m
            if load_tile(x, r0, c0, m, w) < 0.0:
                nan_at[b] = t
                break
            _greedy_tile(w, n, m, net, keep, rdeg, cdeg, tmp, order, ptr, hold, stack, instack, ja)
            if stage >= 1:
                status = _approx_rest(w, n, m, sel, stage, keep, rdeg, cdeg, wT, kT, u, v, ga, gb, ja)
                if status < 0:
                    fail_at[b] = t
                    break
                exact[b] += status
            store_tile(keep, r0, c0, m, out)
    return _first(nan_at), _first(fail_at), exact.sum()


@kernel()
def _first(at):  # type: ignore[no-untyped-def]
    for q in range(at.shape[0]):
        if at[q] >= 0:
            return at[q]
    return -1


@kernel()
def _greedy4_run(x, r0, c0, length, n, net16, vals, sv, si, keys, code):  # type: ignore[no-untyped-def]
    """``approx`` for the 4 x 4 tiles in rows r0..r0+3, columns c0..c0+4*length (inside x), vectorised
    over tiles, for the tiles where that is easy: vals[4 r + j, t] <- |x| as float64, code[t] <- 0
    if keys[t] (bit 4 r + j) is the tile's final mask, 1 if keys[t] is only its greedy b-matching
    (the rest of the method is left to _approx_rest), 2 if the tile holds inf, NaN or a magnitude
    above SCALE_ABOVE (left to the whole method from load_tile on).

    The greedy is _greedy_tile's: all 16 (weight, flat index) pairs sorted by a sorting network
    with the same order (weight descending, lower index first), then scanned with row and column
    counts packed 2 bits each. When it fills every row and column, the repair is a no-op, so the
    exchange pass follows, computed here with _exchange_pass's arithmetic and tie rules; if the
    weight after it (summed in _tile_weight's order) is not below the greedy weight (the same sum),
    the certificate holds without the LP bound: 2 * weight >= 2 * greedy >= min(2 * greedy, bound).
    Tiles with a row or column left short, or whose weight fell (float rounding), get code 1.
    """
    for r in range(4):
        xr = x[r0 + r, c0 : c0 + 4 * length]
        for t in range(length):
            vals[4 * r, t] = abs(np.float64(xr[4 * t]))
            vals[4 * r + 1, t] = abs(np.float64(xr[4 * t + 1]))
            vals[4 * r + 2, t] = abs(np.float64(xr[4 * t + 2]))
            vals[4 * r + 3, t] = abs(np.float64(xr[4 * t + 3]))
    for e in range(16):
        for t in range(length):
            sv[e, t] = vals[e, t]
            si[e, t] = e
    for c in range(net16.shape[0]):
        p = net16[c, 0]
        q = net16[c, 1]
        for t in range(length):
            a = sv[p, t]
            b = sv[q, t]
            ia = si[p, t]
            ib = si[q, t]
            swap = (b > a) | ((b == a) & (ib < ia))
            sv[p, t] = b if swap else a
            sv[q, t] = a if swap else b
            si[p, t] = ib if swap else ia
            si[q, t] = ia if swap else ib
    rc = np.zeros(length, dtype=np.int64)
    cc = np.zeros(length, dtype=np.int64)
    exchanged = np.empty(length, dtype=np.int64)
    total = np.zeros(length)
    for t in range(length):
        keys[t] = 0
    for k in range(16):
        for t in range(length):
            e = si[k, t]
            total[t] += vals[k, t]
            rs = 2 * (e >> 2)
            cs = 2 * (e & 3)
            take = np.int64((((rc[t] >> rs) & 3) < n) & (((cc[t] >> cs) & 3) < n))
            rc[t] += take << rs
            cc[t] += take << cs
            keys[t] |= take << e
    full = n * 0x55
    exchanged[:length] = keys[:length]
    for i in range(4):  # _exchange_pass, row by row, on every tile at once
        for t in range(length):
            key = exchanged[t]
            best = 0.0
            partner = i
            pa = 0
            pb = 0
            for i2 in range(4):
                ga = -np.inf
                gb = -np.inf
                a = -1
                b = -1
                for j in range(4):
                    d = vals[4 * i2 + j, t] - vals[4 * i + j, t]
                    gives = ((key >> (4 * i + j)) & 1) != 0
                    k2 = ((key >> (4 * i2 + j)) & 1) != 0
                    dg = d if gives & (not k2) else -np.inf
                    dt = -d if (not gives) & k2 else -np.inf
                    a = j if dg > ga else a
                    b = j if dt > gb else b
                    ga = dg if dg > ga else ga
                    gb = dt if dt > gb else gb
                gain = ga + gb
                better = gain > best
                best = gain if better else best
                partner = i2 if better else partner
                pa = a if better else pa
                pb = b if better else pb
            swap = (1 << (4 * i + pa)) | (1 << (4 * partner + pa)) | (1 << (4 * partner + pb)) | (1 << (4 * i + pb))
            exchanged[t] = key ^ swap if best > 0.0 else key
    for t in range(length):
        before = 0.0
        after = 0.0
        for e in range(16):
            before += vals[e, t] if (keys[t] >> e) & 1 else 0.0
            after += vals[e, t] if (exchanged[t] >> e) & 1 else 0.0
        settled = (rc[t] == full) & (cc[t] == full) & (after >= before)
        keys[t] = exchanged[t] if settled else keys[t]
        code[t] = 2 if not total[t] <= SCALE_ABOVE else 0 if settled else 1


@kernel(parallel=True)
def _approx4_kernel(x, n, t0, t1, tiles_per_row, net, sel, net16, out, out32):  # type: ignore[no-untyped-def]
    """``approx`` for 4 x 4 tiles t0..t1-1, the same masks as _approx_kernel at stage 2, faster.

    Tiles are taken in runs of up to _CHUNK4 consecutive tiles of one tile row (like
    _enum4_kernel). _greedy4_run settles most tiles inside the matrix (about 84% of Gaussian 2:4
    tiles); from its greedy b-matching, the others (a row or column left short, or a weight that
    dropped in the exchange pass) go through _approx_rest, and tiles with padding, inf, NaN or
    huge values through the scalar method from load_tile on, exactly as in _approx_kernel.
    ``out32`` is ``out`` viewed as uint32 or empty, as for _enum4_kernel. Returns what
    _approx_kernel returns.
    """
    rows, cols = x.shape
    runs_per_row = (tiles_per_row + _CHUNK4 - 1) // _CHUNK4
    band0 = t0 // tiles_per_row
    band1 = (t1 + tiles_per_row - 1) // tiles_per_row
    nruns = (band1 - band0) * runs_per_row
    nan_at = np.full(nruns, -1, dtype=np.int64)
    fail_at = np.full(nruns, -1, dtype=np.int64)
    exact = np.zeros(nruns, dtype=np.int64)
    for q in prange(nruns):
        band = band0 + q // runs_per_row
        first = band * tiles_per_row + (q % runs_per_row) * _CHUNK4
        last = min(first + _CHUNK4, (band + 1) * tiles_per_row, t1)
        first = max(first, t0)
        if first >= last:
            continue
        length = last - first
        r0 = band * 4
        cbase = (first % tiles_per_row) * 4
        inner = 0 if r0 + 4 > rows else max(0, min(length, (cols - cbase) // 4))
        keys = np.zeros(_CHUNK4, dtype=np.int64)
        code = np.full(_CHUNK4, 2, dtype=np.int64)
        vals = np.empty((16, _CHUNK4))
        sv = np.empty((16, _CHUNK4))
        si = np.empty((16, _CHUNK4), dtype=np.int64)
        w = np.empty((4, 4))
        wT = np.empty((4, 4))
        tmp = np.empty((4, 4))
        keep = np.empty((4, 4), dtype=np.bool_)
        kT = np.empty((4, 4), dtype=np.uint8)
        order = np.empty((4, 4), dtype=np.int64)
        hold = np.empty((4, n), dtype=np.int64)
        ptr = np.empty(4, dtype=np.int64)
        stack = np.empty(4, dtype=np.int64)
        instack = np.empty(4, dtype=np.bool_)
        rdeg = np.empty(4, dtype=np.int64)
        cdeg = np.empty(4, dtype=np.int64)
        u = np.empty(4)
        v = np.empty(4)
        ga = np.empty(4)
        gb = np.empty(4)
        ja = np.empty(4, dtype=np.int64)
        if inner > 0:
            _greedy4_run(x, r0, cbase, inner, n, net16, vals, sv, si, keys, code)
        if out32.shape[1] > 0:
            word0 = first % tiles_per_row
            for r in range(4):
                orow = out32[r0 + r, word0 : word0 + inner]
                for t in range(inner):  # 4 bits -> 4 bytes of 0/1 (the multiply spreads bit j to byte j)
                    orow[t] = np.uint32((((keys[t] >> (4 * r)) & 15) * 0x204081) & 0x01010101)
        else:
            for t in range(inner):
                for r in range(4):
                    for j in range(4):
                        out[r0 + r, cbase + 4 * t + j] = (keys[t] >> (4 * r + j)) & 1
        for t in range(length):
            if code[t] == 0:
                continue
            c0 = cbase + 4 * t
            if code[t] == 1:  # the greedy from _greedy4_run
                for i in range(4):
                    rdeg[i] = 0
                    cdeg[i] = 0
                for i in range(4):
                    for j in range(4):
                        w[i, j] = vals[4 * i + j, t]
                        keep[i, j] = (keys[t] >> (4 * i + j)) & 1
                        rdeg[i] += keep[i, j]
                        cdeg[j] += keep[i, j]
            else:
                if load_tile(x, r0, c0, 4, w) < 0.0:
                    nan_at[q] = first + t
                    break
                _greedy_tile(w, n, 4, net, keep, rdeg, cdeg, tmp, order, ptr, hold, stack, instack, ja)
            status = _approx_rest(w, n, 4, sel, 2, keep, rdeg, cdeg, wT, kT, u, v, ga, gb, ja)
            if status < 0:
                fail_at[q] = first + t
                break
            exact[q] += status
            store_tile(keep, r0, c0, 4, out)
    return _first(nan_at), _first(fail_at), exact.sum()


@kernel(parallel=True)
def _kept_sum(x, keep):  # type: ignore[no-untyped-def]
    """sum(|x|) over kept entries, accumulated in float64 per row."""
    rows, cols = x.shape
    per_row = np.zeros(rows)
    for r in prange(rows):
        s = 0.0
        for c in range(cols):
            if keep[r, c]:
                s += abs(np.float64(x[r, c]))
        per_row[r] = s
    return per_row.sum()


# --------------------------------------------------------------------------- reference backends


def _tiles_of(x: np.ndarray, m: int, first: int, last: int) -> np.ndarray:
    """float64 magnitudes of tiles first..last-1 (row-major), zero-padded: shape (T, m, m)."""
    tiles_per_row = -(-x.shape[1] // m)
    out = np.zeros((last - first, m, m))
    for k, t in enumerate(range(first, last)):
        r0, c0 = (t // tiles_per_row) * m, (t % tiles_per_row) * m
        block = x[r0 : r0 + m, c0 : c0 + m]
        out[k, : block.shape[0], : block.shape[1]] = np.abs(block.astype(np.float64))
    return out


def _integer_costs(tiles: np.ndarray) -> np.ndarray:
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


def _networkx_tiles(tiles: np.ndarray, n: int) -> np.ndarray:
    import networkx as nx

    count, m, _ = tiles.shape
    profit = _integer_costs(tiles)
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


def _ortools_tiles(tiles: np.ndarray, n: int) -> np.ndarray:
    from ortools.graph.python import min_cost_flow

    count, m, _ = tiles.shape
    profit = _integer_costs(tiles)
    keep = np.zeros(tiles.shape, dtype=bool)
    per_graph = max(1, _ORTOOLS_MAX_ARCS // (m * m))
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


# --------------------------------------------------------------------------- public API


def _check_matrix(weights: Any, n: int, m: int, pad: bool) -> tuple[np.ndarray, int, int]:
    n, m = check_nm(n, m, allow_dense=False)
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


def _solve_kernel(x: np.ndarray, n: int, m: int, method: str, progress: bool) -> tuple[np.ndarray, int]:
    """Run a compiled method on every tile; returns (mask, tiles solved exactly by approx)."""
    out = np.zeros(x.shape, dtype=np.bool_)
    tiles_per_row = -(-x.shape[1] // m)
    total = -(-x.shape[0] // m) * tiles_per_row
    net, sel = _network(m), _network(m, n)
    step = max(_PROGRESS_TILES, tiles_per_row) if progress else max(total, 1)
    exact = 0
    bar = _progress_bar(total, progress, f"transposable {n}:{m} {method}")
    for t0 in range(0, total, step):
        t1 = min(total, t0 + step)
        fail = -1
        if method == "mcf" and m == 4:
            combos, configs, keys = _tiles4(n)
            out32 = out.view(np.uint32) if x.shape[1] % 4 == 0 else np.empty((0, 0), dtype=np.uint32)
            with np.errstate(over="ignore", invalid="ignore"):  # pure-Python runs (NUMBA_DISABLE_JIT)
                nan = _enum4_kernel(x, t0, t1, tiles_per_row, combos, configs, keys, out, out32)
        elif method == "mcf":
            nan, fail = _mcf_kernel(x, n, m, t0, t1, tiles_per_row, _sweeps(m), sel, out)
        else:
            if m == 4 and n < 4:
                out32 = out.view(np.uint32) if x.shape[1] % 4 == 0 else np.empty((0, 0), dtype=np.uint32)
                with np.errstate(over="ignore", invalid="ignore"):  # pure-Python runs (NUMBA_DISABLE_JIT)
                    nan, fail, fallbacks = _approx4_kernel(
                        x, n, t0, t1, tiles_per_row, net, sel, _network(16), out, out32
                    )
            else:
                nan, fail, fallbacks = _approx_kernel(x, n, m, t0, t1, tiles_per_row, net, sel, out, 2)
            exact += int(fallbacks)
        if nan >= 0:
            reject_nan(x, "W")
        if fail >= 0:  # pragma: no cover - defensive, a bug if it ever happens
            raise RuntimeError(f"transposable {method} failed on tile {fail}; please report this input")
        if bar is not None:
            bar.update(t1 - t0)
    if bar is not None:
        bar.close()
    return out, exact


def _solve_reference(x: np.ndarray, n: int, m: int, method: str, progress: bool) -> np.ndarray:
    reject_nan(x, "W")
    solve = _networkx_tiles if method == "networkx" else _ortools_tiles
    tiles_per_row = -(-x.shape[1] // m)
    total = -(-x.shape[0] // m) * tiles_per_row
    out = np.zeros(x.shape, dtype=bool)
    step = 64 if method == "networkx" else max(1, _ORTOOLS_MAX_ARCS // (m * m))
    bar = _progress_bar(total, progress, f"transposable {n}:{m} {method}")
    for first in range(0, total, step):
        last = min(total, first + step)
        keep = solve(_tiles_of(x, m, first, last), n)
        for k, t in enumerate(range(first, last)):
            r0, c0 = (t // tiles_per_row) * m, (t % tiles_per_row) * m
            block = out[r0 : r0 + m, c0 : c0 + m]
            block[...] = keep[k, : block.shape[0], : block.shape[1]]
        if bar is not None:
            bar.update(last - first)
    if bar is not None:
        bar.close()
    return out


def _progress_bar(total: int, progress: bool, label: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="tile")


def _run(x: np.ndarray, n: int, m: int, method: str, progress: bool) -> np.ndarray:
    if x.size == 0:
        return np.zeros(x.shape, dtype=bool)
    if method in ("mcf", "approx"):
        with threads_for(x.size, TRANSPOSABLE_PARALLEL_MIN):
            return _solve_kernel(x, n, m, method, progress)[0]
    return _solve_reference(x, n, m, method, progress)


METHODS: dict[str, str] = {
    "mcf": "exact: Numba primal-dual b-matching per tile (enumeration of all valid tiles for m = 4)",
    "approx": "greedy 1/2-approximation, repaired to exactly n per row and column, one exchange pass",
    "networkx": "exact reference: networkx network simplex per tile on integer-scaled costs",
    "ortools": "exact reference: one OR-Tools min-cost flow for many tiles on integer-scaled costs",
}


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    return str(method)


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
    method = _check_method(method)
    x, n, m = _check_matrix(W, n, m, pad)
    return _run(x, n, m, method, bool(progress))


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
    method = _check_method(method)
    x, n, m = _check_matrix(W, n, m, pad)
    start = time.perf_counter()
    mask = _run(x, n, m, method, bool(progress))
    seconds = time.perf_counter() - start
    objective = _objective(x, mask)
    optimum = objective if method == "mcf" else _objective(x, _run(x, n, m, "mcf", False))
    return TransposableResult(mask, method, n, m, objective, optimum, _gap(objective, optimum), seconds)


def _objective(x: np.ndarray, mask: np.ndarray) -> float:
    if x.size == 0:
        return 0.0
    with threads_for(x.size, TRANSPOSABLE_PARALLEL_MIN):
        return float(_kept_sum(x, mask))


def _gap(objective: float, optimum: float) -> float:
    if objective == optimum:
        return 0.0
    if not (math.isfinite(objective) and math.isfinite(optimum)):
        return math.nan
    return (optimum - objective) / optimum


def _approx_with_stats(W: Any, n: int, m: int) -> tuple[np.ndarray, int]:
    """``approx`` mask and how many tiles fell back to the exact solver (for benchmarks and tests)."""
    x, n, m = _check_matrix(W, n, m, pad=True)
    if x.size == 0:
        return np.zeros(x.shape, dtype=bool), 0
    with threads_for(x.size, TRANSPOSABLE_PARALLEL_MIN):
        return _solve_kernel(x, n, m, "approx", False)


def _stage_mask(W: Any, n: int, m: int, stage: int) -> np.ndarray:
    """approx stages for tests: 0 the greedy b-matching, 1 repaired, 2 the method, 3 its exact fallback."""
    x, n, m = _check_matrix(W, n, m, pad=True)
    out = np.zeros(x.shape, dtype=np.bool_)
    tiles_per_row = -(-x.shape[1] // m)
    total = -(-x.shape[0] // m) * tiles_per_row
    with threads_for(x.size, TRANSPOSABLE_PARALLEL_MIN):
        _approx_kernel(x, n, m, 0, total, tiles_per_row, _network(m), _network(m, n), out, stage)
    return out


def _mcf_generic(W: Any, n: int, m: int) -> np.ndarray:
    """The primal-dual solver even for m = 4 (where ``mcf`` enumerates), for cross-checks."""
    x, n, m = _check_matrix(W, n, m, pad=True)
    out = np.zeros(x.shape, dtype=np.bool_)
    tiles_per_row = -(-x.shape[1] // m)
    total = -(-x.shape[0] // m) * tiles_per_row
    with threads_for(x.size, TRANSPOSABLE_PARALLEL_MIN):
        nan, fail = _mcf_kernel(x, n, m, 0, total, tiles_per_row, _sweeps(m), _network(m, n), out)
    if nan >= 0:
        reject_nan(x, "W")
    if fail >= 0:  # pragma: no cover - defensive
        raise RuntimeError(f"transposable mcf failed on tile {fail}")
    return out


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        x = np.arange(64, dtype=dtype).reshape(8, 8)
        for method in ("mcf", "approx"):
            transposable_mask(x, 2, 4, method=method)
            transposable_mask(x, 4, 8, method=method)
        _kept_sum(x, np.ones(x.shape, dtype=bool))
