import math
from fractions import Fraction
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nmsolve
from nmsolve import transposable as tp
from nmsolve.transposable import _approx, _mcf, _tiles
from tests.reference import (
    greedy_tile,
    tile_objectives,
    tiles,
    transposable_groups_ok,
    transposable_optimum_bruteforce,
    transposable_optimum_lp,
    valid_tiles,
)

ROOT = Path(__file__).resolve().parents[1]
EXACT = ["mcf", "networkx", "ortools"]

# A tile where the plain greedy keeps 16, 15, 13, 12, 11, 10, 6 and then has no edge left for
# row 2 and column 1: it is one entry short.
UNDERFILL = np.array([[16.0, 8, 11, 2], [15, 7, 5, 12], [14, 13, 1, 9], [4, 3, 6, 10]])


def matrices(kind, shape, rng):
    """Test matrices of many kinds (signed, so that magnitudes matter)."""
    if kind == "gaussian":
        return rng.standard_normal(shape)
    if kind == "uniform":
        return rng.uniform(-1, 1, shape)
    if kind == "heavy":
        return rng.standard_cauchy(shape)
    if kind == "ties":
        return rng.integers(-3, 4, shape).astype(np.float64)
    if kind == "equal":
        return np.full(shape, -2.5)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "huge_tiny":
        exponents = rng.choice([-320, -300, -30, 0, 30, 300, 307], size=shape)
        return rng.uniform(1, 9, shape) * 10.0 ** exponents.astype(np.float64)
    raise ValueError(kind)


KINDS = ["gaussian", "uniform", "heavy", "ties", "equal", "zeros", "huge_tiny"]


# --------------------------------------------------------------------------- hooks into the kernels
# Paths that transposable_mask does not take on its own, reached through the package's modules.


def mcf_generic(W, n, m):
    """The primal-dual solver even for m = 4 (where ``mcf`` enumerates), for cross-checks."""
    x, n, m = tp._check_matrix(W, n, m, pad=True)
    return _mcf.primal_dual_mask(x, n, m, False)


def approx_with_stats(W, n, m):
    """``approx`` mask and how many tiles fell back to the exact solver."""
    x, n, m = tp._check_matrix(W, n, m, pad=True)
    if x.size == 0:
        return np.zeros(x.shape, dtype=bool), 0
    return _approx.approx_tiles(x, n, m)


def stage_mask(W, n, m, stage):
    """approx one tile at a time, up to a stage: 0 the greedy b-matching, 1 repaired, 2 the method
    (for m = 4, the scalar path that the vectorised one must match), 3 its exact fallback on every tile."""
    x, n, m = tp._check_matrix(W, n, m, pad=True)
    solve, net = _approx.scalar_solver(x), _tiles.network(m)

    def chunk(out, t0, t1, tiles_per_row):
        return _approx.run_tiles(x, n, m, solve, out, t0, t1, tiles_per_row, n, m, net, stage)

    return _tiles.solve_chunks(x, n, m, "approx", False, chunk)[0]


def rounding_slack(x, m):
    """Per tile, what float64 sums over the tile may lose: a few ulps of its largest magnitude per
    term (that magnitude times m*m + 1 when the tile holds inf, which the solvers count as such)."""
    out = []
    for tile in tiles(np.abs(np.asarray(x, dtype=np.float64)), m):
        finite = tile[np.isfinite(tile)]
        top = Fraction(float(finite.max())) if finite.size else Fraction(0)
        if np.isinf(tile).any():
            top *= m * m + 1
        out.append(top * m * m * Fraction(2) ** -50)
    return out


def close_objectives(got, want, x, m, rtol=1e-12):
    """Per tile: the same number of infinite entries kept, and exact finite sums within rtol plus the
    rounding of float64 sums over that tile (the solvers are exact up to that)."""
    assert len(got) == len(want)
    for (gi, gf), (wi, wf), slack in zip(got, want, rounding_slack(x, m), strict=True):
        assert gi == wi, (got, want)
        assert abs(gf - wf) <= Fraction(rtol) * abs(wf) + slack, (float(gf), float(wf))


# --------------------------------------------------------------------------- exactness against oracles


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_mcf_equals_bruteforce_on_every_4x4_tile(kind, n):
    rng = np.random.default_rng(n * 10 + KINDS.index(kind))
    x = matrices(kind, (8, 24), rng)
    want = transposable_optimum_bruteforce(x, n)
    for mask in (nmsolve.transposable_mask(x, n, 4), mcf_generic(x, n, 4)):  # enumeration, primal-dual
        assert transposable_groups_ok(mask, n, 4)
        close_objectives(tile_objectives(x, mask, 4), want, x, 4)


def test_bruteforce_table_sizes():
    assert [len(valid_tiles(n, 4)) for n in (1, 2, 3)] == [24, 90, 24]
    assert len(valid_tiles(1, 3)) == 6 and len(valid_tiles(2, 5)) == 2040


@pytest.mark.parametrize("kind", KINDS[:-1])
@pytest.mark.parametrize(("n", "m"), [(1, 8), (3, 8), (4, 8), (7, 8), (4, 16), (8, 16), (13, 16), (2, 5), (16, 32)])
def test_mcf_equals_lp_optimum(kind, n, m):
    rng = np.random.default_rng(n * 100 + m + KINDS.index(kind))
    x = matrices(kind, (m, 3 * m) if m <= 16 else (m, m), rng)
    mask = nmsolve.transposable_mask(x, n, m)
    assert transposable_groups_ok(mask, n, m)
    got = np.array([float(f) for _, f in tile_objectives(x, mask, m)])
    np.testing.assert_allclose(got, transposable_optimum_lp(x, n, m), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (3, 8), (8, 16)])
def test_reference_backends_agree_with_mcf(n, m):
    rng = np.random.default_rng(m + n)
    x = rng.standard_normal((2 * m, 2 * m)).astype(np.float32)
    objectives = {method: tile_objectives(x, nmsolve.transposable_mask(x, n, m, method=method), m) for method in EXACT}
    # integer-scaled costs resolve each tile to max|W| / 2**30 (documented), far finer than these gaps
    close_objectives(objectives["networkx"], objectives["mcf"], x, m, rtol=1e-7)
    close_objectives(objectives["ortools"], objectives["mcf"], x, m, rtol=1e-7)


def test_reference_backends_with_ties_and_inf():
    x = np.array(matrices("ties", (8, 8), np.random.default_rng(7)))
    x[1, 2] = x[5, 6] = -np.inf
    want = transposable_optimum_bruteforce(x, 2)
    for method in EXACT:
        close_objectives(tile_objectives(x, nmsolve.transposable_mask(x, 2, 4, method=method), 4), want, x, 4)


def test_infinite_magnitudes_are_kept_first():
    x = np.random.default_rng(3).standard_normal((8, 16))
    x[0, :3] = np.inf  # three in one row group: only n = 2 can be kept
    x[1:4, 5] = -np.inf  # three in one column group
    x[6, 9] = np.inf
    x[4:8, 12:16] = np.inf  # a whole tile
    for n in (1, 2, 3):
        want = transposable_optimum_bruteforce(x, n)
        for mask in (nmsolve.transposable_mask(x, n, 4), mcf_generic(x, n, 4)):
            close_objectives(tile_objectives(x, mask, 4), want, x, 4)
    y = np.random.default_rng(4).standard_normal((16, 16))
    y[::3, 1::2] = np.inf
    mask = nmsolve.transposable_mask(y, 4, 8)
    assert nmsolve.is_transposable(mask, 4, 8, exact=True)
    counts = [(np.isinf(t) & k).sum() for t, k in zip(tiles(y, 8), tiles(mask, 8), strict=True)]
    assert counts == [(np.isinf(t)).sum() for t in tiles(y, 8)]  # every inf fits (<= 4 per row and column)


@pytest.mark.parametrize(("n", "m", "count"), [(4, 8, 80), (3, 8, 70), (8, 16, 40)])
def test_mcf_batches_mixing_fast_loads_reloads_and_ties(n, m, count):
    # one row of `count` tiles: full batches and a remainder; in them a tile of integer ties (rows
    # tied at their threshold), a tile scaled by 2**300 (reloaded and rescaled) and ordinary tiles
    rng = np.random.default_rng(n + m)
    x = rng.standard_normal((m, m * count))
    x[:, 3 * m : 4 * m] = rng.integers(-2, 3, (m, m))
    x[:, (count - 7) * m : (count - 6) * m] *= 2.0**300
    mask = nmsolve.transposable_mask(x, n, m)
    assert transposable_groups_ok(mask, n, m)
    x[:, (count - 7) * m : (count - 6) * m] /= 2.0**300  # exact: the same masks are optimal
    got = np.array([float(f) for _, f in tile_objectives(x, mask, m)])
    np.testing.assert_allclose(got, transposable_optimum_lp(x, n, m), rtol=1e-9, atol=1e-12)


def test_huge_magnitudes_do_not_overflow():
    x = np.full((8, 8), 1.7e308)
    x[::2, ::3] = -np.finfo(np.float64).max
    x[1, 1] = 5e-324
    for n, m in [(2, 4), (4, 8), (3, 8)]:
        for method in ("mcf", "approx"):
            mask = nmsolve.transposable_mask(x, n, m, method=method)
            assert nmsolve.is_transposable(mask, n, m, exact=True)
        lp = transposable_optimum_lp(x / 1e300, n, m)
        got = [float(f / 10**300) for _, f in tile_objectives(x, nmsolve.transposable_mask(x, n, m), m)]
        np.testing.assert_allclose(got, lp, rtol=1e-9)


def test_all_equal_tile_and_zeros():
    for n, m in [(2, 4), (4, 8), (5, 16)]:
        for value in (0.0, -3.0):
            x = np.full((m, 2 * m), value)
            for method in ("mcf", "approx", "ortools"):
                mask = nmsolve.transposable_mask(x, n, m, method=method)
                assert transposable_groups_ok(mask, n, m)
                assert np.abs(x)[mask].sum() == abs(value) * n * 2 * m


# --------------------------------------------------------------------------- the approximation


def test_greedy_underfills_this_tile_and_approx_repairs_it():
    greedy = stage_mask(UNDERFILL, 2, 4, 0)
    np.testing.assert_array_equal(greedy, greedy_tile(UNDERFILL, 2))
    assert greedy.sum() == 7 and greedy.sum(axis=1).min() == 1 and greedy.sum(axis=0).min() == 1
    assert nmsolve.is_transposable(greedy, 2, 4) and not nmsolve.is_transposable(greedy, 2, 4, exact=True)
    for stage in (1, 2):
        assert nmsolve.is_transposable(stage_mask(UNDERFILL, 2, 4, stage), 2, 4, exact=True)
    approx = nmsolve.transposable_mask(UNDERFILL, 2, 4, method="approx")
    assert nmsolve.is_transposable(approx, 2, 4, exact=True)
    assert UNDERFILL[approx].sum() >= UNDERFILL[greedy].sum()
    assert UNDERFILL[approx].sum() <= UNDERFILL[nmsolve.transposable_mask(UNDERFILL, 2, 4)].sum()


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (3, 4), (4, 8), (3, 8), (8, 16), (2, 5)])
@pytest.mark.parametrize("kind", ["gaussian", "ties", "heavy"])
def test_greedy_stage_equals_sorted_greedy_oracle(n, m, kind):
    x = matrices(kind, (2 * m, 2 * m), np.random.default_rng(n + m))
    got = tiles(stage_mask(x, n, m, 0), m)
    for w, keep in zip(tiles(np.abs(x), m), got, strict=True):
        np.testing.assert_array_equal(keep, greedy_tile(w, n))


def test_forced_exact_fallback_path_is_exact():
    x = np.random.default_rng(5).standard_normal((16, 16))
    for n, m in [(2, 4), (4, 8)]:
        mask = stage_mask(x, n, m, 3)
        close_objectives(tile_objectives(x, mask, m), tile_objectives(x, nmsolve.transposable_mask(x, n, m), m), x, m)


def test_approx_is_close_on_gaussian_tiles():
    # not a benchmark: the 0.5 bound is the guarantee, this only checks the method is sensible
    x = np.random.default_rng(6).standard_normal((64, 64))
    for n, m in [(2, 4), (4, 8), (8, 16)]:
        report = nmsolve.transposable_report(x, n, m, method="approx")
        assert 0.0 <= report.gap < 0.02
        assert approx_with_stats(x, n, m)[1] == 0  # the certificate held on every tile


def approx_m4_fast_and_scalar(x, n):
    """approx at m = 4 through the vectorised kernel (what transposable_mask runs) and through the
    one-tile-at-a-time kernel (stage_mask stage 2): the masks must be identical, bit for bit."""
    fast, _ = approx_with_stats(x, n, 4)
    np.testing.assert_array_equal(fast, stage_mask(x, n, 4, 2))
    return fast


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("kind", [*KINDS, "with_inf", "exchange"])
def test_vectorised_m4_approx_mask_is_the_scalar_one(n, kind):
    # 9 x 1030: two full bands and a partial one; 258 tiles a band, so runs of 256 tiles and a
    # remainder run whose last tile is padded; 8 x 1028: the same without padding (32-bit stores)
    rng = np.random.default_rng(100 + n)
    for shape in [(9, 1030), (8, 1028), (5, 7)]:
        if kind == "with_inf":
            x = rng.standard_normal(shape)
            x[rng.random(shape) < 0.05] = -np.inf
        elif kind == "exchange":  # small integers in which greedy and 2-row exchanges often disagree
            x = rng.integers(0, 9, shape).astype(np.float64) * np.where(rng.random(shape) < 0.5, 1.0, 1.0 + 2**-40)
        else:
            x = matrices(kind, shape, rng)
        for dtype in (np.float64, np.float32):
            with np.errstate(over="ignore"):
                approx_m4_fast_and_scalar(x.astype(dtype), n)


def test_vectorised_m4_greedy_stage_matches_scalar_approx_without_jit_too():
    # small enough for the NUMBA_DISABLE_JIT run (tests/test_package.py): a run of 256 tiles, a
    # remainder run with a padded tile, a padded band; integers, so ties are frequent
    x = matrices("ties", (5, 1030), np.random.default_rng(9))
    for n in (1, 2, 3):
        approx_m4_fast_and_scalar(x, n)


# A 2:4 tile whose greedy b-matching is full and whose exchange pass has a positive gain (from
# differences) while the float64 sum of the kept weights does not grow (27.0 before and after).
ROUNDING_TILE = np.array(
    [
        [float.fromhex(h) for h in row]
        for row in [
            ["0x1.8p+1", "0x1.cp-15", "0x1.80000600000p-29", "0x1p+0"],
            ["0x1.0000000000001p+0", "0x1.8p-50", "0x1.8p-28", "0x1.4p-51"],
            ["0x1.c000000008p-15", "0x1p+3", "0x1p+2", "0x1p+1"],
            ["0x1p+2", "0x1.800000001p-15", "0x1.cp+2", "0x1.8000000000002p+1"],
        ]
    ]
)


def test_vectorised_m4_greedy_stage_defers_a_tile_whose_weight_does_not_grow():
    vals, sv = np.empty((16, 1)), np.empty((16, 1))
    si, keys, code = np.empty((16, 1), dtype=np.int64), np.empty(1, dtype=np.int64), np.empty(1, dtype=np.int64)
    _approx._greedy4_run(ROUNDING_TILE, 0, 0, 1, 2, _tiles.network(16), vals, sv, si, keys, code)
    greedy = stage_mask(ROUNDING_TILE, 2, 4, 0)
    assert nmsolve.is_transposable(greedy, 2, 4, exact=True)  # full: only the weight check defers it
    assert code[0] == 1 and keys[0] == sum(1 << e for e in np.flatnonzero(greedy.ravel()))
    mask = approx_m4_fast_and_scalar(ROUNDING_TILE, 2)
    assert not np.array_equal(mask, greedy)  # the exchange did swap


def test_vectorised_m4_approx_equals_scalar_across_progress_chunks():
    # 130 x 130 tiles is more than PROGRESS_TILES: the second chunk starts inside a band
    x = np.random.default_rng(7).standard_normal((520, 520)).astype(np.float32)
    assert (520 // 4) ** 2 > _tiles.PROGRESS_TILES
    mask = nmsolve.transposable_mask(x, 2, 4, method="approx", progress=True)
    np.testing.assert_array_equal(mask, stage_mask(x, 2, 4, 2))


def test_vectorised_m4_approx_nan_is_an_error():
    for r, c in [(2, 3), (5, 1029), (0, 600)]:  # a vectorised run, the padded last tile, a later run
        x = np.random.default_rng(8).standard_normal((8, 1030))
        x[r, c] = np.nan
        for n in (1, 2, 3):
            with pytest.raises(ValueError, match=rf"W contains NaN \(first at index \({r}, {c}\)\)"):
                nmsolve.transposable_mask(x, n, 4, method="approx", pad=True)


# --------------------------------------------------------------------------- properties

PATTERNS = [(1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4), (2, 5), (3, 6), (4, 8), (3, 8), (8, 16)]


@st.composite
def weight_matrices(draw, patterns=PATTERNS):
    n, m = draw(st.sampled_from(patterns))
    shape = (m * draw(st.integers(1, 2)), m * draw(st.integers(1, 3)))
    elements = draw(
        st.sampled_from(
            [
                st.floats(-1e6, 1e6, allow_nan=False, width=64),
                st.integers(-3, 3).map(float),
                st.sampled_from([0.0, 1.0, -1.0, 2.0, np.inf, -np.inf, 1e300, 1e-300]),
            ]
        )
    )
    return draw(hnp.arrays(np.float64, shape, elements=elements)), n, m


@given(weight_matrices())
# every inf kept and none of the finite rest: approx once passed its certificate on inf's stand-ins
@example((np.array([[np.inf, np.inf, np.inf], [0.0, 1.0, 0.0], [np.inf, np.inf, 0.0]]), 1, 3))
@example((np.pad(np.array([[np.inf, np.inf, np.inf], [0.0, 1.0, 0.0], [np.inf, np.inf, 0.0]]), ((0, 1), (0, 1))), 1, 4))
def test_valid_and_mcf_ge_approx_ge_half_mcf_per_tile(case):
    x, n, m = case
    before = x.copy()
    exact = nmsolve.transposable_mask(x, n, m)
    approx = nmsolve.transposable_mask(x, n, m, method="approx")
    np.testing.assert_array_equal(x, before)  # input never modified
    for mask in (exact, approx):
        assert nmsolve.is_transposable(mask, n, m, exact=True)
        assert transposable_groups_ok(mask, n, m)
    pairs = zip(tile_objectives(x, exact, m), tile_objectives(x, approx, m), rounding_slack(x, m), strict=True)
    for (ei, ef), (ai, af), slack in pairs:
        assert ei >= ai
        if ei > ai:
            continue
        assert af <= ef * Fraction(1 + 1e-12) + slack
        assert af >= ef * Fraction(0.5 - 1e-12) - slack


@given(weight_matrices(patterns=[(1, 4), (2, 4), (3, 4)]))
def test_mcf_equals_bruteforce_property(case):
    x, n, m = case
    close_objectives(
        tile_objectives(x, nmsolve.transposable_mask(x, n, m), m), transposable_optimum_bruteforce(x, n), x, m
    )


@given(weight_matrices(patterns=[(1, 4), (2, 4), (3, 4)]))
def test_vectorised_m4_approx_equals_scalar_property(case):
    x, n, _ = case
    approx_m4_fast_and_scalar(x, n)


@given(weight_matrices(patterns=[(2, 4), (4, 8), (3, 8)]))
def test_exact_backends_agree_property(case):
    x, n, m = case
    got = {method: tile_objectives(x, nmsolve.transposable_mask(x, n, m, method=method), m) for method in EXACT}
    # integer profits round each entry to max|W_tile| / 2**30: near-ties may resolve differently
    for i, (count, value) in enumerate(got["mcf"]):
        scale = np.abs(np.where(np.isinf(tiles(x, m)[i]), 0, tiles(x, m)[i])).max()
        for method in ("networkx", "ortools"):
            other_count, other_value = got[method][i]
            assert other_count == count
            assert abs(other_value - value) <= value * Fraction(1e-12) + Fraction(n * m * scale) * Fraction(2) ** -29


@given(weight_matrices(), st.sampled_from(["mcf", "approx"]))
def test_deterministic_across_calls_threads_and_signs(case, method):
    x, n, m = case
    mask = nmsolve.transposable_mask(x, n, m, method=method)
    np.testing.assert_array_equal(nmsolve.transposable_mask(-x, n, m, method=method), mask)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(nmsolve.transposable_mask(x, n, m, method=method), mask)
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_m4_ties_take_the_first_tile_in_lexicographic_order(n):
    # integers: every sum is exact, so equal weights are real ties; 300 tiles wide covers the
    # vectorised 2:4 scoring (runs of 256 tiles), its remainder and the generic enumeration
    rng = np.random.default_rng(11 + n)
    x = rng.integers(-2, 3, (8, 4 * 300)).astype(np.float64)
    x[0, 5] = np.inf  # one tile re-solved by the scalar path
    table = valid_tiles(n, 4)  # row subsets in itertools order: lexicographic
    got = tiles(nmsolve.transposable_mask(x, n, 4), 4)
    for tile, keep in zip(tiles(np.abs(x), 4), got, strict=True):
        weights = np.where(np.isinf(tile), 1e6, tile)[None] * table
        np.testing.assert_array_equal(keep, table[np.argmax(weights.sum(axis=(1, 2)))])


def test_tile_results_do_not_depend_on_position_or_neighbours():
    rng = np.random.default_rng(8)
    tile = rng.integers(0, 3, (8, 8)).astype(float)
    for method in ("mcf", "approx"):
        alone = nmsolve.transposable_mask(tile, 4, 8, method=method)
        big = rng.standard_normal((24, 40))
        big[8:16, 16:24] = tile
        big[0, 0] = np.inf
        np.testing.assert_array_equal(nmsolve.transposable_mask(big, 4, 8, method=method)[8:16, 16:24], alone)
    small = matrices("ties", (4, 4), rng)
    wide = rng.standard_normal((8, 4 * 300))  # several vectorised runs of tiles
    wide[4:8, 4 * 257 : 4 * 258] = small
    wide[0, 3] = np.inf  # a re-solved tile in the first run
    np.testing.assert_array_equal(
        nmsolve.transposable_mask(wide, 2, 4)[4:8, 4 * 257 : 4 * 258], nmsolve.transposable_mask(small, 2, 4)
    )


# --------------------------------------------------------------------------- inputs, dtypes, layouts


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_parallel_kernels_equal_serial_ones_with_rare_tiles(n, m):
    # above TRANSPOSABLE_PARALLEL_MIN the parallel kernels run, below it the serial ones; both leave
    # tiles with padding, inf and huge magnitudes (and approx's exact fallback) to the same small
    # kernels. Every tile row solved alone (a small input) must give the same masks.
    rng = np.random.default_rng(20 + n + m)
    x = rng.integers(-3, 4, (130, 1030)).astype(np.float64) * np.where(rng.random((130, 1030)) < 0.5, 1, 1 + 2**-40)
    x[rng.random(x.shape) < 0.002] = np.inf
    x[5, 7 * m : 8 * m] *= 2.0**600
    assert _tiles.is_parallel(x) and not _tiles.is_parallel(x[:m])
    for method in ("mcf", "approx"):
        mask = nmsolve.transposable_mask(x, n, m, method=method, pad=True)
        for r0 in range(0, x.shape[0], m):
            alone = nmsolve.transposable_mask(x[r0 : r0 + m], n, m, method=method, pad=True)
            np.testing.assert_array_equal(mask[r0 : r0 + m], alone)
        y = x.copy()
        y[77, 1029] = np.nan
        with pytest.raises(ValueError, match=r"W contains NaN \(first at index \(77, 1029\)\)"):
            nmsolve.transposable_mask(y, n, m, method=method, pad=True)


@pytest.mark.parametrize(
    "dtype", [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.uint64]
)
def test_dtypes_give_the_float64_objective(dtype):
    x = np.random.default_rng(9).integers(0, 100, (16, 16))
    if np.dtype(dtype).kind != "u":
        x = x - 50
    ref = tile_objectives(x.astype(np.float64), nmsolve.transposable_mask(x.astype(np.float64), 4, 8), 8)
    for method in ("mcf", "approx"):
        mask = nmsolve.transposable_mask(x.astype(dtype), 4, 8, method=method)
        assert mask.dtype == bool and mask.shape == x.shape
        if method == "mcf":
            close_objectives(tile_objectives(x, mask, 8), ref, x, 8)


@pytest.mark.parametrize(
    "view",
    [lambda a: a[::-1], lambda a: a.T, lambda a: a[:, ::2], lambda a: np.asfortranarray(a), lambda a: a[8:, 8:]],
)
def test_non_contiguous_views(view):
    base = np.random.default_rng(10).standard_normal((32, 48))
    x = view(base)
    for method in ("mcf", "approx"):
        np.testing.assert_array_equal(
            nmsolve.transposable_mask(x, 4, 8, method=method),
            nmsolve.transposable_mask(np.array(x), 4, 8, method=method),
        )


def test_lists_and_signed_input():
    assert nmsolve.transposable_mask(UNDERFILL.tolist(), 2, 4).sum() == 8
    np.testing.assert_array_equal(
        nmsolve.transposable_mask(-UNDERFILL, 2, 4), nmsolve.transposable_mask(UNDERFILL, 2, 4)
    )


@pytest.mark.parametrize("shape", [(0, 0), (0, 8), (8, 0)])
def test_empty(shape):
    for method in tp.METHODS:
        mask = nmsolve.transposable_mask(np.zeros(shape), 2, 4, method=method)
        assert mask.shape == shape and mask.dtype == bool
    assert nmsolve.is_transposable(np.zeros(shape, bool), 2, 4, exact=True)
    report = nmsolve.transposable_report(np.zeros(shape), 2, 4, method="approx")
    assert report.objective == report.optimum == 0.0 and report.gap == 0.0


def test_pad_solves_the_zero_padded_matrix():
    x = np.random.default_rng(11).standard_normal((10, 13))
    with pytest.raises(ValueError, match=r"axis 0 has length 10, not a multiple of m=4; pass pad=True"):
        nmsolve.transposable_mask(x, 2, 4)
    with pytest.raises(ValueError, match="pad=True"):
        nmsolve.is_transposable(np.zeros((10, 13)), 2, 4)
    for n, m in [(2, 4), (1, 4), (3, 8)]:
        padded = np.zeros((-(-10 // m) * m, -(-13 // m) * m))
        padded[:10, :13] = x
        for method in ("mcf", "approx", "ortools"):
            mask = nmsolve.transposable_mask(x, n, m, method=method, pad=True)
            assert mask.shape == x.shape
            assert nmsolve.is_transposable(mask, n, m, exact=True, pad=True)
        exact = nmsolve.transposable_mask(x, n, m, pad=True)
        want = nmsolve.transposable_mask(padded, n, m)
        assert math.isclose(np.abs(x)[exact].sum(), np.abs(padded)[want].sum(), rel_tol=1e-12)


def test_nan_is_a_clear_error():
    x = np.zeros((8, 8))
    x[5, 6] = np.nan
    for method in tp.METHODS:
        with pytest.raises(ValueError, match=r"W contains NaN \(first at index \(5, 6\)\)"):
            nmsolve.transposable_mask(x, 2, 4, method=method)
    x32 = np.zeros((8, 16), np.float32)
    x32[7, 13] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        nmsolve.transposable_mask(x32, 4, 8, method="approx")
    with pytest.raises(ValueError, match="NaN"):
        nmsolve.transposable_mask(x32[:, :14], 2, 4, pad=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 4, "m": 4}, ValueError, r"0 < n < m, got n=4, m=4"),
        ({"n": 0, "m": 4}, ValueError, "n=0"),
        ({"n": 2.0, "m": 4}, TypeError, "n must be an integer"),
        (
            {"n": 2, "m": 4, "method": "mfc"},
            ValueError,
            r"method must be one of \['approx', 'mcf', 'networkx', 'ortools'\], got 'mfc'",
        ),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        nmsolve.transposable_mask(np.zeros((8, 8)), **kwargs)


@pytest.mark.parametrize(
    ("weights", "error", "match"),
    [
        (np.zeros(16), ValueError, "2-D matrix, got a 1-d array"),
        (np.zeros((4, 4, 4)), ValueError, "apply_2d"),
        (np.zeros((4, 4), bool), TypeError, "dtype bool"),
        (np.zeros((4, 4), complex), TypeError, "complex"),
        (np.zeros((4, 4), object), TypeError, "object"),
        ([[1.0, 2.0, 3.0, 4.0], [1.0]], ValueError, "rectangular"),
    ],
)
def test_bad_weights(weights, error, match):
    with pytest.raises(error, match=match):
        nmsolve.transposable_mask(weights, 2, 4)


def test_conv_weights_through_apply_2d():
    w = np.random.default_rng(12).standard_normal((8, 8, 3, 3))
    mask = nmsolve.apply_2d(nmsolve.transposable_mask, w, n=2, m=4)
    assert mask.shape == w.shape
    assert nmsolve.is_transposable(nmsolve.weight_to_2d(mask)[0], 2, 4, exact=True)


# --------------------------------------------------------------------------- is_transposable, report


def test_is_transposable_checks_every_row_and_column_group():
    good = nmsolve.transposable_mask(np.random.default_rng(13).standard_normal((12, 16)), 2, 4)
    assert nmsolve.is_transposable(good, 2, 4, exact=True)
    rows_only = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0]], dtype=bool)
    for r0, c0 in [(8, 12), (4, 4), (0, 8)]:  # the last tile, a middle tile, a first-row tile
        bad = good.copy()
        bad[r0 : r0 + 4, c0 : c0 + 4] = rows_only
        assert nmsolve.is_nm(bad, 2, 4, exact=True)  # every row group is fine
        # a checker that tests some rows and some columns (here: the first tile row) can miss it
        assert nmsolve.is_nm(bad[:4].T, 2, 4, exact=True) or r0 == 0
        assert not nmsolve.is_transposable(bad, 2, 4)
        assert not nmsolve.is_transposable(bad, 2, 4, exact=True)
        assert not nmsolve.is_transposable(bad.T, 2, 4)
    assert nmsolve.is_transposable(good.astype(np.float32) * 3.0, 2, 4, exact=True)  # pruned weights
    assert not nmsolve.is_transposable(np.ones((4, 4)), 2, 4)
    assert nmsolve.is_transposable(np.zeros((4, 4)), 2, 4) and not nmsolve.is_transposable(
        np.zeros((4, 4)), 2, 4, exact=True
    )
    with pytest.raises(ValueError, match="2-D"):
        nmsolve.is_transposable(np.zeros(8), 2, 4)
    with pytest.raises(TypeError, match="boolean or numeric"):
        nmsolve.is_transposable(np.array([["a"] * 4] * 4), 2, 4)


def test_report_fields():
    x = np.random.default_rng(14).standard_normal((32, 32)).astype(np.float32)
    exact = nmsolve.transposable_report(x, 4, 8)
    assert isinstance(exact, nmsolve.TransposableResult)
    assert exact.method == "mcf" and (exact.n, exact.m) == (4, 8) and exact.gap == 0.0 and exact.ratio == 1.0
    assert exact.objective == pytest.approx(float(np.abs(x.astype(np.float64))[exact.mask].sum()), rel=1e-12)
    assert exact.seconds >= 0.0
    approx = nmsolve.transposable_report(x, 4, 8, method="approx")
    assert approx.optimum == exact.objective
    assert approx.gap == pytest.approx(1 - approx.objective / approx.optimum)
    assert 0.0 <= approx.gap <= 0.5
    with pytest.raises(AttributeError):
        approx.gap = 0.0  # frozen
    ortools = nmsolve.transposable_report(x, 4, 8, method="ortools")
    assert abs(ortools.gap) < 1e-6
    inf = x.copy()
    inf[0, 0] = np.inf
    assert nmsolve.transposable_report(inf, 4, 8).gap == 0.0


def test_progress_bar(capsys):
    x = np.random.default_rng(15).standard_normal((16, 16))
    for method in ("mcf", "approx", "ortools"):
        np.testing.assert_array_equal(
            nmsolve.transposable_mask(x, 2, 4, method=method, progress=True),
            nmsolve.transposable_mask(x, 2, 4, method=method),
        )
    assert "tile" in capsys.readouterr().err
