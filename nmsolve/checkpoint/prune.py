"""Prune a checkpoint's weights to N:M or transposable N:M: tensor selection, mask methods, :func:`prune_checkpoint`.

Weights of 2 or more dimensions are masked on their channel-last 2-D view (:mod:`nmsolve.layout`):
a Linear ``[out, in]`` as is, a conv ``[out, in, kh, kw]`` as ``[out * kh * kw, in]``, groups along
``in``. Pruned entries are set to zero in the tensor's own dtype (float16 and bfloat16 included).

Tensors are read, masked and written one at a time (:mod:`nmsolve.checkpoint.formats`); the pruned
checkpoint and the optional masks file appear together, and only when both are complete.

The selection and scoring helpers (:func:`select`, :func:`scores_2d`, :func:`kept_and_total`,
:func:`warm`) are shared with :mod:`nmsolve.checkpoint.report`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmsolve._progress import progress_bar
from nmsolve._validate import check_bool, check_nm, choose, reject_nan
from nmsolve.checkpoint.formats import (
    FORMATS,
    WRITERS,
    CheckpointError,
    ShardedReader,
    TensorInfo,
    atomic_files,
    check_writable,
    decode_float,
    format_of,
    open_checkpoint,
    same_file,
    write_torch,
)
from nmsolve.layout import WeightLayout, weight_from_2d, weight_to_2d
from nmsolve.nm import magnitude_mask
from nmsolve.transposable import METHODS as TRANSPOSABLE_METHODS
from nmsolve.transposable import transposable_mask

__all__ = [
    "DEFAULT_EXCLUDE",
    "MASK_METHODS",
    "LayerPrune",
    "MaskMethod",
    "PruneResult",
    "kept_and_total",
    "mask_method",
    "mask_methods",
    "prune_checkpoint",
    "scores_2d",
    "select",
    "warm",
]

# Embedding tables are 2-D but are lookups, not matrix products: left dense unless asked for.
DEFAULT_EXCLUDE: tuple[str, ...] = ("embed",)

# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class MaskMethod:
    """One entry of :data:`MASK_METHODS`: what the method does, and the function that does it."""

    description: str
    transposable: bool  # N:M along the rows too: needs n < m and a row count that m divides
    solve: Callable[[np.ndarray, int, int], np.ndarray]  # (weights (rows, cols), n, m) -> bool mask


def _transposable(weights: np.ndarray, n: int, m: int, *, method: str) -> np.ndarray:
    return transposable_mask(np.abs(weights), n, m, method=method)


# The one table of mask methods: it names and describes them (``nmsolve prune --help``) and
# dispatches them. "nm" plus every method of nmsolve.transposable_mask.
MASK_METHODS: dict[str, MaskMethod] = {
    "nm": MaskMethod("magnitude N:M (the n largest |W| of every m input channels)", False, magnitude_mask),
    **{
        name: MaskMethod(
            "transposable N:M, also N:M along output rows (nmsolve.transposable_mask with this method)",
            True,
            functools.partial(_transposable, method=name),
        )
        for name in TRANSPOSABLE_METHODS
    },
}


def mask_method(method: Any) -> MaskMethod:
    """The :data:`MASK_METHODS` entry named ``method``; an unknown name raises a ValueError listing the valid ones."""
    return choose(MASK_METHODS, method)


def _bind(solve: Callable[[np.ndarray, int, int], np.ndarray], n: int, m: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda weights: solve(weights, n, m)


def mask_methods(n: int, m: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Every method of :data:`MASK_METHODS` as a function of the weights alone, for the pattern ``n:m``.

    Each takes a 2-D weight matrix ``(rows, cols)`` (groups along ``cols``) and returns a bool mask.

    Examples
    --------
    >>> import numpy as np
    >>> mask_methods(2, 4)["nm"](np.array([[1.0, -3.0, 2.0, 0.0]])).astype(int)
    array([[0, 1, 1, 0]])
    """
    n, m = check_nm(n, m)
    return {name: _bind(entry.solve, n, m) for name, entry in MASK_METHODS.items()}


def warm(solve: Callable[[np.ndarray], np.ndarray], dtype: np.dtype, m: int, done: set[Any]) -> None:
    """Call ``solve`` once on a tiny matrix of ``dtype`` so that compilation is not timed."""
    key = (id(solve), np.dtype(dtype).str)
    if key not in done:
        done.add(key)
        with contextlib.suppress(ValueError, TypeError):
            solve(np.ones((m, m), dtype=dtype))


# --------------------------------------------------------------------------- selection


def _compile(patterns: Sequence[str], what: str) -> list[re.Pattern[str]]:
    out = []
    for pattern in patterns:
        try:
            out.append(re.compile(pattern))
        except re.error as err:
            raise CheckpointError(f"{what} pattern {pattern!r} is not a valid regular expression: {err}") from None
    return out


def select(
    infos: Sequence[TensorInfo], include: Sequence[str] = (), exclude: Sequence[str] = DEFAULT_EXCLUDE
) -> list[TensorInfo]:
    """The tensors to prune: float, 2-D or more, name matching an ``include`` regex (any; all if none)
    and no ``exclude`` regex (``re.search``, so a substring is enough)."""
    inc, exc = _compile(include, "--include"), _compile(exclude, "--exclude")
    chosen = []
    for info in infos:
        if not info.is_float or len(info.shape) < 2:
            continue
        if inc and not any(p.search(info.name) for p in inc):
            continue
        if any(p.search(info.name) for p in exc):
            continue
        chosen.append(info)
    return chosen


def _check_divisible(infos: Sequence[TensorInfo], m: int, transposable: bool) -> None:
    for info in infos:
        rows, cols = WeightLayout(info.shape).matrix_shape
        if cols % m:
            raise CheckpointError(
                f"tensor {info.name!r} of shape {info.shape} has {cols} input channels, not a multiple of m={m}; "
                f"leave it out with --exclude '{re.escape(info.name)}' or choose an m that divides {cols}"
            )
        if transposable and rows % m:
            view = "rows" if len(info.shape) == 2 else "rows of its channel-last view (out * kernel)"
            raise CheckpointError(
                f"tensor {info.name!r} of shape {info.shape} has {rows} {view}, not a multiple of m={m}, "
                "which transposable masks need; leave it out with "
                f"--exclude '{re.escape(info.name)}' or use --method nm"
            )


def scores_2d(info: TensorInfo, array: np.ndarray) -> np.ndarray:
    """A selected tensor as read, as float weights on its channel-last 2-D view (NaN is refused)."""
    weights = decode_float(array, info.dtype)
    reject_nan(weights, f"tensor {info.name!r}")  # the index is in the tensor's own shape
    return weight_to_2d(weights)[0]


# --------------------------------------------------------------------------- prune


@dataclass(frozen=True)
class LayerPrune:
    """One pruned tensor: its kept fraction of ``sum |W|`` and the time its mask took."""

    name: str
    shape: tuple[int, ...]
    pattern: str
    kept_fraction: float
    kept_magnitude: float
    total_magnitude: float
    seconds: float


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_checkpoint` did."""

    source: Path
    destination: Path
    masks: Path | None
    method: str
    n: int
    m: int
    layers: tuple[LayerPrune, ...]
    copied: int  # tensors written unchanged
    seconds: float
    # entries of a .pt input that are not tensors (e.g. "epoch"): kept in a .pt output, not written to others
    not_written: tuple[str, ...] = ()
    # a sharded folder input written to a folder: its other files copied (config, tokenizer...) and left out
    files_copied: tuple[str, ...] = ()
    files_not_copied: tuple[str, ...] = ()

    @property
    def kept_fraction(self) -> float:
        """Kept share of the total ``sum |W|`` over all pruned tensors."""
        total = sum(layer.total_magnitude for layer in self.layers)
        return sum(layer.kept_magnitude for layer in self.layers) / total if total else 1.0

    @property
    def pruned_parameters(self) -> int:
        return sum(math.prod(layer.shape) for layer in self.layers)


def kept_and_total(weights2d: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    magnitude = np.abs(weights2d.astype(np.float64, copy=False))
    return float(magnitude[mask].sum()), float(magnitude.sum())


def prune_checkpoint(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    n: int = 2,
    m: int = 4,
    method: str = "nm",
    include: Sequence[str] = (),
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    masks: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> PruneResult:
    """Prune the selected weights of a checkpoint to N:M (or transposable N:M) and write a new file.

    Parameters
    ----------
    source, destination : str or Path
        Input and output checkpoints (.safetensors, .npz, .pt; the formats may differ). The source is
        never modified; the destination must differ from it. A sharded source (its
        ``model.safetensors.index.json`` or the folder holding it) is read one shard at a time; with a
        destination that is a folder name (no checkpoint extension) the same shards and an updated
        index are written there, plus, when the source was named by its folder, the folder's other
        files (config, tokenizer...; other weight files are left out). The folder is built beside the
        destination and renamed into place when complete. A destination with an extension gets
        every tensor in one file.
    n, m : int
        The pattern: keep ``n`` of every ``m`` along the input channels.
    method : str, default "nm"
        A name of :data:`MASK_METHODS`: ``"nm"`` (magnitude N:M) or a method of
        :func:`nmsolve.transposable_mask` (transposable N:M, e.g. ``"mcf"``, ``"approx"``).
    include, exclude : sequence of str
        Regular expressions (``re.search``) on tensor names; float tensors of 2 or more dimensions
        that match an ``include`` (or all, if none) and no ``exclude`` are pruned. Default excludes
        embedding tables.
    masks : str or Path, optional
        Also write the boolean masks of the pruned tensors here (.safetensors or .npz).
    overwrite : bool, default False
        Allow replacing an existing destination (never the source).
    progress : bool, default False
        Show a tqdm progress bar over tensors.

    Returns
    -------
    PruneResult
        Per-layer kept magnitude and time, totals.

    Raises
    ------
    FileNotFoundError, CheckpointError (ValueError)
        Missing or unreadable source, destination equal to the source or existing, ``n > m``, a
        selected tensor whose input channels (or rows, for transposable methods) are not a multiple
        of ``m``, NaN weights, unknown method. Nothing is written in any of these cases.

    Notes
    -----
    A torch ``.pt`` input may nest dicts (``{"model": {...}, "epoch": 3}``): tensors are named by
    their dotted key path (``model.fc.weight``); names that collide after flattening are refused. A
    ``.pt`` output keeps the input's structure and its non-tensor entries; other formats store
    tensors only, so non-tensor entries are left out and listed in ``PruneResult.not_written``.

    Every selected tensor is checked before anything is written; tensors are then read, masked and
    written one at a time. Conv weights ``[out, in, *kernel]`` are masked on their channel-last view
    ``[out * prod(kernel), in]`` (groups along ``in``). Pruned entries become zero in the tensor's
    own dtype. Ties follow the chosen solver (lower index first for ``"nm"``).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> np.savez(os.path.join(folder, "in.npz"), fc=np.arange(1.0, 17.0).reshape(2, 8))
    >>> result = prune_checkpoint(os.path.join(folder, "in.npz"), os.path.join(folder, "out.npz"), n=2, m=4)
    >>> np.load(os.path.join(folder, "out.npz"))["fc"]
    array([[ 0.,  0.,  3.,  4.,  0.,  0.,  7.,  8.],
           [ 0.,  0., 11., 12.,  0.,  0., 15., 16.]])
    """
    n, m = check_nm(n, m)
    overwrite = check_bool(overwrite, "overwrite")
    progress = check_bool(progress, "progress")
    start = time.perf_counter()
    source, destination = Path(source), Path(destination)
    masks_path = Path(masks) if masks is not None else None
    outputs = [destination] + ([masks_path] if masks_path is not None else [])
    for out in outputs:
        if same_file(out, source):
            raise CheckpointError(f"{out} is the input checkpoint; write the pruned model to a new file")
    if masks_path is not None and same_file(masks_path, destination):
        raise CheckpointError("--masks must name a different file than the pruned checkpoint")
    entry = mask_method(method)
    solve = _bind(entry.solve, n, m)
    transposable = entry.transposable
    if transposable:
        check_nm(n, m, allow_dense=False)  # a transposable pattern needs n < m
    pattern = f"{n}:{m} T" if transposable else f"{n}:{m}"
    with open_checkpoint(source) as reader:
        chosen = {info.name for info in select(reader.infos, include, exclude)}
        selected = [info for info in reader.infos if info.name in chosen]
        _check_divisible(selected, m, transposable)
        sharded = reader if isinstance(reader, ShardedReader) else None
        to_folder = sharded is not None and destination.suffix.lower() not in FORMATS
        fmt = "sharded" if to_folder else format_of(destination)
        if sharded is not None and to_folder:
            for shard in sharded.shards:
                check_writable(format_of(Path(shard)), sharded.shard_infos[shard], destination / shard)
            _check_folder_output(destination, source, overwrite)
        else:
            check_writable(fmt, reader.infos, destination)
        mask_infos = [TensorInfo(info.name, info.shape, "BOOL") for info in selected]
        for out in outputs:
            if out.exists() and not overwrite:
                raise CheckpointError(f"{out} already exists; choose another name or pass --overwrite")
            if not out.parent.is_dir():
                raise CheckpointError(f"folder {out.parent} does not exist")
        layers: list[LayerPrune] = []
        packed_masks: list[np.ndarray] = []  # 1 bit per pruned weight until the masks file is written
        warmed: set[Any] = set()
        bar = progress_bar(len(selected), progress, f"prune {pattern}", "tensor")

        def pruned_tensors(infos: Sequence[TensorInfo]) -> Iterator[np.ndarray]:
            for info in infos:
                array = reader.read(info.name)
                if info.name not in chosen:
                    yield array
                    continue
                if bar is not None:
                    bar.set_postfix_str(info.name[-40:], refresh=False)
                weights = scores_2d(info, array)
                warm(solve, weights.dtype, m, warmed)
                tick = time.perf_counter()
                mask2d = np.asarray(solve(weights), dtype=bool)
                seconds = time.perf_counter() - tick
                kept, total = kept_and_total(weights, mask2d)
                layers.append(
                    LayerPrune(info.name, info.shape, pattern, kept / total if total else 1.0, kept, total, seconds)
                )
                mask = weight_from_2d(mask2d, WeightLayout(info.shape))
                if masks_path is not None:
                    packed_masks.append(np.packbits(mask, axis=None))
                if bar is not None:
                    bar.update(1)
                yield np.where(mask, array, np.zeros((), dtype=array.dtype))

        note = f"pruned {pattern} method={method} from {source.name}"
        meta = {**reader.metadata, "nmsolve": note}
        non_tensors = tuple(getattr(reader, "non_tensors", ()))
        tree = getattr(reader, "tree", None)
        copied_files: list[Path] = []
        try:
            with atomic_files(outputs, overwrite=overwrite, folders=[destination] if to_folder else []) as temps:
                if sharded is not None and to_folder:
                    copied_files = _write_sharded(sharded, temps[0], pruned_tensors, note)
                else:
                    write = functools.partial(write_torch, template=tree) if fmt == "torch" and tree else WRITERS[fmt]
                    with open(temps[0], "wb") as fp:
                        write(fp, reader.infos, pruned_tensors(reader.infos), meta)
                if masks_path is not None:
                    with open(temps[1], "wb") as fp:
                        unpacked = (
                            np.unpackbits(bits, count=info.size).view(bool).reshape(info.shape)
                            for bits, info in zip(packed_masks, mask_infos, strict=True)
                        )
                        WRITERS[format_of(masks_path)](fp, mask_infos, unpacked, {"nmsolve": f"masks {pattern}"})
        finally:
            if bar is not None:
                bar.close()
        copied = len(reader.infos) - len(selected)
        skipped_files = tuple(p.name for p in sharded.extra_files()[1]) if sharded is not None and to_folder else ()
    not_written = () if fmt == "torch" else non_tensors
    return PruneResult(
        source,
        destination,
        masks_path,
        method,
        n,
        m,
        tuple(layers),
        copied,
        time.perf_counter() - start,
        not_written,
        tuple(p.name for p in copied_files),
        skipped_files,
    )


def _check_folder_output(destination: Path, source: Path, overwrite: bool) -> None:
    """A sharded checkpoint is written to a new folder; ``--overwrite`` replaces only a sharded checkpoint."""
    if destination.exists() and not destination.is_dir():
        raise CheckpointError(
            f"{destination} exists and is not a folder; a sharded checkpoint is written to a folder "
            "(or name a .safetensors/.npz/.pt file to write it unsharded)"
        )
    src_folder = source if source.is_dir() else source.parent
    if same_file(destination, src_folder) or src_folder.resolve().is_relative_to(destination.resolve()):
        raise CheckpointError(f"{destination} holds the input checkpoint; write the pruned model to a new folder")
    if overwrite and destination.is_dir() and not any(destination.glob("*.index.json")):
        raise CheckpointError(
            f"{destination} is a folder but not a sharded checkpoint (no *.index.json); --overwrite replaces only "
            "a previous output, so remove it yourself or choose another name"
        )


def _write_sharded(
    reader: ShardedReader,
    folder: Path,
    pruned_tensors: Callable[[Sequence[TensorInfo]], Iterator[np.ndarray]],
    note: str,
) -> list[Path]:
    """Write the pruned shards (the same sharding), the index and the folder's other files into ``folder``."""
    total = 0
    for shard in reader.shards:
        infos = reader.shard_infos[shard]
        meta = {**reader.shard_metadata[shard], "nmsolve": note}
        with open(folder / shard, "wb") as fp:
            WRITERS[format_of(Path(shard))](fp, infos, pruned_tensors(infos), meta)
        reader.close()  # one shard open at a time
        total += sum(info.nbytes for info in infos)
    index = dict(reader.index)
    old_meta = index.get("metadata")
    index["metadata"] = {**(old_meta if isinstance(old_meta, dict) else {}), "total_size": total}
    with open(folder / reader.path.name, "w", encoding="utf-8") as fp:
        json.dump(index, fp, indent=2, sort_keys=False)
        fp.write("\n")
    copy, _ = reader.extra_files()
    for item in copy:
        shutil.copyfile(item, folder / item.name)
    return copy
