"""Sparse-training methods: the numpy state machines and their torch hooks (CPU only)."""

import io
import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nmsolve
from nmsolve.training import Every, LBCState, lbc_cardinality, srste_gradient
from nmsolve.training.srste import magnitude_nm_into, srste_decay_into
from tests.reference import nm_mask_sorted

# --------------------------------------------------------------------------- LBC schedule (numpy)


def test_cardinality_by_hand():
    # C(4, 2) = 6, t_f = 4, p = 3: 1 + ceil(5 * (1 - e/4) ** 3)
    assert [lbc_cardinality(e, 6, t_f=4) for e in range(7)] == [6, 4, 2, 2, 1, 1, 1]
    # 4:8 has C = 70; p = 4 (ViT), t_f = 10, e = 5: 1 + ceil(69 * 0.5 ** 4) = 1 + ceil(4.3125) = 6
    assert lbc_cardinality(5, 70, t_f=10, p=4) == 6
    # t_i delays removal: nothing removed up to t_i, then the same curve shifted
    assert [lbc_cardinality(e, 6, t_i=2, t_f=6) for e in range(8)] == [6, 6, 6, 4, 2, 2, 1, 1]


@given(st.integers(1, 200), st.integers(0, 10), st.integers(1, 30), st.sampled_from([1, 2, 3, 4, 2.5]))
def test_cardinality_is_monotone_from_count_to_one(count, t_i, span, p):
    t_f = t_i + span
    cards = [lbc_cardinality(e, count, t_i=t_i, t_f=t_f, p=p) for e in range(t_f + 3)]
    assert cards[t_i] == count and cards[t_f] == 1
    assert all(1 <= c <= count for c in cards)
    assert all(a >= b for a, b in itertools.pairwise(cards))
    for e in range(t_i, t_f + 1):  # the formula itself
        expected = 1 + math.ceil(round((count - 1) * (1 - (e - t_i) / (t_f - t_i)) ** p, 9))
        assert cards[e] == expected


def test_cardinality_rejects_bad_schedules():
    with pytest.raises(ValueError, match="t_f must be larger than t_i"):
        lbc_cardinality(1, 6, t_i=3, t_f=3)
    with pytest.raises(ValueError, match="p must be a positive number"):
        lbc_cardinality(1, 6, t_f=3, p=0)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        lbc_cardinality(-1, 6, t_f=3)


# --------------------------------------------------------------------------- LBC state (numpy)


def alive_oracle(scores, alive, card, tiebreak=None):
    """Keep the card best alive combinations of every group, by sorting (-score, -tiebreak, index)."""
    out = np.zeros_like(alive)
    second = np.zeros_like(scores) if tiebreak is None else tiebreak
    for idx in np.ndindex(*scores.shape[:-1]):
        ranked = sorted(
            (c for c in range(scores.shape[-1]) if alive[idx + (c,)]),
            key=lambda c: (-scores[idx + (c,)], -second[idx + (c,)], c),
        )
        for c in ranked[:card]:
            out[idx + (c,)] = True
    return out


def union_oracle(alive, n, m):
    table = list(itertools.combinations(range(m), n))
    out = np.zeros((*alive.shape[:-2], alive.shape[-2] * m), dtype=bool)
    for idx in np.ndindex(*alive.shape[:-1]):
        for c, subset in enumerate(table):
            if alive[idx + (c,)]:
                for j in subset:
                    out[idx[:-1] + (idx[-1] * m + j,)] = True
    return out


@given(
    st.sampled_from([(2, 4), (1, 4), (3, 6), (2, 5)]),
    st.integers(1, 3),
    st.integers(1, 4),
    st.data(),
)
def test_lbc_removal_and_union_match_oracles(pattern, rows, groups, data):
    n, m = pattern
    state = LBCState((rows, groups), n, m)
    count = state.count
    # integer-valued gradients give many exact ties between scores
    grad = data.draw(hnp.arrays(np.float64, (rows, groups, count), elements=st.integers(-2, 2).map(float)))
    state.apply_gradient(grad, lr=0.5)
    alive_before = state.alive.copy()
    card = data.draw(st.integers(1, count))
    tiebreak = data.draw(
        st.none() | hnp.arrays(np.float64, (rows, groups, count), elements=st.integers(0, 2).map(float))
    )
    state.remove_to(card, tiebreak=tiebreak)
    np.testing.assert_array_equal(state.alive, alive_oracle(state.scores, alive_before, card, tiebreak))
    np.testing.assert_array_equal(state.mask(), union_oracle(state.alive, n, m))
    assert (state.alive.sum(-1) == card).all()
    # a second removal only ever removes alive combinations
    before = state.alive.copy()
    state.remove_to(max(1, card - 1))
    assert not (state.alive & ~before).any()


def test_lbc_alive_set_is_explicit_not_a_zero_score():
    state = LBCState((1, 1), 2, 4)
    state.scores[:] = 0.0  # scores of zero are still alive
    assert state.alive.all() and state.mask().all()
    state.remove_to(1)
    assert state.frozen and state.alive.sum() == 1 and state.scores.min() == 0.0
    frozen_scores = state.scores.copy()
    state.apply_gradient(np.ones((1, 1, 6)), lr=1.0)  # frozen: no change
    np.testing.assert_array_equal(state.scores, frozen_scores)
    assert state.selection().tolist() == [[0]]  # ties keep the lower index


def test_lbc_score_gradient_matches_the_formula():
    rng = np.random.default_rng(0)
    g, w = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    state = LBCState((3, 2), 2, 4)
    sg = state.score_gradient(g, w)
    for r, grp, (c, subset) in itertools.product(range(3), range(2), enumerate(itertools.combinations(range(4), 2))):
        assert sg[r, grp, c] == pytest.approx(sum(g[r, grp * 4 + j] * w[r, grp * 4 + j] for j in subset))
    assert state.scores[0, 0, 0] == pytest.approx(1 / math.comb(3, 1))


def test_lbc_state_rejects_bad_input():
    state = LBCState((2, 2), 2, 4)
    with pytest.raises(ValueError, match="score_grad has shape"):
        state.apply_gradient(np.zeros((2, 2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        state.apply_gradient(np.full((2, 2, 6), np.nan))
    with pytest.raises(ValueError, match="still alive"):
        state.selection()
    with pytest.raises(ValueError, match="card must be >= 1"):
        state.remove_to(0)


# --------------------------------------------------------------------------- SR-STE (numpy)


@given(hnp.arrays(np.float64, (3, 8), elements=st.floats(-1e3, 1e3)), st.floats(0, 1))
def test_srste_gradient_formula_and_fused_kernel(w, decay):
    g = np.linspace(-1, 1, w.size).reshape(w.shape)
    mask = nmsolve.magnitude_mask(w, 2, 4)
    g0, w0 = g.copy(), w.copy()
    out = srste_gradient(g, w, mask, decay=decay)
    np.testing.assert_allclose(out, g + decay * (1 - mask) * w)
    np.testing.assert_array_equal(g, g0)  # inputs untouched
    np.testing.assert_array_equal(w, w0)
    srste_decay_into(g, w, mask.astype(np.float64), decay)
    np.testing.assert_allclose(g, out)


def test_srste_gradient_rejects_bad_input():
    w = np.ones((2, 4))
    with pytest.raises(ValueError, match="one shape"):
        srste_gradient(np.ones((2, 3)), w, w)
    with pytest.raises(ValueError, match="NaN"):
        srste_gradient(np.full((2, 4), np.nan), w, w)
    with pytest.raises(ValueError, match="decay must be finite and >= 0"):
        srste_gradient(w, w, w, decay=-1.0)


@given(
    st.sampled_from([(2, 4), (1, 4), (3, 8), (5, 16)]),
    st.integers(0, 3),
    st.integers(1, 3),
    st.sampled_from([np.float32, np.float64]),
    st.data(),
)
def test_fused_magnitude_mask_matches_oracle(pattern, rows, groups, dtype, data):
    n, m = pattern
    w = data.draw(hnp.arrays(dtype, (rows, groups * m), elements=st.integers(-3, 3).map(float)))  # many ties
    mask, masked = np.empty_like(w), np.empty_like(w)
    magnitude_nm_into(w, n, m, mask, masked)
    np.testing.assert_array_equal(mask != 0, nm_mask_sorted(np.abs(w), n, m))
    np.testing.assert_array_equal(masked, w * mask)


def test_fused_magnitude_mask_many_blocks_and_nan():
    w = np.random.default_rng(3).normal(size=(2, 4 * 600)).astype(np.float32)  # > one block of 256 groups
    mask, masked = np.empty_like(w), np.empty_like(w)
    magnitude_nm_into(w, 2, 4, mask, masked)
    np.testing.assert_array_equal(mask != 0, nm_mask_sorted(np.abs(w), 2, 4))
    w[1, 7] = np.nan
    with pytest.raises(ValueError, match=r"NaN \(first at index \(1, 7\)\)"):
        magnitude_nm_into(w, 2, 4, mask, masked)


def test_every_schedule():
    assert [s for s in range(1, 13) if Every(4, start=2).due(s)] == [6, 10]
    with pytest.raises(ValueError, match="period must be >= 1"):
        Every(0)


# --------------------------------------------------------------------------- torch hooks

torch = pytest.importorskip("torch")
import nmsolve.torch as nt  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1, dtype=dtype)
        self.fc1 = torch.nn.Linear(8 * 4 * 4, 16, dtype=dtype)
        self.fc2 = torch.nn.Linear(16, 8, dtype=dtype)
        self.head = torch.nn.Linear(8, 3, dtype=dtype)

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def data(seed, batches=4):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(batches)]


def train(model, method, batches, *, epochs=1, lr=0.05, each_step=None):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            method.before_optimizer_step()
            opt.step()
            method.after_optimizer_step()
            if each_step is not None:
                each_step()
        method.end_epoch()
    return opt


def check_valid_and_cached(method):
    """Masks satisfy their pattern and every layer's weight is the current dense weight times its mask."""
    method.check()
    for lay in method:
        assert torch.equal(lay.module.weight, lay.weight * lay.mask)


def magnitude_oracle(weight, n, m):
    w = np.abs(weight.detach().double().numpy())
    mat, layout = nmsolve.weight_to_2d(w)
    return nmsolve.weight_from_2d(nm_mask_sorted(mat, n, m), layout)


@pytest.mark.parametrize(
    ("n", "m", "dtype"),
    [(2, 4, torch.float32), (1, 4, torch.float32), (2, 4, torch.float64), (2, 4, torch.bfloat16)],  # bf16: torch path
)
def test_srste_masks_are_magnitude_nm_after_every_step(n, m, dtype):
    torch.manual_seed(0)
    model = Net(dtype=dtype)
    method = nt.SRSTE(model, n, m, exclude="head")

    def check():
        method.check()
        for layer in method:
            np.testing.assert_array_equal(layer.mask.float().numpy() != 0, magnitude_oracle(layer.weight, n, m))
            assert torch.equal(layer.module.weight, layer.weight * layer.mask)

    check()
    train(model, method, [(x.to(dtype), y) for x, y in data(1)], each_step=check)
    assert method.step == 4 and method.epoch == 1
    masks = method.bake()
    for name, mask in masks.items():
        assert torch.equal(getattr(model, name).weight != 0, mask != 0)


def test_srste_gradient_is_straight_through_plus_decay_once():
    torch.manual_seed(0)
    model = Net()
    method = nt.SRSTE(model, 2, 4, decay=0.01, include="fc*")
    x, y = data(2, 1)[0]
    # reference: gradient with respect to the masked weights, by plain autograd
    masked = {lay.name: (lay.weight * lay.mask).detach().requires_grad_() for lay in method}

    def ref_forward(inp):
        h = torch.relu(model.conv(inp)).flatten(1)
        h = torch.relu(torch.nn.functional.linear(h, masked["fc1"], model.fc1.bias))
        h = torch.relu(torch.nn.functional.linear(h, masked["fc2"], model.fc2.bias))
        return model.head(h)

    torch.nn.functional.cross_entropy(ref_forward(x), y).backward()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    method.before_optimizer_step()
    for lay in method:
        expected = masked[lay.name].grad + 0.01 * (1 - lay.mask) * lay.weight
        torch.testing.assert_close(lay.weight.grad, expected)
        assert torch.any(lay.weight.grad[lay.mask == 0] != 0)  # pruned weights learn (straight through)


def test_lbc_score_gradient_by_hand_on_a_tiny_layer():
    lin = torch.nn.Linear(4, 1, bias=False)
    w = [0.5, -1.0, 2.0, 0.25]
    x = [1.0, 2.0, -1.0, 3.0]
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([w]))
    method = nt.LBC(lin, 2, 4, epochs=4, score_lr=0.1)
    loss = lin(torch.tensor([x])).square().sum()  # all combinations alive: the mask is dense
    loss.backward()
    method.before_optimizer_step()
    torch.optim.SGD(lin.parameters(), lr=0.5).step()  # the weights change; scores use the old ones
    method.after_optimizer_step()
    y = sum(wi * xi for wi, xi in zip(w, x, strict=True))  # 0.5 - 2 - 2 + 0.75 = -2.75
    grad = [2 * y * xi for xi in x]  # dL/dw_j of (w . x)^2
    expected = [1 / 3 - 0.1 * sum(grad[j] * w[j] for j in subset) for subset in itertools.combinations(range(4), 2)]
    np.testing.assert_allclose(method.scores("")[0, 0], expected, rtol=1e-6)
    # w * x = [0.5, -2, -2, 0.75] sums to y = -2.75: keeping the two positive terms {0, 3} shrinks y^2
    # most, and removing {1, 2} would be worst
    assert int(np.argmax(method.scores("")[0, 0])) == 2 and int(np.argmin(method.scores("")[0, 0])) == 3


def test_lbc_schedule_alive_sets_and_freezing():
    torch.manual_seed(0)
    model = Net()
    method = nt.LBC(model, 2, 4, epochs=6, exclude="head")  # t_f = 3
    assert method.t_f == 3
    batches = data(3, 3)
    previous = {name: mask.clone() for name, mask in method.masks().items()}
    for epoch in range(1, 7):
        scores = {lay.name: method.scores(lay.name) for lay in method}
        alive = {lay.name: method.alive(lay.name) for lay in method}
        train(model, method, batches, each_step=lambda: check_valid_and_cached(method))
        card = lbc_cardinality(epoch, 6, t_f=3)
        for lay in method:
            state = lay.state["lbc"]
            assert (state.alive.sum(-1) == card).all()
            if card < alive[lay.name].sum(-1).max():  # removal this epoch: lowest signed scores went
                final = method.scores(lay.name)
                kept = nmsolve.combination_scores(np.abs(lay.weight.detach().numpy()), 2, 4, axis=1)
                np.testing.assert_array_equal(state.alive, alive_oracle(final, alive[lay.name], card, kept))
            else:
                assert np.array_equal(state.alive, alive[lay.name])
            assert not ((lay.mask != 0) & (previous[lay.name] == 0)).any()  # masks only shrink
            previous[lay.name] = lay.mask.clone()
        if epoch >= 3:
            assert method.frozen and method.report().masked[0].pattern == "2:4"
            for lay in method:
                assert nmsolve.is_nm(lay.mask.numpy(), 2, 4, axis=1, exact=True)
                if epoch > 3:  # frozen: scores no longer move
                    np.testing.assert_array_equal(method.scores(lay.name), scores[lay.name])
    method.bake()
    assert nmsolve.is_nm(model.fc1.weight.detach().numpy(), 2, 4, exact=True)


def test_lbc_counted_in_steps_equals_one_step_epochs():
    """LBC(steps=S) removes exactly when LBC(epochs=S) with one step per epoch does: same masks and scores."""
    runs = []
    for unit in ("epochs", "steps"):
        torch.manual_seed(0)
        model = Net()
        method = nt.LBC(model, 2, 4, exclude="head", **{unit: 8})
        history = []
        for batch in data(6, 8):
            train(model, method, [batch])  # one step, then end_epoch (a no-op for a schedule in steps)
            method.check()
            history.append({lay.name: (lay.mask.clone(), method.scores(lay.name)) for lay in method})
        assert method.frozen and method.t_f == 4
        runs.append(history)
    alive_counts = set()
    for by_epoch, by_step in zip(*runs, strict=True):
        for name, (mask, scores) in by_epoch.items():
            torch.testing.assert_close(by_step[name][0], mask)
            np.testing.assert_array_equal(by_step[name][1], scores)
            alive_counts.add(int(mask.sum()))
    assert len(alive_counts) > 2  # the masks shrank over several removals, not in one jump


def test_lbc_without_score_gradient_ends_at_the_magnitude_mask():
    """A zero loss (a student equal to its teacher) leaves every score equal: ties go to the kept |W|."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    dense = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    method = nt.LBC(model, 2, 4, steps=6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(6):
        loss = 0.0 * model(torch.randn(4, 16)).sum()
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step()
        opt.step()
        method.after_optimizer_step()
    assert method.frozen
    for lay, w in zip(method, dense, strict=True):
        np.testing.assert_array_equal(lay.mask.numpy() != 0, nmsolve.nm_mask(np.abs(w.numpy()), 2, 4, axis=1))


def test_lbc_magnitude_init_starts_from_kept_magnitude_by_hand():
    lin = torch.nn.Linear(4, 1, bias=False)
    w = [0.5, -1.0, 2.0, 0.25]
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([w]))
    method = nt.LBC(lin, 2, 4, epochs=4, init="magnitude")
    mean = sum(abs(v) for v in w) / 4  # 0.9375; C(3, 1) = 3 combinations hold each weight
    expected = [1 / 3 + (abs(w[i]) + abs(w[j])) / (mean * 3) for i, j in itertools.combinations(range(4), 2)]
    np.testing.assert_allclose(method.scores("")[0, 0], expected, rtol=1e-12)


def test_lbc_magnitude_init_keeps_a_one_shot_start_that_the_gradient_does_not_argue_against():
    """From weights already pruned to an N:M mask (zeros elsewhere, as prune_oneshot leaves them), LBC
    with init="magnitude" and no score learning ends exactly at that mask, although the pruned weights
    regrow through the straight-through gradient; the paper's uniform start does not keep it."""
    torch.manual_seed(0)
    endings = {}
    for init in ("uniform", "magnitude"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
        start = {}
        with torch.no_grad():
            for i in (0, 2):
                keep = nmsolve.nm_mask(np.random.default_rng(i).random(model[i].weight.shape), 2, 4, axis=1)
                model[i].weight.mul_(torch.from_numpy(keep))
                start[i] = keep
        method = nt.LBC(model, 2, 4, steps=10, init=init, score_lr=0.0 if init == "magnitude" else 1.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(10):
            loss = model(torch.randn(16, 16)).square().mean()
            opt.zero_grad()
            loss.backward()
            method.before_optimizer_step()
            opt.step()
            method.after_optimizer_step()
        assert method.frozen
        endings[init] = [np.array_equal(lay.mask.numpy() != 0, start[i]) for lay, i in zip(method, (0, 2), strict=True)]
    assert endings["magnitude"] == [True, True]
    assert endings["uniform"] == [False, False]


def test_lbc_init_is_checked():
    with pytest.raises(ValueError, match="init must be 'uniform' or 'magnitude', got init='wanda'"):
        nt.LBC(Net(), epochs=4, init="wanda")


def test_lbc_tiebreak_is_checked():
    state = LBCState((1, 2), 2, 4)
    with pytest.raises(ValueError, match=r"tiebreak has shape \(1, 6\), expected \(1, 2, 6\)"):
        state.remove_to(2, tiebreak=np.zeros((1, 6)))
    with pytest.raises(ValueError, match="NaN"):
        state.remove_to(2, tiebreak=np.full((1, 2, 6), np.nan))


def test_lbc_needs_exactly_one_length():
    with pytest.raises(TypeError, match="exactly one of epochs= or steps="):
        nt.LBC(Net())
    with pytest.raises(TypeError, match="exactly one of epochs= or steps="):
        nt.LBC(Net(), epochs=4, steps=100)
    with pytest.raises(ValueError, match="steps"):
        nt.LBC(Net(), steps=0)


@pytest.mark.parametrize("kind", ["srste", "lbc"])
def test_method_state_dict_resumes_training_exactly(kind):
    def build(seed):
        torch.manual_seed(seed)
        model = Net()
        method = nt.SRSTE(model, 2, 4, include="fc*") if kind == "srste" else nt.LBC(model, 2, 4, epochs=4)
        return model, method

    model, method = build(0)
    opt = train(model, method, data(4, 2), epochs=2)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "method": method.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)
    model2, method2 = build(1)
    model2.load_state_dict(saved["model"])
    method2.load_state_dict(saved["method"])
    assert method2.step == method.step and method2.epoch == method.epoch
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05, momentum=0.9)
    opt2.load_state_dict(saved["opt"])
    # one more identical epoch on both
    for m_, meth, o in ((model, method, opt), (model2, method2, opt2)):
        for x, y in data(5, 2):
            loss = torch.nn.functional.cross_entropy(m_(x), y)
            o.zero_grad()
            loss.backward()
            meth.before_optimizer_step()
            o.step()
            meth.after_optimizer_step()
        meth.end_epoch()
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    with pytest.raises(ValueError, match="saved by method"):
        method2.load_state_dict({**saved["method"], "method": "other"})


def test_method_rejects_bad_arguments_and_use_after_bake():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        nt.SRSTE("model")
    with pytest.raises(ValueError, match="decay must be finite"):
        nt.SRSTE(Net(), decay=-1.0)
    with pytest.raises(ValueError, match="t_f must be larger than t_i"):
        nt.LBC(Net(), epochs=4, t_i=3, t_f=2)
    with pytest.raises(TypeError, match="pad is not supported"):
        nt.LBC(Net(), epochs=4, pad=True)
    method = nt.SRSTE(Net())
    method.bake()
    with pytest.raises(RuntimeError, match="baked or removed"):
        method.after_optimizer_step()


def test_skipped_layers_are_reported():
    method = nt.SRSTE(Net(), dense_first_last=True)
    report = method.report()
    assert [r.name for r in report.masked] == ["fc1", "fc2"]
    assert {r.name: r.reason for r in report.skipped} == {
        "conv": "first layer kept dense",
        "head": "last layer kept dense",
    }
    assert 0.5 < report.density < 1.0


# --------------------------------------------------------------------------- Bi-Mask and transposable


def _has(name):
    from nmsolve.torch.adapter import require

    try:
        require(name)
    except RuntimeError:
        return False
    return True


needs_bimask = pytest.mark.skipif(
    not (_has("bimask_permutation") and _has("bimask_masks")), reason="nmsolve.bimask_* not available yet"
)
needs_transposable = pytest.mark.skipif(not _has("transposable_mask"), reason="nmsolve.transposable_mask not available")


@needs_bimask
def test_bimask_backward_mask_reaches_the_input_gradient_linear():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    method = nt.BiMask(lin, 2, 4, candidates=8, decay=0.01, rng=0)
    layer = method.layers[""]
    w, fwd, back = layer.weight.detach(), layer.mask, layer.param.backward_mask
    assert not torch.equal(fwd, back)  # B keeps fewer weights than F
    x = torch.randn(5, 3, 16, requires_grad=True)
    gy = torch.randn(5, 3, 8)
    y = lin(x)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, w * fwd, lin.bias))
    y.backward(gy)
    torch.testing.assert_close(x.grad, gy @ (w * back))
    assert not torch.allclose(x.grad, gy @ (w * fwd))
    method.before_optimizer_step()
    dense_grad = gy.reshape(-1, 8).T @ x.detach().reshape(-1, 16)
    torch.testing.assert_close(layer.weight.grad, dense_grad + 0.01 * (1 - fwd) * w)
    torch.testing.assert_close(lin.bias.grad, gy.sum((0, 1)))


@needs_bimask
def test_bimask_backward_mask_reaches_the_input_gradient_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, stride=2)
    method = nt.BiMask(conv, 2, 4, candidates=8, rng=0)
    layer = method.layers[""]
    w, fwd, back = layer.weight.detach(), layer.mask, layer.param.backward_mask
    x = torch.randn(2, 8, 7, 7, requires_grad=True)
    y = conv(x)
    gy = torch.randn_like(y)
    y.backward(gy)
    ref_x = x.detach().clone().requires_grad_()
    ref_w = w.clone().requires_grad_()
    ref = torch.nn.functional.conv2d(ref_x, ref_w * back, conv.bias, stride=2, padding=1)
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x.detach(), w * fwd, conv.bias, stride=2, padding=1))
    ref.backward(gy)
    torch.testing.assert_close(x.grad, ref_x.grad)
    torch.testing.assert_close(layer.weight.grad, _dense_conv_grad(x, w, gy))  # dense, straight through


def _dense_conv_grad(x, w, gy):
    w = w.clone().requires_grad_()
    torch.nn.functional.conv2d(x.detach(), w, None, stride=2, padding=1).backward(gy)
    return w.grad


@needs_bimask
def test_bimask_training_keeps_valid_masks_and_refreshes_on_schedule():
    torch.manual_seed(0)
    model = Net()
    method = nt.BiMask(model, 2, 4, period=3, candidates=4, rng=0, exclude="head")
    calls = []
    search = method._search
    method._search = lambda *a, **k: calls.append(method.step) or search(*a, **k)

    def check():
        method.check()
        for lay in method:
            assert torch.equal(lay.mask != 0, torch.from_numpy(magnitude_oracle(lay.weight, 2, 4)))
            back = lay.param.backward_mask
            assert not ((back != 0) & (lay.mask == 0)).any()

    train(model, method, data(6, 7), each_step=check)
    assert calls == [3] * 3 + [6] * 3  # three layers, searched again after steps 3 and 6
    method.bake()
    assert "forward" not in model.fc1.__dict__
    assert nmsolve.is_nm(model.fc1.weight.detach().numpy(), 2, 4, exact=True)


@needs_bimask
def test_bimask_masks_survive_state_dict_round_trip():
    torch.manual_seed(0)
    model = Net()
    method = nt.BiMask(model, 2, 4, candidates=4, rng=0, include="fc*")
    train(model, method, data(7, 2))
    fresh = Net()
    nt.load_state_dict(fresh, model.state_dict())
    for name in ("fc1", "fc2"):
        a, b = getattr(model, name).parametrizations.weight[0], getattr(fresh, name).parametrizations.weight[0]
        assert torch.equal(a.mask, b.mask) and torch.equal(a.backward_mask, b.backward_mask)


@needs_transposable
@pytest.mark.parametrize("solver", ["approx", "mcf"])
def test_transposable_masks_valid_and_fixed_between_recomputations(solver):
    torch.manual_seed(0)
    model = Net()
    method = nt.TransposableTraining(model, 2, 4, every=3, solver=solver, exclude="head")
    assert {r.name for r in method.report().masked} == {"conv", "fc1", "fc2"}
    history = [method.masks()]

    def check():
        check_valid_and_cached(method)
        for lay in method:
            mat, _ = nmsolve.weight_to_2d(lay.mask.numpy())
            assert nmsolve.is_nm(mat, 2, 4) and nmsolve.is_nm(mat.T, 2, 4)
        history.append(method.masks())

    train(model, method, data(8, 7), each_step=check)
    for step in range(1, 8):
        if step % 3:
            for name in history[step]:
                assert torch.equal(history[step][name], history[step - 1][name])


@needs_transposable
def test_transposable_exact_solver_keeps_at_least_as_much_as_approx():
    torch.manual_seed(0)
    lin_a, lin_b = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)
    lin_b.load_state_dict(lin_a.state_dict())
    exact = nt.TransposableTraining(lin_a, 2, 4, solver="mcf").report().masked[0].kept_fraction
    approx = nt.TransposableTraining(lin_b, 2, 4, solver="approx").report().masked[0].kept_fraction
    assert exact >= approx - 1e-9


def test_square_group_methods_skip_ragged_layers():
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 4))
    if _has("transposable_mask"):
        report = nt.TransposableTraining(model, 2, 4).report()
        assert [r.name for r in report.masked] == []
        assert "not a multiple of m=4 on both axes" in report.skipped[0].reason
    with pytest.raises(TypeError, match="pad is not supported"):
        nt.TransposableTraining(model, 2, 4, pad=True)
