"""Learning Best Combination (LBC): combination scores, alive sets and the removal schedule.

Framework-agnostic state of one layer; :class:`nmsolve.torch.LBC` drives it from a torch loop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nmsolve._jit import kernel
from nmsolve._validate import as_array, as_scores, check_int, check_nm, reject_nan
from nmsolve.combination import combination_mask, combination_scores, combinations


def lbc_cardinality(epoch: int, count: int, *, t_f: int, t_i: int = 0, p: float = 3) -> int:
    """How many combinations stay alive per group after ``epoch`` finished epochs.

    ``card = 1 + ceil((C - 1) * (1 - (e - t_i) / (t_f - t_i)) ** p)`` for ``t_i <= e <= t_f``,
    ``C`` before ``t_i`` and ``1`` from ``t_f`` on.

    Parameters
    ----------
    epoch : int
        Finished epochs ``e`` (0 before training).
    count : int
        ``C = C(m, n)``, the number of combinations of a group.
    t_f, t_i : int
        Epochs where removal ends and starts (``t_f > t_i >= 0``); the paper uses ``t_i = 0`` and
        ``t_f`` = half the training epochs.
    p : float, default 3
        Decay power: 3 for CNNs, 4 for ViTs in the paper.

    Notes
    -----
    The power is evaluated in floating point and rounded to 9 decimals before ``ceil``, so that an
    exact integer such as ``2.0000000000000004`` is not rounded up.

    References
    ----------
    Y. Zhang et al., "Learning Best Combination for Efficient N:M Sparsity", NeurIPS 2022.

    Examples
    --------
    >>> [lbc_cardinality(e, 6, t_f=4) for e in range(6)]
    [6, 4, 2, 2, 1, 1]
    """
    epoch = check_int(epoch, "epoch", minimum=0)
    count = check_int(count, "count", minimum=1)
    t_i = check_int(t_i, "t_i", minimum=0)
    t_f = check_int(t_f, "t_f", minimum=0)
    if t_f <= t_i:
        raise ValueError(f"t_f must be larger than t_i, got t_i={t_i}, t_f={t_f}")
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not p > 0:
        raise ValueError(f"p must be a positive number, got p={p!r}")
    if epoch <= t_i:
        return count
    if epoch >= t_f:
        return 1
    frac = 1.0 - (epoch - t_i) / (t_f - t_i)
    return 1 + math.ceil(round((count - 1) * frac**p, 9))


@kernel()
def _remove_worst(scores, tiebreak, alive, card):  # type: ignore[no-untyped-def]
    """In every group (row), remove the worst alive combination until ``card`` are left: the lowest
    score, among equal scores the lowest tiebreak, among those the highest index.

    ``O(C)`` per removed combination: a removal step of a training schedule takes out a few
    combinations per group. Sorting every group instead (numpy lexsort) made LBC(steps=) at 4:8
    6x slower per step than dense on MiniLM; this kernel runs the 54 removals of a 4:8 schedule on
    a 1536 x 384 layer in 2.2 s instead of 15.6 s, with the same alive sets.
    """
    groups, count = scores.shape
    for g in range(groups):
        left = 0
        for c in range(count):
            left += alive[g, c]
        while left > card:
            worst = -1
            for c in range(count):  # ascending: a later tie is the worse one
                if alive[g, c] and (
                    worst < 0
                    or scores[g, c] < scores[g, worst]
                    or (scores[g, c] == scores[g, worst] and tiebreak[g, c] <= tiebreak[g, worst])
                ):
                    worst = c
            alive[g, worst] = False
            left -= 1


class LBCState:
    """Learnable scores and alive sets of the ``C(m, n)`` combinations of every group of a layer.

    Parameters
    ----------
    groups_shape : tuple of int
        Shape of the grouped weight without the combination axis, e.g. ``(rows, cols // m)`` for a
        2-D weight grouped along its last axis (what :func:`nmsolve.combination_scores` returns
        without its last axis).
    n, m : int

    Attributes
    ----------
    scores : ndarray of float64, shape (*groups_shape, C)
        Initialised to ``1 / C(m - 1, n - 1)`` (the share each combination holds of a weight).
    alive : ndarray of bool, shape (*groups_shape, C)
        The explicit alive set (removal never sets a score to a sentinel value).

    Notes
    -----
    The training mask is the union of the alive combinations of a group. The straight-through
    gradient of score ``c`` is ``sum_{j in c} grad_j * w_j`` (:meth:`score_gradient`), with
    ``grad`` the gradient of the loss with respect to the masked weight. Scores are updated by
    plain gradient descent (:meth:`apply_gradient`), so a sum of step gradients applied at once is
    the same update as applying them one by one. Removal keeps the highest signed scores; among
    equal scores the higher ``tiebreak`` (if given), then the lower combination index is kept. Once
    one combination is left per group the mask is exact N:M and the scores freeze.

    Examples
    --------
    >>> import numpy as np
    >>> state = LBCState((1, 1), 2, 4)
    >>> state.apply_gradient(np.array([[[3.0, 0.0, 1.0, 2.0, 5.0, 4.0]]]), lr=0.1)
    >>> state.remove_to(2)
    >>> state.alive.astype(int), state.mask().astype(int)
    (array([[[0, 1, 1, 0, 0, 0]]]), array([[1, 0, 1, 1]]))
    >>> state.remove_to(1)
    >>> state.frozen, state.mask().astype(int)
    (True, array([[1, 0, 1, 0]]))
    """

    def __init__(self, groups_shape: tuple[int, ...], n: int, m: int) -> None:
        self.n, self.m = check_nm(n, m)
        self.table = combinations(self.n, self.m)
        count = len(self.table)
        shape = (*(check_int(s, "groups_shape entry", minimum=0) for s in groups_shape), count)
        self.scores = np.full(shape, 1.0 / math.comb(self.m - 1, self.n - 1), dtype=np.float64)
        self.alive = np.ones(shape, dtype=bool)

    @property
    def count(self) -> int:
        """C(m, n)."""
        return len(self.table)

    @property
    def alive_count(self) -> int:
        """Combinations still alive per group (the same in every group)."""
        return int(self.alive.reshape(-1, self.count)[0].sum()) if self.alive.size else 1

    @property
    def frozen(self) -> bool:
        """Whether exactly one combination is left per group (exact N:M, scores frozen)."""
        return self.alive_count == 1

    def score_gradient(self, grad: Any, weight: Any, *, axis: int = -1) -> np.ndarray:
        """``sum_{j in c} grad_j * w_j`` for every combination ``c`` of every group along ``axis``."""
        g = as_scores(grad, "grad")
        w = as_scores(weight, "weight")
        if g.shape != w.shape:
            raise ValueError(f"grad and weight must have one shape, got {g.shape} and {w.shape}")
        return combination_scores(g.astype(np.float64) * w, self.n, self.m, axis=axis)

    def apply_gradient(self, score_grad: Any, *, lr: float = 1.0) -> None:
        """``scores -= lr * score_grad`` on alive combinations (no-op once frozen)."""
        sg = as_scores(score_grad, "score_grad")
        if sg.shape != self.scores.shape:
            raise ValueError(f"score_grad has shape {sg.shape}, expected {self.scores.shape}")
        reject_nan(sg, "score_grad")
        if self.frozen:
            return
        self.scores -= float(lr) * np.where(self.alive, sg, 0.0)

    def remove_to(self, card: int, *, tiebreak: Any = None) -> None:
        """Keep the ``card`` highest-scoring alive combinations of every group (no-op if fewer alive).

        ``tiebreak`` (same shape as :attr:`scores`, optional) orders combinations of equal score:
        the higher value is kept (e.g. the combination's kept magnitude ``combination_scores(|W|)``);
        remaining ties keep the lower index.
        """
        card = check_int(card, "card", minimum=1)
        if tiebreak is not None:
            tiebreak = as_scores(tiebreak, "tiebreak")
            if tiebreak.shape != self.scores.shape:
                raise ValueError(f"tiebreak has shape {tiebreak.shape}, expected {self.scores.shape}")
            reject_nan(tiebreak, "tiebreak")
        if card >= self.alive_count or not self.alive.size:
            return
        second = np.zeros(self.scores.shape) if tiebreak is None else tiebreak
        alive = self.alive.reshape(-1, self.count).copy()
        _remove_worst(
            self.scores.reshape(-1, self.count),
            np.ascontiguousarray(second, np.float64).reshape(-1, self.count),
            alive,
            card,
        )
        self.alive = alive.reshape(self.alive.shape)

    def mask(self, *, axis: int = -1) -> np.ndarray:
        """Union of the alive combinations, with the grouped axis at ``axis`` (bool, weight-shaped)."""
        return combination_mask(self.alive, self.n, self.m, axis=axis)

    def selection(self) -> np.ndarray:
        """The combination index of every group once frozen, shape ``groups_shape``."""
        if not self.frozen:
            raise ValueError(f"{self.alive_count} combinations are still alive per group; selection needs 1")
        return np.argmax(self.alive, axis=-1)

    def load(self, scores: Any, alive: Any) -> None:
        """Restore saved ``scores`` and ``alive`` (shapes must match)."""
        s, a = as_scores(scores, "scores"), as_array(alive, "alive")
        if s.shape != self.scores.shape or a.shape != self.alive.shape:
            raise ValueError(f"saved LBC state has shapes {s.shape}/{a.shape}, expected {self.scores.shape}")
        self.scores = s.astype(np.float64, copy=True)
        self.alive = a.astype(bool, copy=True)


def _warmup() -> None:
    state = LBCState((2, 1), 2, 4)
    state.remove_to(2, tiebreak=np.arange(12.0).reshape(2, 1, 6))
