"""Permutation searches for N:M sparsity, one module per family.

* :mod:`nmsolve.permutation.bimask`, **Bi-Mask** (:func:`bimask_permutation`, :func:`bimask_masks`):
  a permutation of the *output rows* of ``W[out, in]`` so that a backward mask ``B``, N:M along the
  output axis in permuted order and a subset of the forward N:M mask ``F``, keeps as much of ``F``
  as possible.
* :mod:`nmsolve.permutation.channel`, **channel permutations** (:func:`channel_permutation`): a
  permutation of the *input columns* of ``W[out, in]`` that raises the magnitude an N:M mask along
  ``in`` keeps; its methods are listed in ``nmsolve.permutation.channel.METHODS``.

The public names are re-exported here, so ``nmsolve.permutation.bimask_permutation`` and the others
keep working.
"""

from nmsolve.permutation.bimask import BiMaskResult, bimask_masks, bimask_permutation
from nmsolve.permutation.channel import ChannelPermutationResult, channel_permutation

__all__ = ["BiMaskResult", "ChannelPermutationResult", "bimask_masks", "bimask_permutation", "channel_permutation"]
