"""nmsolve.torch.permute_channels: function-preserving channel permutations that help N:M."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import nmsolve.torch as nt  # noqa: E402
from nmsolve.nm import is_nm  # noqa: E402

torch.set_num_threads(1)
ATOL = 1e-10


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _is_perm(p: np.ndarray) -> bool:
    return p.dtype == np.int64 and sorted(p.tolist()) == list(range(p.size))


def _check_report(report: nt.PermutationReport) -> None:
    for g in report.groups:
        assert _is_perm(g.permutation)
        assert g.kept_after >= g.kept_before
        assert g.total >= g.kept_after
        head = g.group.head_size
        if head is not None:  # only within heads
            blocks = g.permutation.reshape(-1, head) // head
            assert (blocks == np.arange(blocks.shape[0])[:, None]).all()
    assert report.kept_after >= report.kept_before
    text = str(report)
    assert "kept before" in text and report.pattern in text


def _kept(model: nn.Module, names: list[str], n: int = 2, m: int = 4) -> float:
    """|W| kept by magnitude N:M (sparsify + bake) in the named layers of a copy of ``model``."""
    model = copy.deepcopy(model)
    nt.sparsify(model, n, m, include=names)
    nt.bake(model)
    for name in names:
        w = model.get_submodule(name).weight.detach().numpy()
        w2 = np.moveaxis(w, 1, -1).reshape(-1, w.shape[1]) if w.ndim > 2 else w
        assert is_nm(w2 != 0, n, m) or is_nm(w2 != 0, n, m, pad=True)
    return float(sum(model.get_submodule(name).weight.detach().abs().sum() for name in names))


# --------------------------------------------------------------------------- models


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 24), nn.Dropout(0.1), nn.Tanh(), nn.Linear(24, 5)
    ).double()


def _cnn() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
        nn.Conv2d(16, 8, 1, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).double()
    model.train()
    with torch.no_grad():  # running statistics that are not the defaults
        for _ in range(3):
            model(torch.randn(4, 3, 6, 6, dtype=torch.float64))
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    return model.eval()


class _Attention(nn.Module):
    """Plain grouped-query attention (Llama-style names, no rotary)."""

    def __init__(self, hidden: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.head_dim = hidden // heads
        self.heads, self.kv_heads = heads, kv_heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(b, s, -1))


class _MLP(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, inner: int) -> None:
        super().__init__()
        self.self_attn = _Attention(hidden, heads, kv_heads)
        self.mlp = _MLP(hidden, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(x)
        return x + self.mlp(x)


class _Llama(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(32, 4, 2, 48) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _llama() -> nn.Module:
    torch.manual_seed(2)
    return _Llama().double().eval()


def _bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(3)
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertModel(config).double().eval()


def _bert_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 40, (2, 10), generator=gen)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


# --------------------------------------------------------------------------- function preserved


def test_mlp_outputs_unchanged_and_pruning_keeps_more():
    model = _mlp().eval()
    dense = copy.deepcopy(model)
    x = torch.randn(7, 12, dtype=torch.float64)
    y = model(x)
    report = nt.permute_channels(model, 2, 4, progress=False)
    torch.testing.assert_close(model(x), y, atol=ATOL, rtol=0)
    _check_report(report)
    assert [g.group.consumers for g in report.groups] == [("2",), ("5",)]
    assert {r.name for r in report.skipped} == {"0"}
    for g in report.groups:
        assert g.kept_after > g.kept_before
    names = ["2", "5"]
    after, before = _kept(model, names), _kept(dense, names)
    assert after > before
    assert after == pytest.approx(report.kept_after, rel=1e-9)
    assert before == pytest.approx(report.kept_before, rel=1e-9)


def test_cnn_with_batchnorm_outputs_unchanged():
    model = _cnn()
    dense = copy.deepcopy(model)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    y = model(x)
    report = nt.permute_channels(model, 2, 4, progress=False)
    torch.testing.assert_close(model(x), y, atol=ATOL, rtol=0)
    _check_report(report)
    assert [(g.group.consumers, g.group.channels, g.group.kind) for g in report.groups] == [
        (("3.0",), ("1",), "conv"),
        (("4",), ("3.1",), "conv"),
    ]
    assert any(g.changed for g in report.groups)
    bn = model.get_submodule("1")
    perm = torch.from_numpy(report.groups[0].permutation)
    torch.testing.assert_close(bn.running_mean, dense.get_submodule("1").running_mean[perm])
    reasons = {r.name: r.reason for r in report.skipped}
    assert set(reasons) == {"0", "7"}
    names = ["3.0", "4"]
    assert _kept(model, names) > _kept(dense, names)


def test_llama_block_gqa_outputs_unchanged():
    model = _llama()
    dense = copy.deepcopy(model)
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    y = model(x)
    report = nt.permute_channels(model, 2, 4, progress=False)
    torch.testing.assert_close(model(x), y, atol=ATOL, rtol=0)
    _check_report(report)
    kinds = {g.group.consumers[0]: (g.group.kind, g.group.producers, g.group.head_size) for g in report.groups}
    assert kinds == {
        "layers.0.self_attn.o_proj": ("attention", ("layers.0.self_attn.v_proj",), 8),
        "layers.0.mlp.down_proj": ("mlp", ("layers.0.mlp.gate_proj", "layers.0.mlp.up_proj"), None),
        "layers.1.self_attn.o_proj": ("attention", ("layers.1.self_attn.v_proj",), 8),
        "layers.1.mlp.down_proj": ("mlp", ("layers.1.mlp.gate_proj", "layers.1.mlp.up_proj"), None),
    }
    names = list(kinds)
    assert _kept(model, names) > _kept(dense, names)
    for name in ("q_proj", "k_proj", "v_proj"):
        assert f"layers.0.self_attn.{name}" in {r.name for r in report.skipped}


def test_bert_outputs_unchanged_magnitude_and_wanda():
    model = _bert()
    batch = _bert_batch()
    y = model(**batch).last_hidden_state
    report = nt.permute_channels(model, 2, 4, progress=False)
    torch.testing.assert_close(model(**batch).last_hidden_state, y, atol=ATOL, rtol=0)
    _check_report(report)
    consumers = sorted(g.group.consumers[0] for g in report.groups)
    assert consumers == sorted(
        f"encoder.layer.{i}.{p}" for i in range(2) for p in ("attention.output.dense", "output.dense")
    )
    attention = [g for g in report.groups if g.group.kind == "attention"]
    assert all(g.group.head_size == 8 for g in attention)
    skipped = {r.name for r in report.skipped}
    assert "encoder.layer.0.attention.self.query" in skipped and "pooler.dense" in skipped

    calibration = [_bert_batch(1), _bert_batch(2)]
    report = nt.permute_channels(model, 2, 4, scores="wanda", calibration=calibration, progress=False)
    torch.testing.assert_close(model(**batch).last_hidden_state, y, atol=ATOL, rtol=0)
    _check_report(report)
    assert report.scores == "wanda" and len(report.groups) == 4


def _tiny_llama(seed: int, **config):
    """A 2-layer float64 Llama LM with grouped-query attention (4 query heads, 2 key/value heads)."""
    transformers = pytest.importorskip("transformers")
    settings = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2)
    settings.update(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, **config)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**settings)).double().eval()


def test_hf_llama_gqa_outputs_unchanged():
    model = _tiny_llama(7)
    ids = torch.randint(0, 50, (2, 7))
    y = model(ids).logits
    report = nt.permute_channels(model, 2, 4, progress=False)
    torch.testing.assert_close(model(ids).logits, y, atol=ATOL, rtol=0)
    _check_report(report)
    assert sorted((g.group.kind, g.group.head_size) for g in report.groups) == [
        ("attention", 8),
        ("attention", 8),
        ("mlp", None),
        ("mlp", None),
    ]
    assert all(g.changed for g in report.groups)


def test_wanda_scores_use_the_input_norms_of_each_consumer():
    from nmsolve.nm import magnitude_mask

    model = _cnn()
    batches = [torch.randn(2, 3, 6, 6, dtype=torch.float64) for _ in range(2)]
    inputs: list[torch.Tensor] = []
    handle = model.get_submodule("3.0").register_forward_pre_hook(lambda mod, args: inputs.append(args[0]))
    with torch.no_grad():
        y = [model(b) for b in batches]
    handle.remove()
    norms = torch.cat(inputs).pow(2).sum(dim=(0, 2, 3)).sqrt().numpy()
    w = model.get_submodule("3.0").weight.detach().numpy()
    scores = np.moveaxis(np.abs(w), 1, -1).reshape(-1, 8) * norms
    expected = scores[magnitude_mask(scores, 2, 4)].sum()
    report = nt.permute_channels(model, 2, 4, scores="wanda", calibration=batches, progress=False)
    group = report.groups[0]
    assert group.group.consumers == ("3.0",)
    assert group.kept_before == pytest.approx(expected, rel=1e-12)
    assert group.total == pytest.approx(scores.sum(), rel=1e-12)
    with torch.no_grad():
        for b, out in zip(batches, y, strict=True):
            torch.testing.assert_close(model(b), out, atol=ATOL, rtol=0)
    assert not model.training  # the calibration run restores the training flags
    _check_report(report)


def test_residual_stream_of_a_llama_lm_keeps_the_logits():
    model = _tiny_llama(9, tie_word_embeddings=True)
    dense = copy.deepcopy(model)
    ids = torch.randint(0, 50, (2, 7))
    y = model(ids).logits
    report = nt.permute_channels(model, 2, 4, residual=True, progress=False)
    # LlamaRMSNorm sums the squares in float32: a permutation of the channels changes its rounding
    torch.testing.assert_close(model(ids).logits, y, atol=1e-6, rtol=0)
    _check_report(report)
    assert report.residual == "residual stream of model" and report.output_permutation is None
    stream = next(g for g in report.groups if g.group.kind == "residual")
    assert stream.changed and len(stream.group.consumers) == 10  # q, k, v, gate, up of two layers
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied, permuted once
    assert not report.skipped
    readers = list(stream.group.consumers)
    assert _kept(model, readers) > _kept(dense, readers)


def test_residual_stream_of_an_encoder_permutes_its_output_features():
    model = _bert()
    batch = _bert_batch()
    out = model(**batch)
    report = nt.permute_channels(model, 2, 4, residual=True, progress=False)
    again = model(**batch)
    perm = report.output_permutation
    assert perm is not None and _is_perm(perm)
    torch.testing.assert_close(again.last_hidden_state, out.last_hidden_state[..., perm], atol=ATOL, rtol=0)
    torch.testing.assert_close(again.pooler_output, out.pooler_output, atol=ATOL, rtol=0)  # pooler reads it
    assert "output_permutation" in str(report)

    transformers = pytest.importorskip("transformers")
    masked_lm = transformers.BertForMaskedLM(model.config).double().eval()
    report = nt.permute_channels(masked_lm, 2, 4, residual=True, progress=False)
    assert "cls.predictions.transform.dense" in report.residual and report.output_permutation is None
    assert all(g.group.kind != "residual" for g in report.groups)


def test_prune_oneshot_after_permuting_is_nm_in_stored_order():
    model = _llama()
    nt.permute_channels(model, 2, 4, progress=False)
    calibration = [torch.randn(2, 5, 32, dtype=torch.float64) for _ in range(2)]
    nt.prune_oneshot(model, calibration, 2, 4, method="sparsegpt", progress=False)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            assert is_nm(mod.weight.detach().numpy() != 0, 2, 4), name


def test_user_groups_on_a_custom_module():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(6, 16)
            self.norm = nn.LayerNorm(16)
            self.fc2 = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.norm(self.fc1(x))))

    torch.manual_seed(4)
    model = Net().double()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-1, 1)
    x = torch.randn(5, 6, dtype=torch.float64)
    y = model(x)
    group = nt.PermutationGroup(producers=("fc1",), consumers=("fc2",), channels=("norm",))
    report = nt.permute_channels(model, 1, 4, groups=[group], progress=False)
    torch.testing.assert_close(model(x), y, atol=ATOL, rtol=0)
    _check_report(report)
    assert report.groups[0].group is group


class _Bottleneck(nn.Module):
    """A ResNet-style bottleneck (traced by torch.fx): one ReLU module called three times, a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(16, 8, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 16, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + x)


class _Branches(nn.Module):
    """One producer read by two consumers (siblings: one permutation serves both)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.left = nn.Linear(16, 4)
        self.right = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.norm(self.fc1(x)))
        return self.left(h) * torch.tanh(self.right(h.relu()))


def test_fx_finds_groups_in_traceable_modules():
    torch.manual_seed(8)
    block = _Bottleneck().double()
    with torch.no_grad():
        for mod in block.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    block.eval()
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    y = block(x)
    report = nt.permute_channels(block, 2, 4, progress=False)
    torch.testing.assert_close(block(x), y, atol=ATOL, rtol=0)
    _check_report(report)
    assert [(g.group.producers, g.group.channels, g.group.consumers) for g in report.groups] == [
        (("conv1",), ("bn1",), ("conv2",)),
        (("conv2",), ("bn2",), ("conv3",)),
    ]
    assert {r.name for r in report.skipped} == {"conv1"}  # it reads the block's input (also the residual)

    model = _Branches().double()
    x = torch.randn(3, 8, dtype=torch.float64)
    y = model(x)
    report = nt.permute_channels(model, 2, 4, progress=False)
    torch.testing.assert_close(model(x), y, atol=ATOL, rtol=0)
    _check_report(report)
    assert [(g.group.channels, g.group.consumers) for g in report.groups] == [(("norm",), ("left", "right"))]


# --------------------------------------------------------------------------- left alone, with the reason


def test_layers_that_cannot_be_permuted_are_reported_and_untouched():
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Softmax(dim=-1), nn.Linear(8, 4)
    ).double()
    before = _state(model)
    report = nt.permute_channels(model, 2, 4, progress=False)
    reasons = {r.name: r.reason for r in report.skipped}
    assert "in=6, not a multiple of m=4" in reasons["2"]
    assert "not produced" in reasons["6"]  # a softmax is not elementwise
    assert [g.group.consumers for g in report.groups] == [("4",)]
    after = _state(model)
    for key in ("0.weight", "0.bias", "6.weight"):
        assert torch.equal(before[key], after[key]), key
    perm = torch.from_numpy(report.groups[0].permutation)  # layer 2 only produces: its rows move
    assert torch.equal(after["2.weight"], before["2.weight"][perm])


def test_masked_and_tied_layers_are_left_alone():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)).double()
    nt.sparsify(model, 2, 4, include="4")
    model[2].weight = model[0].weight  # tied
    before = _state(model)
    report = nt.permute_channels(model, 2, 4, progress=False)
    reasons = {r.name: r.reason for r in report.skipped}
    assert "tied" in reasons["2"]
    assert "mask" in reasons["4"]
    assert not report.groups and _same(before, _state(model))


def test_a_group_given_by_the_user_that_does_not_fit_is_reported():
    model = _mlp()
    before = _state(model)
    bad = [
        nt.PermutationGroup(producers=("0",), consumers=("5",)),  # 32 channels written, 24 read
        nt.PermutationGroup(producers=("1",), consumers=("2",)),  # a GELU is not a producer
        nt.PermutationGroup(producers=("0",), consumers=("nothing",)),
    ]
    report = nt.permute_channels(model, 2, 4, groups=bad, progress=False)
    assert not report.groups and _same(before, _state(model))
    reasons = {r.name: r.reason for r in report.skipped}
    assert "reads 24 channels, the producers write 32" in reasons["5"]
    assert "GELU" in reasons["2"]


def test_include_exclude_choose_the_consumers():
    model = _mlp()
    report = nt.permute_channels(model, 2, 4, exclude="5", progress=False)
    assert [g.group.consumers for g in report.groups] == [("2",)]
    assert "include/exclude" in {r.name: r.reason for r in report.skipped}["5"]


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 4, "m": 4}, ValueError, "n=4, m=4"),
        ({"n": 5, "m": 4}, ValueError, "n=5, m=4"),
        ({"n": 2.0, "m": 4}, TypeError, "2.0"),
        ({"scores": "bogus"}, ValueError, "'bogus'"),
        ({"scores": "wanda"}, ValueError, "calibration"),
        ({"calibration": [torch.randn(2, 12)]}, ValueError, "calibration"),
        ({"groups": "everything"}, ValueError, "'everything'"),
        ({"groups": 3}, TypeError, "groups must be"),
        ({"groups": ["0"]}, TypeError, "groups must be"),
        ({"method": "mfc"}, ValueError, "'mfc'"),
        ({"include": 3}, TypeError, "include"),
        ({"options": {"max_iter": -1}}, ValueError, "max_iter"),
        ({"options": {"method": "tabu"}}, ValueError, "method"),
        ({"options": 3}, TypeError, "options"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"residual": "yes"}, TypeError, "residual"),
        ({"scores": "wanda", "calibration": torch.randn(2, 12)}, TypeError, "calibration"),
        ({"scores": "wanda", "calibration": []}, ValueError, "no batches"),
    ],
)
def test_bad_arguments_are_refused_by_name_and_change_nothing(kwargs, error, match):
    model = _mlp().double()
    before = _state(model)
    args = {"n": 2, "m": 4, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        nt.permute_channels(model, **args)
    assert _same(before, _state(model))


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        nt.permute_channels({"0.weight": 1})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"producers": (), "consumers": ("2",)}, "at least one producer"),
        ({"producers": ("0",), "consumers": ("2",), "head_size": 0}, "head_size"),
        ({"producers": [0], "consumers": ("2",)}, "producers"),
    ],
)
def test_permutation_group_checks_its_fields(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        nt.PermutationGroup(**kwargs)
