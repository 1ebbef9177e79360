"""Model batches as the adapter takes them: a tensor, a tuple/list of positional arguments or a dict
of keyword arguments of the model's forward (what a tokenizer returns). Shared by
:func:`~nmsolve.torch.prune_oneshot`, :func:`~nmsolve.torch.permute_channels` and
:class:`~nmsolve.torch.Distillation`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it (nested in dicts, tuples, lists) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def call_arguments(
    batch: Any, index: int, device: torch.device, what: str = "calibration batch"
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` to call the model with for ``batch`` (number ``index``), on ``device``."""
    if isinstance(batch, torch.Tensor):
        return (batch.to(device),), {}
    if isinstance(batch, (tuple, list)):
        return tuple(to_device(v, device) for v in batch), {}
    if isinstance(batch, Mapping):
        if not all(isinstance(k, str) for k in batch):
            raise TypeError(f"{what} {index} is a mapping with non-string keys; keys must be argument names")
        return (), {k: to_device(v, device) for k, v in batch.items()}
    raise TypeError(
        f"{what} {index} is a {type(batch).__name__}; each batch must be a tensor, a tuple/list of "
        "positional arguments or a dict of keyword arguments of the model's forward"
    )


def token_mask(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    """The batch's ``attention_mask`` (batch, seq) as bool: in the keyword arguments, or in a dict
    passed as the first positional argument (sentence-transformers' ``features``)."""
    for source in (kwargs, args[0] if args and isinstance(args[0], Mapping) else {}):
        mask = source.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            return mask != 0
    return None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
