"""Shared pieces of every benchmark: timing, the machine's description, markdown output."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(fn: Callable[[], Any], *, repeat: int = 5, min_total: float = 0.0) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs (after one untimed warm-up call).

    With ``min_total`` > 0 it keeps repeating until that many seconds have been spent, so very fast
    calls are measured over many runs.
    """
    fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < repeat or spent < min_total:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return statistics.median(times)


def machine() -> str:
    """One line describing where the numbers were measured."""
    import numba
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
        f"numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads)"
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, title: str, body: str, *, quick: bool = False) -> Path:
    """Write ``bench/results/{name}.md`` with a header naming the machine, date and the command
    that regenerates it (``python -m bench {name}``).

    Quick (smoke-test) runs go to ``bench/results/quick/``, which git ignores.
    """
    folder = RESULTS / "quick" if quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = f"# {title}\n\nMeasured {stamp} on: {machine()}\n\nCommand: `python -m bench {name}`\n\n"
    path.write_text(header + body.rstrip() + "\n")
    return path
