"""Mask diversity: how many masks a sparsity structure allows for a tensor (seed: Hubara et al. 2021).

Mask diversity (MD) counts the masks that a structure allows for a tensor of ``T`` entries at a given
density; the seed paper uses it to predict how much accuracy a structure costs (more masks, more
freedom to keep the important weights). Counts are astronomically large for real layers, so every
result carries ``log10`` (computed in log space, never overflowing) and the exact Python ``int``
only when it is reasonably sized or requested.

=================  ==========================================================================
kind               number of masks (``T`` entries, ``k`` kept)
=================  ==========================================================================
``unstructured``   ``C(T, k)``
``block``          ``C(B, k_B)`` for ``B`` blocks of ``bh x bw`` entries, ``k_B`` blocks kept
``nm``             ``C(m, n) ** (T / m)``
``transposable``   ``K(m, n) ** (T / m**2)``, ``K`` = number of ``m x m`` 0/1 matrices with every
                   row and column sum ``n`` (:func:`transposable_tile_count`)
``fanin``          ``C(f, k) ** rows`` for rows of fan-in ``f`` keeping ``k`` each (SRigL)
=================  ==========================================================================
"""

from __future__ import annotations

import functools
import math
import numbers
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nmsolve._validate import check_int, check_nm, choose

__all__ = ["MaskDiversity", "mask_diversity", "transposable_tile_count", "transposable_tile_log10"]

KINDS = ("unstructured", "block", "nm", "transposable", "fanin")

# ``transposable_tile_log10(method="auto")`` and ``mask_diversity`` use the exact dynamic programme up
# to this tile size (K(16, 8) takes about 2 s once, then it is cached) and the asymptotic formula beyond.
EXACT_TILE_MAX_M = 16

# With ``exact=None`` the exact count is built when it has at most this many decimal digits.
MAX_EXACT_DIGITS = 10_000

# With ``exact=True`` the exact count is refused beyond this many decimal digits (a 10**6-digit int is
# about 415 KB and takes a fraction of a second; beyond, time and memory grow without bound).
MAX_EXACT_TRUE_DIGITS = 1_000_000

_LN10 = math.log(10.0)


# --------------------------------------------------------------------------- K(m, n)


def _tile_layers(m: int, n: int, rows: int) -> dict[int, int]:
    """Ways to fill the first ``rows`` rows of an ``m x m`` 0/1 matrix (row sums ``n``), by column state.

    Columns are interchangeable, so a state is the multiset of column *residuals* (ones a column still
    needs): ``c[r]`` columns need ``r`` more, packed as the integer ``sum c[r] * (m + 1) ** r``. The
    value is the number of partial matrices (over all columns) that leave that multiset. A row takes
    ``k_r`` columns from each class ``r`` (``sum k_r = n``, ``C(c_r, k_r)`` ways); classes are visited
    one at a time with the partial state merged between classes, which keeps the work polynomial.
    Columns that need as many ones as rows remain must be taken (pruning dead states early).
    """
    base = m + 1
    power = [base**r for r in range(n + 1)]
    comb = [[math.comb(c, k) for k in range(n + 1)] for c in range(m + 1)]
    layer: dict[int, int] = {m * power[n]: 1}
    for done in range(rows):
        rows_left = m - done  # including the row being placed
        # partial state: (packed counts, columns moved down from the class above, ones still to place)
        partial: dict[tuple[int, int, int], int] = {(state, 0, n): ways for state, ways in layer.items()}
        for r in range(n, 0, -1):
            nxt: dict[tuple[int, int, int], int] = defaultdict(int)
            pr = power[r]
            for (state, carry, left), ways in partial.items():
                c = (state // pr) % base
                if r == rows_left:  # these columns need a one in every remaining row
                    if c > left:
                        continue
                    lo = c
                else:
                    capacity = sum((state // power[q]) % base for q in range(1, r))
                    lo = max(0, left - capacity)
                hi = min(c, left)
                moved = state + carry * pr  # class r ends with c - k + carry columns
                choose = comb[c]
                for k in range(lo, hi + 1):
                    nxt[(moved - k * pr, k, left - k)] += ways * choose[k]
            partial = nxt
        layer = defaultdict(int)
        for (state, carry, left), ways in partial.items():
            if left == 0:
                layer[state + carry] += ways  # class 0 gains the last carry
    return dict(layer)


def _tile_count_dp(m: int, n: int) -> int:
    """K(m, n) by the residual dynamic programme, meeting in the middle (no symmetry shortcut).

    With ``h = m // 2`` rows placed the column sums are ``n - residual``; the remaining ``m - h`` rows
    must supply exactly the residuals, which is the number of ``(m - h)``-row prefixes leaving the
    reversed multiset. Aggregated counts are divided by the number of column vectors per multiset.
    """
    if m == 0 or n == 0 or n == m:
        return 1
    half = m // 2
    first = _tile_layers(m, n, m - half)
    second = first if m - half == half else _tile_layers(m, n, half)
    base = m + 1
    total = 0
    for state, ways in second.items():
        counts = [(state // base**r) % base for r in range(n + 1)]
        mirrored = sum(c * base**r for r, c in enumerate(reversed(counts)))
        other = first.get(mirrored)
        if other:
            vectors = math.factorial(m)
            for c in counts:
                vectors //= math.factorial(c)
            total += ways * other // vectors
    return total


@functools.lru_cache(maxsize=256)
def _tile_count(m: int, n: int) -> int:
    if min(n, m - n) and m > EXACT_TILE_MAX_M:
        raise ValueError(
            f"the exact count K({m}, {n}) is computed only up to m = EXACT_TILE_MAX_M = {EXACT_TILE_MAX_M} "
            "(K(16, 8) already takes seconds and the dynamic programme grows without bound beyond); "
            "use transposable_tile_log10(m, n) for the asymptotic log10"
        )
    return _tile_count_dp(m, min(n, m - n))  # complementing a tile maps K(m, n) onto K(m, m - n)


def _check_tile(m: Any, n: Any) -> tuple[int, int]:
    m = check_int(m, "m", minimum=1)
    n = check_int(n, "n", minimum=0)
    if n > m:
        raise ValueError(f"n must satisfy 0 <= n <= m, got n={n}, m={m}")
    return m, n


def transposable_tile_count(m: int, n: int) -> int:
    """K(m, n): the number of ``m x m`` 0/1 matrices with every row and column sum ``n`` (exact).

    This is the number of valid tiles of a transposable ``n:m`` mask (the mask is N:M along rows and
    columns, so each aligned ``m x m`` tile is such a matrix).

    Parameters
    ----------
    m : int
        Tile size (``m >= 1``).
    n : int
        Ones per row and column (``0 <= n <= m``).

    Returns
    -------
    int
        The exact count (a Python int; 90 for 2:4, 116963796250 for 4:8).

    Notes
    -----
    Dynamic programming over the multiset of column residuals, row by row, with the choice inside a
    row made one residual class at a time, meeting in the middle after ``m // 2`` rows, and using
    ``K(m, n) = K(m, m - n)``. Results are cached. ``m <= 12`` takes milliseconds, ``K(16, 8)`` about
    2 s; the cost grows roughly tenfold per two added to ``m``, so beyond ``m = 16`` it raises ValueError; use
    :func:`transposable_tile_log10`, which switches to an asymptotic formula. Known values: n = 2 is
    OEIS A001499 (1, 6, 90, 2040, 67950, ...), n = 3 is A001501 (1, 24, 2040, 297200, ...).

    References
    ----------
    I. Hubara et al., "Accelerated Sparse Neural Training: A Provable and Efficient Method to Find N:M
    Transposable Masks", NeurIPS 2021.

    Examples
    --------
    >>> transposable_tile_count(4, 2), transposable_tile_count(8, 4)
    (90, 116963796250)
    """
    return _tile_count(*_check_tile(m, n))


def _ln_comb(a: float, b: float) -> float:
    return math.lgamma(a + 1.0) - math.lgamma(b + 1.0) - math.lgamma(a - b + 1.0)


def _tile_log10_asymptotic(m: int, n: int) -> float:
    if n == 0 or n == m:
        return 0.0
    ln = 2 * m * _ln_comb(m, n) - _ln_comb(m * m, n * m) + (m - 1) * math.log1p(-1.0 / m) + 0.5
    return ln / _LN10


def _tile_log10_exact(m: int, n: int) -> float:
    return math.log10(_tile_count(m, n))


_TILE_LOG10_METHODS: dict[str, Callable[[int, int], float]] = {
    "auto": lambda m, n: _tile_log10_exact(m, n) if m <= EXACT_TILE_MAX_M else _tile_log10_asymptotic(m, n),
    "exact": _tile_log10_exact,
    "asymptotic": _tile_log10_asymptotic,
}


def transposable_tile_log10(m: int, n: int, *, method: str = "auto") -> float:
    """``log10 K(m, n)``, exact for ``m <= 16`` and asymptotic beyond (see Notes).

    Parameters
    ----------
    m, n : int
        Tile size and ones per row and column (``0 <= n <= m``).
    method : {"auto", "exact", "asymptotic"}
        ``"auto"`` uses the exact count for ``m <= EXACT_TILE_MAX_M`` (16) and the formula beyond;
        ``"exact"`` always runs the dynamic programme (refused beyond ``m = 16``).

    Returns
    -------
    float

    Notes
    -----
    The asymptotic formula is Canfield and McKay's for dense 0/1 matrices with equal row and column
    sums ``n = lambda m``, specialised to a square matrix::

        ln K(m, n) ~ 2 m ln C(m, n) - ln C(m^2, n m) + (m - 1) ln(1 - 1/m) + 1/2

    The first two terms are the "independent rows and columns" estimate (the probability that ``m``
    random N:M rows also have column sums ``n``); the last two correct it. Against the exact counts
    it over-estimates by at most 4.4% (m = 4, n = 1), 1.0% for every n at m = 16, and 0.1% at
    ``n = m/2``, m = 16 (less than 0.005 in log10); the error shrinks as m grows.

    References
    ----------
    E. R. Canfield and B. D. McKay, "Asymptotic enumeration of dense 0-1 matrices with equal row sums
    and equal column sums", Electron. J. Combin. 12 (2005), R29.

    Examples
    --------
    >>> round(transposable_tile_log10(8, 4), 4)
    11.0681
    >>> abs(transposable_tile_log10(16, 8, method="asymptotic") - transposable_tile_log10(16, 8)) < 0.001
    True
    """
    return choose(_TILE_LOG10_METHODS, method)(*_check_tile(m, n))


# --------------------------------------------------------------------------- mask_diversity


@dataclass(frozen=True)
class MaskDiversity:
    """The number of masks a structure allows for one tensor (see :func:`mask_diversity`).

    Attributes
    ----------
    kind : str
        The structure.
    shape : tuple of int
        The tensor's shape (``(size,)`` when a size was given).
    density : float
        Fraction of entries kept (``1 - sparsity``).
    kept : int
        Number of entries every mask keeps.
    log10 : float
        ``log10`` of the number of masks (never overflows).
    count : int or None
        The exact number of masks, or None when it was not built (too many digits, ``exact=False``,
        or an asymptotic tile count).
    asymptotic : bool
        True when ``log10`` rests on the asymptotic formula for ``K(m, n)`` (transposable, ``m > 16``).
    n, m : int or None
        The pattern (``m`` is the fan-in for ``fanin``), where the kind has one.
    block : tuple of int or None
        Block shape for ``block``.
    """

    kind: str
    shape: tuple[int, ...]
    density: float
    kept: int
    log10: float
    count: int | None = field(repr=False)  # can have thousands of digits; see log10
    asymptotic: bool = False
    n: int | None = None
    m: int | None = None
    block: tuple[int, ...] | None = None

    @property
    def size(self) -> int:
        """Number of entries of the tensor."""
        return math.prod(self.shape)

    @property
    def log10_per_entry(self) -> float:
        """``log10 / size``: diversity per weight, comparable across tensor sizes (0.0 when empty)."""
        return self.log10 / self.size if self.size else 0.0

    def __str__(self) -> str:
        pattern = {
            "nm": f" {self.n}:{self.m}",
            "transposable": f" {self.n}:{self.m}",
            "fanin": f" {self.n} of {self.m}",
        }
        what = f"{self.kind}{pattern.get(self.kind, '')}"
        if self.block is not None:
            what += f" {self.block[0]}x{self.block[1]}"
        approx = "~" if self.asymptotic else ""
        return f"{what} on {self.shape} at density {self.density:g}: {approx}10^{self.log10:.2f} masks"


def _check_shape(shape_or_size: Any) -> tuple[int, ...]:
    if isinstance(shape_or_size, np.ndarray):
        raise TypeError("shape_or_size must be an int or a tuple of ints; for an array pass array.shape")
    if isinstance(shape_or_size, numbers.Integral) and not isinstance(shape_or_size, (bool, np.bool_)):
        return (check_int(shape_or_size, "size", minimum=0),)
    if isinstance(shape_or_size, (tuple, list)) and shape_or_size:
        return tuple(check_int(s, "shape entry", minimum=0) for s in shape_or_size)
    raise TypeError(f"shape_or_size must be an int or a non-empty tuple of ints, got {shape_or_size!r}")


def _matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D view of the grouped structures: (out * prod(kernel), in) as in nmsolve.layout; 1-D: (1, T)."""
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0] * math.prod(shape[2:]), shape[1]


def _whole(value: float, what: str, fix: str) -> int:
    rounded = round(value)
    if abs(value - rounded) > 1e-9 * max(1.0, abs(value)):
        raise ValueError(f"{what} = {value:g} is not a whole number; {fix}")
    return int(rounded)


def _check_density(density: Any) -> float:
    if isinstance(density, (bool, np.bool_)) or not isinstance(density, numbers.Real):
        raise TypeError(f"density must be a real number in [0, 1], got {density!r}")
    density = float(density)
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density (the fraction kept) must lie in [0, 1], got {density}")
    return density


def _kept_of(total: int, density: Any, n: Any, m: Any, what: str) -> int:
    """Number kept out of ``total`` from ``density`` or from ``n / m`` (unstructured and block)."""
    if density is not None and (n is not None or m is not None):
        raise ValueError("pass either density or n and m (density n/m), not both")
    if density is None:
        if n is None or m is None:
            raise ValueError("pass density=... (fraction kept) or n and m (density n/m)")
        n, m = check_nm(n, m)
        if total * n % m:
            raise ValueError(f"{what} * n/m = {total} * {n}/{m} is not a whole number; choose {what} divisible by m")
        return total * n // m
    return _whole(total * _check_density(density), f"{what} * density", f"pick a density that keeps whole {what}")


def _group_n(m: int, n: Any, density: Any) -> int:
    if (n is None) == (density is None):
        raise ValueError("pass exactly one of n (kept per group) and density (n = density * m)")
    if n is None:
        n = _whole(m * _check_density(density), f"density * m = {density} * {m}", "pick a density that is k/m")
        if n == 0:
            raise ValueError(f"density {density} keeps nothing in groups of m={m}; pass a larger density")
    return check_nm(n, m)[0]


def _log10_comb(a: int, b: int) -> float:
    return _ln_comb(a, b) / _LN10


@dataclass(frozen=True)
class _Structure:
    """``base() ** power`` masks; ``log10_base`` = log10 of the base without building it."""

    base: Callable[[], int]
    log10_base: float
    power: int
    density: float
    kept: int
    n: int | None = None
    m: int | None = None
    block: tuple[int, int] | None = None
    asymptotic: bool = False


def _subset_structure(shape: tuple[int, ...], kind: str, n: Any, m: Any, density: Any, block: Any) -> _Structure:
    """unstructured: C(T, k); block: C(B, k_B) over B blocks."""
    total = math.prod(shape)
    rows, cols = _matrix(shape)
    block_shape: tuple[int, int] | None = None
    unit = 1
    if kind == "block":
        if block is None:
            raise ValueError("kind='block' needs block=b (b x b blocks) or block=(bh, bw)")
        pair = (block, block) if isinstance(block, numbers.Integral) else tuple(block)
        if len(pair) != 2:
            raise ValueError(f"block must be an int or a pair (bh, bw), got {block!r}")
        bh, bw = check_int(pair[0], "block", minimum=1), check_int(pair[1], "block", minimum=1)
        block_shape, unit = (bh, bw), bh * bw
        if len(shape) == 1 and total % unit:
            raise ValueError(f"size {total} is not a multiple of the block size {bh}*{bw}={unit}")
        if len(shape) > 1 and (rows % bh or cols % bw):
            raise ValueError(f"the 2-D view {rows}x{cols} does not split into {bh}x{bw} blocks")
    units = total // unit
    kept_units = _kept_of(units, density, n, m, "blocks" if kind == "block" else "entries")
    frac = kept_units / units if units else float(density if density is not None else 1.0)
    return _Structure(
        base=lambda: math.comb(units, kept_units),
        log10_base=_log10_comb(units, kept_units),
        power=1,
        density=frac,
        kept=kept_units * unit,
        block=block_shape,
    )


def _group_structure(shape: tuple[int, ...], kind: str, n: Any, m: Any, density: Any, exact: bool | None) -> _Structure:
    """nm: C(m, n) ** (T / m); transposable: K(m, n) ** (T / m**2)."""
    total = math.prod(shape)
    rows, cols = _matrix(shape)
    if m is None:
        raise ValueError(f"kind={kind!r} needs m (group size) and n or density")
    m = check_int(m, "m", minimum=1)
    n = _group_n(m, n, density)
    common = {"density": n / m, "kept": total // m * n, "n": n, "m": m}
    if kind == "nm":
        if cols % m:
            raise ValueError(f"the grouped axis has length {cols}, not a multiple of m={m}; crop or pad the tensor")
        return _Structure(base=lambda: math.comb(m, n), log10_base=_log10_comb(m, n), power=total // m, **common)
    if len(shape) == 1 and total % (m * m):
        raise ValueError(f"size {total} is not a multiple of m*m={m * m} (whole {m}x{m} tiles)")
    if len(shape) > 1 and (rows % m or cols % m):
        raise ValueError(f"the 2-D view {rows}x{cols} does not split into {m}x{m} tiles")
    if exact is True and m > EXACT_TILE_MAX_M:
        raise ValueError(
            f"exact=True needs the exact tile count K({m}, {n}), whose dynamic programme is practical only up to "
            f"m = {EXACT_TILE_MAX_M}; pass exact=None for the asymptotic log10 (or call "
            "transposable_tile_count directly if you are prepared to wait)"
        )
    asymptotic = m > EXACT_TILE_MAX_M and exact is not True
    return _Structure(
        base=lambda: _tile_count(m, n),
        log10_base=transposable_tile_log10(m, n, method="asymptotic" if asymptotic else "exact"),
        power=total // (m * m),
        asymptotic=asymptotic,
        **common,
    )


def _fanin_structure(shape: tuple[int, ...], n: Any, m: Any, density: Any) -> _Structure:
    """fanin: C(f, k) ** rows."""
    total = math.prod(shape)
    if len(shape) == 1:
        if m is None:
            raise ValueError("kind='fanin' with a size (or 1-D shape) needs m, the fan-in of a row")
        fan_in = check_int(m, "m", minimum=1)
        if total % fan_in:
            raise ValueError(f"size {total} is not a multiple of the fan-in m={fan_in}")
        rows = total // fan_in
    else:
        rows, fan_in = shape[0], math.prod(shape[1:])
        if m is not None and check_int(m, "m") != fan_in:
            raise ValueError(f"m={m} does not match the fan-in prod(shape[1:]) = {fan_in}; leave m out")
    if (n is None) == (density is None):
        raise ValueError("kind='fanin' needs exactly one of n (inputs kept per row) and density")
    if n is None:
        n = _whole(fan_in * _check_density(density), f"density * fan-in = {density} * {fan_in}", "pick k/fan-in")
    else:
        n = check_int(n, "n", minimum=0)
        if n > fan_in:
            raise ValueError(f"n must satisfy 0 <= n <= fan-in, got n={n}, fan-in={fan_in}")
    return _Structure(
        base=lambda: math.comb(fan_in, n),
        log10_base=_log10_comb(fan_in, n),
        power=rows,
        density=n / fan_in if fan_in else 1.0,
        kept=rows * n,
        n=n,
        m=fan_in,
    )


def mask_diversity(
    shape_or_size: Any,
    kind: str,
    *,
    n: int | None = None,
    m: int | None = None,
    density: float | None = None,
    block: int | tuple[int, int] | None = None,
    exact: bool | None = None,
) -> MaskDiversity:
    """Number of masks (mask diversity) a sparsity structure allows for a tensor, exact and in log10.

    Parameters
    ----------
    shape_or_size : int or tuple of int
        The tensor's shape, or its number of entries. Shapes of 2 or more dimensions are read like
        weights: ``(out, in)`` or ``(out, in, *kernel)``, grouped along ``in`` on the channel-last
        view ``(out * prod(kernel), in)`` (as :func:`nmsolve.weight_to_2d`); the fan-in of a row is
        ``prod(shape[1:])``. A size (or 1-D shape) is one row of ``T`` entries.
    kind : {"unstructured", "block", "nm", "transposable", "fanin"}
        The structure; see the module docstring for each formula.
    n, m : int, optional
        ``nm`` and ``transposable``: keep ``n`` of every ``m`` (``density`` may replace ``n``).
        ``fanin``: ``n`` inputs kept per row (or ``density``); ``m`` is the fan-in, needed only with
        a size. ``unstructured`` and ``block``: ``n`` and ``m`` may replace ``density`` by ``n/m``,
        to compare structures at the same sparsity.
    density : float, optional
        Fraction of entries kept, ``1 - sparsity``. The number kept must come out whole.
    block : int or (int, int), optional
        ``block`` kind: blocks of ``b x b`` (int) or ``bh x bw`` entries on the 2-D view; for a size,
        blocks of ``b`` (or ``bh * bw``) consecutive entries.
    exact : bool or None, default None
        Build the exact count: None when it has at most ``MAX_EXACT_DIGITS`` (10 000) digits, True
        up to ``MAX_EXACT_TRUE_DIGITS`` (10**6) digits and tiles up to ``m = 16`` (beyond either limit
        it raises ValueError rather than run unbounded), False never.

    Returns
    -------
    MaskDiversity
        ``log10``, ``count`` (int or None), ``density``, ``kept`` and the pattern.

    Raises
    ------
    ValueError
        Unknown kind, shape not divisible into groups / tiles / blocks, a density that does not keep a
        whole number of entries, ``n > m``, missing or conflicting parameters.
    TypeError
        Non-integer shape, ``n`` or ``m``.

    Notes
    -----
    ``log10`` is computed in log space (``lgamma``), or from the exact count when one is built, so a
    4096 x 4096 layer costs microseconds. Transposable counts use the exact tile count ``K(m, n)``
    (:func:`transposable_tile_count`) up to ``m = 16`` and Canfield and McKay's asymptotic formula
    beyond (``asymptotic=True``; see :func:`transposable_tile_log10` for its accuracy).

    References
    ----------
    I. Hubara et al., "Accelerated Sparse Neural Training: A Provable and Efficient Method to Find N:M
    Transposable Masks", NeurIPS 2021 (mask diversity). U. Evci et al. / M. Lasby et al., "Dynamic
    Sparse Training with Structured Sparsity" (SRigL), ICLR 2024 (constant fan-in).

    Examples
    --------
    >>> mask_diversity((4, 4), "transposable", n=2, m=4).count
    90
    >>> mask_diversity((4, 4), "nm", n=2, m=4).count  # 6 ** 4
    1296
    >>> mask_diversity((4, 4), "unstructured", density=0.5).count  # C(16, 8)
    12870
    >>> big = mask_diversity((4096, 4096), "nm", n=2, m=4)
    >>> big.count is None, round(big.log10)
    (True, 3263803)
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if exact is not None and not isinstance(exact, (bool, np.bool_)):
        raise TypeError(f"exact must be None, True or False, got {exact!r}")
    if block is not None and kind != "block":
        raise ValueError(f"block=... applies to kind='block' only, got kind={kind!r}")
    shape = _check_shape(shape_or_size)
    if kind in ("unstructured", "block"):
        s = _subset_structure(shape, kind, n, m, density, block)
    elif kind in ("nm", "transposable"):
        s = _group_structure(shape, kind, n, m, density, exact)
    else:
        s = _fanin_structure(shape, n, m, density)
    # every structure counts base ** power masks; log10 in log space unless the int is built
    log10 = s.power * s.log10_base
    count: int | None = None
    asymptotic = s.asymptotic
    if exact and log10 > MAX_EXACT_TRUE_DIGITS:
        raise ValueError(
            f"exact=True would build a count of about {log10:.4g} decimal digits, more than the limit of "
            f"MAX_EXACT_TRUE_DIGITS = {MAX_EXACT_TRUE_DIGITS}; pass exact=None (or False) and use .log10"
        )
    if exact or (exact is None and not asymptotic and log10 <= MAX_EXACT_DIGITS):
        count = s.base() ** s.power
        log10 = math.log10(count)
        asymptotic = False
    return MaskDiversity(
        kind=kind,
        shape=shape,
        density=s.density,
        kept=s.kept,
        log10=float(max(log10, 0.0)),
        count=count,
        asymptotic=asymptotic,
        n=s.n,
        m=s.m,
        block=s.block,
    )
