"""Exact transposable masks (``method="mcf"``): a primal-dual b-matching per tile, and for m = 4 an
enumeration of every valid tile.

Each path is one template, compiled into a serial and a parallel kernel as it is needed (see
_tiles.tile_solver): _mcf_tiles for any m, _enum4_tiles for m = 4.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from nmsolve._jit import kernel, prange
from nmsolve._kernels import SCALE_ABOVE, load_tile, sort_lanes, store_tile
from nmsolve.transposable._tiles import (
    BATCH_VALUES,
    BLOCK,
    CHUNK4,
    mcf_complete,
    mcf_tile,
    network,
    new_results,
    run_deferring,
    solve_chunks,
    summary,
    tile_solver,
)


def _sweeps(m: int) -> int:
    """Coordinate-descent sweeps on the dual before the exact augmentations (see _batch_sweeps):
    each sweep costs two sorting-network passes and saves augmenting paths; tuned on Gaussian tiles."""
    return 1 if m <= 4 else 6


def batch_size(m: int) -> int:
    """Tiles per batch of _mcf_tiles: about BATCH_VALUES values, at least 16 tiles, at most BLOCK."""
    return min(BLOCK, max(16, BATCH_VALUES // (m * m)))


# --------------------------------------------------------------------------- primal-dual, any m


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


def _mcf_tiles(x, t0, t1, tiles_per_row, out, n, m, size, sweeps, net):  # type: ignore[no-untyped-def]
    """Exact masks of tiles t0..t1-1 (row-major); returns (first tile with NaN, first failed tile, 0),
    each tile -1 if none. The template of its serial and parallel kernels (see _tiles.tile_solver).

    Tiles go in batches of up to ``size`` (batch_size) consecutive tiles of one tile row,
    vectorised over the tiles of a batch (tile b in lane position b): loaded into
    ``wr[j, i * nb + b] = w_b[i, j]`` (tiles with inf, huge values or padding through load_tile);
    dual potentials for the whole batch
    (_batch_sweeps on float32 copies, each tile scaled by a power of two so that its largest value
    is below 1; the potentials are scaled back exactly); then the first step of mcf_tile for the
    whole batch in float64: every row's top n of ``w[i] - v``. A tile where that is already a
    b-matching (no tie at a row's threshold, every column kept n times) is optimal and stored; the
    others continue in mcf_complete, or where a row has a tie at its threshold, in mcf_tile with
    the same potentials (which takes the same first step, breaking the tie).
    """
    rows, cols = x.shape
    runs_per_row = (tiles_per_row + size - 1) // size
    band0 = t0 // tiles_per_row
    nblocks = ((t1 + tiles_per_row - 1) // tiles_per_row - band0) * runs_per_row
    res = new_results(nblocks)
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
                res[blk, 0] = first + b
                break
            for i in range(m):
                for j in range(m):
                    wr[j, i * nb + b] = w[i, j]
        if res[blk, 0] >= 0:
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
        # ---- every row's top n of w[i] - v (float64, exact), as the first step of mcf_tile
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
                if not (mcf_complete(w, *args) if untied[b] else mcf_tile(w, *args, wT)):
                    res[blk, 1] = first + b
                    break
            store_tile(keep, r0, cb + b * m, m, out)
    return summary(res)


def primal_dual_mask(x: np.ndarray, n: int, m: int, progress: bool) -> np.ndarray:
    """The exact mask of a checked 2-D matrix ``x`` by the primal-dual solver (any m)."""
    size = batch_size(m)
    solve = tile_solver(_mcf_tiles, "_mcf_tiles", x)
    sweeps, sel = _sweeps(m), network(m, n)

    def chunk(out: np.ndarray, t0: int, t1: int, tiles_per_row: int) -> tuple[int, int, int]:
        return solve(out, t0, t1, tiles_per_row, n, m, size, sweeps, sel)

    return solve_chunks(x, n, m, "mcf", progress, chunk)[0]


# --------------------------------------------------------------------------- m = 4: enumeration


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


def _enum4_tiles(x, t0, t1, tiles_per_row, out, flags, out32, combos, configs, cfgkeys):  # type: ignore[no-untyped-def]
    """Exact 4 x 4 tiles t0..t1-1 by enumerating every valid tile, vectorised over runs of tiles.

    Tiles are taken in runs of up to CHUNK4 consecutive tiles of one tile row. 2:4 runs inside the
    matrix go to _score24_run; otherwise the n-subset sums of every row are laid out tile-last, so
    that scoring a candidate tile is one vectorised loop over the run. Tiles with inf, NaN, huge
    magnitudes or padding are left to _enum4_deferred (flags[t - t0] = 1). Each tile's result is a
    key (``cfgkeys``: row r's kept columns as bits 4r..4r+3), written with one 32-bit store per tile
    row into ``out32`` (``out`` viewed as uint32, 4 bools per element, or empty when the width does
    not allow it). Returns (-1, -1, tiles left to _enum4_deferred). The template of its serial and
    parallel kernels (see _tiles.tile_solver).
    """
    ncombo, n = combos.shape
    nconfig = configs.shape[0]
    rows, cols = x.shape
    runs_per_row = (tiles_per_row + CHUNK4 - 1) // CHUNK4
    band0 = t0 // tiles_per_row
    band1 = (t1 + tiles_per_row - 1) // tiles_per_row
    nruns = (band1 - band0) * runs_per_row
    res = new_results(nruns)
    for q in prange(nruns):
        band = band0 + q // runs_per_row
        first = band * tiles_per_row + (q % runs_per_row) * CHUNK4
        last = min(first + CHUNK4, (band + 1) * tiles_per_row, t1)
        first = max(first, t0)
        if first >= last:
            continue
        length = last - first
        r0 = band * 4
        cbase = (first % tiles_per_row) * 4
        inside = r0 + 4 <= rows and cbase + 4 * length <= cols
        keys = np.empty(CHUNK4, dtype=np.int64)
        special = np.empty(CHUNK4, dtype=np.bool_)
        for t in range(length):
            special[t] = False
        vals = np.empty((16, CHUNK4))
        if n == 2 and inside:
            _score24_run(x, r0, cbase, length, vals, keys, special)
        else:
            sums = np.empty((4, ncombo, CHUNK4))
            for r in range(4):
                for c in range(ncombo):
                    for t in range(length):
                        sums[r, c, t] = 0.0
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
            best = np.empty(CHUNK4)
            arg = np.empty(CHUNK4, dtype=np.int64)
            for t in range(length):
                best[t] = -np.inf
                arg[t] = 0
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
        for t in range(length):
            if special[t]:
                flags[first + t - t0] = 1
                res[q, 2] += 1
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
    return summary(res)


@kernel()
def _enum4_deferred(x, tiles, kinds, tiles_per_row, combos, configs, cfgkeys, out):  # type: ignore[no-untyped-def]
    """The tiles that _enum4_tiles leaves (padding, inf, NaN or a huge magnitude), each solved by
    _enum4_tile on the safe values from load_tile (same candidate order, same sums, same tie rule);
    returns (first tile holding NaN, -1, 0). Such tiles are rare, so this is a kernel of its own,
    compiled only when one occurs."""
    rows, cols = x.shape
    w = np.empty((4, 4))
    for k in range(tiles.size):
        t = tiles[k]
        r0 = (t // tiles_per_row) * 4
        c0 = (t % tiles_per_row) * 4
        if load_tile(x, r0, c0, 4, w) < 0.0:
            return t, -1, 0
        key = cfgkeys[_enum4_tile(w, combos, configs)]
        for r in range(min(4, rows - r0)):
            for j in range(min(4, cols - c0)):
                out[r0 + r, c0 + j] = (key >> (4 * r + j)) & 1
    return -1, -1, 0


def enumeration_mask(x: np.ndarray, n: int, progress: bool) -> np.ndarray:
    """The exact n:4 mask of a checked 2-D matrix ``x``, by enumerating every valid tile."""
    solve = tile_solver(_enum4_tiles, "_enum4_tiles", x)
    combos, configs, keys = _tiles4(n)

    def finish(tiles: np.ndarray, kinds: np.ndarray, out: np.ndarray, tiles_per_row: int) -> tuple[int, int, int]:
        return _enum4_deferred(x, tiles, kinds, tiles_per_row, combos, configs, keys, out)  # type: ignore[no-any-return]

    def chunk(out: np.ndarray, t0: int, t1: int, tiles_per_row: int) -> tuple[int, int, int]:
        out32 = out.view(np.uint32) if x.shape[1] % 4 == 0 else np.empty((0, 0), dtype=np.uint32)
        with np.errstate(over="ignore", invalid="ignore"):  # pure-Python runs (NUMBA_DISABLE_JIT)
            return run_deferring(solve, finish, out, t0, t1, tiles_per_row, out32, combos, configs, keys)

    return solve_chunks(x, n, 4, "mcf", progress, chunk)[0]


def mcf_mask(x: np.ndarray, n: int, m: int, progress: bool) -> np.ndarray:
    """``method="mcf"``: the exact mask of a checked 2-D matrix ``x`` (enumeration for m = 4)."""
    if m == 4:
        return enumeration_mask(x, n, progress)
    return primal_dual_mask(x, n, m, progress)
