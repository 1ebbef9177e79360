"""Constant fan-in masks, the condensed format and the SRigL update (nmsolve.fanin)."""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nmsolve
from tests.reference import condensed_linear_loops, fanin_mask_sorted, rigl_update_steps

ROOT = Path(__file__).resolve().parents[1]


@st.composite
def scores_and_k(draw, dtype=np.float64, elements=None, min_rows=0):
    rows = draw(st.integers(min_rows, 6))
    fan_in = draw(st.integers(1, 24))
    k = draw(st.integers(1, fan_in))
    if elements is None:
        elements = st.floats(-1e6, 1e6, allow_nan=False, width=64)
    return draw(hnp.arrays(dtype, (rows, fan_in), elements=elements)), k


@st.composite
def fanin_layer(draw, ties=False):
    """Weights, dense gradients and a constant fan-in mask (some rows possibly ablated)."""
    rows = draw(st.integers(1, 7))
    fan_in = draw(st.integers(1, 12))
    k = draw(st.integers(1, fan_in))
    elements = st.integers(-3, 3).map(float) if ties else st.floats(-100, 100, allow_nan=False)
    w = draw(hnp.arrays(np.float64, (rows, fan_in), elements=elements))
    g = draw(hnp.arrays(np.float64, (rows, fan_in), elements=elements))
    order = draw(hnp.arrays(np.float64, (rows, fan_in), elements=st.floats(0, 1), unique=True))
    active = np.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)))
    active[draw(st.integers(0, rows - 1))] = True
    mask = nmsolve.fanin_mask(order, k, active=active)
    return w, g, mask


# --------------------------------------------------------------------------- fanin_mask


@given(scores_and_k())
def test_fanin_mask_matches_sorted_oracle(case):
    x, k = case
    np.testing.assert_array_equal(nmsolve.fanin_mask(x, k), fanin_mask_sorted(x, k))


@given(scores_and_k(dtype=np.int64, elements=st.integers(-2, 2)))
def test_fanin_mask_oracle_with_many_ties(case):
    x, k = case
    mask = nmsolve.fanin_mask(x, k)
    np.testing.assert_array_equal(mask, fanin_mask_sorted(x, k))
    assert nmsolve.is_constant_fanin(mask, k, allow_ablated=False)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8])
def test_fanin_mask_oracle_every_dtype_and_conv_shape(dtype):
    x = (np.random.default_rng(0).normal(size=(5, 3, 2, 2)) * 40).astype(dtype)  # conv [out, in, kh, kw]
    mask = nmsolve.fanin_mask(x, 5)
    assert mask.shape == x.shape and mask.dtype == bool
    np.testing.assert_array_equal(mask, fanin_mask_sorted(x, 5))
    assert (mask.reshape(5, -1).sum(1) == 5).all()


def test_fanin_mask_ties_inf_and_active_rows():
    np.testing.assert_array_equal(nmsolve.fanin_mask(np.ones((2, 5)), 2), [[1, 1, 0, 0, 0]] * 2)
    x = np.array([[1.0, np.inf, -np.inf, np.inf, 5.0]])
    np.testing.assert_array_equal(nmsolve.fanin_mask(x, 3), [[0, 1, 0, 1, 1]])
    mask = nmsolve.fanin_mask(np.arange(12.0).reshape(3, 4), 1, active=np.array([False, True, False]))
    np.testing.assert_array_equal(mask, [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert nmsolve.is_constant_fanin(mask, 1) and not nmsolve.is_constant_fanin(mask, 1, allow_ablated=False)


@pytest.mark.parametrize(
    "view", [lambda x: x[::-1, ::-1], lambda x: x[:, ::2], lambda x: x.T, lambda x: np.asfortranarray(x)]
)
def test_fanin_mask_non_contiguous_views_and_input_unchanged(view):
    base = np.random.default_rng(1).normal(size=(12, 12))
    x = view(base)
    before = x.copy()
    np.testing.assert_array_equal(nmsolve.fanin_mask(x, 3), fanin_mask_sorted(np.array(x), 3))
    np.testing.assert_array_equal(x, before)


def test_fanin_mask_empty_and_huge_values():
    assert nmsolve.fanin_mask(np.zeros((0, 8)), 3).shape == (0, 8)
    x = np.array([[1e308, -1e308, 5e-324, np.finfo(np.float64).max, -np.finfo(np.float64).max]])
    np.testing.assert_array_equal(nmsolve.fanin_mask(x, 2), fanin_mask_sorted(x, 2))


@pytest.mark.parametrize(
    ("scores", "k", "kwargs", "error", "match"),
    [
        (np.zeros((2, 4)), 5, {}, ValueError, r"1 <= k <= fan_in, got k=5, fan_in=4"),
        (np.zeros((2, 4)), 0, {}, ValueError, "k=0"),
        (np.zeros((2, 4)), 2.0, {}, TypeError, "k must be an integer"),
        (np.zeros(4), 2, {}, ValueError, "at least 2 dimension"),
        (np.zeros((2, 0)), 1, {}, ValueError, "fan-in of 0"),
        (np.array([[True, False]]), 1, {}, TypeError, "dtype bool"),
        (np.array([[1 + 1j, 2]]), 1, {}, TypeError, "complex"),
        ([[1.0, 2.0], [1.0]], 1, {}, ValueError, "rectangular"),
        (np.zeros((2, 4)), 2, {"active": [True]}, ValueError, r"active must have shape \(2,\)"),
        (np.zeros((2, 4)), 2, {"active": [1, 0]}, TypeError, "active must be boolean"),
    ],
)
def test_fanin_mask_bad_input(scores, k, kwargs, error, match):
    with pytest.raises(error, match=match):
        nmsolve.fanin_mask(scores, k, **kwargs)


def test_fanin_mask_nan_names_location():
    x = np.zeros((3, 6))
    x[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN \(first at index \(1, 4\)\)"):
        nmsolve.fanin_mask(x, 2)


def test_is_constant_fanin_rejects_and_accepts():
    assert nmsolve.is_constant_fanin(np.zeros((3, 4)))
    assert nmsolve.is_constant_fanin(np.array([[0.5, 0.0, -1.0], [0.0, 2.0, 3.0]]), 2)
    assert not nmsolve.is_constant_fanin(np.array([[1, 0, 1], [0, 1, 1]]), 1)
    assert not nmsolve.is_constant_fanin(np.array([[1, 1, 1], [0, 1, 1]]))
    with pytest.raises(TypeError, match="boolean or numeric"):
        nmsolve.is_constant_fanin(np.array([["a", "b"]]))


@pytest.mark.parametrize(
    ("fan_in", "sparsity", "k"), [(3072, 0.9, 307), (3070, 0.9, 307), (64, 0.5, 32), (64, 0.75, 16), (10, 0.0, 10)]
)
def test_fanin_for_sparsity(fan_in, sparsity, k):
    assert nmsolve.fanin_for_sparsity(fan_in, sparsity) == k


@pytest.mark.parametrize(("fan_in", "sparsity"), [(0, 0.5), (4, 1.0), (4, -0.1), (4, float("nan")), (4, True)])
def test_fanin_for_sparsity_bad_input(fan_in, sparsity):
    with pytest.raises((ValueError, TypeError)):
        nmsolve.fanin_for_sparsity(fan_in, sparsity)


# --------------------------------------------------------------------------- condensed format


@given(scores_and_k(elements=st.floats(-10, 10, allow_nan=False)), st.data())
def test_condense_round_trip_and_linear_match_loop_oracle(case, data):
    w, k = case
    active = np.array(data.draw(st.lists(st.booleans(), min_size=w.shape[0], max_size=w.shape[0])), dtype=bool)
    mask = nmsolve.fanin_mask(np.abs(w), k, active=active)
    c = nmsolve.condense(w, mask)
    np.testing.assert_array_equal(c.to_dense(), w * mask)
    np.testing.assert_array_equal(c.mask(), mask)
    np.testing.assert_array_equal(c.active, active)
    assert c.k == (k if active.any() else 0) and c.n_active == active.sum()
    assert (np.diff(c.indices, axis=1) > 0).all()
    batch = data.draw(st.integers(1, 3))
    x = data.draw(hnp.arrays(np.float64, (batch, w.shape[1]), elements=st.floats(-10, 10)))
    bias = np.arange(w.shape[0], dtype=np.float64)
    expected = condensed_linear_loops(x, c.values, c.indices, c.rows, c.shape, bias)
    np.testing.assert_allclose(nmsolve.condensed_linear(x, c, bias), expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(c.linear(x[0]), expected[0] - bias, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(c @ x.T, (expected - bias).T, rtol=1e-12, atol=1e-9)


def test_condense_keeps_explicit_zero_weights_given_a_mask():
    w = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    mask = np.array([[1, 1, 0], [1, 1, 0]], dtype=bool)
    c = nmsolve.CondensedMatrix.from_dense(w, mask)
    assert c.values.tolist() == [[0.0, 1.0], [3.0, 0.0]] and c.indices.tolist() == [[0, 1], [0, 1]]
    with pytest.raises(
        ValueError, match=r"weights != 0 is not constant fan-in: row 0 keeps 2 entries but row 1 keeps 1"
    ):
        nmsolve.condense(w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_shape", [(), (1,), (5,), (2, 3)])
def test_condensed_linear_shapes_and_dtypes(dtype, batch_shape):
    rng = np.random.default_rng(2)
    w = rng.normal(size=(9, 40)).astype(dtype)
    mask = nmsolve.fanin_mask(np.abs(w), 7, active=np.arange(9) % 4 != 1)
    c = nmsolve.condense(w, mask)
    x = rng.normal(size=(*batch_shape, 40)).astype(dtype)
    y = nmsolve.condensed_linear(x, c, bias=np.ones(9, dtype=dtype))
    assert y.shape == (*batch_shape, 9) and y.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, x @ (w * mask).T + 1, rtol=tol, atol=tol)
    assert (y[..., 1] == 1).all() and (y[..., 5] == 1).all()  # ablated rows give the bias
    x64 = x.astype(np.float64)
    assert nmsolve.condensed_linear(x64, c).dtype == np.float64
    view = np.asfortranarray(rng.normal(size=(40, 6)).astype(dtype))[:, ::2].T
    np.testing.assert_allclose(nmsolve.condensed_linear(view, c), view @ (w * mask).T, rtol=tol, atol=tol)


def test_condensed_large_layer_matches_dense():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(96, 384)).astype(np.float32)
    c = nmsolve.condense(w, nmsolve.fanin_mask(np.abs(w), nmsolve.fanin_for_sparsity(384, 0.9)))
    x = rng.normal(size=(4, 384)).astype(np.float32)
    dense = c.to_dense()
    np.testing.assert_allclose(c.linear(x), x @ dense.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(c.linear(x[0]), dense @ x[0], rtol=1e-4, atol=1e-4)
    assert c.density == pytest.approx(38 / 384)


def test_condensed_all_rows_ablated_and_float16():
    c = nmsolve.condense(np.zeros((3, 4), dtype=np.float16))
    assert c.n_active == 0 and c.values.dtype == np.float32
    np.testing.assert_array_equal(c.linear(np.ones((2, 4))), np.zeros((2, 3)))
    np.testing.assert_array_equal(c.to_dense(), np.zeros((3, 4)))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"indices": [[1, 0]]}, ValueError, "strictly increasing within each row"),
        ({"indices": [[1, 1]]}, ValueError, "strictly increasing within each row"),
        ({"indices": [[0, 4]]}, ValueError, r"indices must lie in \[0, 4\)"),
        ({"indices": [[0, 1, 2]]}, ValueError, "indices has shape"),
        ({"indices": [[0.0, 1.0]]}, TypeError, "integer arrays"),
        ({"rows": [3]}, ValueError, r"rows must lie in \[0, 3\)"),
        ({"rows": [0, 1]}, ValueError, r"rows must have shape \(1,\)"),
        ({"values": [[1, 2]]}, TypeError, "floating-point"),
        ({"values": [[np.nan, 2.0]]}, ValueError, "values contains NaN"),
        ({"values": [1.0, 2.0], "indices": [0, 1]}, ValueError, r"shape \(n_active, k\)"),
        ({"shape": (3, 1)}, ValueError, "do not fit in fan_in=1"),
        ({"shape": [3, 4]}, ValueError, "shape must be a tuple"),
    ],
)
def test_condensed_matrix_validation(kwargs, error, match):
    args = {"values": [[1.0, 2.0]], "indices": [[0, 2]], "rows": [1], "shape": (3, 4)} | kwargs
    with pytest.raises(error, match=match):
        nmsolve.CondensedMatrix(**{k: np.asarray(v) if k != "shape" else v for k, v in args.items()})


def test_condensed_rows_must_be_sorted_and_bad_linear_input():
    with pytest.raises(ValueError, match="rows must be strictly increasing"):
        nmsolve.CondensedMatrix(np.ones((2, 1)), np.zeros((2, 1), int), np.array([2, 0]), (3, 4))
    c = nmsolve.condense(np.eye(3))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        c.linear(np.ones(4))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        c.linear(np.ones(3), bias=np.ones(2))
    with pytest.raises(TypeError, match="CondensedMatrix"):
        nmsolve.condensed_linear(np.ones(3), np.eye(3))
    with pytest.raises(ValueError, match=r"W @ x needs"):
        c @ np.ones((3, 3, 3))
    with pytest.raises(ValueError, match="shape"):
        nmsolve.condense(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        nmsolve.condense(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="mask has shape"):
        nmsolve.condense(np.eye(3), np.eye(2))


# --------------------------------------------------------------------------- SRigL update


def test_cosine_drop_fraction_schedule():
    values = [nmsolve.cosine_drop_fraction(t, t_end=1000, alpha=0.3) for t in range(0, 1001, 50)]
    assert values[0] == pytest.approx(0.3) and values[10] == pytest.approx(0.15) and values[-1] == 0.0
    assert all(a > b for a, b in itertools.pairwise(values))
    assert nmsolve.cosine_drop_fraction(5000, t_end=1000) == 0.0
    for bad in [{"alpha": 1.5}, {"alpha": -0.1}, {"t_end": 0}]:
        with pytest.raises(ValueError):
            nmsolve.cosine_drop_fraction(1, **({"t_end": 10} | bad))


@given(fanin_layer(), st.floats(0, 1), st.sampled_from([0.0, 0.3, 0.6, 1.0]), st.data())
def test_rigl_update_matches_oracle(layer, drop_fraction, gamma_sal, data):
    w, g, mask = layer
    budget = data.draw(st.one_of(st.none(), st.integers(int(mask.sum()), w.size)))
    before = (w.copy(), g.copy(), mask.copy())
    step = nmsolve.rigl_update(w, g, mask, drop_fraction=drop_fraction, gamma_sal=gamma_sal, budget=budget)
    exp_mask, exp_active, exp_k, exp_sal = rigl_update_steps(w, g, mask, drop_fraction, gamma_sal, budget)
    np.testing.assert_array_equal(step.saliency, exp_sal)
    np.testing.assert_array_equal(step.active, exp_active)
    assert step.k == exp_k
    np.testing.assert_array_equal(step.mask, exp_mask)
    for a, b in zip((w, g, mask), before, strict=True):
        np.testing.assert_array_equal(a, b)


@given(fanin_layer(ties=True), st.floats(0, 1), st.sampled_from([0.0, 0.3, 1.0]))
def test_rigl_update_invariants_with_ties(layer, drop_fraction, gamma_sal):
    w, g, mask = layer
    step = nmsolve.rigl_update(w, g, mask, drop_fraction=drop_fraction, gamma_sal=gamma_sal)
    exp_mask = rigl_update_steps(w, g, mask, drop_fraction, gamma_sal, None)[0]
    np.testing.assert_array_equal(step.mask, exp_mask)
    rows, fan_in = w.shape
    budget = int(mask.sum())
    counts = step.mask.sum(1)
    assert (counts[step.active] == step.k).all() and (counts[~step.active] == 0).all()
    assert step.k == budget // step.active.sum() and step.k <= fan_in
    assert math.ceil(budget / fan_in) <= step.active.sum() <= min(rows, budget)
    np.testing.assert_array_equal(step.grown, step.mask & ~mask)
    assert step.n_grown == step.grown.sum() and step.n_dropped == (mask & ~step.mask).sum()
    if gamma_sal == 0:
        assert step.active.sum() == min(rows, budget)


def test_rigl_update_without_drop_or_ablation_keeps_the_mask():
    rng = np.random.default_rng(4)
    w, g = rng.normal(size=(2, 6, 5)), rng.normal(size=(6, 10))  # conv-shaped weights, flat grads rejected
    with pytest.raises(ValueError, match="grads has shape"):
        nmsolve.rigl_update(w, g, w != 0, drop_fraction=0.1)
    w = rng.normal(size=(6, 10))
    mask = nmsolve.fanin_mask(np.abs(w), 3)
    step = nmsolve.rigl_update(w, rng.normal(size=(6, 10)), mask, drop_fraction=0.0, gamma_sal=0.0)
    np.testing.assert_array_equal(step.mask, mask)
    assert step.n_grown == step.n_dropped == 0


def test_rigl_update_drops_smallest_and_grows_largest_gradient():
    w = np.array([[3.0, 2.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 6.0, 5.0, 4.0]])
    mask = w != 0
    g = np.zeros_like(w)
    g[0, 4] = 9.0  # the strongest gradient outside the mask
    g[0, 5] = 7.0
    g[1, 0] = 8.0
    step = nmsolve.rigl_update(w, g, mask, drop_fraction=2 / 6, gamma_sal=0.3)
    # keep-set: the 4 largest |w| = {6, 5, 4, 3}; row 0 loses 2 and 1 and regrows its top gradients
    np.testing.assert_array_equal(step.mask, [[1, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]])
    assert step.k == 3 and step.n_dropped == 2 and step.n_grown == 2
    # salient: kept {3} + grown {9} in row 0; kept {6, 5, 4} + grown {8} in row 1 (layer-wide top 2 gradients)
    np.testing.assert_array_equal(step.saliency, [2, 4])


def test_rigl_update_ablates_rows_without_salient_weights_and_redistributes():
    w = np.zeros((4, 8))
    w[0, :2] = [5.0, 4.0]
    w[1, 2:4] = [6.0, 7.0]
    w[2, 4:6] = [8.0, 9.0]
    w[3, 6:8] = [0.01, 0.02]  # tiny weights and no gradient: no salient weights
    g = np.zeros_like(w)
    g[:3] = 1.0
    step = nmsolve.rigl_update(w, g, w != 0, drop_fraction=0.25, gamma_sal=0.3)
    np.testing.assert_array_equal(step.active, [True, True, True, False])
    assert step.k == 8 // 3 and not step.mask[3].any()
    assert nmsolve.is_constant_fanin(step.mask, step.k)
    no_ablation = nmsolve.rigl_update(w, g, w != 0, drop_fraction=0.25, gamma_sal=0.0)
    assert no_ablation.active.all() and no_ablation.k == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mask": np.array([[1, 1, 0], [1, 0, 0]], bool)}, ValueError, "not constant fan-in"),
        ({"mask": np.zeros((2, 3), bool)}, ValueError, "mask keeps nothing"),
        ({"mask": np.ones((3, 2), bool)}, ValueError, "mask has shape"),
        ({"drop_fraction": 1.5}, ValueError, r"drop_fraction must lie in \[0, 1\]"),
        ({"gamma_sal": -1.0}, ValueError, "gamma_sal must be >= 0"),
        ({"gamma_sal": float("nan")}, ValueError, "gamma_sal must be >= 0"),
        ({"gamma_sal": "0.3"}, TypeError, "gamma_sal must be a real number"),
        ({"drop_fraction": None}, TypeError, "drop_fraction must be a real number"),
        ({"budget": 7}, ValueError, "at most the layer size 6"),
        ({"budget": 0}, ValueError, "budget must be >= 1"),
        ({"grads": np.array([[np.nan, 0, 0], [0, 0, 0]])}, ValueError, "grads contains NaN"),
        ({"weights": np.array([[True, False, True], [True, True, False]])}, TypeError, "dtype bool"),
    ],
)
def test_rigl_update_bad_input(kwargs, error, match):
    args = {
        "weights": np.arange(6.0).reshape(2, 3),
        "grads": np.ones((2, 3)),
        "mask": np.array([[1, 1, 0], [0, 1, 1]], bool),
        "drop_fraction": 0.3,
    } | kwargs
    weights, grads, mask = args.pop("weights"), args.pop("grads"), args.pop("mask")
    with pytest.raises(error, match=match):
        nmsolve.rigl_update(weights, grads, mask, **args)


def test_rigl_update_keeps_budget_over_repeated_ablation():
    rng = np.random.default_rng(5)
    w = rng.normal(size=(16, 32))
    mask = nmsolve.fanin_mask(rng.random((16, 32)), 4)
    budget = int(mask.sum())
    for t in range(6):
        w = w * np.where(np.arange(16) < 2 * t, 1e-6, 1.0)[:, None]  # rows fade away one pair per step
        step = nmsolve.rigl_update(w, rng.normal(size=w.shape) * (w != 0), mask, drop_fraction=0.3, budget=budget)
        mask = step.mask
        assert nmsolve.is_constant_fanin(mask, step.k)
        assert budget - step.active.sum() < mask.sum() <= budget  # only the remainder of budget // rows is lost


@pytest.mark.parametrize("seed", range(3))
def test_parallel_kernels_match_the_oracles(monkeypatch, seed):
    """Small inputs run the serial kernels; force the parallel ones (rows in prange) and compare."""
    from nmsolve.fanin import _product, rigl

    monkeypatch.setattr(_product, "FANIN_PARALLEL_MIN", 0)
    monkeypatch.setattr(rigl, "FANIN_PARALLEL_MIN", 0)
    rng = np.random.default_rng(seed)
    w = np.round(rng.normal(size=(9, 14)), 1)  # rounding makes ties
    g = np.round(rng.normal(size=(9, 14)), 1)
    mask = nmsolve.fanin_mask(rng.random((9, 14)), 5, active=np.arange(9) != 4)
    step = nmsolve.rigl_update(w, g, mask, drop_fraction=0.4, gamma_sal=0.5)
    np.testing.assert_array_equal(step.mask, rigl_update_steps(w, g, mask, 0.4, 0.5, None)[0])
    c = nmsolve.condense(w, mask)
    for batch in (1, 3):
        x = rng.normal(size=(batch, 14))
        expected = condensed_linear_loops(x, c.values, c.indices, c.rows, c.shape)
        np.testing.assert_allclose(c.linear(x), expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- package level


@pytest.mark.skipif(np.finfo(np.longdouble).nmant <= 52, reason="longdouble is float64 on this platform")
def test_condensed_linear_longdouble_and_big_endian_inputs():
    w = np.array([[0.0, 2.0, 0.0, 3.0], [1.0, 0.0, 0.0, -1.0]])
    c = nmsolve.condense(w)
    x = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0]])
    expected = x @ w.T
    for xx in (x.astype(np.longdouble), x.astype(">f8"), x.astype(">i4")):
        np.testing.assert_allclose(nmsolve.condensed_linear(xx, c), expected)
    np.testing.assert_allclose(nmsolve.condensed_linear(x, nmsolve.condense(w.astype(">f4"))), expected)
    inexact = x.astype(np.longdouble)
    inexact[1, 2] = np.nextafter(inexact[1, 2], np.longdouble(3))  # no float64 between
    with pytest.raises(TypeError, match=r"x has dtype .*first at index \(1, 2\).*astype\(np.float64\)"):
        nmsolve.condensed_linear(inexact, c)
    with pytest.raises(TypeError, match=r"values has dtype"):
        nmsolve.CondensedMatrix(inexact[:, 1:3], np.array([[0, 1], [0, 1]]), np.array([0, 1]), (2, 4))


def test_is_constant_fanin_allow_ablated_must_be_a_bool():
    with pytest.raises(TypeError, match="allow_ablated must be True or False, got 'no'"):
        nmsolve.is_constant_fanin(np.eye(3), allow_ablated="no")
