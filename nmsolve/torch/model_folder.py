"""One-shot pruning of a Hugging Face model folder on calibration text (the library behind ``nmsolve prune-model``).

:func:`prune_model_folder` loads a model and its tokenizer from a local folder (offline), tokenizes
calibration text, prunes the model's Linear layers block by block with
:func:`nmsolve.torch.prune_oneshot`, and writes a complete copy of the folder with the pruned
weights as safetensors. torch and transformers are imported only when it runs (optional extras).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmsolve._validate import check_bool, check_int, check_nm, choose
from nmsolve.checkpoint.formats import CheckpointError, atomic_files, same_file

# weight files of the model itself: rewritten by save_pretrained, never copied
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx")
# the JSON sidecar describing the sparsity of a written folder
SIDECAR = "nmsolve_sparsity.json"
CONVENTION = (
    "n:m counts the weights KEPT: at most n nonzero weights in every m consecutive weights along each listed "
    "layer's input axis, in the order the weights are stored (no permutation needs to be undone). Some tools "
    "count the other way: llm-compressor's sparsity structure '2:4' names 2 PRUNED of every 4 (the same as "
    "nmsolve's 2:4 only because 4 - 2 = 2; nmsolve's 1:4 is their 3:4)."
)
# sub-folders holding exports of the dense model (sentence-transformers' onnx/ and openvino/): stale once pruned
EXPORT_FOLDERS = ("onnx", "openvino")


@dataclass(frozen=True)
class ModelPruneResult:
    """Outcome of :func:`prune_model_folder`.

    Attributes
    ----------
    destination : Path
        The folder written.
    report : nmsolve.torch.OneShotReport
        Per-layer errors of the pruning (``str(report)`` is a table).
    samples : int
        Calibration texts used.
    tokens : int
        Calibration tokens (padding excluded) after truncation to ``max_length``.
    files_copied : tuple of str
        Files and folders copied from the input folder (relative names).
    files_not_copied : tuple of str
        Weight files replaced by the pruned safetensors, and exports of the dense model left out.
    weight_files : tuple of str
        The weight files written.
    seconds : float
    sparsity : dict
        The sidecar written as ``nmsolve_sparsity.json`` (see :func:`save_model_folder`).
    """

    destination: Path
    report: Any
    samples: int
    tokens: int
    files_copied: tuple[str, ...]
    files_not_copied: tuple[str, ...]
    weight_files: tuple[str, ...]
    seconds: float
    sparsity: dict[str, Any] | None = None


def read_calibration(path: str | os.PathLike[str], samples: int) -> list[str]:
    """The first ``samples`` non-empty lines of a UTF-8 text file (one sentence or paragraph per line)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"calibration file {file} not found" + (" (it is a folder)" if file.is_dir() else ""))
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"calibration file {file} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise CheckpointError(f"calibration file {file} holds no text: write one sentence or paragraph per line")
    return lines[:samples]


def _check_source(folder: Path) -> None:
    if not folder.exists():
        raise FileNotFoundError(f"model folder {folder} not found")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; pass the folder of a Hugging Face model")
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder} is not a Hugging Face model folder: it has no config.json (save one with save_pretrained)"
        )


def _check_destination(destination: Path, source: Path, overwrite: bool) -> None:
    if same_file(destination, source) or source.resolve().is_relative_to(destination.resolve()):
        raise CheckpointError(f"{destination} holds the input model; write the pruned model to a new folder")
    if destination.resolve().is_relative_to(source.resolve()):
        raise CheckpointError(f"{destination} is inside the input folder {source}; write it elsewhere")
    if not destination.parent.is_dir():
        raise CheckpointError(f"folder {destination.parent} does not exist")
    if destination.exists() or destination.is_symlink():
        if not overwrite:
            raise CheckpointError(f"{destination} already exists; choose another name or pass --overwrite")
        if not destination.is_dir():
            raise CheckpointError(f"{destination} exists and is not a folder; --overwrite replaces only a folder")


@contextlib.contextmanager
def _quiet(transformers: Any, progress: bool) -> Iterator[None]:
    """transformers' own progress bars (loading, saving) only when ``progress``."""
    logging = transformers.utils.logging
    enabled = logging.is_progress_bar_enabled()
    if not progress:
        logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled and not progress:
            logging.enable_progress_bar()


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 (and TRANSFORMERS_OFFLINE=1) while the model loads: never reach the network."""
    old = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(dict.fromkeys(old, "1"))
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _import_transformers() -> Any:
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as err:
        raise CheckpointError(
            f"pruning a Hugging Face model needs torch and transformers ({err}); install them, e.g. "
            "pip install nmsolve[torch] transformers"
        ) from None
    return transformers


def _load(folder: Path, progress: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from ``folder``: the class named in config.json's ``architectures`` (so task
    heads are kept), else ``AutoModel``; its weights must all be used."""
    transformers = _import_transformers()
    with _offline(), _quiet(transformers, progress):
        try:
            config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
            names = getattr(config, "architectures", None) or []
            cls = getattr(transformers, names[0], None) if names else None
            cls = cls if cls is not None else transformers.AutoModel
            model, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"cannot load the model or tokenizer of {folder} with transformers: {err}") from None
    unused = sorted(info.get("unexpected_keys") or [])
    if unused:
        shown = ", ".join(unused[:5]) + (", ..." if len(unused) > 5 else "")
        raise CheckpointError(
            f"{type(model).__name__} does not hold {len(unused)} weights of {folder} ({shown}); the pruned copy would "
            "lose them: set config.json's architectures to the model class that holds them"
        )
    return model, tokenizer


def _batches(tokenizer: Any, model: Any, texts: list[str], max_length: int, batch_size: int) -> list[dict[str, Any]]:
    params = inspect.signature(model.forward).parameters
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    out = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        out.append({k: v for k, v in encoded.items() if any_keyword or k in params})
    return out


def _shard_size(folder: Path) -> int | None:
    """The largest shard of a sharded safetensors input, so the output is sharded alike (None: not sharded)."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return None
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    sizes = [(folder / s).stat().st_size for s in shards if (folder / s).is_file()]
    return max(sizes) if len(sizes) > 1 else None


def _is_weight(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(WEIGHT_SUFFIXES) or (name.endswith(".index.json") and any(s in name for s in WEIGHT_SUFFIXES))


def _copy_other_files(source: Path, target: Path) -> tuple[list[str], list[str]]:
    copied, left = [], []
    for item in sorted(source.iterdir()):
        if item.name.startswith(".") and item.is_dir():  # .git, .cache
            continue
        if item.is_dir():
            if item.name in EXPORT_FOLDERS:
                left.append(item.name + "/")
            else:
                shutil.copytree(item, target / item.name, symlinks=False)
                copied.append(item.name + "/")
        elif _is_weight(item):
            left.append(item.name)
        else:
            shutil.copyfile(item, target / item.name)
            copied.append(item.name)
    return copied, left


def prune_model_folder(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    calibration: str | os.PathLike[str],
    n: int = 2,
    m: int = 4,
    *,
    method: str = "sparsegpt",
    structure: str = "nm",
    refine: bool | int = False,
    samples: int = 128,
    max_length: int = 128,
    batch_size: int = 16,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> ModelPruneResult:
    """Prune the Linear layers of a Hugging Face model folder to N:M on calibration text; write a copy.

    Parameters
    ----------
    model_dir : path
        A folder that ``from_pretrained`` loads (config.json, weights, tokenizer files), e.g. a
        sentence-transformers model folder (its transformer in the root). Loaded offline, with the
        class named by config.json's ``architectures`` (else ``AutoModel``) and ``AutoTokenizer``.
    out_dir : path
        The folder to write: every file and sub-folder of ``model_dir`` except the weights (config,
        tokenizer, ``modules.json``, ``1_Pooling/``, ...; ``onnx/`` and ``openvino/`` exports of the
        dense model are left out), the pruned weights as safetensors (``save_pretrained``;
        sharded like the input when it is a sharded safetensors checkpoint) and the sidecar
        ``nmsolve_sparsity.json`` (see :func:`save_model_folder`). Built in a temporary
        sibling folder and renamed into place at the end: on any error or interrupt nothing is left.
    calibration : path
        UTF-8 text, one sentence or paragraph per line (empty lines ignored).
    n, m, method, structure, refine, include, exclude
        As :func:`nmsolve.torch.prune_oneshot` (``include``/``exclude``: glob patterns on module names).
    samples : int, default 128
        Use the first ``samples`` lines.
    max_length : int, default 128
        Truncate each text to this many tokens.
    batch_size : int, default 16
        Texts per calibration batch (padded to the longest; padding is left out of the statistics).
    overwrite : bool, default False
        Replace ``out_dir`` if it is an existing folder.
    progress : bool, default False
        Progress bar over the layers.

    Returns
    -------
    ModelPruneResult

    Raises
    ------
    FileNotFoundError
        No model folder or calibration file.
    CheckpointError (a ValueError)
        Not a model folder, no calibration text, ``out_dir`` exists, torch/transformers missing, a
        model without an ``nn.ModuleList`` of repeated layers.
    ValueError
        As :func:`nmsolve.torch.prune_oneshot` (``n >= m``, dims not divisible by ``m``, ...).
    """
    start = time.perf_counter()
    source, destination = Path(model_dir), Path(out_dir)
    n, m = check_nm(n, m, allow_dense=False)
    samples = check_int(samples, "samples", minimum=1)
    max_length = check_int(max_length, "max_length", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    overwrite = check_bool(overwrite, "overwrite")
    from nmsolve.oneshot import METHODS, prune_layer

    prune_layer(np.eye(m), np.eye(m), n, m, method="magnitude", refine=refine)  # checks refine before any work
    choose({k: v for k, v in METHODS.items() if k != "refit"}, method)
    if structure not in ("nm", "transposable"):
        raise ValueError(f"structure must be one of ['nm', 'transposable'], got {structure!r}")
    _check_source(source)
    _check_destination(destination, source, overwrite)
    texts = read_calibration(calibration, samples)
    model, tokenizer = _load(source, progress)
    import torch

    import nmsolve.torch as nt

    path = nt.repeated_blocks(model, include, exclude)
    if path is None and not nt.select_layers(model, include=include, exclude=exclude, types=(torch.nn.Linear,))[0]:
        raise CheckpointError(
            f"no Linear layer of {type(model).__name__} matches include={include!r}, exclude={exclude!r}"
        )
    if path is None:
        raise CheckpointError(
            f"unknown architecture {type(model).__name__}: it has no nn.ModuleList of repeated layers holding the "
            "chosen Linear layers, so there are no blocks to prune one after the other"
        )
    batches = _batches(tokenizer, model, texts, max_length, batch_size)
    tokens = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else 0 for b in batches)
    with torch.no_grad():
        report = nt.prune_oneshot(
            model,
            batches,
            n,
            m,
            method=method,
            structure=structure,
            include=include,
            exclude=exclude,
            blocks=path,
            refine=refine,
            progress=progress,
        )
    sparsity = sparsity_sidecar(model, n, m, report=report)
    copied, left, written = _write_folder(model, source, destination, overwrite, progress, sparsity)
    return ModelPruneResult(
        destination=destination,
        report=report,
        samples=len(texts),
        tokens=tokens,
        files_copied=tuple(copied),
        files_not_copied=tuple(left),
        weight_files=tuple(written),
        seconds=time.perf_counter() - start,
        sparsity=sparsity,
    )


# --------------------------------------------------------------------------- writing a folder


def _write_folder(
    model: Any, source: Path, destination: Path, overwrite: bool, progress: bool, sparsity: dict[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """The files of ``source`` but its weights, the model's weights (save_pretrained, sharded like the
    input) and the sidecar, written to ``destination`` atomically: (copied, left out, weight files)."""
    shard = _shard_size(source)
    with atomic_files([destination], overwrite=overwrite, folders=[destination]) as (temp,):
        copied, left = _copy_other_files(source, temp)
        if SIDECAR in copied:  # the input's own sidecar describes the input, not this model
            copied.remove(SIDECAR)
            left.append(SIDECAR)
        before = {p.name for p in temp.iterdir()}
        options: dict[str, Any] = {} if shard is None else {"max_shard_size": shard}
        if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
            options["safe_serialization"] = True
        with _quiet(_import_transformers(), progress):
            model.save_pretrained(temp, **options)
        written = sorted(p.name for p in temp.iterdir() if _is_weight(p) and p.name not in before)
        (temp / SIDECAR).write_text(json.dumps(sparsity, indent=1) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        for name in [*written, SIDECAR]:  # safetensors writes private (0600) files; the copy is as readable as any
            os.chmod(temp / name, 0o666 & ~umask)
    return copied, left, written


def _nm_view(weight: Any) -> np.ndarray:
    """A Linear / Conv2d weight as stored, as ``[rows, in]`` (a conv's channel-last view)."""
    from nmsolve.torch._convert import to_numpy

    w = np.asarray(to_numpy(weight))
    return np.moveaxis(w, 1, -1).reshape(-1, w.shape[1]) if w.ndim > 2 else w


def _stored_nm(weight: Any, n: int, m: int) -> tuple[bool, bool]:
    """(N:M along in, N:M along out too) of a weight in its stored order."""
    from nmsolve.nm import is_nm

    w = _nm_view(weight)
    if w.ndim != 2 or w.shape[1] % m:
        return False, False
    along_in = is_nm(w, n, m, axis=1)
    return along_in, along_in and w.shape[0] % m == 0 and is_nm(w, n, m, axis=0)


def _reports(report: Any) -> list[Any]:
    from nmsolve.torch.oneshot import OneShotReport
    from nmsolve.torch.permute import PermutationReport

    items = [report] if isinstance(report, (OneShotReport, PermutationReport)) else report
    if items is None:
        return []
    if isinstance(items, (list, tuple)) and all(isinstance(r, (OneShotReport, PermutationReport)) for r in items):
        return list(items)
    raise TypeError(
        "report must be None, a OneShotReport (prune_oneshot), a PermutationReport (permute_channels) or a list of "
        f"them, got {report!r:.100}"
    )


def _pattern_of(report: Any) -> tuple[int, int, bool]:
    text = str(report.pattern)
    head = text.split()[0] if text else ""
    n_text, _, m_text = head.partition(":")
    return int(n_text), int(m_text), "transposable" in text


def sparsity_sidecar(model: Any, n: int | None = None, m: int | None = None, *, report: Any = None) -> dict[str, Any]:
    """The content of ``nmsolve_sparsity.json`` for ``model`` (checked; see :func:`save_model_folder`)."""
    import torch

    import nmsolve
    from nmsolve.torch.adapter import check_model
    from nmsolve.torch.oneshot import OneShotReport
    from nmsolve.torch.permute import PermutationReport

    check_model(model)
    reports = _reports(report)
    patterns = {_pattern_of(r)[:2] for r in reports}
    if n is None and m is None:
        if len(patterns) != 1:
            raise ValueError(
                "give n and m (the N:M pattern the sidecar describes)"
                + (f"; the reports disagree: {sorted(patterns)}" if patterns else "")
            )
        n, m = next(iter(patterns))
    n, m = check_nm(n, m, allow_dense=False)
    if patterns - {(n, m)}:
        raise ValueError(f"the reports are for {sorted(patterns)}, not for n={n}, m={m}")
    parametrized = [
        name for name, module in model.named_modules() if torch.nn.utils.parametrize.is_parametrized(module)
    ]
    if parametrized:
        raise ValueError(
            f"layers {parametrized[:5]} carry masks or other parametrizations; call nmsolve.torch.bake(model) first so "
            "the weights are written as they are used"
        )
    layers, dense = [], []
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        along_in, both = _stored_nm(module.weight, n, m)
        if along_in:
            w = module.weight.detach()
            layers.append(
                {
                    "module": name,
                    "tensor": f"{name}.weight" if name else "weight",
                    "shape": list(w.shape),
                    "density": float((w != 0).sum()) / max(1, w.numel()),
                    "transposable": both,
                }
            )
        else:
            dense.append(name)
    listed = {entry["module"]: entry for entry in layers}
    pruning = []
    for r in reports:
        if isinstance(r, OneShotReport):  # the layers it claims are N:M must be, in stored order
            transposable = _pattern_of(r)[2]
            for layer in r.layers:
                entry = listed.get(layer.name)
                if entry is None or (transposable and not entry["transposable"]):
                    raise ValueError(
                        f"layer {layer.name!r} was pruned to {r.pattern} but its weight as stored is not {r.pattern}"
                        + (
                            " (it is not a module of this model)"
                            if layer.name not in dict(model.named_modules())
                            else ""
                        )
                        + "; refusing to label it N:M"
                    )
            pruning.append({"method": r.method, "pattern": r.pattern, "layers": [layer.name for layer in r.layers]})
    permutations = []
    for r in reports:
        if isinstance(r, PermutationReport):
            for g in r.groups:
                if not g.changed:
                    continue
                permutations.append(
                    {
                        "kind": g.group.kind,
                        "producers": list(g.group.producers),
                        "channels": list(g.group.channels),
                        "consumers": list(g.group.consumers),
                        "head_size": g.group.head_size,
                        "permutation": [int(i) for i in g.permutation],
                        "kept_before": g.kept_before,
                        "kept_after": g.kept_after,
                        "scores": r.scores,
                    }
                )
    return {
        "format": "nmsolve-sparsity",
        "version": 1,
        "written_by": f"nmsolve {nmsolve.__version__}",
        "pattern": f"{n}:{m}",
        "n": n,
        "m": m,
        "convention": CONVENTION,
        "axis": "input: groups of m consecutive weights along in of a Linear weight[out, in] and of a Conv2d "
        "weight[out, in, kh, kw] (for every out, kh, kw)",
        "layers": layers,
        "dense_layers": dense,
        "pruning": pruning,
        "permutations_applied": permutations,
        "permutations_note": "already applied to the stored weights (the function is unchanged); nothing to undo",
    }


def save_model_folder(
    model: Any,
    source_folder: str | os.PathLike[str],
    out_folder: str | os.PathLike[str],
    *,
    report: Any = None,
    n: int | None = None,
    m: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``model`` as a complete Hugging Face folder, plus a sidecar describing its N:M sparsity.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model with ``save_pretrained`` (e.g. loaded from ``source_folder``, permuted with
        :func:`nmsolve.torch.permute_channels` and pruned with :func:`nmsolve.torch.prune_oneshot`, or
        with :func:`nmsolve.torch.sparsify` and :func:`nmsolve.torch.bake`). Masks must be baked.
    source_folder : path
        The folder the model came from: every file and sub-folder but the weights is copied
        (config, tokenizer files, sentence-transformers' ``modules.json`` and ``1_Pooling/``; the
        ``onnx/`` and ``openvino/`` exports of the dense model are left out). A sharded
        safetensors input gives a sharded output.
    out_folder : path
        Written atomically (a temporary sibling renamed into place; nothing is left on an error).
    report : OneShotReport, PermutationReport or a list of them, optional
        Recorded in the sidecar (pruning method; permutations applied with their groups). The
        layers a OneShotReport says it pruned must be N:M in stored order, or nothing is written.
    n, m : int, optional
        The pattern (``0 < n < m``); taken from ``report`` when not given.
    overwrite : bool, default False
        Replace ``out_folder`` if it is an existing folder.
    progress : bool, default False
        transformers' progress bars while saving.

    Returns
    -------
    dict
        The sidecar written as ``out_folder/nmsolve_sparsity.json``: ``pattern``, ``n``, ``m``,
        ``convention`` (n counts the KEPT weights of every m; llm-compressor's "2:4" counts
        pruned ones), ``layers`` (every Linear / Conv2d whose weight, as stored, has at most n
        nonzeros in every m consecutive weights along its input axis: module, tensor name, shape,
        density, whether N:M along the output axis too), ``dense_layers`` (the others),
        ``pruning`` and ``permutations_applied`` (from ``report``).

    Raises
    ------
    TypeError
        A model without ``save_pretrained``, a bad ``report``.
    ValueError
        A layer a report claims is N:M that is not (named), masks not baked, no pattern, ``n >= m``.
    CheckpointError (a ValueError)
        No source model folder, ``out_folder`` exists (without ``overwrite``) or lies inside it.
    """
    if not callable(getattr(model, "save_pretrained", None)):
        raise TypeError(f"model must have save_pretrained (a transformers PreTrainedModel), got {type(model).__name__}")
    overwrite = check_bool(overwrite, "overwrite")
    progress = check_bool(progress, "progress")
    source, destination = Path(source_folder), Path(out_folder)
    _check_source(source)
    _check_destination(destination, source, overwrite)
    sparsity = sparsity_sidecar(model, n, m, report=report)
    _write_folder(model, source, destination, overwrite, progress, sparsity)
    return sparsity
