"""Fused per-step refresh kernels of the training methods (nmsolve.training._fused) against oracles."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nmsolve
from nmsolve._jit import TRAINING_PARALLEL_MIN as PARALLEL_MIN_SIZE
from nmsolve.training._fused import bimask4_into, masked_term_into, nm4_into
from tests.reference import bimask_backward_naive, nm_mask_sorted


def srste_term(w, kept, decay):
    """The SR-STE term decay * (1 - kept) * w as the kernels compute it (in w's dtype; inf * 0 = NaN)."""
    with np.errstate(invalid="ignore"):
        return w.dtype.type(decay) * ((1 - kept).astype(w.dtype) * w)


# small integers give many exact ties; inf and signed zeros exercise the ordering and the products
ELEMENTS = st.one_of(st.integers(-3, 3).map(float), st.sampled_from([np.inf, -np.inf, -0.0]))


@given(
    st.integers(1, 2),
    st.integers(0, 5),
    st.integers(1, 4),
    st.sampled_from([np.float32, np.float64]),
    st.data(),
)
def test_nm4_matches_sorted_oracle(n, rows, groups, dtype, data):
    w = data.draw(hnp.arrays(dtype, (rows, 4 * groups), elements=ELEMENTS))
    w0 = w.copy()
    mask, masked, term = np.full_like(w, 7), np.full_like(w, 7), np.full_like(w, 7)
    decay = data.draw(st.sampled_from([None, 0.25]))
    if decay is None:
        nm4_into(w, n, mask, masked)
    else:
        nm4_into(w, n, mask, masked, term, decay)
        np.testing.assert_array_equal(term, srste_term(w, nm_mask_sorted(np.abs(w), n, 4), decay))
    np.testing.assert_array_equal(mask != 0, nm_mask_sorted(np.abs(w), n, 4))
    assert set(np.unique(mask)) <= {0, 1}
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(masked, w * mask)  # inf * 0 = NaN, as torch's weight * mask
    np.testing.assert_array_equal(w, w0)


@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from([np.float32, np.float64]),
    st.data(),
)
def test_bimask4_matches_oracles(n, blocks, groups, dtype, data):
    rows = 4 * blocks
    w = data.draw(hnp.arrays(dtype, (rows, 4 * groups), elements=ELEMENTS))
    perm = np.asarray(data.draw(st.permutations(range(rows))))
    w0 = w.copy()
    fmask, bmask = (np.full(w.shape, 7, np.uint8) for _ in range(2))
    fmasked, bmasked, term = (np.full_like(w, 7) for _ in range(3))
    decay = data.draw(st.sampled_from([None, 0.25, 2e-4]))
    if decay is None:  # no term requested: the kernel variant without it
        bimask4_into(w, n, perm, fmask, bmask, fmasked, bmasked)
    else:
        bimask4_into(w, n, perm, fmask, bmask, fmasked, bmasked, term, decay)
        np.testing.assert_array_equal(term, srste_term(w, nm_mask_sorted(np.abs(w), n, 4), decay))  # F: oracle
    fwd = nm_mask_sorted(np.abs(w), n, 4)
    np.testing.assert_array_equal(fmask != 0, fwd)
    np.testing.assert_array_equal(bmask != 0, bimask_backward_naive(w, fwd, perm, n, 4))
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(fmasked, w * fmask)
        np.testing.assert_array_equal(bmasked, w * bmask)
    np.testing.assert_array_equal(w, w0)
    if np.isfinite(w).all():  # the library's own function agrees (it rejects nothing here)
        f2, b2 = nmsolve.bimask_masks(w, n, 4, perm)
        np.testing.assert_array_equal(fmask != 0, f2)
        np.testing.assert_array_equal(bmask != 0, b2)


def _bimask_buffers(w):
    """F, B (uint8), W * F, W * B for bimask4_into."""
    return [np.zeros(w.shape, np.uint8) for _ in range(2)] + [np.zeros_like(w) for _ in range(2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [12, PARALLEL_MIN_SIZE])  # one thread, and the parallel compilation
def test_masked_term_matches_numpy(dtype, size):
    rng = np.random.default_rng(size)
    w = rng.normal(size=(4, size // 4)).astype(dtype)
    w[0, :3] = [np.inf, -0.0, -np.inf]
    mask = (rng.random(w.shape) < 0.5).astype(dtype)
    masked, term = np.full_like(w, 7), np.full_like(w, 7)
    masked_term_into(w, mask, masked, term, 0.25)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(masked, w * mask)
    np.testing.assert_array_equal(term, srste_term(w, mask, 0.25))


def test_parallel_path_and_nan_are_reported():
    rows = 8
    cols = PARALLEL_MIN_SIZE // rows  # the parallel compilation
    w = np.random.default_rng(0).normal(size=(rows, cols)).astype(np.float32)
    perm = np.random.default_rng(1).permutation(rows)
    mask, masked = np.empty_like(w), np.empty_like(w)
    nm4_into(w, 2, mask, masked)
    np.testing.assert_array_equal(mask != 0, nmsolve.nm_mask(np.abs(w), 2, 4))
    outs = _bimask_buffers(w)
    bimask4_into(w, 2, perm, *outs)
    f2, b2 = nmsolve.bimask_masks(w, 2, 4, perm)
    np.testing.assert_array_equal(outs[0] != 0, f2)
    np.testing.assert_array_equal(outs[1] != 0, b2)
    w[5, 9] = np.nan
    with pytest.raises(ValueError, match=r"NaN \(first at index \(5, 9\)\)"):
        nm4_into(w, 2, mask, masked)
    with pytest.raises(ValueError, match=r"NaN \(first at index \(5, 9\)\)"):
        bimask4_into(w, 2, perm, *outs)


def test_rejects_mismatched_buffers():
    w = np.zeros((4, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="multiple of 4"):
        nm4_into(np.zeros((4, 6), dtype=np.float32), 2, np.zeros((4, 6), np.float32), np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="one shape, in the weight's dtype"):
        nm4_into(w, 2, np.zeros((4, 8), dtype=np.float64), np.zeros_like(w))
    with pytest.raises(ValueError, match=r"Bi-Mask's masks: uint8"):
        bimask4_into(w, 2, np.arange(4), *(np.zeros_like(w) for _ in range(4)))  # float masks
    with pytest.raises(ValueError, match="C-contiguous"):
        nm4_into(w, 2, np.zeros((8, 4), dtype=np.float32).T, np.zeros_like(w))
    with pytest.raises(ValueError, match="rows that are a multiple of 4"):
        z = np.zeros((6, 8), dtype=np.float32)
        bimask4_into(z, 2, np.arange(6), *_bimask_buffers(z))
    with pytest.raises(ValueError, match="perm must have shape"):
        bimask4_into(w, 2, np.arange(3), *_bimask_buffers(w))


# --------------------------------------------------------------------------- through the torch hooks

torch = pytest.importorskip("torch")
import nmsolve.torch as nt  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])  # bf16: generic torch path
def test_bimask_fused_refresh_masks_caches_and_input_gradient(dtype):
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 12, dtype=dtype)
    method = nt.BiMask(lin, 2, 4, period=3, candidates=4, rng=0)
    layer = method.layers[""]
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    for _ in range(5):
        x = torch.randn(6, 16, dtype=dtype, requires_grad=True)
        y = lin(x)
        w, fwd, back = layer.weight.detach(), layer.mask, layer.param.backward_mask
        perm = layer.state["permutation"]
        wn = w.double().numpy()
        fwd_ref = nm_mask_sorted(np.abs(wn), 2, 4)
        np.testing.assert_array_equal(fwd.double().numpy() != 0, fwd_ref)
        np.testing.assert_array_equal(back.double().numpy() != 0, bimask_backward_naive(wn, fwd_ref, perm, 2, 4))
        assert torch.equal(y, torch.nn.functional.linear(x.detach(), w * fwd, lin.bias))
        gy = torch.randn_like(y)
        y.backward(gy)
        torch.testing.assert_close(x.grad, gy @ (w * back))
        method.before_optimizer_step()
        opt.step()
        method.after_optimizer_step()
    method.check()


def test_bimask_backward_cache_change_before_backward_is_detected():
    lin = torch.nn.Linear(8, 8)
    method = nt.BiMask(lin, 2, 4, candidates=2, rng=0)
    y = lin(torch.randn(3, 8, requires_grad=True))
    with torch.no_grad():
        lin.parametrizations.weight.original.mul_(2.0)
    method.after_optimizer_step()  # refreshes F, B and both masked weights in place
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# the three methods that add the SR-STE term; on CPU float Linear layers the term rides in the weight GEMM
TERM_METHODS = {
    "bimask": lambda lin: nt.BiMask(lin, 2, 4, candidates=4, decay=0.01, rng=0),
    "srste": lambda lin: nt.SRSTE(lin, 2, 4, decay=0.01),
    "transposable": lambda lin: nt.TransposableTraining(lin, 2, 4, every=2, decay=0.01),
}
term_methods = pytest.mark.parametrize("method_name", list(TERM_METHODS))


def _linear_with(method_name):
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    return lin, TERM_METHODS[method_name](lin)


@term_methods
def test_decay_is_added_once_per_step_under_gradient_accumulation(method_name):
    lin, method = _linear_with(method_name)
    layer = method.layers[""]
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    for _ in range(3):
        w, fwd = layer.weight.detach().clone(), method.masks()[""]
        opt.zero_grad()
        xs = [torch.randn(5, 16) for _ in range(3)]
        gys = [torch.randn(5, 8) for _ in range(3)]
        for x, gy in zip(xs, gys, strict=True):  # three micro-batches, one optimiser step
            lin(x).backward(gy)
        method.before_optimizer_step()
        dense = sum(gy.T @ x for x, gy in zip(xs, gys, strict=True))
        torch.testing.assert_close(layer.weight.grad, dense + 0.01 * (1 - fwd) * w)
        opt.step()
        method.after_optimizer_step()
    masks = method.bake()  # the class's forward is back, on the baked weight
    assert "forward" not in lin.__dict__ and torch.equal(lin.weight != 0, masks[""] != 0)
    x = torch.randn(3, 16)
    torch.testing.assert_close(lin(x), x @ lin.weight.T + lin.bias)


@term_methods
@pytest.mark.parametrize("set_to_none", [True, False])
def test_reused_term_buffer_never_overwrites_a_live_gradient(method_name, set_to_none):
    lin, method = _linear_with(method_name)
    layer = method.layers[""]
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    kept = []
    for _ in range(4):
        w, fwd = layer.weight.detach().clone(), method.masks()[""]
        opt.zero_grad(set_to_none=set_to_none)
        x, gy = torch.randn(5, 16), torch.randn(5, 8)
        lin(x).backward(gy)
        method.before_optimizer_step()
        expected = gy.T @ x + 0.01 * (1 - fwd) * w
        torch.testing.assert_close(layer.weight.grad, expected)
        kept.append((layer.weight.grad, expected))  # a user holding every step's gradient
        opt.step()
        method.after_optimizer_step()
    if set_to_none:  # each kept gradient is still what it was
        for grad, expected in kept:
            torch.testing.assert_close(grad, expected)


@term_methods
def test_decay_without_a_backward_pass_is_not_carried_over(method_name):
    lin, method = _linear_with(method_name)
    layer = method.layers[""]
    method.before_optimizer_step()  # no backward yet: nothing to add, and the term is dropped
    method.after_optimizer_step()
    x, gy = torch.randn(5, 16), torch.randn(5, 8)
    lin(x).backward(gy)
    w, fwd = layer.weight.detach(), method.masks()[""]
    method.before_optimizer_step()
    torch.testing.assert_close(layer.weight.grad, gy.T @ x + 0.01 * (1 - fwd) * w)


def test_bimask_decay_on_the_unfused_path_uses_the_uint8_masks():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)  # conv weights take the unfused refresh
    method = nt.BiMask(conv, 2, 4, candidates=4, decay=0.01, rng=0)
    layer = method.layers[""]
    assert layer.mask.dtype == torch.uint8 and layer.param.backward_mask.dtype == torch.uint8
    assert method.masks()[""].dtype == torch.float32 and method.backward_masks()[""].dtype == torch.float32
    x = torch.randn(2, 8, 5, 5)
    conv(x).square().sum().backward()
    dense = layer.weight.grad.clone()
    method.before_optimizer_step()
    w, fwd = layer.weight.detach(), method.masks()[""]
    torch.testing.assert_close(layer.weight.grad, dense + 0.01 * (1 - fwd) * w)


@term_methods
def test_decay_follows_a_weight_changed_after_the_refresh(method_name):
    lin, method = _linear_with(method_name)
    layer = method.layers[""]
    with torch.no_grad():
        layer.weight.mul_(0.5)  # after the refresh: the precomputed term is stale
    x, gy = torch.randn(5, 16), torch.randn(5, 8)
    lin(x).backward(gy)
    w, fwd = layer.weight.detach(), method.masks()[""]
    method.before_optimizer_step()
    torch.testing.assert_close(layer.weight.grad, gy.T @ x + 0.01 * (1 - fwd) * w)


@term_methods
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_cpu_autocast_bf16_trains_with_close_gradients(method_name, kind):
    # under autocast the custom autograd functions receive bf16 gradients and activations with float32
    # weights; the weight gradient must stay float32 and close to the float32 run's
    def weight_grad(autocast):
        torch.manual_seed(0)
        module = torch.nn.Linear(16, 8) if kind == "linear" else torch.nn.Conv2d(8, 8, 3, padding=1)
        method = TERM_METHODS[method_name](module)
        x = torch.randn(4, 16) if kind == "linear" else torch.randn(2, 8, 5, 5)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = module(x)
        y.float().square().sum().backward()
        method.before_optimizer_step()
        return method.layers[""].weight.grad

    ref, got = weight_grad(False), weight_grad(True)
    assert got.dtype == torch.float32
    assert float((got - ref).norm() / ref.norm()) < 3e-2
