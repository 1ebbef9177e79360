"""`nmsolve prune` / `nmsolve report` and the checkpoint reader/writer, on small generated checkpoints."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nmsolve
from nmsolve.checkpoint import MASK_METHODS, TensorInfo, mask_methods, open_checkpoint, write_checkpoint
from nmsolve.cli import main

ROOT = Path(__file__).resolve().parents[1]
try:
    import torch
except ImportError:  # pragma: no cover - torch is part of the dev install
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "embeddings.word_embeddings.weight": rng.normal(size=(10, 8)).astype(np.float32),
        "layer.0.dense.weight": rng.normal(size=(8, 16)).astype(np.float32),
        "layer.0.dense.bias": rng.normal(size=8).astype(np.float32),
        "layer.1.conv.weight": rng.normal(size=(4, 8, 3, 3)).astype(np.float32),
        "layer.1.proj.weight": rng.normal(size=(12, 8)).astype(np.float64),
        "position_ids": np.arange(16, dtype=np.int64).reshape(1, 16),
    }


def save(path: Path, data: dict[str, np.ndarray]) -> Path:
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(data, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **data)
    else:
        torch.save({k: torch.from_numpy(v) for k, v in data.items()}, path)
    return path


def load(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    if path.suffix == ".npz":
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}


def channel_last(w: np.ndarray) -> np.ndarray:
    return nmsolve.weight_to_2d(w)[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# --------------------------------------------------------------------------- prune


FORMATS = [".safetensors", ".npz", pytest.param(".pt", marks=needs_torch)]


@pytest.mark.parametrize("suffix_in", FORMATS)
@pytest.mark.parametrize("suffix_out", FORMATS)
def test_prune_nm_every_format(tmp_path, capsys, suffix_in, suffix_out):
    data = tensors()
    src = save(tmp_path / f"in{suffix_in}", data)
    before = src.read_bytes()
    dst = tmp_path / f"out{suffix_out}"
    assert main(["prune", str(src), str(dst), "--n", "2", "--m", "4"]) == 0
    out = capsys.readouterr().out
    assert src.read_bytes() == before  # input untouched
    pruned = load(dst)
    assert list(pruned) == list(data) or sorted(pruned) == sorted(data)
    for name in ("layer.0.dense.weight", "layer.1.conv.weight", "layer.1.proj.weight"):
        w, p = data[name], pruned[name]
        assert p.dtype == w.dtype and p.shape == w.shape
        mask = p != 0
        assert nmsolve.is_nm(mask, 2, 4, axis=1, exact=True)  # groups along `in` (axis 1), conv too
        np.testing.assert_array_equal(p, np.where(mask, w, 0))
        expected = nmsolve.weight_from_2d(nmsolve.magnitude_mask(channel_last(w), 2, 4), nmsolve.weight_to_2d(w)[1])
        np.testing.assert_array_equal(mask, expected)
        kept = nmsolve.kept_fraction(w, mask)
        assert f"{name}" in out and f"{kept:.4f}" in out
    for name in ("embeddings.word_embeddings.weight", "layer.0.dense.bias", "position_ids"):
        np.testing.assert_array_equal(pruned[name], data[name])  # excluded, 1-D, integer: copied
    assert "3 tensors pruned" in out and "3 copied unchanged" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, dst.name])  # no temporary left


def test_prune_kept_magnitude_totals_match(tmp_path):
    data = tensors(1)
    src = save(tmp_path / "in.safetensors", data)
    result = nmsolve.prune_checkpoint(src, tmp_path / "out.safetensors", n=1, m=4)
    pruned = load(tmp_path / "out.safetensors")
    names = [layer.name for layer in result.layers]
    kept = sum(np.abs(pruned[k].astype(np.float64)).sum() for k in names)
    total = sum(np.abs(data[k].astype(np.float64)).sum() for k in names)
    assert result.kept_fraction == pytest.approx(kept / total)
    assert result.pruned_parameters == sum(data[k].size for k in names)
    assert all(layer.pattern == "1:4" and layer.seconds >= 0 for layer in result.layers)


def test_prune_transposable_method_and_masks_file(tmp_path, capsys):
    from nmsolve.transposable import is_transposable

    data = tensors(2)
    src = save(tmp_path / "in.npz", data)
    dst, masks = tmp_path / "out.safetensors", tmp_path / "masks.safetensors"
    assert main(["prune", str(src), str(dst), "--method", "mcf", "--masks", str(masks)]) == 0
    assert "2:4 T" in capsys.readouterr().out
    pruned, saved = load(dst), load(masks)
    assert sorted(saved) == ["layer.0.dense.weight", "layer.1.conv.weight", "layer.1.proj.weight"]
    for name, mask in saved.items():
        assert mask.dtype == bool
        np.testing.assert_array_equal(mask, pruned[name] != 0)
        assert is_transposable(channel_last(mask), 2, 4, exact=True)
        best = nmsolve.transposable_mask(channel_last(data[name]), 2, 4, method="mcf")
        assert nmsolve.kept_magnitude(channel_last(data[name]), channel_last(mask)) == pytest.approx(
            nmsolve.kept_magnitude(channel_last(data[name]), best)
        )


def test_mask_method_table_names_and_dispatches_every_method():
    from nmsolve.transposable import METHODS, transposable_mask

    assert list(MASK_METHODS) == ["nm", *METHODS]
    assert not MASK_METHODS["nm"].transposable
    assert all(MASK_METHODS[name].transposable for name in METHODS)
    w = np.random.default_rng(6).normal(size=(8, 8))
    solvers = mask_methods(2, 4)
    assert list(solvers) == list(MASK_METHODS)
    np.testing.assert_array_equal(solvers["nm"](w), nmsolve.magnitude_mask(w, 2, 4))
    for name in ("mcf", "approx"):
        np.testing.assert_array_equal(solvers[name](w), transposable_mask(w, 2, 4, method=name))


def test_unknown_method_lists_the_valid_ones(tmp_path, capsys):
    message = f"method must be one of {sorted(MASK_METHODS)}, got 'mfc'"
    src = save(tmp_path / "in.npz", tensors())
    assert main(["prune", str(src), str(tmp_path / "out.npz"), "--method", "mfc"]) == 2
    assert message in capsys.readouterr().err
    assert main(["report", str(src), "--methods", "nm,mfc"]) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match=re.escape(message)):
        nmsolve.prune_checkpoint(src, tmp_path / "out.npz", method="mfc")
    with pytest.raises(ValueError, match=re.escape(message)):
        nmsolve.checkpoint_report(src, methods=["mfc"])
    assert not (tmp_path / "out.npz").exists()


def test_include_exclude(tmp_path):
    data = tensors()
    src = save(tmp_path / "in.npz", data)
    result = nmsolve.prune_checkpoint(src, tmp_path / "a.npz", include=[r"layer\.1"], exclude=["conv"])
    assert [layer.name for layer in result.layers] == ["layer.1.proj.weight"]
    result = nmsolve.prune_checkpoint(src, tmp_path / "b.npz", exclude=["$^"], n=1, m=2)
    assert "embeddings.word_embeddings.weight" in [layer.name for layer in result.layers]
    assert main(["prune", str(src), str(tmp_path / "c.npz"), "--include", "("]) == 2


def test_half_precision_and_bfloat16_are_pruned_in_their_dtype(tmp_path):
    rng = np.random.default_rng(3)
    w16 = rng.normal(size=(8, 8)).astype(np.float16)
    raw_bf16 = (rng.normal(size=(4, 8)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    src = tmp_path / "in.safetensors"
    write_checkpoint(
        src, [TensorInfo("a.weight", (8, 8), "F16"), TensorInfo("b.weight", (4, 8), "BF16")], [w16, raw_bf16]
    )
    nmsolve.prune_checkpoint(src, tmp_path / "out.safetensors")
    with open_checkpoint(tmp_path / "out.safetensors") as ckpt:
        assert [(i.name, i.dtype) for i in ckpt.infos] == [("a.weight", "F16"), ("b.weight", "BF16")]
        a, b = ckpt.read("a.weight"), ckpt.read("b.weight")
    np.testing.assert_array_equal(a, np.where(nmsolve.magnitude_mask(w16, 2, 4), w16, 0))
    as_float = (raw_bf16.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(b, np.where(nmsolve.magnitude_mask(as_float, 2, 4), raw_bf16, 0))
    if torch is not None:  # the official reader agrees on the bfloat16 values
        from safetensors.torch import load_file

        back = load_file(str(tmp_path / "out.safetensors"))["b.weight"].float().numpy()
        np.testing.assert_array_equal(back, np.where(nmsolve.magnitude_mask(as_float, 2, 4), as_float, 0))


@needs_torch
def test_torch_bfloat16_and_nested_state_dict(tmp_path):
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    torch.save({"model": {"fc.weight": w, "fc.bias": torch.zeros(8)}}, tmp_path / "in.pt")
    result = nmsolve.prune_checkpoint(tmp_path / "in.pt", tmp_path / "out.pt")
    assert [layer.name for layer in result.layers] == ["model.fc.weight"]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    pruned = out["model"]["fc.weight"]  # a .pt output keeps the nesting
    assert pruned.dtype == torch.bfloat16
    mask = nmsolve.magnitude_mask(w.float().numpy(), 2, 4)
    assert torch.equal(pruned, torch.where(torch.from_numpy(mask), w, torch.zeros((), dtype=torch.bfloat16)))


def test_streaming_writer_writes_each_tensor_before_reading_the_next(tmp_path):
    infos = [TensorInfo(f"t{i}", (256, 256), "F32") for i in range(4)]
    sizes = []

    def produce():
        for i in range(4):
            temps = [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
            sizes.append(temps[0].stat().st_size if temps else -1)
            yield np.full((256, 256), i, np.float32)

    write_checkpoint(tmp_path / "big.safetensors", infos, produce())
    # the temporary file already holds the previous tensors when the next is requested (buffering aside)
    assert sizes[0] < sizes[-1] and sizes[-1] >= 2 * 256 * 256 * 4
    with open_checkpoint(tmp_path / "big.safetensors") as ckpt:
        assert [float(ckpt.read(f"t{i}")[0, 0]) for i in range(4)] == [0.0, 1.0, 2.0, 3.0]


def test_progress_bar(tmp_path, capsys):
    src = save(tmp_path / "in.npz", tensors())
    assert main(["prune", str(src), str(tmp_path / "out.npz"), "--progress"]) == 0
    assert "prune 2:4" in capsys.readouterr().err
    assert main(["report", str(src), "--methods", "nm", "--progress"]) == 0
    assert "report 2:4" in capsys.readouterr().err


def test_runs_as_python_module(tmp_path):
    src = save(tmp_path / "in.npz", tensors())
    done = subprocess.run(
        [sys.executable, "-m", "nmsolve", "prune", str(src), str(tmp_path / "out.npz"), "--m", "8", "--n", "3"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "3:8" in done.stdout
    assert nmsolve.is_nm(load(tmp_path / "out.npz")["layer.0.dense.weight"], 3, 8, exact=True)


def test_help_is_light_and_each_command_documents_its_arguments(capsys):
    code = (
        "import sys\n"
        "from nmsolve.cli import main\n"
        "assert 'nmsolve.checkpoint' not in sys.modules and 'numba' not in sys.modules\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0\n"
        "print(sorted(name for name in ('numba', 'nmsolve.checkpoint') if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert "prune" in done.stdout and "report" in done.stdout and "demo" in done.stdout
    assert done.stdout.strip().endswith("[]")  # neither numba nor the checkpoint library was imported
    for command, words in (
        ("prune", ["--method", "'embed'", *MASK_METHODS]),
        ("report", ["--methods", "nm,approx,mcf"]),
    ):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert all(word in out for word in words), (command, out)


# --------------------------------------------------------------------------- report


def test_report_on_dense_and_pruned(tmp_path, capsys):
    data = tensors(4)
    src = save(tmp_path / "in.safetensors", data)
    assert main(["report", str(src), "--methods", "nm"]) == 0
    dense = capsys.readouterr().out
    assert "layer.0.dense.weight" in dense and "100.0%" in dense
    nmsolve.prune_checkpoint(src, tmp_path / "out.safetensors")
    report = nmsolve.checkpoint_report(tmp_path / "out.safetensors", methods=["nm"])
    for layer in report.layers:
        assert layer.nm_violations == 0.0 and layer.kept["nm"] == pytest.approx(1.0)
        assert layer.density == pytest.approx(0.5)
    dense_report = nmsolve.checkpoint_report(src, methods=["nm"])
    for layer in dense_report.layers:
        w = channel_last(data[layer.name])
        assert layer.nm_violations == 1.0
        assert layer.kept["nm"] == pytest.approx(nmsolve.kept_fraction(w, nmsolve.magnitude_mask(w, 2, 4)))


def test_report_transposable_columns(tmp_path, capsys):
    from nmsolve.transposable import transposable_mask

    rng = np.random.default_rng(5)
    w = rng.normal(size=(8, 8)).astype(np.float32)
    t = np.where(transposable_mask(w, 2, 4), w, 0)
    src = save(tmp_path / "in.npz", {"t.weight": t, "w.weight": w, "odd.weight": rng.normal(size=(6, 8))})
    report = nmsolve.checkpoint_report(src)
    layers = {layer.name: layer for layer in report.layers}
    assert report.methods == ("nm", "approx", "mcf")
    assert layers["t.weight"].transposable_violations == 0.0 and layers["t.weight"].kept["mcf"] == pytest.approx(1.0)
    assert layers["w.weight"].transposable_violations == 1.0
    assert layers["w.weight"].kept["approx"] <= layers["w.weight"].kept["mcf"] + 1e-12
    assert layers["w.weight"].kept["mcf"] <= layers["w.weight"].kept["nm"] + 1e-12
    assert layers["odd.weight"].transposable_violations is None and layers["odd.weight"].kept["mcf"] is None
    assert main(["report", str(src)]) == 0
    assert "kept mcf" in capsys.readouterr().out


# --------------------------------------------------------------------------- bad input


def bad_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    src = save(tmp_path / "in.npz", tensors())
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    (tmp_path / "short.safetensors").write_bytes(b"\x01")
    (tmp_path / "garbage.npz").write_bytes(b"PK not really a zip")
    (tmp_path / "weights.txt").write_text("hello")
    save(tmp_path / "odd.npz", {"w.weight": np.ones((4, 6), np.float32)})
    save(tmp_path / "nan.npz", {"a.weight": np.ones((4, 8), np.float32), "b.weight": np.full((4, 8), np.nan)})
    (tmp_path / "exists.npz").write_bytes(b"keep me")
    out = str(tmp_path / "out.safetensors")
    return [
        (["prune", str(tmp_path / "missing.npz"), out], "no such file"),
        (["prune", str(tmp_path / "garbage.safetensors"), out], "not a .safetensors file"),
        (["prune", str(tmp_path / "short.safetensors"), out], "not a .safetensors file"),
        (["prune", str(tmp_path / "garbage.npz"), out], "not a .npz file"),
        (["prune", str(tmp_path / "weights.txt"), out], "unknown checkpoint format '.txt'"),
        (["prune", str(src), str(tmp_path / "out.txt")], "unknown checkpoint format '.txt'"),
        (["prune", str(tmp_path / "odd.npz"), out], "6 input channels, not a multiple of m=4"),
        (["prune", str(src), out, "--method", "mcf", "--m", "8"], "not a multiple of m=8"),
        (["prune", str(src), out, "--n", "5", "--m", "4"], "0 < n <= m, got n=5, m=4"),
        (["prune", str(src), str(src)], "is the input checkpoint"),
        (["prune", str(src), str(tmp_path / "exists.npz")], "already exists"),
        (["prune", str(src), str(tmp_path / "nope" / "out.npz")], "does not exist"),
        (["prune", str(tmp_path / "nan.npz"), out], "tensor 'b.weight' contains NaN"),
        (["prune", str(src), out, "--masks", str(src)], "is the input checkpoint"),
        (["report", str(tmp_path / "missing.npz")], "no such file"),
        (["report", str(src), "--n", "0"], "0 < n <= m"),
        (["report", str(src), "--methods", "nm,bogus"], "got 'bogus'"),
    ]


def test_bad_input_fails_cleanly_and_leaves_nothing(tmp_path, capsys):
    for argv, message in bad_cases(tmp_path):
        before = snapshot(tmp_path)
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert "Traceback" not in err
        assert snapshot(tmp_path) == before, argv  # no partial output, no temporary, input intact


def test_failure_midway_removes_outputs(tmp_path, monkeypatch):
    import nmsolve.checkpoint.prune as ckpt

    src = save(tmp_path / "in.npz", tensors())
    calls = []
    real = ckpt.scores_2d

    def failing(info, array):
        calls.append(info.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # even an interrupt leaves no partial file
        return real(info, array)

    monkeypatch.setattr(ckpt, "scores_2d", failing)
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        nmsolve.prune_checkpoint(src, tmp_path / "out.safetensors", masks=tmp_path / "m.npz")
    assert snapshot(tmp_path) == before


def test_overwrite_flag_replaces_output_but_never_input(tmp_path):
    src = save(tmp_path / "in.npz", tensors())
    (tmp_path / "out.npz").write_bytes(b"old")
    assert main(["prune", str(src), str(tmp_path / "out.npz"), "--overwrite"]) == 0
    assert "layer.0.dense.weight" in load(tmp_path / "out.npz")
    assert main(["prune", str(src), str(src), "--overwrite"]) == 2
