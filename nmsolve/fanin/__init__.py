"""Constant fan-in masks, the condensed format, and the SRigL / RigL mask update on numpy arrays.

Constant fan-in (SRigL, Lasby et al. 2024) is N:M sparsity with ``m`` the whole fan-in: every *active*
output row keeps exactly ``k`` inputs, and a row may also be *ablated* (keep nothing). One module
per part:

* :mod:`nmsolve.fanin.mask`: the masks (:func:`fanin_mask`, :func:`fanin_for_sparsity`,
  :func:`is_constant_fanin`);
* :mod:`nmsolve.fanin.condensed`: the **condensed format**, per active row its ``k`` values and their
  ``k`` column indices, so ``x @ W.T`` becomes a gather and a row-wise dot product
  (:class:`CondensedMatrix`, :func:`condense`, :func:`condensed_linear`);
* :mod:`nmsolve.fanin.rigl`: the SRigL mask update (:func:`rigl_update`, :class:`RigLStep`) and
  RigL's drop-fraction schedule (:func:`cosine_drop_fraction`).

Rows are the first axis and the fan-in is everything else flattened, as in torch
(``weight[out, in]`` or a conv ``weight[out, in, kh, kw]`` with fan-in ``in * kh * kw``). The public
names are re-exported here, so ``nmsolve.fanin.fanin_mask`` and the others keep working.
"""

from nmsolve.fanin.condensed import CondensedMatrix, condense, condensed_linear
from nmsolve.fanin.mask import fanin_for_sparsity, fanin_mask, is_constant_fanin
from nmsolve.fanin.rigl import RigLStep, cosine_drop_fraction, rigl_update

__all__ = [
    "CondensedMatrix",
    "RigLStep",
    "condense",
    "condensed_linear",
    "cosine_drop_fraction",
    "fanin_for_sparsity",
    "fanin_mask",
    "is_constant_fanin",
    "rigl_update",
]
