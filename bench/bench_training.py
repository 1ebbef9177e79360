"""A small real training run: an MLP on scikit-learn's digits, dense vs every sparse-training method.

Every method trains the same MLP (64 -> 256 -> 256 -> 10) from the same initial weights, on the same
batches, for the same number of epochs (SGD with momentum), with the two hidden layers sparse and the
classifier dense. Accuracy is measured on a held-out quarter of the data after baking the masks.
Methods come from ``bench._methods.METHODS``.
"""

from __future__ import annotations

import statistics
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import markdown_table, write_result
from bench._methods import METHODS, Context, optimizer_step

HIDDEN = 256
BATCH = 64
LR = 0.05


def digits(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    to_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return to_x(x_tr), torch.tensor(y_tr), to_x(x_te), torch.tensor(y_te)


def mlp() -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))


def train_once(name: str, setting: str, seed: int, epochs: int, data: tuple[Any, ...]) -> dict[str, Any]:
    import torch

    x_tr, y_tr, x_te, y_te = data
    torch.manual_seed(seed)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    steps_per_epoch = -(-len(x_tr) // BATCH)
    ctx = Context(epochs=epochs, steps_per_epoch=steps_per_epoch, optimizer=opt, exclude=("4",), seed=seed)
    order = torch.Generator().manual_seed(seed)
    start, cpu = time.perf_counter(), time.process_time()
    method = None if name == "dense" else METHODS[name].factory(model, setting, ctx)
    for _ in range(epochs):
        perm = torch.randperm(len(x_tr), generator=order)
        for i in range(0, len(x_tr), BATCH):
            idx = perm[i : i + BATCH]
            optimizer_step(torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]), opt, method)
        if method is not None:
            method.end_epoch()
    if method is not None:
        method.check()
        method.bake()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    with torch.no_grad():
        acc = float((model(x_te).argmax(1) == y_te).float().mean())
    hidden = [model[0].weight, model[2].weight]
    density = sum(int((w != 0).sum()) for w in hidden) / sum(w.numel() for w in hidden)
    return {"acc": acc, "seconds": seconds, "cpu": cpu, "density": density}


def run(quick: bool = False) -> Path:
    import torch

    epochs = 2 if quick else 30
    seeds = [0] if quick else [0, 1, 2]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest and least disturbed by other load
    try:
        data = digits(0)
        jobs = [("dense", "dense")] + [(name, s) for name, meth in METHODS.items() for s in meth.settings]
        if quick:
            jobs = [(name, s) for name, s in jobs if s in ("dense", "2:4")]
        failures: dict[tuple[str, str], str] = {}
        for name, setting in jobs:  # untimed warm-up: numba compilation and first-call costs
            try:
                train_once(name, setting, seeds[0], 2, data)  # 2 epochs: > 40 steps, every schedule fires
            except Exception as err:  # report the failure in the table, keep measuring the others
                traceback.print_exc()
                failures[(name, setting)] = f"failed: {type(err).__name__}: {err}"
        # seeds outside, methods inside: a burst of load on the shared machine hits every method alike
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {job: [] for job in jobs if job not in failures}
        for seed in seeds:
            for job in runs:
                runs[job].append(train_once(*job, seed, epochs, data))
        rows, results = [], runs
        for job in jobs:
            if job in failures:
                rows.append((*job, failures[job], "", "", "", "", ""))
                continue
            accs = [r["acc"] * 100 for r in runs[job]]
            secs = statistics.median(r["seconds"] for r in runs[job])
            cpu = statistics.median(r["cpu"] for r in runs[job])
            spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
            rows.append(
                (
                    *job,
                    f"{statistics.mean(accs):.2f}{spread}",
                    f"{statistics.mean(r['density'] for r in runs[job]):.3f}",
                    f"{secs:.2f}",
                    f"{cpu:.2f}",
                    cpu,
                )
            )
        dense_cpu = statistics.median(r["cpu"] for r in results.get(("dense", "dense"), [{"cpu": np.nan}]))
        rows = [(*r[:6], f"{r[6] / dense_cpu:.1f}x" if r[4] else "") for r in rows]
        ranking = sorted(
            ((statistics.mean(r["acc"] for r in runs) * 100, name, s) for (name, s), runs in results.items()),
            reverse=True,
        )
        header = (
            "method",
            "setting",
            "test accuracy % (mean ± sd)",
            "hidden density",
            "wall s",
            "CPU s",
            "CPU / dense",
        )
        body = (
            f"MLP 64-{HIDDEN}-{HIDDEN}-10 on sklearn digits (1347 train / 450 test, standardised), SGD lr={LR} "
            f"momentum 0.9, batch {BATCH}, {epochs} epochs, seeds {seeds} (same initial weights and batch order "
            "for every method with a given seed). The two hidden layers are sparse, the classifier dense; "
            "masks are baked before testing. Times are medians over the seeds of the whole training run (including "
            "attaching and baking), after an untimed warm-up run of each method; one torch thread. The machine "
            "was shared with other work, which inflates wall times at random: CPU time (all threads of this "
            "process) is the steadier measure of each method's cost.\n\n"
            + markdown_table(header, rows)
            + "\n\nNotes on the methods: "
            + "; ".join(f"{n}: {meth.note}" for n, meth in METHODS.items() if meth.note)
            + ".\n\n## Ranking by mean accuracy\n\n"
            + "\n".join(f"{i + 1}. {name} {s}: {acc:.2f}%" for i, (acc, name, s) in enumerate(ranking))
        )
    finally:
        torch.set_num_threads(threads)
    return write_result("training", "Sparse training on digits", body, quick=quick)
