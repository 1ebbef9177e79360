"""Slow, obviously-correct oracles that the fast kernels are tested against.

Each oracle works group by group in plain Python. Keep them simple rather than fast; add new ones
with small, local edits (several solvers share this file).
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np


def nm_mask_sorted(x: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M along the last axis by definition: sort each group by (-score, index), keep the first n.

    A ragged last group keeps min(n, len) entries.
    """
    x = np.asarray(x)
    out = np.zeros(x.shape, dtype=bool)
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx]
        for start in range(0, len(row), m):
            group = list(range(start, min(start + m, len(row))))
            ranked = sorted(group, key=lambda i: (-row[i].item(), i))
            for i in ranked[: min(n, len(group))]:
                out[idx + (i,)] = True
    return out


def nm_mask_subsets(x: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M along the last axis by enumeration: the max-sum subset of each group (itertools.combinations,
    first in lexicographic order among equal sums). Exact for integer-valued scores."""
    x = np.asarray(x)
    out = np.zeros(x.shape, dtype=bool)
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx]
        for start in range(0, len(row), m):
            best, best_sum = None, None
            for subset in itertools.combinations(range(start, start + m), n):
                total = sum(row[i].item() for i in subset)
                if best_sum is None or total > best_sum:
                    best, best_sum = subset, total
            for i in best:
                out[idx + (i,)] = True
    return out


# --------------------------------------------------------------------------- constant fan-in (SRigL)


def _top_by_sort(scores: list, candidates: list, count: int) -> set:
    """The ``count`` candidates with the largest score, ties to the lower index, by sorting."""
    ranked = sorted(candidates, key=lambda i: (-scores[i], i))
    return set(ranked[: max(count, 0)])


def fanin_mask_sorted(x: np.ndarray, k: int) -> np.ndarray:
    """Constant fan-in by definition: per row (first axis; the rest flattened) keep the k best by sorting."""
    x = np.asarray(x)
    flat = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))
    out = np.zeros(flat.shape, dtype=bool)
    for r, row in enumerate(flat):
        values = [v.item() for v in row]
        for j in _top_by_sort(values, list(range(len(values))), k):
            out[r, j] = True
    return out.reshape(x.shape)


def condensed_linear_loops(x: np.ndarray, values, indices, rows, shape, bias=None) -> np.ndarray:
    """x @ W.T (+ bias) with W given by its condensed rows, by explicit loops in float64."""
    x = np.asarray(x, dtype=np.float64)
    batch = x.reshape(-1, shape[1])
    y = np.zeros((batch.shape[0], shape[0]))
    for b in range(batch.shape[0]):
        for i, r in enumerate(rows):
            y[b, r] = sum(float(values[i][j]) * batch[b, indices[i][j]] for j in range(len(indices[i])))
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64)
    return y.reshape(*x.shape[:-1], shape[0])


def rigl_update_steps(w: np.ndarray, g: np.ndarray, mask: np.ndarray, drop_fraction: float, gamma_sal: float, budget):
    """SRigL's update as the four documented steps, with Python sorts over flat indices.

    Returns (new_mask, active, k_new, saliency); arrays are 2-D (rows, fan_in).
    """
    mask = np.asarray(mask, dtype=bool).reshape(w.shape[0], -1)
    rows, fan_in = mask.shape
    mag = [abs(v) for v in np.asarray(w, dtype=np.float64).reshape(-1).tolist()]
    grad = [abs(v) for v in np.asarray(g, dtype=np.float64).reshape(-1).tolist()]
    on = [i for i in range(rows * fan_in) if mask.flat[i]]
    n_ones = len(on)
    k_old = n_ones // len({i // fan_in for i in on})
    budget = n_ones if budget is None else budget
    n_drop = int(np.floor(n_ones * drop_fraction))
    n_keep = n_ones - n_drop
    keep = _top_by_sort(mag, on, n_keep)
    grow = _top_by_sort(grad, [i for i in range(rows * fan_in) if i not in keep], n_drop)
    saliency = [sum(1 for i in keep | grow if i // fan_in == r) for r in range(rows)]
    wanted = sum(1 for s in saliency if s >= gamma_sal * k_old) if gamma_sal > 0 else rows
    n_active = min(max(wanted, -(-budget // fan_in)), rows, budget)
    ranked_rows = sorted(range(rows), key=lambda r: (-saliency[r], r))
    active = set(ranked_rows[:n_active])
    k_new = budget // n_active
    allowed = [i for i in on if i // fan_in in active]
    kept = _top_by_sort(mag, allowed, min(n_keep, len(allowed)))
    new = set()
    for r in sorted(active):
        row_kept = _top_by_sort(mag, [i for i in kept if i // fan_in == r], k_new)
        free = [i for i in range(r * fan_in, (r + 1) * fan_in) if i not in row_kept]
        new |= row_kept | _top_by_sort(grad, free, k_new - len(row_kept))
    out = np.zeros(rows * fan_in, dtype=bool)
    out[sorted(new)] = True
    flags = np.zeros(rows, dtype=bool)
    flags[sorted(active)] = True
    return out.reshape(rows, fan_in), flags, k_new, np.array(saliency)


# --------------------------------------------------------------------------- mask diversity


def tile_count_brute(m: int, n: int) -> int:
    """K(m, n) by definition: every choice of an n-subset per row, kept when each column sum is n."""
    rows = list(itertools.combinations(range(m), n))
    count = 0
    for choice in itertools.product(rows, repeat=m):
        sums = [0] * m
        for subset in choice:
            for j in subset:
                sums[j] += 1
        count += all(s == n for s in sums)
    return count


def all_masks(rows: int, cols: int) -> np.ndarray:
    """Every 0/1 matrix of shape (rows, cols) (2 ** (rows * cols) of them), shape (2**T, rows, cols)."""
    size = rows * cols
    codes = np.arange(2**size, dtype=np.int64)
    bits = (codes[:, None] >> np.arange(size)) & 1
    return bits.astype(bool).reshape(-1, rows, cols)


def count_masks_brute(rows: int, cols: int, kind: str, **p: int) -> int:
    """Mask diversity of a tiny (rows, cols) matrix by enumerating all 2**(rows*cols) masks and
    checking the structure's definition directly (groups along columns, tiles, blocks, rows)."""
    masks = all_masks(rows, cols)
    if kind == "unstructured":
        ok = masks.sum(axis=(1, 2)) == p["kept"]
    elif kind == "nm":
        ok = (masks.reshape(len(masks), rows, cols // p["m"], p["m"]).sum(-1) == p["n"]).all(axis=(1, 2))
    elif kind == "transposable":
        m, n = p["m"], p["n"]
        along_rows = masks.reshape(len(masks), rows, cols // m, m).sum(-1) == n
        t = masks.transpose(0, 2, 1)
        along_cols = t.reshape(len(masks), cols, rows // m, m).sum(-1) == n
        ok = along_rows.all(axis=(1, 2)) & along_cols.all(axis=(1, 2))
    elif kind == "fanin":
        ok = (masks.sum(axis=2) == p["n"]).all(axis=1)
    elif kind == "block":
        bh, bw = p["bh"], p["bw"]
        blocks = masks.reshape(len(masks), rows // bh, bh, cols // bw, bw)
        full = blocks.all(axis=(2, 4))
        empty = ~blocks.any(axis=(2, 4))
        ok = (full | empty).all(axis=(1, 2)) & (full.sum(axis=(1, 2)) == p["kept_blocks"])
    else:
        raise ValueError(kind)
    return int(ok.sum())


# --------------------------------------------------------------------------- transposable N:M (tiles)


def tiles(x: np.ndarray, m: int) -> np.ndarray:
    """Aligned m x m tiles of a 2-D array, row-major: shape (tiles, m, m)."""
    x = np.asarray(x)
    r, c = x.shape
    return x.reshape(r // m, m, c // m, m).transpose(0, 2, 1, 3).reshape(-1, m, m)


def valid_tiles(n: int, m: int) -> np.ndarray:
    """Every m x m 0/1 tile with exactly n per row and per column, by brute force over row subsets."""
    rows = [np.isin(np.arange(m), c) for c in itertools.combinations(range(m), n)]
    out = [np.array(t) for t in itertools.product(rows, repeat=m) if (np.sum(t, axis=0) == n).all()]
    return np.array(out, dtype=bool)


def exact_sum(values: np.ndarray) -> Fraction:
    """The exact sum of finite floats (a Fraction: no rounding, no overflow)."""
    return sum((Fraction(float(v)) for v in np.ravel(values)), Fraction(0))


def transposable_optimum_bruteforce(x: np.ndarray, n: int, m: int = 4) -> list[tuple[int, Fraction]]:
    """Per tile, the best (number of infinite magnitudes kept, exact finite magnitude kept) over all
    valid tiles, compared lexicographically."""
    table = valid_tiles(n, m)
    best = []
    for tile in tiles(np.abs(np.asarray(x, dtype=np.float64)), m):
        infinite = np.isinf(tile)
        finite = np.where(infinite, 0.0, tile)
        best.append(max((int(infinite[t].sum()), exact_sum(finite[t])) for t in table))
    return best


def transposable_optimum_lp(x: np.ndarray, n: int, m: int) -> np.ndarray:
    """Per-tile optimum of sum |x| kept by scipy's HiGHS LP (the tile LP is integral); finite x only."""
    from scipy.optimize import linprog

    rows = np.kron(np.eye(m), np.ones(m))  # x[i, :] sums
    cols = np.tile(np.eye(m), m)  # x[:, j] sums
    a_eq = np.vstack([rows, cols])
    b_eq = np.full(2 * m, n)
    out = []
    for tile in tiles(np.abs(np.asarray(x, dtype=np.float64)), m):
        res = linprog(-tile.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, 1), method="highs")
        assert res.status == 0, res.message
        out.append(-res.fun)
    return np.array(out)


def tile_objectives(x: np.ndarray, mask: np.ndarray, m: int) -> list[tuple[int, Fraction]]:
    """Per tile (number of infinite magnitudes kept, exact finite magnitude kept) of a mask."""
    out = []
    for tile, keep in zip(tiles(np.abs(np.asarray(x, dtype=np.float64)), m), tiles(mask, m), strict=True):
        infinite = np.isinf(tile) & keep
        out.append((int(infinite.sum()), exact_sum(tile[keep & ~np.isinf(tile)])))
    return out


def greedy_tile(w: np.ndarray, n: int) -> np.ndarray:
    """The paper's greedy on one tile: edges by decreasing weight (ties: lower flat index), kept while
    their row and column hold fewer than n."""
    m = w.shape[0]
    keep = np.zeros((m, m), dtype=bool)
    for flat in sorted(range(m * m), key=lambda f: (-float(w.flat[f]), f)):
        i, j = divmod(flat, m)
        if keep[i].sum() < n and keep[:, j].sum() < n:
            keep[i, j] = True
    return keep


def transposable_groups_ok(mask: np.ndarray, n: int, m: int) -> bool:
    """Exactly n kept in every row group and every column group of every tile, tile by tile."""
    return all((t.sum(axis=0) == n).all() and (t.sum(axis=1) == n).all() for t in tiles(mask, m))


# --------------------------------------------------------------------------- permutations (Bi-Mask, channels)


def bimask_score_naive(fwd: np.ndarray, perm, n: int, m: int) -> int:
    """Bi-Mask score by definition: blocks of m rows in perm order, per column min(n, F-nonzeros)."""
    fwd = np.asarray(fwd, dtype=bool)
    score = 0
    for start in range(0, len(perm), m):
        block = [perm[i] for i in range(start, min(start + m, len(perm)))]
        for j in range(fwd.shape[1]):
            score += min(n, sum(int(fwd[r, j]) for r in block))
    return score


def bimask_backward_naive(w: np.ndarray, fwd: np.ndarray, perm, n: int, m: int) -> np.ndarray:
    """B by definition: per block (perm order) and column, sort the rows by (-|w| * F, permuted
    position), keep the first n, intersect with F."""
    fwd = np.asarray(fwd, dtype=bool)
    out = np.zeros(fwd.shape, dtype=bool)
    for start in range(0, len(perm), m):
        block = [(i, perm[i]) for i in range(start, min(start + m, len(perm)))]
        for j in range(fwd.shape[1]):
            keys = [(-(abs(float(w[r, j])) if fwd[r, j] else 0.0), i, r) for i, r in block]
            for _, _, r in sorted(keys)[:n]:
                out[r, j] = fwd[r, j]
    return out


def channel_kept_naive(w: np.ndarray, perm, n: int, m: int) -> float:
    """Magnitude kept by N:M along rows of |w[:, perm]|, group by group in Python (math.fsum)."""
    import math

    a = np.abs(np.asarray(w, dtype=np.float64))[:, list(perm)]
    parts = []
    for row in a:
        for start in range(0, len(row), m):
            parts += sorted(row[start : start + m].tolist(), reverse=True)[:n]
    return math.fsum(parts)


def channel_swap_gain_naive(w: np.ndarray, perm, x: int, y: int, n: int, m: int) -> float:
    """Change of the kept magnitude when columns x and y (column ids, not positions) trade places in perm."""
    order = list(perm)
    i, j = order.index(x), order.index(y)
    order[i], order[j] = y, x
    return channel_kept_naive(w, order, n, m) - channel_kept_naive(w, perm, n, m)


def channel_bound_naive(w: np.ndarray, n: int, m: int) -> float:
    """The efficacy bound: the top n/m of every row of |w|, unstructured."""
    import math

    a = np.abs(np.asarray(w, dtype=np.float64))
    keep = a.shape[1] // m * n
    return math.fsum(v for row in a for v in sorted(row.tolist(), reverse=True)[:keep])


def column_partitions(cols: int, m: int):
    """Every split of range(cols) into groups of m (unordered groups), as permutations (groups
    concatenated): 35 for 8 columns and m=4, 5775 for 12."""

    def split(rest):
        if not rest:
            yield []
            return
        first, others = rest[0], rest[1:]
        for mates in itertools.combinations(others, m - 1):
            remaining = [c for c in others if c not in mates]
            for tail in split(remaining):
                yield [first, *mates, *tail]

    yield from split(list(range(cols)))


def best_channel_permutation_bruteforce(w: np.ndarray, n: int, m: int) -> float:
    """The optimal kept magnitude over all column permutations (via all group partitions)."""
    return max(channel_kept_naive(w, p, n, m) for p in column_partitions(w.shape[1], m))


def best_bimask_score_bruteforce(fwd: np.ndarray, n: int, m: int) -> int:
    """The best Bi-Mask score over all row permutations (all permutations: tiny out only)."""
    return max(bimask_score_naive(fwd, p, n, m) for p in itertools.permutations(range(fwd.shape[0])))


def nm_select_survivors_naive(w: np.ndarray, survivors: np.ndarray, perm, n: int, m: int) -> np.ndarray:
    """Conversion's selection by definition: in perm order, per group sort by (not survivor, -|w|,
    position), keep the first n; returned in w's column order."""
    out = np.zeros(w.shape, dtype=bool)
    perm = list(perm)
    for r in range(w.shape[0]):
        for start in range(0, len(perm), m):
            cols = perm[start : start + m]
            ranked = sorted(range(m), key=lambda i: (not survivors[r, cols[i]], -abs(float(w[r, cols[i]])), i))
            for i in ranked[:n]:
                out[r, cols[i]] = True
    return out


def expected_retention_enumerated(density: float, n: int, m: int) -> float:
    """E[min(X, n)] / E[X] for X ~ Binomial(m, density), by enumerating all 2^m survivor patterns."""
    total = 0.0
    for pattern in itertools.product([0, 1], repeat=m):
        k = sum(pattern)
        total += density**k * (1 - density) ** (m - k) * min(k, n)
    return total / (m * density)


def ridge_refit_lstsq(w: np.ndarray, mask: np.ndarray, x: np.ndarray, lam: float) -> np.ndarray:
    """Row by row: min ||x[:, S] v - x w_r||^2 + lam ||v||^2 by lstsq on the stacked system."""
    w = np.asarray(w, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(w)
    for r in range(w.shape[0]):
        cols = np.flatnonzero(mask[r])
        if not len(cols):
            continue
        a = np.vstack([x[:, cols], np.sqrt(lam) * np.eye(len(cols))])
        b = np.concatenate([x @ w[r], np.zeros(len(cols))])
        out[r, cols] = np.linalg.lstsq(a, b, rcond=None)[0]
    return out


def sparsegpt_columnwise(w: np.ndarray, h: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """SparseGPT one column at a time from explicit inverses (no Cholesky, no lazy blocks).

    At column j the optimal-brain-surgeon quantities come from ``G = inv(H[j:, j:])``: the saliency of
    column j is ``w_j^2 / G[0, 0]`` (chosen at the start of each group of m for the whole group), and
    pruning it moves the rest of the row by ``-(w_j - q_j) G[0, 1:] / G[0, 0]``. ``h`` is already damped.
    """
    w = w.astype(np.float64).copy()
    rows, cols = w.shape
    mask = np.zeros(w.shape, dtype=bool)
    for j in range(cols):
        if j % m == 0:
            d = np.array([np.linalg.inv(h[c:, c:])[0, 0] for c in range(j, j + m)])
            saliency = w[:, j : j + m] ** 2 / d
            for r in range(rows):
                order = sorted(range(m), key=lambda c: (-saliency[r, c], c))
                mask[r, [j + c for c in order[:n]]] = True
        g = np.linalg.inv(h[j:, j:])
        for r in range(rows):
            if not mask[r, j]:
                w[r, j:] -= w[r, j] * g[0, :] / g[0, 0]
                w[r, j] = 0.0
    return w, mask


def row_refit_lstsq(x: np.ndarray, w: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each row's kept weights fitted by ``numpy.linalg.lstsq`` on the calibration inputs ``x``."""
    out = np.zeros(w.shape)
    for r in range(w.shape[0]):
        kept = np.flatnonzero(mask[r])
        out[r, kept] = np.linalg.lstsq(x[:, kept], x @ w[r], rcond=None)[0]
    return out


def refit_row_error(hd: np.ndarray, w: np.ndarray, keep: np.ndarray, h: np.ndarray | None = None) -> float:
    """``(w - v)^T h (w - v)`` for ``v = argmin (w - v)^T hd (w - v)`` zero outside ``keep`` (``h`` defaults to
    ``hd``), by a direct least-squares solve of the kept system."""
    s = np.flatnonzero(keep)
    v = np.zeros_like(w, dtype=np.float64)
    if s.size:
        v[s] = np.linalg.lstsq(hd[np.ix_(s, s)], (hd @ w)[s], rcond=None)[0]
    delta = w - v
    return float(delta @ (hd if h is None else h) @ delta)


def nm_row_masks(cols: int, n: int, m: int):
    """Every N:M mask (exactly n of every m) of one row of ``cols`` entries."""
    group = [np.isin(np.arange(m), c) for c in itertools.combinations(range(m), n)]
    for parts in itertools.product(group, repeat=cols // m):
        yield np.concatenate(parts)


def in_group_swaps(keep: np.ndarray, m: int):
    """Every mask one in-group swap (a kept and a dropped entry of one group of m) away from ``keep``."""
    for i in np.flatnonzero(keep):
        g = i // m
        for j in range(g * m, g * m + m):
            if not keep[j]:
                out = keep.copy()
                out[i], out[j] = False, True
                yield out
