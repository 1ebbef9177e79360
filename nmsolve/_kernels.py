"""Compiled building blocks shared by the solvers: sorting and selection networks, the tie rule,
quickselect, the N:4 ranking, tile loads, submatrix gathers and a prefetch hint.

Every solver module imports what it needs from here (never from a sibling solver), so a kernel that
two families use has one copy. Names here are package-private: they are not part of the public API.

Notes
-----
Ties break toward the lower index everywhere: ``keep_ties_first`` keeps the entries above a threshold
and then the earliest entries equal to it; ``rank4`` counts an earlier equal entry as beating a later
one.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from nmsolve._jit import kernel, prange

# Longest group handled by a selection network (longer groups use quickselect).
NETWORK_MAX_M = 64
# Values per block of a row that a selection kernel works on at a time: a block and its scratch
# (16 KB in float32) stay in the core's L1 cache; 4096 ran 16:32 float32 and 4:8 float64 10-15%
# faster than 8192 at 8192x8192, and the other patterns as fast.
BLOCK_VALUES = 4096
# Rows are split into this many contiguous chunks for prange, so scratch is allocated per chunk.
ROW_CHUNKS = 64
# A tile whose largest finite magnitude exceeds this is scaled by a power of two (exact, except that
# magnitudes below 2**-800 or so may underflow to 0) so that sums of potentials cannot overflow.
SCALE_ABOVE = 2.0**200


# --------------------------------------------------------------------------- networks (Python)
@functools.lru_cache(maxsize=256)
def sorting_network(m: int, outputs: frozenset[int] | None = None) -> np.ndarray:
    """Comparators ``(a, b)``, ``a < b``, of Batcher's odd-even merge sort on m wires, read-only.

    With each comparator putting the larger value on wire a, the network sorts into descending
    order. ``outputs`` keeps only the comparators that can reach those wires: all that selecting
    the values that end on them needs. Shared by nm_mask and the transposable solvers.
    """
    pairs = []
    p = 1
    while p < m:
        k = p
        while k >= 1:
            for j in range(k % p, m - k, 2 * k):
                for i in range(min(k, m - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    if outputs is not None:
        needed = set(outputs)
        kept = []
        for a, b in reversed(pairs):
            if a in needed or b in needed:
                kept.append((a, b))
                needed |= {a, b}
        pairs = kept[::-1]
    network = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    network.setflags(write=False)
    return network


def selection_network(n: int, m: int) -> np.ndarray:
    """The comparators that leave the n-th and (n+1)-th largest of m on wires n - 1 and n."""
    return sorting_network(m, frozenset({n - 1, n} if n < m else {n - 1}))


# --------------------------------------------------------------------------- prefetch


def _prefetch_python(a: np.ndarray, i: int) -> None:
    """Pure-Python runs (NUMBA_DISABLE_JIT): a prefetch is only a hint, so nothing to do."""


@intrinsic
def _prefetch_line(typingctx, a, i):  # type: ignore[no-untyped-def]
    """Hint the CPU to fetch the cache line holding ``a[i]`` (1-D, ``0 <= i < a.size``) into L2.

    llvm.prefetch (read, locality 2, data): no effect on results, only on when memory is read.
    """

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]], wraparound=False)
        i32 = ir.IntType(32)
        # the intrinsic's name carries the pointer type: "p0" for opaque pointers (newer llvmlite),
        # "p0i8" for an i8* (llvmlite with typed pointers, numba < 0.6x)
        if getattr(ptr.type, "is_opaque", False):
            name = "llvm.prefetch.p0"
        else:
            ptr, name = builder.bitcast(ptr, ir.IntType(8).as_pointer()), "llvm.prefetch.p0i8"
        signature_ir = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, signature_ir, name)
        builder.call(fn, [ptr, i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return types.void(a, i), codegen


prefetch = _prefetch_python if numba.config.DISABLE_JIT else _prefetch_line  # type: ignore[attr-defined]

# --------------------------------------------------------------------------- kernels


@kernel()
def sort_lanes(t, lanes, network):  # type: ignore[no-untyped-def]
    """Apply ``network`` to every column (lane) of t[:, :lanes]: descending order on its wires.

    Each comparator is a branch-free compare-exchange over all lanes, which vectorises.
    """
    for c in range(network.shape[0]):
        a = network[c, 0]
        b = network[c, 1]
        for lane in range(lanes):
            u = t[a, lane]
            v = t[b, lane]
            larger = u > v
            t[a, lane] = u if larger else v
            t[b, lane] = v if larger else u


@kernel()
def kth_largest(buf, length, k):  # type: ignore[no-untyped-def]
    """The k-th largest (1-based) of buf[:length], by in-place quickselect (reorders buf)."""
    lo, hi, target = 0, length - 1, k - 1  # position in descending order
    while lo < hi:
        mid = (lo + hi) // 2
        # median of three as pivot, moved to hi
        if buf[mid] > buf[lo]:
            buf[mid], buf[lo] = buf[lo], buf[mid]
        if buf[hi] > buf[lo]:
            buf[hi], buf[lo] = buf[lo], buf[hi]
        if buf[mid] > buf[hi]:
            buf[mid], buf[hi] = buf[hi], buf[mid]
        pivot = buf[hi]
        store = lo
        for i in range(lo, hi):
            if buf[i] > pivot:
                buf[i], buf[store] = buf[store], buf[i]
                store += 1
        buf[store], buf[hi] = buf[hi], buf[store]
        if store == target:
            return buf[store]
        if store < target:
            lo = store + 1
        else:
            hi = store - 1
    return buf[lo]


@kernel()
def has_nan(xr):  # type: ignore[no-untyped-def]
    """Whether the 1-D array xr holds a NaN."""
    nan = False
    for k in range(xr.size):
        nan |= xr[k] != xr[k]  # no early exit, so that LLVM vectorises the scan
    return nan


@kernel()
def keep_ties_first(x, keep, threshold, out):  # type: ignore[no-untyped-def]
    """Keep x > threshold and the first ``keep - #(x > threshold)`` entries equal to it (no NaN in x)."""
    ties_allowed = keep
    for i in range(x.size):
        ties_allowed -= x[i] > threshold
    for i in range(x.size):
        v = x[i]
        if v > threshold:
            out[i] = True
        elif v == threshold and ties_allowed > 0:
            out[i] = True
            ties_allowed -= 1
        else:
            out[i] = False


@kernel()
def keep_by_threshold(x, keep, buf, out):  # type: ignore[no-untyped-def]
    """Keep the ``keep`` largest of x (one group, no NaN), ties to the lower index, via quickselect."""
    for i in range(x.size):
        buf[i] = x[i]
    keep_ties_first(x, keep, kth_largest(buf, x.size, keep), out)


@kernel(inline=True)
def rank4(a, b, c, d, n):  # type: ignore[no-untyped-def]
    """Whether each of the four values a, b, c, d is among the n largest (ties to the lower index).

    An entry is kept when fewer than n entries beat it; entry j is beaten by i when x_i > x_j, or
    x_i == x_j and i < j. A NaN never beats anything. The counts are float32 because numba widens
    int32 sums to int64, which halves the SIMD lanes; the function is inlined into its callers
    (numba ``inline="always"``), which keeps their loops vectorised.
    """
    nf = np.float32(n)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    b_beats_a = one if b > a else zero
    c_beats_a = one if c > a else zero
    d_beats_a = one if d > a else zero
    c_beats_b = one if c > b else zero
    d_beats_b = one if d > b else zero
    d_beats_c = one if d > c else zero
    return (
        b_beats_a + c_beats_a + d_beats_a < nf,
        (one - b_beats_a) + c_beats_b + d_beats_b < nf,
        (2 * one - c_beats_a - c_beats_b) + d_beats_c < nf,
        3 * one - d_beats_a - d_beats_b - d_beats_c < nf,
    )


@kernel()
def keep_m4(xb, n, ob):  # type: ignore[no-untyped-def]
    """N:4 mask (rank4) of the groups of 4 in xb into ob; return whether xb holds NaN (then ob is
    garbage). The NaN check rides along in the same pass."""
    nan = False
    for g in range(xb.size // 4):
        k = 4 * g
        a, b, c, d = xb[k], xb[k + 1], xb[k + 2], xb[k + 3]
        nan |= (a != a) | (b != b) | (c != c) | (d != d)
        ob[k], ob[k + 1], ob[k + 2], ob[k + 3] = rank4(a, b, c, d, n)
    return nan


@kernel()
def keep_network(xb, n, m, network, scratch, ob):  # type: ignore[no-untyped-def]
    """N:M mask of the groups of m in xb (at most scratch.shape[1] of them, no NaN) into ob.

    The groups are transposed into scratch[j, g] so that each comparator of ``network`` (see
    selection_network) is one loop over groups. Then t = scratch[n - 1, g] is the n-th largest of
    group g and scratch[n, g] the next one: if that is below t, the entries >= t are exactly the n
    kept ones; otherwise entries equal to t are kept from the lowest index on.
    """
    groups = xb.size // m
    # 2-D views: indices straight from range() let LLVM drop numba's negative-index handling,
    # which otherwise turns these loops into gathers (about 2x slower)
    xg = xb.reshape((groups, m))
    og = ob.reshape((groups, m))
    for j in range(m):
        for g in range(groups):
            scratch[j, g] = xg[g, j]
    sort_lanes(scratch, groups, network)
    for g in range(groups):
        t = scratch[n - 1, g]
        if n == m or scratch[n, g] < t:
            for j in range(m):
                og[g, j] = xg[g, j] >= t
        else:
            keep_ties_first(xg[g], n, t, og[g])


# --------------------------------------------------------------------------- tiles


@kernel()
def load_tile(x, r0, c0, m, w):  # type: ignore[no-untyped-def]
    """w <- |x[r0:r0+m, c0:c0+m]| in float64, zero outside ``x`` (padding). Returns the largest
    value of w after the adjustments below, or -1.0 if a NaN is met.

    The tile is then made safe for the solvers without changing which masks are optimal: a tile
    whose largest finite magnitude exceeds SCALE_ABOVE is scaled by a power of two, and every
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
    if fmax > SCALE_ABOVE:
        if fmax == np.inf:
            has_inf = True
            fmax = 0.0
            for i in range(m):
                for j in range(m):
                    a = w[i, j]
                    if a != np.inf and a > fmax:
                        fmax = a
        if fmax > SCALE_ABOVE:
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
def store_tile(keep, r0, c0, m, out):  # type: ignore[no-untyped-def]
    rows, cols = out.shape
    for i in range(min(m, rows - r0)):
        for j in range(min(m, cols - c0)):
            out[r0 + i, c0 + j] = keep[i, j]


@kernel(parallel=True)
def take_blocks(h, rows, cols, out):  # type: ignore[no-untyped-def]
    """``out[i] = h[rows[i]][:, cols[i]]`` for every ``i`` (index arrays of shape (blocks, k) and (blocks, d)).

    Each source row of ``h`` is read once while a block's row takes from it: numpy's fancy indexing
    (``h[rows[:, :, None], cols[:, None, :]]``) ran 20-30x slower on the 768 x 768 blocks of
    ``refine_mask`` on a 1536-wide layer. Call it on many blocks at once: a parallel launch per
    single block (tried in ``refit_rows``) cost more than the gather saves.
    """
    for i in prange(rows.shape[0]):
        for a in range(rows.shape[1]):
            src = h[rows[i, a]]
            for b in range(cols.shape[1]):
                out[i, a, b] = src[cols[i, b]]
