"""Transposable N:M masks: N:M along the rows AND along the columns of every aligned m x m tile.

A transposable mask serves ``W`` in the forward pass and ``W.T`` in the backward pass (Hubara et al.,
2021). Every constraint lies inside one aligned ``m x m`` tile, so tiles are solved independently;
each tile is a maximum-weight bipartite b-matching (rows and columns of degree exactly ``n``, unit
edge capacities) whose LP is integral.

Solvers (``method=``):

* ``"mcf"`` (default, exact): a Numba primal-dual (Hungarian-type) b-matching solver written for tiny
  dense tiles, parallel over tiles; ``m = 4`` uses a vectorised enumeration of every valid tile.
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

from nmsolve._jit import kernel, prange, threads_for
from nmsolve._validate import as_array, as_scores, check_group_length, check_nm, reject_nan
from nmsolve.nm import _sort_lanes, _sorting_network

# A tile whose largest finite magnitude exceeds this is scaled by a power of two (exact, except that
# magnitudes below 2**-800 or so may underflow to 0) so that sums of potentials cannot overflow.
_SCALE_ABOVE = 2.0**200
# Tiles per parallel work item of the per-tile kernels, and tiles per vectorised m = 4 chunk.
_BLOCK = 64
_CHUNK4 = 256


def _sweeps(m: int) -> int:
    """Coordinate-descent sweeps on the dual before the exact augmentations (see _mcf_tile): each
    sweep costs two sorting-network passes and saves augmenting paths; tuned on Gaussian tiles."""
    return 1 if m <= 4 else 3 if m <= 16 else 4


# Integer resolution of the reference flow backends: a tile's largest finite magnitude -> 2**30.
FLOW_RESOLUTION = 2**30
_ORTOOLS_MAX_ARCS = 1 << 19
_PROGRESS_TILES = 1 << 14
# Below this many entries the compiled kernels run on one thread: waking the thread pool can cost
# milliseconds on a busy machine, more than the work itself.
_PARALLEL_MIN_SIZE = 1 << 17


# --------------------------------------------------------------------------- tables


def _network(m: int, n: int = 0) -> np.ndarray:
    """The sorting network for m lanes (n = 0), or only the comparators that reach outputs n - 1 and
    n, which is all that selecting the n-th and (n+1)-th largest needs."""
    return _sorting_network(m, frozenset({n - 1, n}) if n else None)


@functools.lru_cache(maxsize=4)
def _tiles4(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every valid 4 x 4 tile for ``n``: combos (C, n), configs (K, 4), masks (K, 4, 4), rowbits (K, 4),
    and for n = 2 the pairs (k, complement of k) with k < complement (45, 2), else an empty (0, 2).

    ``combos`` are the n-subsets of a row in itertools order; a config picks one combo per row, and
    configs are listed in lexicographic order of (row 0 combo, row 1 combo, ...).
    """
    combos = np.array(list(itertools.combinations(range(4), n)), dtype=np.int64)
    rows = np.zeros((len(combos), 4), dtype=np.int64)
    for c, combo in enumerate(combos):
        rows[c, combo] = 1
    configs = [
        cfg for cfg in itertools.product(range(len(combos)), repeat=4) if (rows[list(cfg)].sum(axis=0) == n).all()
    ]
    cfg = np.array(configs, dtype=np.int64)
    masks = np.ascontiguousarray(rows[cfg].astype(np.bool_))
    rowbits = masks.view(np.uint32).reshape(len(cfg), 4)  # each row's 4 bools as one word
    # 2:4: the complement of a valid tile is valid, and weighs (tile total) - (its weight)
    index = {m.tobytes(): k for k, m in enumerate(masks)}
    pairs = [(k, index[(~masks[k]).tobytes()]) for k in range(len(cfg))] if n == 2 else []
    halves = np.array([p for p in pairs if p[0] < p[1]], dtype=np.int64).reshape(-1, 2)
    for arr in (combos, cfg, masks, rowbits, halves):
        arr.setflags(write=False)
    return combos, cfg, masks, rowbits, halves


# --------------------------------------------------------------------------- shared tile kernels


@kernel()
def _load_tile(x, r0, c0, m, w):  # type: ignore[no-untyped-def]
    """w <- |x[r0:r0+m, c0:c0+m]| in float64, zero outside ``x`` (padding). Returns the largest
    value of w after the adjustments below, or -1.0 if a NaN is met.

    The tile is then made safe for the solvers without changing which masks are optimal: a tile
    whose largest finite magnitude exceeds _SCALE_ABOVE is scaled by a power of two, and every
    ``inf`` becomes ``big = (m*m + 1) * largest finite`` (or 1.0), which outweighs all finite
    entries together, so the optimum keeps as many infinite entries as possible, then the most
    finite magnitude.
    """
    rows, cols = x.shape
    fmax = 0.0
    has_inf = False
    if r0 + m <= rows and c0 + m <= cols:
        for i in range(m):
            for j in range(m):
                a = abs(np.float64(x[r0 + i, c0 + j]))
                w[i, j] = a
                if a > fmax:
                    fmax = a
                elif a != a:
                    return -1.0
    else:
        for i in range(m):
            for j in range(m):
                a = 0.0
                if r0 + i < rows and c0 + j < cols:
                    a = abs(np.float64(x[r0 + i, c0 + j]))
                w[i, j] = a
                if a > fmax:
                    fmax = a
                elif a != a:
                    return -1.0
    if fmax > _SCALE_ABOVE:
        if fmax == np.inf:
            has_inf = True
            fmax = 0.0
            for i in range(m):
                for j in range(m):
                    a = w[i, j]
                    if a != np.inf and a > fmax:
                        fmax = a
        if fmax > _SCALE_ABOVE:
            scale = math.ldexp(1.0, -math.frexp(fmax)[1])
            for i in range(m):
                for j in range(m):
                    if w[i, j] != np.inf:
                        w[i, j] *= scale
            fmax *= scale
        if has_inf:
            big = (m * m + 1) * fmax if fmax > 0.0 else 1.0
            for i in range(m):
                for j in range(m):
                    if w[i, j] == np.inf:
                        w[i, j] = big
            fmax = big
    return fmax


@kernel()
def _store_tile(keep, r0, c0, m, out):  # type: ignore[no-untyped-def]
    rows, cols = out.shape
    for i in range(min(m, rows - r0)):
        for j in range(min(m, cols - c0)):
            out[r0 + i, c0 + j] = keep[i, j]


# --------------------------------------------------------------------------- exact per-tile solver


@kernel()
def _dual_sweeps(w, wT, n, m, sweeps, net, u, v, t):  # type: ignore[no-untyped-def]
    """Coordinate descent on the tile LP dual: u[i] <- midpoint of the n-th and (n+1)-th largest of
    ``w[i] - v``, then v[j] likewise on columns of ``w - u`` (``wT`` is ``w.T``, so that both
    halves fill ``t`` contiguously). ``t`` is scratch; float32 is enough, since the potentials are
    only a warm start and every later comparison is in float64."""
    for j in range(m):
        v[j] = 0.0
    for _ in range(sweeps):
        for j in range(m):
            vj = v[j]
            for i in range(m):
                t[j, i] = wT[j, i] - vj
        _sort_lanes(t, m, net)
        for i in range(m):
            u[i] = 0.5 * (np.float64(t[n - 1, i]) + np.float64(t[n, i]))
        for i in range(m):
            ui = u[i]
            for j in range(m):
                t[i, j] = w[i, j] - ui
        _sort_lanes(t, m, net)
        for j in range(m):
            v[j] = 0.5 * (np.float64(t[n - 1, j]) + np.float64(t[n, j]))


@kernel()
def _mcf_tile(w, fmax, n, m, sweeps, net, keep, u, v, rdeg, cdeg, dist, dbits, par, fin, tmp, tmp32, wT):  # type: ignore[no-untyped-def]
    """Maximum-weight b-matching of one tile (every row and column of degree n); False on failure.

    Primal-dual: keep[i, j] is a partial b-matching and (u, v) dual potentials with
    ``u[i] + v[j] <= w[i, j]`` on kept edges and ``>=`` on the others (complementary slackness of
    the LP with equality degree constraints, whose duals are free). Starting from any such pair,
    shortest augmenting paths in reduced costs keep the invariant, so the final perfect
    b-matching is optimal. Warm start: a few sweeps of coordinate descent on the dual
    (_dual_sweeps, in float32 unless the tile's largest value ``fmax`` is too big for it), then
    each row keeps its top n of ``w[i] - v`` and over-full columns drop their worst rows; only
    the dropped edges need augmenting paths (about 1.5 per 16 x 16 tile at 8:16 instead of 128).
    """
    for i in range(m):
        for j in range(m):
            wT[j, i] = w[i, j]
    # ---- warm start: dual sweeps
    if fmax < 1e30:
        _dual_sweeps(w, wT, n, m, sweeps, net, u, v, tmp32)
    else:
        _dual_sweeps(w, wT, n, m, sweeps, net, u, v, tmp)
    # ---- every row keeps its top n of w[i] - v (ties: lower column); u[i] = the n-th value
    for j in range(m):
        vj = v[j]
        for i in range(m):
            tmp[j, i] = wT[j, i] - vj
    _sort_lanes(tmp, m, net)
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
    # ---- over-full columns keep their top n of w - u - v (ties: lower row); v[j] rises to match
    over = False
    for j in range(m):
        over |= cdeg[j] > n
    if over:
        for i in range(m):
            ui = u[i]
            for j in range(m):
                tmp[i, j] = (w[i, j] - ui) - v[j] if keep[i, j] else -np.inf
        _sort_lanes(tmp, m, net)
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
    """Exact masks of tiles t0..t1-1 (row-major); returns (first tile with NaN, first failed tile)."""
    count = t1 - t0
    nblocks = (count + _BLOCK - 1) // _BLOCK
    nan_at = np.full(nblocks, -1, dtype=np.int64)
    fail_at = np.full(nblocks, -1, dtype=np.int64)
    for b in prange(nblocks):
        w = np.empty((m, m))
        wT = np.empty((m, m))
        tmp = np.empty((m, m))
        tmp32 = np.empty((m, m), dtype=np.float32)
        keep = np.empty((m, m), dtype=np.bool_)
        u = np.empty(m)
        v = np.empty(m)
        rdeg = np.empty(m, dtype=np.int64)
        cdeg = np.empty(m, dtype=np.int64)
        dist = np.empty(2 * m)
        dbits = dist.view(np.int64)
        fin = np.empty(2 * m)
        par = np.empty(2 * m, dtype=np.int64)
        for t in range(t0 + b * _BLOCK, min(t1, t0 + (b + 1) * _BLOCK)):
            r0 = (t // tiles_per_row) * m
            c0 = (t % tiles_per_row) * m
            fmax = _load_tile(x, r0, c0, m, w)
            if fmax < 0.0:
                nan_at[b] = t
                break
            if not _mcf_tile(w, fmax, n, m, sweeps, net, keep, u, v, rdeg, cdeg, dist, dbits, par, fin, tmp, tmp32, wT):
                fail_at[b] = t
                break
            _store_tile(keep, r0, c0, m, out)
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
def _enum4_tile(w, combos, configs, halves):  # type: ignore[no-untyped-def]
    """Index of the best valid 4 x 4 tile; the first in candidate order among equal sums.

    Candidates: every config in order, or for 2:4 (``halves`` not empty) each pair (k, complement)
    in turn, the complement scored as the tile total minus the weight of k (same as _enum4_kernel).
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
    if halves.shape[0]:
        total = (sums[0, 0] + sums[0, 5] + (sums[1, 0] + sums[1, 5])) + (
            sums[2, 0] + sums[2, 5] + (sums[3, 0] + sums[3, 5])
        )
        for h in range(halves.shape[0]):
            k = halves[h, 0]
            tot = (sums[0, configs[k, 0]] + sums[1, configs[k, 1]]) + (sums[2, configs[k, 2]] + sums[3, configs[k, 3]])
            if tot > best:
                best = tot
                arg = k
            if total - tot > best:
                best = total - tot
                arg = halves[h, 1]
        return arg
    for k in range(configs.shape[0]):
        tot = (sums[0, configs[k, 0]] + sums[1, configs[k, 1]]) + (sums[2, configs[k, 2]] + sums[3, configs[k, 3]])
        if tot > best:
            best = tot
            arg = k
    return arg


@kernel(parallel=True)
def _enum4_kernel(x, t0, t1, tiles_per_row, combos, configs, halves, masks, rowbits, out, out32):  # type: ignore[no-untyped-def]
    """Exact 4 x 4 tiles t0..t1-1 by enumerating every valid tile, vectorised over runs of tiles.

    Tiles are taken in runs of up to _CHUNK4 consecutive tiles of one tile row; for each run the
    n-subset sums of every row are laid out tile-last, so that scoring a candidate tile is one
    vectorised loop over the run. Tiles with inf, huge magnitudes or padding are re-solved by
    _enum4_tile on the safe values from _load_tile (same candidate order, same sums, same tie rule).
    ``out32`` is ``out`` viewed as uint32 (4 bools per element) when the width allows, else empty;
    ``rowbits[k, r]`` is row r of candidate k in that form. Returns the first tile holding NaN, or -1.
    """
    ncombo, n = combos.shape
    nconfig = configs.shape[0]
    rows, cols = x.shape
    words = out32.shape[1] > 0
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
        sums = np.zeros((4, ncombo, _CHUNK4))
        special = np.zeros(_CHUNK4, dtype=np.bool_)
        vals = np.empty((4, _CHUNK4))
        for r in range(4):
            row_ok = r0 + r < rows
            if n == 2 and row_ok and cbase + 4 * length <= cols:  # straight-line, vectorisable
                xr = x[r0 + r]
                sr = sums[r]
                for t in range(length):  # inf, huge or NaN show in the tile total (checked below)
                    c = cbase + 4 * t
                    a0 = abs(np.float64(xr[c]))
                    a1 = abs(np.float64(xr[c + 1]))
                    a2 = abs(np.float64(xr[c + 2]))
                    a3 = abs(np.float64(xr[c + 3]))
                    sr[0, t] = a0 + a1  # combos in itertools order: 01 02 03 12 13 23
                    sr[1, t] = a0 + a2
                    sr[2, t] = a0 + a3
                    sr[3, t] = a1 + a2
                    sr[4, t] = a1 + a3
                    sr[5, t] = a2 + a3
                continue
            for p in range(4):
                for t in range(length):
                    c = cbase + 4 * t + p
                    a = abs(np.float64(x[r0 + r, c])) if row_ok and c < cols else np.inf
                    usual = a <= _SCALE_ABOVE  # False for inf, huge, padding and NaN
                    vals[p, t] = a if usual else 0.0
                    special[t] |= not usual
            for c in range(ncombo):
                for qq in range(n):
                    p = combos[c, qq]
                    for t in range(length):
                        sums[r, c, t] += vals[p, t]
        best = np.full(_CHUNK4, -np.inf)
        arg = np.zeros(_CHUNK4, dtype=np.int64)
        if halves.shape[0]:  # 2:4: score each pair (k, complement of k) from one sum
            total = np.empty(_CHUNK4)
            for t in range(length):
                a = (sums[0, 0, t] + sums[0, 5, t]) + (sums[1, 0, t] + sums[1, 5, t])
                b = (sums[2, 0, t] + sums[2, 5, t]) + (sums[3, 0, t] + sums[3, 5, t])
                total[t] = a + b
                special[t] |= not (a + b <= _SCALE_ABOVE)  # inf, huge or NaN in the tile
            for h in range(halves.shape[0]):
                k = halves[h, 0]
                kc = halves[h, 1]
                s0 = sums[0, configs[k, 0]]
                s1 = sums[1, configs[k, 1]]
                s2 = sums[2, configs[k, 2]]
                s3 = sums[3, configs[k, 3]]
                for t in range(length):
                    tot = (s0[t] + s1[t]) + (s2[t] + s3[t])
                    better = tot > best[t]
                    top = tot if better else best[t]
                    at = k if better else arg[t]
                    rest = total[t] - tot
                    better = rest > top
                    best[t] = rest if better else top
                    arg[t] = kc if better else at
        else:
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
        w = np.empty((4, 4))
        word0 = first % tiles_per_row
        for t in range(length):
            if special[t]:
                if _load_tile(x, r0, cbase + 4 * t, 4, w) < 0.0:
                    nan_at[q] = first + t
                    break
                _store_tile(masks[_enum4_tile(w, combos, configs, halves)], r0, cbase + 4 * t, 4, out)
            elif words:
                for r in range(4):
                    out32[r0 + r, word0 + t] = rowbits[arg[t], r]
            else:
                _store_tile(masks[arg[t]], r0, cbase + 4 * t, 4, out)
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


@kernel(parallel=True)
def _approx_kernel(x, n, m, t0, t1, tiles_per_row, net, sel, sweeps, out, stage):  # type: ignore[no-untyped-def]
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
        tmp32 = np.empty((m, m), dtype=np.float32)
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
        dist = np.empty(2 * m)
        dbits = dist.view(np.int64)
        fin = np.empty(2 * m)
        par = np.empty(2 * m, dtype=np.int64)
        for t in range(t0 + b * _BLOCK, min(t1, t0 + (b + 1) * _BLOCK)):
            r0 = (t // tiles_per_row) * m
            c0 = (t % tiles_per_row) * m
            fmax = _load_tile(x, r0, c0, m, w)
            if fmax < 0.0:
                nan_at[b] = t
                break
            _greedy_tile(w, n, m, net, keep, rdeg, cdeg, tmp, order, ptr, hold, stack, instack, ja)
            if stage >= 1:
                greedy, bound = _greedy_bound(w, n, m, keep, rdeg, cdeg, u, v)
                for i in range(m):
                    for j in range(m):
                        wT[j, i] = w[i, j]
                        kT[j, i] = keep[i, j]
                if not _repair_tile(w, wT, n, m, keep, kT, rdeg, cdeg, ga, ja):
                    fail_at[b] = t
                    break
                if stage >= 2:
                    _exchange_pass(w, wT, m, keep, kT, ga, gb)
                    # certificate: OPT <= min(2 * greedy, bound) <= 2 * weight, else solve exactly
                    if stage == 3 or 2.0 * _tile_weight(w, m, keep) < min(2.0 * greedy, bound):
                        exact[b] += 1
                        args = (keep, u, v, rdeg, cdeg, dist, dbits, par, fin, tmp, tmp32, wT)
                        if not _mcf_tile(w, fmax, n, m, sweeps, sel, *args):
                            fail_at[b] = t
                            break
            _store_tile(keep, r0, c0, m, out)
    first_nan = -1
    first_fail = -1
    for b in range(nblocks):
        if first_nan < 0 and nan_at[b] >= 0:
            first_nan = nan_at[b]
        if first_fail < 0 and fail_at[b] >= 0:
            first_fail = fail_at[b]
    return first_nan, first_fail, exact.sum()


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
            combos, configs, masks, rowbits, halves = _tiles4(n)
            out32 = out.view(np.uint32) if x.shape[1] % 4 == 0 else np.empty((0, 0), dtype=np.uint32)
            with np.errstate(over="ignore", invalid="ignore"):  # pure-Python runs (NUMBA_DISABLE_JIT)
                nan = _enum4_kernel(x, t0, t1, tiles_per_row, combos, configs, halves, masks, rowbits, out, out32)
        elif method == "mcf":
            nan, fail = _mcf_kernel(x, n, m, t0, t1, tiles_per_row, _sweeps(m), sel, out)
        else:
            nan, fail, fallbacks = _approx_kernel(x, n, m, t0, t1, tiles_per_row, net, sel, _sweeps(m), out, 2)
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
        with threads_for(x.size, _PARALLEL_MIN_SIZE):
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
    complementary slackness, which certifies optimality. ``O(n m^3)`` worst case per tile, far less
    in practice. For ``m = 4`` every valid tile (90 for 2:4, 24 for 1:4 and 3:4) is scored,
    vectorised over tiles (2:4 scores each tile and its complement from one sum). "Exact" means
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
    this is not faster than ``"mcf"``, whose warm start leaves little to do (see the benchmark):
    use ``"approx"`` to reproduce the paper's method or as a baseline, ``"mcf"`` otherwise.

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
    with threads_for(x.size, _PARALLEL_MIN_SIZE):
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
    with threads_for(x.size, _PARALLEL_MIN_SIZE):
        return _solve_kernel(x, n, m, "approx", False)


def _stage_mask(W: Any, n: int, m: int, stage: int) -> np.ndarray:
    """approx stages for tests: 0 the greedy b-matching, 1 repaired, 2 the method, 3 its exact fallback."""
    x, n, m = _check_matrix(W, n, m, pad=True)
    out = np.zeros(x.shape, dtype=np.bool_)
    tiles_per_row = -(-x.shape[1] // m)
    total = -(-x.shape[0] // m) * tiles_per_row
    with threads_for(x.size, _PARALLEL_MIN_SIZE):
        _approx_kernel(x, n, m, 0, total, tiles_per_row, _network(m), _network(m, n), _sweeps(m), out, stage)
    return out


def _mcf_generic(W: Any, n: int, m: int) -> np.ndarray:
    """The primal-dual solver even for m = 4 (where ``mcf`` enumerates), for cross-checks."""
    x, n, m = _check_matrix(W, n, m, pad=True)
    out = np.zeros(x.shape, dtype=np.bool_)
    tiles_per_row = -(-x.shape[1] // m)
    total = -(-x.shape[0] // m) * tiles_per_row
    with threads_for(x.size, _PARALLEL_MIN_SIZE):
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
