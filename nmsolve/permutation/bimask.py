"""Bi-Mask: the forward and backward N:M masks of a weight matrix, and the row-permutation search.

A permutation of the *output rows* of ``W[out, in]`` is chosen so that a backward mask ``B``, N:M
along the output axis in permuted order and a subset of the forward N:M mask ``F``, keeps as much of
``F`` as possible (:func:`bimask_permutation`); :func:`bimask_masks` builds ``F`` and ``B`` for a
given permutation.

The public wrappers validate, convert once, call the numba kernels below and shape a frozen result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._jit import BIMASK_PARALLEL_MIN, kernel, prange, threads_for
from nmsolve._progress import progress_bar
from nmsolve._validate import (
    as_array,
    as_rng,
    as_scores,
    check_bool,
    check_group_length,
    check_int,
    check_nm,
    reject_nan,
)
from nmsolve.permutation._common import check_permutation, check_time_limit, swap_items

# --------------------------------------------------------------------------- kernels


@kernel()
def _popcount(x):  # type: ignore[no-untyped-def]
    """Number of set bits of a uint64 (SWAR; LLVM turns it into one popcnt instruction)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


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
        swap_items(pos_row, row_pos, row_block, r, best_s)
        _block_bounds(bits, pos_row, a, n, m, under, upto, levels)
        _block_bounds(bits, pos_row, b, n, m, under, upto, levels)
        total += best
        swaps += 1
    return total, swaps


# --------------------------------------------------------------------------- public API


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
    p = check_permutation(perm, fwd.shape[0])
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
    include_identity = check_bool(include_identity, "include_identity")
    local_search = check_bool(local_search, "local_search")
    progress = check_bool(progress, "progress")
    max_sweeps = check_int(max_sweeps, "max_sweeps", minimum=0)
    if partners is not None:
        partners = check_int(partners, "partners", minimum=1)
    limit = check_time_limit(time_limit)

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
        checked = [check_permutation(p, rows, f"candidates[{i}]") for i, p in enumerate(given)]
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
    bar = progress_bar(rows * max_sweeps, progress, f"bimask local search {n}:{m}", "row")
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


# --------------------------------------------------------------------------- warm-up


def _warmup() -> None:
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        w = rng.normal(size=(8, 8)).astype(dtype)
        bimask_permutation(w, 2, 4, candidates=2, rng=0, local_search=True, max_sweeps=1)
    bimask_permutation(rng.normal(size=(8, 8)) > 0, 2, 4, candidates=2, rng=0, local_search=True, max_sweeps=1)
