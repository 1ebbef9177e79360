"""Every boolean option of a public function is checked with ``nmsolve._validate.check_bool`` (issue 13).

Truthiness is not enough: ``progress="no"`` or ``pad="no"`` would silently mean True. Each flag must
refuse a non-bool with a TypeError naming the option and the value, before any work or any write.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nmsolve
from nmsolve.checkpoint import TensorInfo
from nmsolve.training.srigl import SRigLState

W = np.arange(1.0, 65.0).reshape(8, 8) % 7 + 1


def _npz(tmp_path: Any) -> str:
    path = os.path.join(tmp_path, "in.npz")
    np.savez(path, fc=W)
    return path


NUMPY_FLAGS: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "nm_mask.pad": ("pad", lambda v, tmp: nmsolve.nm_mask(W, 2, 4, pad=v)),
    "magnitude_mask.pad": ("pad", lambda v, tmp: nmsolve.magnitude_mask(W, 2, 4, pad=v)),
    "is_nm.exact": ("exact", lambda v, tmp: nmsolve.is_nm(W != 0, 2, 4, exact=v)),
    "is_nm.pad": ("pad", lambda v, tmp: nmsolve.is_nm(W != 0, 2, 4, pad=v)),
    "transposable_mask.pad": ("pad", lambda v, tmp: nmsolve.transposable_mask(W, pad=v)),
    "transposable_mask.progress": ("progress", lambda v, tmp: nmsolve.transposable_mask(W, progress=v)),
    "transposable_report.pad": ("pad", lambda v, tmp: nmsolve.transposable_report(W, pad=v)),
    "transposable_report.progress": ("progress", lambda v, tmp: nmsolve.transposable_report(W, progress=v)),
    "is_transposable.exact": ("exact", lambda v, tmp: nmsolve.is_transposable(W != 0, 2, 4, exact=v)),
    "is_transposable.pad": ("pad", lambda v, tmp: nmsolve.is_transposable(W != 0, 2, 4, pad=v)),
    "bimask_masks.pad": ("pad", lambda v, tmp: nmsolve.bimask_masks(W, 2, 4, np.arange(8), pad=v)),
    "bimask_permutation.pad": ("pad", lambda v, tmp: nmsolve.bimask_permutation(W, 2, 4, pad=v)),
    "bimask_permutation.progress": ("progress", lambda v, tmp: nmsolve.bimask_permutation(W, 2, 4, progress=v)),
    "bimask_permutation.local_search": (
        "local_search",
        lambda v, tmp: nmsolve.bimask_permutation(W, 2, 4, local_search=v),
    ),
    "bimask_permutation.include_identity": (
        "include_identity",
        lambda v, tmp: nmsolve.bimask_permutation(W, 2, 4, include_identity=v),
    ),
    "channel_permutation.progress": ("progress", lambda v, tmp: nmsolve.channel_permutation(W, 2, 4, progress=v)),
    "channel_permutation.refine": ("refine", lambda v, tmp: nmsolve.channel_permutation(W, 2, 4, refine=v)),
    "is_constant_fanin.allow_ablated": (
        "allow_ablated",
        lambda v, tmp: nmsolve.is_constant_fanin(W != 0, allow_ablated=v),
    ),
    "unstructured_to_nm.permute": ("permute", lambda v, tmp: nmsolve.unstructured_to_nm(W, n=2, m=4, permute=v)),
    "unstructured_to_nm.progress": ("progress", lambda v, tmp: nmsolve.unstructured_to_nm(W, n=2, m=4, progress=v)),
    "SRigLState.start.ablate": ("ablate", lambda v, tmp: SRigLState.start(W, 0.5, ablate=v)),
    "checkpoint_report.progress": ("progress", lambda v, tmp: nmsolve.checkpoint_report(_npz(tmp), progress=v)),
    "prune_checkpoint.progress": (
        "progress",
        lambda v, tmp: nmsolve.prune_checkpoint(_npz(tmp), os.path.join(tmp, "out.npz"), progress=v),
    ),
    "prune_checkpoint.overwrite": (
        "overwrite",
        lambda v, tmp: nmsolve.prune_checkpoint(_npz(tmp), os.path.join(tmp, "out.npz"), overwrite=v),
    ),
    "write_checkpoint.overwrite": (
        "overwrite",
        lambda v, tmp: nmsolve.write_checkpoint(
            os.path.join(tmp, "out.npz"), [TensorInfo("fc", (8, 8), "F64")], [W], overwrite=v
        ),
    ),
}


@pytest.mark.parametrize("value", ["yes", "no", 1, None])
@pytest.mark.parametrize("case", sorted(NUMPY_FLAGS))
def test_numpy_bool_flags_refuse_non_bools(case, value, tmp_path):
    option, call = NUMPY_FLAGS[case]
    with pytest.raises(TypeError) as err:
        call(value, str(tmp_path))
    assert f"{option} must be True or False, got {value!r}" in str(err.value)
    assert not os.path.exists(os.path.join(tmp_path, "out.npz")), "nothing may be written after a refused flag"


@pytest.mark.parametrize("case", sorted(NUMPY_FLAGS))
def test_numpy_bool_flags_accept_numpy_bools(case, tmp_path):
    _, call = NUMPY_FLAGS[case]
    call(np.False_, str(tmp_path))


# --------------------------------------------------------------------------- torch adapter

TORCH_FLAGS = [
    "sparsify.pad",
    "sparsify.dense_first_last",
    "select_layers.dense_first_last",
    "attach_mask.straight_through",
    "MaskParametrization.straight_through",
    "load_state_dict.strict",
    "NMTraining.pad",
    "SRSTE.dense_first_last",
    "SRigL.ablate_last",
    "Distillation.hidden_states",
]


def _torch_call(case: str, value: Any) -> tuple[Any, Callable[[], Any]]:
    torch = pytest.importorskip("torch")
    import nmsolve.torch as nt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    calls: dict[str, Callable[[], Any]] = {
        "sparsify.pad": lambda: nt.sparsify(model, 2, 4, pad=value),
        "sparsify.dense_first_last": lambda: nt.sparsify(model, 2, 4, dense_first_last=value),
        "select_layers.dense_first_last": lambda: nt.select_layers(model, dense_first_last=value),
        "attach_mask.straight_through": lambda: nt.attach_mask(model[0], torch.ones(8, 8), straight_through=value),
        "MaskParametrization.straight_through": lambda: nt.MaskParametrization(
            torch.ones(8, 8), straight_through=value
        ),
        "load_state_dict.strict": lambda: nt.load_state_dict(model, model.state_dict(), strict=value),
        "NMTraining.pad": lambda: nt.SRSTE(model, 2, 4, pad=value),
        "SRSTE.dense_first_last": lambda: nt.SRSTE(model, 2, 4, dense_first_last=value),
        "SRigL.ablate_last": lambda: nt.SRigL(model, 0.5, t_end=10, ablate_last=value),
        "Distillation.hidden_states": lambda: nt.Distillation(model, hidden_states=value),
    }
    return model, calls[case]


@pytest.mark.parametrize("value", ["yes", 0])
@pytest.mark.parametrize("case", TORCH_FLAGS)
def test_torch_bool_flags_refuse_non_bools_and_leave_the_model_alone(case, value):
    model, call = _torch_call(case, value)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    option = case.split(".")[-1]
    with pytest.raises(TypeError) as err:
        call()
    assert f"{option} must be True or False, got {value!r}" in str(err.value)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch_equal(after[k], before[k]) for k in before)


def torch_equal(a: Any, b: Any) -> bool:
    import torch

    return bool(torch.equal(a, b))
