"""1-D N:M masks (keep the n largest of every m consecutive scores) and C(m, n) combination tables."""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from nmsolve._jit import kernel, prange, prefer_512_bit_vectors, threads_for
from nmsolve._validate import (
    as_array,
    as_scores,
    check_axis,
    check_group_length,
    check_nm,
    reject_nan,
)
from nmsolve.layout import restore_rows, rows_along

# Two kernels cover full groups, chosen by m (both vectorised across groups by LLVM):
# * m == 4 (2:4 is the sparse-tensor-core pattern) reads each group as four scalars and counts,
#   with 6 comparisons, how many entries beat each one; LLVM turns the stride-4 loads into shuffles,
#   so nothing is copied. The counts are float32, because numba widens int32 sums to int64, which
#   halves the SIMD lanes.
# * other m <= _NETWORK_MAX_M transposes a block of groups into scratch[j, g] and runs a selection
#   network (Batcher's odd-even merge sort, pruned to the comparators that decide the n-th and
#   (n+1)-th largest) with every comparator one loop over groups; the n-th largest value is then
#   the threshold. That is about log2(m)^2 / 4 comparisons per entry (157 / 32 for 16:32) against
#   (m - 1) / 2 for ranking by pairwise comparison. A block and its scratch (_BLOCK_VALUES values
#   each, 16 KB in float32) stay in the core's L1 cache: 4096 ran 16:32 float32 and 4:8 float64
#   10-15% faster than 8192 at 8192x8192, and the other patterns as fast.
# * float32 4:8, 8:16 and 16:32 (_REGISTER_PATTERNS) run the same pruned network with its wires in
#   registers instead: one loop over groups whose body is the whole network on m local variables
#   (_register_kernel), so each wire is loaded once and never stored, where _sort_lanes loads and
#   stores two wires per comparator; for 8:16 and 16:32 in 512-bit vectors where the CPU has them
#   (16:32 also transposes two values at a time, as one complex64). The threshold pass and tie rule
#   are those of _keep_network.
#   The next block is prefetched while this one is transposed and thresholded (_prefetch), so that
#   the memory fetch overlaps the computation.
# Longer groups, and a padded last group, use quickselect (O(1) expected per entry).
_NETWORK_MAX_M = 64
_BLOCK_VALUES = 4096
_NO_NETWORK = np.zeros((0, 2), dtype=np.int64)
# Rows are split into this many contiguous chunks for prange, so scratch is allocated per chunk.
_ROW_CHUNKS = 64
# Below this many entries _nm_rows runs on one thread: waking the thread pool costs more than it
# saves, and on a busy machine (other processes on every core) it can take tens of milliseconds.
_PARALLEL_MIN_SIZE = 1 << 16

# Patterns with a register-resident network (float32 scores only; see _keep_registers).
_REGISTER_PATTERNS = ((4, 8), (8, 16), (16, 32))

MAX_COMBINATIONS = 1 << 20


@functools.lru_cache(maxsize=256)
def _sorting_network(m: int, outputs: frozenset[int] | None = None) -> np.ndarray:
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


def _selection_network(n: int, m: int) -> np.ndarray:
    """The comparators that leave the n-th and (n+1)-th largest of m on wires n - 1 and n."""
    return _sorting_network(m, frozenset({n - 1, n} if n < m else {n - 1}))


def _register_kernel(n: int, m: int) -> Any:
    """Kernel ``(s, groups, threshold, tie)`` running _selection_network(n, m) on wires in registers.

    Wire w of group g is read from ``s[w // 4, 4 * g + w % 4]`` for m < 32 (four float32 transposed
    as one complex128, see _keep_registers) and from ``s[w // 2, g]`` for m = 32 (two float32 as one
    complex64: its real part for even w, its imaginary part for odd w). It writes
    the n-th largest of each group to threshold[g], and to tie[g] whether the next one equals it.
    The network is unrolled into straight-line source, one line per comparator, so that LLVM can
    keep the wires in vector registers: 8 groups per vector, 16 for m >= 16 on CPUs with 512-bit
    vectors (prefer_512_bit_vectors; with 4:8 it did not pay). The source is compiled under this
    file's name, which numba's on-disk cache needs (it re-validates entries against this file's time
    stamp); tracebacks into it show lines of this file that are not its lines.
    """
    name = f"_select_{n}_{m}"
    lines = [f"def {name}(s, groups, threshold, tie):"]
    lines += ["    prefer_512_bit_vectors()"] if m >= 16 else []
    lines += ["    for g in range(groups):"]
    if m < 32:
        lines += [f"        w{w} = s[{w // 4}, 4 * g + {w % 4}]" for w in range(m)]
    else:
        lines += [f"        p{j} = s[{j}, g]" for j in range(m // 2)]
        lines += [f"        w{w} = p{w // 2}.{'imag' if w % 2 else 'real'}" for w in range(m)]
    network = _selection_network(n, m)
    lines += [f"        w{a}, w{b} = (w{a}, w{b}) if w{a} > w{b} else (w{b}, w{a})" for a, b in network]
    lines += [f"        threshold[g] = w{n - 1}", f"        tie[g] = w{n} == w{n - 1}"]
    namespace: dict[str, Any] = {"__name__": __name__, "prefer_512_bit_vectors": prefer_512_bit_vectors}
    exec(compile("\n".join(lines), __file__, "exec"), namespace)
    return kernel()(namespace[name])


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


_prefetch = _prefetch_python if numba.config.DISABLE_JIT else _prefetch_line  # type: ignore[attr-defined]

# --------------------------------------------------------------------------- kernels

_select_4_8, _select_8_16, _select_16_32 = (_register_kernel(n, m) for n, m in _REGISTER_PATTERNS)


@kernel()
def _sort_lanes(t, lanes, network):  # type: ignore[no-untyped-def]
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
def _kth_largest(buf, length, k):  # type: ignore[no-untyped-def]
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
def _has_nan(xr):  # type: ignore[no-untyped-def]
    """Whether the 1-D array xr holds a NaN."""
    nan = False
    for k in range(xr.size):
        nan |= xr[k] != xr[k]  # no early exit, so that LLVM vectorises the scan
    return nan


@kernel()
def _keep_ties_first(x, keep, threshold, out):  # type: ignore[no-untyped-def]
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
def _keep_by_threshold(x, keep, buf, out):  # type: ignore[no-untyped-def]
    """Keep the ``keep`` largest of x (one group, no NaN), ties to the lower index, via quickselect."""
    for i in range(x.size):
        buf[i] = x[i]
    _keep_ties_first(x, keep, _kth_largest(buf, x.size, keep), out)


@kernel()
def _keep_m4(xb, n, ob):  # type: ignore[no-untyped-def]
    """N:4 mask of the groups of 4 in xb into ob; return whether xb holds NaN (then ob is garbage).

    An entry is kept when fewer than n entries beat it; entry j is beaten by i when x_i > x_j, or
    x_i == x_j and i < j (ties go to the lower index). The NaN check rides along in the same pass.
    """
    nf = np.float32(n)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    nan = False
    for g in range(xb.size // 4):
        k = 4 * g
        a, b, c, d = xb[k], xb[k + 1], xb[k + 2], xb[k + 3]
        nan |= (a != a) | (b != b) | (c != c) | (d != d)
        b_beats_a = one if b > a else zero
        c_beats_a = one if c > a else zero
        d_beats_a = one if d > a else zero
        c_beats_b = one if c > b else zero
        d_beats_b = one if d > b else zero
        d_beats_c = one if d > c else zero
        ob[k] = b_beats_a + c_beats_a + d_beats_a < nf
        ob[k + 1] = (one - b_beats_a) + c_beats_b + d_beats_b < nf
        ob[k + 2] = (2 * one - c_beats_a - c_beats_b) + d_beats_c < nf
        ob[k + 3] = 3 * one - d_beats_a - d_beats_b - d_beats_c < nf
    return nan


@kernel()
def _keep_network(xb, n, m, network, scratch, ob):  # type: ignore[no-untyped-def]
    """N:M mask of the groups of m in xb (at most scratch.shape[1] of them, no NaN) into ob.

    The groups are transposed into scratch[j, g] so that each comparator of ``network`` (see
    _selection_network) is one loop over groups. Then t = scratch[n - 1, g] is the n-th largest of
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
    _sort_lanes(scratch, groups, network)
    for g in range(groups):
        t = scratch[n - 1, g]
        if n == m or scratch[n, g] < t:
            for j in range(m):
                og[g, j] = xg[g, j] >= t
        else:
            _keep_ties_first(xg[g], n, t, og[g])


@kernel()
def _transpose_prefetching(xv, t, ahead, early):  # type: ignore[no-untyped-def]
    """t[j, g] = xv[g, j] for every row g of xv, prefetching the first ``early`` cache lines of ``ahead``
    on the way (spread over the columns j, so that they do not stall the copy all at once)."""
    groups, width = xv.shape
    for j in range(width):
        for g in range(groups):
            t[j, g] = xv[g, j]
        for line in range(j * early // width, (j + 1) * early // width):
            _prefetch(ahead, 16 * line)


@kernel()
def _keep_registers(xb, n, m, wide, threshold, tie, ob, ahead):  # type: ignore[no-untyped-def]
    """_keep_network for float32 (n, m) in _REGISTER_PATTERNS, with the network in registers.

    The groups are transposed several values at a time into ``wide`` (complex128, m // 4 rows): for
    m < 32 four values as one complex128, read back by the selection kernel as interleaved 4-float
    tuples (which LLVM vectorises with shuffles); for m = 32, where those shuffles cost more than
    they save, two values as one complex64 (wide seen as 16 rows of complex64), half the moves of a
    value-by-value transpose. The cache lines of ``ahead`` (the next block) are prefetched, the
    first half during the transpose, the rest one per group during the threshold pass: issued all
    at once they stall this block.
    """
    groups = xb.size // m
    xg = xb.reshape((groups, m))
    og = ob.reshape((groups, m))
    lines = ahead.size // 16  # 64-byte lines of float32
    early = min(lines // 2, groups)
    late = min(lines - early, groups)
    if m == 32:
        pairs = wide.view(np.complex64).reshape((16, wide.shape[1]))
        _transpose_prefetching(xb.view(np.complex64).reshape((groups, 16)), pairs, ahead, early)
        _select_16_32(pairs, groups, threshold, tie)
    else:
        _transpose_prefetching(xb.view(np.complex128).reshape((groups, m // 4)), wide, ahead, early)
        if m == 8:
            _select_4_8(wide.view(np.float32), groups, threshold, tie)
        else:
            _select_8_16(wide.view(np.float32), groups, threshold, tie)
    for g in range(groups):
        if g < late:
            _prefetch(ahead, 16 * (early + g))
        t = threshold[g]
        if tie[g]:
            _keep_ties_first(xg[g], n, t, og[g])
        else:
            for j in range(m):
                og[g, j] = xg[g, j] >= t


@kernel(parallel=True)
def _nm_rows(x, n, m, network, registers, out):  # type: ignore[no-untyped-def]
    """Fill out[r] with the N:M mask of row x[r]; return the first row holding NaN, or -1.

    ``network`` is _selection_network(n, m) when 4 != m <= _NETWORK_MAX_M, and is unused otherwise.
    Full groups go through _keep_m4, _keep_registers (``registers``: float32 x, (n, m) in
    _REGISTER_PATTERNS) or _keep_network in blocks of about _BLOCK_VALUES entries, each checked for
    NaN on the way (while it is in cache); the rest of the row through quickselect.
    """
    rows, length = x.shape
    full = length - length % m if m <= _NETWORK_MAX_M else 0
    step = max(1, _BLOCK_VALUES // m) * m
    chunks = min(rows, _ROW_CHUNKS)
    nan_in_row = np.zeros(rows, dtype=np.bool_)
    for c in prange(chunks):
        scratch = np.empty((0 if registers else m, step // m), dtype=x.dtype)
        wide = np.empty((m // 4 if registers else 0, step // m), dtype=np.complex128)
        threshold = np.empty(step // m, dtype=x.dtype)
        tie = np.empty(step // m, dtype=np.bool_)
        buf = np.empty(m, dtype=x.dtype)
        last = (c + 1) * rows // chunks
        for r in range(c * rows // chunks, last):
            xr = x[r]
            outr = out[r]
            nan = False
            for start in range(0, full, step):
                stop = min(start + step, full)
                if m == 4:
                    nan = _keep_m4(xr[start:stop], n, outr[start:stop])
                else:
                    nan = _has_nan(xr[start:stop])
                    if not nan and registers:
                        # the block to prefetch: the next one of this row, or the first of the next row
                        ahead = xr[stop : min(stop + step, full)]
                        if stop == full and r + 1 < last:
                            ahead = x[r + 1, :step]
                        _keep_registers(xr[start:stop], n, m, wide, threshold, tie, outr[start:stop], ahead)
                    elif not nan:
                        _keep_network(xr[start:stop], n, m, network, scratch, outr[start:stop])
                if nan:
                    break
            nan = nan or _has_nan(xr[full:])
            if not nan:
                for start in range(full, length, m):
                    stop = min(start + m, length)
                    _keep_by_threshold(xr[start:stop], min(n, stop - start), buf, outr[start:stop])
            nan_in_row[r] = nan
    for r in range(rows):
        if nan_in_row[r]:
            return r
    return -1


# Grouping along axis 0 of a C-contiguous 2-D array: a group is m consecutive ROWS, compared elementwise
# across columns, so every step is a loop over contiguous columns and nothing is transposed. Blocks of
# _COL_BLOCK columns of the m rows are copied into scratch[j, c] and run through the same selection
# network as the row path (every comparator one vectorised loop over columns).
_COL_BLOCK = 1024


@kernel()
def _keep_m4_rows(a, b, c, d, n, oa, ob, oc, od):  # type: ignore[no-untyped-def]
    """_keep_m4 for a group of four rows a, b, c, d compared column by column (returns NaN seen)."""
    nf = np.float32(n)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    nan = False
    for k in range(a.size):
        x0, x1, x2, x3 = a[k], b[k], c[k], d[k]
        nan |= (x0 != x0) | (x1 != x1) | (x2 != x2) | (x3 != x3)
        b_beats_a = one if x1 > x0 else zero
        c_beats_a = one if x2 > x0 else zero
        d_beats_a = one if x3 > x0 else zero
        c_beats_b = one if x2 > x1 else zero
        d_beats_b = one if x3 > x1 else zero
        d_beats_c = one if x3 > x2 else zero
        oa[k] = b_beats_a + c_beats_a + d_beats_a < nf
        ob[k] = (one - b_beats_a) + c_beats_b + d_beats_b < nf
        oc[k] = (2 * one - c_beats_a - c_beats_b) + d_beats_c < nf
        od[k] = 3 * one - d_beats_a - d_beats_b - d_beats_c < nf
    return nan


@kernel(parallel=True)
def _nm_cols(x, n, m, network, out):  # type: ignore[no-untyped-def]
    """out[:, c] = N:M mask of x[:, c] in groups of m consecutive rows; return the first NaN row or -1.

    Full blocks of four rows rank each entry with six comparisons per column (as _keep_m4). Other
    full blocks with m <= _NETWORK_MAX_M: scratch[j, c] = x[r0 + j, c] (contiguous copies, NaN
    checked on the way), the comparators of ``network`` leave the n-th largest of every column on
    wire n - 1 and the next one on wire n; entries >= that threshold are kept, and columns where the
    next one equals it (ties) are redone from the lowest row on. A padded last block and m >
    _NETWORK_MAX_M gather each column of the block and use quickselect.
    """
    rows, cols = x.shape
    blocks = (rows + m - 1) // m
    full = rows // m if m <= _NETWORK_MAX_M else 0
    chunks = min(blocks, _ROW_CHUNKS)
    nan_in_block = np.zeros(blocks, dtype=np.bool_)
    for ch in prange(chunks):
        scratch = np.empty((m, _COL_BLOCK), dtype=x.dtype)
        tie = np.empty(_COL_BLOCK, dtype=np.bool_)
        colbuf = np.empty(m, dtype=x.dtype)
        buf = np.empty(m, dtype=x.dtype)
        colout = np.empty(m, dtype=np.bool_)
        for b in range(ch * blocks // chunks, (ch + 1) * blocks // chunks):
            r0 = b * m
            length = min(m, rows - r0)
            nan = False
            if b < full and m == 4:
                xs, os = x[r0 : r0 + 4], out[r0 : r0 + 4]
                nan = _keep_m4_rows(xs[0], xs[1], xs[2], xs[3], n, os[0], os[1], os[2], os[3])
            elif b < full:
                for c0 in range(0, cols, _COL_BLOCK):
                    width = min(_COL_BLOCK, cols - c0)
                    for j in range(m):
                        xr = x[r0 + j]
                        for c in range(width):
                            v = xr[c0 + c]
                            scratch[j, c] = v
                            nan |= v != v
                    if nan:
                        break
                    _sort_lanes(scratch, width, network)
                    any_tie = False
                    if n < m:
                        for c in range(width):
                            t = scratch[n, c] == scratch[n - 1, c]
                            tie[c] = t
                            any_tie |= t
                    for j in range(m):
                        xr = x[r0 + j]
                        outr = out[r0 + j]
                        for c in range(width):
                            outr[c0 + c] = xr[c0 + c] >= scratch[n - 1, c]
                    if any_tie:
                        for c in range(width):
                            if tie[c]:
                                for j in range(m):
                                    colbuf[j] = x[r0 + j, c0 + c]
                                _keep_ties_first(colbuf, n, scratch[n - 1, c], colout)
                                for j in range(m):
                                    out[r0 + j, c0 + c] = colout[j]
            else:
                for c in range(cols):
                    for j in range(length):
                        v = x[r0 + j, c]
                        colbuf[j] = v
                        nan |= v != v
                    if nan:
                        break
                    _keep_by_threshold(colbuf[:length], min(n, length), buf, colout[:length])
                    for j in range(length):
                        out[r0 + j, c] = colout[j]
            nan_in_block[b] = nan
    for b in range(blocks):
        if nan_in_block[b]:
            return b * m
    return -1


def _run_maybe_serial(fn: Any, x2: np.ndarray, n: int, m: int, out: np.ndarray, *options: Any) -> int:
    """Run the parallel kernel ``fn(x2, n, m, network, *options, out)`` (small inputs on one thread);
    return its NaN row or -1."""
    network = _selection_network(n, m) if m <= _NETWORK_MAX_M else _NO_NETWORK
    with threads_for(x2.size, _PARALLEL_MIN_SIZE):
        return int(fn(x2, n, m, network, *options, out))


def _mask_rows(x2: np.ndarray, n: int, m: int, out: np.ndarray) -> int:
    """Run _nm_rows on the 2-D scores ``x2`` (small inputs on one thread); return its NaN row or -1."""
    registers = x2.dtype == np.float32 and (n, m) in _REGISTER_PATTERNS
    return _run_maybe_serial(_nm_rows, x2, n, m, out, registers)


# --------------------------------------------------------------------------- public API


def nm_mask(scores: Any, n: int = 2, m: int = 4, *, axis: int = -1, pad: bool = False) -> np.ndarray:
    """Keep the ``n`` largest scores in every group of ``m`` consecutive entries along ``axis``.

    Parameters
    ----------
    scores : array_like, shape (..., L, ...)
        Real scores of any dimension: magnitudes ``np.abs(W)`` (see :func:`magnitude_mask`), a
        saliency, learned scores. float16/32/64 and integer dtypes are accepted and never modified.
    n, m : int
        Keep ``n`` of every ``m`` (``0 < n <= m``).
    axis : int, default -1
        The axis along which groups of ``m`` run (the reduction axis: ``in`` of a Linear weight
        ``[out, in]``; use ``axis=1`` for a conv weight ``[out, in, kh, kw]``).
    pad : bool, default False
        If the length along ``axis`` is not a multiple of ``m``, raise (False) or treat the last,
        shorter group as padded with never-kept entries, keeping ``min(n, len)`` of it (True).

    Returns
    -------
    mask : ndarray of bool, same shape as ``scores``
        True where an entry is kept; exactly ``n`` per full group.

    Raises
    ------
    ValueError
        NaN in ``scores``, ``n``/``m`` out of range, a ragged last group without ``pad``.
    TypeError
        Non-integer ``n``/``m``; bool, complex or object ``scores``.

    Notes
    -----
    Ties break toward the lower index: among equal scores the earlier entry is kept. ``inf`` is
    ordered like any other number. Groups of ``m = 4`` rank each entry with six comparisons per
    group; other groups of ``m <= 64`` find the n-th largest score with a selection network
    (Batcher's odd-even merge sort, ``O(log^2 m)`` comparisons per entry), vectorised across
    groups; longer groups, and a padded last group, use quickselect (``O(1)`` expected per
    entry). Rows are processed in parallel (from 65536 entries on); the result does not depend on
    the number of threads. ``axis=0`` of a C-contiguous 2-D array (groups of ``m`` consecutive
    rows) runs the same selection network across contiguous columns, without a transposed copy.

    References
    ----------
    K. E. Batcher, "Sorting networks and their applications", AFIPS Spring Joint Computer
    Conference, 1968 (the odd-even merge network, pruned here to a selection network).

    Examples
    --------
    >>> import numpy as np
    >>> nm_mask(np.array([[0.1, -3.0, 2.0, 2.0, 5.0, 0.0, 1.0, 4.0]]), n=2, m=4).astype(int)
    array([[0, 0, 1, 1, 1, 0, 0, 1]])
    """
    n, m = check_nm(n, m)
    x = as_scores(scores)
    axis = check_axis(axis, x.ndim)
    check_group_length(x.shape[axis], m, axis, pad)
    if x.ndim == 2 and axis == 0 and x.flags.c_contiguous:
        # groups of m consecutive rows, compared across contiguous columns: no transposed copy
        out = np.empty(x.shape, dtype=np.bool_)
        if out.size and _run_maybe_serial(_nm_cols, x, n, m, out) >= 0:
            reject_nan(x)
        return out
    x2, moved_shape = rows_along(x, axis)
    out = np.empty(x2.shape, dtype=np.bool_)
    if out.size and _mask_rows(x2, n, m, out) >= 0:
        reject_nan(x)  # rare path: locate the NaN in the caller's coordinates
    return restore_rows(out, moved_shape, axis)


def magnitude_mask(weights: Any, n: int = 2, m: int = 4, *, axis: int = -1, pad: bool = False) -> np.ndarray:
    """N:M mask that keeps the ``n`` largest-magnitude weights of every ``m``: ``nm_mask(|weights|)``.

    Examples
    --------
    >>> import numpy as np
    >>> magnitude_mask(np.array([1.0, -5.0, 2.0, 0.5]), n=2, m=4).astype(int)
    array([0, 1, 1, 0])
    """
    w = as_scores(weights, "weights")
    return nm_mask(np.abs(w), n, m, axis=axis, pad=pad)


def is_nm(mask: Any, n: int, m: int, *, axis: int = -1, exact: bool = False, pad: bool = False) -> bool:
    """Whether ``mask`` keeps at most ``n`` (``exact=True``: exactly ``n``) of every ``m`` along ``axis``.

    Parameters
    ----------
    mask : array_like
        A boolean mask, or any numeric array where nonzero means kept (e.g. pruned weights).
    n, m : int
        The pattern.
    axis : int, default -1
        Axis along which groups run.
    exact : bool, default False
        Require exactly ``n`` kept per full group (and ``min(n, len)`` in a padded last group).
    pad : bool, default False
        Accept a ragged last group (checked against ``min(n, len)``); otherwise a ragged length
        raises, like :func:`nm_mask`.

    Examples
    --------
    >>> import numpy as np
    >>> is_nm(np.array([1, 0, 0, 1, 0, 0, 0, 1]), 2, 4)
    True
    >>> is_nm(np.array([1, 0, 0, 1, 0, 0, 0, 1]), 2, 4, exact=True)
    False
    """
    n, m = check_nm(n, m)
    arr = as_array(mask, "mask")
    if arr.ndim == 0:
        raise ValueError("mask must have at least 1 dimension, got a 0-d array")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"mask must be boolean or numeric, got dtype {arr.dtype}")
    axis = check_axis(axis, arr.ndim)
    length = arr.shape[axis]
    check_group_length(length, m, axis, pad)
    kept = np.moveaxis(arr != 0, axis, -1)
    full = length - length % m
    counts = kept[..., :full].reshape(*kept.shape[:-1], full // m, m).sum(axis=-1)
    tail = kept[..., full:].sum(axis=-1)
    limit = min(n, length % m)
    if exact:
        return bool((counts == n).all() and (length % m == 0 or (tail == limit).all()))
    return bool((counts <= n).all() and (tail <= limit).all())


@functools.lru_cache(maxsize=64)
def _combination_table(n: int, m: int) -> np.ndarray:
    count = math.comb(m, n)
    if count > MAX_COMBINATIONS:
        raise ValueError(
            f"C({m}, {n}) = {count} combinations is more than {MAX_COMBINATIONS} rows; "
            "combination tables are meant for small groups such as 2:4, 4:8 or 8:16"
        )
    table = np.zeros((count, m), dtype=np.bool_)
    # Rows in itertools.combinations order, built by recursion on the first kept index.
    row = 0

    def fill(first: int, chosen: list[int]) -> None:
        nonlocal row
        if len(chosen) == n:
            table[row, chosen] = True
            row += 1
            return
        for j in range(first, m - (n - len(chosen)) + 1):
            fill(j + 1, [*chosen, j])

    fill(0, [])
    table.setflags(write=False)
    return table


def combinations(n: int, m: int) -> np.ndarray:
    """The ``C(m, n)`` subsets of size ``n`` of a group of ``m``, as a read-only bool table.

    Row ``c`` is the ``c``-th tuple of ``itertools.combinations(range(m), n)`` (lexicographic order).
    Tables are cached; at most ``MAX_COMBINATIONS`` (about a million) rows are built.

    Returns
    -------
    table : ndarray of bool, shape (C(m, n), m), read-only

    Examples
    --------
    >>> combinations(2, 4).astype(int)
    array([[1, 1, 0, 0],
           [1, 0, 1, 0],
           [1, 0, 0, 1],
           [0, 1, 1, 0],
           [0, 1, 0, 1],
           [0, 0, 1, 1]])
    """
    return _combination_table(*check_nm(n, m))


def combination_scores(scores: Any, n: int, m: int, *, axis: int = -1) -> np.ndarray:
    """Sum of the scores of every combination in every group: ``groups @ combinations(n, m).T``.

    Parameters
    ----------
    scores : array_like, shape (..., L, ...) with L a multiple of m along ``axis``

    Returns
    -------
    ndarray of float64, shape (..., L // m, C(m, n))
        ``axis`` moved last and split into groups; entry ``[..., g, c]`` is the total score of
        combination ``c`` in group ``g``.

    Examples
    --------
    >>> import numpy as np
    >>> combination_scores(np.array([4.0, 1.0, 3.0, 2.0]), 2, 4)
    array([[5., 7., 6., 4., 3., 5.]])
    """
    n, m = check_nm(n, m)
    x = as_scores(scores)
    axis = check_axis(axis, x.ndim)
    check_group_length(x.shape[axis], m, axis, pad=False)
    moved = np.moveaxis(x, axis, -1)
    reject_nan(x)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m).astype(np.float64)
    return groups @ combinations(n, m).T.astype(np.float64)


def best_combination(combo_scores: Any) -> np.ndarray:
    """Index of the highest-scoring combination per group (the lowest index among ties).

    ``combo_scores`` has shape ``(..., C)``, e.g. from :func:`combination_scores` or learned LBC
    scores; the result has shape ``(...)``.

    Examples
    --------
    >>> import numpy as np
    >>> best_combination(np.array([[5.0, 7.0, 7.0, 1.0]]))
    array([1])
    """
    cs = as_scores(combo_scores, "combo_scores")
    reject_nan(cs, "combo_scores")
    return np.argmax(cs, axis=-1)


def combination_mask(selection: Any, n: int, m: int, *, axis: int = -1) -> np.ndarray:
    """Mask from chosen combinations: one index per group, or the union of an alive set per group.

    Parameters
    ----------
    selection : array_like
        Either integer combination indices of shape ``(..., G)`` (one per group), or a boolean
        alive set of shape ``(..., G, C(m, n))`` whose union per group is kept (as in LBC).
    n, m : int
    axis : int, default -1
        Where the grouped axis (of length ``G * m``) goes in the result.

    Returns
    -------
    mask : ndarray of bool, shape with ``G * m`` at ``axis``

    Examples
    --------
    >>> import numpy as np
    >>> combination_mask(np.array([0, 5]), 2, 4).astype(int)
    array([1, 1, 0, 0, 0, 0, 1, 1])
    """
    n, m = check_nm(n, m)
    table = combinations(n, m)
    sel = as_array(selection, "selection")
    if sel.dtype.kind == "b":
        if sel.ndim < 2 or sel.shape[-1] != len(table):
            raise ValueError(f"a boolean selection needs shape (..., G, {len(table)}) for C({m}, {n}), got {sel.shape}")
        groups = (sel.astype(np.uint8) @ table.astype(np.uint8)) > 0
    elif sel.dtype.kind in "iu":
        if sel.ndim < 1:
            raise ValueError("an index selection needs shape (..., G), got a 0-d array")
        if sel.size and (sel.min() < 0 or sel.max() >= len(table)):
            raise ValueError(f"combination indices must lie in [0, {len(table)}), got {sel.min()}..{sel.max()}")
        groups = table[sel]
    else:
        raise TypeError(f"selection must hold integer indices or booleans, got dtype {sel.dtype}")
    flat = groups.reshape(*groups.shape[:-2], groups.shape[-2] * m)
    axis = check_axis(axis, flat.ndim)
    return np.ascontiguousarray(np.moveaxis(flat, -1, axis))


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        x = np.arange(32, dtype=dtype).reshape(2, 16)
        nm_mask(x, 2, 4)
        nm_mask(x, 4, 16)
        nm_mask(x.T.copy(), 2, 4, axis=0)
