"""Property-based fuzzing of every public name in ``nmsolve.torch.__all__`` (issue 13, "the class fix").

Each public function (classes through their constructors or the functions that make them) is called
on tiny models built from Linear / Conv2d / ConvTranspose2d / Embedding layers in float16, bfloat16,
float32 or float64, with normal, NaN, inf or zero weights, contiguous or not, and with fuzzed
arguments: ``n``/``m`` of the wrong type or not dividing the layers, ``include``/``types``/``method``
of the wrong type or naming nothing. The outcome must be a correct result (N:M masks where a mask was
attached) or a ValueError / TypeError whose message names the offending value or argument; never
another exception type, and never a model changed by a call that failed (its ``state_dict`` and its
parametrizations are compared before and after).

``CALLS`` maps every public name to how it is called; ``test_every_public_torch_name_is_fuzzed``
keeps it complete.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import nmsolve.torch as nt  # noqa: E402
from nmsolve.nm import is_nm  # noqa: E402

# as the "ci" profile of tests/conftest.py: derandomized and small (a few seconds in all); the "thorough"
# profile (HYPOTHESIS_PROFILE=thorough) explores with fresh random examples
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
FUZZ = settings(
    max_examples=300 if THOROUGH else 30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not THOROUGH,
    database=None,
    print_blob=True,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
LAYERS = ["linear8", "linear6", "linear4x3", "conv", "convT", "embedding"]
VALUES = ["normal", "nan", "inf", "zeros"]
GOOD_NM = [(2, 4), (1, 4), (4, 8), (1, 2)]
BAD_NM = [(2, 3), (0, 4), (5, 4), (2.0, 4), ("2", 4), (True, 4), (None, 4), (2, np.int64(4)), (np.int32(2), 4)]


@dataclass(frozen=True)
class Spec:
    """A tiny model (built fresh per call) and the arguments to fuzz."""

    layers: tuple[str, ...]
    dtype: torch.dtype
    values: str
    strided: bool
    n: Any
    m: Any
    include: Any
    types: Any
    method: Any
    seed: int
    bad: str = "nothing"  # the argument drawn from the bad values ("nm", "include", "types", "method")


def build(spec: Spec) -> nn.Module:
    torch.manual_seed(spec.seed)
    mods: list[nn.Module] = []
    for kind in spec.layers:
        if kind == "linear8":
            mods.append(nn.Linear(8, 8))
        elif kind == "linear6":
            mods.append(nn.Linear(6, 4))
        elif kind == "linear4x3":
            mods.append(nn.Linear(4, 3))
        elif kind == "conv":
            mods.append(nn.Conv2d(4, 8, 1))
        elif kind == "convT":
            mods.append(nn.ConvTranspose2d(8, 4, 1))
        else:
            mods.append(nn.Embedding(8, 4))
    model = nn.Sequential(*mods).to(spec.dtype)
    weighted = [m for m in model if isinstance(getattr(m, "weight", None), torch.Tensor)]
    with torch.no_grad():
        if spec.values == "zeros":
            for mod in weighted:
                mod.weight.zero_()
        elif spec.values in ("nan", "inf") and weighted:  # in the LAST layer: earlier ones are processed first
            weighted[-1].weight.view(-1)[1] = math.nan if spec.values == "nan" else math.inf
    if spec.strided:
        for mod in weighted:
            w = mod.weight.detach()
            # same shape and values, not contiguous: a transposed copy viewed back
            flipped = w.transpose(0, 1).contiguous().transpose(0, 1)
            mod.weight = nn.Parameter(flipped)
    return model


GOOD = {"include": [None, "*", ["0", "1"], ("*",)], "types": [None, (nn.Linear,), [nn.Linear, nn.Conv2d]]}
GOOD["method"] = ["nm", "transposable"]
BAD = {"include": [3, [3], b"0", "nothing*"], "types": [nn.Linear, (int,), (), "Linear", (nn.ConvTranspose2d,)]}
BAD["method"] = ["bogus", 3, None]


@st.composite
def specs(draw: Any) -> Spec:
    """A model and arguments of which at most one is bad, so that every example reaches some way in."""
    bad = draw(st.sampled_from(["nothing", "nm", "include", "types", "method"]))

    def pick(what: str) -> Any:
        return draw(st.sampled_from(BAD[what] if bad == what else GOOD[what]))

    n, m = draw(st.sampled_from(BAD_NM if bad == "nm" else GOOD_NM))
    return Spec(
        layers=tuple(draw(st.lists(st.sampled_from(LAYERS), min_size=0, max_size=3))),
        dtype=draw(st.sampled_from(DTYPES)),
        values=draw(st.sampled_from(VALUES)),
        strided=draw(st.booleans()),
        n=n,
        m=m,
        include=pick("include"),
        types=pick("types"),
        method=pick("method"),
        seed=draw(st.integers(0, 3)),
        bad=bad,
    )


def _kw(spec: Spec) -> dict[str, Any]:
    """include / types as keyword arguments (types=None: the default)."""
    kw: dict[str, Any] = {"include": spec.include}
    if spec.types is not None:
        kw["types"] = spec.types
    return kw


# --------------------------------------------------------------------------- the calls and their oracles


def _check_nm_masks(model: nn.Module, n: int, m: int) -> None:
    for name, mask in nt.get_masks(model).items():
        layer = model.get_submodule(name)
        axis = 0 if isinstance(layer, nn.ConvTranspose2d) else 1
        arr = mask.detach().float().cpu().numpy() != 0
        if arr.ndim > 2:  # channel-last view: groups along the input axis
            arr = np.moveaxis(arr, axis, -1).reshape(-1, arr.shape[axis])
            axis = 1
        assert is_nm(arr, n, m, axis=axis, pad=True), f"layer {name} is not {n}:{m}"


def _sparsify(model: nn.Module, s: Spec) -> Any:
    report = nt.sparsify(model, s.n, s.m, method=s.method, **_kw(s))
    _check_nm_masks(model, s.n, s.m)
    assert {r.name for r in report.layers if r.masked} == set(nt.get_masks(model))
    return report


def _premask(model: nn.Module) -> None:
    """Random 0/1 masks on every Linear (the state that bake, remove_masks, get_masks... start from)."""
    gen = torch.Generator().manual_seed(0)
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            nt.attach_mask(mod, (torch.rand(mod.weight.shape, generator=gen) > 0.5).to(mod.weight.dtype))


def _bake(model: nn.Module, s: Spec) -> Any:
    dense = {name: w.detach().clone() for name, w in _dense(model).items()}
    masks = nt.bake(model)
    for name, mask in masks.items():
        w = model.get_submodule(name).weight
        expected = torch.where(mask == 0, torch.zeros_like(mask), dense[name] * mask)
        torch.testing.assert_close(w.detach(), expected, equal_nan=True)
    assert not nt.get_masks(model)


def _dense(model: nn.Module) -> dict[str, torch.Tensor]:
    masked = nt.get_masks(model)
    return {name: model.get_submodule(name).parametrizations.weight.original for name in masked}


def _remove(model: nn.Module, s: Spec) -> Any:
    dense = {name: w.detach().clone() for name, w in _dense(model).items()}
    nt.remove_masks(model)
    for name, w in dense.items():
        assert torch.equal(model.get_submodule(name).weight.detach().nan_to_num(), w.nan_to_num())


def _load_state_dict(model: nn.Module, s: Spec) -> Any:
    source = build(s)
    nt.sparsify(source, 2, 4, types=(nn.Linear,), include=s.include if isinstance(s.include, str) else None)
    nt.load_state_dict(model, source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key].nan_to_num(), value.nan_to_num()), key


def _load_foreign(model: nn.Module, s: Spec) -> Any:
    """A state dict from another architecture (or not a mapping of tensors at all)."""
    other = {"0.parametrizations.weight.original": torch.zeros(3, 3), "0.parametrizations.weight.0.mask": 1}
    return nt.load_state_dict(model, other if s.seed % 2 else {"x": s.include})


def _to_semi(model: nn.Module, s: Spec) -> Any:
    return nt.to_semi_structured(model, include=s.include)


def _training(cls: Callable[..., Any], **extra: Any) -> Callable[[nn.Module, Spec], Any]:
    def call(model: nn.Module, s: Spec) -> Any:
        method = cls(model, s.n, s.m, **extra, **_kw(s))
        for layer in method.layers.values():
            assert method.is_valid(layer), layer.name
        if s.values != "nan":  # the report's kept magnitude of NaN weights is refused (the model is set up)
            method.report()
        return method

    return call


def _srigl(model: nn.Module, s: Spec) -> Any:
    sparsity = s.n / s.m if isinstance(s.n, int) and isinstance(s.m, int) and s.m else s.n
    method = nt.SRigL(model, sparsity, t_end=10, init="magnitude" if s.seed % 2 else "random", rng=0, **_kw(s))
    for layer in method.layers.values():  # exact zeros outside the mask (an inf weight must not become NaN)
        assert not (layer.weight.detach()[layer.mask == 0] != 0).any(), layer.name
    if s.values != "nan":
        method.report()
    return method


def _condense(model: nn.Module, s: Spec) -> Any:
    outcome = nt.condense_model(model, include=s.include)
    for name, what in outcome.items():
        assert what == "condensed" or isinstance(what, str), name


def _attach(model: nn.Module, s: Spec) -> Any:
    for mod in model.modules():
        if isinstance(getattr(mod, "weight", None), torch.Tensor):
            nt.attach_mask(mod, s.include if s.seed % 2 else torch.ones(mod.weight.shape))


def _parametrization(model: nn.Module, s: Spec) -> Any:
    mask = torch.ones(3, 3) if s.bad == "nothing" else s.include  # a bad mask: include's value
    p = nt.MaskParametrization(mask, straight_through=s.seed % 2 == 0)
    return p(torch.ones(3, 3))


def _select(model: nn.Module, s: Spec) -> Any:
    chosen, skipped = nt.select_layers(model, **_kw(s))
    assert {name for name, _ in chosen}.isdisjoint(r.name for r in skipped)


def _forward(model: nn.Module) -> torch.Tensor | None:
    """The model's output on a fixed input fitting its first layer (None when the layers do not chain)."""
    first = next((mod for mod in model if isinstance(getattr(mod, "weight", None), torch.Tensor)), None)
    if first is None:
        return None
    gen = torch.Generator().manual_seed(0)
    if isinstance(first, nn.Embedding):
        x = torch.randint(0, first.num_embeddings, (3,), generator=gen)
    elif isinstance(first, nn.Linear):
        x = torch.randn(3, first.in_features, generator=gen).to(first.weight.dtype)
    else:
        x = torch.randn(1, first.weight.shape[0 if isinstance(first, nn.ConvTranspose2d) else 1], 2, 2, generator=gen)
        x = x.to(first.weight.dtype)
    try:
        with torch.no_grad():
            return model(x).double()
    except RuntimeError:
        return None


def _permute(model: nn.Module, s: Spec, groups: Any = "auto") -> Any:
    """permute_channels (a bad method is passed as scores): the outputs stay the same."""
    scores = "magnitude" if s.method in GOOD["method"] else s.method
    before = _forward(model)
    report = nt.permute_channels(model, s.n, s.m, scores=scores, groups=groups, include=s.include, progress=False)
    for g in report.groups:
        assert sorted(g.permutation.tolist()) == list(range(g.permutation.size))
        assert g.kept_after >= g.kept_before
    after = _forward(model)
    if before is not None and after is not None:
        half = s.dtype in (torch.float16, torch.bfloat16)
        tol = 2e-2 if half else 1e-4
        torch.testing.assert_close(after, before, rtol=tol, atol=tol, equal_nan=True)
    str(report)
    return report


def _permutation_group(model: nn.Module, s: Spec) -> Any:
    """A user-given group: the bad include value as its consumers."""
    consumers = s.include if s.bad == "include" else ("1",)
    return _permute(model, s, groups=[nt.PermutationGroup(producers=("0",), consumers=consumers)])


def _save_folder(model: nn.Module, s: Spec) -> Any:
    """save_model_folder with a stand-in save_pretrained: the sidecar lists exactly the N:M layers."""
    import tempfile
    from pathlib import Path

    def save_pretrained(folder: Any, **options: Any) -> None:
        torch.save(model.state_dict(), Path(folder) / "pytorch_model.bin")

    model.save_pretrained = save_pretrained  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source"
        source.mkdir()
        (source / "config.json").write_text("{}")
        sidecar = nt.save_model_folder(model, source, Path(tmp) / "out", n=s.n, m=s.m)
        assert (Path(tmp) / "out" / "nmsolve_sparsity.json").is_file()
    listed = {entry["module"] for entry in sidecar["layers"]}
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            w = mod.weight.detach().float().numpy()
            w = np.moveaxis(w, 1, -1).reshape(-1, w.shape[1]) if w.ndim > 2 else w
            fits = w.shape[1] % s.m == 0 and is_nm(w, s.n, s.m)
            assert (name in listed) == fits, name


def _input(model: nn.Module) -> torch.Tensor | None:
    """A batch the model's forward takes (None when its layers do not chain)."""
    first = next((mod for mod in model if isinstance(getattr(mod, "weight", None), torch.Tensor)), None)
    if first is None or _forward(model) is None:
        return None
    gen = torch.Generator().manual_seed(1)
    if isinstance(first, nn.Embedding):
        return torch.randint(0, first.num_embeddings, (4,), generator=gen)
    if isinstance(first, nn.Linear):
        return torch.randn(4, first.in_features, generator=gen).to(first.weight.dtype)
    channels = first.weight.shape[0 if isinstance(first, nn.ConvTranspose2d) else 1]
    return torch.randn(1, channels, 2, 2, generator=gen).to(first.weight.dtype)


def _distill(model: nn.Module, s: Spec) -> Any:
    """Distillation (a bad method is passed as the loss): the untrained student's loss is 0 on finite weights."""
    loss = s.method if s.method not in GOOD["method"] else ("mse" if s.method == "nm" else "cosine")
    distill = nt.Distillation(model, loss=loss)
    x = _input(model)
    if x is not None:
        value = distill(x)
        assert value.dim() == 0 and value.dtype in (torch.float32, torch.float64)
        if s.values == "normal" and loss == "mse":
            assert value.item() == 0.0, value  # the student is the teacher until it is trained
    return distill


def _oneshot(model: nn.Module, s: Spec) -> Any:
    """prune_oneshot (a bad method is passed as structure): the layers it reports are N:M as stored."""
    import dataclasses

    structure = s.method if s.method not in GOOD["method"] else ("nm" if s.method == "nm" else "transposable")
    x = _input(model)
    if x is None:  # the layers do not chain: nothing to run; still check the arguments and blocks
        return nt.repeated_blocks(model, include=s.include)
    before = _state(model)
    try:
        report = nt.prune_oneshot(model, [x], s.n, s.m, method="magnitude", structure=structure, include=s.include)
    except ValueError as err:
        # documented refusals that are not about the argument drawn bad: prune_oneshot takes no types, and
        # a model without Linear layers (m not dividing nothing) has nothing to prune
        nothing = "no Linear layer to prune" in str(err) and s.bad in ("nothing", "nm", "types")
        if s.bad != "types" and not nothing:
            raise
        assert nothing or _names_the_value(str(err), dataclasses.replace(s, bad="nothing")), str(err)
        assert _same(before, _state(model)), f"prune_oneshot changed the model and then failed: {err}"
        return None
    for layer in report.layers:
        w = model.get_submodule(layer.name).weight.detach().float().numpy()
        assert is_nm(w, s.n, s.m), layer.name
    str(report)
    return report


_FOLDER: dict[str, Any] = {}


def _tiny_bert_folder() -> Any:
    """A tiny Hugging Face BERT folder and calibration text, written once per session."""
    if "path" not in _FOLDER:
        import tempfile
        from pathlib import Path

        transformers = pytest.importorskip("transformers")
        folder = Path(tempfile.mkdtemp(prefix="nmsolve-fuzz-")) / "model"
        folder.mkdir()
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "a", "mat"]
        (folder / "vocab.txt").write_text("\n".join(words) + "\n")
        transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
        config = transformers.BertConfig(
            vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
        torch.manual_seed(0)
        transformers.BertModel(config).save_pretrained(folder)
        (folder.parent / "calib.txt").write_text("the cat sat on a mat\na cat sat\n")
        _FOLDER["path"] = folder
    return _FOLDER["path"]


def _model_folder(model: nn.Module, s: Spec) -> Any:
    """prune_model_folder on a tiny BERT folder (the fuzzed model is not used: it must stay unchanged)."""
    import tempfile
    from pathlib import Path

    folder = _tiny_bert_folder()
    include = s.include if s.bad == "include" else "encoder.*"  # the good values name the fuzzed model's layers
    with tempfile.TemporaryDirectory() as tmp:
        result = nt.prune_model_folder(
            folder, Path(tmp) / "out", folder.parent / "calib.txt", s.n, s.m, method="magnitude", include=include
        )
        listed = {entry["module"] for entry in result.sparsity["layers"]}
        assert {layer.name for layer in result.report.layers} <= listed
    return result


# name -> (call(model, spec), what is done to the model first: "" nothing, "masked" random masks on its
# Linear layers, "baked" those masks baked)
CALLS: dict[str, tuple[Callable[[nn.Module, Spec], Any], str]] = {
    "sparsify": (_sparsify, ""),
    "SparsityReport": (_sparsify, ""),
    "LayerReport": (_sparsify, ""),
    "select_layers": (_select, ""),
    "bake": (_bake, "masked"),
    "remove_masks": (_remove, "masked"),
    "get_masks": (lambda model, s: nt.get_masks(model), "masked"),
    "load_state_dict": (_load_state_dict, ""),
    "to_semi_structured": (_to_semi, ""),
    "attach_mask": (_attach, ""),
    "MaskParametrization": (_parametrization, ""),
    "SparseTraining": (_training(nt.NMTraining), ""),
    "NMTraining": (_training(nt.NMTraining), ""),
    "Layer": (_training(nt.NMTraining), ""),
    "SRSTE": (_training(nt.SRSTE), ""),
    "LBC": (_training(nt.LBC, epochs=4), ""),
    "BiMask": (_training(nt.BiMask, rng=0), ""),
    "TransposableTraining": (_training(nt.TransposableTraining, solver="approx"), ""),
    "SRigL": (_srigl, ""),
    "CondensedLinear": (_condense, "baked"),
    "condense_model": (_condense, "baked"),
    "permute_channels": (_permute, ""),
    "PermutationReport": (_permute, ""),
    "PermutedGroup": (_permute, ""),
    "PermutationGroup": (_permutation_group, ""),
    "save_model_folder": (_save_folder, "baked"),
    "prune_oneshot": (_oneshot, ""),
    "OneShotReport": (_oneshot, ""),
    "OneShotLayerReport": (_oneshot, ""),
    "Distillation": (_distill, ""),
    "repeated_blocks": (lambda model, s: nt.repeated_blocks(model, include=s.include), ""),
    "prune_model_folder": (_model_folder, ""),
    "ModelPruneResult": (_model_folder, ""),
}
EXTRA = {"load_state_dict (foreign)": (_load_foreign, "")}


def test_every_public_torch_name_is_fuzzed():
    assert sorted(CALLS) == sorted(nt.__all__), "add the new public name to CALLS in tests/test_fuzz_torch.py"


def _state(model: nn.Module) -> dict[str, Any]:
    out: dict[str, Any] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out["__modules__"] = [(name, type(mod).__name__) for name, mod in model.named_modules()]
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys() or a["__modules__"] != b["__modules__"]:
        return False
    return all(
        k == "__modules__" or (a[k].dtype == b[k].dtype and torch.equal(a[k].nan_to_num(), b[k].nan_to_num()))
        for k in a
    )


def _names_the_value(message: str, s: Spec) -> bool:
    """The message names the bad argument or shows its value (repr or str); with no bad argument, it
    names what in the model was wrong (a layer, NaN, a key of the state dict) or the pattern."""
    tokens = ["NaN"] if s.values == "nan" else []  # a NaN weight may be met before a bad argument
    tokens += ["state_dict", "mask"]  # the own arguments of load_state_dict and attach_mask, fuzzed there
    if s.bad == "nm":
        tokens += [f"n={s.n}", f"m={s.m}", "n must", "m must", "sparsity"]
        tokens += [repr(v) for v in (s.n, s.m) if type(v) is not int]  # e.g. "got 2.0 of type float"
    elif s.bad == "nothing":
        tokens += ["layer '", "state_dict", f"n={s.n}", f"m={s.m}", f"{s.n}:{s.m}", "sparsity", "include"]
    else:
        value = getattr(s, s.bad)
        tokens += [s.bad, repr(value), str(value)]
    return any(t in message for t in tokens)


def _run(name: str, spec: Spec) -> None:
    call, setup = {**CALLS, **EXTRA}[name]
    model = build(spec)
    if setup:
        _premask(model)
    if setup == "baked":
        nt.bake(model)
    before = _state(model)
    try:
        with np.errstate(all="ignore"):
            call(model, spec)
    except RuntimeError as err:  # documented: semi-structured export needs a CUDA GPU (or masks baked first)
        assert name == "to_semi_structured", repr(err)
        assert "CUDA" in str(err) or "bake" in str(err), repr(err)
        assert _same(before, _state(model)), f"{name} changed the model and then failed: {err}"
    except (ValueError, TypeError) as err:
        event(type(err).__name__)
        message = str(err)
        assert _names_the_value(message, spec), f"{name}: the message does not say what was wrong: {message!r}"
        assert _same(before, _state(model)), f"{name} changed the model and then failed: {message}"
    else:
        event("result")


@pytest.mark.parametrize("name", sorted({**CALLS, **EXTRA}))
@FUZZ
@given(spec=specs())
def test_fuzz_torch(name, spec):
    _run(name, spec)


MODEL_CALLS = {
    "sparsify": lambda x: nt.sparsify(x),
    "select_layers": lambda x: nt.select_layers(x),
    "bake": lambda x: nt.bake(x),
    "remove_masks": lambda x: nt.remove_masks(x),
    "get_masks": lambda x: nt.get_masks(x),
    "load_state_dict": lambda x: nt.load_state_dict(x, {}),
    "to_semi_structured": lambda x: nt.to_semi_structured(x),
    "condense_model": lambda x: nt.condense_model(x),
    "SRSTE": lambda x: nt.SRSTE(x),
    "SRigL": lambda x: nt.SRigL(x, t_end=10),
    "permute_channels": lambda x: nt.permute_channels(x),
}


@pytest.mark.parametrize("name", sorted(MODEL_CALLS))
@pytest.mark.parametrize("model", [None, "model", {"0.weight": 1}])
def test_a_model_that_is_not_a_module_is_refused_naming_it(name, model):
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got"):
        MODEL_CALLS[name](model)


def _nan_in_last_layer() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    with torch.no_grad():
        model[2].weight[0, 1] = math.nan
    return model


@pytest.mark.parametrize(
    "call",
    [
        lambda model: nt.sparsify(model, 2, 4),
        lambda model: nt.SRSTE(model, 2, 4),
        lambda model: nt.NMTraining(model, 2, 4),
        lambda model: nt.SRigL(model, 0.5, t_end=10, init="magnitude"),
    ],
    ids=["sparsify", "SRSTE", "NMTraining", "SRigL"],
)
def test_nan_in_a_later_layer_is_refused_naming_it_and_leaves_the_model_as_it_was(call):
    # the first layer was once masked (and SRigL's zeroed) before the NaN of the last one was found
    model = _nan_in_last_layer()
    before = _state(model)
    with pytest.raises(ValueError, match=r"layer '2': .*NaN"):
        call(model)
    assert _same(before, _state(model))


def test_load_state_dict_that_does_not_fit_is_a_value_error_and_changes_nothing():
    model = _nan_in_last_layer()
    before = _state(model)
    foreign = {"0.parametrizations.weight.original": torch.zeros(3, 3), "0.parametrizations.weight.0.mask": 1}
    with pytest.raises(ValueError, match=r"'0\.parametrizations\.weight\.original' has shape \(3, 3\)"):
        nt.load_state_dict(model, foreign)
    assert _same(before, _state(model))
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        nt.load_state_dict(model, [1, 2])


def test_types_may_be_one_class_and_include_must_be_patterns():
    model = nn.Sequential(nn.Linear(8, 8), nn.Conv2d(8, 8, 1))
    report = nt.sparsify(model, 2, 4, types=nn.Linear)
    assert [r.name for r in report.layers if r.masked] == ["0"]
    for bad in (3, b"0", [3]):
        with pytest.raises(TypeError, match="include must be a glob pattern") as err:
            nt.select_layers(model, include=bad)
        assert str(err.value).endswith(f"got {bad!r}")


BAD_OPTIONS = {
    "sparsify options": (lambda model: nt.sparsify(model, options=3), TypeError, "options must be a mapping"),
    "nm takes no options": (
        lambda model: nt.sparsify(model, options={"foo": 1}),
        TypeError,
        "method='nm' takes no options, got options={'foo': 1}",
    ),
    "sparsify scores": (lambda model: nt.sparsify(model, scores=3), TypeError, "scores must be a callable"),
    "SRigL optimizer": (
        lambda model: nt.SRigL(model, 0.5, t_end=10, optimizer=3),
        TypeError,
        "optimizer must be a torch.optim.Optimizer or None, got 3",
    ),
    "LBC score_lr": (lambda model: nt.LBC(model, epochs=4, score_lr="x"), TypeError, "score_lr must be a real"),
    "BiMask candidates": (lambda model: nt.BiMask(model, candidates="x"), TypeError, "candidates must be an integer"),
    "TransposableTraining every": (
        lambda model: nt.TransposableTraining(model, every=0),
        ValueError,
        "every must be >= 1, got every=0",
    ),
    "condense_model mask dtype": (
        lambda model: nt.condense_model(model, masks={"0": "x"}),
        TypeError,
        "masks['0'] must be a boolean or numeric mask",
    ),
    "condense_model mask shape": (
        lambda model: nt.condense_model(model, masks={"0": torch.ones(3, 3)}),
        ValueError,
        "masks['0'] has shape (3, 3), but layer '0' has weight shape (8, 8)",
    ),
    "attach_mask backward_mask": (
        lambda model: nt.attach_mask(model[0], torch.ones(8, 8), backward_mask="x"),
        TypeError,
        "backward_mask must be a boolean or numeric array",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_other_bad_options_are_named_before_the_model_changes(case):
    call, kind, text = BAD_OPTIONS[case]
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    before = _state(model)
    with pytest.raises(kind) as err:
        call(model)
    assert text in str(err.value)
    assert _same(before, _state(model))
