"""The CLI fault suite: concurrent writers, signals mid-write, a full disk, corrupted headers.

Every case asserts that no partial, temporary or clobbered output is left and that the input is intact.
"""

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import nmsolve
from nmsolve.checkpoint import CheckpointError
from nmsolve.cli import main

ROOT = Path(__file__).resolve().parents[1]


def make_input(path: Path, rows: int = 8) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, **{f"layer.{i}.weight": rng.normal(size=(rows, 16)).astype(np.float32) for i in range(3)})
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# --------------------------------------------------------------------------- concurrent writers


def test_output_created_meanwhile_is_never_replaced(tmp_path, monkeypatch, capsys):
    import nmsolve.checkpoint.prune as ckpt

    src = make_input(tmp_path / "in.npz")
    real = ckpt.scores_2d

    def other_writer(info, array):  # another process creates OUT while this one is computing
        (tmp_path / "out.npz").write_bytes(b"the other run's result")
        return real(info, array)

    monkeypatch.setattr(ckpt, "scores_2d", other_writer)
    assert main(["prune", str(src), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert "out.npz already exists" in err and "nothing was replaced" in err and "Traceback" not in err
    assert (tmp_path / "out.npz").read_bytes() == b"the other run's result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "out.npz"]  # no temporary left


def test_masks_collision_removes_the_output_too(tmp_path, monkeypatch):
    import nmsolve.checkpoint.prune as ckpt

    src = make_input(tmp_path / "in.npz")
    real = ckpt.scores_2d

    def other_writer(info, array):
        (tmp_path / "masks.npz").write_bytes(b"theirs")
        return real(info, array)

    monkeypatch.setattr(ckpt, "scores_2d", other_writer)
    with pytest.raises(CheckpointError, match=r"masks\.npz already exists"):
        nmsolve.prune_checkpoint(src, tmp_path / "out.npz", masks=tmp_path / "masks.npz")
    # OUT and --masks appear together or not at all
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "masks.npz"]
    assert (tmp_path / "masks.npz").read_bytes() == b"theirs"


def test_two_concurrent_writers_exactly_one_wins(tmp_path, monkeypatch):
    import nmsolve.checkpoint.prune as ckpt

    src = make_input(tmp_path / "in.npz")
    before = src.read_bytes()
    barrier = threading.Barrier(2, timeout=20)
    real = ckpt.scores_2d
    seen: set[int] = set()

    def together(info, array):  # both runs pass the start-up checks before either writes
        if threading.get_ident() not in seen:
            seen.add(threading.get_ident())
            barrier.wait()
        return real(info, array)

    monkeypatch.setattr(ckpt, "scores_2d", together)
    outcomes: list[object] = []

    def run(n):
        try:
            outcomes.append(nmsolve.prune_checkpoint(src, tmp_path / "out.npz", n=n, m=4))
        except CheckpointError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=run, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    errors = [o for o in outcomes if isinstance(o, CheckpointError)]
    wins = [o for o in outcomes if not isinstance(o, CheckpointError)]
    assert len(errors) == 1 and len(wins) == 1, outcomes
    assert "already exists" in str(errors[0])
    winner = wins[0]
    with np.load(tmp_path / "out.npz") as out:  # the file on disk is the winner's, complete
        w = out["layer.0.weight"]
    assert ((w != 0).reshape(8, 4, 4).sum(axis=2) == winner.n).all()
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "out.npz"]


def test_overwrite_keeps_the_mode_of_the_replaced_file(tmp_path):
    src = make_input(tmp_path / "in.npz")
    out = tmp_path / "out.npz"
    out.write_bytes(b"old")
    out.chmod(0o640)
    assert main(["prune", str(src), str(out), "--overwrite"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert "layer.0.weight" in np.load(out).files


def test_outputs_are_fsynced_before_they_are_moved_into_place(tmp_path, monkeypatch):
    import nmsolve.checkpoint.formats as formats

    src = make_input(tmp_path / "in.npz")
    synced: list[tuple[str, bool]] = []
    real = formats._fsync

    def record(path):
        synced.append((Path(path).name, (tmp_path / "out.npz").exists()))
        real(path)

    monkeypatch.setattr(formats, "_fsync", record)
    nmsolve.prune_checkpoint(src, tmp_path / "out.npz")
    temp_syncs = [name for name, placed in synced if name.startswith(".out.npz.") and not placed]
    assert temp_syncs, synced  # the file, before the rename
    assert (tmp_path.name, True) in synced  # and its folder, after


# --------------------------------------------------------------------------- signals mid-write

HOOK = """
import os, sys, time
import nmsolve.checkpoint.prune as ckpt
from nmsolve.cli import main
real = ckpt.scores_2d
calls = []
def slow(info, array):
    calls.append(1)
    if len(calls) == 2:  # the temporary files exist and hold the first tensor: announce, then wait
        open(sys.argv[1], "w").close()
        time.sleep(60)
    return real(info, array)
ckpt.scores_2d = slow
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(("signame", "code"), [("SIGTERM", 143), ("SIGINT", 130), ("SIGHUP", 129)])
def test_signal_mid_write_leaves_no_output_and_no_temporary(tmp_path, signame, code):
    if not hasattr(signal, signame):
        pytest.skip(f"no {signame} here")
    work = tmp_path / "work"
    work.mkdir()
    src = make_input(work / "in.npz")
    before = snapshot(work)
    marker = tmp_path / "writing"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", HOOK, str(marker), "prune", str(src), str(work / "out.safetensors")]
    proc = subprocess.Popen(argv + ["--masks", str(work / "m.npz")], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the run never reached the write"
            time.sleep(0.02)
        assert any(p.suffix == ".tmp" for p in work.iterdir())  # mid-write indeed
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "never partial" in err, err
    assert snapshot(work) == before  # no output, no masks, no temporary; input intact


# --------------------------------------------------------------------------- full disk


@pytest.fixture
def tiny_disk(tmp_path):
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_full_disk_fails_cleanly_and_leaves_nothing(tmp_path, tiny_disk, capsys):
    src = make_input(tmp_path / "in.npz", rows=16384)  # 3 MB of weights, the disk holds 1 MB
    before = src.read_bytes()
    assert main(["prune", str(src), str(tiny_disk / "out.safetensors"), "--masks", str(tiny_disk / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "No space left" in err and "Traceback" not in err, err
    assert list(tiny_disk.iterdir()) == []
    assert src.read_bytes() == before


# --------------------------------------------------------------------------- corrupted headers


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    import json
    import struct

    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


GOOD = {"w": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]}}
CORRUPT = [
    ({"w": {"dtype": "F32", "shape": [2, 4], "data_offsets": [-8, 24]}}, "outside the data section"),
    ({"w": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 64]}}, "outside the data section"),
    ({"w": {"dtype": "F32", "shape": [2, 4], "data_offsets": [32, 0]}}, "outside the data section"),
    ({"w": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0.0, 32]}}, "must be two integers"),
    ({"w": {"dtype": "F32", "shape": [2, 4], "data_offsets": ["0", "32"]}}, "must be two integers"),
    ({"w": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 16]}}, "need 32 bytes"),
    ({"w": {"dtype": "F32", "shape": [2, -4], "data_offsets": [0, 32]}}, "non-negative integers"),
    ({"w": {"dtype": "F31", "shape": [2, 4], "data_offsets": [0, 32]}}, "dtype 'F31'"),
    ({"w": [1, 2]}, "malformed header entry"),
    (
        {
            "a": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]},
            "b": {"dtype": "F32", "shape": [2, 4], "data_offsets": [16, 48]},
        },
        "'a' and 'b' overlap",
    ),
    ({**GOOD, "__metadata__": ["not", "a", "dict"]}, "__metadata__ must be a JSON object"),
    ({**GOOD, "__metadata__": {"epoch": 3}}, "__metadata__ must be a JSON object"),
]


@pytest.mark.parametrize(("header", "message"), CORRUPT)
def test_corrupted_safetensors_header_is_refused_clearly(tmp_path, capsys, header, message):
    src = tmp_path / "in.safetensors"
    src.write_bytes(safetensors_bytes(header, np.arange(12, dtype=np.float32).tobytes()))
    before = snapshot(tmp_path)
    for argv in (["prune", str(src), str(tmp_path / "out.safetensors")], ["report", str(src)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert snapshot(tmp_path) == before


def test_valid_header_with_null_metadata_still_reads(tmp_path):
    src = tmp_path / "in.safetensors"
    src.write_bytes(safetensors_bytes({**GOOD, "__metadata__": None}, np.ones(8, np.float32).tobytes()))
    with nmsolve.checkpoint.open_checkpoint(src) as ckpt:
        assert ckpt.read("w").shape == (2, 4) and ckpt.metadata == {}


# --------------------------------------------------------------------------- no-replace fallbacks


def test_without_renameat2_a_hard_link_still_never_replaces(tmp_path, monkeypatch):
    import nmsolve.checkpoint.formats as formats

    monkeypatch.setattr(formats, "_renameat2_noreplace", lambda src, dst: False)
    temp = tmp_path / ".out.tmp"
    temp.write_bytes(b"new")
    (tmp_path / "out.npz").write_bytes(b"old")
    with pytest.raises(CheckpointError, match="already exists"):
        formats.place_noreplace(temp, tmp_path / "out.npz")
    assert (tmp_path / "out.npz").read_bytes() == b"old" and temp.exists()
    formats.place_noreplace(temp, tmp_path / "new.npz")
    assert (tmp_path / "new.npz").read_bytes() == b"new" and not temp.exists()


def test_a_file_system_without_links_or_renameat2_gives_a_clear_error(tmp_path, monkeypatch):
    import errno

    import nmsolve.checkpoint.formats as formats

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(formats, "_renameat2_noreplace", lambda src, dst: False)
    monkeypatch.setattr(formats.os, "link", no_links)
    src = make_input(tmp_path / "in.npz")
    with pytest.raises(CheckpointError, match="supports neither hard links nor renameat2"):
        nmsolve.prune_checkpoint(src, tmp_path / "out.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz"]


def test_interrupt_while_writing_shards_leaves_no_temporary_folder(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    import nmsolve.checkpoint.prune as ckpt

    src = tmp_path / "model"
    src.mkdir()
    weight_map = {}
    for i in range(3):
        shard = f"model-0000{i + 1}-of-00003.safetensors"
        save_file({f"l{i}.weight": np.ones((4, 8), np.float32)}, str(src / shard))
        weight_map[f"l{i}.weight"] = shard
    index = {"metadata": {"total_size": 384}, "weight_map": weight_map}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    real, calls = ckpt.scores_2d, []

    def interrupted(info, array):
        calls.append(1)
        if len(calls) == 2:  # the first shard is written, the second half-way
            raise KeyboardInterrupt
        return real(info, array)

    monkeypatch.setattr(ckpt, "scores_2d", interrupted)
    with pytest.raises(KeyboardInterrupt):
        nmsolve.prune_checkpoint(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_second_sigterm_does_not_interrupt_the_clean_up_and_handlers_are_restored(tmp_path, monkeypatch, capsys):
    import nmsolve.checkpoint.prune as ckpt

    src = make_input(tmp_path / "in.npz")
    real, calls, unlinks = ckpt.scores_2d, [], []
    real_unlink = Path.unlink

    def terminated(info, array):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises at the next bytecode
        return real(info, array)

    def unlink_under_fire(self, *args, **kwargs):
        unlinks.append(self.name)
        if len(unlinks) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # impatient: kill again while temporaries are removed
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(ckpt, "scores_2d", terminated)
    monkeypatch.setattr(Path, "unlink", unlink_under_fire)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["prune", str(src), str(tmp_path / "out.npz"), "--masks", str(tmp_path / "m.npz")]) == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err
    assert len(unlinks) == 2  # both temporaries removed despite the second signal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_while_the_imports_load_exits_130_without_a_traceback(monkeypatch, capsys):
    import nmsolve.cli as cli

    def interrupted(parser):
        raise KeyboardInterrupt

    help_text, _, run = cli.COMMANDS["prune"]
    monkeypatch.setitem(cli.COMMANDS, "prune", (help_text, interrupted, run))
    assert main(["prune", "a.npz", "b.npz"]) == 130
    assert capsys.readouterr().err == "nmsolve: interrupted\n"
