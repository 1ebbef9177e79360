"""C(m, n) combination tables and masks from chosen combinations (LBC)."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nmsolve
from tests.test_nm import scores_and_pattern


@pytest.mark.parametrize(("n", "m"), [(1, 1), (1, 4), (2, 4), (3, 4), (4, 8), (3, 7), (8, 16)])
def test_combinations_match_itertools(n, m):
    table = nmsolve.combinations(n, m)
    expected = [tuple(np.flatnonzero(row)) for row in table]
    assert expected == list(itertools.combinations(range(m), n))
    assert table.dtype == bool and not table.flags.writeable
    assert nmsolve.combinations(n, m) is table  # cached


def test_combinations_reject_huge_tables():
    with pytest.raises(ValueError, match=r"C\(32, 16\) = 601080390 combinations"):
        nmsolve.combinations(16, 32)


@given(scores_and_pattern(elements=st.integers(-1000, 1000).map(float)))
def test_best_combination_mask_equals_nm_mask(case):
    x, n, m = case
    if math.comb(m, n) > 5000:
        return
    scores = nmsolve.combination_scores(x, n, m)
    assert scores.shape == (x.shape[0], x.shape[1] // m, math.comb(m, n))
    mask = nmsolve.combination_mask(nmsolve.best_combination(scores), n, m)
    np.testing.assert_array_equal(mask, nmsolve.nm_mask(x, n, m))


def test_combination_mask_union_of_alive_sets():
    alive = np.zeros((1, 2, 6), dtype=bool)
    alive[0, 0, [0, 5]] = True  # {0,1} | {2,3}
    alive[0, 1, 3] = True  # {1,2}
    np.testing.assert_array_equal(nmsolve.combination_mask(alive, 2, 4), [[1, 1, 1, 1, 0, 1, 1, 0]])
    with pytest.raises(ValueError, match=r"\(\.\.\., G, 6\)"):
        nmsolve.combination_mask(alive[..., :5], 2, 4)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        nmsolve.combination_mask(np.array([6]), 2, 4)
    with pytest.raises(TypeError, match="integer indices or booleans"):
        nmsolve.combination_mask(np.array([0.5]), 2, 4)


def test_combination_mask_axis():
    idx = np.array([[0, 5], [1, 2]])  # (rows, groups)
    mask = nmsolve.combination_mask(idx, 2, 4, axis=0)
    assert mask.shape == (8, 2)
    np.testing.assert_array_equal(mask[:, 0], [1, 1, 0, 0, 0, 0, 1, 1])


def test_best_combination_rejects_nan():
    with pytest.raises(ValueError, match="combo_scores contains NaN"):
        nmsolve.best_combination(np.array([[1.0, np.nan]]))


def _extended_sum(values):
    """The documented rule: more +inf than -inf kept -> inf, fewer -> -inf, as many -> the exact finite sum."""
    more = sum(v == math.inf for v in values) - sum(v == -math.inf for v in values)
    if more:
        return math.copysign(math.inf, more)
    total = sum((Fraction(v) for v in values if math.isfinite(v)), Fraction(0))
    if abs(total) > Fraction(np.finfo(np.float64).max):
        return math.inf if total > 0 else -math.inf
    return float(total)


@given(
    scores_and_pattern(
        elements=st.sampled_from([-math.inf, math.inf, -1e308, 1e308, -2.0, -0.0, 0.0, 1.0, 3.0, 5e-324])
    )
)
def test_combination_scores_with_infinities_follow_the_extended_sum(case):
    x, n, m = case
    if math.comb(m, n) > 5000:
        return
    scores = nmsolve.combination_scores(x, n, m)
    assert not np.isnan(scores).any()
    table = [c for c in itertools.combinations(range(m), n)]
    for r, g in itertools.product(range(x.shape[0]), range(x.shape[1] // m)):
        group = [float(v) for v in x[r, g * m : (g + 1) * m]]
        for c, subset in enumerate(table):
            terms = [group[i] for i in subset]
            want = _extended_sum(terms)
            if math.isinf(want):
                assert scores[r, g, c] == want
            else:  # float64 sums round: within n ulps of the largest term
                scale = max((abs(t) for t in terms if math.isfinite(t)), default=0.0)
                assert abs(scores[r, g, c] - want) <= 4 * n * np.finfo(np.float64).eps * scale
    if np.abs(x[np.isfinite(x)]).max(initial=0.0) > 1e300:
        return  # finite sums may overflow to inf and tie with the infinities
    # a group where nm_mask keeps a +inf: the best combination keeps one too (sums reaching inf tie)
    mask = nmsolve.combination_mask(nmsolve.best_combination(scores), n, m)
    per_group = (*x.shape[:-1], x.shape[-1] // m, m)
    nm_keeps = (nmsolve.nm_mask(x, n, m) & (x == np.inf)).reshape(per_group).any(axis=-1)
    best_keeps = (mask & (x == np.inf)).reshape(per_group).any(axis=-1)
    decided = scores.max(axis=-1) > -np.inf  # where every combination sums to -inf, all tie
    assert (best_keeps >= nm_keeps)[decided].all()


def test_combination_scores_with_inf_examples():
    x = np.array([[np.inf, 1.0, 5.0, 2.0], [1.0, -np.inf, 2.0, 3.0]])
    np.testing.assert_array_equal(
        nmsolve.combination_scores(x, 2, 4),
        [[[np.inf, np.inf, np.inf, 6.0, 3.0, 7.0]], [[-np.inf, 3.0, 4.0, -np.inf, -np.inf, 5.0]]],
    )
    np.testing.assert_array_equal(nmsolve.best_combination(nmsolve.combination_scores(x, 2, 4)), [[0], [5]])
    # finite sums that overflow in the running sum are redone exactly
    assert nmsolve.combination_scores(np.array([1e308, 1e308, -1e308, -1e308]), 4, 4).tolist() == [[0.0]]


def test_best_combination_of_no_combinations_is_refused_clearly():
    with pytest.raises(ValueError, match=r"combo_scores has shape \(2, 0\): its last axis holds no combination"):
        nmsolve.best_combination(np.zeros((2, 0)))
    assert nmsolve.best_combination(np.zeros((0, 6))).shape == (0,)


@pytest.mark.parametrize(("n", "m"), [(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (3, 8), (7, 8), (8, 16)])
def test_combination_scores_are_the_gathered_numpy_sums_bit_for_bit(n, m):
    # the compiled sums (n < 8) add in numpy's own order; LBC's removal order depends on exact ties
    rng = np.random.default_rng(n * 100 + m)
    x = rng.normal(size=(5, 3 * m)) * np.exp(4 * rng.normal(size=(5, 3 * m)))
    x[0, :m] = 0.1  # equal entries: ties that a different order of additions could break
    big = np.full((2, m), 1e308)  # n > 1: sums that overflow are redone exactly (here: to inf)
    table = np.nonzero(nmsolve.combinations(n, m))[1].reshape(-1, n)
    expected = x.reshape(5, 3, m)[..., table].sum(axis=-1)
    got = nmsolve.combination_scores(x, n, m)
    assert got.dtype == np.float64 and np.array_equal(got, expected)
    assert (nmsolve.combination_scores(big, n, m) == (np.inf if n > 1 else 1e308)).all()
