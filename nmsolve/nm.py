"""1-D N:M masks: keep the n largest of every m consecutive scores (nm_mask, magnitude_mask, is_nm)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from nmsolve._jit import NM_PARALLEL_MIN, kernel, prange, prefer_512_bit_vectors, specialise
from nmsolve._kernels import (
    BLOCK_VALUES,
    NETWORK_MAX_M,
    ROW_CHUNKS,
    has_nan,
    keep_by_threshold,
    keep_m4,
    keep_network,
    keep_ties_first,
    prefetch,
    rank4,
    selection_network,
    sort_lanes,
)
from nmsolve._validate import (
    as_array,
    as_scores,
    check_axis,
    check_bool,
    check_group_length,
    check_nm,
    reject_nan,
)
from nmsolve.layout import restore_rows, rows_along

# Full groups take one of three paths, chosen by m (all vectorised across groups by LLVM):
# * m == 4 (2:4 is the sparse-tensor-core pattern) reads each group as four scalars and ranks them
#   with 6 comparisons (rank4); LLVM turns the stride-4 loads into shuffles, so nothing is copied.
# * other m <= NETWORK_MAX_M transposes a block of groups into scratch[j, g] and runs a selection
#   network (Batcher's odd-even merge sort, pruned to the comparators that decide the n-th and
#   (n+1)-th largest) with every comparator one loop over groups; the n-th largest value is then
#   the threshold. That is about log2(m)^2 / 4 comparisons per entry (157 / 32 for 16:32) against
#   (m - 1) / 2 for ranking by pairwise comparison (keep_network).
# * float32 4:8, 8:16 and 16:32 (_REGISTER_PATTERNS) run the same pruned network with its wires in
#   registers instead: one loop over groups whose body is the whole network on m local variables
#   (_register_kernel), so each wire is loaded once and never stored, where sort_lanes loads and
#   stores two wires per comparator; for 8:16 and 16:32 in 512-bit vectors where the CPU has them
#   (16:32 also transposes two values at a time, as one complex64). The threshold pass and tie rule
#   are those of keep_network.
#   The next block is prefetched while this one is transposed and thresholded (prefetch), so that
#   the memory fetch overlaps the computation.
# Longer groups, and a padded last group, use quickselect (O(1) expected per entry).
_NO_NETWORK = np.zeros((0, 2), dtype=np.int64)

# Patterns with a register-resident network (float32 scores only; see _registers_block).
_REGISTER_PATTERNS = ((4, 8), (8, 16), (16, 32))


@functools.cache
def _register_kernel(n: int, m: int) -> Any:
    """Kernel ``(s, groups, threshold, tie)`` running selection_network(n, m) on wires in registers.

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
    network = selection_network(n, m)
    lines += [f"        w{a}, w{b} = (w{a}, w{b}) if w{a} > w{b} else (w{b}, w{a})" for a, b in network]
    lines += [f"        threshold[g] = w{n - 1}", f"        tie[g] = w{n} == w{n - 1}"]
    namespace: dict[str, Any] = {"__name__": __name__, "prefer_512_bit_vectors": prefer_512_bit_vectors}
    exec(compile("\n".join(lines), __file__, "exec"), namespace)
    return kernel()(namespace[name])


# --------------------------------------------------------------------------- kernels
# Each path below is its own kernel, compiled on its first use: a 2:4 call compiles the N:4 ranking
# and quickselect, not the selection networks of every other pattern (_jit.specialise binds the
# block kernel of a path into one shared row-loop source).


@kernel()
def _transpose_prefetching(xv, t, ahead, early):  # type: ignore[no-untyped-def]
    """t[j, g] = xv[g, j] for every row g of xv, prefetching the first ``early`` cache lines of ``ahead``
    on the way (spread over the columns j, so that they do not stall the copy all at once)."""
    groups, width = xv.shape
    for j in range(width):
        for g in range(groups):
            t[j, g] = xv[g, j]
        for line in range(j * early // width, (j + 1) * early // width):
            prefetch(ahead, 16 * line)


@kernel()
def _threshold_prefetching(xg, n, m, threshold, tie, og, ahead, early, late):  # type: ignore[no-untyped-def]
    """og[g] = xg[g] >= threshold[g] (ties from the lowest index where tie[g]), prefetching the cache
    lines early .. early + late of ``ahead``, one per group."""
    for g in range(xg.shape[0]):
        if g < late:
            prefetch(ahead, 16 * (early + g))
        t = threshold[g]
        if tie[g]:
            keep_ties_first(xg[g], n, t, og[g])
        else:
            for j in range(m):
                og[g, j] = xg[g, j] >= t


def _registers_block(xb, n, m, network, scratch, wide, threshold, tie, ob, ahead):  # type: ignore[no-untyped-def]
    """keep_network for float32 (n, m) in _REGISTER_PATTERNS, with the network in registers: the
    template of one kernel per pattern (m < 32), ``_select`` bound to that pattern's network.

    The groups are transposed four values at a time into ``wide`` (complex128, m // 4 rows), read
    back by the selection kernel as interleaved 4-float tuples (which LLVM vectorises with
    shuffles). The cache lines of ``ahead`` (the next block) are prefetched, the first half during
    the transpose, the rest one per group during the threshold pass: issued all at once they stall
    this block. Returns whether xb holds NaN.
    """
    if has_nan(xb):
        return True
    groups = xb.size // m
    lines = ahead.size // 16  # 64-byte lines of float32
    early = min(lines // 2, groups)
    _transpose_prefetching(xb.view(np.complex128).reshape((groups, m // 4)), wide, ahead, early)
    _select(wide.view(np.float32), groups, threshold, tie)  # noqa: F821 - bound by specialise
    late = min(lines - early, groups)
    _threshold_prefetching(xb.reshape((groups, m)), n, m, threshold, tie, ob.reshape((groups, m)), ahead, early, late)
    return False


def _pairs_block(xb, n, m, network, scratch, wide, threshold, tie, ob, ahead):  # type: ignore[no-untyped-def]
    """_registers_block for float32 16:32 (the template of its kernel), where the shuffles of
    four-value moves cost more than they save: two values are transposed as one complex64 (wide
    seen as 16 rows of complex64), half the moves of a value-by-value transpose."""
    if has_nan(xb):
        return True
    groups = xb.size // m
    lines = ahead.size // 16
    early = min(lines // 2, groups)
    pairs = wide.view(np.complex64).reshape((16, wide.shape[1]))
    _transpose_prefetching(xb.view(np.complex64).reshape((groups, 16)), pairs, ahead, early)
    _select(pairs, groups, threshold, tie)  # noqa: F821 - bound by specialise
    late = min(lines - early, groups)
    _threshold_prefetching(xb.reshape((groups, m)), n, m, threshold, tie, ob.reshape((groups, m)), ahead, early, late)
    return False


@kernel()
def _block_m4(xb, n, m, network, scratch, wide, threshold, tie, ob, ahead):  # type: ignore[no-untyped-def]
    """N:4 of a block (keep_m4); returns whether it holds NaN."""
    return keep_m4(xb, n, ob)


@kernel()
def _block_network(xb, n, m, network, scratch, wide, threshold, tie, ob, ahead):  # type: ignore[no-untyped-def]
    """N:M of a block through the selection network in scratch (keep_network); returns NaN seen."""
    if has_nan(xb):
        return True
    keep_network(xb, n, m, network, scratch, ob)
    return False


def _rows(x, n, m, network, registers, out):  # type: ignore[no-untyped-def]
    """Fill out[r] with the N:M mask of row x[r]; return the first row holding NaN, or -1.

    The template of one parallel kernel per path (_row_kernel): ``_keep_block`` is bound to the
    block kernel of the path. ``network`` is selection_network(n, m) for the network path, and
    ``registers`` says whether the block kernel uses ``wide`` instead of ``scratch``. Full groups go
    through ``_keep_block`` in blocks of about BLOCK_VALUES entries, each checked for NaN on the way
    (while it is in cache); the rest of the row through quickselect.
    """
    rows, length = x.shape
    full = length - length % m if m <= NETWORK_MAX_M else 0
    step = max(1, BLOCK_VALUES // m) * m
    chunks = min(rows, ROW_CHUNKS)
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
                # the block to prefetch: the next one of this row, or the first of the next row
                ahead = xr[stop : min(stop + step, full)]
                if stop == full and r + 1 < last:
                    ahead = x[r + 1, :step]
                block = xr[start:stop]
                nan = _keep_block(block, n, m, network, scratch, wide, threshold, tie, outr[start:stop], ahead)  # noqa: F821
                if nan:
                    break
            nan = nan or has_nan(xr[full:])
            if not nan:
                for start in range(full, length, m):
                    stop = min(start + m, length)
                    keep_by_threshold(xr[start:stop], min(n, stop - start), buf, outr[start:stop])
            nan_in_row[r] = nan
    for r in range(rows):
        if nan_in_row[r]:
            return r
    return -1


@functools.cache
def _row_kernel(path: tuple[int, int] | str, parallel: bool) -> Any:
    """The row kernel of a path: "m4", "network" (any other m, and quickselect alone for m > 64),
    or a float32 (n, m) of _REGISTER_PATTERNS; parallel, or serial for inputs too small to share."""
    if path == "m4":
        block = _block_m4
    elif path == "network":
        block = _block_network
    else:
        n, m = path  # type: ignore[misc,str-unpack]
        template = _pairs_block if m == 32 else _registers_block
        block = specialise(template, f"_block_{n}_{m}", _select=_register_kernel(n, m))
    name = path if isinstance(path, str) else f"{path[0]}_{path[1]}"
    if not parallel:
        return specialise(_rows, f"_rows_{name}_serial", _keep_block=block)
    return specialise(_rows, f"_rows_{name}", parallel=True, _keep_block=block)


# Grouping along axis 0 of a C-contiguous 2-D array: a group is m consecutive ROWS, compared elementwise
# across columns, so every step is a loop over contiguous columns and nothing is transposed. Blocks of
# _COL_BLOCK columns of the m rows are copied into scratch[j, c] and run through the same selection
# network as the row path (every comparator one vectorised loop over columns).
_COL_BLOCK = 1024


@kernel()
def _col_block_m4(x, r0, n, m, network, scratch, tie, colbuf, colout, out):  # type: ignore[no-untyped-def]
    """N:4 of rows r0 .. r0 + 3 of x, column by column (rank4); returns NaN seen."""
    a, b, c, d = x[r0], x[r0 + 1], x[r0 + 2], x[r0 + 3]
    oa, ob, oc, od = out[r0], out[r0 + 1], out[r0 + 2], out[r0 + 3]
    nan = False
    for k in range(a.size):
        x0, x1, x2, x3 = a[k], b[k], c[k], d[k]
        nan |= (x0 != x0) | (x1 != x1) | (x2 != x2) | (x3 != x3)
        oa[k], ob[k], oc[k], od[k] = rank4(x0, x1, x2, x3, n)
    return nan


@kernel()
def _col_block_network(x, r0, n, m, network, scratch, tie, colbuf, colout, out):  # type: ignore[no-untyped-def]
    """N:M of rows r0 .. r0 + m - 1 of x, column by column: scratch[j, c] = x[r0 + j, c] (contiguous
    copies, NaN checked on the way), the comparators of ``network`` leave the n-th largest of every
    column on wire n - 1 and the next one on wire n; entries >= that threshold are kept, and columns
    where the next one equals it (ties) are redone from the lowest row on. Returns NaN seen."""
    cols = x.shape[1]
    nan = False
    for c0 in range(0, cols, _COL_BLOCK):
        width = min(_COL_BLOCK, cols - c0)
        for j in range(m):
            xr = x[r0 + j]
            for c in range(width):
                v = xr[c0 + c]
                scratch[j, c] = v
                nan |= v != v
        if nan:
            return True
        sort_lanes(scratch, width, network)
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
                    keep_ties_first(colbuf, n, scratch[n - 1, c], colout)
                    for j in range(m):
                        out[r0 + j, c0 + c] = colout[j]
    return False


def _cols(x, n, m, network, out):  # type: ignore[no-untyped-def]
    """out[:, c] = N:M mask of x[:, c] in groups of m consecutive rows; return the first NaN row or -1.

    The template of one parallel kernel per path (_col_kernel), ``_keep_col_block`` bound to
    _col_block_m4 or _col_block_network for the full blocks of m rows. A padded last block and
    m > NETWORK_MAX_M gather each column of the block and use quickselect.
    """
    rows, cols = x.shape
    blocks = (rows + m - 1) // m
    full = rows // m if m <= NETWORK_MAX_M else 0
    chunks = min(blocks, ROW_CHUNKS)
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
            if b < full:
                nan = _keep_col_block(x, r0, n, m, network, scratch, tie, colbuf, colout, out)  # noqa: F821
            else:
                for c in range(cols):
                    for j in range(length):
                        v = x[r0 + j, c]
                        colbuf[j] = v
                        nan |= v != v
                    if nan:
                        break
                    keep_by_threshold(colbuf[:length], min(n, length), buf, colout[:length])
                    for j in range(length):
                        out[r0 + j, c] = colout[j]
            nan_in_block[b] = nan
    for b in range(blocks):
        if nan_in_block[b]:
            return b * m
    return -1


@functools.cache
def _col_kernel(path: str, parallel: bool) -> Any:
    """The column kernel of a path, "m4" or "network"; parallel, or serial for small inputs."""
    block = _col_block_m4 if path == "m4" else _col_block_network
    if not parallel:
        return specialise(_cols, f"_cols_{path}_serial", _keep_col_block=block)
    return specialise(_cols, f"_cols_{path}", parallel=True, _keep_col_block=block)


def _path(dtype: np.dtype, n: int, m: int, parallel: bool) -> tuple[int, int] | str:
    """Which kernel handles full groups of (n, m) for scores of ``dtype``. The register networks
    are for large inputs only: their straight-line code takes seconds to compile (16:32 about 3 s),
    which a small input would pay for nothing."""
    if m == 4:
        return "m4"
    if parallel and dtype == np.float32 and (n, m) in _REGISTER_PATTERNS:
        return (n, m)
    return "network"


def _mask_rows(x2: np.ndarray, n: int, m: int, out: np.ndarray) -> int:
    """N:M mask of the rows of the 2-D scores ``x2`` into out; return the first row holding NaN, or
    -1. Inputs below NM_PARALLEL_MIN entries run a serial kernel (waking the thread pool costs more
    than they take, and the serial kernel compiles in a fraction of the time)."""
    parallel = x2.size >= NM_PARALLEL_MIN
    path = _path(x2.dtype, n, m, parallel)
    network = selection_network(n, m) if path == "network" and m <= NETWORK_MAX_M else _NO_NETWORK
    return int(_row_kernel(path, parallel)(x2, n, m, network, not isinstance(path, str), out))


def _mask_cols(x: np.ndarray, n: int, m: int, out: np.ndarray) -> int:
    """N:M mask along axis 0 of the C-contiguous 2-D ``x`` into out; return the first NaN row or -1."""
    path = "m4" if m == 4 else "network"
    network = selection_network(n, m) if path == "network" and m <= NETWORK_MAX_M else _NO_NETWORK
    return int(_col_kernel(path, x.size >= NM_PARALLEL_MIN)(x, n, m, network, out))


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
    return _nm_mask(scores, n, m, axis, pad, "scores")


def _nm_mask(scores: Any, n: Any, m: Any, axis: Any, pad: Any, name: str) -> np.ndarray:
    """:func:`nm_mask`, naming its input ``name`` in errors (``weights`` for :func:`magnitude_mask`)."""
    n, m = check_nm(n, m)
    x = as_scores(scores, name)
    axis = check_axis(axis, x.ndim)
    check_group_length(x.shape[axis], m, axis, pad)
    if m > x.shape[axis] > 0:
        # one padded group shorter than m: the same as a full group of its length keeping min(n, length),
        # and kernels size their scratch by m (m = 2**40 would otherwise allocate terabytes)
        n, m = min(n, x.shape[axis]), x.shape[axis]
    if x.ndim == 2 and axis == 0 and x.flags.c_contiguous:
        # groups of m consecutive rows, compared across contiguous columns: no transposed copy
        out = np.empty(x.shape, dtype=np.bool_)
        if out.size and _mask_cols(x, n, m, out) >= 0:
            reject_nan(x, name)
        return out
    x2, moved_shape = rows_along(x, axis)
    out = np.empty(x2.shape, dtype=np.bool_)
    if out.size and _mask_rows(x2, n, m, out) >= 0:
        reject_nan(x, name)  # rare path: locate the NaN in the caller's coordinates
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
    absw = np.abs(w)
    if absw.dtype == np.int64:
        absw = absw.view(np.uint64)  # exact: np.abs(-2**63) wraps to -2**63, which is 2**63 as uint64
    return _nm_mask(absw, n, m, axis, pad, "weights")


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
    exact = check_bool(exact, "exact")
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


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        for rows in (4, NM_PARALLEL_MIN // 16):  # the serial and the parallel kernels
            x = np.arange(16 * rows, dtype=dtype).reshape(rows, 16)
            nm_mask(x, 2, 4)
            nm_mask(x, 4, 16)
            nm_mask(x, 2, 4, axis=0)
