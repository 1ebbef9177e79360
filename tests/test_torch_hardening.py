"""Hardening of the torch adapter (issue 13): .data writes, ConvTranspose, foreign parametrizations,
LBC bake before the end of its schedule, SRigL on layers without a gradient."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nmsolve.torch as nt  # noqa: E402
from nmsolve.nm import is_nm  # noqa: E402


def _lbc_steps(model, method, steps=2):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        loss = model(torch.randn(8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step()
        opt.step()
        method.after_optimizer_step()


# --------------------------------------------------------------------------- item 9: LBC bake early


def test_lbc_bake_before_the_schedule_ends_gives_exact_nm_from_the_best_combination():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    method = nt.LBC(model, 2, 4, epochs=10)
    _lbc_steps(model, method)
    method.end_epoch()  # epoch 1 of t_f = 5: several combinations still alive
    assert not method.frozen
    scores = {lay.name: method.scores(lay.name) for lay in method}
    alive = {lay.name: method.alive(lay.name) for lay in method}
    dense = {lay.name: lay.weight.detach().clone() for lay in method}
    masks = method.bake()
    for name in ("0", "2"):
        w = model.get_submodule(name).weight.detach()
        mask = masks[name].numpy() != 0
        assert is_nm(mask, 2, 4, axis=1, exact=True)
        np.testing.assert_array_equal(w.numpy(), (dense[name] * masks[name]).numpy())
        # the kept combination is the highest-scoring alive one of each group
        best = np.where(alive[name], scores[name], -np.inf).argmax(-1)
        from nmsolve.combination import combination_mask

        chosen = np.zeros_like(alive[name])
        np.put_along_axis(chosen, best[..., None], True, axis=-1)
        np.testing.assert_array_equal(mask, combination_mask(chosen, 2, 4, axis=1))
    method.check()  # the baked masks are exact 2:4
