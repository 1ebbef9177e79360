"""The tensor <-> numpy boundary of the torch adapter: the only place where tensors become arrays."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from nmsolve._validate import as_array


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A read-only-by-convention numpy view (CPU float32 tensors: no copy) of ``tensor``'s values.

    float16/bfloat16 are widened to float32 (exact), other devices are copied to the host.
    """
    t = tensor.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.cpu().numpy()


def to_mask(mask: Any, like: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """A numpy (or torch) mask as a tensor on ``like``'s device and dtype (1 = kept, 0 = pruned)."""
    if isinstance(mask, torch.Tensor):
        return mask.to(device=like.device, dtype=like.dtype)
    arr = as_array(mask, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be a boolean or numeric array or tensor (1 = kept, 0 = pruned), got {mask!r:.80} of "
            f"dtype {arr.dtype}"
        )
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device=like.device, dtype=like.dtype)


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Keep torch's intra-op thread count across nmsolve's compiled kernels.

    numba's OpenMP threading layer sets the OpenMP thread count of the calling thread before each
    parallel kernel, and torch reads that count as its own: without this, a user's
    ``torch.set_num_threads(1)`` silently became 2 after one mask computation (measured: the forward
    passes that followed ran 4.7x slower on a busy 2-core machine).
    """
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
