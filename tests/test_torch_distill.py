"""Distillation: a frozen dense teacher and the loss that recovers a pruned student."""

import copy

import pytest
import torch
from torch import nn

import nmsolve
import nmsolve.torch as nt


class TokenModel(nn.Module):
    """Per-token states from a dict batch, like a transformers encoder (``last_hidden_state``)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))

    def forward(self, input_ids, attention_mask):
        return {"last_hidden_state": self.mlp(self.embed(input_ids)), "attention_mask": attention_mask}


def token_batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 20, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    return {"input_ids": ids, "attention_mask": mask}


def test_mse_and_cosine_against_hand_computed_losses_over_real_tokens_only():
    torch.manual_seed(0)
    model = TokenModel()
    distill = nt.Distillation(model)
    cosine = nt.Distillation(model, loss="cosine")
    with torch.no_grad():
        model.mlp[2].weight.mul_(0.5)  # the student moves away from both teachers
    batch = token_batch(1)
    teacher = distill.teacher(**batch)["last_hidden_state"]
    student = model(**batch)["last_hidden_state"]
    real = batch["attention_mask"].bool()
    expected = (student - teacher)[real].square().mean()
    torch.testing.assert_close(distill(batch), expected)
    expected_cos = (1 - torch.nn.functional.cosine_similarity(student[real], teacher[real], dim=-1)).mean()
    torch.testing.assert_close(cosine(batch), expected_cos)
    padded = {**batch, "attention_mask": torch.ones_like(batch["attention_mask"])}
    assert not torch.allclose(distill(padded), expected)  # the padding tokens did count there


def test_the_teacher_is_a_frozen_copy_and_the_batch_is_not_modified():
    torch.manual_seed(0)
    model = TokenModel()
    dense = copy.deepcopy(model)
    distill = nt.Distillation(model)
    assert distill(token_batch(0)).item() == 0.0  # the student starts as the teacher
    batch = token_batch(2)
    saved = {k: v.clone() for k, v in batch.items()}
    method = nt.SRSTE(model, 2, 4, include="mlp.*")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        loss = distill(batch)
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step()
        opt.step()
        method.after_optimizer_step()
    assert all(torch.equal(batch[k], saved[k]) for k in batch)
    for (name, p), q in zip(distill.teacher.named_parameters(), dense.parameters(), strict=True):
        assert torch.equal(p, q), name
        assert not p.requires_grad and p.grad is None
    assert not distill.teacher.training
    assert not any(torch.equal(p, q) for p, q in zip(model.mlp.parameters(), dense.mlp.parameters(), strict=True))


def test_distillation_recovers_a_pruned_mlp():
    """Magnitude 2:4 on a random MLP, then SR-STE under the distillation loss: the loss falls well below its start."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 16))
    distill = nt.Distillation(model)
    method = nt.SRSTE(model, 2, 4)
    held_out = torch.randn(256, 16, generator=torch.Generator().manual_seed(1))
    start = distill(held_out).item()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(2)
    for _ in range(150):
        loss = distill(torch.randn(64, 16, generator=g))
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step()
        opt.step()
        method.after_optimizer_step()
    method.bake()
    assert nmsolve.is_nm(model[0].weight.detach().numpy(), 2, 4)
    assert distill(held_out).item() < 0.6 * start  # 0.024 -> 0.013 as written


def test_output_picker_and_plain_tensors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    distill = nt.Distillation(model, output=lambda out: out[:, :2])
    with torch.no_grad():
        model[0].weight[2:].mul_(3)  # rows the picker does not compare
    assert distill(torch.randn(5, 4)).item() == 0.0
    with torch.no_grad():
        model[0].weight[0].mul_(3)
    assert distill(torch.randn(5, 4)).item() > 0.0


def test_refusals_name_the_value():
    model = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(ValueError, match=r"loss must be one of \['cosine', 'mse'\], got 'kl'"):
        nt.Distillation(model, loss="kl")
    with pytest.raises(TypeError, match="output must be a callable"):
        nt.Distillation(model, output="last_hidden_state")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got str"):
        nt.Distillation("model")
    nt.sparsify(model, 2, 4)
    with pytest.raises(ValueError, match=r"already has parametrized \(masked\) layers \['0'\].*before sparsify"):
        nt.Distillation(model)

    class Keys(nn.Module):
        def forward(self, x):
            return {"pooled": x}

    with pytest.raises(TypeError, match=r"keys \['pooled'\].*pass output="):
        nt.Distillation(Keys())(torch.ones(2))
    with pytest.raises(TypeError, match="batch 0 is a str"):
        nt.Distillation(nn.Linear(2, 2))("text")
    with pytest.raises(TypeError, match="must be a floating-point tensor"):
        nt.Distillation(nn.Embedding(3, 2), output=lambda out: out.long())(torch.tensor([0, 1]))


def test_half_precision_models_get_a_float32_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8)).to(torch.bfloat16)
    distill = nt.Distillation(model)
    with torch.no_grad():
        model[0].weight.mul_(1.01)
    loss = distill(torch.randn(4, 8, dtype=torch.bfloat16))
    assert loss.dtype == torch.float32 and loss.item() > 0
    loss.backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.dtype == torch.bfloat16


def test_stacked_states_share_the_token_mask():
    """An output picker that stacks several states (e.g. every layer's) keeps padding out of every one."""
    torch.manual_seed(0)
    model = TokenModel()
    both = nt.Distillation(model, output=lambda out: torch.stack([out["last_hidden_state"]] * 2))
    last = nt.Distillation(model)
    with torch.no_grad():
        model.mlp[2].weight.mul_(0.5)
    batch = token_batch(3)
    real = batch["attention_mask"].bool()
    diff = model(**batch)["last_hidden_state"] - last.teacher(**batch)["last_hidden_state"]
    torch.testing.assert_close(both(batch), diff[real].square().mean())  # real tokens of both copies
    assert not torch.allclose(both(batch), diff.square().mean())  # the padded positions would change it


def test_hidden_states_compare_every_block_over_real_tokens():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()
    distill = nt.Distillation(bert, hidden_states=True)
    batch = {"input_ids": torch.randint(0, 30, (3, 5)), "attention_mask": token_batch(0)["attention_mask"]}
    assert distill(batch).item() == 0.0
    with torch.no_grad():
        bert.encoder.layer[0].output.dense.weight.mul_(0.5)
    student = bert(**batch, output_hidden_states=True).hidden_states
    teacher = distill.teacher(**batch, output_hidden_states=True).hidden_states
    real = batch["attention_mask"].bool()
    expected = torch.stack([(s - t)[real].square().mean() for s, t in zip(student[1:], teacher[1:], strict=True)])
    torch.testing.assert_close(distill(batch), expected.mean())
    assert expected[0] > 0 and expected[1] > 0  # both blocks' outputs moved and both count


def test_hidden_states_refusals():
    with pytest.raises(TypeError, match="not both"):
        nt.Distillation(nn.Linear(2, 2), hidden_states=True, output=lambda out: out)
    with pytest.raises(TypeError, match=r"hidden_states must be True or False, got 'yes'"):
        nt.Distillation(nn.Linear(2, 2), hidden_states="yes")

    class Plain(nn.Module):
        def forward(self, x, output_hidden_states=False):
            return x * 2

    with pytest.raises(TypeError, match="needs a model that returns hidden_states"):
        nt.Distillation(Plain(), hidden_states=True)(torch.ones(2))
