"""Fused one-pass kernels for the per-step mask refresh of the training methods (N:4, CPU float).

The torch hooks call these on zero-copy numpy views of contiguous CPU float32/float64 tensors; any
other tensor takes the generic torch path. Each kernel reads the weight once and writes the masks
and the masked weights in the same pass, so a refresh costs one read of ``W`` plus the writes it
cannot avoid.

* :func:`nm4_into`: the magnitude N:4 mask of ``W`` along its last axis, ``W * mask`` and optionally
  the SR-STE term ``decay * (1 - mask) * W`` (SR-STE).
* :func:`masked_term_into`: ``W * mask`` and the SR-STE term for a fixed mask (transposable).
* :func:`bimask4_into`: Bi-Mask's forward mask ``F`` (N:4 along ``in``), its backward mask ``B``
  (N:4 along ``out`` in permuted row order, on ``|W * F|``, intersected with ``F``), ``W * F``,
  ``W * B`` and the SR-STE term ``decay * (1 - F) * W``, from 4 x 4 tiles of permuted rows. Its
  masks are uint8, a quarter of the bytes to write of float masks.

Both rank the entries of a group by pairwise comparison: an entry is kept when fewer than ``n``
entries beat it, where a later entry beats it when strictly larger and an earlier entry when larger
or equal (ties keep the lower index, as :func:`nmsolve.nm_mask` does). The masks are exactly those
of :func:`nmsolve.nm_mask` and :func:`nmsolve.bimask_masks`; the masked weights are the products
``w * 1.0`` / ``w * 0.0`` that torch's ``weight * mask`` computes.
"""

from __future__ import annotations

import numpy as np

from nmsolve._jit import TRAINING_PARALLEL_MIN, kernel, prange, threads_for
from nmsolve._kernels import rank4
from nmsolve._validate import raise_nan

_CHUNKS = 64


@kernel()
def _nm4_row(wr, n, mr, sr, kr, tr, decay, one, zero):  # type: ignore[no-untyped-def]
    """One row: mr = N:4 of |wr| (0/1), sr = wr * mr and, unless None, kr = |wr| * mr and
    tr = decay * (1 - mr) * wr. Returns NaN seen.

    Whether kr and tr are None is known at compile time (numba prunes the branches).
    """
    nan = False
    for g in range(wr.shape[0] // 4):
        k = 4 * g
        wa, wb, wc, wd = wr[k], wr[k + 1], wr[k + 2], wr[k + 3]
        a, b, c, d = abs(wa), abs(wb), abs(wc), abs(wd)
        nan |= (a != a) | (b != b) | (c != c) | (d != d)
        ka, kb, kc, kd = rank4(a, b, c, d, n)
        fa = one if ka else zero
        fb = one if kb else zero
        fc = one if kc else zero
        fd = one if kd else zero
        mr[k], mr[k + 1], mr[k + 2], mr[k + 3] = ka, kb, kc, kd
        sr[k], sr[k + 1], sr[k + 2], sr[k + 3] = wa * fa, wb * fb, wc * fc, wd * fd
        if kr is not None:
            kr[k] = a if ka else 0.0
            kr[k + 1] = b if kb else 0.0
            kr[k + 2] = c if kc else 0.0
            kr[k + 3] = d if kd else 0.0
        if tr is not None:
            tr[k] = decay * ((one - fa) * wa)
            tr[k + 1] = decay * ((one - fb) * wb)
            tr[k + 2] = decay * ((one - fc) * wc)
            tr[k + 3] = decay * ((one - fd) * wd)
    return nan


@kernel()
def _row(a, r):  # type: ignore[no-untyped-def]
    """Row r of a, or None when a is None (known at compile time)."""
    if a is None:
        return None
    return a[r]


@kernel(parallel=True)
def _nm4(w, n, mask, masked, term, decay):  # type: ignore[no-untyped-def]
    """mask = N:4 of |w| along the last axis (0/1 in mask's dtype), masked = w * mask and, unless
    term is None, term = decay * (1 - mask) * w.

    Returns the first row holding NaN, or -1 (then the outputs are complete).
    """
    rows = w.shape[0]
    chunks = min(rows, _CHUNKS)
    bad = np.zeros(rows, dtype=np.bool_)
    one = w.dtype.type(1)
    zero = w.dtype.type(0)
    for ch in prange(chunks):
        for r in range(ch * rows // chunks, (ch + 1) * rows // chunks):
            bad[r] = _nm4_row(w[r], n, mask[r], masked[r], None, _row(term, r), decay, one, zero)
    for r in range(rows):
        if bad[r]:
            return r
    return -1


@kernel(parallel=True)
def _bimask4(w, n, perm, fmask, bmask, fmasked, bmasked, term, decay):  # type: ignore[no-untyped-def]
    """Bi-Mask F, B, w * F, w * B and, unless term is None, term = decay * (1 - F) * w for m = 4 (rows
    and columns multiples of 4).

    Block b holds rows perm[4b:4b+4]: first F, w * F, the term and the keys |w| * F of its four
    rows (row by row, as _nm4), then B column by column over the four key rows (N:4 in permuted order, AND F)
    and w * B, while the block is still in cache. Returns a block holding NaN, or -1. Whether term is
    None is known at compile time (numba prunes the branch).
    """
    rows, cols = w.shape
    blocks = rows // 4
    chunks = min(blocks, _CHUNKS)
    bad = np.zeros(blocks, dtype=np.bool_)
    one = w.dtype.type(1)
    zero = w.dtype.type(0)
    for ch in prange(chunks):
        keys = np.empty((4, cols), dtype=w.dtype)
        for blk in range(ch * blocks // chunks, (ch + 1) * blocks // chunks):
            r0, r1, r2, r3 = perm[4 * blk], perm[4 * blk + 1], perm[4 * blk + 2], perm[4 * blk + 3]
            nan = _nm4_row(w[r0], n, fmask[r0], fmasked[r0], keys[0], _row(term, r0), decay, one, zero)
            nan |= _nm4_row(w[r1], n, fmask[r1], fmasked[r1], keys[1], _row(term, r1), decay, one, zero)
            nan |= _nm4_row(w[r2], n, fmask[r2], fmasked[r2], keys[2], _row(term, r2), decay, one, zero)
            nan |= _nm4_row(w[r3], n, fmask[r3], fmasked[r3], keys[3], _row(term, r3), decay, one, zero)
            bad[blk] = nan
            if nan:
                continue
            w0, w1, w2, w3 = w[r0], w[r1], w[r2], w[r3]
            b0, b1, b2, b3 = bmask[r0], bmask[r1], bmask[r2], bmask[r3]
            s0, s1, s2, s3 = bmasked[r0], bmasked[r1], bmasked[r2], bmasked[r3]
            k0, k1, k2, k3 = keys[0], keys[1], keys[2], keys[3]
            f0, f1, f2, f3 = fmask[r0], fmask[r1], fmask[r2], fmask[r3]
            for j in range(cols):
                ka, kb, kc, kd = rank4(k0[j], k1[j], k2[j], k3[j], n)
                ka &= f0[j] != 0  # B is a subset of F (a zero weight inside F ties with the pruned ones)
                kb &= f1[j] != 0
                kc &= f2[j] != 0
                kd &= f3[j] != 0
                b0[j], b1[j], b2[j], b3[j] = ka, kb, kc, kd
                ba = one if ka else zero
                bb = one if kb else zero
                bc = one if kc else zero
                bd = one if kd else zero
                s0[j], s1[j], s2[j], s3[j] = w0[j] * ba, w1[j] * bb, w2[j] * bc, w3[j] * bd
    for blk in range(blocks):
        if bad[blk]:
            return blk
    return -1


@kernel(parallel=True)
def _masked_term(w, mask, masked, term, decay):  # type: ignore[no-untyped-def]
    """masked = w * mask and term = decay * (1 - mask) * w over flat arrays (mask holds 0/1)."""
    one = w.dtype.type(1)
    for i in prange(w.shape[0]):
        v, f = w[i], mask[i]
        masked[i] = v * f
        term[i] = decay * ((one - f) * v)


def _check(arrays: tuple[np.ndarray, ...], masks: tuple[np.ndarray, ...] = (), group: int = 4) -> None:
    """``arrays`` (the weight first, 2-D, its last axis a multiple of ``group``) share shape and dtype;
    ``masks`` share the shape, as uint8."""
    first = arrays[0]
    if first.ndim != 2 or first.shape[1] % group:
        raise ValueError(f"expected a 2-D array whose last axis is a multiple of {group}, got shape {first.shape}")
    for group_arrays, dtype in ((arrays, first.dtype), (masks, np.dtype(np.uint8))):
        for a in group_arrays:
            if a.shape != first.shape or a.dtype != dtype or not a.flags.c_contiguous:
                raise ValueError(
                    "weight, masks and masked weights must be C-contiguous arrays of one shape, in the "
                    "weight's dtype (Bi-Mask's masks: uint8)"
                )


def nm4_into(
    weight: np.ndarray,
    n: int,
    mask: np.ndarray,
    masked: np.ndarray,
    term: np.ndarray | None = None,
    decay: float = 0.0,
) -> None:
    """Fill ``mask`` (0/1) with the N:4 magnitude mask of ``weight`` along its last axis,
    ``masked`` with ``weight * mask`` and, if ``term`` is given, ``term`` with the SR-STE term
    ``decay * (1 - mask) * weight``, in one pass. NaN raises ``ValueError`` (outputs then undefined)."""
    _check((weight, mask, masked) + (() if term is None else (term,)))
    with threads_for(weight.size, TRAINING_PARALLEL_MIN):
        bad = _nm4(weight, n, mask, masked, term, weight.dtype.type(decay))
    if bad >= 0:
        raise_nan("weight", np.argwhere(np.isnan(weight))[0])


def masked_term_into(weight: np.ndarray, mask: np.ndarray, masked: np.ndarray, term: np.ndarray, decay: float) -> None:
    """``masked = weight * mask`` and ``term = decay * (1 - mask) * weight`` (the SR-STE term) in one
    pass, for a fixed 0/1 mask (transposable training). C-contiguous 2-D arrays of one shape and dtype."""
    _check((weight, mask, masked, term), group=1)
    with threads_for(weight.size, TRAINING_PARALLEL_MIN):
        flat = [a.reshape(-1) for a in (weight, mask, masked, term)]
        _masked_term(flat[0], flat[1], flat[2], flat[3], weight.dtype.type(decay))


def bimask4_into(
    weight: np.ndarray,
    n: int,
    perm: np.ndarray,
    fmask: np.ndarray,
    bmask: np.ndarray,
    fmasked: np.ndarray,
    bmasked: np.ndarray,
    term: np.ndarray | None = None,
    decay: float = 0.0,
) -> None:
    """Bi-Mask's ``F``, ``B`` (see :func:`nmsolve.bimask_masks`, m = 4; uint8 0/1), ``weight * F``,
    ``weight * B`` and, if ``term`` is given, ``term = decay * (1 - F) * weight`` (the SR-STE
    gradient term), in one pass over ``weight`` [out, in] (both multiples of 4). NaN raises."""
    _check((weight, fmasked, bmasked) + (() if term is None else (term,)), (fmask, bmask))
    if weight.shape[0] % 4:
        raise ValueError(f"Bi-Mask needs rows that are a multiple of 4, got shape {weight.shape}")
    p = np.ascontiguousarray(perm, dtype=np.int64)
    if p.shape != (weight.shape[0],):
        raise ValueError(f"perm must have shape ({weight.shape[0]},), got {p.shape}")
    with threads_for(weight.size, TRAINING_PARALLEL_MIN):
        bad = _bimask4(weight, n, p, fmask, bmask, fmasked, bmasked, term, weight.dtype.type(decay))
    if bad >= 0:
        raise_nan("weight", np.argwhere(np.isnan(weight))[0])


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        for rows, cols in ((4, 8), (4, TRAINING_PARALLEL_MIN // 4)):
            w = np.arange(rows * cols, dtype=dtype).reshape(rows, cols)
            nm4_into(w, 2, np.empty_like(w), np.empty_like(w))
            nm4_into(w, 2, np.empty_like(w), np.empty_like(w), np.empty_like(w), 1e-4)
            masked_term_into(w, np.ones_like(w), np.empty_like(w), np.empty_like(w), 1e-4)
            f, b = (np.empty(w.shape, np.uint8) for _ in range(2))
            sf, sb, term = (np.empty_like(w) for _ in range(3))
            bimask4_into(w, 2, np.arange(rows), f, b, sf, sb)
            bimask4_into(w, 2, np.arange(rows), f, b, sf, sb, term, 1e-4)
