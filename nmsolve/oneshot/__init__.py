"""One-shot pruning on the layer-reconstruction objective: SparseGPT, Wanda, exact re-fits, refinement.

Each solver sees one layer ``W[out, in]`` and the Gram matrix ``H = X^T X`` of its calibration inputs;
the torch driver that collects ``H`` block by block is :func:`nmsolve.torch.prune_oneshot`.
"""

from nmsolve.oneshot._common import layer_error
from nmsolve.oneshot.layer import METHODS, LayerPruneResult, prune_layer
from nmsolve.oneshot.refine import RefineResult, refine_mask

__all__ = ["METHODS", "LayerPruneResult", "RefineResult", "layer_error", "prune_layer", "refine_mask"]
