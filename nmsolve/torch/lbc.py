"""LBC training hook: learnable combination scores, union-of-alive masks, scheduled removal."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nmsolve._validate import check_int
from nmsolve.combination import combination_scores
from nmsolve.nm import is_nm
from nmsolve.torch._convert import to_numpy
from nmsolve.torch.sparse_training import Layer, NMTraining
from nmsolve.training.lbc import LBCState, lbc_cardinality
from nmsolve.training.srste import check_decay


class LBC(NMTraining):
    """Learning Best Combination: learn which of the ``C(m, n)`` combinations each group keeps.

    Every group of ``m`` weights along ``in`` holds a score per combination (initialised to
    ``1 / C(m-1, n-1)``) and an explicit alive set. The forward pass uses the union of the alive
    combinations; the score gradient is the straight-through ``sum_{j in c} grad_j * w_j``; at
    the end of every epoch the lowest-scoring combinations are removed down to
    :func:`nmsolve.training.lbc_cardinality` (among equal scores the combination that keeps more
    ``|W|`` stays), and from ``t_f`` on exactly one combination is left (an exact N:M mask, scores
    frozen). The schedule counts epochs (``epochs=``, the paper's unit,
    removal in :meth:`end_epoch`) or optimiser steps (``steps=``, removal in
    :meth:`after_optimizer_step` as soon as the cardinality drops; for fine-tuning runs measured in
    steps).

    Parameters
    ----------
    model : torch.nn.Module
    n, m : int, default 2, 4
    epochs : int, optional
        Number of training epochs; ``t_f`` defaults to half of it (the paper's default).
    steps : int, optional
        Number of optimiser steps, instead of ``epochs`` (give exactly one): ``t_i`` and ``t_f``
        then count steps, and ``t_f`` defaults to half of ``steps``.
    t_i : int, default 0
        Epoch (or step) at which removal starts.
    t_f : int, optional
        Epoch (or step) at which one combination is left (default ``max(t_i + 1, length // 2)``).
    p : float, default 3
        Removal power (3 for CNNs, 4 for ViTs in the paper).
    score_lr : float, default 1.0
        Learning rate of plain gradient descent on the scores. With ``init="uniform"`` the scores
        start equal, so their ranking within a group, and therefore every mask, does not depend on
        it; with ``init="magnitude"`` it sets how far the learned gradient can move the start ranking.
    init : {"uniform", "magnitude"}, default "uniform"
        Start scores. ``"uniform"`` is the paper's ``1 / C(m-1, n-1)`` for every combination.
        ``"magnitude"`` (not in the paper; for fine-tuning a pretrained or one-shot pruned model)
        adds each combination's kept ``|W|`` over the layer's mean ``|W|``, divided by
        ``C(m-1, n-1)``, so that removal starts from magnitude pruning of the start weights (the
        one-shot mask where pruned weights are zero) and the gradient has to earn a change.
    include, exclude, types, dense_first_last
        See :func:`~nmsolve.torch.sparsify`.

    Notes
    -----
    Equal scores are ordered by kept magnitude because they are common when fine-tuning: while the
    union of alive combinations is dense, a student distilled from its own dense copy has loss and
    gradient exactly 0, so every score stays at its start; ordering those ties by index would
    remove arbitrary combinations (MiniLM 2:4: embedding cosine 0.36 after 200 steps), ordering
    them by ``|W|`` makes removal magnitude pruning until gradients disagree.

    The weight gradient passes straight through the mask: weights outside the union also move, but
    they are never used again (alive sets only shrink), and the masking pass is saved. The score
    gradient is linear in ``grad * W``, so each step only accumulates ``grad * W`` on the weight's
    device (one fused pass); scores are updated from the sum when they are needed (end of epoch,
    :meth:`scores`), which equals step-by-step gradient descent. :meth:`before_optimizer_step`
    must run before ``optimizer.step()`` (it reads the gradient of the current weights).

    References
    ----------
    Y. Zhang et al., "Learning Best Combination for Efficient N:M Sparsity", NeurIPS 2022.

    Examples
    --------
    >>> import torch, nmsolve.torch as nt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> method = nt.LBC(model, n=2, m=4, epochs=4)  # one combination left after epoch 2
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> for epoch in range(4):
    ...     for _ in range(3):
    ...         loss = model(torch.randn(16, 8)).square().mean()
    ...         opt.zero_grad(); loss.backward()
    ...         method.before_optimizer_step(); opt.step(); method.after_optimizer_step()
    ...     method.end_epoch()
    >>> method.frozen, method.report().masked[0].density
    (True, 0.5)

    The same schedule counted in steps (no ``end_epoch`` needed):

    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> method = nt.LBC(model, n=2, m=4, steps=12)  # one combination left after step 6
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> for step in range(12):
    ...     loss = model(torch.randn(16, 8)).square().mean()
    ...     opt.zero_grad(); loss.backward()
    ...     method.before_optimizer_step(); opt.step(); method.after_optimizer_step()
    >>> method.frozen
    True
    """

    name: ClassVar[str] = "lbc"
    straight_through: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        n: int = 2,
        m: int = 4,
        *,
        epochs: int | None = None,
        steps: int | None = None,
        t_i: int = 0,
        t_f: int | None = None,
        p: float = 3,
        score_lr: float = 1.0,
        init: str = "uniform",
        **kwargs: Any,
    ) -> None:
        if (epochs is None) == (steps is None):
            raise TypeError(
                f"LBC needs exactly one of epochs= or steps= (the length of training its schedule counts in), "
                f"got epochs={epochs!r}, steps={steps!r}"
            )
        self.unit = "epoch" if steps is None else "step"
        length = check_int(epochs if steps is None else steps, "epochs" if steps is None else "steps", minimum=1)
        self.t_i = check_int(t_i, "t_i", minimum=0)
        self.t_f = max(self.t_i + 1, length // 2) if t_f is None else check_int(t_f, "t_f", minimum=1)
        lbc_cardinality(0, 2, t_f=self.t_f, t_i=self.t_i, p=p)  # validates t_i < t_f and p
        self.p = p
        self.score_lr = check_decay(score_lr, "score_lr")  # a finite real >= 0
        if init not in ("uniform", "magnitude"):
            raise ValueError(f"init must be 'uniform' or 'magnitude', got init={init!r}")
        self.init = init
        if "pad" in kwargs:
            raise TypeError("LBC needs full groups of m (combination tables); pad is not supported")
        super().__init__(model, n, m, **kwargs)

    # ------------------------------------------------------------------ hooks

    def setup_layer(self, layer: Layer) -> None:
        shape = layer.shape
        groups = (shape[0], *shape[2:], shape[1] // self.m)  # combination_scores(axis=1) moves `in` last
        state = LBCState(groups, self.n, self.m)
        if self.init == "magnitude":
            magnitude = np.abs(to_numpy(layer.weight)).astype(np.float64)
            scale = magnitude.mean() * math.comb(self.m - 1, self.n - 1)
            if scale > 0:
                state.scores += combination_scores(magnitude, self.n, self.m, axis=1) / scale
        layer.state["lbc"] = state
        layer.state["products"] = torch.zeros_like(layer.weight, memory_format=torch.contiguous_format)
        self.set_mask(layer, layer.state["lbc"].mask(axis=1))

    def on_before_step(self, layer: Layer) -> None:
        state: LBCState = layer.state["lbc"]
        g = layer.weight.grad
        if g is None or state.frozen:
            return
        with torch.no_grad():
            layer.state["products"].addcmul_(g, layer.weight)  # sum over steps of grad * W

    def on_end_epoch(self, layer: Layer) -> None:
        if self.unit == "epoch":
            self._remove_on_schedule(layer, self.epoch)

    def on_after_step(self, layer: Layer) -> None:
        if self.unit == "step":
            self._remove_on_schedule(layer, self.step)

    def _remove_on_schedule(self, layer: Layer, elapsed: int) -> None:
        """Remove the lowest-scoring combinations down to the schedule's cardinality after ``elapsed`` units."""
        state: LBCState = layer.state["lbc"]
        if state.frozen:
            return
        card = lbc_cardinality(elapsed, state.count, t_f=self.t_f, t_i=self.t_i, p=self.p)
        if card < state.alive_count:
            self._flush(layer)
            state.remove_to(card, tiebreak=self._kept_magnitude(layer))
            self.set_mask(layer, state.mask(axis=1))

    def _kept_magnitude(self, layer: Layer) -> np.ndarray:
        """``combination_scores(|W|)``: what equal scores are ordered by (the larger kept magnitude stays)."""
        return combination_scores(np.abs(to_numpy(layer.weight)), self.n, self.m, axis=1)

    def _flush(self, layer: Layer) -> None:
        """Apply the accumulated score gradient ``sum_t T (grad_t * W_t)`` and reset the accumulator."""
        state: LBCState = layer.state["lbc"]
        products = layer.state["products"]
        if state.frozen:
            return
        score_grad = combination_scores(to_numpy(products), self.n, self.m, axis=1)
        state.apply_gradient(score_grad, lr=self.score_lr)
        products.zero_()

    # ------------------------------------------------------------------ queries

    @property
    def frozen(self) -> bool:
        """Whether every layer has one combination left per group (exact N:M masks)."""
        return all(layer.state["lbc"].frozen for layer in self.layers.values())

    def scores(self, name: str) -> np.ndarray:
        """Current combination scores of layer ``name``, shape ``(out, *kernel, in // m, C(m, n))``."""
        layer = self.layers[name]
        self._flush(layer)
        return layer.state["lbc"].scores.copy()

    def alive(self, name: str) -> np.ndarray:
        """Alive sets of layer ``name`` (bool, same shape as :meth:`scores`)."""
        return self.layers[name].state["lbc"].alive.copy()

    def bake(self) -> dict[str, torch.Tensor]:
        """Make the masks permanent as exact N:M masks; return them (see :meth:`SparseTraining.bake`).

        Before the removal schedule has left one combination per group (before epoch ``t_f``), the
        selection is finished first: every group keeps its highest-scoring alive combination (the
        accumulated score gradient applied), as the schedule's last removal would.
        """
        self._check_attached()
        with torch.no_grad():
            for layer in self.layers.values():
                state: LBCState = layer.state["lbc"]
                if not state.frozen:
                    self._flush(layer)
                    state.remove_to(1, tiebreak=self._kept_magnitude(layer))
                    self.set_mask(layer, state.mask(axis=1))
        return super().bake()

    def pattern(self, layer: Layer) -> str:
        state: LBCState = layer.state["lbc"]
        if state.frozen:
            return f"{self.n}:{self.m}"
        return f"{self.n}:{self.m} LBC ({state.alive_count}/{state.count} alive)"

    def is_valid(self, layer: Layer) -> bool:
        state: LBCState = layer.state["lbc"]
        mask = to_numpy(layer.mask) != 0
        if not np.array_equal(mask, state.mask(axis=1)):
            return False
        return not state.frozen or is_nm(mask, self.n, self.m, axis=1, exact=True)

    def layer_state_dict(self, layer: Layer) -> dict[str, Any]:
        state: LBCState = layer.state["lbc"]
        return {
            "scores": torch.from_numpy(state.scores.copy()),
            "alive": torch.from_numpy(state.alive.copy()),
            "products": layer.state["products"].detach().clone(),
        }

    def load_layer_state_dict(self, layer: Layer, saved: dict[str, Any]) -> None:
        layer.state["lbc"].load(to_numpy(saved["scores"]), to_numpy(saved["alive"]))
        layer.state["products"].copy_(saved["products"])
