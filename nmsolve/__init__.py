"""nmsolve: combinatorial solvers for N:M sparsity masks. numpy in, numpy out.

Public names are loaded lazily on first use (PEP 562), so ``import nmsolve`` stays fast and never
imports numba kernels, scipy or torch until a solver is called. The torch adapter lives in
``nmsolve.torch`` and is imported only explicitly.

Examples
--------
>>> import numpy as np, nmsolve
>>> w = np.array([[0.5, -2.0, 1.0, 0.1]])
>>> nmsolve.magnitude_mask(w, n=2, m=4).astype(int)
array([[0, 1, 1, 0]])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (add new public functions here)
_EXPORTS: dict[str, str] = {
    "warmup": "nmsolve._jit",
    "nm_mask": "nmsolve.nm",
    "magnitude_mask": "nmsolve.nm",
    "is_nm": "nmsolve.nm",
    "combinations": "nmsolve.nm",
    "combination_scores": "nmsolve.nm",
    "best_combination": "nmsolve.nm",
    "combination_mask": "nmsolve.nm",
    "weight_to_2d": "nmsolve.layout",
    "weight_from_2d": "nmsolve.layout",
    "apply_2d": "nmsolve.layout",
    "WeightLayout": "nmsolve.layout",
    "kept_magnitude": "nmsolve.metrics",
    "kept_fraction": "nmsolve.metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nmsolve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers see ordinary imports
    from nmsolve._jit import warmup
    from nmsolve.layout import WeightLayout, apply_2d, weight_from_2d, weight_to_2d
    from nmsolve.metrics import kept_fraction, kept_magnitude
    from nmsolve.nm import (
        best_combination,
        combination_mask,
        combination_scores,
        combinations,
        is_nm,
        magnitude_mask,
        nm_mask,
    )
