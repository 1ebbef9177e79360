"""Framework-agnostic state of the sparse-training methods (numpy only; no torch).

* :mod:`nmsolve.training.srste`: the SR-STE gradient ``g + lambda * (1 - mask) * W``.
* :mod:`nmsolve.training.lbc`: LBC combination scores, alive sets and the removal schedule.
* :mod:`nmsolve.training.srigl`: SRigL's update schedule and per-layer constant fan-in state.
* :mod:`nmsolve.training.schedule`: step schedules (Bi-Mask permutation refresh every T
  iterations, transposable mask recomputation every k steps).

The torch hooks in :mod:`nmsolve.torch` drive these objects from a training loop.
"""

from __future__ import annotations

from nmsolve.training.lbc import LBCState, lbc_cardinality
from nmsolve.training.schedule import Every
from nmsolve.training.srigl import SRigLSchedule, SRigLState
from nmsolve.training.srste import SRSTE_DECAY, srste_gradient

__all__ = [
    "SRSTE_DECAY",
    "Every",
    "LBCState",
    "SRigLSchedule",
    "SRigLState",
    "lbc_cardinality",
    "srste_gradient",
]
