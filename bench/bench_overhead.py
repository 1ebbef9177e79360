"""Per-step cost of each training method's mask maintenance on one large Linear layer.

A 4096 x 4096 ``nn.Linear`` at batch 256 (float32, CPU): the dense step is forward + backward (input
and weight gradients) + ``SGD.step``; a method's step adds its hooks and its masked forward. The
overhead is ``(method step - dense step) / dense forward+backward``. Methods that refresh on a period
(Bi-Mask every T=100 steps, transposable every 40) are timed over one whole period, so the figure is
amortised. Every method step is paired with a dense step (alternating which runs first), so load on the
shared machine hits both alike. Methods come from ``bench._methods.METHODS``.
"""

from __future__ import annotations

import statistics
import time
import traceback
from pathlib import Path
from typing import Any

from bench._common import markdown_table, write_result
from bench._methods import METHODS, Context

TARGET = 0.10
# Methods that refresh their masks (or permutation) once per period, timed over one whole period; the
# others do the same work every step and are timed over PER_STEP_WINDOW steps.
PERIODS = {"Bi-Mask": 100, "transposable": 40, "transposable (mcf)": 40, "SRigL": 100}
PER_STEP_WINDOW = 10


def _setup(size: int, batch: int, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    import torch

    torch.manual_seed(seed)
    layer = torch.nn.Linear(size, size)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-4)
    x = torch.randn(batch, size, requires_grad=True)
    gy = torch.randn(batch, size)
    return layer, opt, x, gy


def _step(layer: Any, opt: Any, x: Any, gy: Any, method: Any) -> float:
    start = time.perf_counter()
    opt.zero_grad()
    x.grad = None
    layer(x).backward(gy)
    if method is not None:
        method.before_optimizer_step()
    opt.step()
    if method is not None:
        method.after_optimizer_step()
    return time.perf_counter() - start


def _fwd_bwd(layer: Any, x: Any, gy: Any) -> float:
    start = time.perf_counter()
    layer.zero_grad()
    x.grad = None
    layer(x).backward(gy)
    return time.perf_counter() - start


def run(quick: bool = False) -> Path:
    size, batch = (256, 32) if quick else (4096, 256)
    dense = _setup(size, batch)
    rows, checks, denominators = [], [], []
    for name, meth in METHODS.items():
        setting = "2:4" if "2:4" in meth.settings else meth.settings[0]
        period = PERIODS.get(name, PER_STEP_WINDOW)
        if quick:
            period = min(period, 3)
        layer, opt, x, gy = _setup(size, batch)
        try:
            ctx = Context(epochs=1, steps_per_epoch=period, optimizer=opt)
            start = time.perf_counter()
            method = meth.factory(layer, setting, ctx)
            attach = time.perf_counter() - start
            _step(layer, opt, x, gy, method)  # warm-up (compilation, first allocation)
            _step(*dense, None)
            fwd_bwd, dense_steps, method_steps = [], [], []
            # Every method step of the period is paired with a dense step and a dense forward+backward,
            # in alternating order, so that load on the shared machine (and cache state) hits both alike.
            for i in range(period):
                if i % 2:
                    method_steps.append(_step(layer, opt, x, gy, method))
                    dense_steps.append(_step(*dense, None))
                else:
                    dense_steps.append(_step(*dense, None))
                    method_steps.append(_step(layer, opt, x, gy, method))
                fwd_bwd.append(_fwd_bwd(dense[0], dense[2], dense[3]))
            method.check()
        except Exception as err:
            traceback.print_exc()
            rows.append((name, setting, "", "", "", "", f"failed: {type(err).__name__}: {err}", ""))
            continue
        # typical step: median of the paired differences; amortised: the mean over the whole period
        # (which holds exactly one refresh for periodic methods), minus the mean dense step
        diffs = [t - d for t, d in zip(method_steps, dense_steps, strict=True)]
        base = statistics.median(dense_steps)
        regular = base + statistics.median(diffs)
        amortised = statistics.mean(dense_steps) + statistics.mean(diffs)
        base_amortised = statistics.mean(dense_steps)
        denominator = statistics.median(fwd_bwd)
        denominators.append(denominator)
        per_step = (regular - base) / denominator
        overhead = (amortised - base_amortised) / denominator
        rows.append(
            (
                name,
                setting,
                f"{denominator * 1e3:.0f}",
                f"{base * 1e3:.0f}",
                f"{regular * 1e3:.0f}",
                f"{amortised * 1e3:.0f}",
                f"{per_step * 100:.1f}% / {overhead * 100:.1f}%",
                f"{attach:.2f}",
            )
        )
        checks.append(
            f"- {name}: {overhead * 100:.1f}% amortised over {period} steps (target <= {TARGET * 100:.0f}%: "
            f"{'met' if overhead <= TARGET else 'NOT met'})"
        )
    header = (
        "method",
        "pattern",
        "dense fwd+bwd ms",
        "dense step ms",
        "method step ms (median)",
        "method step ms (amortised over its period)",
        "overhead median / amortised",
        "attach s",
    )
    body = (
        f"`nn.Linear({size}, {size})` at batch {batch}, float32 on CPU. Every timed method step is paired with "
        "a dense step (alternating which runs first) and a dense forward+backward (the denominator), over one "
        "whole period for methods that refresh on a period (which then holds exactly one refresh) and over "
        f"{PER_STEP_WINDOW} steps for the others. Steps include `SGD.step` for dense and method alike. The "
        "median column is the dense median plus the median paired difference (the typical step); the amortised "
        "column is the mean dense step plus the mean paired difference over the window (refresh included). "
        "LBC's once-per-epoch removal is not included: it is negligible over an epoch of many steps. The "
        "machine was shared with "
        "other work (dense forward+backward ranged "
        f"{min(denominators, default=0) * 1e3:.0f}-{max(denominators, default=0) * 1e3:.0f} ms across the run): "
        "the ratios are what counts, not the absolute times.\n\n"
        + markdown_table(header, rows)
        + "\n\n## Targets (issue: <= 10% of dense forward+backward)\n\n"
        + "\n".join(checks)
    )
    return write_result(
        "overhead", "Mask-maintenance overhead per training step", body, command="python -m bench overhead", quick=quick
    )
