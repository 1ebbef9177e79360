"""Hardening of the torch adapter (issue 13): .data writes, ConvTranspose, foreign parametrizations,
LBC bake before the end of its schedule, SRigL on layers without a gradient."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nmsolve.torch as nt  # noqa: E402
from nmsolve.nm import is_nm  # noqa: E402


def _lbc_steps(model, method, steps=2):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        loss = model(torch.randn(8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step()
        opt.step()
        method.after_optimizer_step()


# --------------------------------------------------------------------------- item 9: LBC bake early


def test_lbc_bake_before_the_schedule_ends_gives_exact_nm_from_the_best_combination():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    method = nt.LBC(model, 2, 4, epochs=10)
    _lbc_steps(model, method)
    method.end_epoch()  # epoch 1 of t_f = 5: several combinations still alive
    assert not method.frozen
    scores = {lay.name: method.scores(lay.name) for lay in method}
    alive = {lay.name: method.alive(lay.name) for lay in method}
    dense = {lay.name: lay.weight.detach().clone() for lay in method}
    masks = method.bake()
    for name in ("0", "2"):
        w = model.get_submodule(name).weight.detach()
        mask = masks[name].numpy() != 0
        assert is_nm(mask, 2, 4, axis=1, exact=True)
        np.testing.assert_array_equal(w.numpy(), (dense[name] * masks[name]).numpy())
        # the kept combination is the highest-scoring alive one of each group
        best = np.where(alive[name], scores[name], -np.inf).argmax(-1)
        from nmsolve.combination import combination_mask

        chosen = np.zeros_like(alive[name])
        np.put_along_axis(chosen, best[..., None], True, axis=-1)
        np.testing.assert_array_equal(mask, combination_mask(chosen, 2, 4, axis=1))
    method.check()  # the baked masks are exact 2:4


# --------------------------------------------------------------------------- item 14: SRigL, no gradient


def test_srigl_on_bert_skips_the_pooler_that_gets_no_gradient():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method = nt.SRigL(model, 0.5, t_end=4, delta=2, rng=0)
    pooler = method.layers["pooler.dense"].mask.clone()
    for _ in range(3):  # one update, at step 2; the loss does not use the pooler
        loss = model(torch.randint(0, 32, (2, 8))).last_hidden_state.square().mean()
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step()
        opt.step()
        method.after_optimizer_step()
    method.check()
    assert torch.equal(method.layers["pooler.dense"].mask, pooler)  # not rewired, still valid
    rows = {r.name: r for r in method.report().layers}
    assert "1 update(s) skipped: no gradient" in rows["pooler.dense"].pattern
    assert "skipped" not in rows["encoder.layer.0.intermediate.dense"].pattern
    assert method.history()["encoder.layer.0.intermediate.dense"]  # the others were updated


# --------------------------------------------------------------------------- item 7: weight layouts


def test_sparsify_groups_a_transposed_convolution_along_its_input_axis():
    from nmsolve.nm import nm_mask

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 4, 3), torch.nn.ConvTranspose1d(4, 6, 2))
    weights = [model[0].weight.detach().clone(), model[1].weight.detach().clone()]
    report = nt.sparsify(model, 2, 4, types=(torch.nn.ConvTranspose2d, torch.nn.ConvTranspose1d))
    assert [r.masked for r in report.layers] == [True, True]
    for name, w in zip(("0", "1"), weights, strict=True):
        mask = nt.get_masks(model)[name].numpy() != 0
        # weight is (in, out, *kernel): groups of 4 along axis 0, the input channels
        np.testing.assert_array_equal(mask, nm_mask(np.abs(w.numpy()), 2, 4, axis=0))
    # transposable: N:M on both axes of the (out, in, *kernel) 2-D view
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 4, 1))
    nt.sparsify(model, 2, 4, types=(torch.nn.ConvTranspose2d,), method="transposable")
    mask = nt.get_masks(model)["0"].numpy()[:, :, 0, 0] != 0
    assert is_nm(mask, 2, 4, axis=0, exact=True) and is_nm(mask, 2, 4, axis=1, exact=True)


def test_transposed_convolution_with_ragged_input_or_groups_is_skipped_with_a_reason():
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(6, 8, 3), torch.nn.ConvTranspose2d(8, 8, 3, groups=4))
    report = nt.sparsify(model, 2, 4, types=(torch.nn.ConvTranspose2d,))
    reasons = [r.reason for r in report.layers]
    assert not any(r.masked for r in report.layers)
    assert "in=6 is not a multiple of m=4" in reasons[0] and "in per group = 2 (groups=4)" in reasons[1]


def test_training_methods_skip_transposed_convolutions_and_layers_without_weight():
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 4, 3), torch.nn.LSTM(4, 4), torch.nn.Linear(4, 4))
    types = (torch.nn.ConvTranspose2d, torch.nn.LSTM, torch.nn.Linear)
    method = nt.SRSTE(model, 2, 4, types=types)
    rows = {r.name: r for r in method.report().layers}
    assert list(method.layers) == ["2"]
    assert "weight is (in, out/groups, *kernel)" in rows["0"].reason
    assert "no `weight` tensor" in rows["1"].reason
    report = nt.sparsify(torch.nn.Sequential(torch.nn.LSTM(4, 4)), 2, 4, types=types)
    assert [r.reason for r in report.skipped] == ["no `weight` tensor (only module.weight is masked)"]


# --------------------------------------------------------------------------- item 8: other parametrizations

_OTHERS = {
    "weight_norm": lambda lin: torch.nn.utils.parametrizations.weight_norm(lin),
    "spectral_norm": lambda lin: torch.nn.utils.parametrizations.spectral_norm(lin),
    "orthogonal": lambda lin: torch.nn.utils.parametrizations.orthogonal(lin),
}


@pytest.mark.parametrize("other", sorted(_OTHERS))
def test_masks_on_layers_parametrized_by_another_library(other):
    from torch.nn.utils import parametrize

    from nmsolve.nm import nm_mask

    torch.manual_seed(0)
    lin = _OTHERS[other](torch.nn.Linear(8, 8)).eval()
    before = lin.weight.detach().clone()
    report = nt.sparsify(lin, 2, 4)
    assert report.layers[0].masked and report.layers[0].kind == "Linear"
    mask = nt.get_masks(lin)[""]
    np.testing.assert_array_equal(mask.numpy() != 0, nm_mask(np.abs(before.numpy()), 2, 4, axis=1))
    torch.testing.assert_close(lin.weight, before * mask)  # the mask multiplies the other's output
    x = torch.randn(3, 8)
    torch.testing.assert_close(lin(x), x @ (before * mask).T + lin.bias)
    state = lin.state_dict()
    assert "parametrizations.weight.1.mask" in state
    fresh = _OTHERS[other](torch.nn.Linear(8, 8)).eval()
    nt.load_state_dict(fresh, state)
    torch.testing.assert_close(fresh.weight, lin.weight)
    with pytest.raises(ValueError, match=r"also parametrized by another library.*remove_parametrizations"):
        nt.bake(lin)
    assert nt.get_masks(lin) and parametrize.is_parametrized(lin)  # nothing changed
    nt.remove_masks(lin)  # the other parametrization stays, the weight is dense again
    assert not nt.get_masks(lin) and parametrize.is_parametrized(lin)
    torch.testing.assert_close(lin.weight, before)


def test_training_methods_skip_layers_parametrized_by_another_library():
    model = torch.nn.Sequential(
        torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(8, 8)), torch.nn.Linear(8, 4)
    )
    method = nt.SRSTE(model, 2, 4)
    assert list(method.layers) == ["1"]
    assert "weight already parametrized by ['_WeightNorm']" in method.report().skipped[0].reason


# --------------------------------------------------------------------------- item 6: writes through .data


class _PlainMask(torch.nn.Module):
    """The oracle: a plain torch parametrization ``W * mask`` with no cache."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


def _original(lin):
    return lin.parametrizations.weight.original


_WRITES = {
    "original.data.mul_": lambda lin: _original(lin).data.mul_(2),
    "original.data =": lambda lin: setattr(_original(lin), "data", _original(lin).detach() * 3),
    "mask.data.fill_": lambda lin: lin.parametrizations.weight[0].mask.data.fill_(1),
    "mask.data[0].zero_": lambda lin: lin.parametrizations.weight[0].mask.data[0].zero_(),
    "weight.data.normal_ (HF _init_weights)": lambda lin: lin.weight.data.normal_(),
    "weight.data.fill_ twice": lambda lin: (lin.weight.data.fill_(5), lin.weight.data.fill_(7)),
}


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("write", sorted(_WRITES))
def test_writes_through_data_are_seen_as_plain_parametrize_sees_them(write, grad):
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    ours, plain = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    plain.load_state_dict(ours.state_dict())
    nt.sparsify(ours, 2, 4)
    parametrize.register_parametrization(plain, "weight", _PlainMask(nt.get_masks(ours)[""].clone()))
    x = torch.randn(3, 8)
    with torch.set_grad_enabled(grad):
        for lin in (ours, plain):
            lin(x)  # fills our cache
            _WRITES[write](lin)
        for _ in range(2):
            torch.testing.assert_close(ours(x), plain(x), rtol=0, atol=0)
            torch.testing.assert_close(ours.weight, plain.weight, rtol=0, atol=0)


def test_a_data_handle_kept_and_written_later_is_seen():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4)
    nt.sparsify(lin, 2, 4)
    x = torch.randn(3, 8)
    handle, mask = _original(lin).data, nt.get_masks(lin)[""]
    lin(x)
    handle.mul_(2)
    expected = torch.nn.functional.linear(x, _original(lin).detach() * mask, lin.bias)
    torch.testing.assert_close(lin(x), expected, rtol=0, atol=0)


def test_data_writes_after_a_fused_mask_refresh_are_seen():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    method = nt.SRSTE(model, 2, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 8)
    model(x).square().mean().backward()
    method.before_optimizer_step()
    opt.step()
    method.after_optimizer_step()  # writes W * mask into the cache itself
    _original(model[0]).data.mul_(2)
    expected = torch.nn.functional.linear(x, _original(model[0]).detach() * method.layers["0"].mask, model[0].bias)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    assert type(method.bake()["0"]) is torch.Tensor and type(model[0].weight) is torch.nn.Parameter


def test_watched_masks_and_weights_survive_deepcopy_to_and_bake():
    import copy

    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4)
    nt.sparsify(lin, 2, 4)
    x = torch.randn(3, 8)
    y = lin(x)  # the mask and the original are watched from here on
    twin = copy.deepcopy(lin)
    torch.testing.assert_close(twin(x), y, rtol=0, atol=0)
    _original(twin).data.mul_(2)  # the copy is watched too, and independent
    torch.testing.assert_close(twin(x) - twin.bias, 2 * (y - lin.bias))
    torch.testing.assert_close(lin(x), y, rtol=0, atol=0)
    lin.to(torch.float64)  # new tensors: watched again on first use
    lin(x.double())
    lin.parametrizations.weight[0].mask.data.fill_(1)
    torch.testing.assert_close(lin.weight, _original(lin).detach(), rtol=0, atol=0)
    nt.bake(lin)
    assert type(lin.weight) is torch.nn.Parameter and not lin.weight.__dict__
