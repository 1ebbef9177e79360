"""The torch adapter: layer selection, masks via parametrize, bake, save/load, export errors (CPU only)."""

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nmsolve  # noqa: E402
import nmsolve.torch as nt  # noqa: E402
from nmsolve.torch.adapter import MASK_KEY, mask_parametrization  # noqa: E402
from tests.reference import nm_mask_sorted  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1, dtype=dtype)
        self.fc1 = torch.nn.Linear(8 * 4 * 4, 16, dtype=dtype)
        self.odd = torch.nn.Linear(16, 10, dtype=dtype)  # in=16 fine, 10 outputs
        self.head = torch.nn.Linear(10, 3, dtype=dtype)  # in=10: ragged for m=4

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.head(torch.relu(self.odd(torch.relu(self.fc1(x)))))


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return Net(**kw)


def channel_last_oracle(weight, n, m):
    """N:M of |W| grouped along `in`, by definition (sort each group), through the layout module."""
    w = weight.detach().double().numpy()
    mat, layout = nmsolve.weight_to_2d(np.abs(w))
    return nmsolve.weight_from_2d(nm_mask_sorted(mat, n, m), layout)


# --------------------------------------------------------------------------- sparsify


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_sparsify_masks_match_the_oracle_and_report(n, m):
    model = make()
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    report = nt.sparsify(model, n, m)
    masked = {r.name: r for r in report.masked}
    assert set(masked) == ({"conv", "fc1", "odd"} if m == 4 else {"fc1", "odd"})  # conv has in=4
    for name, r in masked.items():
        module = getattr(model, name)
        mask = nt.get_masks(model)[name]
        np.testing.assert_array_equal(mask.numpy() != 0, channel_last_oracle(dense[f"{name}.weight"], n, m))
        assert torch.equal(module.weight, dense[f"{name}.weight"] * mask)
        assert r.pattern == f"{n}:{m}" and r.density == pytest.approx(n / m)
        assert r.kept_fraction == pytest.approx(nmsolve.kept_fraction(dense[f"{name}.weight"].numpy(), mask.numpy()))
    skipped = {r.name: r.reason for r in report.skipped}
    assert "not a multiple of m" in skipped["head"] and "pad=True" in skipped["head"]
    assert "head" in str(report) and "conv" in str(report)


def test_sparsify_does_not_touch_dense_weights_or_identity():
    model = make()
    params = {name: p for name, p in model.named_parameters()}
    before = {name: p.detach().clone() for name, p in params.items()}
    nt.sparsify(model, 2, 4)
    assert model.fc1.parametrizations.weight.original is params["fc1.weight"]
    for name, p in model.named_parameters():
        key = name.replace(".parametrizations.weight.original", ".weight")
        assert torch.equal(p, before[key])


def test_pad_masks_a_ragged_layer():
    model = make()
    report = nt.sparsify(model, 2, 4, pad=True)
    assert {r.name for r in report.masked} == {"conv", "fc1", "odd", "head"}
    mask = nt.get_masks(model)["head"].numpy()
    assert nmsolve.is_nm(mask, 2, 4, exact=True, pad=True)
    np.testing.assert_array_equal(
        mask != 0, nm_mask_sorted(np.abs(model.head.parametrizations.weight.original.detach().numpy()), 2, 4)
    )


def test_include_exclude_types_and_first_last():
    names = lambda rep: sorted(r.name for r in rep.masked)  # noqa: E731
    assert names(nt.sparsify(make(), 2, 4, include="fc*")) == ["fc1"]
    assert names(nt.sparsify(make(), 2, 4, exclude=["conv", "o*"])) == ["fc1"]
    assert names(nt.sparsify(make(), 2, 4, types=[torch.nn.Conv2d])) == ["conv"]
    rep = nt.sparsify(make(), 2, 4, dense_first_last=True, pad=True)
    assert names(rep) == ["fc1", "odd"]
    reasons = {r.name: r.reason for r in rep.skipped}
    assert reasons == {"conv": "first layer kept dense", "head": "last layer kept dense"}


def test_gradients_reach_only_kept_weights():
    model = make()
    nt.sparsify(model, 2, 4)
    model(torch.randn(5, 4, 4, 4)).square().sum().backward()
    for name in ("conv", "fc1", "odd"):
        module = getattr(model, name)
        grad = module.parametrizations.weight.original.grad
        mask = nt.get_masks(model)[name]
        assert torch.all(grad[mask == 0] == 0) and torch.any(grad[mask != 0] != 0)


def test_shared_layer_called_twice_backpropagates():
    lin = torch.nn.Linear(8, 8)
    nt.sparsify(lin, 2, 4)
    x = torch.randn(3, 8, requires_grad=True)
    lin(lin(x)).sum().backward()  # the cached masked weight must not be rewritten between the calls
    w = lin.parametrizations.weight.original.detach()
    mask = nt.get_masks(lin)[""]
    ref = x.detach().clone().requires_grad_()
    wm = (w * mask).requires_grad_()
    torch.nn.functional.linear(torch.nn.functional.linear(ref, wm, lin.bias), wm, lin.bias).sum().backward()
    torch.testing.assert_close(x.grad, ref.grad)


def test_cache_follows_in_place_weight_updates():
    lin = torch.nn.Linear(8, 4)
    nt.sparsify(lin, 2, 4)
    mask = nt.get_masks(lin)[""]
    with torch.no_grad():
        lin.parametrizations.weight.original.add_(1.0)
    assert torch.equal(lin.weight, lin.parametrizations.weight.original * mask)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_masks_keep_weight_dtype(dtype):
    model = make(dtype=dtype)
    nt.sparsify(model, 2, 4)
    for name, mask in nt.get_masks(model).items():
        weight = getattr(model, name).weight
        assert mask.dtype == weight.dtype and mask.device == weight.device
        assert nmsolve.is_nm(mask.float().numpy(), 2, 4, axis=1, exact=True)


def test_transposable_method_when_available():
    from nmsolve.torch.adapter import require

    try:
        require("transposable_mask")
    except RuntimeError:
        pytest.skip("nmsolve.transposable_mask is not available yet")
    lin = torch.nn.Linear(8, 8)
    report = nt.sparsify(lin, 2, 4, method="transposable")
    mask = nt.get_masks(lin)[""].numpy()
    assert report.masked[0].pattern == "2:4 transposable"
    assert nmsolve.is_nm(mask, 2, 4, exact=True) and nmsolve.is_nm(mask.T, 2, 4, exact=True)
    # odd has a 10 x 16 weight: skipped unless padded to whole tiles
    skipped = {r.name: r.reason for r in nt.sparsify(make(), 2, 4, method="transposable").skipped}
    assert "not a multiple of m=4 on both axes" in skipped["odd"]
    model = make()
    report = nt.sparsify(model, 2, 4, method="transposable", pad=True, options={"method": "approx"})
    assert {"odd", "head"} <= {r.name for r in report.masked}
    mask = nt.get_masks(model)["odd"].numpy()
    assert nmsolve.is_nm(mask, 2, 4, pad=True) and nmsolve.is_nm(mask.T, 2, 4, pad=True)


# --------------------------------------------------------------------------- bad input


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"method must be one of \['nm', 'transposable'\], got 'nmm'"):
        nt.sparsify(make(), 2, 4, method="nmm")
    with pytest.raises(ValueError, match="0 < n <= m, got n=5, m=4"):
        nt.sparsify(make(), 5, 4)
    with pytest.raises(TypeError, match="glob pattern"):
        nt.sparsify(make(), 2, 4, include=[3])
    with pytest.raises(TypeError, match="types must be"):
        nt.sparsify(make(), 2, 4, types=[int])
    with pytest.raises(ValueError, match="scores for layer 'fc1' have shape"):
        nt.sparsify(make(), 2, 4, include="fc1", scores=lambda name, mod: np.ones(3))
    model = make()
    nt.sparsify(model, 2, 4)
    with pytest.raises(ValueError, match="already has a mask"):
        nt.sparsify(model, 2, 4)


def test_nan_weights_are_rejected():
    lin = torch.nn.Linear(8, 2)
    with torch.no_grad():
        lin.weight[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        nt.sparsify(lin, 2, 4)


def test_custom_scores_are_used():
    lin = torch.nn.Linear(8, 2)
    scores = np.tile(np.arange(8.0), (2, 1))  # the last two of each group win whatever the weights
    nt.sparsify(lin, 2, 4, scores=lambda name, module: scores)
    np.testing.assert_array_equal(nt.get_masks(lin)[""].numpy(), np.tile([0, 0, 1, 1], (2, 2)))


# --------------------------------------------------------------------------- bake, remove, save, load


def test_bake_makes_masks_permanent_and_keeps_parameters():
    model = make()
    nt.sparsify(model, 2, 4)
    expected = {name: getattr(model, name).weight.detach().clone() for name in ("conv", "fc1", "odd")}
    param = model.fc1.parametrizations.weight.original
    x = torch.randn(2, 4, 4, 4)
    out = model(x)
    masks = nt.bake(model)
    assert sorted(masks) == ["conv", "fc1", "odd"]
    assert model.fc1.weight is param
    assert not any("parametrizations" in k for k in model.state_dict())
    for name, w in expected.items():
        assert torch.equal(getattr(model, name).weight, w)
    torch.testing.assert_close(model(x), out)


def test_remove_masks_restores_dense_weights():
    model = make()
    dense = copy.deepcopy(model.state_dict())
    nt.sparsify(model, 2, 4)
    nt.remove_masks(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, dense[key])


def test_state_dict_round_trip_through_torch_save():
    model = make()
    nt.sparsify(model, 1, 4)
    assert f"fc1.{MASK_KEY}" in model.state_dict()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = make(seed=1)  # different weights, no masks
    nt.load_state_dict(fresh, torch.load(buffer))
    x = torch.randn(3, 4, 4, 4)
    torch.testing.assert_close(fresh(x), model(x))
    for name, mask in nt.get_masks(model).items():
        assert torch.equal(nt.get_masks(fresh)[name], mask)
    # a fresh model that already has masks attached loads as well
    again = make(seed=2)
    nt.sparsify(again, 2, 4)
    nt.load_state_dict(again, model.state_dict())
    torch.testing.assert_close(again(x), model(x))


def test_parametrization_lookup():
    lin = torch.nn.Linear(4, 4)
    assert mask_parametrization(lin) is None
    nt.sparsify(lin, 2, 4)
    assert isinstance(mask_parametrization(lin), nt.MaskParametrization)


def test_semi_structured_export_errors_off_cuda():
    model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    nt.sparsify(model, 2, 4)
    with pytest.raises(RuntimeError, match="bake"):
        nt.to_semi_structured(model)
    nt.bake(model)
    with pytest.raises(RuntimeError, match="CUDA"):
        nt.to_semi_structured(model)
    dense = torch.nn.Sequential(torch.nn.Linear(64, 64))
    assert nt.to_semi_structured(dense) == []  # a dense layer is not 2:4: nothing to convert


def test_importing_nmsolve_does_not_import_torch_adapter():
    import subprocess
    import sys

    code = "import sys, nmsolve, nmsolve.training; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
