"""Inputs the CLI must explain rather than misreport: a folder, an empty tensor."""

import warnings

import numpy as np

from nmsolve.cli import main


def test_a_folder_without_an_index_is_explained(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    for argv in (["prune", str(folder), str(tmp_path / "out.npz")], ["report", str(folder)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "is a folder, not a checkpoint file" in err and "model.safetensors.index.json" in err, err
        assert "no such file" not in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_report_on_an_empty_tensor_says_n_a_without_warnings(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", empty=np.zeros((0, 8), np.float32), fc=np.ones((2, 8), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning (mean of empty slice) fails the test
        assert main(["report", str(tmp_path / "in.npz"), "--methods", "nm"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("empty"))
    assert "nan" not in out and "n/a" in row, out
