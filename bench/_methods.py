"""Registry of the sparse-training methods that bench_training and bench_overhead compare.

One entry per method: ``name -> Method(factory, settings)``. ``factory(model, setting, ctx)``
attaches the method to ``model`` and returns it; ``setting`` is a pattern ``"n:m"`` or a sparsity
``"90%"``; ``ctx`` carries the run's epochs, steps per epoch and optimizer. Adding a method is one
line in ``METHODS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Context:
    """What a factory may need besides the model: training length and the optimizer."""

    epochs: int
    steps_per_epoch: int
    optimizer: Any = None
    exclude: tuple[str, ...] = ()
    seed: int = 0

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class Method:
    factory: Callable[[Any, str, Context], Any]
    settings: tuple[str, ...] = ("2:4", "1:4")
    note: str = ""


def optimizer_step(loss: Any, optimizer: Any, method: Any) -> float:
    """One step of the documented training loop: backward, then ``optimizer.step()`` between the
    method's two hooks (``method`` None: a dense step). Returns the seconds spent in the hooks (the
    method's mask maintenance; 0 for a dense step)."""
    optimizer.zero_grad()
    loss.backward()
    if method is None:
        optimizer.step()
        return 0.0
    start = time.perf_counter()
    method.before_optimizer_step()
    hooks = time.perf_counter() - start
    optimizer.step()
    start = time.perf_counter()
    method.after_optimizer_step()
    return hooks + time.perf_counter() - start


def nm(setting: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``."""
    n, m = setting.split(":")
    return int(n), int(m)


def sparsity(setting: str) -> float:
    """Fraction of zeros: ``"2:4"`` -> 0.5, ``"90%"`` -> 0.9."""
    if setting.endswith("%"):
        return float(setting[:-1]) / 100
    n, m = nm(setting)
    return 1 - n / m


def _srste(model: Any, s: str, ctx: Context) -> Any:
    from nmsolve.torch import SRSTE

    return SRSTE(model, *nm(s), exclude=ctx.exclude)


def _lbc(model: Any, s: str, ctx: Context) -> Any:
    from nmsolve.torch import LBC

    return LBC(model, *nm(s), epochs=ctx.epochs, exclude=ctx.exclude)


def _bimask(model: Any, s: str, ctx: Context) -> Any:
    from nmsolve.torch import BiMask

    return BiMask(model, *nm(s), rng=ctx.seed, exclude=ctx.exclude)


def _transposable(model: Any, s: str, ctx: Context, solver: str = "approx") -> Any:
    from nmsolve.torch import TransposableTraining

    return TransposableTraining(model, *nm(s), every=40, solver=solver, exclude=ctx.exclude)


def _srigl(model: Any, s: str, ctx: Context) -> Any:
    from nmsolve.torch import SRigL

    delta = min(100, max(1, ctx.steps_per_epoch))  # the published delta T = 100; once per epoch on short runs
    return SRigL(
        model,
        sparsity(s),
        t_end=max(int(0.75 * ctx.steps), delta + 1),  # updates stop at 75% of training (at least one update)
        delta=delta,
        optimizer=ctx.optimizer,
        rng=ctx.seed,
        exclude=ctx.exclude,
        ablate_last=bool(ctx.exclude),  # the classifier is excluded, so the last sparse layer is hidden
    )


METHODS: dict[str, Method] = {
    "SR-STE": Method(_srste),
    "LBC": Method(_lbc),
    "Bi-Mask": Method(_bimask, note="T=100, K=100"),
    "transposable": Method(_transposable, note="approx, every 40 steps"),
    "transposable (mcf)": Method(lambda *a: _transposable(*a, solver="mcf"), ("2:4",), note="exact, every 40 steps"),
    "SRigL": Method(
        _srigl,
        settings=("2:4", "1:4", "90%"),
        note="constant fan-in at the same density (2:4 = 50%, 1:4 = 75% sparse), alpha=0.3, gamma_sal=0.3, "
        "delta T = min(100, steps per epoch), updates until 75% of the steps",
    ),
}
