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
    """

    destination: Path
    report: Any
    samples: int
    tokens: int
    files_copied: tuple[str, ...]
    files_not_copied: tuple[str, ...]
    weight_files: tuple[str, ...]
    seconds: float


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
        dense model are left out), and the pruned weights as safetensors (``save_pretrained``;
        sharded like the input when it is a sharded safetensors checkpoint). Built in a temporary
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
    shard = _shard_size(source)
    with atomic_files([destination], overwrite=overwrite, folders=[destination]) as (temp,):
        copied, left = _copy_other_files(source, temp)
        before = {p.name for p in temp.iterdir()}
        options: dict[str, Any] = {} if shard is None else {"max_shard_size": shard}
        if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
            options["safe_serialization"] = True
        with _quiet(_import_transformers(), progress):
            model.save_pretrained(temp, **options)
        written = sorted(p.name for p in temp.iterdir() if _is_weight(p) and p.name not in before)
        umask = os.umask(0)
        os.umask(umask)
        for name in written:  # safetensors writes private (0600) files; the copy is as readable as any new file
            os.chmod(temp / name, 0o666 & ~umask)
    return ModelPruneResult(
        destination=destination,
        report=report,
        samples=len(texts),
        tokens=tokens,
        files_copied=tuple(copied),
        files_not_copied=tuple(left),
        weight_files=tuple(written),
        seconds=time.perf_counter() - start,
    )
