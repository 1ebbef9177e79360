"""Transposable N:M training hook: one mask for the forward and the backward GEMM, recomputed every k steps."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from torch import nn

from nmsolve._validate import check_int
from nmsolve.layout import weight_from_2d, weight_to_2d
from nmsolve.nm import is_nm
from nmsolve.torch._convert import to_numpy
from nmsolve.torch.adapter import require
from nmsolve.torch.sparse_training import Layer, NMTraining
from nmsolve.torch.srste import add_pending_term, offer_term, term_buffer, use_term_linear, withdraw_term
from nmsolve.training._fused import masked_term_into
from nmsolve.training.schedule import Every
from nmsolve.training.srste import SRSTE_DECAY, check_decay

SOLVERS = ("approx", "mcf")


class TransposableTraining(NMTraining):
    """Train with transposable N:M masks: N:M along ``in`` and along ``out``, so ``W * mask`` serves the
    forward GEMM (reduction over ``in``) and, transposed, the backward ``dX = dY @ (W * mask)``
    (reduction over ``out``).

    The mask is chosen by :func:`nmsolve.transposable_mask` on the weight's 2-D view
    (:func:`nmsolve.weight_to_2d`: ``[out * prod(kernel), in]``) and recomputed every ``every``
    optimiser steps; between recomputations it is fixed. Gradients pass straight through to the
    dense weights with the SR-STE decay ``decay * (1 - mask) * W`` added once per step, so pruned
    weights can come back at the next recomputation.

    Parameters
    ----------
    model : torch.nn.Module
    n, m : int, default 2, 4
    every : int, default 40
        Steps between mask recomputations (our default, chosen for the overhead target; the paper
        does not fix one).
    solver : {"mcf", "approx"}, default "mcf"
        ``method`` of :func:`nmsolve.transposable_mask`: the exact min-cost-flow optimum (the
        default: on CPU it is also faster than the approximation, see bench/results/transposable.md)
        or the factor-2 approximation.
    decay : float, default 2e-4
        SR-STE decay of pruned weights (0 disables it).
    include, exclude, types, dense_first_last
        See :func:`~nmsolve.torch.sparsify`. Layers whose 2-D view is not a multiple of ``m`` on
        both axes are skipped with a reason.

    References
    ----------
    I. Hubara et al., "Accelerated Sparse Neural Training: A Provable and Efficient Method to Find
    N:M Transposable Masks", NeurIPS 2021.

    Examples
    --------
    >>> import torch, nmsolve.torch as nt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> method = nt.TransposableTraining(model, n=2, m=4, every=2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> for _ in range(4):
    ...     loss = model(torch.randn(16, 8)).square().mean()
    ...     opt.zero_grad(); loss.backward()
    ...     method.before_optimizer_step(); opt.step(); method.after_optimizer_step()
    >>> method.check()  # 2:4 along rows and columns
    """

    name: ClassVar[str] = "transposable"
    straight_through: ClassVar[bool] = True
    needs_square_groups: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        n: int = 2,
        m: int = 4,
        *,
        every: int = 40,
        solver: str = "mcf",
        decay: float = SRSTE_DECAY,
        **kwargs: Any,
    ) -> None:
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
        if "pad" in kwargs:
            raise TypeError("transposable masks need full m x m tiles; pad is not supported")
        self.schedule = Every(check_int(every, "every", minimum=1))
        self.solver = solver
        self.decay = check_decay(decay)
        self._solve = require("transposable_mask")
        super().__init__(model, n, m, **kwargs)

    def compute_mask(self, layer: Layer) -> Any:
        matrix, layout = weight_to_2d(self.weight_numpy(layer))
        return weight_from_2d(self._solve(matrix, self.n, self.m, method=self.solver), layout)

    def setup_layer(self, layer: Layer) -> None:
        super().setup_layer(layer)
        self._refresh_products(layer)
        if isinstance(layer.module, nn.Linear):
            use_term_linear(layer)

    def _refresh_products(self, layer: Layer) -> None:
        """``W * mask`` and the SR-STE term in one pass, the term offered to the weight GEMM (CPU
        float 2-D weights); otherwise the masked weight is recomputed on use and the term added
        before the optimiser step."""
        withdraw_term(layer)
        w = layer.weight
        views = [self.host_view(t) for t in (w, layer.mask, layer.param.cache_for(w))]
        if not self.decay or w.dim() != 2 or any(v is None or v.dtype != views[0].dtype for v in views):
            return
        term = term_buffer(layer)
        masked_term_into(*views, self.host_view(term), self.decay)  # type: ignore[arg-type]
        layer.param.mark_cache_valid(w)
        offer_term(layer, term)

    def on_before_step(self, layer: Layer) -> None:
        add_pending_term(layer, self.decay)

    def on_after_step(self, layer: Layer) -> None:
        if self.schedule.due(self.step):
            self.set_mask(layer, self.compute_mask(layer))
        self._refresh_products(layer)

    def pattern(self, layer: Layer) -> str:
        return f"{self.n}:{self.m} transposable"

    def is_valid(self, layer: Layer) -> bool:
        matrix, _ = weight_to_2d(to_numpy(layer.mask) != 0)
        return bool(is_nm(matrix, self.n, self.m) and is_nm(np.ascontiguousarray(matrix.T), self.n, self.m))
