"""Bi-Mask training hook: forward mask F, backward mask B from a permutation search, custom autograd."""

from __future__ import annotations

import types
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nmsolve._validate import as_rng, check_int
from nmsolve.layout import weight_from_2d, weight_to_2d
from nmsolve.nm import is_nm
from nmsolve.torch._convert import to_numpy
from nmsolve.torch.adapter import MaskParametrization, mask_parametrization, require
from nmsolve.torch.sparse_training import Layer, NMTraining
from nmsolve.torch.srste import add_pending_term, offer_term, term_buffer, use_term_linear, withdraw_term
from nmsolve.training._fused import bimask4_into
from nmsolve.training.schedule import Every
from nmsolve.training.srste import SRSTE_DECAY, check_decay


class _BiMaskConv2d(torch.autograd.Function):
    """Conv2d with ``W * F`` forward and ``W * B`` in the input gradient; weight gradient dense."""

    @staticmethod
    def forward(ctx: Any, x, weight, bias, p: MaskParametrization, conv: nn.Conv2d):  # type: ignore[no-untyped-def]
        back = p.backward_masked_weight(weight) if ctx.needs_input_grad[0] else None
        ctx.save_for_backward(x, back)
        ctx.weight_shape = weight.shape
        ctx.conv = (conv.stride, conv.padding, conv.dilation, conv.groups)
        ctx.has_bias = bias is not None
        return nn.functional.conv2d(x, p.masked_weight(weight), bias, *ctx.conv)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor):  # type: ignore[no-untyped-def]
        x, back = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        dx = dw = db = None
        if ctx.needs_input_grad[0]:  # in dY's dtype, as under autocast (see _TermLinear)
            dx = torch.nn.grad.conv2d_input(x.shape, back.to(dy.dtype), dy, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            dw = torch.nn.grad.conv2d_weight(x.to(dy.dtype), ctx.weight_shape, dy, stride, padding, dilation, groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum((0, 2, 3))
        return dx, dw, db, None, None


def _conv2d_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    p = mask_parametrization(self)
    weight = self.parametrizations.weight.original  # type: ignore[union-attr]
    if not torch.is_grad_enabled():
        return self._conv_forward(x, p.masked_weight(weight), self.bias)  # type: ignore[union-attr]
    return _BiMaskConv2d.apply(x, weight, self.bias, p, self)


class BiMask(NMTraining):
    """Bi-directional masks: N:M forward mask F, N:M backward mask B, and a permutation search.

    F keeps the ``n`` largest ``|W|`` of every ``m`` along ``in`` (recomputed every step, as in
    SR-STE). B is N:M along the output axis of the weight's 2-D view (the reduction axis of
    ``dX = dY @ W``), taken on ``|W * F|`` after a row permutation and un-permuted
    (:func:`nmsolve.bimask_masks`); the permutation is the best of ``candidates`` random ones
    (:func:`nmsolve.bimask_permutation`), searched again every ``period`` steps. A custom autograd
    function computes ``y`` with ``W * F``, the input gradient ``dX = dY @ (W * B)`` and the dense
    weight gradient, to which the SR-STE term ``decay * (1 - F) * W`` is added once per step.

    Parameters
    ----------
    model : torch.nn.Module
        Linear and Conv2d layers (numeric zero padding) are supported; their ``forward`` is replaced
        while the method is attached (restored by :meth:`bake` / :meth:`remove`).
    n, m : int, default 2, 4
    period : int, default 100
        T, steps between permutation searches.
    candidates : int, default 100
        K, random permutations tried per search.
    decay : float, default 2e-4
        SR-STE lambda.
    rng : None, int or numpy Generator
        Seed of the permutation search.
    include, exclude, types, dense_first_last
        See :func:`~nmsolve.torch.sparsify`. Layers whose 2-D view is not a multiple of ``m`` on
        both axes are skipped with a reason.

    Notes
    -----
    Per step: F and B of the current weights under the current permutation (kept as uint8 mask
    buffers; :meth:`masks` and :meth:`backward_masks` return them in the weight's dtype), and the
    masked weights ``W * F`` (forward) and ``W * B`` (input gradient), both kept in the
    parametrization's caches (one extra weight-sized tensor per layer for ``W * B``). For 2-D CPU
    float32/float64 weights and ``m = 4`` all four, and the SR-STE term, come from one fused pass
    over ``W`` (:mod:`nmsolve.training._fused`); the first backward pass after that accumulates ``dY.T @ x``
    into the term, which becomes the weight gradient (later backward passes of the same step, as in
    gradient accumulation, add plain ``dY.T @ x``; if no backward pass ran,
    :meth:`before_optimizer_step` adds the term). The term's buffer is reused once ``zero_grad()`` has
    dropped the gradient that held it, which saves the page faults of a fresh weight-sized gradient
    (up to two such buffers per layer, one of which is the live gradient); a gradient that is still
    held is never overwritten. Other weights take :func:`nmsolve.bimask_masks` and torch, and
    :meth:`before_optimizer_step` adds the term. On the fused path the term enters the gradient in
    the backward pass, so a loss scaler that unscales gradients later (``GradScaler``) divides the
    term too; with loss scaling, pass ``decay=0`` and add the term after unscaling. Every ``period``
    steps :func:`nmsolve.bimask_permutation` scores ``candidates`` random permutations first.

    References
    ----------
    Y. Zhang et al., "Bi-directional Masks for Efficient N:M Sparse Training", ICML 2023.

    Examples
    --------
    >>> import torch, nmsolve.torch as nt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> method = nt.BiMask(model, n=2, m=4, period=2, candidates=4, rng=0)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> for _ in range(4):
    ...     loss = model(torch.randn(16, 8)).square().mean()
    ...     opt.zero_grad(); loss.backward()
    ...     method.before_optimizer_step(); opt.step(); method.after_optimizer_step()
    >>> method.check()
    """

    name: ClassVar[str] = "bimask"
    straight_through: ClassVar[bool] = True
    needs_square_groups: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        n: int = 2,
        m: int = 4,
        *,
        period: int = 100,
        candidates: int = 100,
        decay: float = SRSTE_DECAY,
        rng: Any = None,
        **kwargs: Any,
    ) -> None:
        if "pad" in kwargs:
            raise TypeError("Bi-Mask needs full groups along both axes; pad is not supported")
        self.schedule = Every(period)
        self.candidates = check_int(candidates, "candidates", minimum=0)
        self.decay = check_decay(decay)
        self.rng = as_rng(rng)
        self._search = require("bimask_permutation")
        self._masks = require("bimask_masks")
        super().__init__(model, n, m, **kwargs)

    def skip_reason(self, name: str, module: nn.Module) -> str:
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            return f"Bi-Mask supports Linear and Conv2d, not {type(module).__name__}"
        if isinstance(module, nn.Conv2d) and (isinstance(module.padding, str) or module.padding_mode != "zeros"):
            return "Bi-Mask needs numeric zero padding on convolutions"
        return super().skip_reason(name, module)

    def setup_layer(self, layer: Layer) -> None:
        # uint8 masks: the per-step refresh writes both, a quarter of the bytes of float masks
        layer.param.mask = layer.mask.to(torch.uint8)
        layer.param.backward_mask = torch.ones_like(layer.mask)
        self._search_and_refresh(layer)
        if isinstance(layer.module, nn.Conv2d):
            layer.module.forward = types.MethodType(_conv2d_forward, layer.module)
        else:
            use_term_linear(layer)

    def _search_and_refresh(self, layer: Layer) -> None:
        """Search a new permutation (best of ``candidates``) and take F and B from the search."""
        matrix, layout = weight_to_2d(self.weight_numpy(layer))
        result = self._search(matrix, self.n, self.m, candidates=self.candidates, rng=self.rng)
        layer.state["permutation"] = np.asarray(result.permutation)
        layer.state["score"] = (int(result.score), int(result.identity_score), int(result.max_score))
        if not self._refresh_fused(layer):  # the same F and B as the search's, plus both masked weights
            self._set_masks(layer, result.forward_mask, result.backward_mask, layout)

    def _refresh_fused(self, layer: Layer) -> bool:
        """F, B, ``W * F``, ``W * B`` and the SR-STE term in one pass (CPU float Linear weights, m = 4);
        False if not eligible."""
        withdraw_term(layer)
        if self.m != 4 or layer.weight.dim() != 2:
            return False
        p = layer.param
        w = layer.weight
        weights = [self.host_view(t) for t in (w, p.cache_for(w), p.backward_cache_for(w))]
        masks = [self.host_view(t, (torch.uint8,)) for t in (p.mask, p.backward_mask)]
        if any(v is None for v in weights + masks):
            return False
        term = term_buffer(layer) if self.decay else None
        weight, forward, backward = weights
        perm = layer.state["permutation"]
        bimask4_into(weight, self.n, perm, *masks, forward, backward, self.host_view(term), self.decay)  # type: ignore[arg-type]
        p.mark_cache_valid(w)
        p.mark_backward_cache_valid(w)
        if term is not None:
            offer_term(layer, term)
        return True

    def _refresh(self, layer: Layer) -> None:
        """F and B of the current weights under the current permutation."""
        if self._refresh_fused(layer):
            return
        matrix, layout = weight_to_2d(self.weight_numpy(layer))
        fwd, back = self._masks(matrix, self.n, self.m, layer.state["permutation"])
        self._set_masks(layer, fwd, back, layout)

    def _set_masks(self, layer: Layer, fwd: Any, back: Any, layout: Any) -> None:
        self.set_mask(layer, weight_from_2d(np.asarray(fwd), layout))
        with torch.no_grad():
            layer.param.backward_mask.copy_(
                torch.from_numpy(np.ascontiguousarray(weight_from_2d(np.asarray(back), layout)))
            )

    def on_before_step(self, layer: Layer) -> None:
        add_pending_term(layer, self.decay)

    def on_after_step(self, layer: Layer) -> None:
        if self.schedule.due(self.step):
            self._search_and_refresh(layer)
        else:
            self._refresh(layer)

    def backward_masks(self) -> dict[str, torch.Tensor]:
        """The current backward masks B by layer name (clones; weight dtype and device)."""
        return {
            name: layer.param.backward_mask.detach().to(layer.weight.dtype, copy=True)
            for name, layer in self.layers.items()
        }

    def pattern(self, layer: Layer) -> str:
        return f"{self.n}:{self.m} forward, {self.n}:{self.m} backward"

    def is_valid(self, layer: Layer) -> bool:
        fwd, _ = weight_to_2d(to_numpy(layer.mask) != 0)
        back, _ = weight_to_2d(to_numpy(layer.param.backward_mask) != 0)
        return bool(
            is_nm(fwd, self.n, self.m, exact=True)
            and is_nm(np.ascontiguousarray(back[layer.state["permutation"]].T), self.n, self.m)
            and not (back & ~fwd).any()
        )

    def backward_kept(self) -> dict[str, float]:
        """Per layer, the share of F that B keeps under the last searched permutation (Bi-Mask score
        divided by the nonzeros of F) and the same share for the identity permutation."""
        out = {}
        for name, layer in self.layers.items():
            score, identity, total = layer.state["score"]
            out[name] = score / total if total else 1.0
            out[name + " (identity)"] = identity / total if total else 1.0
        return out

    def layer_state_dict(self, layer: Layer) -> dict[str, Any]:
        return {"permutation": torch.from_numpy(np.array(layer.state["permutation"])), "score": layer.state["score"]}

    def load_layer_state_dict(self, layer: Layer, state: dict[str, Any]) -> None:
        layer.state["permutation"] = to_numpy(state["permutation"]).copy()
        layer.state["score"] = tuple(state["score"])
        self._refresh(layer)
