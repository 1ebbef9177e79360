"""refine_mask: exact swap gains, never worse, local (and on tiny layers global) optimality, validation."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nmsolve
from nmsolve.oneshot import _refine, refine
from nmsolve.oneshot._common import damped, row_errors
from tests.reference import in_group_swaps, nm_row_masks, refit_row_error


def _layer(rows: int, cols: int, seed: int, samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weights and a Gram matrix of correlated inputs (so that masks interact)."""
    rng = np.random.default_rng(seed)
    samples = samples or 4 * cols
    x = rng.normal(size=(samples, cols)) @ rng.normal(size=(cols, cols)) + 0.3 * rng.normal(size=(samples, cols))
    return rng.normal(size=(rows, cols)), x.T @ x


def _random_nm(rows: int, cols: int, n: int, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.random((rows, cols))
    return nmsolve.nm_mask(scores, n, m)


def _row_state(hd: np.ndarray, w: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(a[0] for a in refine._search_state(hd, (hd @ w)[None], keep[None]))


# --------------------------------------------------------------------------- the swap gain and update


@pytest.mark.parametrize("seed", range(6))
def test_swap_gain_equals_bruteforce_refit_difference(seed):
    rng = np.random.default_rng(seed)
    cols, kept = 12, 5
    w, h = _layer(1, cols, seed, samples=30)
    hd, _ = damped(h, 0.05)
    keep = np.zeros(cols, bool)
    keep[rng.choice(cols, kept, replace=False)] = True
    S, D, A, c, U, r, s = _row_state(hd, w[0], keep)
    base = refit_row_error(hd, w[0], keep)
    scale = float(w[0] @ hd @ w[0])
    for p in range(len(S)):
        for q in range(len(D)):
            other = keep.copy()
            other[S[p]], other[D[q]] = False, True
            gain = _refine.swap_gain(A, c, U, r, s, p, q)
            assert gain == pytest.approx(base - refit_row_error(hd, w[0], other), abs=1e-9 * scale)


@pytest.mark.parametrize("seed", range(4))
def test_swap_update_matches_a_fresh_state(seed):
    rng = np.random.default_rng(seed)
    cols = 16
    w, h = _layer(1, cols, seed)
    hd, _ = damped(h, 0.01)
    keep = _random_nm(1, cols, 2, 4, seed)[0]
    S, D, A, c, U, r, s = _row_state(hd, w[0], keep)
    kept, slot = keep.copy(), np.empty(cols, dtype=np.int64)
    slot[S], slot[D] = np.arange(len(S)), np.arange(len(D))
    k, d = len(S), len(D)
    for _ in range(10):  # a chain of random swaps, each checked against a recomputation
        p = int(rng.integers(k))
        q = int(rng.integers(d))
        scratch = (np.empty(k), np.empty(d), np.empty(k), np.empty(d))
        _refine._swap(hd, S, D, A, c, U, r, s, kept, slot, p, q, *scratch)
        assert kept.sum() == k and set(S) == set(np.flatnonzero(kept)) and set(D) == set(np.flatnonzero(~kept))
        assert (slot[S] == np.arange(k)).all() and (slot[D] == np.arange(d)).all()
        fresh_a = np.linalg.inv(hd[np.ix_(S, S)])
        np.testing.assert_allclose(A, fresh_a, rtol=1e-7, atol=1e-9 * np.abs(fresh_a).max())
        np.testing.assert_allclose(c, fresh_a @ (hd @ w[0])[S], rtol=1e-7, atol=1e-9)
        fresh_u = fresh_a @ hd[np.ix_(S, D)]
        np.testing.assert_allclose(U, fresh_u, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(s, np.diag(hd)[D] - np.einsum("kd,kd->d", hd[np.ix_(S, D)], fresh_u), rtol=1e-6)


# --------------------------------------------------------------------------- properties


def _check_result(w, h, start, res, n, m, damping):
    rows = w.shape[0]
    counts = res.mask.reshape(rows, -1, m).sum(axis=-1)
    assert res.mask.dtype == np.bool_ and (counts == n).all()
    assert not res.weights[~res.mask].any()
    assert res.error <= res.error_before
    assert res.error == pytest.approx(float(row_errors(w, res.weights, h).sum()), rel=1e-9, abs=1e-12)
    hd, _ = damped(h, damping)
    before = sum(refit_row_error(hd, w[i], start[i], h) for i in range(rows))
    assert res.error_before == pytest.approx(before, rel=1e-6, abs=1e-9 * max(1.0, float(np.trace(w @ h @ w.T))))


@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 3)),
    nm=st.sampled_from([(1, 2), (2, 4), (1, 3), (2, 3), (3, 4)]),
    seed=st.integers(0, 2**16),
    samples=st.sampled_from([3, 40]),
    damping=st.sampled_from([1e-3, 0.01, 0.1]),
)
def test_refine_never_increases_the_error(shape, nm, seed, samples, damping):
    (rows, groups), (n, m) = shape, nm
    w, h = _layer(rows, groups * m, seed, samples=samples)
    start = _random_nm(rows, groups * m, n, m, seed + 1)
    w_copy, h_copy, start_copy = w.copy(), h.copy(), start.copy()
    res = nmsolve.refine_mask(w, h, start, n, m, damping=damping)
    _check_result(w, h, start, res, n, m, damping)
    assert (w == w_copy).all() and (h == h_copy).all() and (start == start_copy).all()


@pytest.mark.parametrize(("rows", "cols", "n", "m"), [(4, 8, 2, 4), (3, 12, 1, 3), (3, 12, 2, 6), (3, 12, 1, 4)])
@pytest.mark.parametrize("seed", range(5))
def test_local_optimum_and_bruteforce_global_optimum(rows, cols, n, m, seed):
    # damping=0 with full-rank H: the objective searched is the one reported
    w, h = _layer(rows, cols, seed)
    start = _random_nm(rows, cols, n, m, seed + 100)
    res = nmsolve.refine_mask(w, h, start, n, m, damping=0.0)
    _check_result(w, h, start, res, n, m, 0.0)
    reached = 0
    for i in range(rows):
        value = refit_row_error(h, w[i], res.mask[i])
        energy = float(w[i] @ h @ w[i])
        for other in in_group_swaps(res.mask[i], m):  # no in-group swap improves (beyond the tolerance)
            assert refit_row_error(h, w[i], other) >= value - 2e-9 * energy
        best = min(refit_row_error(h, w[i], mask) for mask in nm_row_masks(cols, n, m))
        assert value >= best - 1e-9 * energy
        reached += value <= best + 1e-9 * energy
    assert reached >= rows - GLOBAL_MISSES.get((rows, cols, n, m, seed), 0)


# Rows that stop at a local optimum short of the optimum over all N:M masks, as measured from these
# random starts: 18 of the 65 rows above (a swap search is local; 47 rows reach the global optimum).
GLOBAL_MISSES = {
    (4, 8, 2, 4, 0): 1, (4, 8, 2, 4, 1): 1, (4, 8, 2, 4, 2): 1, (4, 8, 2, 4, 4): 1,
    (3, 12, 1, 3, 0): 1, (3, 12, 1, 3, 1): 1, (3, 12, 1, 3, 3): 1, (3, 12, 1, 3, 4): 1,
    (3, 12, 2, 6, 2): 2, (3, 12, 2, 6, 3): 1, (3, 12, 2, 6, 4): 1,
    (3, 12, 1, 4, 0): 1, (3, 12, 1, 4, 2): 1, (3, 12, 1, 4, 3): 1, (3, 12, 1, 4, 4): 3,
}  # fmt: skip


def test_a_large_improvement_over_the_sparsegpt_mask():
    w, h = _layer(16, 64, 3)
    start = nmsolve.prune_layer(w, h, 2, 4, method="sparsegpt")
    res = nmsolve.refine_mask(w, h, start.mask, 2, 4)
    assert res.error < 0.9 * res.error_before <= 0.9 * start.error * (1 + 1e-9)
    assert res.swaps > 0 and res.sweeps >= 2  # the last sweep found nothing


def test_a_local_optimum_is_left_unchanged():
    w, h = _layer(6, 16, 5)
    first = nmsolve.refine_mask(w, h, _random_nm(6, 16, 2, 4, 0), 2, 4)
    again = nmsolve.refine_mask(w, h, first.mask, 2, 4)
    assert (again.mask == first.mask).all() and again.swaps == 0 and again.sweeps == 1
    assert again.error == again.error_before == pytest.approx(first.error, rel=1e-12)


def test_max_sweeps_zero_returns_the_refit_of_the_input():
    w, h = _layer(3, 8, 1)
    start = _random_nm(3, 8, 2, 4, 2)
    res = nmsolve.refine_mask(w, h, start, 2, 4, max_sweeps=0)
    fit = nmsolve.prune_layer(w, h, 2, 4, method="refit", mask=start)
    assert (res.mask == start).all() and res.swaps == 0 and res.sweeps == 0
    assert res.error == pytest.approx(fit.error, rel=1e-12)


def test_state_refresh_does_not_change_the_search(monkeypatch):
    w, h = _layer(8, 64, 7)
    start = _random_nm(8, 64, 2, 4, 1)
    plain = nmsolve.refine_mask(w, h, start, 2, 4)
    monkeypatch.setattr(refine, "_REFRESH_SWAPS", 2)
    refreshed = nmsolve.refine_mask(w, h, start, 2, 4)
    assert plain.swaps > 8
    assert (refreshed.mask == plain.mask).all() and refreshed.swaps == plain.swaps
    assert refreshed.error == pytest.approx(plain.error, rel=1e-12)


def test_dead_inputs_and_zero_rows():
    w, h = _layer(3, 8, 4)
    h[:, 2] = h[2, :] = 0.0
    w[1] = 0.0
    res = nmsolve.refine_mask(w, h, _random_nm(3, 8, 2, 4, 0), 2, 4)
    assert res.error <= res.error_before and np.isfinite(res.weights).all()
    assert not res.weights[1].any()


def test_empty_layer():
    res = nmsolve.refine_mask(np.zeros((0, 8)), np.eye(8), np.zeros((0, 8), bool), 2, 4)
    assert res.mask.shape == (0, 8) and res.error == 0.0 and res.swaps == 0


def test_thread_count_does_not_change_the_result():
    w, h = _layer(64, 64, 9)
    start = _random_nm(64, 64, 2, 4, 3)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = nmsolve.refine_mask(w, h, start, 2, 4)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = nmsolve.refine_mask(w, h, start, 2, 4)
    finally:
        numba.set_num_threads(before)
    assert (one.mask == two.mask).all() and (one.weights == two.weights).all() and one.swaps == two.swaps


def test_prune_layer_refine():
    w, h = _layer(8, 32, 2)
    plain = nmsolve.prune_layer(w, h, 2, 4, method="sparsegpt", refit=True)
    refined = nmsolve.prune_layer(w, h, 2, 4, method="sparsegpt", refine=True)
    direct = nmsolve.refine_mask(w, h, nmsolve.prune_layer(w, h, 2, 4).mask, 2, 4)
    assert (refined.mask == direct.mask).all()
    np.testing.assert_allclose(refined.weights, direct.weights)
    assert refined.error == pytest.approx(direct.error) and refined.error < plain.error
    assert nmsolve.is_nm(refined.mask, 2, 4, exact=True) and not refined.weights[~refined.mask].any()
    with pytest.raises(TypeError, match="refine"):
        nmsolve.prune_layer(w, h, 2, 4, refine="yes")
    with pytest.raises(ValueError, match="structure='nm' only"):
        nmsolve.prune_layer(w, h, 2, 4, structure="transposable", refine=True)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (lambda a: a.update(W=np.where(np.eye(4, 8, dtype=bool), np.nan, a["W"])), ValueError, "W contains NaN"),
        (lambda a: a.update(W=np.where(np.eye(4, 8, dtype=bool), np.inf, a["W"])), ValueError, "W holds inf"),
        (lambda a: a.update(H=np.where(np.eye(8, dtype=bool), np.nan, a["H"])), ValueError, "H contains NaN"),
        (lambda a: a.update(H=a["H"] - 10 * np.abs(a["H"]).max() * np.eye(8)), ValueError, "positive semidefinite"),
        (lambda a: a.update(H=-np.eye(8) + np.ones((8, 8)) * 0.1), ValueError, "positive semidefinite"),
        (lambda a: a.update(H=np.eye(6)), ValueError, "H must have shape"),
        (lambda a: a.update(H=np.ones((8, 8)), damping=0.0), ValueError, "damping > 0"),
        (lambda a: a.update(W=np.ones((4, 12)), H=np.eye(12)), ValueError, "mask has shape"),
        (lambda a: a.update(W=np.ones(8)), ValueError, "W must have at least 2"),
        (lambda a: a.update(mask=np.ones((4, 8), bool)), ValueError, "not N:M"),
        (lambda a: a.update(mask=np.tile([True, False, False, False], (4, 2))), ValueError, "exactly n=2"),
        (lambda a: a.update(mask=np.ones((4, 4), bool)), ValueError, "mask has shape"),
        (lambda a: a.update(mask=np.full((4, 8), "a")), TypeError, "mask must be boolean or numeric"),
        (lambda a: a.update(n=4), ValueError, "n must satisfy"),
        (lambda a: a.update(m=3), ValueError, "not a multiple of m=3"),
        (lambda a: a.update(structure="transposable"), ValueError, "structure='nm' only"),
        (lambda a: a.update(structure="tiles"), ValueError, "structure must be one of"),
        (lambda a: a.update(progress="no"), TypeError, "progress must be True or False"),
        (lambda a: a.update(max_sweeps=1.5), TypeError, "max_sweeps must be an integer"),
        (lambda a: a.update(max_sweeps=-1), ValueError, "max_sweeps must be >= 0"),
        (lambda a: a.update(tolerance=np.nan), ValueError, "tolerance"),
        (lambda a: a.update(damping=-1.0), ValueError, "damping"),
        (lambda a: a.update(damping=True), TypeError, "damping"),
    ],
)
def test_bad_input_is_refused_by_name(change, error, words):
    w, h = _layer(4, 8, 0)
    args = {"W": w, "H": h, "mask": _random_nm(4, 8, 2, 4, 0), "n": 2, "m": 4}
    change(args)
    copies = {k: np.array(v, copy=True) for k, v in args.items() if isinstance(v, np.ndarray)}
    kwargs = {k: args.pop(k) for k in list(args) if k not in ("W", "H", "mask", "n", "m")}
    with pytest.raises(error, match=words):
        nmsolve.refine_mask(args["W"], args["H"], args["mask"], args["n"], args["m"], **kwargs)
    for k, v in copies.items():  # inputs never modified (NaN compares equal here)
        np.testing.assert_array_equal(args[k], v)


def test_inverse_of_the_kept_blocks_and_its_singular_fallback():
    _, h = _layer(1, 12, 11)
    hd, _ = damped(h, 0.01)
    singular = np.outer(np.arange(1.0, 13.0), np.arange(1.0, 13.0))  # rank one: Cholesky fails
    blocks = np.stack([hd, singular])
    inverse = refine._inverse_spd(blocks.copy())
    np.testing.assert_allclose(inverse[0], np.linalg.inv(hd), rtol=1e-9, atol=1e-12 * np.abs(inverse[0]).max())
    np.testing.assert_allclose(inverse[1], np.linalg.pinv(singular, hermitian=True), rtol=1e-9, atol=1e-15)
    assert (inverse == inverse.transpose(0, 2, 1)).all()  # exactly symmetric, as the swap updates assume
