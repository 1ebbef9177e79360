"""Torch .pt checkpoints that are not flat state dicts: nesting, non-tensor entries, collisions, 0-d tensors."""

from pathlib import Path

import numpy as np
import pytest

import nmsolve
from nmsolve.cli import main

torch = pytest.importorskip("torch")


def nested(path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    torch.save(
        {
            "model": {"fc.weight": torch.randn(4, 8, generator=g), "bn": {"num_batches_tracked": torch.tensor(7)}},
            "epoch": 3,
            "optimizer": {"lr": 0.1, "betas": (0.9, 0.99)},
        },
        path,
    )
    return path


def test_pt_to_pt_keeps_the_structure_and_the_non_tensor_entries(tmp_path):
    src = nested(tmp_path / "in.pt")
    before = src.read_bytes()
    result = nmsolve.prune_checkpoint(src, tmp_path / "out.pt")
    assert [layer.name for layer in result.layers] == ["model.fc.weight"] and result.not_written == ()
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["epoch"] == 3 and out["optimizer"] == {"lr": 0.1, "betas": (0.9, 0.99)}
    w = torch.load(src, weights_only=True)["model"]["fc.weight"]
    mask = torch.from_numpy(nmsolve.magnitude_mask(w.numpy(), 2, 4))
    assert torch.equal(out["model"]["fc.weight"], torch.where(mask, w, torch.zeros(())))
    count = out["model"]["bn"]["num_batches_tracked"]
    assert count.shape == () and int(count) == 7  # a 0-d tensor stays 0-d
    assert src.read_bytes() == before


def test_pt_to_other_formats_names_what_was_not_written(tmp_path, capsys):
    src = nested(tmp_path / "in.pt")
    assert main(["prune", str(src), str(tmp_path / "out.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "3 entries of" in out and "epoch, optimizer.lr, optimizer.betas" in out
    from safetensors.numpy import load_file

    back = load_file(str(tmp_path / "out.safetensors"))
    assert sorted(back) == ["model.bn.num_batches_tracked", "model.fc.weight"]
    assert back["model.bn.num_batches_tracked"].shape == ()


def test_names_that_collide_after_flattening_are_refused(tmp_path, capsys):
    src = tmp_path / "in.pt"
    torch.save({"a": {"b": torch.ones(4, 4)}, "a.b": torch.zeros(4, 4)}, src)
    before = {p.name for p in tmp_path.iterdir()}
    assert main(["prune", str(src), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert "['a']['b'] and ['a.b'] both flatten to the name 'a.b'" in err and "Traceback" not in err
    assert {p.name for p in tmp_path.iterdir()} == before


def test_flat_zero_d_tensor_keeps_its_shape_in_pt(tmp_path):
    src = tmp_path / "in.pt"
    torch.save({"step": torch.tensor(5, dtype=torch.int64), "w": torch.ones(2, 4)}, src)
    nmsolve.prune_checkpoint(src, tmp_path / "out.pt")
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["step"].shape == () and int(out["step"]) == 5
    np.testing.assert_array_equal(out["w"].numpy().sum(axis=1), [2.0, 2.0])
