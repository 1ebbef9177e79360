"""nmsolve.torch.prune_oneshot: block-by-block one-shot pruning on calibration data (CPU)."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import nmsolve  # noqa: E402
import nmsolve.oneshot  # noqa: E402
import nmsolve.torch as nt  # noqa: E402

torch.set_num_threads(1)


def mlp(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 32, dtype=dtype),
        nn.ReLU(),
        nn.Linear(32, 32, dtype=dtype),
        nn.GELU(),
        nn.Linear(32, 8, dtype=dtype),
    )


def mlp_data(seed=1, batches=4):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(16, 16, generator=g)  # correlated inputs: where H matters
    return [torch.randn(48, 16, generator=g) @ mix for _ in range(batches)]


def relative_output_error(dense, pruned, batches, call=lambda model, b: model(b)):
    with torch.no_grad():
        num = sum(float(((call(dense, b) - call(pruned, b)).double() ** 2).sum()) for b in batches)
        den = sum(float((call(dense, b).double() ** 2).sum()) for b in batches)
    return num / den


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


class Recorder:
    """Wraps nmsolve.oneshot.prune_layer to record every (W, H) the driver passes (not the argument
    check on an identity layer that it runs first)."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = nmsolve.oneshot.prune_layer

        def wrapped(W, H, *args, **kwargs):
            if not np.array_equal(H, np.eye(len(H))):
                self.calls.append((np.array(W), np.array(H)))
            return real(W, H, *args, **kwargs)

        monkeypatch.setattr(nmsolve.oneshot, "prune_layer", wrapped)


# --------------------------------------------------------------------------- nn.Sequential


def test_sequential_blocks_are_children_and_weights_become_nm():
    model, data = mlp(), mlp_data()
    dense = copy.deepcopy(model)
    model.train()
    report = nt.prune_oneshot(model, data, 2, 4, progress=False)
    assert report.blocks == ("0", "2", "4")
    assert [r.name for r in report.layers] == ["0", "2", "4"]
    assert model.training and all(m.training for m in model.modules())  # flags restored
    for i in (0, 2, 4):
        w = model[i].weight.detach().numpy()
        assert nmsolve.is_nm(w, 2, 4) and np.count_nonzero(w) == w.size // 2
        assert torch.equal(model[i].bias, dense[i].bias)
    for r in report.layers:
        assert r.density == 0.5 and 0 < r.kept_fraction < 1 and r.rows == 4 * 48
        assert r.relative_error == pytest.approx(r.error / r.reference)
        assert r.error < r.magnitude_error
    text = str(report)
    assert "2:4" in text and "total: 3 layers in 3 blocks" in text

    magnitude = copy.deepcopy(dense)
    nt.prune_oneshot(magnitude, data, 2, 4, method="magnitude", progress=False)
    held_out = mlp_data(seed=7)
    assert relative_output_error(dense, model, held_out) < relative_output_error(dense, magnitude, held_out)


def test_generator_calibration_tuple_batches_and_transposable():
    model = mlp()
    gen = ((x,) for x in mlp_data())  # iterated once: a generator is enough
    report = nt.prune_oneshot(model, gen, 2, 4, structure="transposable", exclude="4", progress=False)
    assert [r.name for r in report.layers] == ["0", "2"]
    assert [(r.name, r.reason) for r in report.skipped] == [("4", "matched by exclude")]
    for i in (0, 2):
        assert nmsolve.is_transposable(model[i].weight.detach().numpy() != 0, 2, 4)


def test_second_block_sees_the_pruned_first_block(monkeypatch):
    model, data = mlp(), mlp_data()
    dense = copy.deepcopy(model)
    rec = Recorder(monkeypatch)
    nt.prune_oneshot(model, data, 2, 4, progress=False)
    x = torch.cat(data)
    np.testing.assert_allclose(rec.calls[0][1], (x.T.double() @ x.double()).numpy(), rtol=1e-10, atol=1e-8)
    hand = dense[1](torch.nn.functional.linear(x, model[0].weight, model[0].bias)).detach().double()  # pruned block 0
    np.testing.assert_allclose(rec.calls[1][1], (hand.T @ hand).numpy(), rtol=1e-9, atol=1e-8)
    dense_x = dense[1](dense[0](x)).detach().double()
    assert not np.allclose(rec.calls[1][1], (dense_x.T @ dense_x).numpy(), rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model(dtype):
    model, data = mlp(dtype), [x.to(dtype) for x in mlp_data()]
    report = nt.prune_oneshot(model, data, 2, 4, progress=False)
    assert len(report.layers) == 3
    for i in (0, 2, 4):
        assert model[i].weight.dtype == dtype
        assert nmsolve.is_nm(model[i].weight.float().detach().numpy(), 2, 4)
    assert all(np.isfinite(r.error) and r.error < r.magnitude_error for r in report.layers)


class NoList(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 8)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_model_without_modulelist_or_sequential_is_one_block():
    model = NoList()
    report = nt.prune_oneshot(model, mlp_data(), 2, 4, method="wanda", refit=True, progress=False)
    assert report.blocks == ("",) and [r.name for r in report.layers] == ["a", "b"]
    assert nmsolve.is_nm(model.a.weight.detach().numpy(), 2, 4)


def test_named_blocks():
    model = mlp()
    report = nt.prune_oneshot(model, mlp_data(), 2, 4, blocks=["0", "2"], progress=False)
    assert report.blocks == ("0", "2") and [r.name for r in report.layers] == ["0", "2"]
    assert [(r.name, r.reason) for r in report.skipped] == [("4", "outside the blocks")]
    outer = nn.Sequential(mlp())
    assert nt.prune_oneshot(outer, mlp_data(), 1, 4, blocks="0", progress=False).blocks == ("0.0", "0.2", "0.4")


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, hidden_states, scale=1.0):
        return (hidden_states + scale * torch.tanh(self.fc(hidden_states)), "extra")


class KeywordStack(nn.Module):
    """Blocks called with the hidden states as a keyword, returning a tuple."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(Residual() for _ in range(3))
        self.head = nn.Linear(16, 2)

    def forward(self, x, scale=0.5):
        for block in self.blocks:
            x = block(hidden_states=x, scale=scale)[0]
        return self.head(x)


def test_keyword_hidden_states_and_tuple_outputs(monkeypatch):
    model, data = KeywordStack(), mlp_data()
    dense = copy.deepcopy(model)
    rec = Recorder(monkeypatch)
    report = nt.prune_oneshot(model, [{"x": x, "scale": 0.5} for x in data], 2, 4, progress=False)
    assert report.blocks == ("blocks.0", "blocks.1", "blocks.2")
    assert [(r.name, r.reason) for r in report.skipped] == [("head", "outside the blocks")]
    x = torch.cat(data)
    with torch.no_grad():
        for i in range(3):  # hand-run: block i's input comes from the pruned blocks before it
            np.testing.assert_allclose(rec.calls[i][1], (x.T.double() @ x.double()).numpy(), rtol=1e-9, atol=1e-8)
            x = model.blocks[i](hidden_states=x, scale=0.5)[0]
    assert not torch.equal(model.blocks[2].fc.weight, dense.blocks[2].fc.weight)


# --------------------------------------------------------------------------- bad input


class Holder(nn.Module):
    def __init__(self, in_features=16):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([nn.Linear(in_features, 16), nn.Linear(16, 16)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


@pytest.mark.parametrize(
    ("make", "calibration", "kwargs", "error", "match"),
    [
        (mlp, mlp_data(), {"n": 4, "m": 4}, ValueError, "n=4, m=4"),
        (mlp, mlp_data(), {"n": 5, "m": 4}, ValueError, "n=5, m=4"),
        (mlp, [], {}, ValueError, "no batches"),
        (mlp, mlp_data()[0], {}, TypeError, "list"),
        (mlp, [np.zeros((4, 16))], {}, TypeError, "batch 0 is a ndarray"),
        (mlp, [{"inputs": torch.zeros(4, 16)}], {}, TypeError, "inputs"),
        (mlp, mlp_data(), {"method": "obs"}, ValueError, "obs"),
        (mlp, mlp_data(), {"structure": "diag"}, ValueError, "diag"),
        (mlp, mlp_data(), {"blocks": "encoder.layer"}, ValueError, "encoder.layer"),
        (mlp, mlp_data(), {"blocks": "1"}, ValueError, "ReLU"),
        (mlp, mlp_data(), {"include": "nothing*"}, ValueError, "include/exclude"),
        (mlp, mlp_data(), {"progress": "yes"}, TypeError, "progress"),
        (mlp, mlp_data(), {"damping": -1.0}, ValueError, "damping"),
        (lambda: nn.Sequential(nn.ReLU()), mlp_data(), {}, ValueError, "no Linear"),
        (lambda: Holder(18), [torch.randn(8, 18)], {}, ValueError, r"layers\.0 \(in=18\)"),
        (lambda: nn.Sequential(nn.Linear(16, 6)), mlp_data(), {"structure": "transposable"}, ValueError, "out=6"),
    ],
)
def test_bad_input_is_refused_and_leaves_the_model_unchanged(make, calibration, kwargs, error, match):
    model = make()
    before = state(model)
    with pytest.raises(error, match=match):
        nt.prune_oneshot(model, calibration, **{"progress": False, **kwargs})
    assert_unchanged(model, before)


def test_layers_outside_the_blocks_are_not_checked():
    model = Holder()
    model.head = nn.Linear(16, 6)  # out=6: no transposable mask, but it is outside the blocks anyway
    nt.sparsify(model, 1, 2, include="head")  # and it carries a mask: not touched either
    report = nt.prune_oneshot(model, mlp_data(), 2, 4, structure="transposable", progress=False)
    assert [r.name for r in report.layers] == ["layers.0", "layers.1"]
    assert [(r.name, r.reason) for r in report.skipped] == [("head", "outside the blocks")]


def test_masked_layers_are_refused():
    model = mlp()
    nt.sparsify(model, 2, 4, include="2")
    before = state(model)
    with pytest.raises(ValueError, match=r"\['2'\].*bake"):
        nt.prune_oneshot(model, mlp_data(), progress=False)
    assert_unchanged(model, before)
    report = nt.prune_oneshot(model, mlp_data(), exclude="2", progress=False)  # the others can still be pruned
    assert [r.name for r in report.layers] == ["0", "4"]


def test_forward_that_never_reaches_the_blocks_is_refused():
    class Skip(Holder):
        def forward(self, x):
            return x

    model = Skip()
    before = state(model)
    with pytest.raises(ValueError, match="without reaching the first block"):
        nt.prune_oneshot(model, [torch.randn(4, 16)], progress=False)
    assert_unchanged(model, before)


# --------------------------------------------------------------------------- a tiny BERT


@pytest.fixture(scope="module")
def bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


def bert_batches(seed=0, count=3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(1, 100, (4, 12), generator=g)
        mask = torch.ones(4, 12, dtype=torch.long)
        mask[1, 7:] = 0
        mask[3, 4:] = 0
        ids[mask == 0] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def bert_call(model, batch):
    hidden = model(**batch).last_hidden_state
    return hidden[batch["attention_mask"] != 0]


def block_inputs(model, batches, block):
    """Hand-run: each Linear of model.encoder.layer[block] -> X^T X of its non-padding inputs."""
    grams, hooks = {}, []
    for name, module in model.encoder.layer[block].named_modules():
        if isinstance(module, nn.Linear):

            def hook(mod, args, out, name=name):
                x = args[0][current["mask"]].double()
                grams[name] = grams.get(name, 0) + x.T @ x

            hooks.append(module.register_forward_hook(hook))
    current = {}
    with torch.no_grad():
        for b in batches:
            current["mask"] = b["attention_mask"] != 0
            model(**b)
    for h in hooks:
        h.remove()
    return grams


def test_bert_dict_batches_with_padding(bert, monkeypatch):
    model, data = copy.deepcopy(bert), bert_batches()
    rec = Recorder(monkeypatch)
    report = nt.prune_oneshot(model, data, 2, 4, progress=False)
    names = [r.name for r in report.layers]
    assert report.blocks == ("encoder.layer.0", "encoder.layer.1") and len(names) == 12
    assert [(r.name, r.reason) for r in report.skipped] == [("pooler.dense", "outside the blocks")]
    tokens = sum(int(b["attention_mask"].sum()) for b in data)
    assert all(r.rows == tokens for r in report.layers)  # padding rows left out
    modules = dict(model.named_modules())
    for name in names:
        assert nmsolve.is_nm(modules[name].weight.detach().numpy(), 2, 4)
    assert torch.equal(model.pooler.dense.weight, bert.pooler.dense.weight)

    # block 0: H is X^T X of the dense model's non-padding inputs
    dense0 = block_inputs(bert, data, 0)
    for (name, gram), (_, h) in zip(dense0.items(), rec.calls[:6], strict=True):
        np.testing.assert_allclose(h, gram.numpy(), rtol=1e-9, atol=1e-9 * float(gram.abs().max()), err_msg=name)
    # block 1: from the pruned block 0 (hand-run: pruned block 0, dense block 1)
    hybrid = copy.deepcopy(bert)
    hybrid.encoder.layer[0].load_state_dict(model.encoder.layer[0].state_dict())
    pruned1, dense1 = block_inputs(hybrid, data, 1), block_inputs(bert, data, 1)
    for (name, gram), (_, h) in zip(pruned1.items(), rec.calls[6:], strict=True):
        np.testing.assert_allclose(h, gram.numpy(), rtol=1e-9, atol=1e-9 * float(gram.abs().max()), err_msg=name)
        assert not np.allclose(h, dense1[name].numpy(), rtol=1e-3)

    magnitude = copy.deepcopy(bert)
    nt.prune_oneshot(magnitude, data, 2, 4, method="magnitude", progress=False)
    held_out = bert_batches(seed=5)
    ours = relative_output_error(bert, model, held_out, bert_call)
    assert ours < relative_output_error(bert, magnitude, held_out, bert_call)


class SentenceWrapper(nn.Module):
    """What a sentence-transformers model looks like to the driver: a features dict as the one argument."""

    def __init__(self, auto_model):
        super().__init__()
        self.auto_model = auto_model

    def forward(self, features):
        return self.auto_model(**features).last_hidden_state.mean(1)


def test_sentence_transformers_layout_and_bfloat16(bert, monkeypatch):
    wrapped = SentenceWrapper(copy.deepcopy(bert))
    assert nt.repeated_blocks(wrapped) == "auto_model.encoder.layer"
    rec = Recorder(monkeypatch)
    data = bert_batches()
    report = nt.prune_oneshot(wrapped, [(b,) for b in data], 2, 4, progress=True)
    assert report.blocks == ("auto_model.encoder.layer.0", "auto_model.encoder.layer.1")
    tokens = sum(int(b["attention_mask"].sum()) for b in data)
    assert all(r.rows == tokens for r in report.layers)  # the mask inside the features dict is found
    first = block_inputs(bert, data, 0)["attention.self.query"]
    np.testing.assert_allclose(rec.calls[0][1], first.numpy(), rtol=1e-9, atol=1e-9 * float(first.abs().max()))

    half = copy.deepcopy(bert).to(torch.bfloat16)
    report = nt.prune_oneshot(half, data, 2, 4, include="encoder.*", progress=False)
    assert len(report.layers) == 12 and half.encoder.layer[1].output.dense.weight.dtype == torch.bfloat16
    assert nmsolve.is_nm(half.encoder.layer[1].output.dense.weight.float().detach().numpy(), 2, 4)


def test_torch_keeps_its_thread_count():
    """numba's OpenMP layer sets the calling thread's OpenMP thread count, which torch reads as its own."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.randn(64, 64)
        (x @ x).sum()
        model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))
        nt.prune_oneshot(model, [torch.randn(256, 512)], 2, 4, progress=False)
        assert torch.get_num_threads() == 1
        nt.sparsify(nn.Sequential(nn.Linear(2048, 2048)), 2, 4)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
