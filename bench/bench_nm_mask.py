"""nm_mask against the memory-bandwidth floor (np.copyto), a numpy argpartition baseline and torch.topk."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import nmsolve
from bench._common import markdown_table, median_seconds, write_result
from nmsolve.datasets import gaussian_matrix

PATTERNS = [(1, 4), (2, 4), (4, 8), (8, 16), (16, 32)]


def numpy_argpartition(x: np.ndarray, n: int, m: int) -> np.ndarray:
    """The usual numpy N:M: argpartition each group, scatter the top-n into a mask."""
    groups = x.reshape(-1, m)
    top = np.argpartition(-groups, n - 1, axis=1)[:, :n]
    mask = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask.reshape(x.shape)


def torch_topk(x, n: int, m: int):  # type: ignore[no-untyped-def]
    """The usual torch N:M (as in SR-STE / LBC code): topk per group, scatter into a mask."""
    import torch

    groups = x.reshape(-1, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
    return mask.reshape(x.shape)


def paired_medians(first: Callable[[], Any], second: Callable[[], Any], *, repeat: int) -> tuple[float, float]:
    """Medians of ``first()`` and ``second()`` timed alternately (after a warm-up call of each).

    Alternating makes both see the same background load, so their ratio is meaningful on a shared
    machine even when the load changes during the run.
    """
    first()
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, record in zip((first, second), times, strict=True):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def run(quick: bool = False) -> Path:
    sizes = [256] if quick else [1024, 2048, 4096, 8192]
    try:
        import torch
    except ImportError:
        torch = None
    repeat = 3 if quick else 9
    load_before = os.getloadavg()
    rows = []
    targets = []
    for size in sizes:
        x = gaussian_matrix(size, size, seed=size)
        dst = np.empty_like(x)
        xt = torch.from_numpy(x) if torch is not None else None
        for n, m in PATTERNS:
            copy, ours = paired_medians(lambda: np.copyto(dst, x), lambda: nmsolve.nm_mask(x, n, m), repeat=repeat)
            argp = median_seconds(lambda: numpy_argpartition(x, n, m), repeat=3)
            topk = median_seconds(lambda: torch_topk(xt, n, m), repeat=3) if torch else float("nan")
            assert np.array_equal(numpy_argpartition(x[:4], n, m).sum(1), nmsolve.nm_mask(x[:4], n, m).sum(1))
            rows.append(
                (
                    f"{size}x{size}",
                    f"{n}:{m}",
                    f"{copy * 1e3:.1f}",
                    f"{ours * 1e3:.1f}",
                    f"{ours / copy:.2f}x",
                    f"{argp * 1e3:.0f}",
                    f"{argp / ours:.0f}x",
                    f"{topk * 1e3:.0f}",
                    f"{topk / ours:.0f}x",
                )
            )
            if size == sizes[-1]:
                targets.append((n, m, ours / copy, argp / ours))
    load_after = os.getloadavg()
    header = (
        "matrix",
        "pattern",
        "copy ms",
        "nm_mask ms",
        "nm_mask / copy",
        "argpartition ms",
        "argpartition / nm_mask",
        "torch.topk ms",
        "topk / nm_mask",
    )
    big = sizes[-1]
    checks = []
    missed = []
    for n, m, vs_copy, speedup in targets:
        limit = 2.0 if (n, m) == (2, 4) else 4.0
        checks.append(
            f"- {big}x{big} {n}:{m}: {vs_copy:.2f}x the copy floor (target <= {limit:g}x: "
            f"{'met' if vs_copy <= limit else 'NOT met'}), {speedup:.1f}x faster than argpartition "
            f"(target >= 20x: {'met' if speedup >= 20 else 'NOT met'})"
        )
        if vs_copy > limit:
            missed.append(f"{n}:{m} vs copy")
        if speedup < 20:
            missed.append(f"{n}:{m} vs argpartition")
    verdict = "All targets met in this run." if not missed else f"Targets NOT met in this run: {', '.join(missed)}."
    load = (
        f"Load average (1, 5, 15 min) on this shared 2-core machine: {', '.join(f'{v:.1f}' for v in load_before)} "
        f"before the run, {', '.join(f'{v:.1f}' for v in load_after)} after it."
    )
    body = (
        "float32 Gaussian matrices; medians of repeated runs in one process (argpartition and torch.topk: "
        "3 runs after a warm-up call); ratios are within the run.\n"
        "`copy` is `np.copyto` of the same array (the memory-bandwidth floor), timed alternately with "
        "nm_mask (one copy median per row of the table), so both see the same background load. nm_mask "
        "uses all cores (numba prange); argpartition, copyto and torch.topk are as their libraries run them "
        "(copyto on one core).\n\n"
        "The machine is shared with other engineers' jobs: other processes compete for the 2 cores and "
        "for memory bandwidth, which slows the 2-thread nm_mask more than the 1-thread copy, so the "
        "ratios below are pessimistic when the load average is above 2.\n\n"
        + markdown_table(header, rows)
        + "\n\n## Targets\n\n"
        + "\n".join(checks)
        + f"\n\n{verdict}\n\n{load}\n\n"
        "The argpartition baseline gets cheaper as m grows (fewer, longer groups), while nm_mask costs "
        "about log2(m)^2 / 4 comparisons per entry for m != 4 (a selection network, vectorised across "
        "groups; m = 4 has its own 6-comparison kernel; float32 4:8, 8:16 and 16:32 keep the network's wires "
        "in registers), so the speed-up over argpartition shrinks with m."
    )
    return write_result("nm_mask", "nm_mask benchmark", body, quick=quick)
