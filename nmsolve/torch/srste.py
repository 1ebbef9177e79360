"""SR-STE training hook: N:M mask recomputed every step, decayed straight-through gradient."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nmsolve.torch.training import Layer, NMTraining, SparseTraining
from nmsolve.training.srste import FUSED_MAX_M, SRSTE_DECAY, check_decay, magnitude_nm_into, srste_decay_into


def add_srste_term(layer: Layer, decay: float) -> None:
    """``grad += decay * (1 - mask) * W`` in place on the dense weight's gradient (no temporaries)."""
    w, g = layer.weight, layer.weight.grad
    if g is None or decay == 0.0:
        return
    grad, weight = (SparseTraining.host_view(t) for t in (g, w))
    mask = SparseTraining.host_view(layer.mask, (torch.float32, torch.float64, torch.uint8))  # Bi-Mask: uint8
    if grad is not None and weight is not None and mask is not None and mask.dtype in (grad.dtype, np.uint8):
        srste_decay_into(grad, weight, mask, decay)
        torch.autograd.graph.increment_version(g)
        return
    with torch.no_grad():
        g.add_(w, alpha=decay)
        g.addcmul_(w, layer.mask, value=-decay)


def refresh_magnitude_mask(method: NMTraining, layer: Layer) -> None:
    """Recompute the magnitude N:M mask of ``layer`` (and the cached masked weight) from its weight."""
    w = layer.weight
    cache = layer.param.cache_for(w)
    views = [SparseTraining.host_view(t) for t in (w, layer.mask, cache)]
    fusable = w.dim() == 2 and not method.pad and method.m <= FUSED_MAX_M
    if fusable and all(v is not None and v.dtype == views[0].dtype for v in views):
        magnitude_nm_into(views[0], method.n, method.m, views[1], views[2])  # type: ignore[arg-type]
        layer.param.mark_cache_valid(w)
        return
    method.set_mask(layer, method.compute_mask(layer))


class SRSTE(NMTraining):
    """Sparse-refined straight-through estimator (SR-STE) on the Linear/Conv layers of a model.

    Every step the forward pass uses ``W * mask`` with ``mask`` the magnitude N:M mask of the
    current dense weights (groups along ``in``); the gradient reaches all of ``W`` (straight
    through) and :meth:`before_optimizer_step` adds ``decay * (1 - mask) * W`` to it once.

    Parameters
    ----------
    model : torch.nn.Module
    n, m : int, default 2, 4
    decay : float, default 2e-4
        The published lambda_W; 0 gives the plain straight-through estimator.
    pad, include, exclude, types, dense_first_last
        See :class:`~nmsolve.torch.training.NMTraining` and :func:`~nmsolve.torch.sparsify`.

    Notes
    -----
    Per step: the N:M mask and the masked weight ``W * mask`` of each layer in one fused pass over
    ``W`` (CPU float32/float64 2-D weights; :func:`nmsolve.nm_mask` and torch otherwise), and one
    fused in-place pass over each gradient for the decay. Formula:
    :func:`nmsolve.training.srste_gradient`.

    References
    ----------
    A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch",
    ICLR 2021.

    Examples
    --------
    >>> import torch, nmsolve.torch as nt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> method = nt.SRSTE(model, n=2, m=4)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> for _ in range(3):
    ...     loss = model(torch.randn(16, 8)).square().mean()
    ...     opt.zero_grad(); loss.backward()
    ...     method.before_optimizer_step(); opt.step(); method.after_optimizer_step()
    >>> method.check()  # every mask is exactly 2:4
    >>> _ = method.bake()
    """

    name: ClassVar[str] = "srste"
    straight_through: ClassVar[bool] = True

    def __init__(self, model: nn.Module, n: int = 2, m: int = 4, *, decay: float = SRSTE_DECAY, **kwargs: Any):
        self.decay = check_decay(decay)
        super().__init__(model, n, m, **kwargs)

    def on_before_step(self, layer: Layer) -> None:
        add_srste_term(layer, self.decay)

    def setup_layer(self, layer: Layer) -> None:
        refresh_magnitude_mask(self, layer)

    def on_after_step(self, layer: Layer) -> None:
        refresh_magnitude_mask(self, layer)
