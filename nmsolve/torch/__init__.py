"""The thin torch adapter: attach N:M masks to ``nn.Module`` s and train with them.

``import nmsolve.torch`` imports torch (``import nmsolve`` never does). Names load lazily from the
submodules listed in ``_EXPORTS``; a training method is added by one line there.

* :func:`sparsify`, :func:`bake`, :func:`remove_masks`, :func:`get_masks`, :func:`load_state_dict`,
  :func:`to_semi_structured` (:mod:`nmsolve.torch.adapter`): one-shot masks on a model.
* :func:`prune_oneshot` (:mod:`nmsolve.torch.oneshot`): one-shot N:M pruning on calibration data, block by
  block (SparseGPT, Wanda, magnitude; weights updated in place); :func:`prune_model_folder`
  (:mod:`nmsolve.torch.model_folder`): the same for a Hugging Face model folder on calibration text,
  written as a new folder (the library behind ``nmsolve prune-model``); :func:`save_model_folder`: write a
  model (permuted, pruned) as a complete folder with the ``nmsolve_sparsity.json`` sidecar.
* :func:`permute_channels` (:mod:`nmsolve.torch.permute`): function-preserving channel permutations
  (MLP hidden units, attention value dimensions per head, conv channels through BatchNorm) chosen so
  that a later N:M pruning keeps more, N:M in stored order.
* :class:`SparseTraining` / :class:`NMTraining` (:mod:`nmsolve.torch.sparse_training`): the base of the
  training methods :class:`SRSTE`, :class:`LBC`, :class:`BiMask`, :class:`TransposableTraining`,
  :class:`SRigL`; :class:`Distillation` (:mod:`nmsolve.torch.distill`): a frozen dense teacher and the
  loss that recovers a pruned student from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch  # nmsolve.torch requires torch: fail here with the plain ImportError

from nmsolve._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "sparsify": "nmsolve.torch.adapter",
    "bake": "nmsolve.torch.adapter",
    "remove_masks": "nmsolve.torch.adapter",
    "get_masks": "nmsolve.torch.adapter",
    "load_state_dict": "nmsolve.torch.adapter",
    "to_semi_structured": "nmsolve.torch.adapter",
    "select_layers": "nmsolve.torch.adapter",
    "attach_mask": "nmsolve.torch.adapter",
    "MaskParametrization": "nmsolve.torch.adapter",
    "SparsityReport": "nmsolve.torch.adapter",
    "LayerReport": "nmsolve.torch.adapter",
    "SparseTraining": "nmsolve.torch.sparse_training",
    "NMTraining": "nmsolve.torch.sparse_training",
    "Layer": "nmsolve.torch.sparse_training",
    "SRigL": "nmsolve.torch.srigl",
    "CondensedLinear": "nmsolve.torch.srigl",
    "condense_model": "nmsolve.torch.srigl",
    "SRSTE": "nmsolve.torch.srste",
    "LBC": "nmsolve.torch.lbc",
    "BiMask": "nmsolve.torch.bimask",
    "TransposableTraining": "nmsolve.torch.transposable",
    "Distillation": "nmsolve.torch.distill",
    "prune_oneshot": "nmsolve.torch.oneshot",
    "OneShotReport": "nmsolve.torch.oneshot",
    "OneShotLayerReport": "nmsolve.torch.oneshot",
    "repeated_blocks": "nmsolve.torch.oneshot",
    "prune_model_folder": "nmsolve.torch.model_folder",
    "ModelPruneResult": "nmsolve.torch.model_folder",
    "save_model_folder": "nmsolve.torch.model_folder",
    "permute_channels": "nmsolve.torch.permute",
    "PermutationGroup": "nmsolve.torch.permute",
    "PermutationReport": "nmsolve.torch.permute",
    "PermutedGroup": "nmsolve.torch.permute",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from nmsolve.torch.adapter import (
        LayerReport,
        MaskParametrization,
        SparsityReport,
        attach_mask,
        bake,
        get_masks,
        load_state_dict,
        remove_masks,
        select_layers,
        sparsify,
        to_semi_structured,
    )
    from nmsolve.torch.bimask import BiMask
    from nmsolve.torch.distill import Distillation
    from nmsolve.torch.lbc import LBC
    from nmsolve.torch.model_folder import ModelPruneResult, prune_model_folder, save_model_folder
    from nmsolve.torch.oneshot import OneShotLayerReport, OneShotReport, prune_oneshot, repeated_blocks
    from nmsolve.torch.permute import PermutationGroup, PermutationReport, PermutedGroup, permute_channels
    from nmsolve.torch.sparse_training import Layer, NMTraining, SparseTraining
    from nmsolve.torch.srigl import CondensedLinear, SRigL, condense_model
    from nmsolve.torch.srste import SRSTE
    from nmsolve.torch.transposable import TransposableTraining
