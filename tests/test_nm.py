import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nmsolve
from tests.reference import nm_mask_sorted, nm_mask_subsets

PATTERNS = [(1, 4), (2, 4), (3, 4), (4, 4), (1, 2), (4, 8), (3, 7), (8, 16), (16, 32), (5, 100), (1, 1)]


@st.composite
def scores_and_pattern(draw, dtype=np.float64, elements=None, pad=False):
    n, m = draw(st.sampled_from(PATTERNS[:-2]))
    rows = draw(st.integers(0, 5))
    groups = draw(st.integers(1, 4))
    extra = draw(st.integers(0, m - 1)) if pad else 0
    if elements is None:
        elements = st.floats(-1e6, 1e6, allow_nan=False, width=64)
    x = draw(hnp.arrays(dtype, (rows, groups * m + extra), elements=elements))
    return x, n, m


# --------------------------------------------------------------------------- oracle agreement


@given(scores_and_pattern(pad=True))
def test_matches_sorted_oracle(case):
    x, n, m = case
    np.testing.assert_array_equal(nmsolve.nm_mask(x, n, m, pad=True), nm_mask_sorted(x, n, m))


@given(scores_and_pattern(dtype=np.int64, elements=st.integers(-3, 3)))
def test_matches_subset_oracle_with_many_ties(case):
    x, n, m = case
    if math.comb(m, n) > 5000:
        return
    np.testing.assert_array_equal(nmsolve.nm_mask(x, n, m), nm_mask_subsets(x, n, m))


@pytest.mark.parametrize(("n", "m"), PATTERNS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8])
def test_oracle_every_dtype(n, m, dtype):
    rng = np.random.default_rng(n * 100 + m)
    x = (rng.normal(size=(7, 3 * m)) * 50).astype(dtype)
    np.testing.assert_array_equal(nmsolve.nm_mask(x, n, m), nm_mask_sorted(x, n, m))


def test_large_random_matches_oracle_across_row_blocks():
    # more than one block of groups per row (the kernel transposes 256 groups at a time)
    x = np.random.default_rng(1).normal(size=(3, 4 * 600 + 2))
    np.testing.assert_array_equal(nmsolve.nm_mask(x, 2, 4, pad=True), nm_mask_sorted(x, 2, 4))


@pytest.mark.parametrize(("n", "m"), [(3, 8), (1, 2), (2, 3), (3, 5), (5, 12), (17, 33), (32, 64), (64, 64), (7, 65)])
def test_network_and_quickselect_oracle_with_ties_across_blocks_and_row_chunks(n, m):
    # every kernel path: selection network for m <= 64 (m == 4 has its own loop), quickselect beyond;
    # few distinct values, so the tie branch runs; 1100 groups of 8 span two network blocks; 130 rows
    # span several prange chunks; a padded last group goes through quickselect
    rng = np.random.default_rng(m)
    rows, groups = (3, 1100) if m == 8 else (130, 2)
    x = rng.integers(-2, 3, size=(rows, groups * m + m // 2)).astype(np.float32)
    np.testing.assert_array_equal(nmsolve.nm_mask(x, n, m, pad=True), nm_mask_sorted(x, n, m))
    x[rows // 2 + 1, m + 1] = np.nan
    with pytest.raises(ValueError, match=rf"NaN \(first at index \({rows // 2 + 1}, {m + 1}\)\)"):
        nmsolve.nm_mask(x, n, m, pad=True)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (3, 8), (16, 32), (5, 100)])
def test_multithreaded_rows_agree_with_reference(n, m):
    # large enough (>= _PARALLEL_MIN_SIZE entries) for the prange path; chunks of rows run on
    # different threads, each with its own scratch
    from nmsolve._jit import NM_PARALLEL_MIN as _PARALLEL_MIN_SIZE

    x = np.random.default_rng(n).integers(-3, 4, size=(330, 200 if m == 100 else 224)).astype(np.float32)
    assert x.size >= _PARALLEL_MIN_SIZE
    np.testing.assert_array_equal(nmsolve.nm_mask(x, n, m), nm_mask_sorted(x, n, m))


@pytest.mark.parametrize("m", range(2, 11))
def test_selection_network_puts_nth_and_next_largest_on_their_wires(m):
    # zero-one principle: a comparator network selects correctly for every input iff it does for
    # every input of zeros and ones (all 2**m of them here)
    from nmsolve._kernels import selection_network as _selection_network

    inputs = (np.arange(2**m)[:, None] >> np.arange(m)) & 1
    expected = -np.sort(-inputs, axis=1)
    for n in range(1, m + 1):
        wires = inputs.copy()
        for a, b in _selection_network(n, m):
            wires[:, a], wires[:, b] = np.maximum(wires[:, a], wires[:, b]), np.minimum(wires[:, a], wires[:, b])
        np.testing.assert_array_equal(wires[:, n - 1 : n + 1], expected[:, n - 1 : n + 1])


# --------------------------------------------------------------------------- invariants


@given(scores_and_pattern())
def test_exactly_n_per_group_and_kept_dominate_dropped(case):
    x, n, m = case
    mask = nmsolve.nm_mask(x, n, m)
    assert nmsolve.is_nm(mask, n, m, exact=True)
    for g, k in zip(x.reshape(-1, m), mask.reshape(-1, m), strict=True):
        if k.all():
            continue
        assert g[k].min() >= g[~k].max()


@given(scores_and_pattern(), st.floats(1e-3, 1e3))
def test_invariant_to_positive_scaling(case, scale):
    x, n, m = case
    x = np.round(x, 3)  # scaling must not create new ties by rounding
    scaled = x * np.float64(scale)
    if not np.array_equal(np.argsort(x, axis=None, kind="stable"), np.argsort(scaled, axis=None, kind="stable")):
        return
    np.testing.assert_array_equal(nmsolve.nm_mask(x, n, m), nmsolve.nm_mask(scaled, n, m))


@pytest.mark.parametrize(("n", "m"), PATTERNS)
def test_ties_break_toward_lower_index(n, m):
    mask = nmsolve.nm_mask(np.ones((2, 3 * m)), n, m)
    expected = np.tile(np.arange(m) < n, 3)
    np.testing.assert_array_equal(mask, np.broadcast_to(expected, mask.shape))


def test_inf_ordered_like_any_number():
    x = np.array([1.0, np.inf, -np.inf, 5.0, np.inf, np.inf, np.inf, -1.0])
    np.testing.assert_array_equal(nmsolve.nm_mask(x, 2, 4), [0, 1, 0, 1, 1, 1, 0, 0])


def test_negative_zero_ties_with_zero():
    np.testing.assert_array_equal(nmsolve.nm_mask(np.array([-0.0, 0.0, -1.0, -2.0]), 1, 4), [1, 0, 0, 0])


@given(scores_and_pattern())
def test_input_never_modified(case):
    x, n, m = case
    before = x.copy()
    nmsolve.nm_mask(x, n, m)
    nmsolve.magnitude_mask(x, n, m)
    nmsolve.combination_scores(x, n, m) if math.comb(m, n) < 5000 else None
    np.testing.assert_array_equal(x, before)


def test_huge_values_and_mixed_signs():
    x = np.array([[1e308, -1e308, 1e-308, -5e-324, np.finfo(np.float64).max, 0.0, 3.0, -np.finfo(np.float64).max]])
    np.testing.assert_array_equal(nmsolve.nm_mask(x, 2, 4), nm_mask_sorted(x, 2, 4))
    np.testing.assert_array_equal(nmsolve.magnitude_mask(x, 2, 4), [[1, 1, 0, 0, 1, 0, 0, 1]])


def test_uint64_beyond_int64_range():
    big = np.iinfo(np.uint64).max
    x = np.array([big, big - 1, 1, 0], dtype=np.uint64)
    np.testing.assert_array_equal(nmsolve.nm_mask(x, 1, 4), [1, 0, 0, 0])


# --------------------------------------------------------------------------- axes, layouts, views


def test_axis_and_nd_inputs():
    x = np.random.default_rng(2).normal(size=(3, 8, 4, 2))
    mask = nmsolve.nm_mask(x, 2, 4, axis=1)
    expected = np.moveaxis(nm_mask_sorted(np.moveaxis(x, 1, -1), 2, 4), -1, 1)
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(nmsolve.nm_mask(x, 2, 4, axis=-3), expected)
    assert nmsolve.is_nm(mask, 2, 4, axis=1, exact=True)
    assert not nmsolve.is_nm(mask, 2, 4, axis=2, exact=True)


def test_conv_layout_channel_last_matches_axis_1():
    w = np.random.default_rng(3).normal(size=(6, 8, 3, 3))
    mat, layout = nmsolve.weight_to_2d(w)
    assert mat.shape == (6 * 9, 8)
    np.testing.assert_array_equal(nmsolve.weight_from_2d(mat, layout), w)
    via_2d = nmsolve.apply_2d(nmsolve.magnitude_mask, w, n=2, m=4)
    np.testing.assert_array_equal(via_2d, nmsolve.magnitude_mask(w, 2, 4, axis=1))


def test_layout_rejects_bad_shapes():
    with pytest.raises(ValueError, match="1-d"):
        nmsolve.weight_to_2d(np.zeros(4))
    mat, layout = nmsolve.weight_to_2d(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="expected"):
        nmsolve.weight_from_2d(mat[:-1], layout)


@pytest.mark.parametrize(
    "view",
    [
        lambda x: x[::-1, ::-1],
        lambda x: x[:, ::2],
        lambda x: x.T,
        lambda x: np.asfortranarray(x),
        lambda x: x[1:, 4:],
    ],
)
def test_non_contiguous_views_give_correct_results(view):
    base = np.random.default_rng(4).normal(size=(16, 16))
    x = view(base)
    np.testing.assert_array_equal(nmsolve.nm_mask(x, 2, 4), nm_mask_sorted(np.array(x), 2, 4))


def test_pad_option_for_ragged_groups():
    x = np.array([[1.0, 2.0, 3.0, 4.0, 9.0, 8.0, 7.0]])
    with pytest.raises(ValueError, match=r"length 7, not a multiple of m=4; pass pad=True"):
        nmsolve.nm_mask(x, 2, 4)
    np.testing.assert_array_equal(nmsolve.nm_mask(x, 2, 4, pad=True), [[0, 0, 1, 1, 1, 1, 0]])
    mask = nmsolve.nm_mask(x, 3, 4, pad=True)
    assert nmsolve.is_nm(mask, 3, 4, exact=True, pad=True)
    with pytest.raises(ValueError, match="pad=True"):
        nmsolve.is_nm(mask, 3, 4)


def test_empty_inputs_give_empty_masks():
    for shape in [(0,), (0, 4), (3, 0), (0, 0, 8)]:
        mask = nmsolve.nm_mask(np.zeros(shape), 2, 4)
        assert mask.shape == shape and mask.dtype == bool
        assert nmsolve.is_nm(mask, 2, 4, exact=True)


# --------------------------------------------------------------------------- bad input


def test_nan_is_a_clear_error_naming_the_location():
    x = np.zeros((3, 8))
    x[2, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN \(first at index \(2, 5\)\).*nan_to_num"):
        nmsolve.nm_mask(x, 2, 4)
    with pytest.raises(ValueError, match="NaN"):
        nmsolve.nm_mask(x.astype(np.float16), 1, 8)
    with pytest.raises(ValueError, match="NaN"):
        nmsolve.nm_mask(x, 4, 8, pad=True)


@pytest.mark.parametrize(
    ("n", "m", "error", "match"),
    [
        (5, 4, ValueError, r"0 < n <= m, got n=5, m=4"),
        (0, 4, ValueError, "n=0"),
        (-1, 4, ValueError, "n=-1"),
        (2, 0, ValueError, "m=0"),
        (2, -4, ValueError, "m=-4"),
        (2.0, 4, TypeError, "n must be an integer, got 2.0"),
        (2, 4.5, TypeError, "m must be an integer"),
        (True, 4, TypeError, "n must be an integer"),
        ("2", 4, TypeError, "n must be an integer"),
    ],
)
def test_bad_n_m(n, m, error, match):
    with pytest.raises(error, match=match):
        nmsolve.nm_mask(np.zeros((2, 8)), n, m)
    with pytest.raises(error, match=match):
        nmsolve.is_nm(np.zeros((2, 8)), n, m)


def test_numpy_integer_n_m_are_accepted():
    assert nmsolve.nm_mask(np.arange(8.0), np.int64(2), np.int32(4)).sum() == 4


@pytest.mark.parametrize(
    ("scores", "error", "match"),
    [
        (np.array(3.0), ValueError, "at least 1 dimension"),
        (np.array([True, False, True, False]), TypeError, "dtype bool"),
        (np.array([1 + 1j, 2, 3, 4]), TypeError, "complex128"),
        (np.array([1, 2, 3, 4], dtype=object), TypeError, "object"),
        (np.array(["a", "b", "c", "d"]), TypeError, "real numeric"),
        ([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]], ValueError, "rectangular"),
    ],
)
def test_bad_scores(scores, error, match):
    with pytest.raises(error, match=match):
        nmsolve.nm_mask(scores, 2, 4)


def test_lists_are_accepted():
    np.testing.assert_array_equal(nmsolve.nm_mask([4, 3, 2, 1], 2, 4), [1, 1, 0, 0])


@pytest.mark.parametrize("axis", [2, -3, 1.0])
def test_bad_axis(axis):
    with pytest.raises((ValueError, TypeError), match="axis"):
        nmsolve.nm_mask(np.zeros((2, 8)), 2, 4, axis=axis)


def test_is_nm_on_pruned_weights_and_bad_masks():
    w = np.array([[0.0, 1.5, 0.0, -2.0], [3.0, 0.0, 0.0, 0.0]])
    assert nmsolve.is_nm(w, 2, 4)
    assert not nmsolve.is_nm(w, 2, 4, exact=True)
    assert not nmsolve.is_nm(w, 1, 4)
    with pytest.raises(TypeError, match="boolean or numeric"):
        nmsolve.is_nm(np.array(["a"] * 4), 2, 4)
    with pytest.raises(ValueError, match="0-d"):
        nmsolve.is_nm(np.array(True), 2, 4)


def test_huge_input_is_processed_without_copies_of_the_scores():
    x = np.random.default_rng(5).random((2048, 4096), dtype=np.float32)  # 32 MiB
    mask = nmsolve.nm_mask(x, 2, 4)
    assert mask.shape == x.shape and nmsolve.is_nm(mask, 2, 4, exact=True)
    np.testing.assert_array_equal(mask[:3], nm_mask_sorted(x[:3], 2, 4))


# --------------------------------------------------------------------------- metrics


def test_kept_magnitude_and_fraction():
    w = np.array([[1.0, -2.0, 3.0, -4.0]])
    mask = nmsolve.magnitude_mask(w, 2, 4)
    assert nmsolve.kept_magnitude(w, mask) == 7.0
    assert nmsolve.kept_fraction(w, mask) == pytest.approx(0.7)
    assert nmsolve.kept_fraction(np.zeros((2, 4)), np.zeros((2, 4), bool)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        nmsolve.kept_fraction(w, mask[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        nmsolve.kept_fraction(np.array([np.nan]), np.array([True]))


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8), (3, 7), (2, 70)])
@pytest.mark.parametrize("extra", [0, 3])
def test_axis0_of_2d_matches_oracle_with_ties_and_padding(n, m, extra):
    # groups of m consecutive ROWS (the no-transpose path), many ties, a padded last block
    x = np.random.default_rng(m + extra).integers(0, 3, size=(2 * m + extra, 1100)).astype(np.float32)
    expected = nm_mask_sorted(np.ascontiguousarray(x.T), n, m).T
    np.testing.assert_array_equal(nmsolve.nm_mask(x, n, m, axis=0, pad=True), expected)
    np.testing.assert_array_equal(nmsolve.nm_mask(x, n, m, axis=-2, pad=True), expected)
    np.testing.assert_array_equal(nmsolve.nm_mask(np.asfortranarray(x), n, m, axis=0, pad=True), expected)


def test_axis0_large_parallel_matches_axis1_of_transpose():
    x = np.random.default_rng(0).standard_normal((256, 512))
    for n, m in [(2, 4), (4, 16)]:
        np.testing.assert_array_equal(nmsolve.nm_mask(x, n, m, axis=0), nmsolve.nm_mask(x.T.copy(), n, m).T)


def test_axis0_nan_is_an_error_naming_the_location():
    x = np.ones((8, 12))
    x[5, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        nmsolve.nm_mask(x, 2, 4, axis=0)


@pytest.mark.parametrize("m", [8, 16, 32])
def test_network_kernel_every_n_with_ties_across_blocks(m):
    # the selection-network path for every n, few distinct values (ties at the threshold), and rows of
    # two blocks and 3 * m entries so that full blocks and a short one all run
    from nmsolve._kernels import BLOCK_VALUES as _BLOCK_VALUES

    rng = np.random.default_rng(m)
    x = rng.integers(-2, 3, size=(3, 2 * _BLOCK_VALUES + 3 * m)).astype(np.float32)
    x[1] = rng.normal(size=x.shape[1])
    for n in range(1, m + 1):
        np.testing.assert_array_equal(nmsolve.nm_mask(x, n, m), nm_mask_sorted(x, n, m), err_msg=f"{n}:{m}")


@pytest.mark.parametrize(("n", "m"), [(4, 8), (8, 16), (16, 32)])
def test_register_network_oracle_with_ties_inf_unaligned_rows_and_nan(n, m):
    # float32 n:2n runs the register-resident network (_registers_block); rows of two blocks + 2m + 3
    # entries start at addresses that are not multiples of 16 bytes (its 16-byte transpose), span full
    # blocks and a short one, end in a padded group, and 9 rows are enough for the multithreaded path;
    # more rows than _ROW_CHUNKS put several rows in a chunk (16:32 prefetches the next block, in the
    # same row or the next one)
    from nmsolve._jit import NM_PARALLEL_MIN as _PARALLEL_MIN_SIZE
    from nmsolve._kernels import BLOCK_VALUES as _BLOCK_VALUES
    from nmsolve._kernels import ROW_CHUNKS as _ROW_CHUNKS
    from nmsolve.nm import _REGISTER_PATTERNS

    assert (n, m) in _REGISTER_PATTERNS
    rng = np.random.default_rng(m)
    values = np.array([-np.inf, -2, -1, -0.0, 0, 1, 2, np.inf], dtype=np.float32)
    length = 2 * _BLOCK_VALUES + 2 * m + 3
    x = rng.choice(values, size=(9, length))
    x[::3] = rng.normal(size=x[::3].shape)
    assert x.size >= _PARALLEL_MIN_SIZE
    np.testing.assert_array_equal(nmsolve.nm_mask(x, n, m, pad=True), nm_mask_sorted(x, n, m))
    many = rng.choice(values, size=(2 * _ROW_CHUNKS + 3, 3 * m))
    np.testing.assert_array_equal(nmsolve.nm_mask(many, n, m), nm_mask_sorted(many, n, m))
    x[4, length - m - 2] = np.nan
    with pytest.raises(ValueError, match=rf"NaN \(first at index \(4, {length - m - 2}\)\)"):
        nmsolve.nm_mask(x, n, m, pad=True)


# --------------------------------------------------------------------------- inputs kernels cannot take as given


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">i4", ">i8", ">u2", ">u8", "<f8"])
def test_non_native_byte_order_is_normalised_once(dtype):
    x = np.array([[3, 1, 4, 1, 5, 9, 2, 6], [0, 7, 2, 7, 1, 8, 2, 8]]).astype(dtype)
    native = x.astype(np.dtype(dtype).newbyteorder("="))
    expected = nm_mask_sorted(native, 2, 4)
    np.testing.assert_array_equal(nmsolve.nm_mask(x, 2, 4), expected)
    np.testing.assert_array_equal(nmsolve.nm_mask(x.T, 2, 4, axis=0), expected.T)  # the column path
    np.testing.assert_array_equal(nmsolve.magnitude_mask(x, 2, 4), nmsolve.magnitude_mask(native, 2, 4))
    assert nmsolve.is_nm(x, 4, 4)


def test_magnitude_mask_orders_the_most_negative_int64_exactly():
    x = np.array([[np.iinfo(np.int64).min, 5, 1, 2], [7, -(2**62), np.iinfo(np.int64).max, 0]], dtype=np.int64)
    expected = nm_mask_sorted(np.array([[abs(int(v)) for v in row] for row in x.tolist()], dtype=np.uint64), 1, 4)
    np.testing.assert_array_equal(nmsolve.magnitude_mask(x, 1, 4), expected)
    assert nmsolve.magnitude_mask(x, 1, 4)[0, 0]  # |-2**63| is the largest magnitude there is


@pytest.mark.skipif(np.finfo(np.longdouble).nmant <= 52, reason="longdouble is float64 on this platform")
def test_longdouble_is_converted_only_when_exact():
    exact = np.array([0.5, 3.0, -2.0, 1.0], dtype=np.longdouble)
    np.testing.assert_array_equal(nmsolve.nm_mask(exact, 2, 4), [False, True, False, True])
    close = np.array([1.0, 1.0, 0.0, 0.0], dtype=np.longdouble)
    close[1] += np.finfo(np.longdouble).eps  # distinct in longdouble, a tie in float64
    with pytest.raises(TypeError, match=r"first at index \(1,\).*astype\(np.float64\)"):
        nmsolve.nm_mask(close, 1, 4)
    with pytest.raises(TypeError, match=r"weights has dtype .* cannot represent exactly"):
        nmsolve.magnitude_mask(close, 1, 4)
    huge = np.array([2.0, 0, 0, 0], dtype=np.longdouble) ** 1100  # overflows float64
    with pytest.raises(TypeError, match="cannot represent exactly"):
        nmsolve.nm_mask(huge, 1, 4)
    np.testing.assert_array_equal(nmsolve.nm_mask(close.astype(np.float64), 1, 4), [True, False, False, False])


def test_masked_arrays_with_masked_entries_are_refused():
    x = np.ma.masked_array([5.0, 1.0, 4.0, 2.0], mask=[True, False, False, False])
    for call in (
        lambda: nmsolve.nm_mask(x, 2, 4),
        lambda: nmsolve.magnitude_mask(x, 2, 4),
        lambda: nmsolve.is_nm(x, 2, 4),
    ):
        with pytest.raises(TypeError, match=r"masked array with 1 masked entries.*\.filled\("):
            call()
    unmasked = np.ma.masked_array([5.0, 1.0, 4.0, 2.0])
    np.testing.assert_array_equal(nmsolve.nm_mask(unmasked, 2, 4), [True, False, True, False])


@pytest.mark.parametrize("value", ["yes", "no", 1, 0, None, np.array([True])])
def test_bool_options_must_be_bools(value):
    x = np.arange(8.0)
    with pytest.raises(TypeError, match=r"pad must be True or False, got"):
        nmsolve.nm_mask(x, 2, 4, pad=value)
    with pytest.raises(TypeError, match=r"pad must be True or False"):
        nmsolve.magnitude_mask(x, 2, 4, pad=value)
    with pytest.raises(TypeError, match=r"exact must be True or False"):
        nmsolve.is_nm(x, 2, 4, exact=value)
    assert nmsolve.is_nm(x != 0, 2, 4, pad=np.bool_(False)) is False


def test_kept_fraction_with_infinite_weights_is_defined():
    w = np.array([np.inf, 1.0, -np.inf, 2.0, np.inf, 0.0, 3.0, 4.0])
    assert nmsolve.kept_fraction(w, w == np.inf) == pytest.approx(2 / 3)
    assert nmsolve.kept_fraction(w, np.ones(8, bool)) == 1.0
    assert nmsolve.kept_fraction(w, np.isfinite(w)) == 0.0
    # finite totals beyond float64 do not overflow into nan or inf / inf
    assert nmsolve.kept_fraction(np.array([1e308, 1e308, 1.0, 1.0]), np.array([1, 0, 0, 0])) == pytest.approx(0.5)
    assert nmsolve.kept_magnitude(w, w == np.inf) == np.inf


@pytest.mark.parametrize("axis", [-1, 0])
def test_a_group_size_beyond_the_axis_is_one_padded_group(axis):
    x = np.array([[3.0, 1.0, 4.0, 1.0, 5.0, 9.0], [2.0, 6.0, 5.0, 3.0, 5.0, 8.0]])
    x = x if axis == -1 else np.ascontiguousarray(x.T)
    out = nmsolve.nm_mask(x, 2, 2**40, axis=axis, pad=True)  # kernels sized by m would need terabytes
    np.testing.assert_array_equal(out, nmsolve.nm_mask(x, 2, 6, axis=axis))
    np.testing.assert_array_equal(nmsolve.magnitude_mask(x, 9, 2**40, axis=axis, pad=True), np.ones_like(x, bool))
