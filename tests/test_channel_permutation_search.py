"""Channel-permutation search internals: the swap-gain table against the naive definition, and the
exact optimum used by the benchmark against the brute-force oracle."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nmsolve
from bench.bench_permutation import exact_channel_optimum
from nmsolve.permutation.channel import _swap_init
from tests.reference import best_channel_permutation_bruteforce, channel_swap_gain_naive


@st.composite
def scores_and_perm(draw):
    n, m = draw(st.sampled_from([(2, 4), (1, 4), (3, 4), (1, 2), (2, 3), (4, 8)]))
    groups = draw(st.integers(2, 4 if m < 8 else 2))
    rows = draw(st.integers(1, 9))
    elements = st.one_of(st.floats(0, 1, width=64), st.sampled_from([0.0, 0.5, 1.0]))  # ties included
    scores = draw(hnp.arrays(np.float64, (rows, groups * m), elements=elements))
    perm = np.array(draw(st.permutations(range(groups * m))), dtype=np.int64)
    return scores, perm, n, m


@given(scores_and_perm())
def test_swap_gain_table_matches_the_naive_swap(case):
    scores, perm, n, m = case
    cols, rows = scores.shape[1], scores.shape[0]
    colv = np.ascontiguousarray(scores.T)
    groups = cols // m
    grp, pos = np.empty(cols, np.int64), np.empty(cols, np.int64)
    nth, nxt = np.empty((groups, rows)), np.empty((groups, rows))
    P, D = np.empty((cols, cols)), np.empty((cols, cols))
    _swap_init(colv, np.ascontiguousarray(scores), perm.copy(), n, m, grp, pos, nth, nxt, P, D)
    for x in range(cols):
        for y in range(cols):
            if grp[x] != grp[y]:
                assert D[x, y] == pytest.approx(channel_swap_gain_naive(scores, perm, x, y, n, m), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("n", "m", "cols"), [(2, 4, 8), (2, 4, 12), (1, 4, 12), (3, 4, 12), (1, 3, 9)])
def test_exact_optimum_of_the_benchmark_equals_the_brute_force(seed, n, m, cols):
    w = np.random.default_rng(seed).normal(size=(6, cols))
    identity = nmsolve.channel_permutation(w, n, m, max_iter=0).kept_before
    best = best_channel_permutation_bruteforce(w, n, m)
    exact, upper = exact_channel_optimum(w, n, m, identity)  # a weak lower bound: the MILP does the work
    assert exact == pytest.approx(best, rel=1e-9)
    assert upper >= best - 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_long_tabu_reaches_the_exact_optimum_on_24_columns(seed):
    # 4.5e12 partitions: far beyond enumeration; the LP + MILP certificate gives the optimum
    w = nmsolve.datasets.gaussian_matrix(32, 24, seed=seed, dtype=np.float64)
    res = nmsolve.channel_permutation(w, 2, 4, rng=seed, max_iter=3000, patience=3000)
    exact, upper = exact_channel_optimum(w, 2, 4, res.kept_after)
    assert res.kept_after == pytest.approx(exact, rel=1e-12)
    assert upper >= exact
