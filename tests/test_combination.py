"""C(m, n) combination tables and masks from chosen combinations (LBC)."""

import itertools
import math

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
