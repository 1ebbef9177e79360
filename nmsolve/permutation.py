"""Permutation searches for N:M sparsity.

* **Bi-Mask** (:func:`bimask_permutation`, :func:`bimask_masks`): a permutation of the *output rows*
  of ``W[out, in]`` so that a backward mask ``B``, N:M along the output axis in permuted order and a
  subset of the forward N:M mask ``F``, keeps as much of ``F`` as possible.
* **Channel permutations** (:func:`channel_permutation`): a permutation of the *input columns* of
  ``W[out, in]`` that raises the magnitude an N:M mask along ``in`` keeps.

Both searches are numba kernels; the public wrappers validate, convert once, call the kernels and
shape a frozen result.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._jit import BIMASK_PARALLEL_MIN, kernel, prange, threads_for
from nmsolve._validate import (
    as_array,
    as_rng,
    as_scores,
    check_group_length,
    check_int,
    check_nm,
    reject_nan,
)

# --------------------------------------------------------------------------- shared helpers


def _check_permutation(perm: Any, size: int, name: str = "perm") -> np.ndarray:
    """Return ``perm`` as an int64 array after checking it is a permutation of ``range(size)``."""
    p = as_array(perm, name)
    if p.dtype.kind not in "iu" or p.ndim != 1:
        raise TypeError(
            f"{name} must be a 1-d integer array (a permutation of range({size})), got dtype {p.dtype} "
            f"with shape {p.shape}"
        )
    if p.shape[0] != size:
        raise ValueError(f"{name} has length {p.shape[0]}, expected {size} (one entry per row/column)")
    p = p.astype(np.int64)
    if size and (p.min() < 0 or p.max() >= size or np.bincount(p, minlength=size).max() != 1):
        raise ValueError(f"{name} must contain each of 0..{size - 1} exactly once (a permutation)")
    return p


def _progress_bar(total: int, progress: bool, label: str, unit: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit=unit)


def _check_time_limit(time_limit: Any) -> float | None:
    if time_limit is None:
        return None
    if isinstance(time_limit, (bool, np.bool_)) or not isinstance(time_limit, (int, float, np.integer, np.floating)):
        raise TypeError(f"time_limit must be None or a number of seconds, got {time_limit!r}")
    if not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds (or None for no limit), got {time_limit}")
    return float(time_limit)


# =========================================================================== Bi-Mask


@kernel()
def _popcount(x):  # type: ignore[no-untyped-def]
    """Number of set bits of a uint64 (SWAR; LLVM turns it into one popcnt instruction)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@kernel()
def _swap_items(order, where, group, x, y):  # type: ignore[no-untyped-def]
    """Swap items x and y in ``order`` (position -> item), keeping its inverse ``where`` (item ->
    position) and the items' group labels ``group`` in step (each item takes the other's group)."""
    px = where[x]
    py = where[y]
    order[px] = y
    order[py] = x
    where[x] = py
    where[y] = px
    gx = group[x]
    group[x] = group[y]
    group[y] = gx


@kernel(parallel=True)
def _bimask_scores(bits, perms, n, m, out):  # type: ignore[no-untyped-def]
    """out[k] = sum over backward blocks of sum over columns of min(n, F-nonzeros), for perms[k].

    ``bits[r]`` is row r of F packed into uint64 words. Per block, ``levels[l]`` holds the columns
    whose count reached l + 1 (a bit-sliced counter); the score is the sum of their popcounts.
    """
    n_cand, rows = perms.shape
    words = bits.shape[1]
    depth = min(n, m)
    for k in prange(n_cand):
        levels = np.zeros((depth, words), dtype=np.uint64)
        total = 0
        for start in range(0, rows, m):
            levels[:] = 0
            for i in range(start, min(start + m, rows)):
                x = bits[perms[k, i]]
                for lvl in range(depth - 1, 0, -1):
                    below = levels[lvl - 1]
                    here = levels[lvl]
                    for w in range(words):
                        here[w] |= below[w] & x[w]
                first = levels[0]
                for w in range(words):
                    first[w] |= x[w]
            for lvl in range(depth):
                for w in range(words):
                    total += _popcount(levels[lvl, w])
        out[k] = total


@kernel(parallel=True)
def _backward_mask(w, fwd, perm, n, m, out):  # type: ignore[no-untyped-def]
    """B: per block of m rows in permuted order, the n largest of |w| * fwd per column, AND fwd.

    Ties break toward the lower permuted position (as ``nm_mask`` on the permuted matrix).
    """
    rows, cols = w.shape
    blocks = (rows + m - 1) // m
    for b in prange(blocks):
        start = b * m
        length = min(m, rows - start)
        keys = np.empty((length, cols), dtype=np.float64)
        beaten = np.zeros((length, cols), dtype=np.int32)
        for i in range(length):
            r = perm[start + i]
            for j in range(cols):
                keys[i, j] = abs(np.float64(w[r, j])) if fwd[r, j] else 0.0
        for i in range(length):
            for k in range(i + 1, length):
                for j in range(cols):
                    later_wins = keys[k, j] > keys[i, j]
                    beaten[i, j] += later_wins
                    beaten[k, j] += 1 - later_wins
        for i in range(length):
            r = perm[start + i]
            for j in range(cols):
                out[r, j] = fwd[r, j] and beaten[i, j] < n


@kernel()
def _block_bounds(bits, pos_row, block, n, m, under, upto, levels):  # type: ignore[no-untyped-def]
    """Recompute ``under[block]`` (columns with count < n) and ``upto[block]`` (count <= n)."""
    rows, words = bits.shape
    depth = levels.shape[0]  # n + 1
    levels[:] = 0
    start = block * m
    for i in range(start, min(start + m, rows)):
        x = bits[pos_row[i]]
        for lvl in range(depth - 1, 0, -1):
            for w in range(words):
                levels[lvl, w] |= levels[lvl - 1, w] & x[w]
        for w in range(words):
            levels[0, w] |= x[w]
    for w in range(words):
        under[block, w] = ~levels[n - 1, w]
        upto[block, w] = ~levels[n, w]


@kernel()
def _swap_gains(bits, r, a, row_block, under, upto, candidates, gains):  # type: ignore[no-untyped-def]
    """gains[i] = score change of swapping row r (block a) with row candidates[i] (another block).

    Per column where only one of the two rows is in F, the row leaving a block lowers its score if
    the column count there is <= n, and the row entering raises it if the count is < n.
    """
    words = bits.shape[1]
    fr = bits[r]
    under_a = under[a]
    upto_a = upto[a]
    for i in range(candidates.shape[0]):
        s = candidates[i]
        b = row_block[s]
        if b == a:
            gains[i] = 0
            continue
        fs = bits[s]
        under_b = under[b]
        upto_b = upto[b]
        g = 0
        for w in range(words):
            only_r = fr[w] & ~fs[w]
            only_s = fs[w] & ~fr[w]
            g += _popcount(only_r & under_b[w]) - _popcount(only_r & upto_a[w])
            g += _popcount(only_s & under_a[w]) - _popcount(only_s & upto_b[w])
        gains[i] = g


@kernel()
def _local_search_rows(  # type: ignore[no-untyped-def]
    bits, pos_row, row_pos, order, partners, n, m, under, upto, levels, gains
):
    """One pass of best-improvement row swaps over the rows in ``order``; returns (gain, swaps).

    For row r, every row in ``partners[i]`` (or every row when partners has no columns) is tried;
    the best strictly positive swap is applied (ties: the first candidate).
    """
    rows = bits.shape[0]
    row_block = np.empty(rows, dtype=np.int64)
    for p in range(rows):
        row_block[pos_row[p]] = p // m
    all_rows = np.arange(rows)
    total = 0
    swaps = 0
    for i in range(order.shape[0]):
        r = order[i]
        a = row_block[r]
        cand = partners[i] if partners.shape[1] > 0 else all_rows
        g = gains[: cand.shape[0]]
        _swap_gains(bits, r, a, row_block, under, upto, cand, g)
        best = 0
        best_s = -1
        for k in range(cand.shape[0]):
            if g[k] > best:
                best = g[k]
                best_s = cand[k]
        if best_s < 0:
            continue
        b = row_block[best_s]
        _swap_items(pos_row, row_pos, row_block, r, best_s)
        _block_bounds(bits, pos_row, a, n, m, under, upto, levels)
        _block_bounds(bits, pos_row, b, n, m, under, upto, levels)
        total += best
        swaps += 1
    return total, swaps


def _pack_rows(mask: np.ndarray) -> np.ndarray:
    """Rows of a bool matrix packed into uint64 words (zero padded); bit order is irrelevant here."""
    rows, cols = mask.shape
    words = max(1, (cols + 63) // 64)
    packed = np.zeros((rows, words * 8), dtype=np.uint8)
    if cols:
        packed[:, : (cols + 7) // 8] = np.packbits(mask, axis=1, bitorder="little")
    return packed.view(np.uint64)


@dataclass(frozen=True, eq=False)
class BiMaskResult:
    """Outcome of :func:`bimask_permutation`.

    Attributes
    ----------
    permutation : ndarray of int64, shape (out,)
        Row order: backward blocks are ``permutation[b*m:(b+1)*m]`` (so ``W[permutation]`` is the
        permuted matrix).
    score : int
        Score of ``permutation``: sum over backward blocks and columns of ``min(n, F-nonzeros)``.
    identity_score : int
        Score of the identity permutation (for comparison; computed even if it was not a candidate).
    random_score : int
        Best score among the candidates, before the local search.
    max_score : int
        Number of nonzeros of ``F``, an upper bound of every score.
    forward_mask : ndarray of bool, shape (out, in)
        ``F``: N:M along ``in`` (the input mask itself when a mask was given).
    backward_mask : ndarray of bool, shape (out, in)
        ``B`` for ``permutation`` (see :func:`bimask_masks`); ``B`` is a subset of ``F``.
    candidates : int
        Number of permutations evaluated (including the identity when it was a candidate).
    local_search_gain : int
        ``score - random_score`` (0 when the local search was not run).
    local_search_swaps : int
        Row swaps the local search applied.
    """

    permutation: np.ndarray
    score: int
    identity_score: int
    random_score: int
    max_score: int
    forward_mask: np.ndarray
    backward_mask: np.ndarray
    candidates: int
    local_search_gain: int = 0
    local_search_swaps: int = 0

    @property
    def kept_fraction(self) -> float:
        """``score / max_score``: the share of ``F`` that a backward N:M mask can keep (1.0 if F is empty)."""
        return self.score / self.max_score if self.max_score else 1.0


def _bimask_inputs(F_or_W: Any, n: int, m: int, pad: bool, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(values, F)``: the array whose magnitude ranks B (F itself for a mask), and a new F."""
    arr = as_array(F_or_W, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array [out, in], got shape {arr.shape}; use weight_to_2d for conv")
    check_group_length(arr.shape[0], m, 0, pad)
    if arr.dtype.kind == "b":
        fwd = np.array(arr, dtype=np.bool_, order="C")  # a copy: the result never aliases the input
        return fwd.view(np.uint8), fwd
    w = as_scores(arr, name, min_ndim=2)
    reject_nan(w, name)
    if w.dtype.kind in "iu":
        w = w.astype(np.float64)  # exact magnitudes (np.abs of the most negative int64 overflows)
    from nmsolve.nm import nm_mask

    fwd = nm_mask(np.abs(w), n, m, axis=1, pad=pad)
    return np.ascontiguousarray(w), fwd


def _backward(values: np.ndarray, fwd: np.ndarray, perm: np.ndarray, n: int, m: int) -> np.ndarray:
    out = np.zeros(fwd.shape, dtype=np.bool_)
    if out.size:
        with threads_for(out.size * m, BIMASK_PARALLEL_MIN):
            _backward_mask(values, fwd, perm, n, m, out)
    return out


def bimask_masks(W: Any, n: int, m: int, perm: Any, *, pad: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward Bi-Mask masks of a weight matrix for a given row permutation.

    Parameters
    ----------
    W : array_like, shape (out, in)
        Weights of a Linear layer (the 2-D view of a conv weight, see :func:`weight_to_2d`), any
        real dtype; or a boolean forward mask, which is then used as ``F`` and ranks ``B`` itself.
    n, m : int
        N:M pattern, the same for both directions.
    perm : array_like of int, shape (out,)
        Row order; backward blocks are ``perm[b*m:(b+1)*m]``.
    pad : bool, default False
        Accept ``out`` or ``in`` that is not a multiple of ``m`` (a shorter last group keeps
        ``min(n, len)``); otherwise raise.

    Returns
    -------
    F : ndarray of bool, shape (out, in)
        N:M along ``in``: the ``n`` largest ``|W|`` of every ``m`` consecutive columns.
    B : ndarray of bool, shape (out, in)
        In permuted order (``B[perm]``) N:M along the output axis: per block of ``m`` rows and per
        column, the ``n`` largest ``|W * F|``, intersected with ``F``; then un-permuted. ``B`` is a
        subset of ``F`` and ``B[perm].T`` keeps at most ``n`` of every ``m``.

    Notes
    -----
    ``|W * F|`` is evaluated as ``|W|`` where ``F`` and 0 elsewhere (so ``inf`` weights stay
    ordered). Ties break toward the lower index: in ``F`` the lower column, in ``B`` the lower
    position in permuted order (as ``nm_mask`` on ``W[perm]``). A column of a block with fewer
    than ``n`` forward nonzeros keeps all of them; zero weights inside ``F`` tie with the
    entries outside ``F``, so ``B`` can hold fewer entries than the Bi-Mask score when ``W`` has
    exact zeros. Cost: ``O(out * in * m)``, parallel over blocks.

    References
    ----------
    Y. Zhang et al., "Bi-directional Masks for Efficient N:M Sparse Training", ICML 2023.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.array([[4.0, 3.0, 0.1, 0.2], [1.0, 5.0, 6.0, 0.3], [0.5, 0.4, 2.0, 7.0], [8.0, 0.6, 0.7, 9.0]])
    >>> F, B = bimask_masks(W, 2, 4, [0, 1, 2, 3])
    >>> F.astype(int)
    array([[1, 1, 0, 0],
           [0, 1, 1, 0],
           [0, 0, 1, 1],
           [1, 0, 0, 1]])
    >>> bool((B <= F).all()), B.sum(axis=0).tolist()
    (True, [2, 2, 2, 2])
    """
    n, m = check_nm(n, m)
    values, fwd = _bimask_inputs(W, n, m, pad, "W")
    p = _check_permutation(perm, fwd.shape[0])
    from nmsolve.nm import nm_mask

    # |W * F| in permuted row order (one gather), then N:M along axis 0 (groups of m rows, no transpose)
    fwd_p = np.take(fwd, p, axis=0)
    keys = np.take(values, p, axis=0)
    if keys.dtype.kind == "f":
        np.abs(keys, out=keys)
    np.multiply(keys, fwd_p, out=keys)
    if keys.dtype.kind == "f" and np.isnan(keys).any():  # inf * 0 outside F (W itself holds no NaN)
        np.copyto(keys, 0, where=~fwd_p)
    back_p = nm_mask(keys, n, m, axis=0, pad=pad)
    back_p &= fwd_p
    back = np.empty_like(back_p)
    back[p] = back_p
    return fwd, back


def _random_candidates(rng: np.random.Generator, count: int, rows: int, include_identity: bool) -> np.ndarray:
    cands = np.empty((count + int(include_identity), rows), dtype=np.int64)
    if include_identity:
        cands[0] = np.arange(rows)
    if count:
        cands[int(include_identity) :] = rng.permuted(np.broadcast_to(np.arange(rows), (count, rows)), axis=1)
    return cands


def bimask_permutation(
    F_or_W: Any,
    n: int,
    m: int,
    *,
    candidates: Any = 100,
    rng: Any = None,
    include_identity: bool = True,
    local_search: bool = False,
    max_sweeps: int = 4,
    partners: int | None = None,
    time_limit: float | None = None,
    pad: bool = False,
    progress: bool = False,
) -> BiMaskResult:
    """Best row permutation for Bi-Mask's backward mask among random candidates (plus a local search).

    Parameters
    ----------
    F_or_W : array_like, shape (out, in)
        A boolean forward mask ``F``, or weights ``W`` (any real dtype), in which case ``F`` is the
        N:M mask of ``|W|`` along ``in`` (the last axis).
    n, m : int
        N:M pattern of both masks.
    candidates : int or array_like of int, shape (K, out), default 100
        Number of random permutations to score, or the candidate permutations themselves.
    rng : None, int or numpy Generator
        Seed of the random candidates and of the local search's row order.
    include_identity : bool, default True
        Score the identity as the first candidate, so the result is never worse than no
        permutation. The published code does not; pass False to match it.
    local_search : bool, default False
        Start from the best candidate and apply row swaps between backward blocks while one raises
        the score (best swap per row, rows in random order, until a sweep finds none).
    max_sweeps : int, default 4
        At most this many sweeps over all rows in the local search.
    partners : int or None, default None
        Rows tried as swap partners per row: all rows (None), or this many random ones (faster on
        large layers).
    time_limit : float or None
        Stop the local search after about this many seconds (checked between chunks of rows); the
        result then depends on the machine's speed.
    pad : bool, default False
        Accept ``out`` (and ``in`` for weights) that are not multiples of ``m``.
    progress : bool, default False
        Show a tqdm bar over the local search's rows.

    Returns
    -------
    BiMaskResult
        Best permutation, its score, the identity's score, ``F`` and the backward mask ``B``.

    Notes
    -----
    Score of a permutation ``p``: the sum over backward blocks (rows ``p[b*m:(b+1)*m]``) and
    columns of ``min(n, number of F-nonzeros)``, the number of entries ``B`` can keep; it needs
    ``F`` only. All candidates are scored in one parallel pass on ``F`` packed into 64-bit words
    (bit-sliced counters, ``O(K * out * in * min(n, m) / 64)``). The local search evaluates a swap
    in ``O(in / 64)`` word operations, ``O(out^2 * in / 64)`` per sweep (``out * partners * in / 64``
    with ``partners``). Ties: the first best candidate wins (the identity, when included), and in
    the local search the first best partner. ``B`` is built as in :func:`bimask_masks`; from a
    boolean ``F`` it is ranked by ``F`` itself (ties to the lower permuted position).

    References
    ----------
    Y. Zhang et al., "Bi-directional Masks for Efficient N:M Sparse Training", ICML 2023.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).normal(size=(64, 32))
    >>> res = bimask_permutation(W, 2, 4, candidates=20, rng=0, local_search=True)
    >>> res.identity_score <= res.random_score <= res.score <= res.max_score
    True
    >>> F, B = bimask_masks(W, 2, 4, res.permutation)
    >>> bool((B == res.backward_mask).all()), int(B.sum()) == res.score
    (True, True)
    """
    n, m = check_nm(n, m)
    values, fwd = _bimask_inputs(F_or_W, n, m, pad, "F_or_W")
    rows = fwd.shape[0]
    generator = as_rng(rng)
    if not isinstance(include_identity, (bool, np.bool_)):
        raise TypeError(f"include_identity must be a bool, got {include_identity!r}")
    max_sweeps = check_int(max_sweeps, "max_sweeps", minimum=0)
    if partners is not None:
        partners = check_int(partners, "partners", minimum=1)
    limit = _check_time_limit(time_limit)

    if isinstance(candidates, (int, np.integer)) and not isinstance(candidates, (bool, np.bool_)):
        count = check_int(candidates, "candidates", minimum=0)
        if count == 0 and not include_identity:
            raise ValueError(
                "candidates=0 with include_identity=False leaves nothing to choose from; pass candidates >= 1"
            )
        cands = _random_candidates(generator, count, rows, bool(include_identity))
    else:
        given = as_array(candidates, "candidates")
        if given.ndim != 2 or given.shape[1] != rows or given.dtype.kind not in "iu":
            raise ValueError(
                f"candidates must be an int or an integer array of shape (K, {rows}) of permutations, "
                f"got dtype {given.dtype} with shape {given.shape}"
            )
        checked = [_check_permutation(p, rows, f"candidates[{i}]") for i, p in enumerate(given)]
        first = [np.arange(rows)] if include_identity else []
        if not first and not checked:
            raise ValueError("candidates is empty and include_identity=False; pass at least one permutation")
        cands = np.stack(first + checked)

    bits = _pack_rows(fwd)
    scores = np.zeros(len(cands), dtype=np.int64)
    if rows:
        with threads_for(cands.size * bits.shape[1] * min(n, m), BIMASK_PARALLEL_MIN):
            _bimask_scores(bits, cands, n, m, scores)
    best = int(np.argmax(scores))
    perm = cands[best].copy()
    random_score = int(scores[best])
    if include_identity:
        identity_score = int(scores[0])
    else:
        ident = np.zeros(1, dtype=np.int64)
        if rows:
            _bimask_scores(bits, np.arange(rows)[None, :], n, m, ident)
        identity_score = int(ident[0])

    gain = swaps = 0
    if local_search and rows and max_sweeps:
        gain, swaps = _bimask_local_search(bits, perm, n, m, generator, max_sweeps, partners, limit, progress)
    score = random_score + gain
    return BiMaskResult(
        permutation=perm,
        score=score,
        identity_score=identity_score,
        random_score=random_score,
        max_score=int(fwd.sum()),
        forward_mask=fwd,
        backward_mask=_backward(values, fwd, perm, n, m),
        candidates=len(cands),
        local_search_gain=gain,
        local_search_swaps=swaps,
    )


def _bimask_local_search(
    bits: np.ndarray,
    perm: np.ndarray,
    n: int,
    m: int,
    rng: np.random.Generator,
    max_sweeps: int,
    partners: int | None,
    limit: float | None,
    progress: bool,
) -> tuple[int, int]:
    """Row-swap hill climbing on ``perm`` (modified in place); returns (score gain, swaps)."""
    rows, words = bits.shape
    blocks = (rows + m - 1) // m
    row_pos = np.empty(rows, dtype=np.int64)
    row_pos[perm] = np.arange(rows)
    under = np.empty((blocks, words), dtype=np.uint64)
    upto = np.empty((blocks, words), dtype=np.uint64)
    levels = np.zeros((n + 1, words), dtype=np.uint64)
    for b in range(blocks):
        _block_bounds(bits, perm, b, n, m, under, upto, levels)
    width = rows if partners is None else min(partners, rows)
    gains = np.zeros(max(width, 1), dtype=np.int64)
    # chunks of rows between time checks: about 2**24 word operations each
    chunk = max(1, min(rows, (1 << 24) // max(1, width * words)))
    deadline = None if limit is None else time.perf_counter() + limit
    bar = _progress_bar(rows * max_sweeps, progress, f"bimask local search {n}:{m}", "row")
    gain = swaps = 0
    try:
        for _ in range(max_sweeps):
            order = rng.permutation(rows)
            sweep_swaps = 0
            for lo in range(0, rows, chunk):
                part = order[lo : lo + chunk]
                if partners is None:
                    table = np.empty((len(part), 0), dtype=np.int64)
                else:
                    table = rng.integers(0, rows, size=(len(part), width))
                g, s = _local_search_rows(bits, perm, row_pos, part, table, n, m, under, upto, levels, gains)
                gain += int(g)
                sweep_swaps += int(s)
                if bar is not None:
                    bar.update(len(part))
                if deadline is not None and time.perf_counter() > deadline:
                    return gain, swaps + sweep_swaps
            swaps += sweep_swaps
            if sweep_swaps == 0:
                break
    finally:
        if bar is not None:
            bar.close()
    return gain, swaps


# =========================================================================== channel permutations


@kernel()
def _group_stats(colv, perm, g, n, m, nth, nxt, buf):  # type: ignore[no-untyped-def]
    """nth[g, r], nxt[g, r]: the n-th and (n+1)-th largest score of group g in row r (n < m)."""
    rows = colv.shape[1]
    for r in range(rows):
        count = 0
        for k in range(m):
            v = colv[perm[g * m + k], r]
            if count <= n:
                p = count
                count += 1
            elif v > buf[n]:
                p = n
            else:
                continue
            while p > 0 and buf[p - 1] < v:
                buf[p] = buf[p - 1]
                p -= 1
            buf[p] = v
        nth[g, r] = buf[n - 1]
        nxt[g, r] = buf[n]


@kernel()
def _gain_row(colv, rowv, x, g, nth, nxt, P, th):  # type: ignore[no-untyped-def]
    """P[x, y] = change of group g's kept score when column x (in g) is replaced by column y.

    Removing x drops its score if it was kept (the (n+1)-th enters); y then enters if it beats the
    new n-th largest: gain = [x kept] * (nxt - v_x) + max(0, v_y - threshold), summed over rows.
    ``rowv`` is ``colv.T`` (row-major): the sums run over rows in order for every y at once, a loop
    the compiler vectorises across y without reordering any sum.
    """
    cols, rows = colv.shape
    removal = 0.0
    for r in range(rows):
        v = colv[x, r]
        a = nth[g, r]
        if v >= a:
            removal += nxt[g, r] - v
            th[r] = nxt[g, r]
        else:
            th[r] = a
    out = P[x]
    out[:] = removal
    for r in range(rows):
        t = th[r]
        vals = rowv[r]
        for y in range(cols):
            out[y] += max(vals[y] - t, 0.0)


@kernel()
def _swap_init(colv, rowv, perm, n, m, grp, pos, nth, nxt, P, D):  # type: ignore[no-untyped-def]
    cols, rows = colv.shape
    groups = cols // m
    buf = np.empty(n + 1)
    th = np.empty(rows)
    for p in range(cols):
        grp[perm[p]] = p // m
        pos[perm[p]] = p
    for g in range(groups):
        _group_stats(colv, perm, g, n, m, nth, nxt, buf)
    for x in range(cols):
        _gain_row(colv, rowv, x, grp[x], nth, nxt, P, th)
    for x in range(cols):
        for y in range(cols):
            D[x, y] = P[x, y] + P[y, x]


@kernel()
def _swap_search(  # type: ignore[no-untyped-def]
    colv, rowv, perm, n, m, grp, pos, nth, nxt, P, D, tabu, it0, iters, tenure, jitter, greedy, tol, state, best_perm
):
    """Column-swap search: each iteration applies the best swap of two columns in different groups.

    greedy: stop when no swap gains more than tol. Otherwise (tabu search) the best non-tabu swap
    is applied even when it loses, and a column may not return to the group it left for
    ``tenure + jitter`` iterations unless that reaches a new best (aspiration). state = [current
    gain, best gain, iteration of the last new best]; best_perm receives the best permutation.
    Returns the number of iterations run.
    """
    cols, rows = colv.shape
    buf = np.empty(n + 1)
    th = np.empty(rows)
    done = 0
    for step in range(iters):
        it = it0 + step + 1
        cur = state[0]
        best = state[1]
        bi = -1
        bj = -1
        bd = -np.inf
        for i in range(cols):
            gi = grp[i]
            for j in range(i + 1, cols):
                d = D[i, j]
                if d > bd:
                    gj = grp[j]
                    if gi == gj:
                        continue
                    if not greedy and (tabu[i, gj] >= it or tabu[j, gi] >= it) and cur + d <= best + tol:
                        continue
                    bd = d
                    bi = i
                    bj = j
        if bi < 0 or (greedy and bd <= tol):
            break
        a = grp[bi]
        b = grp[bj]
        if not greedy:
            tabu[bi, a] = it + tenure + jitter[2 * step]
            tabu[bj, b] = it + tenure + jitter[2 * step + 1]
        _swap_items(perm, pos, grp, bi, bj)
        _group_stats(colv, perm, a, n, m, nth, nxt, buf)
        _group_stats(colv, perm, b, n, m, nth, nxt, buf)
        for g in (a, b):
            for k in range(m):
                _gain_row(colv, rowv, perm[g * m + k], g, nth, nxt, P, th)
        for g in (a, b):
            for k in range(m):
                x = perm[g * m + k]
                for y in range(cols):
                    d = P[x, y] + P[y, x]
                    D[x, y] = d
                    D[y, x] = d
        cur += bd
        state[0] = cur
        if cur > best + tol:
            state[1] = cur
            state[2] = it
            best_perm[:] = perm
        done += 1
    return done


@kernel()
def _subset_value(colv, cols, n, buf):  # type: ignore[no-untyped-def]
    """Sum over rows of the n largest scores among the columns ``cols``."""
    rows = colv.shape[1]
    size = cols.shape[0]
    total = 0.0
    for r in range(rows):
        for k in range(size):
            v = colv[cols[k], r]
            p = k
            while p > 0 and buf[p - 1] < v:
                buf[p] = buf[p - 1]
                p -= 1
            buf[p] = v
        for k in range(n):
            total += buf[k]
    return total


@kernel()
def _best_partition(colv, pool, n, m, subsets, by_low, values, best, choice):  # type: ignore[no-untyped-def]
    """Optimal split of the columns ``pool`` (k*m of them) into k groups of m: a DP over bitmasks.

    subsets: the m-subsets of range(k*m) as bitmasks; by_low[b] lists those whose lowest bit is b.
    best[S] = best value of splitting the set S (|S| a multiple of m), choice[S] its first group.
    """
    size = pool.shape[0]
    cols = np.empty(m, dtype=np.int64)
    buf = np.empty(m)
    for s in range(subsets.shape[0]):
        mask = subsets[s]
        c = 0
        for b in range(size):
            if (mask >> b) & 1:
                cols[c] = pool[b]
                c += 1
        values[s] = _subset_value(colv, cols, n, buf)
    full = (1 << size) - 1
    best[0] = 0.0
    for S in range(1, full + 1):
        bits = 0
        t = S
        while t:
            bits += t & 1
            t >>= 1
        if bits % m:
            continue
        low = 0
        while not (S >> low) & 1:
            low += 1
        top = -np.inf
        arg = -1
        for q in range(by_low.shape[1]):
            s = by_low[low, q]
            if s < 0:
                break
            mask = subsets[s]
            if mask & S == mask:
                v = values[s] + best[S ^ mask]
                if v > top:
                    top = v
                    arg = s
        best[S] = top
        choice[S] = arg
    return best[full]


@dataclass(frozen=True, eq=False)
class ChannelPermutationResult:
    """Outcome of :func:`channel_permutation`.

    Attributes
    ----------
    permutation : ndarray of int64, shape (in,)
        Column order: ``W[:, permutation]`` is the permuted matrix, grouped by ``m`` consecutive
        columns. The producer of the layer's input must permute its outputs the same way.
    kept_before, kept_after : float
        Magnitude ``sum |W|`` kept by N:M along ``in`` without and with the permutation.
    bound : float
        Magnitude kept by the bound: the top ``n/m`` of every row, unstructured.
    efficacy : float
        ``(base_lost - lost) / (base_lost - bound_lost)``: the share of the gap between plain N:M
        and the bound that the permutation recovers (1.0 when there is no gap).
    seconds : float
        Wall time of the search.
    method : str
        The search used.
    iterations : int
        Swaps (tabu, greedy), improving group re-splits (stripes), or assignment rounds applied.
    """

    permutation: np.ndarray
    kept_before: float
    kept_after: float
    bound: float
    efficacy: float
    seconds: float
    method: str
    iterations: int


def _kept_nm(scores: np.ndarray, perm: np.ndarray, n: int, m: int) -> float:
    """Magnitude kept by N:M on the columns of ``scores`` (nonnegative) in the order ``perm``."""
    rows, cols = scores.shape
    if not scores.size:
        return 0.0
    groups = np.sort(scores[:, perm].reshape(rows, cols // m, m), axis=2)
    with np.errstate(over="ignore"):  # near the float64 limit the kept magnitude is inf, as it should be
        return float(groups[:, :, m - n :].sum(dtype=np.float64))


def _bound(scores: np.ndarray, n: int, m: int) -> float:
    cols = scores.shape[1]
    keep = cols // m * n
    if not scores.size or not keep:
        return 0.0
    with np.errstate(over="ignore"):
        return float(np.partition(scores, cols - keep, axis=1)[:, cols - keep :].sum(dtype=np.float64))


def _tolerance(rows: int, m: int) -> float:
    """Smallest gain a channel search acts on, for scores scaled to [0, 1].

    Gains are sums of about ``rows * m`` terms of at most 1, so float64 rounding stays far below
    this; anything larger is a real improvement (the searches never cycle on rounding noise).
    """
    return 1e-13 * max(1, rows * m)


class _Budget:
    """Iterations and a wall-clock deadline shared by the phases of a channel search."""

    def __init__(self, limit: float | None, start: float) -> None:
        self.deadline = None if limit is None else start + limit

    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline


def _swap_method(
    colv: np.ndarray,
    perm: np.ndarray,
    n: int,
    m: int,
    rng: np.random.Generator,
    budget: _Budget,
    *,
    greedy: bool,
    max_iter: int,
    patience: int,
    tenure: int,
    bar: Any,
) -> tuple[np.ndarray, int]:
    cols, rows = colv.shape
    groups = cols // m
    grp = np.empty(cols, dtype=np.int64)
    pos = np.empty(cols, dtype=np.int64)
    nth = np.empty((groups, rows))
    nxt = np.empty((groups, rows))
    P = np.empty((cols, cols))
    D = np.empty((cols, cols))
    rowv = np.ascontiguousarray(colv.T)
    _swap_init(colv, rowv, perm, n, m, grp, pos, nth, nxt, P, D)
    tabu = np.zeros((cols, groups), dtype=np.int64)
    tol = _tolerance(rows, m)
    state = np.zeros(3)
    best_perm = perm.copy()
    # chunks of about 2**22 score operations between time checks
    chunk = max(1, min(1000, (1 << 22) // max(1, 2 * m * cols * rows + cols * cols // 2)))
    done = 0
    while done < max_iter:
        if not greedy and done - state[2] >= patience:
            break
        steps = min(chunk, max_iter - done)
        jitter = rng.integers(0, tenure + 1, size=2 * steps)
        ran = _swap_search(
            colv,
            rowv,
            perm,
            n,
            m,
            grp,
            pos,
            nth,
            nxt,
            P,
            D,
            tabu,
            done,
            steps,
            tenure,
            jitter,
            greedy,
            tol,
            state,
            best_perm,
        )
        done += ran
        if bar is not None:
            bar.update(ran)
        if ran < steps or budget.expired():
            break
    return (perm.copy() if greedy else best_perm), done


def _combinations_bits(size: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The m-subsets of range(size) as bitmasks, and by_low[b]: the indices of those whose lowest bit is b."""
    subsets = [sum(1 << b for b in c) for c in itertools.combinations(range(size), m)]
    lows = [(s & -s).bit_length() - 1 for s in subsets]
    width = max(lows.count(b) for b in range(size))
    by_low = -np.ones((size, width), dtype=np.int64)
    fill = [0] * size
    for i, b in enumerate(lows):
        by_low[b, fill[b]] = i
        fill[b] += 1
    return np.array(subsets, dtype=np.int64), by_low


@kernel()
def _group_values(colv, perm, n, m, out):  # type: ignore[no-untyped-def]
    buf = np.empty(m)
    for g in range(out.shape[0]):
        out[g] = _subset_value(colv, perm[g * m : (g + 1) * m], n, buf)


@kernel()
def _stripes_sweeps(colv, perm, n, m, combos, dirty, subsets, by_low, group_value, tol):  # type: ignore[no-untyped-def]
    """Re-split every set of groups in ``combos`` that holds a dirty group optimally, until none improves.

    Returns the number of improving re-splits applied.
    """
    k = combos.shape[1]
    size = k * m
    values = np.empty(subsets.shape[0])
    best = np.empty(1 << size)
    choice = np.empty(1 << size, dtype=np.int64)
    pool = np.empty(size, dtype=np.int64)
    touched = np.zeros(dirty.shape[0], dtype=np.bool_)
    count = 0
    while dirty.any():
        touched[:] = False
        for c in range(combos.shape[0]):
            any_dirty = False
            current = 0.0
            for q in range(k):
                g = combos[c, q]
                any_dirty |= dirty[g]
                current += group_value[g]
            if not any_dirty:
                continue
            for q in range(k):
                g = combos[c, q]
                for t in range(m):
                    pool[q * m + t] = perm[g * m + t]
            value = _best_partition(colv, pool, n, m, subsets, by_low, values, best, choice)
            if value > current + tol:
                S = (1 << size) - 1
                for q in range(k):
                    g = combos[c, q]
                    s = choice[S]
                    t = 0
                    for b in range(size):
                        if (subsets[s] >> b) & 1:
                            perm[g * m + t] = pool[b]
                            t += 1
                    group_value[g] = values[s]
                    S ^= subsets[s]
                    touched[g] = True
                count += 1
        dirty[:] = touched
    return count


_MAX_STRIPE_SETS = 1_000_000


def _stripes_method(
    colv: np.ndarray,
    perm: np.ndarray,
    n: int,
    m: int,
    rng: np.random.Generator,
    budget: _Budget,
    *,
    stripe_groups: int,
    escapes: int,
    bar: Any,
) -> tuple[np.ndarray, int]:
    """Re-split sets of ``stripe_groups`` groups optimally until none improves, then random escapes."""
    cols, rows = colv.shape
    groups = cols // m
    k = min(stripe_groups, groups)
    if math.comb(groups, k) > _MAX_STRIPE_SETS:
        raise ValueError(
            f"stripes would re-split C({groups}, {k}) = {math.comb(groups, k)} sets of groups per sweep; "
            "use method='tabu' for layers this wide, or a smaller stripe_groups"
        )
    combos = np.array(list(itertools.combinations(range(groups), k)), dtype=np.int64).reshape(-1, k)
    subsets, by_low = _combinations_bits(k * m, m)
    group_value = np.empty(groups)
    _group_values(colv, perm, n, m, group_value)
    tol = _tolerance(rows, m)
    improvements = _stripes_sweeps(
        colv, perm, n, m, combos, np.ones(groups, np.bool_), subsets, by_low, group_value, tol
    )
    best_perm = perm.copy()
    best_value = group_value.sum()
    for _ in range(escapes if groups > 1 else 0):
        if budget.expired():
            break
        # escape: swap two random columns of two random groups, re-optimise the sets touching them
        a, b = rng.choice(groups, size=2, replace=False)
        i, j = a * m + rng.integers(m), b * m + rng.integers(m)
        perm[i], perm[j] = perm[j], perm[i]
        _group_values(colv, perm, n, m, group_value)
        dirty = np.zeros(groups, dtype=np.bool_)
        dirty[[a, b]] = True
        improvements += _stripes_sweeps(colv, perm, n, m, combos, dirty, subsets, by_low, group_value, tol)
        if group_value.sum() > best_value + tol:
            best_value = group_value.sum()
            best_perm = perm.copy()
        else:
            perm[:] = best_perm
            _group_values(colv, perm, n, m, group_value)
        if bar is not None:
            bar.update(1)
    return best_perm, improvements


@kernel()
def _assignment_costs(colv, perm, eject, n, m, cost):  # type: ignore[no-untyped-def]
    """cost[c, g]: kept score of group g without its ejected column plus the ejected column of group c."""
    cols, rows = colv.shape
    groups = cols // m
    base = np.zeros((groups, rows))
    th = np.empty((groups, rows))
    buf = np.empty(m)
    for g in range(groups):
        for r in range(rows):
            c = 0
            for k in range(m):
                if k == eject[g]:
                    continue
                v = colv[perm[g * m + k], r]
                p = c
                while p > 0 and buf[p - 1] < v:
                    buf[p] = buf[p - 1]
                    p -= 1
                buf[p] = v
                c += 1
            s = 0.0
            for k in range(n):
                s += buf[k]
            base[g, r] = s
            th[g, r] = buf[n - 1]
    for c in range(groups):
        x = perm[c * m + eject[c]]
        for g in range(groups):
            s = 0.0
            for r in range(rows):
                s += base[g, r] + max(colv[x, r] - th[g, r], 0.0)
            cost[c, g] = s


def _assignment_refine(
    colv: np.ndarray, perm: np.ndarray, n: int, m: int, rng: np.random.Generator, budget: _Budget
) -> tuple[np.ndarray, int]:
    """Eject one column per group and re-insert all of them optimally (linear_sum_assignment).

    Rounds repeat until ``m`` consecutive rounds find no improvement.
    """
    from scipy.optimize import linear_sum_assignment

    cols, rows = colv.shape
    groups = cols // m
    cost = np.empty((groups, groups))
    tol = _tolerance(rows, m)
    applied = idle = 0
    while idle < m and groups > 1 and not budget.expired():
        eject = rng.integers(0, m, size=groups)
        _assignment_costs(colv, perm, eject, n, m, cost)
        src, dst = linear_sum_assignment(cost, maximize=True)
        if cost[src, dst].sum() > np.trace(cost) + tol:
            moved = perm[np.arange(groups) * m + eject].copy()
            perm[dst * m + eject[dst]] = moved[src]
            applied += 1
            idle = 0
        else:
            idle += 1
    return perm, applied


_CHANNEL_METHODS = ("greedy", "stripes", "tabu")


def channel_permutation(
    W: Any,
    n: int = 2,
    m: int = 4,
    *,
    method: str = "tabu",
    rng: Any = None,
    time_limit: float | None = None,
    max_iter: int | None = None,
    patience: int | None = None,
    tenure: int | None = None,
    stripe_groups: int = 2,
    escapes: int = 100,
    refine: bool = False,
    progress: bool = False,
) -> ChannelPermutationResult:
    """Permutation of the input channels (columns) of ``W[out, in]`` that raises the N:M kept magnitude.

    Parameters
    ----------
    W : array_like, shape (out, in) or (out, in, *kernel)
        Weights, any real dtype; a conv weight is searched on its channel-last view
        ``[out * prod(kernel), in]`` (see :func:`weight_to_2d`). ``in`` must be a multiple of ``m``.
        Any nonnegative score matrix (e.g. ``|W| * mask``) works the same way.
    n, m : int, default 2, 4
        Any N:M pattern.
    method : {"tabu", "greedy", "stripes"}, default "tabu"
        ``"greedy"``: best-improvement column swaps until no swap helps (TETRIS-like).
        ``"tabu"``: the same swaps, continued past local optima by a tabu search (a moved column
        may not return to its group for ``tenure`` iterations, unless that reaches a new best).
        ``"stripes"``: the published stripe-group search, an exhaustive optimal re-split of every
        set of ``stripe_groups`` groups until none improves, then ``escapes`` random swaps each
        followed by local re-optimisation (kept only if better).
    rng : None, int or numpy Generator
        Seed of the randomised parts (tabu tenures, escapes, refinement); results are reproducible
        from a seed when ``time_limit`` is None.
    time_limit : float or None
        Stop after about this many seconds (checked between chunks of work); the result then
        depends on the machine's speed.
    max_iter : int or None
        Tabu/greedy: at most this many swaps (default 1000, a budget that favours speed: a few
        hundredths of a second for 64 columns, a few seconds for 1536; raise it, with ``time_limit``
        as a cap, for more). Each swap costs ``O(m * in * out)``; on 128 x 64 Gaussian matrices
        20 000 swaps (about half a second) come within 0.1 point of efficacy of the exact optimum,
        which averages about 38% there (see ``bench/results/permutation.md``).
    patience : int or None
        Tabu: stop after this many swaps without a new best (default ``max(200, in // 4)``).
    tenure : int or None
        Tabu tenure (default ``max(3, round(sqrt(in) / 2))``), plus a random ``0..tenure``.
    stripe_groups : int, default 2
        Stripes: groups re-split together (``stripe_groups * m <= 16``).
    escapes : int, default 100
        Stripes: random escapes from the local optimum.
    refine : bool, default False
        Afterwards, eject one column per group and re-insert them optimally with
        ``scipy.optimize.linear_sum_assignment``, until ``m`` rounds in a row find no gain.
    progress : bool, default False
        Show a tqdm bar over iterations.

    Returns
    -------
    ChannelPermutationResult
        The permutation, kept magnitude before/after, the bound, the efficacy and the time taken.

    Raises
    ------
    ValueError
        NaN or inf in ``W``, ``in`` not a multiple of ``m``, unknown ``method``.

    Notes
    -----
    Objective: ``sum_rows sum_groups`` of the ``n`` largest ``|W|`` of the group, searched on
    ``|W| / max|W|`` in float64. A column swap is scored in ``O(out)`` from per-group n-th and
    (n+1)-th largest values; the tabu and greedy searches keep the gain of every swap in an
    ``in x in`` table, updating ``2m`` rows of it per move (``O(m * in * out)``), so the first
    table costs ``O(in^2 * out)`` time and two ``in x in`` float64 tables of memory (128 MiB each
    for ``in = 4096``). Stripes costs ``O(C(in/m, k) * C(k m, m) * out * m)`` per sweep (``k`` =
    ``stripe_groups``): use it on small layers. Ties: the first best swap in column order. The
    result is never worse than the identity (if the search finds no gain, the identity is
    returned).

    Efficacy has a ceiling well below 1: no permutation closes the whole gap to the unstructured
    bound. On the benchmark's ten 128 x 64 Gaussian matrices at 2:4 the exact optimum (certified by
    a set-partitioning LP bound and a MILP) ranges from 36.4% to 40.1%, mean 38.2%.

    References
    ----------
    J. Pool and C. Yu, "Channel Permutations for N:M Sparsity", NeurIPS 2021.
    Y. Ji et al., "TETRIS: TilE-matching the TRemendous Irregular Sparsity", NeurIPS 2018.

    Examples
    --------
    >>> import numpy as np, nmsolve
    >>> W = np.random.default_rng(0).normal(size=(32, 16))
    >>> res = channel_permutation(W, 2, 4, rng=0)
    >>> res.kept_after >= res.kept_before, 0.0 <= res.efficacy <= 1.0
    (True, True)
    >>> mask = np.zeros(W.shape, bool)
    >>> mask[:, res.permutation] = nmsolve.magnitude_mask(W[:, res.permutation], 2, 4)  # N:M of the permuted W
    >>> bool(np.isclose(np.abs(W)[mask].sum(), res.kept_after))
    True
    """
    from nmsolve.layout import weight_to_2d

    start = time.perf_counter()
    n, m = check_nm(n, m)
    if method not in _CHANNEL_METHODS:
        raise ValueError(f"method must be one of {sorted(_CHANNEL_METHODS)}, got {method!r}")
    w = as_scores(W, "W", min_ndim=2)
    reject_nan(w, "W")
    if w.dtype.kind == "f" and np.isinf(w).any():
        raise ValueError(
            "W contains inf; the kept magnitude would be infinite. Clip it first, e.g. np.clip(W, -1e30, 1e30)"
        )
    matrix, _ = weight_to_2d(w)
    check_group_length(matrix.shape[1], m, 1, pad=False)
    scores = np.abs(matrix.astype(np.float64))
    generator = as_rng(rng)
    limit = _check_time_limit(time_limit)
    cols = scores.shape[1]
    max_iter = 1000 if max_iter is None else check_int(max_iter, "max_iter", minimum=0)
    patience = max(200, cols // 4) if patience is None else check_int(patience, "patience", minimum=1)
    tenure = max(3, round(math.sqrt(cols) / 2)) if tenure is None else check_int(tenure, "tenure", minimum=0)
    stripe_groups = check_int(stripe_groups, "stripe_groups", minimum=1)
    if stripe_groups * m > 16:
        raise ValueError(f"stripe_groups * m must be <= 16 (exhaustive splits), got {stripe_groups} * {m}")
    escapes = check_int(escapes, "escapes", minimum=0)

    identity = np.arange(cols, dtype=np.int64)
    before = _kept_nm(scores, identity, n, m)
    bound = _bound(scores, n, m)
    perm = identity.copy()
    iterations = 0
    top = float(scores.max()) if scores.size else 0.0
    if n < m and cols > m and top > 0:
        colv = np.ascontiguousarray((scores / top).T)
        budget = _Budget(limit, start)
        total = escapes if method == "stripes" else max_iter
        bar = _progress_bar(total, progress, f"channel permutation {n}:{m} {method}", "step")
        try:
            if method == "stripes":
                perm, iterations = _stripes_method(
                    colv, perm, n, m, generator, budget, stripe_groups=stripe_groups, escapes=escapes, bar=bar
                )
            else:
                perm, iterations = _swap_method(
                    colv,
                    perm,
                    n,
                    m,
                    generator,
                    budget,
                    greedy=method == "greedy",
                    max_iter=max_iter,
                    patience=patience,
                    tenure=tenure,
                    bar=bar,
                )
        finally:
            if bar is not None:
                bar.close()
        if refine:
            perm, rounds = _assignment_refine(colv, perm, n, m, generator, budget)
            iterations += rounds
    after = _kept_nm(scores, perm, n, m)
    if after < before:  # never worse than the identity
        perm, after = identity, before
    gap = bound - before
    efficacy = 1.0 if gap <= 1e-12 * max(1.0, bound) else min(1.0, max(0.0, (after - before) / gap))
    return ChannelPermutationResult(
        permutation=perm,
        kept_before=before,
        kept_after=after,
        bound=bound,
        efficacy=efficacy,
        seconds=time.perf_counter() - start,
        method=method,
        iterations=int(iterations),
    )


# --------------------------------------------------------------------------- warm-up


def _warmup() -> None:
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        w = rng.normal(size=(8, 8)).astype(dtype)
        bimask_permutation(w, 2, 4, candidates=2, rng=0, local_search=True, max_sweeps=1)
    bimask_permutation(rng.normal(size=(8, 8)) > 0, 2, 4, candidates=2, rng=0, local_search=True, max_sweeps=1)
    w = rng.normal(size=(8, 16))
    for method in _CHANNEL_METHODS:
        channel_permutation(w, 2, 4, method=method, rng=0, max_iter=4, escapes=1, refine=method == "greedy")
