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

from typing import TYPE_CHECKING

from nmsolve._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it (add new public functions here)
_EXPORTS: dict[str, str] = {
    "warmup": "nmsolve._jit",
    "nm_mask": "nmsolve.nm",
    "magnitude_mask": "nmsolve.nm",
    "is_nm": "nmsolve.nm",
    "combinations": "nmsolve.combination",
    "combination_scores": "nmsolve.combination",
    "best_combination": "nmsolve.combination",
    "combination_mask": "nmsolve.combination",
    "weight_to_2d": "nmsolve.layout",
    "weight_from_2d": "nmsolve.layout",
    "apply_2d": "nmsolve.layout",
    "WeightLayout": "nmsolve.layout",
    "kept_magnitude": "nmsolve.metrics",
    "kept_fraction": "nmsolve.metrics",
    "fanin_mask": "nmsolve.fanin.mask",
    "fanin_for_sparsity": "nmsolve.fanin.mask",
    "is_constant_fanin": "nmsolve.fanin.mask",
    "CondensedMatrix": "nmsolve.fanin.condensed",
    "condense": "nmsolve.fanin.condensed",
    "condensed_linear": "nmsolve.fanin.condensed",
    "cosine_drop_fraction": "nmsolve.fanin.rigl",
    "rigl_update": "nmsolve.fanin.rigl",
    "RigLStep": "nmsolve.fanin.rigl",
    "mask_diversity": "nmsolve.diversity",
    "MaskDiversity": "nmsolve.diversity",
    "transposable_tile_count": "nmsolve.diversity",
    "transposable_tile_log10": "nmsolve.diversity",
    "prune_checkpoint": "nmsolve.checkpoint",
    "checkpoint_report": "nmsolve.checkpoint",
    "open_checkpoint": "nmsolve.checkpoint",
    "write_checkpoint": "nmsolve.checkpoint",
    "transposable_mask": "nmsolve.transposable",
    "is_transposable": "nmsolve.transposable",
    "transposable_report": "nmsolve.transposable",
    "TransposableResult": "nmsolve.transposable",
    "bimask_permutation": "nmsolve.permutation.bimask",
    "bimask_masks": "nmsolve.permutation.bimask",
    "BiMaskResult": "nmsolve.permutation.bimask",
    "channel_permutation": "nmsolve.permutation.channel",
    "ChannelPermutationResult": "nmsolve.permutation.channel",
    "unstructured_to_nm": "nmsolve.convert",
    "ConversionResult": "nmsolve.convert",
    "expected_retention": "nmsolve.convert",
    "prune_layer": "nmsolve.oneshot",
    "LayerPruneResult": "nmsolve.oneshot",
    "layer_error": "nmsolve.oneshot",
    "refine_mask": "nmsolve.oneshot",
    "RefineResult": "nmsolve.oneshot",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static analysers see ordinary imports
    from nmsolve._jit import warmup
    from nmsolve.checkpoint import checkpoint_report, open_checkpoint, prune_checkpoint, write_checkpoint
    from nmsolve.combination import best_combination, combination_mask, combination_scores, combinations
    from nmsolve.convert import ConversionResult, expected_retention, unstructured_to_nm
    from nmsolve.diversity import MaskDiversity, mask_diversity, transposable_tile_count, transposable_tile_log10
    from nmsolve.fanin.condensed import CondensedMatrix, condense, condensed_linear
    from nmsolve.fanin.mask import fanin_for_sparsity, fanin_mask, is_constant_fanin
    from nmsolve.fanin.rigl import RigLStep, cosine_drop_fraction, rigl_update
    from nmsolve.layout import WeightLayout, apply_2d, weight_from_2d, weight_to_2d
    from nmsolve.metrics import kept_fraction, kept_magnitude
    from nmsolve.nm import is_nm, magnitude_mask, nm_mask
    from nmsolve.oneshot import LayerPruneResult, RefineResult, layer_error, prune_layer, refine_mask
    from nmsolve.permutation.bimask import BiMaskResult, bimask_masks, bimask_permutation
    from nmsolve.permutation.channel import ChannelPermutationResult, channel_permutation
    from nmsolve.transposable import TransposableResult, is_transposable, transposable_mask, transposable_report
