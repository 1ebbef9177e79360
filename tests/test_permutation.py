import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nmsolve
from tests.reference import (
    best_bimask_score_bruteforce,
    best_channel_permutation_bruteforce,
    bimask_backward_naive,
    bimask_score_naive,
    channel_bound_naive,
    channel_kept_naive,
    column_partitions,
    nm_mask_sorted,
)

PATTERNS = [(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 3), (4, 4)]


@st.composite
def weights_and_pattern(draw, ties=False, pad_rows=False):
    n, m = draw(st.sampled_from(PATTERNS))
    blocks = draw(st.integers(0, 4))
    extra = draw(st.integers(0, m - 1)) if pad_rows else 0
    groups = draw(st.integers(1, 3))
    elements = st.integers(-3, 3).map(float) if ties else st.floats(-1e3, 1e3, allow_nan=False, width=64)
    w = draw(hnp.arrays(np.float64, (blocks * m + extra, groups * m), elements=elements))
    return w, n, m


def permutation_of(draw, size):
    return np.array(draw(st.permutations(range(size))), dtype=np.int64)


# =========================================================================== Bi-Mask: oracles


@given(weights_and_pattern(ties=True, pad_rows=True), st.data())
def test_bimask_masks_match_the_naive_definition(case, data):
    w, n, m = case
    perm = permutation_of(data.draw, w.shape[0])
    fwd, back = nmsolve.bimask_masks(w, n, m, perm, pad=True)
    np.testing.assert_array_equal(fwd, nm_mask_sorted(np.abs(w), n, m))
    np.testing.assert_array_equal(back, bimask_backward_naive(w, fwd, perm, n, m))


@given(weights_and_pattern(pad_rows=True), st.data())
def test_bimask_masks_are_valid(case, data):
    w, n, m = case
    perm = permutation_of(data.draw, w.shape[0])
    fwd, back = nmsolve.bimask_masks(w, n, m, perm, pad=True)
    assert nmsolve.is_nm(fwd, n, m, exact=True)
    assert not (back & ~fwd).any()  # B is a subset of F
    assert nmsolve.is_nm(back[perm].T, n, m, pad=True)  # N:M along the output axis in permuted order
    if (w != 0).all():  # without exact zeros, B keeps exactly what the score counts
        assert back.sum() == bimask_score_naive(fwd, perm, n, m)


@given(weights_and_pattern(pad_rows=True), st.data())
def test_bimask_scores_of_candidates_match_the_naive_score(case, data):
    w, n, m = case
    rows = w.shape[0]
    perms = np.array([permutation_of(data.draw, rows) for _ in range(3)]).reshape(3, rows)
    res = nmsolve.bimask_permutation(w, n, m, candidates=perms, include_identity=False, pad=True)
    fwd = nm_mask_sorted(np.abs(w), n, m)
    scores = [bimask_score_naive(fwd, p, n, m) for p in perms]
    assert res.score == max(scores)
    np.testing.assert_array_equal(res.permutation, perms[int(np.argmax(scores))])  # first best
    assert res.identity_score == bimask_score_naive(fwd, np.arange(rows), n, m)
    assert res.max_score == fwd.sum()
    np.testing.assert_array_equal(res.backward_mask, bimask_backward_naive(w, fwd, res.permutation, n, m))


@pytest.mark.parametrize(("n", "m", "rows"), [(2, 4, 8), (1, 2, 6), (1, 3, 6), (2, 3, 6)])
def test_all_permutations_as_candidates_reach_the_brute_force_optimum(n, m, rows):
    fwd = np.random.default_rng(rows + m).random((rows, 7)) < 0.5
    perms = np.array(list(itertools.permutations(range(rows))))
    res = nmsolve.bimask_permutation(fwd, n, m, candidates=perms, include_identity=False)
    assert res.score == best_bimask_score_bruteforce(fwd, n, m)
    assert res.candidates == math.factorial(rows)


@pytest.mark.parametrize("seed", range(4))
def test_local_search_is_consistent_and_never_below_the_best_candidate(seed):
    rng = np.random.default_rng(seed)
    fwd = rng.random((8, 10)) < 0.5
    res = nmsolve.bimask_permutation(fwd, 2, 4, candidates=5, rng=seed, local_search=True, max_sweeps=10)
    assert res.random_score <= res.score <= best_bimask_score_bruteforce(fwd, 2, 4)
    assert res.score == bimask_score_naive(fwd, res.permutation, 2, 4)
    assert res.local_search_gain == res.score - res.random_score
    assert (res.local_search_swaps > 0) == (res.local_search_gain > 0)


def test_bool_input_is_the_forward_mask_and_ranks_backward_by_itself():
    fwd = np.random.default_rng(1).random((12, 16)) < 0.4
    perm = np.random.default_rng(2).permutation(12)
    res = nmsolve.bimask_permutation(fwd, 2, 4, candidates=perm[None, :], include_identity=False)
    np.testing.assert_array_equal(res.forward_mask, fwd)
    assert res.forward_mask is not fwd
    assert res.backward_mask.sum() == res.score == bimask_score_naive(fwd, perm, 2, 4)
    np.testing.assert_array_equal(res.backward_mask, bimask_backward_naive(fwd.astype(float), fwd, perm, 2, 4))
    f2, b2 = nmsolve.bimask_masks(fwd, 2, 4, perm)
    np.testing.assert_array_equal(f2, fwd)
    np.testing.assert_array_equal(b2, res.backward_mask)


# =========================================================================== Bi-Mask: behaviour


def test_identity_candidate_makes_the_result_never_worse_and_ties_keep_it():
    w = np.random.default_rng(3).normal(size=(32, 16))
    res = nmsolve.bimask_permutation(w, 2, 4, candidates=10, rng=0)
    assert res.score >= res.identity_score and res.candidates == 11
    # a forward mask whose every block column already has <= n ones: identity is optimal, kept on ties
    fwd = np.tile(np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], bool), (2, 1))
    res = nmsolve.bimask_permutation(fwd, 2, 4, candidates=20, rng=0)
    assert res.score == res.identity_score == res.max_score
    np.testing.assert_array_equal(res.permutation, np.arange(8))


def test_published_mode_excludes_the_identity():
    w = np.random.default_rng(4).normal(size=(16, 8))
    res = nmsolve.bimask_permutation(w, 2, 4, candidates=7, rng=0, include_identity=False)
    assert res.candidates == 7
    assert res.identity_score == bimask_score_naive(nm_mask_sorted(np.abs(w), 2, 4), np.arange(16), 2, 4)


def test_bimask_is_reproducible_from_a_seed_and_accepts_generators():
    w = np.random.default_rng(5).normal(size=(64, 32))
    a = nmsolve.bimask_permutation(w, 2, 4, candidates=10, rng=7, local_search=True)
    b = nmsolve.bimask_permutation(w, 2, 4, candidates=10, rng=np.random.default_rng(7), local_search=True)
    np.testing.assert_array_equal(a.permutation, b.permutation)
    assert a.score == b.score


def test_local_search_gains_on_a_gaussian_layer_and_partners_option():
    w = np.random.default_rng(6).normal(size=(128, 64))
    full = nmsolve.bimask_permutation(w, 2, 4, candidates=20, rng=0, local_search=True)
    assert full.local_search_gain > 0 and full.score > full.random_score
    sampled = nmsolve.bimask_permutation(w, 2, 4, candidates=20, rng=0, local_search=True, partners=16)
    assert sampled.score >= sampled.random_score
    assert sampled.score == bimask_score_naive(sampled.forward_mask, sampled.permutation, 2, 4)
    quick = nmsolve.bimask_permutation(w, 2, 4, candidates=2, rng=0, local_search=True, time_limit=1e-6)
    assert quick.score == bimask_score_naive(quick.forward_mask, quick.permutation, 2, 4)
    none = nmsolve.bimask_permutation(w, 2, 4, candidates=2, rng=0, local_search=True, max_sweeps=0)
    assert none.local_search_gain == 0


def test_bimask_inf_is_kept_first_and_huge_values():
    w = np.array([[1.0, np.inf, 2.0, 0.5], [3.0, 1.0, -np.inf, 0.1], [1e308, -1e308, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    fwd, back = nmsolve.bimask_masks(w, 1, 4, np.arange(4))
    np.testing.assert_array_equal(fwd, nm_mask_sorted(np.abs(w), 1, 4))
    np.testing.assert_array_equal(back, bimask_backward_naive(w, fwd, np.arange(4), 1, 4))
    assert back[0, 1] and back[1, 2]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int8, np.int64, np.uint8])
def test_bimask_dtypes(dtype):
    w = (np.random.default_rng(7).normal(size=(8, 8)) * 40).astype(dtype)
    perm = np.random.default_rng(8).permutation(8)
    fwd, back = nmsolve.bimask_masks(w, 2, 4, perm)
    ref = np.abs(w.astype(np.float64))
    np.testing.assert_array_equal(fwd, nm_mask_sorted(ref, 2, 4))
    np.testing.assert_array_equal(back, bimask_backward_naive(ref, fwd, perm, 2, 4))


def test_bimask_most_negative_int64_has_a_positive_magnitude():
    w = np.array([[np.iinfo(np.int64).min, 1, 2, 3]] * 4, dtype=np.int64)
    fwd, back = nmsolve.bimask_masks(w, 1, 4, np.arange(4))
    assert fwd[:, 0].all() and back[0, 0] and back.sum() == 1  # one block, ties -> first row


@pytest.mark.parametrize(
    "view", [lambda x: x[::-1], lambda x: x[:, ::2], lambda x: np.asfortranarray(x), lambda x: x.T[:8].T]
)
def test_bimask_non_contiguous_views_and_input_not_modified(view):
    base = np.random.default_rng(9).normal(size=(16, 16))
    w = view(base)
    before = w.copy()
    perm = np.random.default_rng(1).permutation(w.shape[0])
    res = nmsolve.bimask_permutation(w, 2, 4, candidates=4, rng=0, local_search=True)
    ref = nmsolve.bimask_permutation(np.array(w), 2, 4, candidates=4, rng=0, local_search=True)
    np.testing.assert_array_equal(res.permutation, ref.permutation)
    np.testing.assert_array_equal(nmsolve.bimask_masks(w, 2, 4, perm)[1], nmsolve.bimask_masks(before, 2, 4, perm)[1])
    np.testing.assert_array_equal(w, before)
    fwd = np.array(w > 0)
    nmsolve.bimask_permutation(fwd, 2, 4, candidates=2, rng=0, local_search=True)
    np.testing.assert_array_equal(fwd, before > 0)


def test_bimask_empty_inputs():
    res = nmsolve.bimask_permutation(np.zeros((0, 8)), 2, 4, candidates=3, rng=0, local_search=True)
    assert res.permutation.shape == (0,) and res.score == 0 and res.backward_mask.shape == (0, 8)
    res = nmsolve.bimask_permutation(np.zeros((8, 0), bool), 2, 4, candidates=3, rng=0, local_search=True)
    assert res.score == 0 and res.kept_fraction == 1.0
    fwd, back = nmsolve.bimask_masks(np.zeros((4, 0)), 2, 4, np.arange(4))
    assert fwd.shape == back.shape == (4, 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(F_or_W=np.full((4, 4), np.nan)), ValueError, "NaN"),
        (dict(F_or_W=np.zeros(8)), ValueError, "2-d array"),
        (dict(F_or_W=np.zeros((2, 4, 4))), ValueError, "2-d array"),
        (dict(F_or_W=np.zeros((6, 4))), ValueError, "axis 0 has length 6, not a multiple of m=4; pass pad=True"),
        (dict(F_or_W=np.zeros((4, 6))), ValueError, "axis 1 has length 6"),
        (dict(F_or_W=np.zeros((4, 4), complex)), TypeError, "complex"),
        (dict(F_or_W=[[1.0, 2.0], [1.0]]), ValueError, "rectangular"),
        (dict(n=5), ValueError, "0 < n <= m"),
        (dict(candidates=0, include_identity=False), ValueError, "nothing to choose"),
        (dict(candidates=-1), ValueError, "candidates must be >= 0"),
        (dict(candidates=np.zeros((2, 3), int)), ValueError, r"shape \(K, 4\)"),
        (dict(candidates=np.zeros((2, 4))), ValueError, "integer array"),
        (dict(candidates=np.zeros((2, 4), int)), ValueError, "exactly once"),
        (dict(rng=1.5), TypeError, "rng"),
        (dict(max_sweeps=-1), ValueError, "max_sweeps"),
        (dict(partners=0), ValueError, "partners"),
        (dict(time_limit=0), ValueError, "time_limit"),
        (dict(time_limit="1"), TypeError, "time_limit"),
        (dict(include_identity=1), TypeError, "include_identity"),
        (dict(local_search="yes"), TypeError, "local_search must be True or False, got 'yes'"),
        (dict(progress="no"), TypeError, "progress must be True or False, got 'no'"),
        (dict(pad="yes"), TypeError, "pad must be True or False, got 'yes'"),
    ],
)
def test_bimask_permutation_bad_input(kwargs, error, match):
    args = dict(F_or_W=np.ones((4, 4)), n=2, m=4)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        nmsolve.bimask_permutation(args.pop("F_or_W"), args.pop("n"), args.pop("m"), **args)


@pytest.mark.parametrize(
    ("perm", "error", "match"),
    [
        ([0, 1, 2], ValueError, "length 3, expected 4"),
        ([0, 1, 1, 2], ValueError, "exactly once"),
        ([0, 1, 2, 4], ValueError, "exactly once"),
        ([0.0, 1.0, 2.0, 3.0], TypeError, "integer"),
        ([[0, 1, 2, 3]], TypeError, "1-d"),
    ],
)
def test_bimask_masks_bad_permutation(perm, error, match):
    with pytest.raises(error, match=match):
        nmsolve.bimask_masks(np.ones((4, 4)), 2, 4, perm)


def test_bimask_masks_pad_for_ragged_rows_and_columns():
    w = np.random.default_rng(10).normal(size=(6, 7))
    with pytest.raises(ValueError, match="pad=True"):
        nmsolve.bimask_masks(w, 2, 4, np.arange(6))
    fwd, back = nmsolve.bimask_masks(w, 2, 4, np.arange(6)[::-1], pad=True)
    assert nmsolve.is_nm(fwd, 2, 4, exact=True, pad=True)
    np.testing.assert_array_equal(back, bimask_backward_naive(w, fwd, np.arange(6)[::-1], 2, 4))


# =========================================================================== channel permutations


@st.composite
def channel_case(draw, max_groups=4):
    n, m = draw(st.sampled_from([(2, 4), (1, 4), (3, 4), (1, 2), (2, 3), (4, 8)]))
    groups = draw(st.integers(1, max_groups if m < 8 else 2))
    rows = draw(st.integers(1, 6))
    w = draw(hnp.arrays(np.float64, (rows, groups * m), elements=st.floats(-100, 100, allow_nan=False, width=64)))
    return w, n, m


def check_result(res, w, n, m):
    cols = w.shape[1]
    assert sorted(res.permutation.tolist()) == list(range(cols))
    assert res.kept_before == pytest.approx(channel_kept_naive(w, range(cols), n, m), rel=1e-12, abs=1e-12)
    assert res.kept_after == pytest.approx(channel_kept_naive(w, res.permutation, n, m), rel=1e-12, abs=1e-12)
    assert res.bound == pytest.approx(channel_bound_naive(w, n, m), rel=1e-12, abs=1e-12)
    assert res.kept_after >= res.kept_before  # never worse than the identity
    assert res.kept_after <= res.bound + 1e-9 * max(1.0, res.bound)
    gap = res.bound - res.kept_before
    if gap > 1e-9 * max(1.0, res.bound):
        assert res.efficacy == pytest.approx((res.kept_after - res.kept_before) / gap, abs=1e-9)
    assert 0.0 <= res.efficacy <= 1.0


@given(channel_case(), st.sampled_from(["greedy", "tabu", "stripes"]), st.booleans())
def test_channel_permutation_reports_match_the_naive_definitions(case, method, refine):
    w, n, m = case
    res = nmsolve.channel_permutation(w, n, m, method=method, rng=0, max_iter=50, escapes=3, refine=refine)
    check_result(res, w, n, m)
    assert res.method == method


@given(channel_case(max_groups=3))
def test_exhaustive_stripes_equal_the_brute_force_optimum(case):
    w, n, m = case
    groups = w.shape[1] // m
    res = nmsolve.channel_permutation(w, n, m, method="stripes", stripe_groups=groups, escapes=0)
    best = best_channel_permutation_bruteforce(w, n, m)
    assert res.kept_after == pytest.approx(best, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("n", "m", "cols"), [(2, 4, 8), (2, 4, 12), (1, 4, 12), (1, 3, 9)])
def test_tabu_reaches_the_brute_force_optimum_on_tiny_layers(seed, n, m, cols):
    w = np.random.default_rng(seed).normal(size=(16, cols))
    res = nmsolve.channel_permutation(w, n, m, rng=seed, max_iter=400, patience=400)
    assert res.kept_after == pytest.approx(best_channel_permutation_bruteforce(w, n, m), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_tabu_is_never_below_greedy_and_refine_never_lowers(seed):
    w = np.random.default_rng(seed).normal(size=(32, 32))
    greedy = nmsolve.channel_permutation(w, 2, 4, method="greedy")
    tabu = nmsolve.channel_permutation(w, 2, 4, rng=seed, max_iter=300)
    assert tabu.kept_after >= greedy.kept_after - 1e-9
    refined = nmsolve.channel_permutation(w, 2, 4, method="greedy", refine=True, rng=seed)
    assert refined.kept_after >= greedy.kept_after - 1e-9
    check_result(refined, w, 2, 4)


def test_all_column_partitions_enumerated_by_the_oracle():
    assert sum(1 for _ in column_partitions(8, 4)) == 35
    assert sum(1 for _ in column_partitions(12, 4)) == 5775


def test_channel_permutation_is_reproducible_and_gains_on_gaussian():
    from nmsolve.datasets import gaussian_matrix

    w = gaussian_matrix(64, 32, seed=3)
    a = nmsolve.channel_permutation(w, 2, 4, rng=11)
    b = nmsolve.channel_permutation(w, 2, 4, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(a.permutation, b.permutation)
    assert a.efficacy > 0.1 and a.iterations > 0 and a.seconds >= 0
    s1 = nmsolve.channel_permutation(w, 2, 4, method="stripes", rng=2, escapes=5)
    s2 = nmsolve.channel_permutation(w, 2, 4, method="stripes", rng=2, escapes=5)
    np.testing.assert_array_equal(s1.permutation, s2.permutation)


def test_time_limit_returns_a_valid_permutation():
    w = np.random.default_rng(12).normal(size=(64, 64))
    for method in ("tabu", "stripes"):
        res = nmsolve.channel_permutation(w, 2, 4, method=method, time_limit=1e-6, rng=0, refine=True)
        check_result(res, w, 2, 4)


@pytest.mark.parametrize("method", ["tabu", "greedy", "stripes"])
def test_a_time_limit_is_used_in_full_and_a_longer_one_is_never_worse(method):
    # issue 13 item 15: time_limit=1 used to stop after 0.03 s (the default 1000 swaps / patience)
    from nmsolve.datasets import gaussian_matrix

    w = gaussian_matrix(128 if method != "stripes" else 32, 64, seed=1, dtype=np.float64)
    short = nmsolve.channel_permutation(w, 2, 4, method=method, rng=3, time_limit=0.1)
    full = nmsolve.channel_permutation(w, 2, 4, method=method, rng=3, time_limit=0.3)
    assert full.seconds >= 0.25 or full.optimal
    assert full.kept_after >= short.kept_after  # the same seeded path, searched further
    check_result(full, w, 2, 4)
    if method != "stripes":  # (stripes' default 100 escapes take seconds)
        quick = nmsolve.channel_permutation(w, 2, 4, method=method, rng=3)  # the default work limits
        assert not quick.optimal and quick.seconds < 0.25
        if method == "greedy" or full.iterations >= quick.iterations:  # greedy restarts from its optimum
            assert full.kept_after >= quick.kept_after


def test_a_time_limit_stops_early_at_a_proven_optimum():
    # the bound is reachable (pair every large column with a small one): proven, no need to wait
    w = np.array([[1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]] * 3)
    for method in ("tabu", "greedy", "stripes"):
        res = nmsolve.channel_permutation(w, 2, 4, method=method, rng=0, time_limit=30)
        assert res.optimal and res.seconds < 5 and res.kept_after == pytest.approx(res.bound), method
    # stripes re-splitting every group at once is exhaustive: proven even below the bound
    w = np.random.default_rng(5).normal(size=(40, 12))
    res = nmsolve.channel_permutation(w, 2, 4, method="stripes", stripe_groups=3, time_limit=30)
    assert res.optimal and res.seconds < 5
    assert res.kept_after == pytest.approx(best_channel_permutation_bruteforce(w, 2, 4), rel=1e-12)
    assert not nmsolve.channel_permutation(w, 2, 4, method="stripes", stripe_groups=2, escapes=0).optimal


@pytest.mark.parametrize(("n", "m"), [(4, 4), (1, 1)])
def test_dense_pattern_is_the_identity(n, m):
    w = np.random.default_rng(13).normal(size=(4, 8))
    res = nmsolve.channel_permutation(w, n, m)
    np.testing.assert_array_equal(res.permutation, np.arange(8))
    assert res.efficacy == 1.0 and res.kept_after == res.kept_before == pytest.approx(res.bound, rel=1e-12)


def test_zero_matrix_single_group_and_empty_rows():
    for w in (np.zeros((3, 8)), np.ones((3, 4)), np.zeros((0, 8))):
        res = nmsolve.channel_permutation(w, 2, 4)
        np.testing.assert_array_equal(res.permutation, np.arange(w.shape[1]))
        assert res.efficacy == 1.0


def test_conv_weights_are_searched_on_the_channel_last_view():
    w = np.random.default_rng(14).normal(size=(4, 8, 3, 3))
    res = nmsolve.channel_permutation(w, 2, 4, rng=0)
    mat, _ = nmsolve.weight_to_2d(w)
    check_result(res, mat, 2, 4)


def test_scale_invariance_and_huge_values():
    w = np.random.default_rng(15).normal(size=(16, 16))
    a = nmsolve.channel_permutation(w, 2, 4, rng=0)
    b = nmsolve.channel_permutation(w * 1e300, 2, 4, rng=0)
    assert b.efficacy == pytest.approx(a.efficacy, abs=1e-9)
    assert np.isfinite(b.kept_after)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int8, np.int64])
def test_channel_dtypes(dtype):
    w = (np.random.default_rng(16).normal(size=(8, 16)) * 30).astype(dtype)
    check_result(nmsolve.channel_permutation(w, 2, 4, rng=0), w.astype(np.float64), 2, 4)


@pytest.mark.parametrize("view", [lambda x: x[::-1, ::-1], lambda x: x.T, lambda x: np.asfortranarray(x)])
def test_channel_views_and_input_not_modified(view):
    w = view(np.random.default_rng(17).normal(size=(16, 16)))
    before = w.copy()
    res = nmsolve.channel_permutation(w, 2, 4, rng=0)
    np.testing.assert_array_equal(res.permutation, nmsolve.channel_permutation(before, 2, 4, rng=0).permutation)
    np.testing.assert_array_equal(w, before)


@pytest.mark.parametrize(
    ("w", "kwargs", "error", "match"),
    [
        (np.full((4, 8), np.nan), {}, ValueError, "NaN"),
        (np.full((4, 8), np.inf), {}, ValueError, "inf"),
        (np.ones((4, 6)), {}, ValueError, "axis 1 has length 6, not a multiple of m=4"),
        (np.ones(8), {}, ValueError, "at least 2"),
        (np.ones((4, 8), bool), {}, TypeError, "bool"),
        (np.ones((4, 8)), dict(method="tabo"), ValueError, r"method must be one of \['greedy', 'stripes', 'tabu'\]"),
        (np.ones((4, 8)), dict(method="stripes", stripe_groups=5), ValueError, "stripe_groups=5 with m=4.*<= 4"),
        (np.ones((4, 32)), dict(n=8, m=16, method="stripes"), ValueError, r"supports m <= 8, got 8:16.*greedy.*tabu"),
        (np.ones((4, 8)), dict(max_iter=-1), ValueError, "max_iter"),
        (np.ones((4, 8)), dict(patience=0), ValueError, "patience"),
        (np.ones((4, 8)), dict(escapes=1.5), TypeError, "escapes"),
        (np.ones((4, 8)), dict(time_limit=-1), ValueError, "time_limit"),
        (np.ones((4, 8)), dict(rng="x"), TypeError, "rng"),
        (np.ones((4, 8)), dict(n=3, m=2), ValueError, "0 < n <= m"),
    ],
)
def test_channel_permutation_bad_input(w, kwargs, error, match):
    with pytest.raises(error, match=match):
        nmsolve.channel_permutation(w, **kwargs)


def test_channel_method_table_documents_and_dispatches():
    from nmsolve.permutation.channel import METHODS

    assert sorted(METHODS) == ["greedy", "stripes", "tabu"]
    doc = " ".join(nmsolve.channel_permutation.__doc__.split())
    assert "{methods}" not in doc
    w = np.random.default_rng(0).normal(size=(8, 16))
    for name, entry in METHODS.items():
        assert f'``"{name}"``: ' + " ".join(entry.summary.split()) in doc
        assert nmsolve.channel_permutation(w, 2, 4, method=name, rng=0, max_iter=20, escapes=2).method == name


@pytest.mark.parametrize(("n", "m"), [(1, 4), (2, 4), (4, 8), (8, 16), (16, 32)])
def test_every_method_supports_or_refuses_every_pattern_and_the_default_supports_all(n, m):
    from nmsolve.permutation.channel import METHODS

    w = np.random.default_rng(m + n).normal(size=(32, 64))
    identity = channel_kept_naive(w, range(64), n, m)
    assert nmsolve.channel_permutation(w, n, m).kept_after >= identity  # the default method, no options
    for name, entry in METHODS.items():
        if entry.max_m is not None and m > entry.max_m:
            with pytest.raises(ValueError, match=f"method='{name}' supports m <= {entry.max_m}, got {n}:{m}"):
                nmsolve.channel_permutation(w, n, m, method=name)
            continue
        # stripes at 4:8 re-splits C(16, 8) subsets per pair of groups: two groups (exhaustive) keep it quick
        case = w[:8, :16] if name == "stripes" and m == 8 else w
        res = nmsolve.channel_permutation(case, n, m, method=name, rng=0, max_iter=200, escapes=2)
        check_result(res, case, n, m)
        assert res.kept_after >= channel_kept_naive(case, range(case.shape[1]), n, m)
    assert METHODS["tabu"].max_m is None and METHODS["greedy"].max_m is None


def test_stripes_refuse_too_many_group_sets():
    with pytest.raises(ValueError, match="use method='tabu'"):
        nmsolve.channel_permutation(np.ones((1, 4 * 200)), 2, 4, method="stripes", stripe_groups=4)


def test_tiny_but_real_gains_are_taken():
    # found by hypothesis: a gain of 7.6e-10 of max|W| used to fall under the search tolerance
    w = np.array([[0.0, 0.0, 1.0, 7.6371636e-10, 7.6371636e-10, 7.6371636e-10, 7.6371636e-10, 7.6371636e-10]])
    best = best_channel_permutation_bruteforce(w, 3, 4)
    for method in ("stripes", "tabu", "greedy"):
        res = nmsolve.channel_permutation(w, 3, 4, method=method, rng=0)
        assert res.kept_after == pytest.approx(best, rel=1e-15), method


def test_bimask_big_endian_input():
    w = np.random.default_rng(3).standard_normal((8, 8))
    for got, want in zip(
        nmsolve.bimask_masks(w.astype(">f8"), 2, 4, np.arange(8)),
        nmsolve.bimask_masks(w, 2, 4, np.arange(8)),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    assert (
        nmsolve.bimask_permutation(w.astype(">f4"), 2, 4, rng=0).score
        == nmsolve.bimask_permutation(w.astype(np.float32), 2, 4, rng=0).score
    )
