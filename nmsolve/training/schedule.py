"""Step schedules of the training methods (framework-agnostic)."""

from __future__ import annotations

from dataclasses import dataclass

from nmsolve._validate import check_int


@dataclass(frozen=True)
class Every:
    """Fire every ``period`` steps: after steps ``start + period``, ``start + 2 * period``, ...

    Used for the Bi-Mask permutation refresh (``period=T=100`` iterations) and the transposable
    mask recomputation (every ``k`` steps). Steps count finished optimiser steps from 1.

    Examples
    --------
    >>> s = Every(3)
    >>> [step for step in range(1, 10) if s.due(step)]
    [3, 6, 9]
    """

    period: int
    start: int = 0

    def __post_init__(self) -> None:
        check_int(self.period, "period", minimum=1)
        check_int(self.start, "start", minimum=0)

    def due(self, step: int) -> bool:
        """Whether the action runs after finished step ``step``."""
        return step > self.start and (step - self.start) % self.period == 0
