"""Base class of the sparse-training methods (SR-STE, LBC, Bi-Mask, transposable, SRigL).

Contract for users
------------------
A method attaches itself to a model when constructed and is then driven by four calls from a plain
training loop::

    method = nmsolve.torch.SRSTE(model, n=2, m=4)        # selects layers, attaches masks
    opt = torch.optim.SGD(model.parameters(), lr=0.1)    # before or after: parameters keep identity
    for epoch in range(epochs):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            method.before_optimizer_step()   # gradient terms (SR-STE decay, LBC score gradients, ...)
            opt.step()
            method.after_optimizer_step()    # step counter, mask refresh on the method's schedule
        method.end_epoch()                   # epoch-based schedules (LBC removal)
    method.bake()                            # permanent masks, parametrizations removed

With gradient scaling (``torch.amp.GradScaler``) call ``scaler.unscale_(opt)`` before
``before_optimizer_step()``, so that gradient terms are added to true gradients; with gradient
accumulation call the hooks once per optimiser step, not once per micro-batch.

Each chosen layer's ``weight`` is parametrized by :class:`~nmsolve.torch.adapter.MaskParametrization`
(``weight = original * mask``), so the optimiser keeps training the dense ``original`` parameter
(the same ``Parameter`` object as before attaching) and the mask is a buffer saved with
``model.state_dict()``. ``method.state_dict()`` holds the method's own state (step, epoch and
per-layer state such as LBC scores); ``model.state_dict()`` plus ``method.state_dict()`` resume
training exactly.

Contract for subclasses
-----------------------
A subclass sets the class attributes and overrides the per-layer hooks it needs; every hook gets a
:class:`Layer` (name, module, parametrization, ``weight`` = the dense original parameter, ``mask``
= the live mask buffer, and a free-form ``state`` dict for the method):

``name`` (class attribute)
    Short method name used in reports and benchmarks.
``straight_through`` (class attribute, default True)
    Whether the dense weights receive the gradient of the masked weight unmasked (STE) or masked.
``capture_grad`` (class attribute, default False)
    Whether each backward pass stores the dense gradient with respect to the masked weight in
    ``layer.param.dense_grad`` (RigL-style growth; reset it to None after use).
``skip_reason(name, module) -> str``
    '' to accept a layer chosen by the include/exclude/type filters, or why it stays dense.
``setup_layer(layer)``
    Create ``layer.state`` and set the first mask (default: ``set_mask(layer, compute_mask(layer))``).
``compute_mask(layer) -> array or tensor``
    The method's mask for the current weights, in the weight's shape (numpy or torch, any dtype;
    nonzero = kept).
``on_before_step(layer)`` / ``on_after_step(layer)`` / ``on_end_epoch(layer)``
    Called from :meth:`before_optimizer_step`, :meth:`after_optimizer_step` (``self.step`` already
    counts the finished step) and :meth:`end_epoch` (``self.epoch`` already counts the finished
    epoch). Methods that decide across layers may override the public methods instead and call
    ``super()``.
``pattern(layer) -> str`` and ``is_valid(layer) -> bool``
    The pattern the mask must satisfy now (for reports) and the check of it (:meth:`check`).
``layer_state_dict(layer)`` / ``load_layer_state_dict(layer, state)``
    Serialise ``layer.state``; the defaults store numpy arrays as tensors and scalars as they are.

Helpers for subclasses: :meth:`set_mask` (writes in place into the buffer, converting numpy or
torch masks to the weight's device and dtype), :meth:`weight_numpy` and :meth:`grad_numpy` (host
numpy copies or zero-copy views).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nmsolve._validate import check_bool, check_nm
from nmsolve.torch._convert import to_numpy, torch_threads_kept
from nmsolve.torch.adapter import (
    DEFAULT_TYPES,
    LayerReport,
    MaskParametrization,
    SparsityReport,
    attach_mask,
    bake_module,
    layer_report,
    other_parametrizations,
    ragged_reason,
    remove_mask,
    select_layers,
    sort_report,
    training_layout_reason,
)


@dataclass(eq=False)
class Layer:
    """A layer under a training method: its module, its mask parametrization and the method's state."""

    name: str
    module: nn.Module
    param: MaskParametrization
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def weight(self) -> torch.Tensor:
        """The dense (original) weight parameter that the optimiser updates."""
        return self.module.parametrizations.weight.original  # type: ignore[union-attr,return-value]

    @property
    def mask(self) -> torch.Tensor:
        """The live mask buffer (weight's device; weight's dtype, uint8 under Bi-Mask; 1 = kept)."""
        return self.param.mask

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape)


class SparseTraining:
    """Common machinery of the sparse-training methods; see the module docstring for the contract.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place: masks are attached to the chosen layers.
    include, exclude : str or sequence of str, optional
        Glob patterns on qualified module names (``"encoder.*"``).
    types : nn.Module subclass or sequence of them, default (Linear, Conv2d)
    dense_first_last : bool, default False
        Keep the first and last chosen layers dense.
    """

    name: ClassVar[str] = "sparse"
    straight_through: ClassVar[bool] = True
    capture_grad: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        *,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        types: type[nn.Module] | Iterable[type[nn.Module]] = DEFAULT_TYPES,
        dense_first_last: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.step = 0
        self.epoch = 0
        self.layers: dict[str, Layer] = {}
        self._attached = True
        chosen, skipped = select_layers(
            model, include=include, exclude=exclude, types=types, dense_first_last=dense_first_last
        )
        self._skipped: list[LayerReport] = list(skipped)
        try:
            for name, module in chosen:
                reason = training_layout_reason(module) or self.skip_reason(name, module)
                if not reason and other_parametrizations(module):
                    reason = (
                        f"weight already parametrized by {other_parametrizations(module)}: training methods "
                        "update the original weight directly"
                    )
                if reason:
                    self._skipped.append(layer_report(name, module, None, "", reason))
                    continue
                param = attach_mask(module, torch.ones_like(module.weight), straight_through=self.straight_through)
                param.capture_grad = self.capture_grad
                layer = Layer(name, module, param)
                self.layers[name] = layer
                self.setup_layer(layer)
        except BaseException as err:  # e.g. NaN weights in a later layer: the model is left as it was
            for layer in self.layers.values():
                self._detach_layer(layer)
                remove_mask(layer.module)
            self.layers.clear()
            if type(err) in (ValueError, TypeError):  # say which layer
                raise type(err)(f"layer {name!r}: {err}") from err
            raise

    # ------------------------------------------------------------------ hooks for subclasses

    def skip_reason(self, name: str, module: nn.Module) -> str:
        """'' to accept a layer, else why it stays dense."""
        return ""

    def setup_layer(self, layer: Layer) -> None:
        """Initialise ``layer.state`` and the first mask."""
        self.set_mask(layer, self.compute_mask(layer))

    def compute_mask(self, layer: Layer) -> Any:
        """The method's mask for the current weights (weight-shaped, nonzero = kept)."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_mask(layer)")

    def on_before_step(self, layer: Layer) -> None:
        """Per-layer work after ``loss.backward()`` and before ``optimizer.step()``."""

    def on_after_step(self, layer: Layer) -> None:
        """Per-layer work after ``optimizer.step()`` (``self.step`` counts the finished step)."""

    def on_end_epoch(self, layer: Layer) -> None:
        """Per-layer work at the end of an epoch (``self.epoch`` counts the finished epoch)."""

    def pattern(self, layer: Layer) -> str:
        """The pattern the mask satisfies now, for reports."""
        return ""

    def is_valid(self, layer: Layer) -> bool:
        """Whether the mask satisfies :meth:`pattern`."""
        return True

    def layer_state_dict(self, layer: Layer) -> dict[str, Any]:
        """``layer.state`` for saving: numpy arrays become tensors, tensors are cloned."""
        out: dict[str, Any] = {}
        for key, value in layer.state.items():
            if isinstance(value, np.ndarray):
                out[key] = torch.from_numpy(np.array(value))
            elif isinstance(value, torch.Tensor):
                out[key] = value.detach().clone()
            else:
                out[key] = value
        return out

    def load_layer_state_dict(self, layer: Layer, state: dict[str, Any]) -> None:
        """Inverse of :meth:`layer_state_dict` (values keep the kind they have in ``layer.state``)."""
        for key, value in state.items():
            current = layer.state.get(key)
            if isinstance(current, np.ndarray):
                layer.state[key] = to_numpy(value).astype(current.dtype, copy=True)
            elif isinstance(current, torch.Tensor):
                layer.state[key] = value.to(device=current.device, dtype=current.dtype).clone()
            else:
                layer.state[key] = value

    # ------------------------------------------------------------------ helpers for subclasses

    def set_mask(self, layer: Layer, mask: Any) -> None:
        """Write ``mask`` (numpy or torch, weight-shaped, nonzero = kept) into the layer's mask buffer."""
        if isinstance(mask, torch.Tensor):
            src = mask.detach() if mask.dtype == torch.bool else mask.detach() != 0
        else:
            arr = np.asarray(mask)
            src = torch.from_numpy(np.ascontiguousarray(arr if arr.dtype == np.bool_ else arr != 0))
        if src.shape != layer.mask.shape:
            raise ValueError(f"mask for layer {layer.name!r} has shape {tuple(src.shape)}, expected {layer.shape}")
        with torch.no_grad():
            layer.mask.copy_(src)  # converts to the buffer's dtype and device

    @staticmethod
    def host_view(
        tensor: torch.Tensor | None, dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
    ) -> np.ndarray | None:
        """A writable zero-copy numpy view of a contiguous CPU tensor of one of ``dtypes``, else None.

        For the fused in-place kernels of the CPU fast paths; other devices and dtypes take the
        plain torch path. Whoever writes through the view bumps the tensor's version
        (``torch.autograd.graph.increment_version``) or calls ``layer.param.mark_cache_valid``.
        """
        if tensor is None or tensor.device.type != "cpu" or tensor.dtype not in dtypes or not tensor.is_contiguous():
            return None
        return tensor.detach().numpy()

    @staticmethod
    def weight_numpy(layer: Layer) -> np.ndarray:
        """The dense weight as numpy (zero-copy for float32 CPU weights; do not modify)."""
        return to_numpy(layer.weight)

    @staticmethod
    def grad_numpy(layer: Layer) -> np.ndarray | None:
        """The dense weight's ``.grad`` as numpy, or None before the first backward pass."""
        g = layer.weight.grad
        return None if g is None else to_numpy(g)

    def _check_attached(self) -> None:
        if not self._attached:
            raise RuntimeError(f"this {type(self).__name__} was baked or removed; create a new one to train again")

    # ------------------------------------------------------------------ the public loop API

    def before_optimizer_step(self) -> None:
        """Call after ``loss.backward()`` and before ``optimizer.step()``."""
        self._check_attached()
        with torch_threads_kept():
            for layer in self.layers.values():
                self.on_before_step(layer)

    def after_optimizer_step(self) -> None:
        """Call after ``optimizer.step()``: counts the step and refreshes masks on schedule."""
        self._check_attached()
        self.step += 1
        with torch.no_grad(), torch_threads_kept():
            for layer in self.layers.values():
                self.on_after_step(layer)

    def end_epoch(self) -> None:
        """Call once at the end of every epoch: counts the epoch and runs epoch-based schedules."""
        self._check_attached()
        self.epoch += 1
        with torch.no_grad(), torch_threads_kept():
            for layer in self.layers.values():
                self.on_end_epoch(layer)

    def masks(self) -> dict[str, torch.Tensor]:
        """The current masks by layer name (clones, in the weight's dtype and device; 1 = kept)."""
        return {name: layer.mask.detach().to(layer.weight.dtype, copy=True) for name, layer in self.layers.items()}

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers.values())

    def report(self) -> SparsityReport:
        """Per-layer shape, pattern, density and kept magnitude, plus the layers left dense and why."""
        rows = [layer_report(lay.name, lay.module, lay.mask, self.pattern(lay)) for lay in self.layers.values()]
        return sort_report([*rows, *self._skipped], self.model)

    def check(self) -> None:
        """Raise ``ValueError`` naming every layer whose mask breaks its pattern (see :meth:`is_valid`)."""
        bad = [f"{lay.name} ({self.pattern(lay)})" for lay in self.layers.values() if not self.is_valid(lay)]
        if bad:
            raise ValueError(f"{type(self).__name__}: masks violate their pattern in layers {bad}")

    def state_dict(self) -> dict[str, Any]:
        """The method's own state (step, epoch, per-layer state); masks live in ``model.state_dict()``."""
        return {
            "method": self.name,
            "step": self.step,
            "epoch": self.epoch,
            "layers": {name: self.layer_state_dict(layer) for name, layer in self.layers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (the same layers must be under this method)."""
        if state.get("method") != self.name:
            raise ValueError(f"state was saved by method {state.get('method')!r}, not {self.name!r}")
        missing = sorted(set(self.layers) ^ set(state["layers"]))
        if missing:
            raise ValueError(f"saved layers and this method's layers differ in {missing}")
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        for name, layer_state in state["layers"].items():
            self.load_layer_state_dict(self.layers[name], layer_state)

    def bake(self) -> dict[str, torch.Tensor]:
        """Make the masks permanent (weights with zeros), remove parametrizations; return the masks."""
        self._check_attached()
        masks = self.masks()
        for layer in self.layers.values():
            self._detach_layer(layer)
            bake_module(layer.module)
        self._attached = False
        return masks

    def remove(self) -> None:
        """Detach the method and restore the dense weights (no masks applied)."""
        self._check_attached()
        for layer in self.layers.values():
            self._detach_layer(layer)
            remove_mask(layer.module)
        self._attached = False

    def _detach_layer(self, layer: Layer) -> None:
        """Undo anything besides the parametrization: a forward replaced on the instance is dropped."""
        layer.module.__dict__.pop("forward", None)


class NMTraining(SparseTraining):
    """Base of the N:M methods: groups of ``m`` along ``in`` (channel-last view for conv weights).

    Layers whose ``in`` is not a multiple of ``m`` are skipped with a reason, or (``pad=True``)
    get a padded last group keeping ``min(n, len)`` entries. The default mask is the magnitude N:M
    mask (:func:`nmsolve.nm_mask` of ``|W|`` along axis 1).
    """

    name: ClassVar[str] = "nm"
    needs_square_groups: ClassVar[bool] = False  # both axes of the 2-D view must be multiples of m

    def __init__(self, model: nn.Module, n: int = 2, m: int = 4, *, pad: bool = False, **kwargs: Any) -> None:
        self.n, self.m = check_nm(n, m)
        self.pad = check_bool(pad, "pad")
        super().__init__(model, **kwargs)

    def skip_reason(self, name: str, module: nn.Module) -> str:
        return ragged_reason(module, self.m, pad=self.pad, both_axes=self.needs_square_groups)

    def compute_mask(self, layer: Layer) -> Any:
        from nmsolve.nm import nm_mask

        return nm_mask(np.abs(self.weight_numpy(layer)), self.n, self.m, axis=1, pad=self.pad)

    def pattern(self, layer: Layer) -> str:
        return f"{self.n}:{self.m}"

    def is_valid(self, layer: Layer) -> bool:
        from nmsolve.nm import is_nm

        return is_nm(to_numpy(layer.mask), self.n, self.m, axis=1, exact=True, pad=self.pad)
