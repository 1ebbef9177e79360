"""Channel permutations: a permutation of the *input columns* of ``W[out, in]`` that raises the
magnitude an N:M mask along ``in`` keeps (:func:`channel_permutation`).

Its methods (column-swap greedy and tabu searches, the stripe-group search) are the entries of
:data:`METHODS`, which documents and dispatches them; an optional assignment refinement
(``refine=True``) may follow any of them. The public wrapper validates, converts once, calls the
numba kernels below and shapes a frozen result.
"""

from __future__ import annotations

import functools
import itertools
import math
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmsolve._jit import kernel
from nmsolve._progress import progress_bar
from nmsolve._validate import (
    as_rng,
    as_scores,
    check_bool,
    check_group_length,
    check_int,
    check_nm,
    choose,
    reject_nan,
)
from nmsolve.permutation._common import check_time_limit, swap_items

# --------------------------------------------------------------------------- kernels


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
        swap_items(perm, pos, grp, bi, bj)
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
    optimal : bool
        The permutation is proven optimal: it reaches the unstructured ``bound``, the stripe search
        re-split all groups at once (exhaustive), or there was nothing to permute. False does not
        mean it is not optimal, only that no proof was found.
    """

    permutation: np.ndarray
    kept_before: float
    kept_after: float
    bound: float
    efficacy: float
    seconds: float
    method: str
    iterations: int
    optimal: bool


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


_UNLIMITED = 1 << 62  # max_iter / patience / escapes when a time limit bounds the search instead


class _Budget:
    """The wall-clock deadline shared by the phases of a channel search, and its stopping proof.

    ``goal`` is the unstructured bound in the searched (scaled) units: a permutation whose kept
    score reaches it is optimal, so a search may stop there. A method that proves optimality
    otherwise (an exhaustive split) sets ``proven``.
    """

    def __init__(self, limit: float | None, start: float, goal: float = np.inf, tol: float = 0.0) -> None:
        self.deadline = None if limit is None else start + limit
        self.goal = goal
        self.tol = tol
        self.proven = False

    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def reached(self, value: float) -> bool:
        """Whether the kept score ``value`` reaches the bound (then it is optimal; records the proof)."""
        if value >= self.goal - self.tol:
            self.proven = True
        return self.proven


@dataclass(frozen=True)
class _Settings:
    """The checked search options of :func:`channel_permutation`, as every method receives them."""

    max_iter: int
    patience: int
    tenure: int
    stripe_groups: int
    escapes: int


def _swap_method(
    colv: np.ndarray,
    perm: np.ndarray,
    n: int,
    m: int,
    rng: np.random.Generator,
    budget: _Budget,
    settings: _Settings,
    bar: Any,
    *,
    greedy: bool,
) -> tuple[np.ndarray, int]:
    """Column swaps (see _swap_search): the greedy method, or the tabu search when not ``greedy``.

    Stops after ``max_iter`` swaps, at the deadline, when the best reaches the bound, or (tabu)
    after ``patience`` swaps without a new best. Greedy stops at its local optimum unless a time
    limit is set: then it restarts from the best local optimum kicked by a few random swaps
    (iterated local search), keeping the best, until the budget runs out.
    """
    max_iter, patience, tenure = settings.max_iter, settings.patience, settings.tenure
    cols, rows = colv.shape
    groups = cols // m
    values = np.empty(groups)
    _group_values(colv, perm, n, m, values)
    base = float(values.sum())  # the gains of state[] are relative to the starting permutation
    if budget.reached(base):
        return perm, 0
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
    kick = max(2, groups // 8)  # greedy restarts: random swaps applied to the best local optimum
    best_greedy = perm.copy()
    best_greedy_value = base
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
        if budget.reached(base + state[1]) or budget.expired():
            break
        if ran < steps:
            if not greedy or budget.deadline is None or groups < 2:
                break
            # greedy at a local optimum with time left: keep it if best, kick the best, descend again
            _group_values(colv, perm, n, m, values)
            if values.sum() > best_greedy_value + tol:
                best_greedy_value = float(values.sum())
                best_greedy[:] = perm
            perm[:] = best_greedy
            for _ in range(kick):
                a, b = rng.choice(groups, size=2, replace=False)
                i, j = a * m + rng.integers(m), b * m + rng.integers(m)
                perm[i], perm[j] = perm[j], perm[i]
            _swap_init(colv, rowv, perm, n, m, grp, pos, nth, nxt, P, D)
            _group_values(colv, perm, n, m, values)
            state[0] = state[1] = float(values.sum()) - base
    if not greedy:
        return best_perm, done
    _group_values(colv, perm, n, m, values)
    if values.sum() > best_greedy_value + tol:
        best_greedy[:] = perm
    return best_greedy, done


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
_MAX_STRIPE_COLUMNS = 16  # columns split exhaustively at once: a DP over 2**16 subsets


def _stripes_method(
    colv: np.ndarray,
    perm: np.ndarray,
    n: int,
    m: int,
    rng: np.random.Generator,
    budget: _Budget,
    settings: _Settings,
    bar: Any,
) -> tuple[np.ndarray, int]:
    """Re-split sets of ``stripe_groups`` groups optimally until none improves, then random escapes.

    Re-splitting all the groups at once is exhaustive: the result is then proven optimal.
    """
    stripe_groups, escapes = settings.stripe_groups, settings.escapes
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
    if k == groups:
        budget.proven = True
    escape = 0
    while escape < escapes and groups > 1:
        escape += 1
        if budget.reached(best_value) or budget.expired():
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


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class ChannelMethod:
    """A method of :func:`channel_permutation`.

    Attributes
    ----------
    summary : str
        What the method does (the docstring of :func:`channel_permutation` lists these).
    search : callable
        ``search(colv, perm, n, m, rng, budget, settings, bar) -> (permutation, iterations)``: runs
        the method from ``perm`` on the scaled scores ``colv`` (``in x out``).
    steps : callable
        ``steps(settings)``: the length of its progress bar (swaps or escapes).
    max_m : int or None
        The largest group length ``m`` the method supports (None: every N:M); a larger ``m`` is
        refused up front, naming the methods that support it.
    """

    summary: str
    search: Callable[
        [np.ndarray, np.ndarray, int, int, np.random.Generator, _Budget, _Settings, Any], tuple[np.ndarray, int]
    ]
    steps: Callable[[_Settings], int]
    max_m: int | None = None


# The one table of channel-permutation methods: channel_permutation's docstring lists it, and its
# ``method`` argument is looked up in it (_validate.choose).
METHODS: dict[str, ChannelMethod] = {
    "greedy": ChannelMethod(
        "best-improvement column swaps until no swap helps (TETRIS-like).",
        functools.partial(_swap_method, greedy=True),
        lambda s: s.max_iter,
    ),
    "tabu": ChannelMethod(
        "the same swaps, continued past local optima by a tabu search (a moved column may not return "
        "to its group for ``tenure`` iterations, unless that reaches a new best).",
        functools.partial(_swap_method, greedy=False),
        lambda s: s.max_iter,
    ),
    "stripes": ChannelMethod(
        "the published stripe-group search, an exhaustive optimal re-split of every set of "
        "``stripe_groups`` groups until none improves, then ``escapes`` random swaps each followed by "
        "local re-optimisation (kept only if better). Supports m <= 8 only: it splits "
        "``stripe_groups * m <= 16`` columns exhaustively, and at least two groups must be re-split.",
        _stripes_method,
        lambda s: s.escapes,
        max_m=_MAX_STRIPE_COLUMNS // 2,
    ),
}


_DEFAULT_METHOD = "tabu"


def _document_methods(fn: Callable[..., Any], table: dict[str, ChannelMethod]) -> None:
    """Replace the ``{methods}`` line of ``fn``'s docstring with one entry per method of ``table``."""
    if fn.__doc__ is None:  # python -OO
        return
    indent = " " * 8
    lines = []
    for name, entry in table.items():
        text = f'``"{name}"``: {entry.summary}'
        lines += textwrap.wrap(text, width=104, initial_indent=indent, subsequent_indent=indent)
    fn.__doc__ = fn.__doc__.replace(indent + "{methods}", "\n".join(lines))


def channel_permutation(
    W: Any,
    n: int = 2,
    m: int = 4,
    *,
    method: str = _DEFAULT_METHOD,
    rng: Any = None,
    time_limit: float | None = None,
    max_iter: int | None = None,
    patience: int | None = None,
    tenure: int | None = None,
    stripe_groups: int = 2,
    escapes: int | None = None,
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
        Any N:M pattern (the default method supports every one; ``"stripes"`` only ``m <= 8``).
    method : str, default "tabu"
        A key of :data:`METHODS`; the list below is generated from that table:

        {methods}
    rng : None, int or numpy Generator
        Seed of the randomised parts (tabu tenures, escapes, greedy restarts, refinement); results
        are reproducible from a seed when ``time_limit`` is None.
    time_limit : float or None
        A budget in seconds, used in full: the search runs until it expires (checked between
        chunks of work) or until the result is proven optimal (``optimal``), whichever comes
        first. Tabu then ignores its patience and swap limit (unless ``max_iter`` / ``patience``
        are given), stripes escapes until the deadline (unless ``escapes`` is given), and greedy
        restarts from its best local optimum after a random kick. The seeded search follows the
        same path whatever the limit and the longest stop is kept, so for a given seed a longer
        limit never gives a worse result; but where it stops depends on the machine's speed: for
        reproducible runs give a work limit (``max_iter``, ``escapes``) and no ``time_limit``.
        Without ``time_limit`` (the default) the search is a quick one, bounded by the work limits
        below.
    max_iter : int or None
        Tabu/greedy: at most this many swaps (default: 1000 without ``time_limit``, a budget that
        favours speed: a few hundredths of a second for 64 columns, a few seconds for 1536, and on
        128 x 64 Gaussian matrices about 37% efficacy; unlimited with ``time_limit``). Each swap
        costs ``O(m * in * out)``; on 128 x 64 Gaussian matrices 20 000 swaps (about half a second)
        or ``time_limit=1`` come within 0.1 point of efficacy of the exact optimum, which averages
        about 38% there (see ``bench/results/permutation.md``).
    patience : int or None
        Tabu: stop after this many swaps without a new best (default ``max(200, in // 4)``
        without ``time_limit``, unlimited with it).
    tenure : int or None
        Tabu tenure (default ``max(3, round(sqrt(in) / 2))``), plus a random ``0..tenure``.
    stripe_groups : int, default 2
        Stripes: groups re-split together (``stripe_groups * m <= 16``); ignored by the other methods.
    escapes : int or None
        Stripes: random escapes from the local optimum (default 100 without ``time_limit``,
        unlimited with it).
    refine : bool, default False
        Afterwards, eject one column per group and re-insert them optimally with
        ``scipy.optimize.linear_sum_assignment``, until ``m`` rounds in a row find no gain.
    progress : bool, default False
        Show a tqdm bar over iterations.

    Returns
    -------
    ChannelPermutationResult
        The permutation, kept magnitude before/after, the bound, the efficacy, the time taken and
        whether the permutation is proven optimal.

    Raises
    ------
    ValueError
        NaN or inf in ``W``, ``in`` not a multiple of ``m``, unknown ``method``, ``method="stripes"``
        with ``m > 8``.

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
    chosen = choose(METHODS, method)
    refine = check_bool(refine, "refine")
    progress = check_bool(progress, "progress")
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
    limit = check_time_limit(time_limit)
    cols = scores.shape[1]
    # without a time limit the work limits default to a quick search; with one, to "until it expires"
    timed = limit is not None
    if max_iter is None:
        max_iter = _UNLIMITED if timed else 1000
    max_iter = check_int(max_iter, "max_iter", minimum=0)
    if patience is None:
        patience = _UNLIMITED if timed else max(200, cols // 4)
    patience = check_int(patience, "patience", minimum=1)
    tenure = max(3, round(math.sqrt(cols) / 2)) if tenure is None else check_int(tenure, "tenure", minimum=0)
    if chosen.max_m is not None and m > chosen.max_m:
        others = sorted(name for name, entry in METHODS.items() if entry.max_m is None or m <= entry.max_m)
        raise ValueError(
            f"method={method!r} supports m <= {chosen.max_m}, got {n}:{m}; use one of {others} for this "
            f"pattern (the default {_DEFAULT_METHOD!r} supports every N:M)"
        )
    stripe_groups = check_int(stripe_groups, "stripe_groups", minimum=1)
    if method == "stripes" and stripe_groups * m > _MAX_STRIPE_COLUMNS:
        raise ValueError(
            f"stripe_groups * m must be <= {_MAX_STRIPE_COLUMNS} (the stripe search splits that many columns "
            f"exhaustively), got stripe_groups={stripe_groups} with m={m}; use stripe_groups <= "
            f"{max(1, _MAX_STRIPE_COLUMNS // m)}"
        )
    if escapes is None:
        escapes = _UNLIMITED if timed else 100
    escapes = check_int(escapes, "escapes", minimum=0)
    settings = _Settings(
        max_iter=max_iter, patience=patience, tenure=tenure, stripe_groups=stripe_groups, escapes=escapes
    )

    identity = np.arange(cols, dtype=np.int64)
    before = _kept_nm(scores, identity, n, m)
    bound = _bound(scores, n, m)
    perm = identity.copy()
    iterations = 0
    top = float(scores.max()) if scores.size else 0.0
    proven = True  # nothing to search: every permutation keeps the same
    if n < m and cols > m and top > 0:
        colv = np.ascontiguousarray((scores / top).T)
        budget = _Budget(limit, start, goal=bound / top, tol=_tolerance(scores.shape[0], m))
        steps = chosen.steps(settings)
        bar = progress_bar(
            steps if steps < _UNLIMITED else None,  # type: ignore[arg-type]
            progress,
            f"channel permutation {n}:{m} {method}",
            "step",
        )
        try:
            perm, iterations = chosen.search(colv, perm, n, m, generator, budget, settings, bar)
        finally:
            if bar is not None:
                bar.close()
        proven = budget.proven
        if refine and not proven:
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
        optimal=bool(proven or after >= bound - 1e-12 * max(1.0, bound)),
    )


_document_methods(channel_permutation, METHODS)


# --------------------------------------------------------------------------- warm-up


def _warmup() -> None:
    w = np.random.default_rng(0).normal(size=(8, 16))
    for method in METHODS:
        channel_permutation(w, 2, 4, method=method, rng=0, max_iter=4, escapes=1, refine=method == "greedy")
