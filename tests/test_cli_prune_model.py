"""nmsolve prune-model: one-shot pruning of a Hugging Face model folder on calibration text."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import nmsolve  # noqa: E402
from nmsolve.cli import main  # noqa: E402

torch.set_num_threads(1)

WORDS = "the a cat dog sat ran on under mat tree big small red blue and then it was very quite".split()
LINEAR = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")


def save_tiny_bert(folder, *, hidden=32, intermediate=64, shard=False):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=intermediate,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    model.save_pretrained(folder, **({"max_shard_size": 40_000} if shard else {}))
    # a sentence-transformers layout: modules.json and a pooling sub-folder
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "Transformer"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return model


def write_text(path, lines=40, seed=0):
    rng = np.random.default_rng(seed)
    path.write_text("\n\n".join(" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(lines)) + "\n")
    return path


@pytest.fixture
def setup(tmp_path):
    dense = save_tiny_bert(tmp_path / "model")
    return tmp_path, dense, write_text(tmp_path / "calib.txt")


def run(capsys, *argv):
    code = main(["prune-model", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prune_model_writes_a_loadable_nm_copy(setup, capsys):
    tmp, dense, calib = setup
    out = tmp / "pruned"
    code, stdout, stderr = run(capsys, tmp / "model", out, "--calibration", calib, "--samples", 30, "--no-progress")
    assert code == 0, stderr
    assert "encoder.layer.1.output.dense" in stdout and "pooler.dense (outside the blocks)" in stdout
    assert "30 lines" in stdout and "model.safetensors" in stdout
    for name in ("config.json", "vocab.txt", "tokenizer_config.json", "modules.json", "1_Pooling/config.json"):
        assert (out / name).is_file(), name
    assert (out / "1_Pooling" / "config.json").read_text() == (tmp / "model" / "1_Pooling" / "config.json").read_text()
    assert not list(tmp.glob(".pruned*"))  # no temporary left
    loaded = transformers.BertModel.from_pretrained(out, local_files_only=True)
    transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    for name, module in loaded.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("encoder."):
            assert nmsolve.is_nm(module.weight.detach().numpy(), 2, 4, exact=True), name
    assert torch.equal(loaded.pooler.dense.weight, dense.pooler.dense.weight)
    assert torch.equal(loaded.embeddings.word_embeddings.weight, dense.embeddings.word_embeddings.weight)

    # the output exists now: refused, unchanged; --overwrite replaces it
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    code, _, stderr = run(capsys, tmp / "model", out, "--calibration", calib, "--no-progress")
    assert code == 2 and "already exists" in stderr and "--overwrite" in stderr
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    code, stdout, stderr = run(
        capsys, tmp / "model", out, "--calibration", calib, "--m", 8, "--n", 4, "--method", "wanda", "--overwrite"
    )
    assert code == 0, stderr
    assert "4:8" in stdout
    loaded = transformers.BertModel.from_pretrained(out, local_files_only=True)
    assert nmsolve.is_nm(loaded.encoder.layer[0].intermediate.dense.weight.detach().numpy(), 4, 8, exact=True)


def test_sharded_input_stays_sharded(tmp_path, capsys):
    save_tiny_bert(tmp_path / "model", shard=True)
    assert (tmp_path / "model" / "model.safetensors.index.json").is_file()
    calib = write_text(tmp_path / "calib.txt")
    out = tmp_path / "pruned"
    code, _, stderr = run(capsys, tmp_path / "model", out, "--calibration", calib, "--include", "*.intermediate.dense")
    assert code == 0, stderr
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-*.safetensors"))) > 1
    loaded = transformers.BertModel.from_pretrained(out, local_files_only=True)
    assert nmsolve.is_nm(loaded.encoder.layer[1].intermediate.dense.weight.detach().numpy(), 2, 4, exact=True)
    assert not nmsolve.is_nm(loaded.encoder.layer[1].output.dense.weight.detach().numpy(), 2, 4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda tmp: ["--model", tmp / "missing"], "not found"),
        (lambda tmp: ["--model", tmp / "calib.txt"], "not a folder"),
        (lambda tmp: ["--model", tmp / "empty_folder"], "no config.json"),
        (lambda tmp: ["--calibration", tmp / "nothing.txt"], "not found"),
        (lambda tmp: ["--calibration", tmp / "blank.txt"], "holds no text"),
        (lambda tmp: ["--n", 4], "n=4, m=4"),
        (lambda tmp: ["--n", 5], "n=5, m=4"),
        (lambda tmp: ["--m", 3, "--n", 1], "not a multiple of m=3"),
        (lambda tmp: ["--model", tmp / "odd"], "not a multiple of m=4"),
        (lambda tmp: ["--samples", 0], "samples"),
        (lambda tmp: ["--include", "nothing*"], "no Linear layer of BertModel matches"),
    ],
)
def test_bad_input_exits_nonzero_and_writes_nothing(setup, capsys, change, message):
    tmp, _, calib = setup
    (tmp / "empty_folder").mkdir()
    (tmp / "blank.txt").write_text("\n   \n\n")
    if "odd" in str(change(tmp)):
        save_tiny_bert(tmp / "odd", hidden=32, intermediate=66)
    args = {"--model": tmp / "model", "--calibration": calib}
    extra = change(tmp)
    rest = []
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        if key in args:
            args[key] = value
        else:
            rest += [key, value]
    out = tmp / "pruned"
    code, _, stderr = run(capsys, args["--model"], out, "--calibration", args["--calibration"], *rest)
    assert code == 2 and message in stderr, stderr
    assert not out.exists() and not list(tmp.glob(".pruned*"))


def test_unknown_architecture_and_missing_transformers(tmp_path, capsys, monkeypatch):
    from nmsolve.torch import model_folder as hf_model

    folder = tmp_path / "model"
    save_tiny_bert(folder)
    calib = write_text(tmp_path / "calib.txt")
    monkeypatch.setattr(hf_model, "_load", lambda source, progress: (torch.nn.Sequential(torch.nn.Linear(8, 8)), None))
    code, _, stderr = run(capsys, folder, tmp_path / "out", "--calibration", calib)
    assert code == 2 and "unknown architecture Sequential" in stderr
    monkeypatch.undo()

    import builtins

    real = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers":
            raise ImportError("No module named 'transformers'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    code, _, stderr = run(capsys, folder, tmp_path / "out", "--calibration", calib)
    assert code == 2 and "needs torch and transformers" in stderr
    assert not (tmp_path / "out").exists()


def test_interrupt_leaves_nothing(setup, capsys, monkeypatch):
    tmp, _, calib = setup

    def interrupted(self, *args, **kwargs):
        (args[0] / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", interrupted)
    code, _, stderr = run(capsys, tmp / "model", tmp / "pruned", "--calibration", calib)
    assert code == 130 and "interrupted" in stderr
    assert not (tmp / "pruned").exists() and not list(tmp.glob(".pruned*"))


def test_weights_get_the_usual_permissions(setup, capsys):
    import os

    tmp, _, calib = setup
    code, _, stderr = run(capsys, tmp / "model", tmp / "pruned", "--calibration", calib, "--method", "magnitude")
    assert code == 0, stderr
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp / "pruned" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_refine_is_passed_on(setup, capsys):
    tmp, _, calib = setup
    code, _, stderr = run(capsys, tmp / "model", tmp / "pruned", "--calibration", calib, "--refine", "2")
    assert code == 0, stderr
    loaded = transformers.BertModel.from_pretrained(tmp / "pruned", local_files_only=True)
    assert nmsolve.is_nm(loaded.encoder.layer[0].intermediate.dense.weight.detach().numpy(), 2, 4)
