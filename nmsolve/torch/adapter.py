"""Attach N:M masks to torch modules, make them permanent, save and load them.

Masks are attached with :mod:`torch.nn.utils.parametrize`: ``layer.weight`` becomes
``original * mask`` while the optimiser keeps updating the original (dense) parameter. The mask is a
buffer of the parametrization, stored in the weight's dtype and on its device, so it follows
``model.to(...)`` and appears in ``model.state_dict()`` under
``"<layer>.parametrizations.weight.0.mask"`` (the dense weight under
``"<layer>.parametrizations.weight.original"``). To load such a state dict into a fresh model, use
:func:`load_state_dict`, which attaches empty masks first. :func:`bake` turns the masks into plain
weights with zeros and removes the parametrizations, after which the state dict has the usual keys.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from nmsolve._validate import check_bool, check_nm, choose
from nmsolve.metrics import kept_fraction
from nmsolve.torch._convert import to_mask, to_numpy, torch_threads_kept

DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)

MASK_KEY = "parametrizations.weight.0.mask"
BACKWARD_MASK_KEY = "parametrizations.weight.0.backward_mask"
# The mask of a layer that another library parametrized first (weight_norm, spectral_norm, orthogonal)
# comes after those parametrizations: "<layer>.parametrizations.weight.<index>.mask".
_MASK_KEY_RE = re.compile(r"^(?:(.*)\.)?parametrizations\.weight\.(\d+)\.mask$")


# --------------------------------------------------------------------------- the parametrization


class _MaskedWeight(torch.autograd.Function):
    """``W * mask`` (from the parametrization's cache) whose backward can pass the gradient straight
    through and/or keep a copy of it."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, mask: torch.Tensor, owner: MaskParametrization) -> torch.Tensor:
        ctx.save_for_backward(mask)
        ctx.owner = owner
        return owner.masked_weight(weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (mask,) = ctx.saved_tensors
        owner = ctx.owner
        if owner.capture_grad:
            # gradient with respect to the masked weight, dense (RigL growth, LBC score gradients)
            owner.dense_grad = grad.detach() if owner.dense_grad is None else owner.dense_grad + grad.detach()
        return (grad if owner.straight_through else grad * mask), None, None


_TENSOR_DATA = torch._C.TensorBase.data  # the attribute that `.data` reaches on plain tensors


class _DataWatch:
    """The ``.data`` handles given out by one watched tensor, to notice writes through them.

    ``t.data`` is an alias with a version counter of its own, so writes through it (the Hugging Face
    ``module.weight.data.normal_()`` idiom, ``p.data.mul_(2)``) leave ``t._version`` unchanged. Each
    handle is remembered (weakly) with its version; :meth:`changed` reports a handle written since,
    or collected since (it may have been written before it went), or a ``t.data = ...`` assignment.
    """

    __slots__ = ("dirty", "handles")

    def __init__(self) -> None:
        self.handles: list[tuple[weakref.ref[torch.Tensor], int]] = []
        self.dirty = False

    def issue(self, handle: torch.Tensor) -> torch.Tensor:
        self.handles.append((weakref.ref(handle), handle._version))
        return handle

    def changed(self) -> bool:
        if not self.handles and not self.dirty:
            return False
        changed, self.dirty = self.dirty, False
        live = []
        for ref, version in self.handles:
            handle = ref()
            if handle is None:
                changed = True
            else:
                changed |= handle._version != version
                live.append((ref, handle._version))
        self.handles = live
        return changed

    def __reduce__(self) -> tuple[Any, ...]:  # copies and pickles start with no handles
        return (_DataWatch, ())


def _watched_data(self: torch.Tensor) -> torch.Tensor:
    handle = _TENSOR_DATA.__get__(self)
    watch = self.__dict__.get("_nm_watch")
    return handle if watch is None else watch.issue(handle)


def _set_watched_data(self: torch.Tensor, value: torch.Tensor) -> None:
    _TENSOR_DATA.__set__(self, value)
    watch = self.__dict__.get("_nm_watch")
    if watch is not None:
        watch.dirty = True


class _WatchedParameter(nn.Parameter):
    """The dense weight under a mask: an ``nn.Parameter`` whose ``.data`` handles are watched."""

    data = property(_watched_data, _set_watched_data)  # type: ignore[assignment]


class _WatchedTensor(torch.Tensor):
    """A mask buffer, or the masked weight handed out: a tensor whose ``.data`` handles are watched."""

    __torch_function__ = torch._C._disabled_torch_function_impl
    data = property(_watched_data, _set_watched_data)  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict[int, Any]) -> torch.Tensor:
        if id(self) in memo:
            return memo[id(self)]  # type: ignore[no-any-return]
        result = copy.deepcopy(self.detach(), memo)  # a plain tensor's copy; watched again on first use
        result.__class__ = _WatchedTensor
        memo[id(self)] = result
        return result


_WATCHED = {nn.Parameter: _WatchedParameter, torch.Tensor: _WatchedTensor}


def _watch(t: torch.Tensor) -> _DataWatch | None:
    """The watch of ``t``'s ``.data`` handles, making ``t`` watched first (None: a foreign subclass)."""
    watch = t.__dict__.get("_nm_watch")
    if watch is None:
        cls = type(t)
        if cls in _WATCHED:
            t.__class__ = _WATCHED[cls]
        elif cls not in (_WatchedParameter, _WatchedTensor):
            return None
        watch = t.__dict__["_nm_watch"] = _DataWatch()
    return watch  # type: ignore[no-any-return]


def _unwatch(t: torch.Tensor | None) -> None:
    """Give ``t`` back its plain class (when a mask is baked or removed)."""
    if t is None:
        return
    t.__dict__.pop("_nm_watch", None)
    if type(t) is _WatchedParameter:
        t.__class__ = nn.Parameter
    elif type(t) is _WatchedTensor:
        t.__class__ = torch.Tensor


def _changed(t: torch.Tensor) -> bool:
    watch = _watch(t)
    return watch is not None and watch.changed()


class _ProductCache:
    """``weight * mask`` kept in one tensor, rewritten in place only when the weight, the mask or the
    tensor itself changed: tracked by torch's version counters and data pointers, and for writes
    through ``.data`` (which bump no version counter) by watching the ``.data`` handles of the
    weight, the mask and the aliases of the tensor handed out (:class:`_DataWatch`)."""

    def __init__(self) -> None:
        self.tensor: torch.Tensor | None = None
        self.key: tuple[Any, ...] | None = None
        self.watch = _DataWatch()  # .data handles of the aliases handed out

    def _key(self, weight: torch.Tensor, mask: torch.Tensor) -> tuple[Any, ...]:
        assert self.tensor is not None
        return (weight._version, weight.data_ptr(), mask._version, mask.data_ptr(), self.tensor._version)

    def tensor_for(self, weight: torch.Tensor) -> torch.Tensor:
        t = self.tensor
        if t is None or t.shape != weight.shape or t.dtype != weight.dtype or t.device != weight.device:
            self.tensor = t = torch.empty_like(weight, memory_format=torch.contiguous_format)
            self.key = None
        return t

    def _data_written(self, weight: torch.Tensor, mask: torch.Tensor) -> bool:
        # all three are polled (no short circuit): each poll also forgets the handles seen
        return _changed(weight) | _changed(mask) | self.watch.changed()

    def mark_valid(self, weight: torch.Tensor, mask: torch.Tensor) -> None:
        t = self.tensor_for(weight)
        self._data_written(weight, mask)  # the caller computed from the current values
        torch.autograd.graph.increment_version(t)  # graphs holding the old values must notice
        torch.autograd.graph.increment_version(mask)
        self.key = self._key(weight, mask)

    def get(self, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = self.tensor_for(weight)
        if self._data_written(weight, mask) or self.key != self._key(weight, mask):
            with torch.no_grad():
                torch.mul(weight, mask, out=t)
            self.key = self._key(weight, mask)
        alias = t.detach()  # an alias sharing storage and version counter with the cache
        alias.__class__ = _WatchedTensor
        alias.__dict__["_nm_watch"] = self.watch  # layer.weight.data.normal_() must not stick
        return alias


class MaskParametrization(nn.Module):
    """``weight -> weight * mask``, the parametrization that every mask in ``nmsolve.torch`` uses.

    Parameters
    ----------
    mask : torch.Tensor
        1 where a weight is kept, 0 where it is pruned; stored on the weight's device, in the
        weight's dtype (Bi-Mask swaps both of its masks to uint8, which its per-step refresh writes).
    straight_through : bool, default False
        If True the gradient of the masked weight reaches the dense weight unmasked (the
        straight-through estimator of SR-STE, Bi-Mask, transposable training); if False pruned
        weights receive zero gradient.
    backward_mask : torch.Tensor, optional
        A second mask for methods whose backward pass uses another mask (Bi-Mask); stored so that
        it is saved and loaded with the model.

    Attributes
    ----------
    capture_grad : bool
        When True, each backward pass stores the dense gradient with respect to the masked weight in
        ``dense_grad`` (summed over backward passes until reset to None).

    Notes
    -----
    ``weight * mask`` is kept in a cache that is rewritten in place only when the weight, the mask
    or the cache itself changed (tracked by torch's version counters), so several accesses per
    step (shared weights, evaluation) cost one multiplication and no new allocation. Writes through
    ``.data`` (``original.data.mul_(2)``, ``mask.data.fill_(1)``), which bump no version counter,
    are noticed too: the dense weight, the mask and the masked weights handed out watch the
    ``.data`` handles they give (their class becomes a watching subclass of ``nn.Parameter`` /
    ``torch.Tensor`` while the mask is attached), and ``layer.weight.data.normal_()`` is discarded
    at the next access, as with a plain parametrization. Code that writes the mask or the cache
    without torch (numpy views) calls :meth:`mark_cache_valid` or :meth:`invalidate`.
    ``weight * backward_mask`` has a cache of its own, allocated on first use
    (:meth:`backward_masked_weight`, :meth:`mark_backward_cache_valid`).
    """

    def __init__(
        self, mask: torch.Tensor, *, straight_through: bool = False, backward_mask: torch.Tensor | None = None
    ) -> None:
        straight_through = check_bool(straight_through, "straight_through")
        for name, value in (("mask", mask), ("backward_mask", backward_mask)):
            if not isinstance(value, torch.Tensor) and (name == "mask" or value is not None):
                raise TypeError(f"{name} must be a torch.Tensor (use attach_mask for numpy masks), got {value!r:.80}")
        super().__init__()
        self.register_buffer("mask", mask)
        self.register_buffer("backward_mask", backward_mask)
        self.straight_through = straight_through
        self.capture_grad = False
        self.dense_grad: torch.Tensor | None = None
        self._forward = _ProductCache()
        self._backward = _ProductCache()

    def cache_for(self, weight: torch.Tensor) -> torch.Tensor:
        """The cache tensor of ``weight * mask`` (allocated on the weight's device and dtype when needed), unfilled."""
        return self._forward.tensor_for(weight)

    def mark_cache_valid(self, weight: torch.Tensor) -> None:
        """Declare that the cache holds ``weight * mask`` (after writing it through a numpy view)."""
        self._forward.mark_valid(weight, self.mask)

    def invalidate(self) -> None:
        """Force the next access to recompute ``weight * mask`` (and ``weight * backward_mask``)."""
        self._forward.key = self._backward.key = None

    def masked_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight * mask`` from the cache, recomputed in place if anything changed (no autograd).

        Only a parameter is cached: after another library's parametrization (the mask second in the
        list) the input is a new tensor at every access, whose address may be reused.
        """
        if not isinstance(weight, nn.Parameter):
            with torch.no_grad():
                return weight * self.mask
        return self._forward.get(weight, self.mask)

    def backward_cache_for(self, weight: torch.Tensor) -> torch.Tensor:
        """The cache tensor of ``weight * backward_mask``, unfilled (see :meth:`cache_for`)."""
        return self._backward.tensor_for(weight)

    def mark_backward_cache_valid(self, weight: torch.Tensor) -> None:
        """Declare that the backward cache holds ``weight * backward_mask``."""
        if self.backward_mask is None:
            raise RuntimeError("this parametrization has no backward_mask")
        self._backward.mark_valid(weight, self.backward_mask)

    def backward_masked_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight * backward_mask`` from its own cache (as :meth:`masked_weight`; no autograd)."""
        if self.backward_mask is None:
            raise RuntimeError("this parametrization has no backward_mask")
        return self._backward.get(weight, self.backward_mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and weight.requires_grad:
            return _MaskedWeight.apply(weight, self.mask, self)
        return self.masked_weight(weight)

    def extra_repr(self) -> str:
        return f"straight_through={self.straight_through}"


def mask_parametrization(module: nn.Module) -> MaskParametrization | None:
    """The :class:`MaskParametrization` attached to ``module.weight``, or None."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:  # type: ignore[union-attr]
        if isinstance(p, MaskParametrization):
            return p
    return None


def other_parametrizations(module: nn.Module) -> list[str]:
    """Class names of the parametrizations of ``module.weight`` that are not nmsolve masks
    (``weight_norm``, ``spectral_norm``, ``orthogonal``, ...)."""
    if not parametrize.is_parametrized(module, "weight"):
        return []
    return [type(p).__name__ for p in module.parametrizations.weight if not isinstance(p, MaskParametrization)]  # type: ignore[union-attr]


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The dense weight that the mask multiplies: the parametrization's original, or the plain weight.

    When other parametrizations come before the mask (a layer parametrized by another library
    first), their output, computed now without autograd.
    """
    if not parametrize.is_parametrized(module, "weight"):
        return module.weight  # type: ignore[return-value]
    plist = module.parametrizations.weight  # type: ignore[union-attr]
    if not other_parametrizations(module):
        return plist.original  # type: ignore[return-value]
    with torch.no_grad():
        if plist.is_tensor:
            x = plist[0](plist.original)
        else:
            x = plist[0](*(getattr(plist, f"original{i}") for i in range(plist.ntensors)))
        for p in list(plist)[1:]:
            if isinstance(p, MaskParametrization):
                break
            x = p(x)
    return x  # type: ignore[no-any-return]


def attach_mask(
    module: nn.Module, mask: Any, *, straight_through: bool = False, backward_mask: Any = None
) -> MaskParametrization:
    """Attach ``mask`` (numpy or torch, weight-shaped) to ``module.weight``; return the parametrization."""
    straight_through = check_bool(straight_through, "straight_through")
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor to mask")
    if mask_parametrization(module) is not None:
        raise ValueError(
            f"this {module_kind(module)} already has a mask; call bake(model) or remove_masks(model) before "
            "attaching another"
        )
    t = to_mask(mask, weight)
    if t.shape != weight.shape:
        raise ValueError(f"mask has shape {tuple(t.shape)} but the weight has shape {tuple(weight.shape)}")
    b = None if backward_mask is None else to_mask(backward_mask, weight, "backward_mask")
    p = MaskParametrization(t, straight_through=straight_through, backward_mask=b)
    parametrize.register_parametrization(module, "weight", p)
    return p


def masked_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module, MaskParametrization]]:
    """``(name, module, parametrization)`` for every module of ``model`` that carries a mask."""
    check_model(model)
    for name, module in model.named_modules():
        p = mask_parametrization(module)
        if p is not None:
            yield name, module, p


def _refuse_other_parametrizations(items: Iterable[tuple[str, nn.Module]]) -> None:
    bad = {name: other_parametrizations(module) for name, module in items if other_parametrizations(module)}
    if bad:
        raise ValueError(
            f"cannot bake the masks of layers {bad}: their weight is also parametrized by another library, "
            "and a mask cannot be made permanent in the original weight under it (e.g. weight_norm would "
            "renormalise the zeros away); to keep the current masked weight as a plain parameter and drop every "
            "parametrization, call torch.nn.utils.parametrize.remove_parametrizations(layer, 'weight', "
            "leave_parametrized=True)"
        )


def bake(model: nn.Module) -> dict[str, torch.Tensor]:
    """Make every mask permanent: weights become ``weight * mask`` and the parametrizations are removed.

    The weight parameters keep their identity (an optimiser that holds them stays valid). A layer
    whose weight another library also parametrizes (``weight_norm``, ``spectral_norm``, ...) cannot
    be baked: ``ValueError`` before anything is changed.

    Returns
    -------
    dict of str to torch.Tensor
        The masks that were baked, by module name (weight dtype and device).

    Examples
    --------
    >>> import torch, nmsolve.torch as nt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    >>> _ = nt.sparsify(model, 2, 4)
    >>> masks = nt.bake(model)
    >>> sorted(model.state_dict()), int((model[0].weight != 0).sum())
    (['0.bias', '0.weight'], 16)
    """
    items = list(masked_modules(model))
    _refuse_other_parametrizations((name, module) for name, module, _ in items)
    baked = {}
    for name, module, p in items:
        baked[name] = p.mask.detach().to(dense_weight(module).dtype, copy=True)
        bake_module(module)
    return baked


def bake_module(module: nn.Module) -> None:
    """Remove the mask of ``module`` and multiply its weight by it in place (identity kept).

    Pruned weights become exact zeros, an ``inf`` one too (``inf * 0`` would leave NaN)."""
    p = mask_parametrization(module)
    if p is None:
        raise ValueError(f"this {module_kind(module)} has no mask to bake")
    _refuse_other_parametrizations([("", module)])
    mask = p.mask
    _unwatch(mask)  # the buffer goes with the parametrization (and the caller may hold it)
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    _unwatch(module.weight)
    _unwatch(p.backward_mask)
    with torch.no_grad():
        mask = mask.to(module.weight.dtype)
        module.weight.mul_(mask).masked_fill_(mask == 0, 0.0)  # pruned weights exact zeros, even inf ones


def remove_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Remove every mask and restore the dense weights (the opposite of :func:`bake`)."""
    removed = {}
    for name, module, p in list(masked_modules(model)):
        removed[name] = p.mask.detach().to(dense_weight(module).dtype, copy=True)
        remove_mask(module)
    return removed


def remove_mask(module: nn.Module) -> None:
    """Remove the mask of ``module`` (its weight dense again); other parametrizations stay."""
    p = mask_parametrization(module)
    if p is not None:
        _unwatch(p.mask)
        _unwatch(p.backward_mask)
    if not other_parametrizations(module):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        _unwatch(module.weight)
        return
    plist = module.parametrizations.weight  # type: ignore[union-attr]
    for i in reversed(range(len(plist))):
        if isinstance(plist[i], MaskParametrization):
            del plist[i]


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The attached masks by module name (the live buffers: do not modify them in place)."""
    return {name: p.mask for name, _, p in masked_modules(model)}


def load_state_dict(model: nn.Module, state_dict: Mapping[str, Any], *, strict: bool = True) -> Any:
    """Load a state dict saved from a model with masks into ``model`` (with or without masks attached).

    For every ``"<layer>.parametrizations.weight.0.mask"`` key whose layer has no mask yet, a mask
    is attached first (``...weight.<i>.mask`` after ``i`` parametrizations of another library), so
    that ``model.load_state_dict`` finds every key. Returns what ``model.load_state_dict`` returns.

    A state dict that does not fit the model (missing or unexpected keys with ``strict``, a shape
    that differs, a value that is not a tensor) raises ValueError naming the keys, and the model is
    left as it was (torch's own ``load_state_dict`` raises RuntimeError after copying what fitted).

    Examples
    --------
    >>> import torch, nmsolve.torch as nt
    >>> a, b = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    >>> _ = nt.sparsify(a, 2, 4)
    >>> _ = nt.load_state_dict(b, a.state_dict())
    >>> bool(torch.equal(a.weight, b.weight))
    True
    """
    strict = check_bool(strict, "strict")
    check_model(model)
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict must be a mapping of names to tensors (model.state_dict()), got {type(state_dict).__name__}"
        )
    modules = dict(model.named_modules())
    attached: list[nn.Module] = []
    for key in state_dict:
        match = _MASK_KEY_RE.match(key)
        if match is None:
            continue
        name, index = match.group(1) or "", int(match.group(2))
        module = modules.get(name)
        if module is None or mask_parametrization(module) is not None:
            continue  # unknown layers are left to load_state_dict's own error
        if index != len(other_parametrizations(module)):
            continue  # a mask after parametrizations this layer lacks: load_state_dict names the key
        back_key = key[: -len("mask")] + "backward_mask"
        back = torch.ones_like(module.weight) if back_key in state_dict else None
        attach_mask(module, torch.ones_like(module.weight), backward_mask=back)
        attached.append(module)
    problems = _misfits(model.state_dict(), state_dict, strict)
    if problems:
        for module in attached:
            remove_mask(module)
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise ValueError(f"state_dict does not fit {type(model).__name__}: {shown}")
    return model.load_state_dict(state_dict, strict=strict)


def _misfits(expected: Mapping[str, Any], given: Mapping[str, Any], strict: bool) -> list[str]:
    """What ``model.load_state_dict`` would refuse: wrong shapes and non-tensors (and, if strict, keys)."""
    problems = []
    for key, value in given.items():
        want = expected.get(key)
        if key not in expected:
            if strict:
                problems.append(f"unexpected key {key!r}")
        elif isinstance(want, torch.Tensor) and not nn.parameter.is_lazy(want):
            if not isinstance(value, torch.Tensor):
                problems.append(f"{key!r} is a {type(value).__name__}, not a tensor")
            elif value.shape != want.shape:
                problems.append(f"{key!r} has shape {tuple(value.shape)}, the model's is {tuple(want.shape)}")
    if strict:
        problems += [f"missing key {key!r}" for key in expected if key not in given]
    return problems


def check_model(model: Any) -> None:
    """Refuse anything but an ``nn.Module`` with a TypeError naming what was passed."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {model!r} of type {type(model).__name__}")


# --------------------------------------------------------------------------- layer selection


@dataclass(frozen=True)
class LayerReport:
    """One line of a :class:`SparsityReport`.

    Attributes
    ----------
    name : str
        Qualified module name (``model.named_modules()``).
    kind : str
        Module type, e.g. ``"Linear"``.
    shape : tuple of int
        Weight shape.
    pattern : str
        e.g. ``"2:4"``, ``"2:4 transposable"``; empty for skipped layers.
    masked : bool
        Whether a mask was attached.
    reason : str
        Why a layer was skipped (empty when masked).
    density : float
        Fraction of weights kept (1.0 for skipped layers).
    kept_fraction : float
        Fraction of ``sum |W|`` kept (1.0 for skipped layers).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    pattern: str = ""
    masked: bool = False
    reason: str = ""
    density: float = 1.0
    kept_fraction: float = 1.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer outcome of :func:`sparsify` or of a training method; ``str(report)`` is a table."""

    layers: tuple[LayerReport, ...] = field(default_factory=tuple)

    @property
    def masked(self) -> tuple[LayerReport, ...]:
        return tuple(r for r in self.layers if r.masked)

    @property
    def skipped(self) -> tuple[LayerReport, ...]:
        return tuple(r for r in self.layers if not r.masked)

    @property
    def density(self) -> float:
        """Kept fraction of all weights in the reported layers (skipped layers count as dense)."""
        total = sum(int(np.prod(r.shape)) for r in self.layers)
        kept = sum(r.density * int(np.prod(r.shape)) for r in self.layers)
        return kept / total if total else 1.0

    def __str__(self) -> str:
        head = f"{'layer':<28} {'type':<10} {'shape':<18} {'pattern':<18} {'density':>7} {'kept |W|':>8}  note"
        lines = [head, "-" * len(head)]
        for r in self.layers:
            shape = "x".join(map(str, r.shape))
            lines.append(
                f"{r.name or '<model>':<28} {r.kind:<10} {shape:<18} {r.pattern or '-':<18} "
                f"{r.density:>7.3f} {r.kept_fraction:>8.3f}  {r.reason}"
            )
        return "\n".join(lines)


def _patterns(value: str | Sequence[str] | None, name: str) -> tuple[str, ...] | None:
    """``include`` / ``exclude`` as a tuple of glob patterns (None: no filter)."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    out = tuple(value) if isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray)) else None
    if out is None or not all(isinstance(v, str) for v in out):
        raise TypeError(
            f"{name} must be a glob pattern or a sequence of glob patterns (e.g. 'encoder.*'), got {value!r}"
        )
    return out


def _types(value: Any) -> tuple[type[nn.Module], ...]:
    """``types`` as a non-empty tuple of nn.Module subclasses (one class alone is accepted too)."""
    if isinstance(value, type):
        value = (value,)
    out = tuple(value) if isinstance(value, Iterable) and not isinstance(value, (str, bytes)) else ()
    if not out or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in out):
        raise TypeError(
            f"types must be an nn.Module subclass or a non-empty sequence of them (e.g. (nn.Linear,)), got {value!r}"
        )
    return out


def select_layers(
    model: nn.Module,
    *,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    types: type[nn.Module] | Iterable[type[nn.Module]] = DEFAULT_TYPES,
    dense_first_last: bool = False,
) -> tuple[list[tuple[str, nn.Module]], list[LayerReport]]:
    """Layers to sparsify and the layers left dense (with why), in ``named_modules()`` order.

    ``include``/``exclude`` are :func:`fnmatch.fnmatchcase` glob patterns matched against the
    qualified module name (``"encoder.*"``, ``"*.fc2"``); a layer is chosen when its type is one of
    ``types``, it matches some ``include`` pattern (all do when None) and no ``exclude`` pattern.
    ``dense_first_last`` keeps the first and the last chosen layer dense, as most published N:M
    training does.
    """
    check_model(model)
    inc, exc = _patterns(include, "include"), _patterns(exclude, "exclude")
    dense_first_last = check_bool(dense_first_last, "dense_first_last")
    types = _types(types)
    chosen: list[tuple[str, nn.Module]] = []
    skipped: list[LayerReport] = []
    for name, module in model.named_modules():
        if not isinstance(module, types):
            continue
        kind = module_kind(module)
        if not isinstance(getattr(module, "weight", None), torch.Tensor):
            skipped.append(LayerReport(name, kind, (), reason="no `weight` tensor (only module.weight is masked)"))
            continue
        shape = tuple(module.weight.shape)
        if inc is not None and not any(fnmatch.fnmatchcase(name, p) for p in inc):
            skipped.append(LayerReport(name, kind, shape, reason="not matched by include"))
        elif exc is not None and any(fnmatch.fnmatchcase(name, p) for p in exc):
            skipped.append(LayerReport(name, kind, shape, reason="matched by exclude"))
        else:
            chosen.append((name, module))
    if dense_first_last and chosen:
        ends = {0: "first layer kept dense", len(chosen) - 1: "last layer kept dense"}
        for i in sorted(ends, reverse=True):
            name, module = chosen.pop(i)
            skipped.append(LayerReport(name, module_kind(module), tuple(module.weight.shape), reason=ends[i]))
    return chosen, skipped


def module_kind(module: nn.Module) -> str:
    """The module's class name (``"Linear"``, not parametrize's ``"ParametrizedLinear"``)."""
    cls = type(module)
    if parametrize.is_parametrized(module) and cls.__name__.startswith("Parametrized"):
        cls = cls.__bases__[0]
    return cls.__name__


def layer_report(
    name: str, module: nn.Module, mask: torch.Tensor | None, pattern: str, reason: str = ""
) -> LayerReport:
    """A :class:`LayerReport` for ``module`` with ``mask`` (None: skipped with ``reason``)."""
    kind, shape = module_kind(module), tuple(module.weight.shape)
    if mask is None:
        return LayerReport(name, kind, shape, reason=reason)
    dense = dense_weight(module)
    keep = to_numpy(mask) != 0
    return LayerReport(
        name,
        kind,
        shape,
        pattern=pattern,
        masked=True,
        density=float(keep.mean()) if keep.size else 1.0,
        kept_fraction=kept_fraction(to_numpy(dense), keep),
    )


def sort_report(layers: Iterable[LayerReport], model: nn.Module) -> SparsityReport:
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return SparsityReport(tuple(sorted(layers, key=lambda r: order.get(r.name, len(order)))))


# --------------------------------------------------------------------------- one-shot masks


def _nm(weight: np.ndarray, n: int, m: int, pad: bool, options: Mapping[str, Any]) -> np.ndarray:
    from nmsolve.nm import nm_mask

    if options:
        raise TypeError(f"method='nm' takes no options, got options={dict(options)!r}")
    return nm_mask(np.abs(weight), n, m, axis=1, pad=pad)


_HOMES = {
    "transposable_mask": "nmsolve.transposable",
    "bimask_permutation": "nmsolve.permutation",
    "bimask_masks": "nmsolve.permutation",
}


def require(name: str) -> Any:
    """The public solver ``nmsolve.<name>`` (from its module if not exported yet), or a clear error."""
    import nmsolve

    try:
        return getattr(nmsolve, name)
    except AttributeError:
        pass
    try:
        return getattr(importlib.import_module(_HOMES[name]), name)
    except (KeyError, ImportError, AttributeError):
        raise RuntimeError(f"nmsolve.{name} is not available in this installation of nmsolve") from None


def _transposable(weight: np.ndarray, n: int, m: int, pad: bool, options: Mapping[str, Any]) -> np.ndarray:
    from nmsolve.layout import weight_from_2d, weight_to_2d

    matrix, layout = weight_to_2d(weight)
    return weight_from_2d(require("transposable_mask")(matrix, n, m, pad=pad, **options), layout)


_METHODS: dict[str, Callable[[np.ndarray, int, int, bool, Mapping[str, Any]], np.ndarray]] = {
    "nm": _nm,
    "transposable": _transposable,
}


def input_axis(module: nn.Module) -> int:
    """The weight axis that a layer reduces its input over: 1 for ``(out, in, *kernel)`` weights
    (Linear, ConvNd), 0 for transposed convolutions, whose weight is ``(in, out / groups, *kernel)``."""
    return 0 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 1


def ragged_reason(module: nn.Module, m: int, *, pad: bool, both_axes: bool = False) -> str:
    """Why ``module`` cannot take an m-grouped mask on its channel-last 2-D view ('' if it can).

    The view is of the weight in ``(out, in, *kernel)`` order (a transposed convolution's weight
    with its first two axes swapped, see :func:`input_axis`).
    """
    shape = list(module.weight.shape)
    if len(shape) < 2:
        return f"weight is {len(shape)}-d; only (out, in, *kernel) weights are masked"
    if input_axis(module) == 0:
        shape[0], shape[1] = shape[1], shape[0]
        groups = int(getattr(module, "groups", 1))
        if groups > 1 and (shape[1] // groups) % m:
            return f"in per group = {shape[1] // groups} (groups={groups}) is not a multiple of m={m}"
    rows, cols = shape[0] * int(np.prod(shape[2:], dtype=np.int64)), shape[1]
    if both_axes and (rows % m or cols % m) and not pad:
        return f"2-D view {rows}x{cols} is not a multiple of m={m} on both axes (pass pad=True to pad)"
    if cols % m and not pad:
        return f"in={cols} is not a multiple of m={m} (pass pad=True to pad the last group)"
    return ""


def training_layout_reason(module: nn.Module) -> str:
    """Why a training method cannot mask ``module`` ('' if it can): the methods group ``(out, in, ...)``
    weights along axis 1 and treat axis 0 as output rows."""
    if input_axis(module) != 1:
        return (
            f"{module_kind(module)} weight is (in, out/groups, *kernel): training methods need (out, in, *kernel) "
            "weights; use nmsolve.torch.sparsify, which groups along its input axis"
        )
    return ""


def sparsify(
    model: nn.Module,
    n: int = 2,
    m: int = 4,
    *,
    method: str = "nm",
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    types: type[nn.Module] | Iterable[type[nn.Module]] = DEFAULT_TYPES,
    dense_first_last: bool = False,
    pad: bool = False,
    scores: Callable[[str, nn.Module], Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> SparsityReport:
    """Attach N:M masks to the Linear/Conv layers of ``model`` (in place) and report per layer.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place: each chosen layer's ``weight`` becomes ``original * mask`` via
        :mod:`torch.nn.utils.parametrize`; training continues on the original weights.
    n, m : int
        Keep ``n`` of every ``m`` consecutive weights along ``in`` (the channel-last view of a conv;
        a transposed convolution's ``in`` is axis 0 of its weight, see :func:`input_axis`).
    method : {"nm", "transposable"}
        ``"nm"``: the ``n`` largest scores of every group (:func:`nmsolve.nm_mask`);
        ``"transposable"``: N:M along both axes of the 2-D view (:func:`nmsolve.transposable_mask`,
        ``options={"method": "approx"}`` picks its fast solver).
    include, exclude : str or sequence of str, optional
        Glob patterns on qualified module names (see :func:`select_layers`).
    types : nn.Module subclass or sequence of them, default (Linear, Conv2d)
    dense_first_last : bool, default False
        Keep the first and last chosen layers dense.
    pad : bool, default False
        Layers whose ``in`` is not a multiple of ``m`` are skipped with a reason (False) or get a
        padded last group that keeps ``min(n, len)`` entries (True; ``"nm"`` only).
    scores : callable(name, module) -> array, optional
        Scores in the weight's shape (default ``|W|``), e.g. a Wanda-style ``|W| * ||x||``.
    options : mapping, optional
        Extra keyword options of the solver (e.g. ``{"method": "approx"}`` for transposable).

    Returns
    -------
    SparsityReport
        Shape, pattern, density and kept magnitude of every masked layer; skipped layers and why.

    Examples
    --------
    >>> import torch, nmsolve.torch as nt
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> report = nt.sparsify(model, 2, 4)
    >>> [(r.name, r.masked, r.density) for r in report.layers]
    [('0', True, 0.5), ('2', True, 0.5)]
    >>> bool((model[0].weight != 0).sum() == 64)
    True
    """
    n, m = check_nm(n, m)
    solve = choose(_METHODS, method)
    pad = check_bool(pad, "pad")
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(
            f"options must be a mapping of solver keyword options (e.g. {{'method': 'approx'}}), got {options!r}"
        )
    if scores is not None and not callable(scores):
        raise TypeError(f"scores must be a callable(name, module) returning the layer's scores, got {scores!r:.80}")
    opts = dict(options or {})
    chosen, reports = select_layers(
        model, include=include, exclude=exclude, types=types, dense_first_last=dense_first_last
    )
    pattern = f"{n}:{m}" + (" transposable" if method == "transposable" else "")
    masked = [name for name, module in chosen if mask_parametrization(module) is not None]
    if masked:
        others = f" (and {masked[1:]})" if len(masked) > 1 else ""
        raise ValueError(
            f"layer {masked[0]!r}{others} already has a mask; call bake(model) or remove_masks(model) before "
            "sparsifying again"
        )
    masks: list[tuple[str, nn.Module, np.ndarray]] = []  # every mask is solved before any is attached
    for name, module in chosen:
        reason = ragged_reason(module, m, pad=pad, both_axes=method == "transposable")
        if reason:
            reports.append(layer_report(name, module, None, pattern, reason))
            continue
        w = to_numpy(module.weight)
        s = w if scores is None else np.asarray(scores(name, module))
        if s.shape != w.shape:
            raise ValueError(f"scores for layer {name!r} have shape {s.shape}, expected the weight's {w.shape}")
        try:
            with torch_threads_kept():
                if input_axis(module) == 0:  # (in, out/groups, *kernel): solve on the (out, in, *kernel) view
                    mask = np.ascontiguousarray(
                        np.swapaxes(solve(np.ascontiguousarray(np.swapaxes(s, 0, 1)), n, m, pad, opts), 0, 1)
                    )
                else:
                    mask = solve(s, n, m, pad, opts)
        except (ValueError, TypeError) as err:  # say which layer (nothing is attached yet)
            raise type(err)(f"layer {name!r}: {err}") from err
        masks.append((name, module, mask))
    for name, module, mask in masks:
        attach_mask(module, mask)
        reports.append(layer_report(name, module, mask_parametrization(module).mask, pattern))  # type: ignore[union-attr]
    return sort_report(reports, model)


# --------------------------------------------------------------------------- semi-structured export


def to_semi_structured(model: nn.Module, *, include: str | Sequence[str] | None = None) -> list[str]:
    """Replace the weights of 2:4-sparse Linear layers by ``torch.sparse.to_sparse_semi_structured`` tensors.

    Call after :func:`bake` on a CUDA model in float16/bfloat16 (sparse tensor cores, compute
    capability 8.0 or newer). Linear layers whose weight is 2:4 along ``in`` (and that match
    ``include``) are converted; the names of the converted layers are returned.

    Raises
    ------
    RuntimeError
        Masks still attached, a layer off CUDA, or no semi-structured support in this torch build.
    """
    from nmsolve.nm import is_nm

    inc = _patterns(include, "include")
    if any(True for _ in masked_modules(model)):
        raise RuntimeError("masks are still attached; call nmsolve.torch.bake(model) before exporting")
    try:
        from torch.sparse import to_sparse_semi_structured
    except ImportError as err:  # pragma: no cover - depends on the torch build
        raise RuntimeError(f"this torch build has no torch.sparse.to_sparse_semi_structured ({err})") from None
    chosen = []  # every layer is checked before any is converted
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or (
            inc is not None and not any(fnmatch.fnmatchcase(name, p) for p in inc)
        ):
            continue
        w = module.weight
        if w.shape[1] % 4 or not is_nm(to_numpy(w), 2, 4):
            continue
        if w.device.type != "cuda":
            raise RuntimeError(
                f"layer {name!r} is on {w.device.type}: to_sparse_semi_structured needs a CUDA GPU with sparse "
                "tensor cores (compute capability >= 8.0); move the model with model.cuda().half() first"
            )
        chosen.append((name, module))
    for _, module in chosen:
        w = module.weight
        module.weight = nn.Parameter(to_sparse_semi_structured(w.detach()), requires_grad=w.requires_grad)
    return [name for name, _ in chosen]
