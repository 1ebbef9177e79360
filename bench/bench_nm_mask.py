"""nm_mask against the memory-bandwidth floor (np.copyto), a numpy argpartition baseline and torch.topk."""

from __future__ import annotations

from pathlib import Path

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


def run(quick: bool = False) -> Path:
    sizes = [256] if quick else [1024, 2048, 4096, 8192]
    try:
        import torch
    except ImportError:
        torch = None
    repeat = 3 if quick else 5
    rows = []
    targets = []
    for size in sizes:
        x = gaussian_matrix(size, size, seed=size)
        dst = np.empty_like(x)
        copy = median_seconds(lambda: np.copyto(dst, x), repeat=repeat, min_total=0.2)
        xt = torch.from_numpy(x) if torch is not None else None
        for n, m in PATTERNS:
            ours = median_seconds(lambda: nmsolve.nm_mask(x, n, m), repeat=repeat)
            argp = median_seconds(lambda: numpy_argpartition(x, n, m), repeat=1 if not quick else 2)
            topk = median_seconds(lambda: torch_topk(xt, n, m), repeat=1 if not quick else 2) if torch else float("nan")
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
    for n, m, vs_copy, speedup in targets:
        limit = 2.0 if (n, m) == (2, 4) else 4.0
        checks.append(
            f"- {big}x{big} {n}:{m}: {vs_copy:.2f}x the copy floor (target <= {limit:g}x: "
            f"{'met' if vs_copy <= limit else 'NOT met'}), {speedup:.0f}x faster than argpartition "
            f"(target >= 20x: {'met' if speedup >= 20 else 'NOT met'})"
        )
    body = (
        "float32 Gaussian matrices; medians of repeated runs in one process; ratios are within the run.\n"
        "`copy` is `np.copyto` of the same array (the memory-bandwidth floor). nm_mask uses all cores "
        "(numba prange); argpartition, copyto and torch.topk are as their libraries run them.\n\n"
        + markdown_table(header, rows)
        + "\n\n## Targets\n\n"
        + "\n".join(checks)
    )
    return write_result("nm_mask", "nm_mask benchmark", body, command="python -m bench nm_mask", quick=quick)
