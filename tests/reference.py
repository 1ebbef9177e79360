"""Slow, obviously-correct oracles that the fast kernels are tested against.

Each oracle works group by group in plain Python. Keep them simple rather than fast; add new ones
with small, local edits (several solvers share this file).
"""

from __future__ import annotations

import itertools

import numpy as np


def nm_mask_sorted(x: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M along the last axis by definition: sort each group by (-score, index), keep the first n.

    A ragged last group keeps min(n, len) entries.
    """
    x = np.asarray(x)
    out = np.zeros(x.shape, dtype=bool)
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx]
        for start in range(0, len(row), m):
            group = list(range(start, min(start + m, len(row))))
            ranked = sorted(group, key=lambda i: (-row[i].item(), i))
            for i in ranked[: min(n, len(group))]:
                out[idx + (i,)] = True
    return out


def nm_mask_subsets(x: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M along the last axis by enumeration: the max-sum subset of each group (itertools.combinations,
    first in lexicographic order among equal sums). Exact for integer-valued scores."""
    x = np.asarray(x)
    out = np.zeros(x.shape, dtype=bool)
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx]
        for start in range(0, len(row), m):
            best, best_sum = None, None
            for subset in itertools.combinations(range(start, start + m), n):
                total = sum(row[i].item() for i in subset)
                if best_sum is None or total > best_sum:
                    best, best_sum = subset, total
            for i in best:
                out[idx + (i,)] = True
    return out
