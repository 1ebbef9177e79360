"""Approximate transposable masks (``method="approx"``): the greedy 1/2-approximation of Hubara et
al., repaired to exactly n per row and column, improved by one pass of 2-row exchanges, with a
checked guarantee (tiles where it cannot be certified are solved exactly, by _tiles.mcf_tile).

Any m runs the tiles one at a time (_approx_tiles); m = 4 runs the greedy and the exchange pass
vectorised over runs of tiles (_approx4_tiles), with the same masks. Each path is one template,
compiled into a serial and a parallel kernel as it is needed (see _tiles.tile_solver).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nmsolve._jit import kernel, prange
from nmsolve._kernels import SCALE_ABOVE, load_tile, store_tile
from nmsolve.transposable._tiles import (
    BLOCK,
    CHUNK4,
    mcf_tile,
    network,
    new_results,
    run_deferring,
    solve_chunks,
    summary,
    tile_solver,
)

# --------------------------------------------------------------------------- one tile at a time


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
def _tile_has_inf(x, r0, c0, m):  # type: ignore[no-untyped-def]
    """Whether the m x m tile of x at (r0, c0) (clipped to x) holds an infinite entry."""
    for i in range(r0, min(r0 + m, x.shape[0])):
        for j in range(c0, min(c0 + m, x.shape[1])):
            if abs(x[i, j]) == np.inf:
                return True
    return False


@kernel()
def _approx_rest(w, n, m, stage, keep, rdeg, cdeg, wT, kT, u, v, ga, gb, ja):  # type: ignore[no-untyped-def]
    """The stages of ``approx`` after the greedy b-matching ``keep`` (degrees rdeg, cdeg) of tile w:
    stage 1 repairs it, 2 also improves and certifies it, 3 certifies nothing. Returns 0, or 1 if
    the tile is to be solved exactly (the certificate failed, or stage 3: see _deferred_tiles), or
    -2 if the repair failed. The other arguments are scratch."""
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
        return 1
    return 0


def _approx_tiles(x, t0, t1, tiles_per_row, out, flags, n, m, net, stage):  # type: ignore[no-untyped-def]
    """Approximate masks of tiles t0..t1-1, in work items of BLOCK tiles; returns (first NaN tile,
    first failed tile, tiles left to _deferred_tiles). ``stage`` 0 stops after the greedy (an
    under-filled b-matching, for tests), 1 after the repair, 2 is the full method, 3 takes the
    exact fallback for every tile (to test that path). A tile whose guarantee is not certified
    (or every tile at stage 3) is left to be solved exactly: flags[t - t0] = 1. The template of
    its serial and parallel kernels (see _tiles.tile_solver)."""
    count = t1 - t0
    nblocks = (count + BLOCK - 1) // BLOCK
    res = new_results(nblocks)
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
        for t in range(t0 + b * BLOCK, min(t1, t0 + (b + 1) * BLOCK)):
            r0 = (t // tiles_per_row) * m
            c0 = (t % tiles_per_row) * m
            if load_tile(x, r0, c0, m, w) < 0.0:
                res[b, 0] = t
                break
            if stage >= 2 and _tile_has_inf(x, r0, c0, m):
                # the half guarantee is certified on the finite stand-ins of inf (load_tile), where
                # a tile that keeps every inf passes whatever it keeps of the finite rest: solve exactly
                flags[t - t0] = 1
                res[b, 2] += 1
                continue
            _greedy_tile(w, n, m, net, keep, rdeg, cdeg, tmp, order, ptr, hold, stack, instack, ja)
            if stage >= 1:
                status = _approx_rest(w, n, m, stage, keep, rdeg, cdeg, wT, kT, u, v, ga, gb, ja)
                if status < 0:
                    res[b, 1] = t
                    break
                if status == 1:
                    flags[t - t0] = 1
                    res[b, 2] += 1
                    continue
            store_tile(keep, r0, c0, m, out)
    return summary(res)


def scalar_solver(x: np.ndarray) -> Any:
    """``solve(out, t0, t1, tiles_per_row, flags, n, m, network(m), stage)`` for ``x``: approx one
    tile at a time (_approx_tiles; stage 2 is the method, the others are for tests). Run it with
    run_tiles."""
    return tile_solver(_approx_tiles, "_approx_tiles", x)


@kernel()
def _deferred_tiles(x, n, m, tiles, kinds, tiles_per_row, net, sel, out):  # type: ignore[no-untyped-def]
    """Finish the tiles that the kernels of this module leave, ``tiles`` (indices) of ``kinds``
    1: solve exactly (the guarantee was not certified, or stage 3), or 2: an m = 4 tile with
    padding, inf, NaN or a huge magnitude, solved as _approx_tiles does at stage 2 (and exactly if
    its guarantee is not certified). Returns (first NaN tile, first failed tile, tiles solved
    exactly), each tile -1 if none.

    Such tiles are rare, so their code (the exact solver of one tile, the scalar greedy) is a
    kernel of its own, compiled only when one occurs: the exact solution of a tile from zero
    potentials (mcf_tile) depends on its values alone, and those are what load_tile returns.
    """
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
    dist = np.empty(2 * m)
    dbits = dist.view(np.int64)
    par = np.empty(2 * m, dtype=np.int64)
    fin = np.empty(2 * m)
    exact = 0
    for k in range(tiles.size):
        t = tiles[k]
        r0 = (t // tiles_per_row) * m
        c0 = (t % tiles_per_row) * m
        if load_tile(x, r0, c0, m, w) < 0.0:
            return t, -1, exact
        status = 1
        if kinds[k] == 2 and not _tile_has_inf(x, r0, c0, m):  # inf: exactly, as in _approx_tiles
            _greedy_tile(w, n, m, net, keep, rdeg, cdeg, tmp, order, ptr, hold, stack, instack, ja)
            status = _approx_rest(w, n, m, 2, keep, rdeg, cdeg, wT, kT, u, v, ga, gb, ja)
            if status < 0:
                return -1, t, exact
        if status == 1:
            for j in range(m):
                v[j] = 0.0
            if not mcf_tile(w, n, m, sel, keep, u, v, rdeg, cdeg, dist, dbits, par, fin, tmp, wT):
                return -1, t, exact
            exact += 1
        store_tile(keep, r0, c0, m, out)
    return -1, -1, exact


def run_tiles(
    x: np.ndarray, n: int, m: int, solve: Any, out: np.ndarray, t0: int, t1: int, tiles_per_row: int, *args: Any
) -> tuple[int, int, int]:
    """Tiles t0..t1-1 of ``x`` by ``solve(out, t0, t1, tiles_per_row, flags, *args)`` (scalar_solver or
    vectorised_solver), then the tiles it leaves by _deferred_tiles (see _tiles.run_deferring);
    returns (first NaN tile, first failed tile, tiles solved exactly), each tile -1 if none."""
    net, sel = network(m), network(m, n)

    def finish(tiles: np.ndarray, kinds: np.ndarray, out: np.ndarray, tiles_per_row: int) -> tuple[int, int, int]:
        return _deferred_tiles(x, n, m, tiles, kinds, tiles_per_row, net, sel, out)  # type: ignore[no-any-return]

    return run_deferring(solve, finish, out, t0, t1, tiles_per_row, *args)


# --------------------------------------------------------------------------- m = 4, vectorised


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
    rc = np.empty(length, dtype=np.int64)
    cc = np.empty(length, dtype=np.int64)
    exchanged = np.empty(length, dtype=np.int64)
    total = np.empty(length)
    for t in range(length):
        keys[t] = 0
        rc[t] = 0
        cc[t] = 0
        total[t] = 0.0
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
    for t in range(length):  # a loop, not exchanged[:length] = keys[:length], whose shape check
        exchanged[t] = keys[t]  # compiles an error message (numba's raise_with_shape_context): 1.5 s
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


def _approx4_tiles(x, t0, t1, tiles_per_row, out, flags, out32, n, net16):  # type: ignore[no-untyped-def]
    """``approx`` for 4 x 4 tiles t0..t1-1, the same masks as _approx_tiles at stage 2, faster.

    Tiles are taken in runs of up to CHUNK4 consecutive tiles of one tile row (like
    _mcf._enum4_tiles). _greedy4_run settles most tiles inside the matrix (about 84% of Gaussian 2:4
    tiles); from its greedy b-matching, the others (a row or column left short, or a weight that
    dropped in the exchange pass) go through _approx_rest, exactly as in _approx_tiles. Tiles with
    padding, inf, NaN or huge values are left to _deferred_tiles (flags[t - t0] = 2), like those
    whose guarantee is not certified (flags 1). ``out32`` is ``out`` viewed as uint32 or empty, as
    for _mcf._enum4_tiles. Returns what _approx_tiles returns. The template of its serial and
    parallel kernels (see _tiles.tile_solver).
    """
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
        inner = 0 if r0 + 4 > rows else max(0, min(length, (cols - cbase) // 4))
        keys = np.empty(CHUNK4, dtype=np.int64)
        code = np.empty(CHUNK4, dtype=np.int64)
        for t in range(length):
            keys[t] = 0
            code[t] = 2
        vals = np.empty((16, CHUNK4))
        sv = np.empty((16, CHUNK4))
        si = np.empty((16, CHUNK4), dtype=np.int64)
        w = np.empty((4, 4))
        wT = np.empty((4, 4))
        keep = np.empty((4, 4), dtype=np.bool_)
        kT = np.empty((4, 4), dtype=np.uint8)
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
            if code[t] == 2:  # padding, inf, NaN or huge values
                flags[first + t - t0] = 2
                res[q, 2] += 1
                continue
            for i in range(4):  # the greedy from _greedy4_run
                rdeg[i] = 0
                cdeg[i] = 0
            for i in range(4):
                for j in range(4):
                    w[i, j] = vals[4 * i + j, t]
                    keep[i, j] = (keys[t] >> (4 * i + j)) & 1
                    rdeg[i] += keep[i, j]
                    cdeg[j] += keep[i, j]
            status = _approx_rest(w, n, 4, 2, keep, rdeg, cdeg, wT, kT, u, v, ga, gb, ja)
            if status < 0:
                res[q, 1] = first + t
                break
            if status == 1:
                flags[first + t - t0] = 1
                res[q, 2] += 1
                continue
            store_tile(keep, r0, cbase + 4 * t, 4, out)
    return summary(res)


def vectorised_solver(x: np.ndarray) -> Any:
    """``solve(out, t0, t1, tiles_per_row, flags, out32, n, network(16))`` for ``x``: approx for m = 4,
    vectorised over runs of tiles (_approx4_tiles). Run it with run_tiles."""
    return tile_solver(_approx4_tiles, "_approx4_tiles", x)


# --------------------------------------------------------------------------- entry points


def approx_tiles(x: np.ndarray, n: int, m: int, progress: bool = False) -> tuple[np.ndarray, int]:
    """The ``approx`` mask of a checked 2-D matrix ``x``, and the number of tiles solved exactly
    because the 1/2 guarantee could not be certified (the benchmark reports it)."""
    if m == 4:
        solve4, net16 = vectorised_solver(x), network(16)

        def chunk(out: np.ndarray, t0: int, t1: int, tiles_per_row: int) -> tuple[int, int, int]:
            out32 = out.view(np.uint32) if x.shape[1] % 4 == 0 else np.empty((0, 0), dtype=np.uint32)
            with np.errstate(over="ignore", invalid="ignore"):  # pure-Python runs (NUMBA_DISABLE_JIT)
                return run_tiles(x, n, 4, solve4, out, t0, t1, tiles_per_row, out32, n, net16)

    else:
        solve, net = scalar_solver(x), network(m)

        def chunk(out: np.ndarray, t0: int, t1: int, tiles_per_row: int) -> tuple[int, int, int]:
            return run_tiles(x, n, m, solve, out, t0, t1, tiles_per_row, n, m, net, 2)

    return solve_chunks(x, n, m, "approx", progress, chunk)


def approx_mask(x: np.ndarray, n: int, m: int, progress: bool) -> np.ndarray:
    """``method="approx"``: the mask of a checked 2-D matrix ``x``."""
    return approx_tiles(x, n, m, progress)[0]
