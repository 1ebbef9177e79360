"""SRigL: the numpy schedule/state (nmsolve.training.srigl) and the torch hook + CondensedLinear."""

import importlib
import re

import numpy as np
import pytest

import nmsolve
from nmsolve.training.srigl import SRigLSchedule, SRigLState


@pytest.fixture
def torch():
    module = pytest.importorskip("torch")
    importlib.import_module("nmsolve.torch")  # makes nmsolve.torch available as an attribute
    return module


# --------------------------------------------------------------------------- numpy schedule and state


def test_schedule_due_steps_and_drop_fraction():
    s = SRigLSchedule(t_end=500, delta=100, alpha=0.3)
    assert [t for t in range(0, 1000) if s.due(t)] == [100, 200, 300, 400]
    assert s.drop_fraction(250) == pytest.approx(0.15)
    assert SRigLSchedule.for_training(1000).t_end == 750
    assert SRigLSchedule.for_training(1).t_end == 1  # never due, no crash
    for bad in [{"t_end": 0}, {"t_end": 10, "delta": 0}, {"t_end": 10, "alpha": 2.0}, {"t_end": 10, "gamma_sal": -1}]:
        with pytest.raises((ValueError, TypeError)):
            SRigLSchedule(**bad)


@pytest.mark.parametrize("init", ["random", "magnitude"])
def test_state_start_is_constant_fanin_at_target_density(init):
    w = np.random.default_rng(0).normal(size=(12, 3, 2, 2))  # conv weight: fan-in 12
    state = SRigLState.start(w, 0.75, init=init, rng=1)
    assert state.k == 3 and state.budget == 36 and state.is_valid()
    assert nmsolve.is_constant_fanin(state.mask, 3, allow_ablated=False)
    if init == "magnitude":
        np.testing.assert_array_equal(state.mask, nmsolve.fanin_mask(np.abs(w), 3))
    else:
        again = SRigLState.start(w, 0.75, init=init, rng=1)
        np.testing.assert_array_equal(state.mask, again.mask)  # reproducible from the seed
    with pytest.raises(ValueError, match="init must be one of"):
        SRigLState.start(w, 0.75, init="dense")


def test_state_updates_on_schedule_keep_budget_and_round_trip():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(10, 40))
    state = SRigLState.start(w, 0.9, rng=3)
    schedule = SRigLSchedule(t_end=60, delta=10, gamma_sal=0.3)
    for step in range(1, 80):
        w = w + 0.1 * rng.normal(size=w.shape)
        w[:3] *= 0.01  # three rows fade: ablation candidates
        result = state.update(
            w, rng.normal(size=w.shape) * np.where(np.arange(10) < 3, 0.0, 1.0)[:, None], step, schedule
        )
        assert (result is not None) == schedule.due(step)
        assert state.is_valid() and state.mask.sum() <= state.budget
    assert state.updates == 5 and [h["step"] for h in state.history] == [10, 20, 30, 40, 50]
    assert not state.active[:3].any() and state.k == state.budget // 7
    restored = SRigLState.from_state_dict(state.state_dict())
    np.testing.assert_array_equal(restored.mask, state.mask)
    assert (restored.k, restored.budget, restored.updates) == (state.k, state.budget, state.updates)
    broken = state.state_dict() | {"k": state.k + 1}
    with pytest.raises(ValueError, match="inconsistent"):
        SRigLState.from_state_dict(broken)


def test_state_without_ablation_never_ablates():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(6, 20))
    w[0] = 0.0
    state = SRigLState.start(w, 0.8, rng=0, ablate=False)
    state.update(w, np.zeros_like(w), 10, SRigLSchedule(t_end=100, delta=10, gamma_sal=1.0))
    assert state.active.all() and state.k == 4


# --------------------------------------------------------------------------- torch hook


def _mlp(torch, seed=0, dtype=None):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(24, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    )
    return model.to(dtype) if dtype is not None else model


def _train(torch, model, method, opt, steps, *, seed=0, check=None, check_grads=None):
    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    for _ in range(steps):
        x = torch.randn(16, 24, generator=gen, dtype=dtype)
        y = torch.randint(0, 4, (16,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step()
        if check_grads is not None:
            check_grads()
        opt.step()
        method.after_optimizer_step()
        if check is not None:
            check()


def test_srigl_masks_stay_constant_fanin_and_pruned_weights_get_no_gradient(torch):
    model = _mlp(torch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = nmsolve.torch.SRigL(model, sparsity=0.75, t_end=40, delta=5, optimizer=opt, rng=0)
    densities = []

    def check():
        method.check()
        for layer in method:
            assert layer.mask.dtype == layer.weight.dtype and layer.mask.device == layer.weight.device
            assert (layer.weight[~layer.mask.bool()] == 0).all()  # pruned weights stay exactly zero
        densities.append([float(layer.mask.mean()) for layer in method])

    def check_grads():
        for layer in method:  # pruned weights get no gradient
            assert (layer.weight.grad[~layer.mask.bool()] == 0).all()
        if method.schedule.due(method.step + 1):  # ... but growth sees the dense gradient
            assert all((method._dense_grads[lay.name][~lay.mask.bool().numpy()] != 0).any() for lay in method)

    _train(torch, model, method, opt, 50, check=check, check_grads=check_grads)
    history = method.history()
    assert [h["step"] for h in history["0"]] == [5, 10, 15, 20, 25, 30, 35]
    assert all(h["dropped"] > 0 for h in history["0"][:3])  # the masks really move
    for name, layer in method.layers.items():
        assert layer.state["srigl"].ablate == (name != "4")  # the classifier keeps its rows
        assert abs(densities[-1][list(method.layers).index(name)] - 0.25) < 0.05
    assert re.fullmatch(r"fan-in \d+/24(, \d+/32 rows)?", method.pattern(method.layers["0"]))
    assert method.pattern(method.layers["4"]) == "fan-in 4/16"
    assert "fan-in" in str(method.report())


def test_srigl_update_equals_numpy_rigl_update_on_the_dense_gradient(torch):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(12, 6, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    method = nmsolve.torch.SRigL(model, sparsity=0.5, t_end=100, delta=3, gamma_sal=0.0, ablate_last=True, rng=0)
    layer = method.layers["0"]
    for _ in range(3):
        x = torch.randn(5, 12)
        coef = torch.randn(6)
        old_mask = layer.mask.bool().numpy().copy()
        loss = (model(x) * coef).sum()  # dL/d(W*mask) = coef^T x summed over the batch: dense
        opt.zero_grad()
        loss.backward()
        dense_grad = layer.weight.grad.numpy().copy()
        method.before_optimizer_step()
        opt.step()
        weights_after = layer.weight.detach().numpy().copy()
        method.after_optimizer_step()
    np.testing.assert_allclose(dense_grad, np.outer(coef.numpy(), x.sum(0).numpy()), rtol=1e-5, atol=1e-5)
    assert (dense_grad[~old_mask] != 0).any()  # the captured gradient is dense, not masked
    expected = nmsolve.rigl_update(
        weights_after, dense_grad, old_mask, drop_fraction=method.schedule.drop_fraction(3), gamma_sal=0.0
    )
    np.testing.assert_array_equal(layer.mask.bool().numpy(), expected.mask)
    grown = expected.grown
    assert grown.any() and (layer.weight.detach().numpy()[grown] == 0).all()  # new connections start at 0


def test_srigl_resets_optimizer_state_and_handles_conv(torch):
    torch.manual_seed(2)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 5)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    method = nmsolve.torch.SRigL(model, sparsity=0.9, t_end=20, delta=4, optimizer=opt, rng=0)
    conv = method.layers["0"]
    assert conv.state["srigl"].k == 2  # fan-in 3 * 3 * 3 = 27 -> floor(2.7)
    for _ in range(8):
        loss = model(torch.randn(4, 3, 6, 6)).square().mean()
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step()
        opt.step()
        method.after_optimizer_step()
        method.check()
        for layer in method:
            inactive = ~layer.mask.bool()
            for value in opt.state[layer.weight].values():
                if isinstance(value, torch.Tensor) and value.shape == layer.weight.shape and method.step % 4 == 0:
                    assert (value[inactive] == 0).all()


def test_srigl_state_dict_round_trip_and_resume(torch):
    def run(steps, resume_from=None):
        model = _mlp(torch, seed=3)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        method = nmsolve.torch.SRigL(model, sparsity=0.5, t_end=30, delta=4, rng=5)
        if resume_from is not None:
            model.load_state_dict(resume_from[0])
            method.load_state_dict(resume_from[1])
        _train(torch, model, method, opt, steps, seed=steps)
        return model, method

    model, method = run(10)
    saved = ({k: v.clone() for k, v in model.state_dict().items()}, method.state_dict())
    _, method2 = run(0, resume_from=saved)
    assert method2.step == 10
    for name in method.layers:
        np.testing.assert_array_equal(method2.layers[name].mask.numpy(), method.layers[name].mask.numpy())
        assert method2.layers[name].state["srigl"].k == method.layers[name].state["srigl"].k
    method2.check()


def test_srigl_bake_then_condensed_linear_matches(torch):
    model = _mlp(torch, seed=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method = nmsolve.torch.SRigL(model, sparsity=0.9, t_end=12, delta=3, optimizer=opt, rng=0)
    _train(torch, model, method, opt, 15)
    condensed = method.condensed()
    assert set(condensed) == {"0", "2", "4"} and condensed["0"].k >= 2
    x = torch.randn(7, 24)
    with torch.no_grad():
        expected = model(x)
    masks = method.bake()
    np.testing.assert_allclose(condensed["0"].to_dense(), model[0].weight.detach().numpy())
    outcome = nmsolve.torch.condense_model(model, masks)
    assert outcome == {"0": "condensed", "2": "condensed", "4": "condensed"}
    assert isinstance(model[2], nmsolve.torch.CondensedLinear)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_condensed_linear_backends_agree_and_torch_backend_is_differentiable(torch, dtype_name):
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(5)
    linear = torch.nn.Linear(40, 9).to(dtype)
    w = linear.weight.detach().numpy()
    active = np.arange(9) % 3 != 0
    mask = nmsolve.fanin_mask(np.abs(w), 6, active=active)
    fast = nmsolve.torch.CondensedLinear.from_linear(linear, torch.from_numpy(mask))
    ref = nmsolve.torch.CondensedLinear.from_linear(linear, mask, backend="torch")
    dense = torch.from_numpy(w * mask)
    torch.testing.assert_close(fast.to_dense_weight(), dense)
    for shape in [(40,), (1, 40), (5, 40), (2, 3, 40)]:
        x = torch.randn(*shape, dtype=dtype)
        expected = torch.nn.functional.linear(x, dense, linear.bias.detach())
        with torch.inference_mode():
            torch.testing.assert_close(fast(x), expected)
        torch.testing.assert_close(ref(x).detach(), expected)
    y = fast(torch.randn(4, 40, dtype=dtype))  # grad enabled -> torch path
    assert y.requires_grad
    y.sum().backward()
    assert fast.values.grad.shape == (6, 6) and fast.bias.grad.shape == (9,)
    x8, weights = torch.randn(8, 40, dtype=dtype), torch.randn(9, dtype=dtype)
    ref.zero_grad()
    (ref(x8) @ weights).sum().backward()  # batch 8: scatter to dense + F.linear
    dense_path = ref.values.grad.clone()
    ref.zero_grad()
    ((ref(x8[:4]) @ weights).sum() + (ref(x8[4:]) @ weights).sum()).backward()  # two gathers of 4
    torch.testing.assert_close(ref.values.grad, dense_path)
    x = torch.randn(3, 40, dtype=dtype)
    with torch.inference_mode():
        assert (fast(x)[:, ~torch.from_numpy(active)] == linear.bias.detach()[~torch.from_numpy(active)]).all()


def test_condensed_linear_bad_input(torch):
    linear = torch.nn.Linear(8, 4)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(4, 8))
    layer = nmsolve.torch.CondensedLinear.from_linear(linear, backend="numba")
    assert "k=1" in repr(layer)
    with pytest.raises(RuntimeError, match="backend='numba'"):
        layer(torch.randn(2, 8, requires_grad=True))
    with torch.no_grad():
        with pytest.raises(ValueError, match="expected 8"):
            layer(torch.randn(2, 7))
        with pytest.raises(RuntimeError, match="backend='numba'"):
            layer(torch.randn(2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="backend must be one of"):
        nmsolve.torch.CondensedLinear.from_linear(linear, backend="fast")
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        nmsolve.torch.CondensedLinear.from_linear(torch.nn.Conv2d(2, 2, 1))
    with torch.no_grad():
        linear.weight[0, 3] = 1.0
    with pytest.raises(ValueError, match="not constant fan-in"):
        nmsolve.torch.CondensedLinear.from_linear(linear)


def test_srigl_bad_arguments(torch):
    model = _mlp(torch)
    with pytest.raises(ValueError, match="sparsity"):
        nmsolve.torch.SRigL(model, sparsity=1.0, t_end=10)
    with pytest.raises(ValueError, match="init must be one of"):
        nmsolve.torch.SRigL(model, sparsity=0.5, t_end=10, init="erk")
    with pytest.raises(ValueError, match="t_end"):
        nmsolve.torch.SRigL(model, sparsity=0.5, t_end=0)
    assert not nmsolve.torch.get_masks(model)  # nothing was attached by the failed calls


def test_srigl_misuse_is_a_clear_error(torch):
    model = _mlp(torch)
    method = nmsolve.torch.SRigL(model, sparsity=0.5, t_end=10, delta=1)
    method.before_optimizer_step()
    with pytest.raises(RuntimeError, match="none of the 3 sparse layers has a gradient"):  # no backward pass
        method.after_optimizer_step()
    model(torch.randn(2, 24)).sum().backward()
    with pytest.raises(RuntimeError, match=r"call method\.before_optimizer_step"):
        method.after_optimizer_step()
