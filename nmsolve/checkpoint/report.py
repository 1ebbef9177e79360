"""Measure a checkpoint against N:M: :func:`checkpoint_report`.

For every selected weight (the selection of :func:`nmsolve.checkpoint.prune_checkpoint`): its
nonzero density, how far it already is from N:M and from transposable N:M, and the share of
``sum |W|`` each mask method would keep. The checkpoint is read one tensor at a time and never
modified.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nmsolve._progress import progress_bar
from nmsolve._validate import check_bool, check_nm
from nmsolve.checkpoint.formats import Reader, TensorInfo, open_checkpoint
from nmsolve.checkpoint.prune import (
    DEFAULT_EXCLUDE,
    MASK_METHODS,
    kept_and_total,
    mask_method,
    mask_methods,
    scores_2d,
    select,
    warm,
)
from nmsolve.layout import WeightLayout

__all__ = ["DEFAULT_REPORT_METHODS", "CheckpointReport", "LayerReport", "checkpoint_report"]

# What :func:`checkpoint_report` measures by default: the fast methods (the reference flow solvers are slow).
DEFAULT_REPORT_METHODS = ("nm", "approx", "mcf")


@dataclass(frozen=True)
class LayerReport:
    """How far one tensor is from N:M and what each method would keep (fractions of ``sum |W|``)."""

    name: str
    shape: tuple[int, ...]
    magnitude: float  # sum |W|
    density: float | None  # nonzero fraction (None: the tensor is empty)
    nm_violations: float  # fraction of groups of m with more than n nonzeros
    transposable_violations: float | None  # fraction of m x m tiles not transposable N:M (None: rows % m)
    kept: dict[str, float | None] = field(default_factory=dict)  # method -> kept fraction (None: n/a)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointReport:
    """Result of :func:`checkpoint_report`."""

    path: Path
    n: int
    m: int
    methods: tuple[str, ...]
    layers: tuple[LayerReport, ...]
    skipped: tuple[tuple[str, str], ...]  # (name, why) for selected tensors that could not be measured


def _violations(nonzero2d: np.ndarray, n: int, m: int) -> tuple[float, float | None]:
    rows, cols = nonzero2d.shape
    groups = nonzero2d.reshape(rows, cols // m, m).sum(axis=2)
    nm_bad = float((groups > n).mean()) if groups.size else 0.0
    if rows % m:
        return nm_bad, None
    tiles = nonzero2d.reshape(rows // m, m, cols // m, m)
    bad = (tiles.sum(axis=3) > n).any(axis=1) | (tiles.sum(axis=1) > n).any(axis=2)
    return nm_bad, float(bad.mean()) if bad.size else 0.0


def checkpoint_report(
    path: str | os.PathLike[str],
    *,
    n: int = 2,
    m: int = 4,
    methods: Sequence[str] | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    progress: bool = False,
) -> CheckpointReport:
    """How far each selected tensor already is from N:M / transposable N:M, and what each method keeps.

    Parameters
    ----------
    path : str or Path
        The checkpoint (read one tensor at a time, never modified): a file, or a sharded checkpoint's
        index or folder.
    n, m : int
        The pattern.
    methods : sequence of str, optional
        Methods to measure (default: ``DEFAULT_REPORT_METHODS``, i.e. "nm", "approx" and "mcf"; any
        name of :data:`~nmsolve.checkpoint.MASK_METHODS` may be given). A method that cannot handle
        a tensor (e.g. rows not a multiple of ``m`` for transposable masks) is reported as None.
    include, exclude : sequence of str
        Tensor selection, as in :func:`prune_checkpoint`.
    progress : bool, default False
        Show a tqdm progress bar.

    Returns
    -------
    CheckpointReport
        Per tensor: nonzero density, the fraction of groups of ``m`` holding more than ``n``
        nonzeros (0 means the tensor is already N:M), the fraction of ``m x m`` tiles violating
        transposable N:M, and the kept fraction of ``sum |W|`` per method.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> np.savez(path, fc=np.array([[1.0, 0.0, 2.0, 0.0], [3.0, 4.0, 5.0, 0.0]]))
    >>> layer = checkpoint_report(path, n=2, m=4, methods=["nm"]).layers[0]
    >>> layer.nm_violations, round(layer.kept["nm"], 3)
    (0.5, 0.8)
    """
    n, m = check_nm(n, m)
    progress = check_bool(progress, "progress")
    chosen_methods = list(DEFAULT_REPORT_METHODS if methods is None else methods)
    for method in chosen_methods:
        mask_method(method)  # an unknown name fails before anything is read
    solvers = mask_methods(n, m)
    layers: list[LayerReport] = []
    skipped: list[tuple[str, str]] = []
    warmed: set[Any] = set()
    with open_checkpoint(path) as reader:
        selected = select(reader.infos, include, exclude)
        bar = progress_bar(len(selected), progress, f"report {n}:{m}", "tensor")
        try:
            for info in selected:
                layer = _measure(info, reader, n, m, chosen_methods, solvers, warmed, skipped)
                if layer is not None:
                    layers.append(layer)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    return CheckpointReport(Path(path), n, m, tuple(chosen_methods), tuple(layers), tuple(skipped))


def _measure(
    info: TensorInfo,
    reader: Reader,
    n: int,
    m: int,
    methods: Sequence[str],
    solvers: dict[str, Callable[[np.ndarray], np.ndarray]],
    warmed: set[Any],
    skipped: list[tuple[str, str]],
) -> LayerReport | None:
    """One tensor's :class:`LayerReport`; None (and a line in ``skipped``) if it cannot be measured."""
    rows, cols = WeightLayout(info.shape).matrix_shape
    if cols % m:
        skipped.append((info.name, f"{cols} input channels, not a multiple of m={m}"))
        return None
    weights = scores_2d(info, reader.read(info.name))
    nonzero = weights != 0
    nm_bad, t_bad = _violations(nonzero, n, m)
    kept: dict[str, float | None] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        if MASK_METHODS[method].transposable and rows % m:
            kept[method] = None
            continue
        warm(solvers[method], weights.dtype, m, warmed)
        tick = time.perf_counter()
        try:
            mask = np.asarray(solvers[method](weights), dtype=bool)
        except ValueError as err:  # e.g. transposable masks need n < m
            kept[method] = None
            skipped.append((info.name, f"{method}: {err}"))
            continue
        seconds[method] = time.perf_counter() - tick
        got, total = kept_and_total(weights, mask)
        kept[method] = got / total if total else 1.0
    magnitude = float(np.abs(weights).sum(dtype=np.float64))
    density = float(nonzero.mean()) if nonzero.size else None  # an empty tensor has no density (not nan)
    return LayerReport(info.name, info.shape, magnitude, density, nm_bad, t_bad, kept, seconds)
