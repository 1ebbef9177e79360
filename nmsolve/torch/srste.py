"""SR-STE training hook: N:M mask recomputed every step, decayed straight-through gradient.

Also the SR-STE term ``decay * (1 - F) * W`` that SR-STE, Bi-Mask and transposable training add to the
weight gradient once per step. Two ways, one result:

* fused (Linear layers whose per-step pass over ``W`` also wrote the term, :func:`offer_term`): the
  layer's forward is :class:`_TermLinear`, whose backward accumulates ``dY.T @ x`` into the term, so
  the term costs no pass over the gradient; the term's buffer is reused across steps
  (:func:`term_buffer`), which also saves the page faults of a fresh weight-sized gradient;
* otherwise :func:`add_srste_term` adds it to the gradient before the optimiser step.

:func:`add_pending_term` (a method's ``on_before_step``) picks the right one. On the fused path the
term enters the gradient during the backward pass, so a loss scaler that unscales gradients later
(``GradScaler``) divides it too: with loss scaling, use ``decay=0`` and add the term after unscaling.
"""

from __future__ import annotations

import functools
import types
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nmsolve.torch.adapter import MaskParametrization, mask_parametrization
from nmsolve.torch.sparse_training import Layer, NMTraining, SparseTraining
from nmsolve.training._fused import nm4_into
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


_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _storage_users(t: torch.Tensor) -> int:
    """How many tensors (and storage handles) share ``t``'s memory; -1 if this torch cannot tell."""
    return -1 if _storage_use_count is None else int(_storage_use_count(t.untyped_storage()._cdata))


def term_buffer(layer: Layer) -> torch.Tensor:
    """A weight-sized tensor to receive the SR-STE term, reused once nothing else holds it.

    The term becomes the weight's ``.grad`` (see _TermLinear), so a buffer is free again when
    ``zero_grad()`` has dropped that gradient. The usual loop zeroes gradients at the start of a step,
    after the refresh that writes the term, so two buffers alternate. Reuse saves the page faults of a
    fresh 64 MB tensor (about as long as the GEMM that fills it). A gradient still held
    (``zero_grad(set_to_none=False)``, a user's reference) makes a new buffer, as does a torch without
    the storage use count.
    """
    w = layer.weight
    buffers = layer.state.setdefault("term_buffers", [])
    for buf, users in buffers:
        if users >= 0 and buf.shape == w.shape and buf.dtype == w.dtype and _storage_users(buf) == users:
            return buf
    buf = torch.empty_like(w)
    buffers.insert(0, (buf, _storage_users(buf)))
    del buffers[2:]
    return buf


def offer_term(layer: Layer, term: torch.Tensor) -> None:
    """Declare that ``term`` (from :func:`term_buffer`) holds the SR-STE term of the current weight."""
    layer.state["decay_term"] = term.view(term.shape)  # a new alias: autograd adopts it as the .grad
    layer.state["decay_version"] = layer.weight._version


def withdraw_term(layer: Layer) -> None:
    """Forget the offered term (a refresh starts; if it offers no new one, the term is added unfused)."""
    layer.state.pop("decay_term", None)


def add_pending_term(layer: Layer, decay: float) -> None:
    """The once-per-step SR-STE term, before the optimiser step: nothing if a backward pass took the
    offered term, the offered term if the weight is still the one it was computed from, else
    :func:`add_srste_term`."""
    if "decay_term" not in layer.state:  # nothing offered: the unfused path
        add_srste_term(layer, decay)
        return
    term, layer.state["decay_term"] = layer.state["decay_term"], None
    grad = layer.weight.grad
    if term is None or grad is None:  # a backward pass took the term, or there is no gradient
        return
    if layer.state["decay_version"] != layer.weight._version:  # the weight changed since the refresh
        add_srste_term(layer, decay)
        return
    with torch.no_grad():
        grad.add_(term)


class _TermLinear(torch.autograd.Function):
    """``y = x @ (W * F).T + b``; backward ``dX = dY @ (W * B)`` (B the parametrization's backward
    mask, or F), ``dW = dY.T @ x`` (dense, straight through), ``db``.

    ``W * F`` and ``W * B`` come from the parametrization's caches (recomputed in place when stale);
    the saved alias makes autograd raise if it is changed before the backward pass. If an SR-STE
    term is on offer for the weight the forward saw, the first backward pass takes it and
    accumulates ``dY.T @ x`` into it (one GEMM that also adds the term), so it is added once per step.
    """

    @staticmethod
    def forward(ctx: Any, x, weight, bias, p: MaskParametrization, state: dict[str, Any]):  # type: ignore[no-untyped-def]
        back = None
        if ctx.needs_input_grad[0]:
            back = p.masked_weight(weight) if p.backward_mask is None else p.backward_masked_weight(weight)
        ctx.save_for_backward(x, back)
        ctx.has_bias = bias is not None
        ctx.state = state
        ctx.weight_version = weight._version
        return nn.functional.linear(x, p.masked_weight(weight), bias)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor):  # type: ignore[no-untyped-def]
        x, back = ctx.saved_tensors
        # under autocast dY (and x) can be of lower precision than W: compute in dY's dtype, as autocast
        # does (autograd casts each gradient to its input's dtype); the .to() are no-ops otherwise
        dx = dy @ back.to(dy.dtype) if ctx.needs_input_grad[0] else None
        dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1]).to(dy.dtype)
        dw = None
        if ctx.needs_input_grad[1]:
            term = ctx.state.get("decay_term")
            if term is None or term.dtype != dy2.dtype or ctx.state["decay_version"] != ctx.weight_version:
                dw = dy2.T @ x2
            else:
                ctx.state["decay_term"] = None  # taken: nothing else may hold it, so autograd adopts it as .grad
                dw = term.addmm_(dy2.T, x2)
        db = dy2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None


def _term_linear_forward(self: nn.Linear, x: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
    p = mask_parametrization(self)
    weight = self.parametrizations.weight.original  # type: ignore[union-attr]
    if not torch.is_grad_enabled():
        return nn.functional.linear(x, p.masked_weight(weight), self.bias)  # type: ignore[union-attr]
    return _TermLinear.apply(x, weight, self.bias, p, state)


def use_term_linear(layer: Layer) -> None:
    """Run ``layer`` (an nn.Linear) through :class:`_TermLinear` (until the method is detached)."""
    forward = functools.partial(_term_linear_forward, state=layer.state)
    layer.module.forward = types.MethodType(forward, layer.module)


def refresh_magnitude_mask(method: NMTraining, layer: Layer, decay: float = 0.0) -> None:
    """Recompute the magnitude N:M mask of ``layer`` (and the cached masked weight) from its weight;
    where the fused N:4 pass runs and ``decay`` is not 0, it also writes and offers the SR-STE term."""
    withdraw_term(layer)
    w = layer.weight
    cache = layer.param.cache_for(w)
    views = [SparseTraining.host_view(t) for t in (w, layer.mask, cache)]
    fusable = w.dim() == 2 and not method.pad and method.m <= FUSED_MAX_M
    if not (fusable and all(v is not None and v.dtype == views[0].dtype for v in views)):
        method.set_mask(layer, method.compute_mask(layer))
        return
    weight, mask, masked = views
    if method.m == 4 and decay:
        term = term_buffer(layer)
        nm4_into(weight, method.n, mask, masked, SparseTraining.host_view(term), decay)  # type: ignore[arg-type]
        offer_term(layer, term)
    else:
        magnitude_nm_into(weight, method.n, method.m, mask, masked)  # type: ignore[arg-type]
    layer.param.mark_cache_valid(w)


class SRSTE(NMTraining):
    """Sparse-refined straight-through estimator (SR-STE) on the Linear/Conv layers of a model.

    Every step the forward pass uses ``W * mask`` with ``mask`` the magnitude N:M mask of the
    current dense weights (groups along ``in``); the gradient reaches all of ``W`` (straight
    through) and ``decay * (1 - mask) * W`` is added to it once per step.

    Parameters
    ----------
    model : torch.nn.Module
    n, m : int, default 2, 4
    decay : float, default 2e-4
        The published lambda_W; 0 gives the plain straight-through estimator.
    pad, include, exclude, types, dense_first_last
        See :class:`~nmsolve.torch.sparse_training.NMTraining` and :func:`~nmsolve.torch.sparsify`.

    Notes
    -----
    Per step: the N:M mask and the masked weight ``W * mask`` of each layer in one fused pass over
    ``W`` (CPU float32/float64 2-D weights; :func:`nmsolve.nm_mask` and torch otherwise). At
    ``m = 4`` that pass also writes the decay term, and a Linear layer's weight-gradient GEMM
    accumulates into it (see :mod:`nmsolve.torch.srste`: Linear layers run a custom autograd
    function while the method is attached; see that module for loss scaling); otherwise one fused
    in-place pass over each gradient adds the decay before the optimiser step. Formula:
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
        add_pending_term(layer, self.decay)

    def setup_layer(self, layer: Layer) -> None:
        refresh_magnitude_mask(self, layer, self.decay)
        if isinstance(layer.module, nn.Linear):
            use_term_linear(layer)

    def on_after_step(self, layer: Layer) -> None:
        refresh_magnitude_mask(self, layer, self.decay)
