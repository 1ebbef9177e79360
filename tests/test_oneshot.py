"""prune_layer and layer_error: oracles for SparseGPT's sweep and the re-fit, validity, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nmsolve
from nmsolve.oneshot._common import damped
from tests.reference import row_refit_lstsq, sparsegpt_columnwise


def _layer(rows: int, cols: int, seed: int, samples: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, inputs with correlated, unequal channels (as in real layers), and H = X^T X."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, cols)) @ rng.normal(size=(cols, cols)) * rng.uniform(0.2, 3.0, cols)
    return rng.normal(size=(rows, cols)), x, x.T @ x


@pytest.mark.parametrize(
    ("rows", "cols", "n", "m", "blocksize"), [(6, 16, 2, 4, 8), (5, 24, 4, 8, 128), (4, 18, 1, 3, 4)]
)
def test_sparsegpt_matches_the_columnwise_oracle(rows, cols, n, m, blocksize):
    w, _, h = _layer(rows, cols, seed=cols)
    res = nmsolve.prune_layer(w, h, n, m, blocksize=blocksize)
    ref_w, ref_mask = sparsegpt_columnwise(w, damped(h, 0.01)[0], n, m)
    np.testing.assert_array_equal(res.mask, ref_mask)
    np.testing.assert_allclose(res.weights, ref_w, rtol=1e-8, atol=1e-10)


def test_refit_equals_lstsq_per_row():
    w, x, h = _layer(7, 16, seed=1)
    mask = nmsolve.magnitude_mask(w, 2, 4)
    res = nmsolve.prune_layer(w, h, 2, 4, method="refit", mask=mask, damping=0.0)
    np.testing.assert_allclose(res.weights, row_refit_lstsq(x, w, mask), rtol=1e-7, atol=1e-9)
    assert res.error <= res.magnitude_error
    np.testing.assert_allclose(res.error, np.sum((x @ w.T - x @ res.weights.T) ** 2), rtol=1e-8)


def test_refit_with_fewer_samples_than_inputs_is_the_minimum_norm_least_squares_fit():
    w, x, h = _layer(3, 16, seed=2, samples=5)  # H has rank 5: the re-fit systems are singular
    mask = nmsolve.magnitude_mask(w, 2, 4)
    res = nmsolve.prune_layer(w, h, 2, 4, method="refit", mask=mask, damping=0.0)
    np.testing.assert_allclose(x @ res.weights.T, x @ row_refit_lstsq(x, w, mask).T, rtol=1e-6, atol=1e-8)


def test_wanda_scores_weights_by_input_norms():
    w, x, h = _layer(6, 16, seed=3)
    res = nmsolve.prune_layer(w, h, 2, 4, method="wanda")
    expected = nmsolve.nm_mask(np.abs(w) * np.linalg.norm(x, axis=0), 2, 4)
    np.testing.assert_array_equal(res.mask, expected)
    np.testing.assert_array_equal(res.weights, np.where(expected, w, 0.0))


def test_methods_rank_as_published_on_correlated_inputs():
    w, _, h = _layer(32, 64, seed=4)
    err = {k: nmsolve.prune_layer(w, h, 2, 4, method=k).error for k in ("magnitude", "wanda", "sparsegpt")}
    refit = nmsolve.prune_layer(w, h, 2, 4, refit=True).error
    assert refit < err["sparsegpt"] < err["magnitude"]
    assert err["magnitude"] == pytest.approx(nmsolve.prune_layer(w, h, 2, 4).magnitude_error)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
def test_transposable_structure_is_exact_in_both_directions(method, n, m):
    w, _, h = _layer(16, 32, seed=5)
    res = nmsolve.prune_layer(w, h, n, m, method=method, structure="transposable", refit=True)
    assert nmsolve.is_transposable(res.mask, n, m, exact=True)
    assert not res.weights[~res.mask].any()


def test_transposable_magnitude_keeps_the_transposable_optimum():
    w, _, h = _layer(8, 8, seed=6)
    res = nmsolve.prune_layer(w, h, 2, 4, method="magnitude", structure="transposable")
    best = nmsolve.transposable_mask(w, 2, 4)
    assert np.abs(w)[res.mask].sum() == pytest.approx(np.abs(w)[best].sum())


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from([(2, 4), (1, 4), (3, 4), (4, 8), (1, 2)]),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(0, 2**16),
    st.sampled_from(["magnitude", "wanda", "sparsegpt"]),
    st.booleans(),
)
def test_every_result_is_valid_and_consistent(nm, rows, groups, seed, method, refit):
    n, m = nm
    w, _, h = _layer(rows, groups * m, seed, samples=3)  # rank-deficient H, as with little calibration data
    h[:, 0] = h[0, :] = 0.0  # and a dead input
    w_before, h_before = w.copy(), h.copy()
    res = nmsolve.prune_layer(w, h, n, m, method=method, refit=refit)
    np.testing.assert_array_equal(w, w_before)
    np.testing.assert_array_equal(h, h_before)
    assert nmsolve.is_nm(res.mask, n, m, exact=True)
    assert not res.weights[~res.mask].any() and np.isfinite(res.weights).all()
    assert res.error == pytest.approx(nmsolve.layer_error(w, res.weights, h), rel=1e-9, abs=1e-9)
    assert 0 <= res.error and 0 <= res.magnitude_error and 0 <= res.reference


def test_dtypes_and_integer_weights():
    w, _, h = _layer(4, 8, seed=7)
    r32 = nmsolve.prune_layer(w.astype(np.float32), h.astype(np.float32), 2, 4)
    assert r32.weights.dtype == np.float32
    ri = nmsolve.prune_layer(np.round(w * 10).astype(np.int16), h, 2, 4)
    assert ri.weights.dtype == np.float64


def test_layer_error_is_the_output_error():
    w, x, h = _layer(5, 8, seed=8)
    wp = np.where(nmsolve.magnitude_mask(w, 2, 4), w, 0.0)
    assert nmsolve.layer_error(w, wp, h) == pytest.approx(np.sum((x @ (w - wp).T) ** 2))


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"W": np.full((2, 4), np.nan)}, ValueError, "W contains NaN"),
        ({"H": np.full((4, 4), np.inf)}, ValueError, "H holds inf"),
        ({"H": np.eye(3)}, ValueError, "H must have shape (in, in) = (4, 4)"),
        ({"W": np.ones(4)}, ValueError, "W must have at least 2"),
        ({"H": np.array([[1.0, 2.0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])}, ValueError, "symmetric"),
        ({"H": -np.eye(4)}, ValueError, "H[0, 0]=-1.0 < 0"),
        ({"H": np.array([[1.0, 2, 0, 0], [2, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])}, ValueError, "not positive semi"),
        ({"n": 4}, ValueError, "0 < n < m"),
        ({"m": 3}, ValueError, "not a multiple of m=3"),
        ({"method": "obs"}, ValueError, "method must be one of"),
        ({"structure": "tiles"}, ValueError, "structure must be one of"),
        ({"W": np.ones((3, 4)), "structure": "transposable"}, ValueError, "out=3 rows"),
        ({"method": "refit"}, ValueError, "pass mask="),
        ({"method": "refit", "mask": np.ones((2, 4))}, ValueError, "mask is not N:M"),
        ({"method": "refit", "mask": np.ones((2, 3))}, ValueError, "mask has shape (2, 3)"),
        ({"mask": np.ones((2, 4))}, ValueError, "only used by method='refit'"),
        ({"refit": "yes"}, TypeError, "refit must be True or False, got 'yes'"),
        ({"damping": -1}, ValueError, "damping=-1"),
        ({"damping": "0.1"}, TypeError, "damping must be a number"),
        ({"blocksize": 0}, ValueError, "blocksize"),
        ({"W": np.ones((2, 4), dtype=complex)}, TypeError, "W must be a real numeric array"),
    ],
)
def test_bad_input_is_refused_naming_the_value(kwargs, error, words):
    args = {"W": np.ones((2, 4)), "H": np.eye(4), "n": 2, "m": 4}
    args.update(kwargs)
    W, H = args.pop("W"), args.pop("H")
    with pytest.raises(error) as info:
        nmsolve.prune_layer(W, H, **args)
    assert words in str(info.value)


def test_refine_takes_a_number_of_sweeps():
    w, _, h = _layer(8, 32, seed=9)
    full = nmsolve.prune_layer(w, h, 2, 4, refine=True)
    one = nmsolve.prune_layer(w, h, 2, 4, refine=1)
    start = nmsolve.prune_layer(w, h, 2, 4, refit=True)
    assert full.error <= one.error <= start.error and full.error < start.error
    assert nmsolve.prune_layer(w, h, 2, 4, refine=0).error == nmsolve.prune_layer(w, h, 2, 4).error
    with pytest.raises(TypeError, match="refine must be an integer, got 'yes'"):
        nmsolve.prune_layer(w, h, 2, 4, refine="yes")
    with pytest.raises(ValueError, match="refine=-1"):
        nmsolve.prune_layer(w, h, 2, 4, refine=-1)
