"""N:M checkpoints that ship: save_model_folder / prune_model_folder write a loadable folder and a sidecar
listing exactly the layers that are N:M in stored order; the one-shot path verifies what it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch import nn  # noqa: E402

import nmsolve.torch as nt  # noqa: E402
from nmsolve.checkpoint.formats import CheckpointError  # noqa: E402
from nmsolve.nm import is_nm  # noqa: E402
from nmsolve.torch.model_folder import SIDECAR  # noqa: E402

torch.set_num_threads(1)

WORDS = "the a cat dog sat ran on under mat tree big small red blue and then it was very quite".split()


def save_tiny_bert(folder):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).eval().save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "Transformer"}]))
    return folder


def load(folder):
    return transformers.BertModel.from_pretrained(folder, local_files_only=True).eval()


def batch():
    gen = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(5, 25, (2, 9), generator=gen),
        "attention_mask": torch.ones(2, 9, dtype=torch.long),
    }


def stored_nm(model, n=2, m=4):
    """Names of the Linear layers whose weight, as stored, is N:M along in."""
    return {
        name
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and is_nm(mod.weight.detach().numpy(), n, m)
    }


def test_round_trip_permuted_and_pruned_model(tmp_path):
    source = save_tiny_bert(tmp_path / "model")
    model = load(source)
    permuted = nt.permute_channels(model, 2, 4, progress=False)
    assert len(permuted.groups) == 4
    nt.sparsify(model, 2, 4, include="encoder.*")
    nt.bake(model)
    out = tmp_path / "out"
    sidecar = nt.save_model_folder(model, source, out, report=permuted)
    assert json.loads((out / SIDECAR).read_text()) == json.loads(json.dumps(sidecar))
    loaded = load(out)
    transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert (out / "modules.json").is_file() and (out / "vocab.txt").is_file()
    torch.testing.assert_close(loaded(**batch()).last_hidden_state, model(**batch()).last_hidden_state)
    listed = {entry["module"] for entry in sidecar["layers"]}
    assert (
        listed
        == stored_nm(loaded)
        == {
            n
            for n, _ in model.named_modules()
            if n.startswith("encoder.") and n.endswith(("query", "key", "value", "dense"))
        }
    )
    assert "pooler.dense" in sidecar["dense_layers"]
    assert sidecar["n"] == 2 and sidecar["m"] == 4 and "KEPT" in sidecar["convention"]
    assert "llm-compressor" in sidecar["convention"]
    applied = {tuple(p["consumers"]) for p in sidecar["permutations_applied"]}
    assert applied == {g.group.consumers for g in permuted.groups if g.changed}
    for entry in sidecar["permutations_applied"]:
        assert sorted(entry["permutation"]) == list(range(len(entry["permutation"])))

    # the folder exists now: refused without overwrite, replaced with it
    with pytest.raises(CheckpointError, match="already exists"):
        nt.save_model_folder(model, source, out, n=2, m=4)
    again = nt.save_model_folder(model, source, out, n=2, m=4, overwrite=True)
    assert again["permutations_applied"] == []


def test_prune_oneshot_claims_are_checked_before_writing(tmp_path):
    source = save_tiny_bert(tmp_path / "model")
    model = load(source)
    report = nt.prune_oneshot(model, [batch()], 2, 4, method="magnitude", progress=False)
    good = nt.save_model_folder(model, source, tmp_path / "good", report=report)
    assert {entry["module"] for entry in good["layers"]} == {r.name for r in report.layers} == stored_nm(model)
    assert good["pruning"][0]["method"] == "magnitude"
    with torch.no_grad():  # a pruned weight comes back: the layer is no longer 2:4
        model.encoder.layer[1].output.dense.weight.fill_(1.0)
    with pytest.raises(ValueError, match=r"layer 'encoder\.layer\.1\.output\.dense'.*not 2:4"):
        nt.save_model_folder(model, source, tmp_path / "bad", report=report)
    assert not (tmp_path / "bad").exists()
    assert not list(tmp_path.glob(".bad*"))


def test_prune_model_folder_writes_the_sidecar(tmp_path):
    source = save_tiny_bert(tmp_path / "model")
    calib = tmp_path / "calib.txt"
    rng = np.random.default_rng(0)
    calib.write_text("\n".join(" ".join(rng.choice(WORDS, size=8)) for _ in range(12)) + "\n")
    result = nt.prune_model_folder(source, tmp_path / "out", calib, 2, 4, method="wanda", samples=12)
    sidecar = json.loads((tmp_path / "out" / SIDECAR).read_text())
    assert sidecar == json.loads(json.dumps(result.sparsity))
    loaded = load(tmp_path / "out")
    assert {entry["module"] for entry in sidecar["layers"]} == stored_nm(loaded)
    assert {entry["module"] for entry in sidecar["layers"]} == {r.name for r in result.report.layers}
    # pruning the written folder again does not copy its sidecar as if it described the new model
    again = nt.prune_model_folder(tmp_path / "out", tmp_path / "again", calib, 1, 4, method="magnitude", samples=4)
    assert again.sparsity["pattern"] == "1:4"
    assert json.loads((tmp_path / "again" / SIDECAR).read_text())["pattern"] == "1:4"


def test_save_model_folder_refusals(tmp_path):
    source = save_tiny_bert(tmp_path / "model")
    model = load(source)
    with pytest.raises(ValueError, match="give n and m"):
        nt.save_model_folder(model, source, tmp_path / "a")
    with pytest.raises(ValueError, match="n=4, m=4"):
        nt.save_model_folder(model, source, tmp_path / "a", n=4, m=4)
    with pytest.raises(TypeError, match="report must be"):
        nt.save_model_folder(model, source, tmp_path / "a", n=2, m=4, report="2:4")
    with pytest.raises(TypeError, match="save_pretrained"):
        nt.save_model_folder(nn.Linear(4, 4), source, tmp_path / "a", n=2, m=4)
    nt.sparsify(model, 2, 4, include="encoder.*")
    with pytest.raises(ValueError, match="bake"):
        nt.save_model_folder(model, source, tmp_path / "a", n=2, m=4)
    assert not (tmp_path / "a").exists()


def test_oneshot_refuses_to_report_weights_that_are_not_nm():
    from nmsolve.torch.oneshot import _verify_written

    _verify_written("ok", torch.tensor([[1.0, 0.0, 0.0, 2.0]]), 2, 4, "nm")
    with pytest.raises(ValueError, match=r"layer 'fc': .*not 2:4 along in"):
        _verify_written("fc", torch.ones(2, 4), 2, 4, "nm")
    with pytest.raises(ValueError, match=r"layer 'fc': .*not 2:4 along out"):
        _verify_written("fc", torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 4), 2, 4, "transposable")


@pytest.mark.parametrize("layer", [nn.Linear(16, 8), nn.Conv2d(8, 4, 3)])
def test_bake_writes_nm_in_stored_order(layer):
    model = nn.Sequential(layer)
    nt.sparsify(model, 2, 4)
    nt.bake(model)
    w = model[0].weight.detach().numpy()
    view = np.moveaxis(w, 1, -1).reshape(-1, w.shape[1]) if w.ndim > 2 else w
    assert is_nm(view, 2, 4, exact=True)
