"""One-shot N:M pruning of a torch model on calibration data, block by block (SparseGPT-style driver).

:func:`prune_oneshot` runs the calibration batches up to the first block once, then for each block
in turn collects the input Gram matrix ``H = X^T X`` of its Linear layers with forward hooks,
prunes every layer with :func:`nmsolve.prune_layer`, writes the pruned (updated) weights in place,
and runs the pruned block again to produce the next block's inputs. Only one block's inputs are
held at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from nmsolve._progress import progress_bar
from nmsolve._validate import check_bool, check_nm, choose
from nmsolve.metrics import kept_fraction
from nmsolve.torch._batches import call_arguments, model_device, token_mask
from nmsolve.torch._convert import to_numpy, torch_threads_kept
from nmsolve.torch.adapter import LayerReport, select_layers

# kwargs of transformer layers that carry a key/value cache: a stored input must not grow one
_CACHE_KWARGS = ("past_key_value", "past_key_values", "cache", "layer_past")


class _StopForward(Exception):
    """Raised by the capture hook once the first block's inputs are stored (ends the forward early)."""


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class OneShotLayerReport:
    """One pruned layer of a :class:`OneShotReport`.

    Attributes
    ----------
    name : str
        Qualified module name.
    block : str
        Name of the block the layer belongs to.
    shape : tuple of int
        Weight shape ``(out, in)``.
    error : float
        Output error ``trace((W - W') H (W - W')^T)`` of the written weights ``W'`` on the layer's
        calibration inputs (inputs from the already pruned previous blocks).
    magnitude_error : float
        The same error for plain magnitude pruning of ``W``: the baseline.
    reference : float
        ``trace(W H W^T)``, the output energy of the dense layer on the same inputs.
    relative_error : float
        ``error / reference``.
    density : float
        Fraction of weights kept.
    kept_fraction : float
        Fraction of ``sum |W|`` that the mask keeps (on the dense weights).
    rows : int
        Calibration input rows (tokens) that entered ``H``.
    seconds : float
        Wall time of the solver.
    """

    name: str
    block: str
    shape: tuple[int, ...]
    error: float
    magnitude_error: float
    reference: float
    relative_error: float
    density: float
    kept_fraction: float
    rows: int
    seconds: float


@dataclass(frozen=True)
class OneShotReport:
    """Outcome of :func:`prune_oneshot`; ``str(report)`` is a table with totals.

    Attributes
    ----------
    layers : tuple of OneShotLayerReport
        The pruned layers, in pruning order.
    skipped : tuple of LayerReport
        Linear layers left dense, with the reason (not matched by include, matched by exclude,
        outside the blocks, never called during calibration).
    blocks : tuple of str
        The blocks, in the order they were pruned.
    pattern : str
        e.g. ``"2:4"``, ``"2:4 transposable"``.
    method : str
    seconds : float
        Wall time of the whole call.
    """

    layers: tuple[OneShotLayerReport, ...]
    skipped: tuple[LayerReport, ...] = field(default_factory=tuple)
    blocks: tuple[str, ...] = field(default_factory=tuple)
    pattern: str = ""
    method: str = ""
    seconds: float = 0.0

    @property
    def error(self) -> float:
        """Sum of the layers' errors."""
        return float(sum(r.error for r in self.layers))

    @property
    def magnitude_error(self) -> float:
        """Sum of the layers' magnitude-pruning errors."""
        return float(sum(r.magnitude_error for r in self.layers))

    @property
    def relative_error(self) -> float:
        """Total error over total dense output energy (0.0 when that is zero)."""
        reference = sum(r.reference for r in self.layers)
        return self.error / reference if reference > 0 else 0.0

    @property
    def magnitude_relative_error(self) -> float:
        """Total magnitude-pruning error over total dense output energy."""
        reference = sum(r.reference for r in self.layers)
        return self.magnitude_error / reference if reference > 0 else 0.0

    def __str__(self) -> str:
        head = (
            f"{'layer':<40} {'shape':<12} {'rel. error':>10} {'magnitude':>10} {'gain':>6} "
            f"{'density':>7} {'kept |W|':>8} {'seconds':>7}"
        )
        lines = [f"one-shot {self.pattern} pruning, method={self.method}", head, "-" * len(head)]
        for r in self.layers:
            mag = r.magnitude_error / r.reference if r.reference > 0 else 0.0
            gain = f"{r.magnitude_error / r.error:.2f}x" if r.error > 0 else "-"
            lines.append(
                f"{r.name:<40} {'x'.join(map(str, r.shape)):<12} {r.relative_error:>10.4f} {mag:>10.4f} "
                f"{gain:>6} {r.density:>7.3f} {r.kept_fraction:>8.3f} {r.seconds:>7.2f}"
            )
        lines.append("-" * len(head))
        solver = sum(r.seconds for r in self.layers)
        lines.append(
            f"{f'total: {len(self.layers)} layers in {len(self.blocks)} blocks':<53} {self.relative_error:>10.4f} "
            f"{self.magnitude_relative_error:>10.4f} {'':>6} {'':>7} {'':>8} {solver:>7.2f}"
        )
        lines.append(f"wall time {self.seconds:.2f} s")
        for r in self.skipped:
            lines.append(f"left dense: {r.name} ({r.reason})")
        return "\n".join(lines)


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class _Block:
    """Modules called in sequence: the first on the stored inputs, each next one on the previous output."""

    name: str
    modules: tuple[nn.Module, ...]
    names: tuple[str, ...]


def _holds(module: nn.Module, layers: set[int]) -> bool:
    return any(id(sub) in layers for sub in module.modules())


def _param_count(modules: Iterable[nn.Module]) -> int:
    seen: set[int] = set()
    total = 0
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def repeated_blocks(model: nn.Module, include: Any = None, exclude: Any = None) -> str | None:
    """Path of the model's main ``nn.ModuleList`` of repeated layers, or None if it has none.

    The candidates are the ModuleLists whose entries all have the same class and hold at least one
    Linear layer selected by ``include``/``exclude``; the one with the most parameters wins (the
    layer list of a transformer, not a list of heads or experts inside one layer). ``""`` is the
    model itself.

    Examples
    --------
    >>> from torch import nn
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
    >>> repeated_blocks(Net()), repeated_blocks(nn.Sequential(nn.Linear(8, 8)))
    ('layers', None)
    """
    chosen, _ = select_layers(model, include=include, exclude=exclude, types=(nn.Linear,))
    return _largest_module_list(model, {id(module) for _, module in chosen})


def _largest_module_list(model: nn.Module, layers: set[int]) -> str | None:
    best: tuple[int, int, str] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        entries = list(module)
        if len({type(e) for e in entries}) != 1 or not any(_holds(e, layers) for e in entries):
            continue
        key = (_param_count(entries), len(entries), name)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]


def _units_of(container: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    prefix = f"{path}." if path else ""
    return [(prefix + name, child) for name, child in container.named_children()]


def _segments(units: list[tuple[str, nn.Module]], layers: set[int]) -> list[_Block]:
    """Blocks from consecutive units: from the first unit holding a selected layer to the last one;
    a unit holding none joins the block before it (it only carries the hidden states on)."""
    holding = [i for i, (_, unit) in enumerate(units) if _holds(unit, layers)]
    if not holding:
        return []
    blocks: list[_Block] = []
    for k, start in enumerate(holding):
        stop = holding[k + 1] if k + 1 < len(holding) else start + 1
        part = units[start:stop]
        blocks.append(_Block(part[0][0], tuple(u for _, u in part), tuple(n for n, _ in part)))
    return blocks


def _submodule(model: nn.Module, path: str, what: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"{what} {path!r} is not a submodule of the model (see model.named_modules())") from None


def _find_blocks(model: nn.Module, blocks: Any, layers: set[int]) -> list[_Block]:
    if blocks is None:
        path = _largest_module_list(model, layers)
        if path is not None:
            return _segments(_units_of(model.get_submodule(path), path), layers)
        # no ModuleList: the innermost nn.Sequential holding every selected layer, else the whole model
        container: tuple[str, nn.Module] | None = None
        for name, module in model.named_modules():
            if isinstance(module, nn.Sequential) and layers <= {id(sub) for sub in module.modules()}:
                container = (name, module)
        if container is not None:
            return _segments(_units_of(container[1], container[0]), layers)
        return [_Block("", (model,), ("",))]
    if isinstance(blocks, str):
        container_module = _submodule(model, blocks, "blocks")
        if not isinstance(container_module, (nn.ModuleList, nn.Sequential)):
            raise ValueError(
                f"blocks={blocks!r} is a {type(container_module).__name__}; a path must name an nn.ModuleList or "
                "nn.Sequential of blocks (or pass a list of block module names)"
            )
        return _segments(_units_of(container_module, blocks), layers)
    if isinstance(blocks, Sequence) and all(isinstance(b, str) for b in blocks) and len(blocks) > 0:
        if len(set(blocks)) != len(blocks):
            raise ValueError(f"blocks lists a module twice: {list(blocks)!r}")
        units = [(b, _submodule(model, b, "block")) for b in blocks]
        for a, ua in units:
            for b, ub in units:
                if a != b and any(sub is ub for sub in ua.modules()):
                    raise ValueError(f"block {b!r} is inside block {a!r}; blocks must not overlap")
        return _segments(units, layers)
    raise TypeError(
        "blocks must be None (found automatically), the path of an nn.ModuleList (e.g. 'encoder.layer') or a "
        f"non-empty list of block module names, got {blocks!r}"
    )


# --------------------------------------------------------------------------- batches


@dataclass
class _Inputs:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    tokens: torch.Tensor | None  # (batch, seq) bool, or None


def _neutralise_cache(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    for key in _CACHE_KWARGS:
        if key in out and out[key] is not None:
            out[key] = None
    if out.get("use_cache"):
        out["use_cache"] = False
    return out


def _capture(model: nn.Module, first: nn.Module, calibration: Any, device: torch.device) -> list[_Inputs]:
    """Run every calibration batch up to ``first`` and store what it is called with."""
    if isinstance(calibration, (torch.Tensor, Mapping, str, bytes)) or not isinstance(calibration, Iterable):
        raise TypeError(
            "calibration must be an iterable of batches (a list, a DataLoader, ...), got a "
            f"{type(calibration).__name__}; wrap a single batch in a list: [batch]"
        )
    stored: list[_Inputs] = []
    current: dict[str, Any] = {}

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        stored.append(_Inputs(tuple(args), _neutralise_cache(kwargs), current["tokens"]))
        raise _StopForward

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for index, batch in enumerate(calibration):
            args, kwargs = call_arguments(batch, index, device)
            current["tokens"] = token_mask(args, kwargs)
            before = len(stored)
            try:
                model(*args, **kwargs)
            except _StopForward:
                pass
            if len(stored) == before:
                raise ValueError(
                    f"calibration batch {index} ran through the model without reaching the first block; the blocks "
                    "must be called by the model's forward (pass blocks=... to name them)"
                )
    finally:
        handle.remove()
    if not stored:
        raise ValueError("calibration holds no batches; pass a non-empty iterable of batches")
    return stored


def _run(block: _Block, inputs: _Inputs) -> Any:
    out = block.modules[0](*inputs.args, **inputs.kwargs)
    for module in block.modules[1:]:
        out = module(_hidden(out, block))
    return out


def _hidden(out: Any, block: _Block) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    to_tuple = getattr(out, "to_tuple", None)  # transformers' ModelOutput
    if callable(to_tuple):
        first = to_tuple()
        if first and isinstance(first[0], torch.Tensor):
            return first[0]  # type: ignore[no-any-return]
    raise TypeError(
        f"block {block.name or '<model>'!r} returned a {type(out).__name__}; a block must return the hidden states "
        "(a tensor, or a tuple whose first element is the tensor)"
    )


def _next_inputs(inputs: _Inputs, hidden: torch.Tensor) -> _Inputs:
    if inputs.args:
        return _Inputs((hidden, *inputs.args[1:]), inputs.kwargs, inputs.tokens)
    return _Inputs((), {**inputs.kwargs, "hidden_states": hidden}, inputs.tokens)


# --------------------------------------------------------------------------- Gram matrices


class _Gram:
    """``H = X^T X`` of one Linear layer's inputs, accumulated by a forward hook."""

    def __init__(self, module: nn.Linear, state: dict[str, Any]) -> None:
        weight = module.weight
        self.half = weight.dtype in (torch.float16, torch.bfloat16)
        self.dtype = torch.float32 if self.half else torch.float64
        self.h = torch.zeros(module.in_features, module.in_features, dtype=self.dtype, device=weight.device)
        self.rows = 0
        self.state = state
        self.handle = module.register_forward_hook(self.hook)

    def hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        x = args[0].detach()
        tokens = self.state.get("tokens")
        if tokens is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(tokens.shape):
            x = x[tokens.to(x.device)]  # padding tokens never enter H
        x = x.reshape(-1, x.shape[-1]).to(self.dtype)
        self.h.addmm_(x.T, x)
        self.rows += x.shape[0]


# --------------------------------------------------------------------------- the driver


def _layer_order(model: nn.Module) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules()}


def prune_oneshot(
    model: nn.Module,
    calibration: Iterable[Any],
    n: int = 2,
    m: int = 4,
    *,
    method: str = "sparsegpt",
    structure: str = "nm",
    refit: bool = False,
    refine: bool | int = False,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    blocks: str | Sequence[str] | None = None,
    damping: float = 0.01,
    progress: bool = True,
) -> OneShotReport:
    """Prune the Linear layers of ``model`` to N:M in one shot, block by block, on calibration data.

    Sequential, as SparseGPT: the calibration batches are run once up to the first block and its
    inputs are stored; then for each block, the input Gram matrix ``H = X^T X`` of each selected
    Linear layer is collected by running the block on the stored inputs, every layer is pruned by
    :func:`nmsolve.prune_layer` on its ``H``, the pruned (and, for ``"sparsegpt"``/``refit``,
    updated) weights are written in place, and the pruned block is run again to give the next
    block's inputs. So each block sees the outputs of the already pruned blocks before it, and only
    one block's inputs are held at a time (on the model's device).

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place: each pruned layer's ``weight`` is overwritten (same tensor, dtype and
        device) with zeros outside its N:M mask. No parametrization is attached, so the state dict
        keeps its keys. Run in eval mode without gradients; each module's training flag is
        restored afterwards.
    calibration : iterable of batches
        Each batch is what the model's forward takes: a tensor (``model(x)``), a tuple/list of
        positional arguments (``model(*batch)``) or a dict of keyword arguments (``model(**batch)``,
        e.g. a tokenizer's output). Tensors are moved to the device of the model's first parameter.
        Iterated exactly once (a list, a generator or a DataLoader all work). When a batch has an
        ``attention_mask`` of shape ``(batch, seq)`` (as a keyword, or in a dict passed as the
        first positional argument, as sentence-transformers models take it), the rows of padding
        tokens (mask 0) are left out of ``H`` for every layer whose input is ``(batch, seq, in)``.
    n, m : int
        Keep ``n`` of every ``m`` consecutive weights along ``in`` (``0 < n < m``).
    method : {"sparsegpt", "magnitude", "wanda"}
        The mask selection of :func:`nmsolve.prune_layer` (``"refit"`` needs a given mask and is not
        offered here; use ``refit=True``).
    structure : {"nm", "transposable"}
        ``"transposable"``: N:M along both axes (``out`` must then be a multiple of ``m`` too).
    refit : bool, default False
        Re-fit each row's kept weights exactly on ``H`` after selecting the mask.
    refine : bool or int, default False
        Improve each mask by local search on the exact reconstruction error and re-fit its weights
        (:func:`nmsolve.refine_mask`): ``True`` searches to a local optimum, an int ``k`` stops
        after at most ``k`` sweeps over the groups (most of the gain comes in the first few).
    include, exclude : str or sequence of str, optional
        Glob patterns on qualified module names choosing the Linear layers (as in
        :func:`nmsolve.torch.sparsify`). Layers not chosen, and Linear layers outside the blocks
        (a pooler, a language-model head), stay dense and are listed in ``report.skipped``.
    blocks : str or sequence of str, optional
        None: the entries of the model's largest ``nn.ModuleList`` of repeated layers (the one with
        the most parameters among those whose entries share a class and hold a chosen layer: a
        BERT's ``encoder.layer``, a Llama's ``model.layers``; found inside a sentence-transformers
        model too); without one, the children of the innermost ``nn.Sequential`` holding every
        chosen layer; without one, the whole model as one block. A string names an
        ``nn.ModuleList``/``nn.Sequential`` of blocks; a list names the block modules. Blocks must
        be called one after the other by the forward, each on the previous one's output (the first
        positional argument, or the ``hidden_states`` keyword); a block returns the hidden states,
        or a tuple whose first element they are. Consecutive entries that hold no chosen layer
        only carry the hidden states on.
    damping : float, default 0.01
        Passed to :func:`nmsolve.prune_layer`.
    progress : bool, default True
        Show a progress bar over the layers.

    Returns
    -------
    OneShotReport
        Per pruned layer: error of the written weights and of magnitude pruning on the layer's
        calibration inputs, relative error, density, kept magnitude, seconds; totals; the layers
        left dense and why.

    Raises
    ------
    ValueError
        ``n >= m``, an unknown method/structure/blocks path, no calibration batch, no Linear layer
        chosen (or none inside the blocks), a chosen layer inside the blocks whose ``in`` (``out``
        for transposable) is not a multiple of ``m`` (exclude it), non-finite weights, such a layer
        that already carries a mask (:func:`nmsolve.torch.sparsify`: call ``bake`` or ``remove_masks`` first) or
        another parametrization. All of these are raised before the model is changed.
    TypeError
        A batch or argument of the wrong type.

    Notes
    -----
    ``H`` is accumulated on each layer's device, in float64 (float32 for float16/bfloat16
    weights), and moved to the CPU for the solver together with that one layer's weights; the
    model itself is never moved. An error while pruning (non-finite activations, an interrupt)
    leaves the blocks pruned so far pruned.

    Examples
    --------
    >>> import torch, nmsolve, nmsolve.torch as nt
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    >>> report = nt.prune_oneshot(model, [torch.randn(64, 16) for _ in range(4)], 2, 4, progress=False)
    >>> [r.name for r in report.layers], report.blocks
    (['0', '2'], ('0', '2'))
    >>> all(nmsolve.is_nm(layer.weight.detach().numpy(), 2, 4) for layer in (model[0], model[2]))
    True
    >>> report.relative_error < report.magnitude_relative_error
    True
    """
    from nmsolve.oneshot import METHODS, prune_layer

    start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n, m = check_nm(n, m, allow_dense=False)
    choose({k: v for k, v in METHODS.items() if k != "refit"}, method)
    if structure not in ("nm", "transposable"):
        raise ValueError(f"structure must be one of ['nm', 'transposable'], got {structure!r}")
    refit = check_bool(refit, "refit")
    progress = check_bool(progress, "progress")
    options: dict[str, Any] = {"refit": refit, "refine": refine, "damping": damping}
    # the solver validates damping (and refine) on a tiny layer before anything is changed
    prune_layer(np.eye(m), np.eye(m), n, m, method="magnitude", structure=structure, **options)

    chosen, skipped = select_layers(model, include=include, exclude=exclude, types=(nn.Linear,))
    if not chosen:
        raise ValueError(
            "no Linear layer to prune: the model has none"
            + (" matching include/exclude" if include is not None or exclude is not None else "")
        )
    layers = {id(module) for _, module in chosen}
    block_list = _find_blocks(model, blocks, layers)
    if not block_list:
        raise ValueError(f"no chosen Linear layer lies inside the blocks {blocks!r}")
    names = _layer_order(model)
    inside: dict[int, _Block] = {}
    for block in block_list:
        for unit in block.modules:
            for sub in unit.modules():
                if id(sub) in layers:
                    inside.setdefault(id(sub), block)
    for name, module in chosen:
        if id(module) not in inside:
            skipped.append(LayerReport(name, "Linear", tuple(module.weight.shape), reason="outside the blocks"))
    _check_layers([(name, module) for name, module in chosen if id(module) in inside], m, structure)

    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    pattern = f"{n}:{m}" + (" transposable" if structure == "transposable" else "")
    reports: list[OneShotLayerReport] = []
    state: dict[str, Any] = {}
    total = sum(1 for _, module in chosen if id(module) in inside)
    bar = progress_bar(total, progress, "prune_oneshot", "layer")
    try:
        with torch.no_grad():
            stored = _capture(model, block_list[0].modules[0], calibration, model_device(model))
            if len(block_list) > 1 and not any(s.args or "hidden_states" in s.kwargs for s in stored[:1]):
                raise ValueError(
                    f"the first block {block_list[0].name!r} is called without positional arguments or a "
                    "hidden_states keyword; cannot feed it the previous block's output"
                )
            for index, block in enumerate(block_list):
                block_layers = [
                    (names[id(sub)], sub)
                    for unit in block.modules
                    for sub in unit.modules()
                    if id(sub) in layers and inside.get(id(sub)) is block
                ]
                grams = {id(module): _Gram(module, state) for _, module in block_layers}
                try:
                    for inputs in stored:
                        state["tokens"] = inputs.tokens
                        _run(block, inputs)
                finally:
                    for gram in grams.values():
                        gram.handle.remove()
                for name, module in block_layers:
                    gram = grams.pop(id(module))
                    if bar is not None:
                        bar.set_postfix_str(name, refresh=False)
                    if gram.rows == 0:
                        skipped.append(
                            LayerReport(name, "Linear", tuple(module.weight.shape), reason="not called in calibration")
                        )
                    else:
                        reports.append(_prune_one(name, block.name, module, gram, n, m, method, structure, options))
                    del gram
                    if bar is not None:
                        bar.update(1)
                if index + 1 < len(block_list):
                    for i, inputs in enumerate(stored):  # in place: each old input is freed as it is replaced
                        stored[i] = _next_inputs(inputs, _hidden(_run(block, inputs), block))
    finally:
        if bar is not None:
            bar.close()
        for module, flag in flags:
            module.training = flag
    order = {name: i for i, name in enumerate(names.values())}
    return OneShotReport(
        layers=tuple(reports),
        skipped=tuple(sorted(skipped, key=lambda r: order.get(r.name, len(order)))),
        blocks=tuple(b.name for b in block_list),
        pattern=pattern,
        method=method,
        seconds=time.perf_counter() - start,
    )


def _check_layers(chosen: list[tuple[str, nn.Module]], m: int, structure: str) -> None:
    masked = [name for name, module in chosen if parametrize.is_parametrized(module, "weight")]
    if masked:
        raise ValueError(
            f"layers {masked} already carry a mask or another parametrization of their weight (e.g. from "
            "nmsolve.torch.sparsify); call nmsolve.torch.bake(model) or remove_masks(model) first, or exclude them"
        )
    ragged = [f"{name} (in={module.weight.shape[1]})" for name, module in chosen if module.weight.shape[1] % m] + (
        [f"{name} (out={module.weight.shape[0]})" for name, module in chosen if module.weight.shape[0] % m]
        if structure == "transposable"
        else []
    )
    if ragged:
        axes = "in and out" if structure == "transposable" else "in"
        raise ValueError(
            f"layers whose {axes} is not a multiple of m={m}: {', '.join(ragged)}; exclude them (exclude=[...])"
        )
    bad = [name for name, module in chosen if not bool(torch.isfinite(module.weight.detach()).all())]
    if bad:
        others = f" (and {bad[1:]})" if len(bad) > 1 else ""
        raise ValueError(f"layer {bad[0]!r}{others} holds NaN or inf weights")


def _verify_written(name: str, weight: torch.Tensor, n: int, m: int, structure: str) -> None:
    """The weights as written (stored order, dtype) are N:M (both axes for transposable), or a clear error."""
    from nmsolve.nm import is_nm

    stored = to_numpy(weight) != 0
    axes = (1, 0) if structure == "transposable" else (1,)
    for axis in axes:
        if not is_nm(stored, n, m, axis=axis):
            what = "along in" if axis == 1 else "along out"
            raise ValueError(
                f"layer {name!r}: the written weights are not {n}:{m} {what} in stored order (more than {n} nonzeros "
                f"in some group of {m}); refusing to report it as pruned. This is a bug: please report it"
            )


def _prune_one(
    name: str,
    block: str,
    module: nn.Module,
    gram: _Gram,
    n: int,
    m: int,
    method: str,
    structure: str,
    options: Mapping[str, Any],
) -> OneShotLayerReport:
    from nmsolve.oneshot import prune_layer

    weight = module.weight
    w = np.asarray(to_numpy(weight), dtype=np.float64)
    h = gram.h.to(device="cpu", dtype=torch.float64).numpy()
    h = (h + h.T) / 2  # float32 accumulation may leave rounding asymmetry
    try:
        with torch_threads_kept():
            result = prune_layer(w, h, n, m, method=method, structure=structure, **options)
    except ValueError as err:
        raise ValueError(f"layer {name!r}: {err}") from err
    with torch.no_grad():
        weight.copy_(torch.from_numpy(result.weights).to(device=weight.device, dtype=weight.dtype))
    _verify_written(name, weight, n, m, structure)
    return OneShotLayerReport(
        name=name,
        block=block,
        shape=tuple(weight.shape),
        error=result.error,
        magnitude_error=result.magnitude_error,
        reference=result.reference,
        relative_error=result.relative_error,
        density=float(result.mask.mean()),
        kept_fraction=kept_fraction(w, result.mask),
        rows=gram.rows,
        seconds=result.seconds,
    )
