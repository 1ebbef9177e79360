import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nmsolve
from nmsolve.diversity import _tile_count_dp, _tile_log10_asymptotic
from tests.reference import count_masks_brute, tile_count_brute

# OEIS: number of n x n 0/1 matrices with every row and column sum k, indexed from n = 0.
A001499 = [1, 0, 1, 6, 90, 2040, 67950, 3110940, 187530840, 14398171200, 1371785398200]  # k = 2
A001501 = [1, 0, 0, 1, 24, 2040, 297200, 68938800, 24046189440, 12025780892160]  # k = 3
A058528 = [1, 0, 0, 0, 1, 120, 67950, 68938800, 116963796250]  # k = 4


def a001499(m: int) -> int:
    """Closed form for k = 2 (an independent check of the dynamic programme for larger m)."""
    total = sum(
        Fraction((-2) ** k * math.factorial(2 * m - 2 * k), math.factorial(k) * math.factorial(m - k) ** 2)
        for k in range(m + 1)
    )
    value = total * math.factorial(m) ** 2 / 4**m
    assert value.denominator == 1
    return int(value)


# --------------------------------------------------------------------------- K(m, n)


@pytest.mark.parametrize(("k", "sequence"), [(2, A001499), (3, A001501), (4, A058528)])
def test_tile_count_matches_oeis(k, sequence):
    for m, expected in enumerate(sequence):
        if m >= k:
            assert nmsolve.transposable_tile_count(m, k) == expected, (m, k)


def test_tile_count_known_values_of_the_issue():
    assert nmsolve.transposable_tile_count(4, 2) == 90
    assert nmsolve.transposable_tile_count(8, 4) == 116963796250


@pytest.mark.parametrize("m", range(1, 11))
def test_one_per_row_and_column_is_permutations(m):
    assert nmsolve.transposable_tile_count(m, 1) == math.factorial(m)
    assert nmsolve.transposable_tile_count(m, 0) == 1
    assert nmsolve.transposable_tile_count(m, m) == 1


def test_tile_count_closed_form_for_two_up_to_m_20():
    for m in range(2, 21):
        assert _tile_count_dp(m, 2) == a001499(m), m


@pytest.mark.parametrize("m", range(1, 10))
def test_symmetry_of_the_raw_dynamic_programme(m):
    # _tile_count_dp does not use the symmetry shortcut, so this checks it (complement of a tile)
    for n in range(m + 1):
        assert _tile_count_dp(m, n) == _tile_count_dp(m, m - n), (m, n)


@pytest.mark.parametrize(("m", "n"), [(1, 1), (2, 1), (3, 1), (3, 2), (4, 1), (4, 2), (4, 3), (5, 2), (5, 3)])
def test_tile_count_matches_brute_force(m, n):
    assert _tile_count_dp(m, n) == tile_count_brute(m, n)


def test_tile_count_m16_against_asymptotics_and_symmetry():
    exact = nmsolve.transposable_tile_count(16, 8)
    assert abs(math.log10(exact) - _tile_log10_asymptotic(16, 8)) < 0.001
    assert nmsolve.transposable_tile_count(16, 4) == nmsolve.transposable_tile_count(16, 12)
    assert _tile_count_dp(16, 2) == a001499(16)


def test_asymptotic_formula_accuracy_improves_with_m():
    worst = {}
    for m in range(4, 15, 2):
        errors = [
            abs(_tile_log10_asymptotic(m, n) - math.log10(nmsolve.transposable_tile_count(m, n))) for n in range(1, m)
        ]
        worst[m] = max(errors)
    assert all(worst[m] < math.log10(1.05) for m in worst)  # within 5% of the count
    assert worst[14] < worst[4] / 2


def test_tile_log10_methods():
    assert nmsolve.transposable_tile_log10(8, 4) == pytest.approx(math.log10(116963796250), rel=1e-15)
    big = nmsolve.transposable_tile_log10(64, 32)  # asymptotic
    assert math.isfinite(big) and big > 0
    assert nmsolve.transposable_tile_log10(4, 2, method="asymptotic") == pytest.approx(math.log10(90), abs=0.01)
    with pytest.raises(ValueError, match=r"method must be one of \['asymptotic', 'auto', 'exact'\], got 'exakt'"):
        nmsolve.transposable_tile_log10(4, 2, method="exakt")


@pytest.mark.parametrize(("m", "n", "error"), [(4, 5, ValueError), (0, 0, ValueError), (4, -1, ValueError)])
def test_tile_count_rejects_bad_arguments(m, n, error):
    with pytest.raises(error):
        nmsolve.transposable_tile_count(m, n)


@pytest.mark.parametrize(("m", "n"), [(4.0, 2), (4, 2.0), (True, 1)])
def test_tile_count_rejects_non_integers(m, n):
    with pytest.raises(TypeError, match="must be an integer"):
        nmsolve.transposable_tile_count(m, n)


# --------------------------------------------------------------------------- mask_diversity vs brute force

TINY = [
    ((4, 4), "nm", {"n": 1, "m": 4}, {"n": 1, "m": 4}),
    ((4, 4), "nm", {"n": 2, "m": 4}, {"n": 2, "m": 4}),
    ((2, 8), "nm", {"n": 3, "m": 4}, {"n": 3, "m": 4}),
    ((4, 4), "nm", {"n": 1, "m": 2}, {"n": 1, "m": 2}),
    ((4, 4), "transposable", {"n": 2, "m": 4}, {"n": 2, "m": 4}),
    ((4, 4), "transposable", {"n": 1, "m": 2}, {"n": 1, "m": 2}),
    ((4, 4), "transposable", {"m": 4, "density": 0.25}, {"n": 1, "m": 4}),
    ((3, 5), "unstructured", {"density": 0.4}, {"kept": 6}),
    ((4, 4), "unstructured", {"n": 1, "m": 4}, {"kept": 4}),
    ((4, 4), "block", {"block": 2, "density": 0.5}, {"bh": 2, "bw": 2, "kept_blocks": 2}),
    ((2, 8), "block", {"block": (1, 4), "density": 0.25}, {"bh": 1, "bw": 4, "kept_blocks": 1}),
    ((4, 4), "fanin", {"n": 3}, {"n": 3}),
    ((2, 8), "fanin", {"density": 0.25}, {"n": 2}),
]


@pytest.mark.parametrize(("shape", "kind", "kwargs", "brute"), TINY)
def test_counts_match_enumeration_of_every_mask(shape, kind, kwargs, brute):
    result = nmsolve.mask_diversity(shape, kind, **kwargs)
    assert result.count == count_masks_brute(*shape, kind, **brute)
    assert result.log10 == pytest.approx(math.log10(result.count))
    assert result.kept * result.count > 0 and result.kind == kind


def test_conv_shapes_use_the_channel_last_view():
    # (out, in, kh, kw) = (2, 4, 2, 1): channel-last view 4 x 4, fan-in 8
    t = nmsolve.mask_diversity((2, 4, 2, 1), "transposable", n=2, m=4)
    assert t.count == 90
    f = nmsolve.mask_diversity((2, 4, 2, 1), "fanin", n=2)
    assert f.count == math.comb(8, 2) ** 2 and f.m == 8
    with pytest.raises(ValueError, match="2-D view 4x3 does not split into 4x4 tiles"):
        nmsolve.mask_diversity((2, 3, 2, 1), "transposable", n=2, m=4)


# --------------------------------------------------------------------------- invariants

patterns = st.sampled_from([(1, 2), (1, 4), (2, 4), (3, 4), (2, 8), (4, 8)])


@given(patterns, st.integers(1, 4), st.integers(1, 4))
def test_structures_are_nested(pattern, tile_rows, tile_cols):
    """transposable masks are N:M masks, which are unstructured masks of the same density."""
    n, m = pattern
    shape = (tile_rows * m, tile_cols * m)
    t = nmsolve.mask_diversity(shape, "transposable", n=n, m=m, exact=False)
    g = nmsolve.mask_diversity(shape, "nm", n=n, m=m, exact=False)
    f = nmsolve.mask_diversity(shape, "fanin", n=tile_cols * n, exact=False)
    u = nmsolve.mask_diversity(shape, "unstructured", n=n, m=m, exact=False)
    assert t.log10 <= g.log10 + 1e-9 <= f.log10 + 2e-9 <= u.log10 + 3e-9
    assert t.density == g.density == f.density == u.density == n / m


@given(
    st.sampled_from(["unstructured", "nm", "transposable", "fanin", "block"]),
    patterns,
    st.integers(1, 6),
    st.integers(1, 6),
)
def test_log_space_agrees_with_the_exact_count(kind, pattern, tile_rows, tile_cols):
    n, m = pattern
    shape = (tile_rows * m, tile_cols * m)
    kwargs = {"fanin": {"n": n * tile_cols}, "block": {"block": (1, m), "n": n, "m": m}}.get(kind, {"n": n, "m": m})
    if kind == "block" and (tile_rows * tile_cols * n) % m:
        return
    fast = nmsolve.mask_diversity(shape, kind, exact=False, **kwargs)
    exact = nmsolve.mask_diversity(shape, kind, exact=True, **kwargs)
    assert fast.count is None and exact.count is not None
    assert fast.log10 == pytest.approx(math.log10(exact.count), rel=1e-9, abs=1e-9)


def test_real_layer_sizes_do_not_overflow():
    shape = (49_152, 49_152)  # 2.4e9 weights
    for kind, kwargs in [
        ("unstructured", {"density": 0.5}),
        ("nm", {"n": 2, "m": 4}),
        ("transposable", {"n": 4, "m": 8}),
        ("transposable", {"n": 16, "m": 32}),
        ("fanin", {"density": 0.125}),
        ("block", {"block": 8, "density": 0.5}),
    ]:
        result = nmsolve.mask_diversity(shape, kind, **kwargs)
        assert result.count is None and math.isfinite(result.log10) and result.log10 > 1e6, kind
    assert nmsolve.mask_diversity(shape, "nm", n=2, m=4).log10 == pytest.approx(49_152**2 / 4 * math.log10(6))
    far = nmsolve.mask_diversity(shape, "transposable", n=16, m=32)
    assert far.asymptotic and "~10^" in str(far)
    near = nmsolve.mask_diversity((64, 64), "transposable", n=16, m=32)
    assert near.asymptotic and near.count is None


def test_exact_flag():
    assert nmsolve.mask_diversity((8, 8), "nm", n=2, m=4, exact=False).count is None
    big = nmsolve.mask_diversity((64, 256), "nm", n=2, m=4, exact=True)  # 4096 groups: 3188 digits
    assert big.count == 6**4096 and big.log10 == pytest.approx(4096 * math.log10(6))
    assert "count" not in repr(big)  # a repr of thousands of digits would be useless (and may raise)


def test_empty_and_degenerate():
    assert nmsolve.mask_diversity(0, "unstructured", density=0.5).count == 1
    assert nmsolve.mask_diversity((0, 8), "nm", n=2, m=4).count == 1
    assert nmsolve.mask_diversity((4, 8), "unstructured", density=0.0).count == 1
    assert nmsolve.mask_diversity((4, 8), "nm", n=4, m=4).count == 1
    assert nmsolve.mask_diversity((4, 8), "fanin", n=0).count == 1
    r = nmsolve.mask_diversity(16, "nm", n=2, m=4)
    assert r.shape == (16,) and r.count == 6**4 and r.log10_per_entry == pytest.approx(math.log10(6) / 4)
    assert nmsolve.mask_diversity(32, "transposable", n=1, m=4).count == 24**2
    assert nmsolve.mask_diversity(32, "fanin", n=1, m=8).count == 8**4


def test_numpy_integers_are_accepted():
    r = nmsolve.mask_diversity((np.int64(8), np.int32(8)), "nm", n=np.int64(2), m=np.int16(4))
    assert r.count == 6**16


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((16, "structured"), {}, ValueError, r"kind must be one of \['unstructured', 'block'"),
        (((4, 4), "nm"), {"n": 5, "m": 4}, ValueError, "0 < n <= m, got n=5, m=4"),
        (((4, 6), "nm"), {"n": 2, "m": 4}, ValueError, "length 6, not a multiple of m=4"),
        (((4, 8), "transposable"), {"n": 2, "m": 4}, None, None),
        (((6, 8), "transposable"), {"n": 2, "m": 4}, ValueError, "6x8 does not split into 4x4 tiles"),
        ((30, "transposable"), {"n": 2, "m": 4}, ValueError, "not a multiple of m\\*m=16"),
        (((3, 3), "unstructured"), {"density": 0.5}, ValueError, "not a whole number"),
        (((4, 4), "unstructured"), {}, ValueError, "pass density"),
        (((4, 4), "unstructured"), {"density": 0.5, "n": 2, "m": 4}, ValueError, "not both"),
        (((4, 4), "unstructured"), {"density": 1.5}, ValueError, r"must lie in \[0, 1\]"),
        (((4, 4), "unstructured"), {"density": "half"}, TypeError, "density must be a real number"),
        (((4, 4), "nm"), {"n": 2}, ValueError, "needs m"),
        (((4, 4), "nm"), {"m": 4}, ValueError, "exactly one of n"),
        (((4, 4), "nm"), {"m": 4, "n": 2, "density": 0.5}, ValueError, "exactly one of n"),
        (((4, 4), "nm"), {"m": 4, "density": 0.3}, ValueError, "not a whole number"),
        (((4, 4), "block"), {"density": 0.5}, ValueError, "needs block="),
        (((4, 4), "nm"), {"n": 2, "m": 4, "block": 2}, ValueError, "applies to kind='block' only"),
        (((4, 6), "block"), {"block": 4, "density": 0.5}, ValueError, "does not split into 4x4 blocks"),
        ((16, "fanin"), {"n": 2}, ValueError, "needs m, the fan-in"),
        (((4, 8), "fanin"), {"n": 2, "m": 4}, ValueError, "does not match the fan-in"),
        (((4, 8), "fanin"), {"n": 9}, ValueError, "0 <= n <= fan-in"),
        ((-4, "nm"), {"n": 2, "m": 4}, ValueError, "size must be >= 0"),
        ((16.0, "nm"), {"n": 2, "m": 4}, TypeError, "shape_or_size must be an int"),
        (((4.0, 4), "nm"), {"n": 2, "m": 4}, TypeError, "must be an integer"),
        ((True, "nm"), {"n": 2, "m": 4}, TypeError, "shape_or_size must be an int"),
        ((np.zeros((4, 4)), "nm"), {"n": 2, "m": 4}, TypeError, "pass array.shape"),
        (((), "nm"), {"n": 2, "m": 4}, TypeError, "non-empty tuple"),
        (((4, 4), "nm"), {"n": 2.0, "m": 4}, TypeError, "must be an integer"),
        (((4, 4), "nm"), {"n": 2, "m": 4, "exact": "yes"}, TypeError, "exact must be None, True or False"),
    ],
)
def test_bad_input(args, kwargs, error, match):
    if error is None:
        assert nmsolve.mask_diversity(*args, **kwargs).count == 90**2
        return
    with pytest.raises(error, match=match):
        nmsolve.mask_diversity(*args, **kwargs)


def test_result_is_frozen_and_printable():
    r = nmsolve.mask_diversity((8, 8), "transposable", n=4, m=8)
    with pytest.raises(AttributeError):
        r.log10 = 0.0  # type: ignore[misc]
    assert str(r) == "transposable 4:8 on (8, 8) at density 0.5: 10^11.07 masks"
    assert r.count == 116963796250 and r.size == 64 and not r.asymptotic


def test_exact_true_refuses_what_would_run_unbounded():
    with pytest.raises(ValueError, match=r"about 1.945e\+11 decimal digits.*MAX_EXACT_TRUE_DIGITS = 1000000"):
        nmsolve.mask_diversity((10**6, 10**6), "nm", n=2, m=4, exact=True)
    with pytest.raises(ValueError, match=r"practical only up to m = 16"):
        nmsolve.mask_diversity((32, 32), "transposable", n=2, m=32, exact=True)
    assert nmsolve.mask_diversity((10**6, 10**6), "nm", n=2, m=4).count is None  # the default stays cheap
    assert nmsolve.mask_diversity((64, 64), "nm", n=2, m=4, exact=True).count == 6**1024


def test_exact_tile_counts_refuse_tiles_beyond_the_limit():
    with pytest.raises(ValueError, match=r"K\(32, 3\) is computed only up to m = EXACT_TILE_MAX_M = 16"):
        nmsolve.transposable_tile_count(32, 3)  # ran without bound
    with pytest.raises(ValueError, match="EXACT_TILE_MAX_M"):
        nmsolve.transposable_tile_log10(20, 4, method="exact")
    assert nmsolve.transposable_tile_count(2**40, 0) == 1
    assert nmsolve.transposable_tile_log10(32, 3) > 0  # auto: asymptotic beyond 16
