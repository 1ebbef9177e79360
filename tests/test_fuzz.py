"""Property-based fuzzing of every public name in ``nmsolve.__all__`` (issue 13, "the class fix").

Each public function is called with arrays of every numpy kind (both byte orders, longdouble, bool,
complex, object), in every layout (non-contiguous, negative strides, Fortran, read-only, memmap,
masked), holding awkward values (NaN, +-inf, -0.0, subnormals, the extremes of each integer type),
in awkward shapes (empty, 0-d, 1-D, a huge m). The outcome must be a correct result (checked against
the oracles of ``tests/reference.py`` where they exist) or a ValueError / TypeError whose message
names what was wrong; never another exception (a raw numba error above all), never a mutated input.

``CALLS`` maps every public name to how it is called with a fuzzed array (classes through the
functions that make them); ``test_every_public_name_is_fuzzed`` keeps it complete.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import nmsolve
from tests.reference import (
    condensed_linear_loops,
    fanin_mask_sorted,
    nm_mask_sorted,
    tile_objectives,
    transposable_groups_ok,
    transposable_optimum_bruteforce,
)

# as the "ci" profile of tests/conftest.py: derandomized, 50 examples; HYPOTHESIS_PROFILE=thorough explores
# with fresh random examples
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
FUZZ = settings(
    max_examples=200 if THOROUGH else 50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not THOROUGH,
    database=None,
    print_blob=True,
)

NUMERIC = ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "g", "c8", "c16"]
SWAPPED = [">i2", ">i4", ">i8", ">u2", ">u8", ">f2", ">f4", ">f8", ">c16"]  # non-native on little-endian hosts
DTYPES = [np.dtype(d) for d in NUMERIC] + [np.dtype(d) for d in SWAPPED] + [np.dtype(object)]
SHAPES = [(), (0,), (1,), (4,), (6,), (8,), (0, 4), (4, 0), (2, 4), (3, 8), (4, 4), (8, 8), (2, 2, 4), (1, 5)]
PATTERNS = [(2, 4), (1, 4), (4, 4), (1, 2), (4, 8), (1, 1), (3, 32), (1, 2**40)]  # the last two: m > length
LAYOUTS = ["c", "fortran", "strided", "reversed", "readonly", "memmap", "masked", "masked-none"]
_MEMMAP_DIR = tempfile.mkdtemp(prefix="nmsolve-fuzz-")


def _specials(dtype: np.dtype) -> list[Any]:
    kind = dtype.kind
    if kind == "b":
        return [False, True]
    if kind in "iu":
        info = np.iinfo(dtype)
        return [info.min, info.max, 0, 1, 2, 3, 7, info.max - 1] + ([-1, -2, info.min + 1] if kind == "i" else [])
    if kind == "f":
        info = np.finfo(dtype)
        values = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -1.0, 2.0, 0.5, -3.0]
        values += [info.smallest_subnormal, -info.smallest_subnormal, info.tiny, info.max, -info.max]
        if dtype.itemsize > 8:  # values float64 cannot hold: must be refused, not rounded
            values += [np.longdouble(1) + info.eps, np.longdouble(2) ** 2000]
        return values
    if kind == "c":
        return [0j, 1 + 1j, -2.0, complex(np.inf, 0), 3j]
    return [0, 1.5, -2, "a", None]  # object


def _mild(dtype: np.dtype) -> list[Any]:
    if dtype.kind == "b":
        return [False, True]
    if dtype.kind == "O":
        return [0, 1.5, 2]
    return [0, 1, 2, 3] + ([-1.0, 0.25, -0.0] if dtype.kind in "fc" else [])


@st.composite
def fuzzed_arrays(draw: Any) -> np.ndarray:
    """An array of a fuzzed dtype, shape, layout and values (logical values independent of layout)."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.sampled_from(SHAPES))
    size = math.prod(shape)
    # half the arrays hold awkward values, half small ones that most functions accept
    pool = _specials(dtype) if draw(st.booleans()) else _mild(dtype)
    values = draw(st.lists(st.sampled_from(pool), min_size=size, max_size=size))
    if dtype.kind == "O":
        base = np.empty(size, dtype=object)
        base[:] = values
        base = base.reshape(shape)
    else:
        with np.errstate(all="ignore"):
            base = np.array(values, dtype=dtype.newbyteorder("=")).astype(dtype).reshape(shape)
    layout = draw(st.sampled_from(LAYOUTS))
    if layout == "fortran":
        return np.asfortranarray(base)
    if layout == "strided" and base.ndim:
        wide = np.zeros((*shape[:-1], 2 * shape[-1]), dtype=dtype)
        wide[..., ::2] = base
        return wide[..., ::2]
    if layout == "reversed" and base.ndim:
        flipped = np.ascontiguousarray(base[(slice(None, None, -1),) * base.ndim])
        return flipped[(slice(None, None, -1),) * base.ndim]
    if layout == "readonly":
        base.setflags(write=False)
        return base
    if layout == "memmap" and size and dtype.kind != "O":
        path = os.path.join(_MEMMAP_DIR, f"{draw(st.integers(0, 10**9))}.dat")
        mm = np.memmap(path, dtype=dtype, mode="w+", shape=shape)
        mm[...] = base
        return mm
    if layout.startswith("masked") and dtype.kind != "O":
        mask = np.zeros(shape, bool) if layout == "masked-none" else draw(st.sampled_from([True, False]))
        return np.ma.masked_array(base, mask=mask)
    return base


@dataclass(frozen=True)
class Params:
    n: int
    m: int
    pad: bool
    exact: bool


params = st.builds(
    lambda nm, pad, exact: Params(nm[0], nm[1], pad, exact),
    st.sampled_from(PATTERNS),
    st.booleans(),
    st.booleans(),
)


# --------------------------------------------------------------------------- oracles and helpers


def _values(x: np.ndarray) -> np.ndarray:
    """The logical values of an accepted input as a plain native array."""
    arr = np.asarray(x)
    return arr.astype(arr.dtype.newbyteorder("="))


def _plain_real(x: np.ndarray) -> bool:
    """A real (float/int) input with no NaN, no masked entries and no inexact longdouble."""
    if np.ma.isMaskedArray(x) and np.ma.getmaskarray(x).any():
        return False
    v = _values(x)
    if v.dtype.kind not in "fiu":
        return False
    if v.dtype.kind == "f" and np.isnan(v).any():
        return False
    if v.dtype.kind == "f" and v.dtype.itemsize > 8:
        return bool(np.all(v.astype(np.float64).astype(v.dtype) == v))
    return True


def _groups_ok(x: np.ndarray, p: Params) -> bool:
    return x.ndim >= 1 and (p.pad or x.shape[-1] % p.m == 0)


def _magnitudes(x: np.ndarray) -> np.ndarray:
    v = _values(x)
    if v.dtype.kind == "i":
        return np.array([abs(int(e)) for e in v.ravel()], dtype=np.uint64).reshape(v.shape)
    return np.abs(v)


def _check_nm_mask(x: np.ndarray, p: Params, out: np.ndarray) -> None:
    np.testing.assert_array_equal(out, nm_mask_sorted(_values(x), p.n, p.m))


def _check_magnitude_mask(x: np.ndarray, p: Params, out: np.ndarray) -> None:
    np.testing.assert_array_equal(out, nm_mask_sorted(_magnitudes(x), p.n, p.m))


def _check_is_nm(x: np.ndarray, p: Params, out: bool) -> None:
    kept = _values(x) != 0
    length = kept.shape[-1]
    ok = True
    for idx in np.ndindex(*kept.shape[:-1]):
        for start in range(0, length, p.m):
            count = int(kept[idx][start : start + p.m].sum())
            want = min(p.n, length - start)
            ok &= count == want if p.exact else count <= want
    assert out is ok


def _extended_sum(values: list[float]) -> float:
    more = sum(v == math.inf for v in values) - sum(v == -math.inf for v in values)
    if more:
        return math.copysign(math.inf, more)
    total = sum((Fraction(v) for v in values), Fraction(0))
    if abs(total) > Fraction(np.finfo(np.float64).max):
        return math.inf if total > 0 else -math.inf
    return float(total)


def _check_combination_scores(x: np.ndarray, p: Params, out: np.ndarray) -> None:
    v = _values(x).astype(np.float64)
    table = list(itertools.combinations(range(p.m), p.n))
    assert out.shape == (*v.shape[:-1], v.shape[-1] // p.m, len(table))
    assert not np.isnan(out).any()
    for idx in np.ndindex(*out.shape[:-1]):
        group = [float(e) for e in v[idx[:-1]][idx[-1] * p.m : (idx[-1] + 1) * p.m]]
        for c, subset in enumerate(table):
            want = _extended_sum([group[i] for i in subset])
            assert out[idx + (c,)] == pytest.approx(want, rel=1e-12, abs=1e-300), (idx, c)


def _check_best_combination(x: np.ndarray, p: Params, out: np.ndarray) -> None:
    v = _values(x)
    assert out.shape == v.shape[:-1]
    for idx in np.ndindex(*v.shape[:-1]):
        row = [e.item() for e in v[idx]]
        assert out[idx] == row.index(max(row))


def _check_combination_mask(x: np.ndarray, p: Params, out: np.ndarray) -> None:
    v = _values(x)
    table = nmsolve.combinations(p.n, p.m)
    want = (v.astype(np.uint8) @ table.astype(np.uint8) > 0) if v.dtype.kind == "b" else table[v]
    np.testing.assert_array_equal(out, want.reshape(*want.shape[:-2], want.shape[-2] * p.m))


def _check_fanin(x: np.ndarray, p: Params, out: np.ndarray) -> None:
    np.testing.assert_array_equal(out, fanin_mask_sorted(_values(x), p.n))


def _check_transposable(x: np.ndarray, p: Params, out: np.ndarray) -> None:
    v = _values(x)
    assert out.shape == v.shape
    if v.shape[0] % p.m or v.shape[1] % p.m:  # padded tiles: the oracles below take whole tiles
        return
    assert transposable_groups_ok(out, p.n, p.m)
    if p.m == 4 and v.dtype.kind == "f" and v.dtype.itemsize <= 8:
        assert tile_objectives(v, out, 4) == transposable_optimum_bruteforce(v, p.n, 4)


# --------------------------------------------------------------------------- the call table


def _condensed_weight(fan_in: int) -> np.ndarray:
    """A (2, fan_in) weight of constant fan-in: every other input kept, with values -1.5 and 0.5."""
    w = np.zeros((2, fan_in))
    w[0, ::2], w[1, ::2] = -1.5, 0.5
    return w


def _condensed_linear(x: np.ndarray, p: Params) -> np.ndarray:
    fan_in = x.shape[-1] if x.ndim else 1
    return nmsolve.condensed_linear(x, nmsolve.condense(_condensed_weight(fan_in)))


def _check_condensed_linear(x: np.ndarray, p: Params, out: np.ndarray) -> None:
    fan_in = x.shape[-1]
    if fan_in == 0:  # nothing to multiply: every output is the (absent) bias
        np.testing.assert_array_equal(out, np.zeros((*x.shape[:-1], 2)))
        return
    c = nmsolve.condense(_condensed_weight(fan_in))
    with np.errstate(all="ignore"):
        want = condensed_linear_loops(_values(x).astype(np.float64), c.values, c.indices, c.rows, c.shape)
    np.testing.assert_allclose(out.astype(np.float64), want, rtol=1e-3 if out.dtype.itemsize < 8 else 1e-12)


def _roundtrip_2d(x: np.ndarray, p: Params) -> Any:
    matrix, layout = nmsolve.weight_to_2d(x)
    assert isinstance(layout, nmsolve.WeightLayout)
    back = nmsolve.weight_from_2d(matrix, layout)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(x))
    return back


def _checkpoint_roundtrip(x: np.ndarray, p: Params) -> Any:
    from nmsolve.checkpoint.formats import TensorInfo, _code_of

    folder = tempfile.mkdtemp(dir=_MEMMAP_DIR)
    src = os.path.join(folder, "w.safetensors")
    code = _code_of(np.asarray(x).dtype)
    nmsolve.write_checkpoint(src, [TensorInfo("layer.weight", tuple(np.shape(x)), code)], [x])
    with nmsolve.open_checkpoint(src) as ckpt:
        back = ckpt.read("layer.weight")
    np.testing.assert_array_equal(back, np.asarray(x))
    nmsolve.prune_checkpoint(src, os.path.join(folder, "out.safetensors"), n=p.n, m=p.m)
    return nmsolve.checkpoint_report(src, n=p.n, m=p.m)


def _rigl(x: np.ndarray, p: Params) -> Any:
    step = nmsolve.rigl_update(x, x, np.ones(np.shape(x), bool), drop_fraction=0.5)
    assert isinstance(step, nmsolve.RigLStep) and nmsolve.is_constant_fanin(step.mask)
    return step


def _bimask_permutation(x: np.ndarray, p: Params) -> Any:
    res = nmsolve.bimask_permutation(x, p.n, p.m, candidates=3, rng=0, pad=p.pad)
    assert isinstance(res, nmsolve.BiMaskResult)
    assert sorted(res.permutation.tolist()) == list(range(np.shape(x)[0]))
    return res


def _channel(x: np.ndarray, p: Params) -> Any:
    res = nmsolve.channel_permutation(x, p.n, p.m, rng=0, time_limit=0.05)
    assert isinstance(res, nmsolve.ChannelPermutationResult)
    assert sorted(res.permutation.tolist()) == list(range(np.shape(x)[1]))
    return res


def _convert(x: np.ndarray, p: Params) -> Any:
    res = nmsolve.unstructured_to_nm(x, n=p.n, m=p.m, rng=0)
    assert isinstance(res, nmsolve.ConversionResult) and nmsolve.is_nm(res.mask, p.n, p.m, exact=True)
    return res


def _eye_for(x: np.ndarray) -> np.ndarray:
    return np.eye(np.shape(x)[-1] if np.ndim(x) else 1)


def _prune_layer(x: np.ndarray, p: Params) -> Any:
    res = nmsolve.prune_layer(x, _eye_for(x), p.n, p.m, method="sparsegpt", refit=p.exact)
    assert isinstance(res, nmsolve.LayerPruneResult) and nmsolve.is_nm(res.mask, p.n, p.m, exact=True)
    assert not res.weights[~res.mask].any() and res.error <= res.magnitude_error * (1 + 1e-9) + 1e-300
    return res


def _refine_mask(x: np.ndarray, p: Params) -> Any:
    shape = np.shape(x)
    mask = np.zeros(shape, bool)
    if len(shape) == 2 and p.m <= 64 and shape[1] % p.m == 0:
        mask.reshape(shape[0], -1, p.m)[..., : p.n] = True  # the first n of every group
    res = nmsolve.refine_mask(x, _eye_for(x), mask, p.n, p.m)
    assert isinstance(res, nmsolve.RefineResult) and nmsolve.is_nm(res.mask, p.n, p.m, exact=True)
    assert not res.weights[~res.mask].any() and res.error <= res.error_before
    return res


def _first(x: np.ndarray) -> Any:
    """The first logical entry of ``x`` as a scalar option value (or the whole 0-d array)."""
    return np.asarray(x).flat[0] if np.size(x) else x


def _check_drop_fraction(x: np.ndarray, p: Params, out: float) -> None:
    assert 0.0 <= out <= 0.3


def _check_unit_interval(x: np.ndarray, p: Params, out: float) -> None:
    assert 0.0 <= out <= 1.0


def _tm(p: Params) -> int:
    """m for the transposable solvers: an m beyond the matrix pads it to one m x m tile, slow for large m
    (test_transposable_huge_m_is_refused_naming_the_limit checks the refusal beyond MAX_M)."""
    return min(p.m, 64)


# name -> (call(x, p), oracle(x, p, result) or None, the words an error message may name)
Call = Callable[[np.ndarray, Params], Any]
CALLS: dict[str, tuple[Call, Callable[..., None] | None, tuple[str, ...]]] = {
    "nm_mask": (lambda x, p: nmsolve.nm_mask(x, p.n, p.m, pad=p.pad), _check_nm_mask, ("scores",)),
    "magnitude_mask": (
        lambda x, p: nmsolve.magnitude_mask(x, p.n, p.m, pad=p.pad),
        _check_magnitude_mask,
        ("weights",),
    ),
    "is_nm": (lambda x, p: nmsolve.is_nm(x, p.n, p.m, pad=p.pad, exact=p.exact), _check_is_nm, ("mask",)),
    "combinations": (lambda x, p: nmsolve.combinations(p.n, p.m), None, ("C(",)),
    "combination_scores": (
        lambda x, p: nmsolve.combination_scores(x, p.n, p.m),
        _check_combination_scores,
        ("scores", "C("),
    ),
    "best_combination": (lambda x, p: nmsolve.best_combination(x), _check_best_combination, ("combo_scores",)),
    "combination_mask": (
        lambda x, p: nmsolve.combination_mask(x, p.n, p.m),
        _check_combination_mask,
        ("selection", "C(", "combination"),
    ),
    "weight_to_2d": (_roundtrip_2d, None, ("weight",)),
    "weight_from_2d": (_roundtrip_2d, None, ("weight", "matrix")),
    "WeightLayout": (_roundtrip_2d, None, ("weight",)),
    "apply_2d": (
        lambda x, p: nmsolve.apply_2d(nmsolve.magnitude_mask, x, p.n, p.m, pad=p.pad),
        None,
        ("weight", "weights"),
    ),
    "kept_magnitude": (
        lambda x, p: nmsolve.kept_magnitude(x, np.ones(np.shape(x), bool)),
        lambda x, p, out: np.testing.assert_allclose(out, float(np.sum(_magnitudes(x).astype(np.float64)))),
        ("weights",),
    ),
    "kept_fraction": (
        lambda x, p: nmsolve.kept_fraction(x, np.arange(np.size(x)).reshape(np.shape(x)) % 2 == 0),
        _check_unit_interval,
        ("weights",),
    ),
    "fanin_mask": (lambda x, p: nmsolve.fanin_mask(x, p.n), _check_fanin, ("scores", "k")),
    "fanin_for_sparsity": (lambda x, p: nmsolve.fanin_for_sparsity(p.m, _first(x)), None, ("sparsity", "fan_in")),
    "is_constant_fanin": (lambda x, p: nmsolve.is_constant_fanin(x), None, ("mask",)),
    "CondensedMatrix": (lambda x, p: nmsolve.condense(x).to_dense(), None, ("weights",)),
    "condense": (
        lambda x, p: nmsolve.condense(x),
        lambda x, p, c: np.testing.assert_array_equal(c.to_dense(), _values(x)),
        ("weights",),
    ),
    "condensed_linear": (_condensed_linear, _check_condensed_linear, ("x",)),
    "cosine_drop_fraction": (
        lambda x, p: nmsolve.cosine_drop_fraction(_first(x), t_end=10),
        _check_drop_fraction,
        ("step",),
    ),
    "rigl_update": (_rigl, None, ("weights", "grads", "mask")),
    "RigLStep": (_rigl, None, ("weights", "grads", "mask")),
    "mask_diversity": (
        lambda x, p: nmsolve.mask_diversity(np.shape(x), "nm", n=p.n, m=p.m, exact=p.exact),
        None,
        ("shape", "m=", "grouped axis"),
    ),
    "MaskDiversity": (
        lambda x, p: nmsolve.mask_diversity(np.shape(x), "transposable", n=p.n, m=p.m),
        None,
        ("shape", "m=", "tiles", "size", "m*m"),
    ),
    "transposable_tile_count": (lambda x, p: nmsolve.transposable_tile_count(p.m, p.n), None, ("m", "n")),
    "transposable_tile_log10": (lambda x, p: nmsolve.transposable_tile_log10(p.m, p.n), None, ("m", "n")),
    "prune_checkpoint": (_checkpoint_roundtrip, None, ("dtype", "shape", "tensor")),
    "checkpoint_report": (_checkpoint_roundtrip, None, ("dtype", "shape", "tensor")),
    "open_checkpoint": (_checkpoint_roundtrip, None, ("dtype", "shape", "tensor")),
    "write_checkpoint": (_checkpoint_roundtrip, None, ("dtype", "shape", "tensor")),
    "transposable_mask": (
        lambda x, p: nmsolve.transposable_mask(x, p.n, _tm(p), pad=p.pad),
        _check_transposable,
        ("W",),
    ),
    "is_transposable": (
        lambda x, p: nmsolve.is_transposable(x, p.n, _tm(p), exact=p.exact, pad=p.pad),
        None,
        ("mask",),
    ),
    "transposable_report": (lambda x, p: nmsolve.transposable_report(x, p.n, _tm(p), pad=p.pad), None, ("W",)),
    "TransposableResult": (lambda x, p: nmsolve.transposable_report(x, p.n, _tm(p), pad=p.pad), None, ("W",)),
    "bimask_masks": (
        lambda x, p: nmsolve.bimask_masks(x, p.n, p.m, np.arange(np.shape(x)[0] if np.ndim(x) else 0), pad=p.pad),
        None,
        ("W",),
    ),
    "bimask_permutation": (_bimask_permutation, None, ("F_or_W",)),
    "BiMaskResult": (_bimask_permutation, None, ("F_or_W",)),
    "channel_permutation": (_channel, None, ("W",)),
    "ChannelPermutationResult": (_channel, None, ("W",)),
    "unstructured_to_nm": (_convert, None, ("W",)),
    "ConversionResult": (_convert, None, ("W",)),
    "expected_retention": (
        lambda x, p: nmsolve.expected_retention(_first(x), p.n, p.m),
        _check_unit_interval,
        ("density",),
    ),
    "prune_layer": (_prune_layer, None, ("W", "H", "n=", "m=")),
    "LayerPruneResult": (_prune_layer, None, ("W", "H", "n=", "m=")),
    "refine_mask": (_refine_mask, None, ("W", "H", "mask", "n=", "m=")),
    "RefineResult": (_refine_mask, None, ("W", "H", "mask", "n=", "m=")),
    "layer_error": (
        lambda x, p: nmsolve.layer_error(x, np.zeros(np.shape(x)), _eye_for(x)),
        lambda x, p, out: np.testing.assert_allclose(out, float(np.sum(_values(x).astype(np.float64) ** 2))),
        ("W", "shape"),
    ),
    "warmup": (lambda x, p: nmsolve.warmup(), None, ()),
}

# Inputs for which a call must succeed (a refusal would be a bug), beyond "error or correct".
MUST_SUCCEED: dict[str, Callable[[np.ndarray, Params], bool]] = {
    "nm_mask": lambda x, p: _plain_real(x) and _groups_ok(x, p),
    "magnitude_mask": lambda x, p: _plain_real(x) and _groups_ok(x, p),
    "is_nm": lambda x, p: _plain_real(x) and _groups_ok(x, p),
    "fanin_mask": lambda x, p: _plain_real(x) and x.ndim >= 2 and p.n <= math.prod(x.shape[1:]),
}

# Calls that only a part of the fuzz space reaches usefully; the rest is not worth its time.
# warmup takes no input (nothing to fuzz) and compiles every kernel: listed in CALLS, never fuzzed.
NOT_FUZZED = {"warmup"}
SLOW = {"prune_checkpoint", "checkpoint_report", "open_checkpoint", "write_checkpoint"}
SLOW |= {"channel_permutation", "ChannelPermutationResult", "unstructured_to_nm", "ConversionResult"}


def test_every_public_name_is_fuzzed():
    assert sorted(CALLS) == sorted(nmsolve.__all__), "add the new public name to CALLS in tests/test_fuzz.py"


def _snapshot(x: Any) -> Any:
    if isinstance(x, np.ndarray) and x.dtype.kind != "O":
        mask = np.ma.getmaskarray(x).copy() if np.ma.isMaskedArray(x) else None
        return np.asarray(x).tobytes(), mask
    return np.asarray(x).tolist(), None


def _value_tokens(x: np.ndarray, p: Params) -> list[str]:
    """How a message can show the offending value: n or m as passed, x's dtype, shape or dimensions."""
    arr = np.asarray(x)
    tokens = [f"n={p.n}", f"m={p.m}", f"{p.n}:{p.m}", f"m = {p.m}", str(arr.shape), f"{arr.ndim}-d"]
    tokens += [str(arr.dtype), arr.dtype.name, str(arr.dtype.newbyteorder("=")), repr(arr.dtype)]
    if np.ma.isMaskedArray(x):
        tokens.append("masked")
    return tokens


def _names_the_value(message: str, x: np.ndarray, p: Params, words: tuple[str, ...]) -> bool:
    """The message names the argument (its name, one of ``words``, or an option: pad, exact, axis) or
    shows the offending value; a generic word ("dtype", "shape") without the value is not enough."""
    names = (*words, "pad", "exact", "axis")
    return any(w in message for w in names) or any(t in message for t in _value_tokens(x, p))


def _run(name: str, x: np.ndarray, p: Params) -> None:
    call, oracle, words = CALLS[name]
    before = _snapshot(x)
    try:
        with np.errstate(all="ignore"):
            result = call(x, p)
    except (ValueError, TypeError) as err:
        event(f"{type(err).__name__}")
        message = str(err)
        assert "numba" not in message.lower() and "nopython" not in message, message
        assert type(err).__module__ in ("builtins", "nmsolve.checkpoint.formats"), repr(err)
        assert _names_the_value(message, x, p, words), f"{name}: the message does not say what was wrong: {message!r}"
        check = MUST_SUCCEED.get(name)
        assert check is None or not check(x, p), f"{name} refused a valid input: {message}"
    else:
        event("result" + (" checked by an oracle" if oracle is not None else ""))
        if oracle is not None:
            oracle(x, p, result)
    assert _snapshot(x)[0] == before[0], f"{name} modified its input"


@pytest.mark.parametrize("name", sorted(set(CALLS) - SLOW - NOT_FUZZED))
@FUZZ
@given(x=fuzzed_arrays(), p=params)
def test_fuzz(name, x, p):
    _run(name, x, p)


@pytest.mark.parametrize("name", sorted(SLOW))
@settings(FUZZ, max_examples=6)
@given(x=fuzzed_arrays(), p=params)
def test_fuzz_slow_calls(name, x, p):
    _run(name, x, p)


def test_transposable_huge_m_is_refused_naming_the_limit():
    # m = 2**40 with pad=True once built a sorting network of 2**40 inputs and ran without bound
    for call in (nmsolve.transposable_mask, nmsolve.transposable_report):
        with pytest.raises(ValueError, match=r"m=1099511627776 is larger than .* \(m <= 1024\)"):
            call(np.ones((8, 8)), 1, 2**40, pad=True)
