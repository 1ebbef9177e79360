"""Read, prune and write checkpoints (.safetensors, .npz, torch .pt state dicts), one tensor at a time.

Sharded checkpoints (``model.safetensors.index.json`` and its shards, or the folder holding them)
are read one shard at a time and written back with the same sharding.

This is the library behind ``nmsolve prune`` and ``nmsolve report`` (the command line itself lives
in :mod:`nmsolve.cli`); it never parses arguments or prints.

* :mod:`~nmsolve.checkpoint.formats`: :func:`open_checkpoint` and :func:`write_checkpoint`, the
  readers and writers of each format, atomic writing, dtype codes. Knows nothing about pruning.
* :mod:`~nmsolve.checkpoint.prune`: which tensors are pruned, the mask methods, and
  :func:`prune_checkpoint`.
* :mod:`~nmsolve.checkpoint.report`: :func:`checkpoint_report`, how far each weight is from N:M and
  what each method would keep.

Examples
--------
>>> import numpy as np, tempfile, os
>>> folder = tempfile.mkdtemp()
>>> np.savez(os.path.join(folder, "in.npz"), fc=np.arange(1.0, 9.0).reshape(1, 8))
>>> result = prune_checkpoint(os.path.join(folder, "in.npz"), os.path.join(folder, "out.npz"), n=2, m=4)
>>> with open_checkpoint(os.path.join(folder, "out.npz")) as ckpt:
...     ckpt.read("fc")
array([[0., 0., 3., 4., 0., 0., 7., 8.]])
"""

from nmsolve.checkpoint.formats import CheckpointError, TensorInfo, open_checkpoint, write_checkpoint
from nmsolve.checkpoint.prune import (
    DEFAULT_EXCLUDE,
    MASK_METHODS,
    LayerPrune,
    MaskMethod,
    PruneResult,
    mask_methods,
    prune_checkpoint,
)
from nmsolve.checkpoint.report import DEFAULT_REPORT_METHODS, CheckpointReport, LayerReport, checkpoint_report

__all__ = [
    "DEFAULT_EXCLUDE",
    "DEFAULT_REPORT_METHODS",
    "MASK_METHODS",
    "CheckpointError",
    "CheckpointReport",
    "LayerPrune",
    "LayerReport",
    "MaskMethod",
    "PruneResult",
    "TensorInfo",
    "checkpoint_report",
    "mask_methods",
    "open_checkpoint",
    "prune_checkpoint",
    "write_checkpoint",
]
