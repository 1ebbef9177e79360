"""Sharded checkpoints (``model.safetensors.index.json`` + shards, as ``save_pretrained`` writes them)."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import nmsolve
import nmsolve.checkpoint.formats as formats
from nmsolve.cli import main

INDEX = "model.safetensors.index.json"


def sharded_model(folder: Path) -> dict[str, np.ndarray]:
    """Three shards, a config and tokenizer files, and a stray dense weight file that must not be copied."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    shards = {
        "model-00001-of-00003.safetensors": {
            "embed.weight": rng.normal(size=(10, 8)),
            "l0.weight": rng.normal(size=(8, 16)),
        },
        "model-00002-of-00003.safetensors": {"l1.weight": rng.normal(size=(4, 8, 3, 3)), "l1.bias": rng.normal(size=4)},
        "model-00003-of-00003.safetensors": {"l2.weight": rng.normal(size=(16, 8)), "step": np.array(3, np.int64)},
    }
    weight_map, total, everything = {}, 0, {}
    for shard, tensors in shards.items():
        tensors = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in tensors.items()}
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        for name, value in tensors.items():
            weight_map[name] = shard
            total += value.nbytes
            everything[name] = value
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "config.json").write_text('{"model_type": "toy"}')
    (folder / "tokenizer.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"dense weights, not to be copied")
    (folder / "sub").mkdir()
    return everything


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prune_a_sharded_folder_keeps_the_sharding_index_and_other_files(tmp_path, capsys):
    src = tmp_path / "model"
    original = sharded_model(src)
    before = snapshot(src)
    out = tmp_path / "pruned"
    assert main(["prune", str(src), str(out), "--masks", str(tmp_path / "masks.safetensors")]) == 0
    printed = capsys.readouterr().out
    assert (
        "copied config.json, tokenizer.json" in printed and "not copied" in printed and "pytorch_model.bin" in printed
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [INDEX, "config.json", "tokenizer.json", *(f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3))]
    )
    index = json.loads((out / INDEX).read_text())
    source_index = json.loads((src / INDEX).read_text())
    assert index["weight_map"] == source_index["weight_map"]
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in original.values())
    got = {}
    for shard in set(index["weight_map"].values()):
        tensors = load_file(str(out / shard))
        assert set(tensors) == {k for k, v in index["weight_map"].items() if v == shard}
        got.update(tensors)
    for name in ("l0.weight", "l2.weight"):
        np.testing.assert_array_equal(
            got[name], np.where(nmsolve.magnitude_mask(original[name], 2, 4), original[name], 0)
        )
    conv = original["l1.weight"]
    mask = nmsolve.weight_from_2d(
        nmsolve.magnitude_mask(nmsolve.weight_to_2d(conv)[0], 2, 4), nmsolve.WeightLayout(conv.shape)
    )
    np.testing.assert_array_equal(got["l1.weight"], np.where(mask, conv, 0))
    for name in ("embed.weight", "l1.bias", "step"):
        np.testing.assert_array_equal(got[name], original[name])
    assert got["step"].shape == ()
    assert (out / "config.json").read_text() == '{"model_type": "toy"}'
    assert snapshot(src) == before
    assert sorted(load_file(str(tmp_path / "masks.safetensors"))) == ["l0.weight", "l1.weight", "l2.weight"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.safetensors", "model", "pruned"]  # no temporary


def test_index_file_as_input_and_unsharded_output_and_report(tmp_path, capsys):
    src = tmp_path / "model"
    original = sharded_model(src)
    assert main(["prune", str(src / INDEX), str(tmp_path / "flat.safetensors")]) == 0
    flat = load_file(str(tmp_path / "flat.safetensors"))
    assert sorted(flat) == sorted(original)
    assert main(["prune", str(src / INDEX), str(tmp_path / "out")]) == 0  # index named: no other files
    assert "config.json" not in {p.name for p in (tmp_path / "out").iterdir()}
    capsys.readouterr()
    assert main(["report", str(src), "--methods", "nm"]) == 0
    out = capsys.readouterr().out
    assert "l0.weight" in out and "l1.weight" in out and "l2.weight" in out


def test_one_shard_open_at_a_time(tmp_path, monkeypatch):
    src = tmp_path / "model"
    sharded_model(src)
    open_now, most = [0], [0]
    real = formats._SafetensorsReader

    class Counting(real):
        def __init__(self, path):
            super().__init__(path)
            open_now[0] += 1
            most[0] = max(most[0], open_now[0])

        def close(self):
            open_now[0] -= 1
            super().close()

    monkeypatch.setitem(formats._READERS, "safetensors", Counting)
    nmsolve.prune_checkpoint(src, tmp_path / "out")
    assert most[0] == 1 and open_now[0] == 0


def test_existing_output_folder_is_never_clobbered(tmp_path, capsys):
    src = tmp_path / "model"
    sharded_model(src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    assert main(["prune", str(src), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["prune", str(src), str(out), "--overwrite"]) == 2  # not a sharded checkpoint: refused
    assert "not a sharded checkpoint" in capsys.readouterr().err
    assert snapshot(out) == {"precious.txt": b"mine"}
    assert main(["prune", str(src), str(src), "--overwrite"]) == 2
    assert "is the input checkpoint" in capsys.readouterr().err
    assert main(["prune", str(src), str(tmp_path), "--overwrite"]) == 2  # never a folder above the input
    assert "holds the input checkpoint" in capsys.readouterr().err
    # a previous output is replaced with --overwrite
    assert main(["prune", str(src), str(tmp_path / "again")]) == 0
    assert main(["prune", str(src), str(tmp_path / "again"), "--overwrite", "--n", "1"]) == 0
    w = load_file(str(tmp_path / "again" / "model-00001-of-00003.safetensors"))["l0.weight"]
    assert ((w != 0).reshape(8, 4, 4).sum(axis=2) == 1).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "model", "out"]


def test_output_folder_created_meanwhile_is_not_replaced(tmp_path, monkeypatch, capsys):
    import nmsolve.checkpoint.prune as ckpt

    src = tmp_path / "model"
    sharded_model(src)
    real = ckpt.scores_2d

    def other_writer(info, array):
        (tmp_path / "out").mkdir(exist_ok=True)
        return real(info, array)

    monkeypatch.setattr(ckpt, "scores_2d", other_writer)
    assert main(["prune", str(src), str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: (f / INDEX).write_text("{"), "not JSON"),
        (lambda f: (f / INDEX).write_text('{"weight_map": []}'), "no weight_map"),
        (lambda f: (f / "model-00002-of-00003.safetensors").unlink(), "is missing"),
        (
            lambda f: (f / INDEX).write_text(json.dumps({"weight_map": {"l0.weight": "../x.safetensors"}})),
            "plain file name",
        ),
        (
            lambda f: (f / INDEX).write_text(
                json.dumps({"weight_map": {"l0.weight": "model-00002-of-00003.safetensors"}})
            ),
            "does not match",
        ),
    ],
)
def test_broken_sharded_checkpoints_are_refused_clearly(tmp_path, capsys, mutate, message):
    src = tmp_path / "model"
    sharded_model(src)
    mutate(src)
    before = snapshot(tmp_path)
    assert main(["prune", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert snapshot(tmp_path) == before
