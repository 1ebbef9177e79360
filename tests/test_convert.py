import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nmsolve
from tests.reference import (
    best_channel_permutation_bruteforce,
    channel_kept_naive,
    expected_retention_enumerated,
    nm_select_survivors_naive,
    ridge_refit_lstsq,
)


@st.composite
def pruned_case(draw, ties=False, max_groups=3):
    n, m = draw(st.sampled_from([(2, 4), (1, 4), (3, 4), (1, 2), (4, 8), (2, 3)]))
    rows = draw(st.integers(1, 5))
    groups = draw(st.integers(1, max_groups))
    elements = st.integers(-3, 3).map(float) if ties else st.floats(-1e3, 1e3, allow_nan=False, width=64)
    w = draw(hnp.arrays(np.float64, (rows, groups * m), elements=elements))
    mask = draw(hnp.arrays(np.bool_, w.shape))
    return w, mask, n, m


def surviving(w, mask, keep):
    return math.fsum(np.abs(w[keep & mask]).tolist())


# --------------------------------------------------------------------------- selection


@given(pruned_case(ties=True))
def test_selection_matches_the_naive_definition(case):
    w, mask, n, m = case
    res = nmsolve.unstructured_to_nm(w, mask, n=n, m=m)
    np.testing.assert_array_equal(res.mask, nm_select_survivors_naive(w, mask, range(w.shape[1]), n, m))
    assert nmsolve.is_nm(res.mask, n, m, exact=True)
    kept = res.mask & mask
    assert res.overlap == (kept.sum() / mask.sum() if mask.any() else 1.0)
    assert res.surviving_kept == pytest.approx(surviving(w, mask, res.mask), rel=1e-12, abs=1e-12)
    assert res.kept_magnitude == pytest.approx(math.fsum(np.abs(w[res.mask]).tolist()), rel=1e-12, abs=1e-12)
    np.testing.assert_array_equal(res.weights, np.where(res.mask, w, 0.0))
    np.testing.assert_array_equal(res.permutation, np.arange(w.shape[1]))


@given(pruned_case())
def test_permutation_is_valid_and_never_worse(case):
    w, mask, n, m = case
    plain = nmsolve.unstructured_to_nm(w, mask, n=n, m=m)
    perm = nmsolve.unstructured_to_nm(w, mask, n=n, m=m, permute=True, rng=0)
    assert sorted(perm.permutation.tolist()) == list(range(w.shape[1]))
    assert nmsolve.is_nm(perm.mask[:, perm.permutation], n, m, exact=True)
    np.testing.assert_array_equal(perm.mask, nm_select_survivors_naive(w, mask, perm.permutation, n, m))
    assert perm.surviving_kept >= plain.surviving_kept - 1e-9 * max(1.0, plain.surviving_kept)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("n", "m", "cols"), [(2, 4, 8), (2, 4, 12), (1, 4, 8)])
def test_permuted_conversion_reaches_the_optimum_over_all_permutations(seed, n, m, cols):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(10, cols))
    mask = rng.random(w.shape) < 0.5
    res = nmsolve.unstructured_to_nm(w, mask, n=n, m=m, permute=True, rng=seed)
    best = best_channel_permutation_bruteforce(np.where(mask, w, 0.0), n, m)
    assert res.surviving_kept == pytest.approx(best, rel=1e-12)
    assert res.surviving_kept == pytest.approx(channel_kept_naive(np.where(mask, w, 0.0), res.permutation, n, m))


def test_default_mask_is_the_nonzeros_and_fill_uses_lower_index():
    w = np.array([[0.0, 3.0, 0.0, 0.0, 1.0, 2.0, 5.0, 0.0]])
    res = nmsolve.unstructured_to_nm(w, n=2, m=4)
    np.testing.assert_array_equal(res.mask, [[1, 1, 0, 0, 0, 1, 1, 0]])
    assert res.density == 0.5 and res.overlap == 0.75
    # an explicit mask over dense weights: free slots take the largest pruned |w|
    dense = np.array([[9.0, 3.0, 8.0, 1.0]])
    res = nmsolve.unstructured_to_nm(dense, np.array([[0, 1, 0, 0]], bool), n=2, m=4)
    np.testing.assert_array_equal(res.mask, [[1, 1, 0, 0]])
    assert res.surviving_kept == 3.0 and res.kept_magnitude == 12.0


# --------------------------------------------------------------------------- choosing n


@pytest.mark.parametrize("density", [0.05, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0])
@pytest.mark.parametrize("m", [2, 4, 8])
def test_expected_retention_matches_enumeration(density, m):
    for n in range(1, m + 1):
        assert nmsolve.expected_retention(density, n, m) == pytest.approx(
            expected_retention_enumerated(density, n, m), rel=1e-12
        )


@pytest.mark.parametrize("density", [0.1, 0.25, 0.5, 0.6, 0.9])
@pytest.mark.parametrize("retain", [0.5, 0.8, 0.95])
def test_binomial_rule_picks_the_smallest_sufficient_n(density, retain):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, 400))
    mask = np.zeros(w.shape, bool)
    mask.flat[rng.choice(w.size, round(density * w.size), replace=False)] = True
    res = nmsolve.unstructured_to_nm(w, mask, m=4, retain=retain)
    ret = [expected_retention_enumerated(res.density, k, 4) for k in range(1, 5)]
    assert ret[res.n - 1] >= retain - 1e-12
    assert res.n == 1 or ret[res.n - 2] < retain
    assert res.rule == "binomial"
    assert nmsolve.unstructured_to_nm(w, mask, m=4, rule="density").n == min(4, max(1, math.ceil(density * 4)))
    emp = nmsolve.unstructured_to_nm(w, mask, m=4, rule="empirical", retain=retain)
    kept = [nmsolve.unstructured_to_nm(w, mask, n=k, m=4).overlap for k in range(1, 5)]
    assert kept[emp.n - 1] >= retain - 1e-9 and (emp.n == 1 or kept[emp.n - 2] < retain)


def test_rule_examples_and_empty_mask():
    w = np.ones((4, 8))
    half = np.tile([True, False], (4, 4))
    assert nmsolve.unstructured_to_nm(w, half, m=4).n == 2  # E[min(X,2)]/E[X] = 0.8125 >= 0.8
    res = nmsolve.unstructured_to_nm(w, np.zeros((4, 8), bool), m=4)
    assert res.n == 1 and res.density == 0.0 and res.overlap == 1.0 and res.surviving_fraction == 1.0
    assert nmsolve.unstructured_to_nm(np.zeros((4, 8)), m=4, rule="empirical").n == 1


# --------------------------------------------------------------------------- re-fit


@st.composite
def calibration_case(draw):
    w, mask, n, m = draw(pruned_case(max_groups=3))
    samples = draw(st.integers(1, 12))
    x = draw(hnp.arrays(np.float64, (samples, w.shape[1]), elements=st.floats(-10, 10, allow_nan=False, width=64)))
    ridge = draw(st.sampled_from([0.0, 1e-3, 1e-2, 1.0]))
    return w, mask, n, m, x, ridge


def relative_error(x, wq, w):
    # scale-invariant: normalise first so that tiny or huge values do not under/overflow when squared
    sx, sw = max(np.abs(x).max(), 1e-300), max(np.abs(w).max(), 1e-300)
    x, wq, w = x / sx, np.asarray(wq, np.float64) / sw, w / sw
    y = x @ w.T
    denom = float((y**2).sum())
    # y = 0 by cancellation leaves rounding noise: then the error is absolute (the library's rule)
    bound = float(np.einsum("ri,ij,rj->", np.abs(w), np.abs(x.T @ x), np.abs(w)))
    return float(((x @ wq.T - y) ** 2).sum()) / (denom if denom > 1e-12 * bound else 1.0)


@given(calibration_case())
def test_refit_never_increases_the_calibration_error(case):
    w, mask, n, m, x, ridge = case
    res = nmsolve.unstructured_to_nm(w, mask, n=n, m=m, calibration=x, ridge=ridge)
    assert res.calibration_error_after <= res.calibration_error_before
    # two formulations (Gram matrix vs direct product) of a quantity that cancellation in X W^T can make
    # large and ill-conditioned: agreement to 1e-9, relative or absolute
    tol = {"rel": 1e-9, "abs": 1e-9}
    assert res.calibration_error_before == pytest.approx(relative_error(x, np.where(res.mask, w, 0), w), **tol)
    assert res.calibration_error_after == pytest.approx(relative_error(x, res.weights, w), **tol)
    assert not (res.weights[~res.mask] != 0).any()  # pruned entries stay zero


@pytest.mark.parametrize("ridge", [1e-3, 1e-1])
def test_refit_matches_the_lstsq_oracle(ridge):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(12, 32))
    x = rng.normal(size=(200, 32)) @ rng.normal(size=(32, 32))  # correlated inputs: re-fit helps
    res = nmsolve.unstructured_to_nm(w, np.abs(w) > 0.5, n=2, m=4, calibration=x, ridge=ridge)
    lam = ridge * float(np.mean(np.diag(x.T @ x)))
    expected = ridge_refit_lstsq(w, res.mask, x, lam)
    np.testing.assert_allclose(res.weights, expected, rtol=1e-6, atol=1e-8)
    assert res.calibration_error_after < 0.5 * res.calibration_error_before


def test_refit_keeps_float32_and_ints_become_float64_and_accepts_3d_calibration():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(8, 16)).astype(np.float32)
    x = rng.normal(size=(4, 10, 16)).astype(np.float32)
    res = nmsolve.unstructured_to_nm(w, n=2, m=4, calibration=x)
    assert res.weights.dtype == np.float32
    assert res.calibration_error_after <= res.calibration_error_before
    res = nmsolve.unstructured_to_nm((w * 10).astype(np.int32), n=2, m=4, calibration=x)
    assert res.weights.dtype == np.float64
    assert nmsolve.unstructured_to_nm((w * 10).astype(np.int8), n=2, m=4).weights.dtype == np.float64


def test_refit_with_zero_inputs_keeps_masked_weights():
    w = np.random.default_rng(3).normal(size=(4, 8))
    res = nmsolve.unstructured_to_nm(w, n=2, m=4, calibration=np.zeros((5, 8)))
    np.testing.assert_array_equal(res.weights, np.where(res.mask, w, 0))
    assert res.calibration_error_before == res.calibration_error_after == 0.0


# --------------------------------------------------------------------------- layouts and bad input


def test_conv_weights_convert_on_the_channel_last_view():
    w = np.random.default_rng(4).normal(size=(6, 8, 3, 3))
    mask = np.abs(w) > 0.7
    res = nmsolve.unstructured_to_nm(w, mask, m=4, permute=True, rng=0)
    assert res.mask.shape == w.shape and res.weights.shape == w.shape
    mat, _ = nmsolve.weight_to_2d(res.mask)
    assert nmsolve.is_nm(mat[:, res.permutation], res.n, 4, exact=True)
    with pytest.raises(ValueError, match="2-d weight"):
        nmsolve.unstructured_to_nm(w, m=4, calibration=np.ones((3, 8)))


@pytest.mark.parametrize("view", [lambda x: x[::-1, ::-1], lambda x: x.T, lambda x: np.asfortranarray(x)])
def test_views_and_inputs_not_modified(view):
    rng = np.random.default_rng(5)
    w = view(rng.normal(size=(16, 16)))
    mask = view(rng.random((16, 16)) < 0.5)
    x = rng.normal(size=(20, 16))
    copies = (w.copy(), mask.copy(), x.copy())
    res = nmsolve.unstructured_to_nm(w, mask, m=4, permute=True, calibration=x, rng=0)
    ref = nmsolve.unstructured_to_nm(copies[0], copies[1], m=4, permute=True, calibration=copies[2], rng=0)
    np.testing.assert_array_equal(res.mask, ref.mask)
    np.testing.assert_array_equal(res.weights, ref.weights)
    for a, b in zip((w, mask, x), copies, strict=True):
        np.testing.assert_array_equal(a, b)


def test_huge_and_infinite_weights():
    w = np.array([[1e308, -1e308, 1.0, 2.0], [np.inf, 1.0, 2.0, 3.0]])
    res = nmsolve.unstructured_to_nm(w, n=2, m=4)
    np.testing.assert_array_equal(res.mask, [[1, 1, 0, 0], [1, 0, 0, 1]])
    with pytest.raises(ValueError, match="inf"):
        nmsolve.unstructured_to_nm(w, n=2, m=4, permute=True)
    with pytest.raises(ValueError, match="finite"):
        nmsolve.unstructured_to_nm(w, n=2, m=4, calibration=np.ones((2, 4)))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((np.full((2, 4), np.nan),), {}, ValueError, "NaN"),
        ((np.ones((2, 4)),), dict(calibration=np.full((3, 4), np.nan)), ValueError, "calibration contains NaN"),
        ((np.ones((2, 4)),), dict(calibration=np.ones((3, 5))), ValueError, "5 features"),
        ((np.ones((2, 4)), np.ones((2, 3), bool)), {}, ValueError, "mask has shape"),
        ((np.ones((2, 4)), np.array([["a"] * 4] * 2)), {}, TypeError, "boolean or numeric"),
        ((np.ones((2, 6)),), {}, ValueError, "axis 1 has length 6, not a multiple of m=4"),
        ((np.ones(4),), {}, ValueError, "at least 2"),
        ((np.ones((2, 4), bool),), {}, TypeError, "bool"),
        ((np.ones((2, 4)),), dict(rule="binomal"), ValueError, r"rule must be one of \['binomial', 'density'"),
        ((np.ones((2, 4)),), dict(retain=0), ValueError, "retain"),
        ((np.ones((2, 4)),), dict(retain=1.5), ValueError, "retain"),
        ((np.ones((2, 4)),), dict(ridge=-1), ValueError, "ridge"),
        ((np.ones((2, 4)),), dict(n=5), ValueError, "0 < n <= m"),
        ((np.ones((2, 4)),), dict(m=0), ValueError, "m must be >= 1"),
        ((np.ones((2, 4)),), dict(permute=True, permutation_method="x"), ValueError, "method must be one of"),
    ],
)
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        nmsolve.unstructured_to_nm(*args, **kwargs)


def test_expected_retention_bad_input():
    with pytest.raises(ValueError, match="density"):
        nmsolve.expected_retention(1.5, 2, 4)
    with pytest.raises(TypeError, match=r"density must be a number in \[0, 1\], got '0.5'"):
        nmsolve.expected_retention("0.5", 2, 4)
    assert nmsolve.expected_retention(0.0, 2, 4) == 1.0


def test_expected_retention_large_groups_do_not_overflow():
    # E[min(X, 2)] is 2 for all practical purposes at m = 4096, density 0.5: 2 / 2048
    assert nmsolve.expected_retention(0.5, 2, 4096) == pytest.approx(2 / 2048, rel=1e-12)
    exact = Fraction(sum(math.comb(4096, j) * min(j, 2048) for j in range(4097)), 2**4096 * 2048)
    assert nmsolve.expected_retention(0.5, 2048, 4096) == pytest.approx(float(exact), rel=1e-12)
    assert nmsolve.expected_retention(1e-12, 1, 10**6) == pytest.approx(1.0, rel=1e-5)
    assert nmsolve.expected_retention(0.25, 8, 8) == 1.0


@pytest.mark.parametrize("option", ["permute", "progress"])
def test_unstructured_to_nm_bool_options_must_be_bools(option):
    with pytest.raises(TypeError, match=f"{option} must be True or False, got 'no'"):
        nmsolve.unstructured_to_nm(np.ones((2, 4)), n=2, m=4, **{option: "no"})
