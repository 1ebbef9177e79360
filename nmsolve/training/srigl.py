"""SRigL: the update schedule and the per-layer state of constant fan-in sparse training (numpy only).

A layer starts from a constant fan-in mask at the target sparsity (random, as in RigL and SRigL, or
by magnitude). Every ``delta`` steps until ``t_end`` the mask is updated by
:func:`nmsolve.rigl_update` with RigL's cosine-annealed drop fraction; rows with too few salient
weights are ablated and their budget moves to the remaining rows (the layer's number of active
weights stays at its budget, up to the remainder of ``budget // active rows``).

The torch hook :class:`nmsolve.torch.SRigL` drives one :class:`SRigLState` per layer.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nmsolve._validate import as_array, as_rng, as_scores, check_bool, check_int
from nmsolve.fanin import (
    RigLStep,
    cosine_drop_fraction,
    fanin_for_sparsity,
    fanin_mask,
    is_constant_fanin,
    rigl_update,
)

SRIGL_ALPHA = 0.3
"""Initial drop fraction of RigL and SRigL."""
SRIGL_GAMMA_SAL = 0.3
"""SRigL's ablation threshold: a row needs ``gamma_sal * k`` salient weights to stay active."""
SRIGL_DELTA = 100
"""Steps between mask updates in the SRigL paper's CIFAR setting."""
SRIGL_END_FRACTION = 0.75
"""Mask updates stop after this fraction of the training steps (RigL, SRigL)."""

_INITS = ("random", "magnitude")


def _check_real(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {name}={value}")
    return value


@dataclass(frozen=True)
class SRigLSchedule:
    """When SRigL updates the masks and how much it changes them.

    Parameters
    ----------
    t_end : int
        Last step (exclusive) with a mask update; RigL and SRigL use 75% of the training steps
        (see :meth:`for_training`).
    delta : int, default 100
        Steps between updates (``delta T``).
    alpha : float, default 0.3
        Initial drop fraction, annealed by a cosine to 0 at ``t_end``.
    gamma_sal : float, default 0.3
        Ablation threshold (fraction of the fan-in ``k`` that must be salient); 0 disables ablation.

    Notes
    -----
    Steps count finished optimiser steps from 1: the masks are updated after steps ``delta``,
    ``2 * delta``, ... below ``t_end``, with drop fraction
    ``alpha / 2 * (1 + cos(pi * step / t_end))``.

    References
    ----------
    Lasby et al., "Dynamic Sparse Training with Structured Sparsity", ICLR 2024; Evci et al.,
    "Rigging the Lottery", ICML 2020.

    Examples
    --------
    >>> s = SRigLSchedule.for_training(1000, delta=100)
    >>> s.t_end, [step for step in range(1, 1001) if s.due(step)]
    (750, [100, 200, 300, 400, 500, 600, 700])
    >>> round(s.drop_fraction(375), 3)
    0.15
    """

    t_end: int
    delta: int = SRIGL_DELTA
    alpha: float = SRIGL_ALPHA
    gamma_sal: float = SRIGL_GAMMA_SAL

    def __post_init__(self) -> None:
        check_int(self.t_end, "t_end", minimum=1)
        check_int(self.delta, "delta", minimum=1)
        _check_real(self.alpha, "alpha", 0.0, 1.0)
        _check_real(self.gamma_sal, "gamma_sal", 0.0, float("inf"))

    @classmethod
    def for_training(
        cls,
        total_steps: int,
        *,
        delta: int = SRIGL_DELTA,
        alpha: float = SRIGL_ALPHA,
        gamma_sal: float = SRIGL_GAMMA_SAL,
        end_fraction: float = SRIGL_END_FRACTION,
    ) -> SRigLSchedule:
        """The published schedule for ``total_steps`` optimiser steps: updates stop at ``end_fraction`` of them."""
        total_steps = check_int(total_steps, "total_steps", minimum=1)
        end_fraction = _check_real(end_fraction, "end_fraction", 0.0, 1.0)
        return cls(t_end=max(1, int(total_steps * end_fraction)), delta=delta, alpha=alpha, gamma_sal=gamma_sal)

    def due(self, step: int) -> bool:
        """Whether the masks are updated after finished step ``step``."""
        return 0 < step < self.t_end and step % self.delta == 0

    def drop_fraction(self, step: int) -> float:
        """RigL's cosine-annealed drop fraction at ``step`` (see :func:`nmsolve.cosine_drop_fraction`)."""
        return cosine_drop_fraction(step, t_end=self.t_end, alpha=self.alpha)


@dataclass(eq=False)
class SRigLState:
    """The constant fan-in mask of one layer, its budget of active weights and its active rows.

    Build it with :meth:`start`; call :meth:`update` after every optimiser step.

    Attributes
    ----------
    mask : ndarray of bool, the weight's shape
        Rows are the first axis, the fan-in the rest (``[out, in]`` or ``[out, in, kh, kw]``).
    budget : int
        Active weights the layer may hold: ``rows * k`` at the start.
    k : int
        Current fan-in of every active row.
    active : ndarray of bool, shape (rows,)
        Rows not ablated.
    ablate : bool
        Whether this layer may ablate rows (output layers usually may not).
    updates : int
        Mask updates done so far.
    history : list of dict
        Per update: step, drop fraction, dropped, grown, active rows, k.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.random.default_rng(0).normal(size=(8, 20))
    >>> state = SRigLState.start(w, sparsity=0.9, rng=0)
    >>> state.k, state.budget, int(state.mask.sum())
    (2, 16, 16)
    >>> step = state.update(w, np.ones_like(w), step=100, schedule=SRigLSchedule(t_end=1000))
    >>> bool(state.is_valid()), state.updates
    (True, 1)
    """

    mask: np.ndarray
    budget: int
    k: int
    active: np.ndarray
    ablate: bool = True
    updates: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        weights: Any,
        sparsity: float,
        *,
        init: str = "random",
        rng: Any = None,
        ablate: bool = True,
    ) -> SRigLState:
        """The first mask: ``k = fanin_for_sparsity(fan_in, sparsity)`` inputs on every row.

        Parameters
        ----------
        weights : array_like, shape (rows, fan_in) or (rows, *fan_in_dims)
            The layer's weights (only their shape is used with ``init="random"``).
        sparsity : float
            Target fraction of zeros in ``[0, 1)``.
        init : {"random", "magnitude"}, default "random"
            Random constant fan-in (RigL and SRigL), or the ``k`` largest ``|w|`` per row.
        rng : None, int or numpy Generator
            Seed of the random mask.
        ablate : bool, default True
            Whether updates may ablate rows of this layer.
        """
        if init not in _INITS:
            raise ValueError(f"init must be one of {list(_INITS)}, got {init!r}")
        ablate = check_bool(ablate, "ablate")
        w = as_scores(weights, "weights", min_ndim=2)
        rows = w.shape[0]
        fan_in = int(np.prod(w.shape[1:], dtype=np.int64))
        k = fanin_for_sparsity(fan_in, sparsity)
        scores = np.abs(w) if init == "magnitude" else as_rng(rng).random(w.shape)
        mask = fanin_mask(scores, k)
        return cls(mask=mask, budget=rows * k, k=k, active=np.ones(rows, dtype=bool), ablate=ablate)

    @property
    def density(self) -> float:
        """Active fraction of the layer."""
        return float(self.mask.sum()) / self.mask.size if self.mask.size else 0.0

    def is_valid(self) -> bool:
        """Constant fan-in ``k`` on the active rows, nothing on the others, within the budget."""
        counts = self.mask.reshape(self.mask.shape[0], -1).sum(axis=1)
        return bool(
            is_constant_fanin(self.mask, self.k)
            and (counts[self.active] == self.k).all()
            and (counts[~self.active] == 0).all()
            and counts.sum() <= self.budget
        )

    def update(self, weights: Any, grads: Any, step: int, schedule: SRigLSchedule) -> RigLStep | None:
        """Update the mask if ``schedule`` is due after ``step``; return the :class:`~nmsolve.RigLStep` or None.

        ``grads`` is the dense gradient of the loss with respect to the masked weight. The caller
        applies the result to its framework: new mask, zero the ``grown`` weights (and their
        optimiser state).
        """
        step = check_int(step, "step", minimum=0)
        if not schedule.due(step):
            return None
        drop = schedule.drop_fraction(step)
        result = rigl_update(
            weights,
            grads,
            self.mask,
            drop_fraction=drop,
            gamma_sal=schedule.gamma_sal if self.ablate else 0.0,
            budget=self.budget,
        )
        self.mask, self.k, self.active = result.mask, result.k, result.active
        self.updates += 1
        self.history.append(
            {
                "step": step,
                "drop_fraction": drop,
                "dropped": result.n_dropped,
                "grown": result.n_grown,
                "active_rows": int(result.active.sum()),
                "k": result.k,
            }
        )
        return result

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (numpy arrays and Python scalars; the history is not kept)."""
        return {
            "mask": self.mask.copy(),
            "budget": self.budget,
            "k": self.k,
            "active": self.active.copy(),
            "ablate": self.ablate,
            "updates": self.updates,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SRigLState:
        """Inverse of :meth:`state_dict`; arrays may come back as any array-like (e.g. tensors via numpy)."""
        mask = as_array(state["mask"], "mask") != 0
        active = as_array(state["active"], "active") != 0
        out = cls(
            mask=mask,
            budget=check_int(int(state["budget"]), "budget", minimum=1),
            k=check_int(int(state["k"]), "k", minimum=1),
            active=active,
            ablate=bool(state["ablate"]),
            updates=check_int(int(state["updates"]), "updates", minimum=0),
        )
        if not out.is_valid():
            raise ValueError("saved SRigL state is inconsistent: the mask is not constant fan-in k on the active rows")
        return out
