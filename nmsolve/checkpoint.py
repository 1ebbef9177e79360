"""Read, prune and write checkpoints (.safetensors, .npz, torch .pt state dicts), one tensor at a time.

This is the library side of ``nmsolve prune`` and ``nmsolve report``:

* :func:`open_checkpoint` lists a checkpoint's tensors (name, shape, dtype) from its header and reads
  them one at a time; :func:`write_checkpoint` streams tensors into a new file. Writes go to a
  temporary file beside the destination and are renamed into place only when complete, so a failure
  never leaves a partial file, and a source is never overwritten.
* :func:`prune_checkpoint` computes an N:M (or transposable N:M) mask for every selected weight and
  writes the pruned checkpoint (and optionally the masks); :func:`checkpoint_report` measures how far
  each weight is from N:M and what each method would keep.

Weights of 2 or more dimensions are masked on their channel-last 2-D view (:mod:`nmsolve.layout`):
a Linear ``[out, in]`` as is, a conv ``[out, in, kh, kw]`` as ``[out * kh * kw, in]``, groups along
``in``. Pruned entries are set to zero in the tensor's own dtype (float16 and bfloat16 included).

Memory: .safetensors and .npz are read and written one tensor at a time (a few copies of the largest
tensor). ``torch.save`` needs the whole state dict at once, so a ``.pt`` *output* holds the pruned
tensors in memory until it is written (a ``.pt`` input is memory-mapped); prefer .safetensors for
very large models.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import os
import re
import struct
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nmsolve._validate import check_nm

__all__ = [
    "DEFAULT_EXCLUDE",
    "CheckpointReport",
    "LayerPrune",
    "LayerReport",
    "PruneResult",
    "TensorInfo",
    "checkpoint_report",
    "mask_methods",
    "open_checkpoint",
    "prune_checkpoint",
    "write_checkpoint",
]

FORMATS = {".safetensors": "safetensors", ".npz": "npz", ".pt": "torch", ".pth": "torch", ".bin": "torch"}

# Embedding tables are 2-D but are lookups, not matrix products: left dense unless asked for.
DEFAULT_EXCLUDE: tuple[str, ...] = ("embed",)

# safetensors dtype code <-> numpy dtype of the array read() returns (bf16 and fp8 as raw bits)
_CODE_TO_NUMPY: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NUMPY_TO_CODE = {
    np.dtype(t).str.lstrip("<|="): code
    for code, t in (
        ("F64", "<f8"),
        ("F32", "<f4"),
        ("F16", "<f2"),
        ("I64", "<i8"),
        ("I32", "<i4"),
        ("I16", "<i2"),
        ("I8", "i1"),
        ("U64", "<u8"),
        ("U32", "<u4"),
        ("U16", "<u2"),
        ("U8", "u1"),
        ("BOOL", "?"),
    )
}
_FLOAT_CODES = ("F64", "F32", "F16", "BF16")  # the dtypes that can be scored and pruned
_RAW_CODES = ("BF16", "F8_E4M3", "F8_E5M2")  # no numpy dtype: kept as raw bits

_SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint cannot be read or written as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's name, shape and dtype code (safetensors style: ``"F32"``, ``"BF16"``, ``"I64"``...)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in _FLOAT_CODES


def _code_of(dtype: np.dtype) -> str:
    code = _NUMPY_TO_CODE.get(np.dtype(dtype).newbyteorder("<").str.lstrip("<|="))
    if code is None:
        raise CheckpointError(f"dtype {dtype} is not supported in checkpoints (numeric and bool tensors are)")
    return code


def decode_float(array: np.ndarray, dtype: str) -> np.ndarray:
    """A float view of a tensor as read: float16/32/64 as they are, bfloat16 bits widened to float32."""
    if dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    if dtype not in ("F64", "F32", "F16"):
        raise CheckpointError(f"dtype {dtype} cannot be scored; only F64, F32, F16 and BF16 weights are pruned")
    return array


# --------------------------------------------------------------------------- readers


class Reader(Protocol):
    path: Path
    format: str
    infos: list[TensorInfo]
    metadata: dict[str, str]

    def read(self, name: str) -> np.ndarray: ...

    def close(self) -> None: ...


class _SafetensorsReader:
    """Parses the header itself and reads each tensor's bytes on demand (bf16 as raw uint16)."""

    format = "safetensors"

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is not a .safetensors file: it is only {size} bytes long")
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, _SAFETENSORS_HEADER_LIMIT):
                raise CheckpointError(f"{path} is not a .safetensors file: header length {length} exceeds the file")
            try:
                header = json.loads(f.read(length))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise CheckpointError(f"{path} is not a .safetensors file: its header is not JSON ({err})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path} is not a .safetensors file: its header is not a JSON object")
        self._start = 8 + length
        self.metadata = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
        entries = []
        for name, entry in header.items():
            try:
                code, shape, (begin, end) = entry["dtype"], tuple(int(s) for s in entry["shape"]), entry["data_offsets"]
                itemsize = _CODE_TO_NUMPY[code].itemsize
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(
                    f"{path}: tensor {name!r} has a malformed or unsupported header {entry}"
                ) from None
            if end - begin != math.prod(shape) * itemsize or self._start + end > size:
                raise CheckpointError(f"{path}: tensor {name!r} has data offsets {begin}..{end} that do not fit")
            entries.append((begin, TensorInfo(name, shape, code)))
        entries.sort(key=lambda e: e[0])  # file order, so reading is sequential
        self.infos = [info for _, info in entries]
        self._offsets = {info.name: begin for begin, info in entries}
        self._infos = {info.name: info for info in self.infos}

    def read(self, name: str) -> np.ndarray:
        info = self._infos[name]
        dtype = _CODE_TO_NUMPY[info.dtype]
        data = np.fromfile(self.path, dtype=dtype, count=info.size, offset=self._start + self._offsets[name])
        return data.reshape(info.shape)

    def close(self) -> None:
        pass


class _NpzReader:
    format = "npz"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metadata: dict[str, str] = {}
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise CheckpointError(f"{path} is not a .npz file: {err}") from None
        self.infos = []
        self._members: dict[str, str] = {}
        for member in self._zip.namelist():
            name = member[:-4] if member.endswith(".npy") else member
            try:
                with self._zip.open(member) as fp:
                    version = np.lib.format.read_magic(fp)
                    reader = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = reader(fp)
            except (ValueError, OSError, zipfile.BadZipFile) as err:
                self._zip.close()
                raise CheckpointError(f"{path}: member {member!r} is not a numpy array ({err})") from None
            if dtype.hasobject:
                self._zip.close()
                raise CheckpointError(f"{path}: array {name!r} holds Python objects; only numeric arrays are read")
            self.infos.append(TensorInfo(name, tuple(int(s) for s in shape), _code_of(dtype)))
            self._members[name] = member

    def read(self, name: str) -> np.ndarray:
        with self._zip.open(self._members[name]) as fp:
            array = np.lib.format.read_array(fp, allow_pickle=False)
        return array.astype(array.dtype.newbyteorder("<"), copy=False)

    def close(self) -> None:
        self._zip.close()


def _need_torch(what: str) -> Any:
    if importlib.util.find_spec("torch") is None:
        raise CheckpointError(f"{what} needs torch; install it (pip install 'nmsolve[torch]') or use .safetensors/.npz")
    return importlib.import_module("torch")


def _flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]
    else:
        yield prefix.rstrip("."), tree


_TORCH_CODES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}


class _TorchReader:
    """A torch state dict (possibly nested dicts of tensors), memory-mapped where torch allows it."""

    format = "torch"

    def __init__(self, path: Path) -> None:
        torch = _need_torch(f"reading {path.name}")
        self.path = path
        self.metadata: dict[str, str] = {}
        try:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:  # old (non-zip) serialisation cannot be memory-mapped
                if "mmap" not in str(err):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for foreign or corrupt files
            raise CheckpointError(f"{path} is not a torch state dict that can be loaded safely: {err}") from None
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
        self.tree = obj
        self._tensors: dict[str, Any] = {}
        self.extras: dict[str, Any] = {}
        for name, value in _flatten(obj):
            if isinstance(value, torch.Tensor):
                self._tensors[name] = value
            else:
                self.extras[name] = value
        self.infos = []
        for name, tensor in self._tensors.items():
            code = _TORCH_CODES.get(str(tensor.dtype).removeprefix("torch."))
            if code is None:
                raise CheckpointError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, which is not supported")
            self.infos.append(TensorInfo(name, tuple(tensor.shape), code))

    def read(self, name: str) -> np.ndarray:
        tensor = self._tensors[name].detach().cpu().contiguous()
        if str(tensor.dtype) == "torch.bfloat16":
            return tensor.view(_need_torch("bf16").int16).numpy().view(np.uint16).copy()
        return tensor.numpy().copy()

    def close(self) -> None:
        self._tensors.clear()


_READERS: dict[str, Callable[[Path], Any]] = {
    "safetensors": _SafetensorsReader,
    "npz": _NpzReader,
    "torch": _TorchReader,
}


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CheckpointError(f"{path.name}: unknown checkpoint format {path.suffix!r}; use one of {sorted(FORMATS)}")
    return fmt


@contextlib.contextmanager
def open_checkpoint(path: str | os.PathLike[str]) -> Iterator[Reader]:
    """Open a checkpoint for reading tensors one at a time (a context manager).

    Parameters
    ----------
    path : str or Path
        A ``.safetensors``, ``.npz`` or torch ``.pt`` / ``.pth`` / ``.bin`` file (torch must be
        installed for the latter).

    Yields
    ------
    reader
        ``reader.infos`` lists :class:`TensorInfo` in file order (from the header, nothing loaded);
        ``reader.read(name)`` returns one tensor as a numpy array (bfloat16 as raw ``uint16`` bits).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    CheckpointError (a ValueError)
        Unknown extension, or the file is not readable in its format.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> np.savez(path, fc=np.ones((4, 8), np.float32))
    >>> with open_checkpoint(path) as ckpt:
    ...     [(i.name, i.shape, i.dtype) for i in ckpt.infos], ckpt.read("fc").sum()
    ([('fc', (4, 8), 'F32')], np.float32(32.0))
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    reader = _READERS[fmt](path)
    try:
        yield reader
    finally:
        reader.close()


# --------------------------------------------------------------------------- writers


def _write_safetensors(
    fp: Any, infos: Sequence[TensorInfo], tensors: Iterable[np.ndarray], meta: dict[str, str]
) -> None:
    header: dict[str, Any] = {}
    offset = 0
    for info in infos:
        nbytes = info.size * _CODE_TO_NUMPY[info.dtype].itemsize
        header[info.name] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if meta:
        header["__metadata__"] = meta
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format aligns the data to 8 bytes
    fp.write(struct.pack("<Q", len(blob)))
    fp.write(blob)
    for info, array in zip(infos, tensors, strict=True):
        fp.write(np.ascontiguousarray(array, dtype=_CODE_TO_NUMPY[info.dtype]).reshape(-1).view(np.uint8).data)


def _write_npz(fp: Any, infos: Sequence[TensorInfo], tensors: Iterable[np.ndarray], meta: dict[str, str]) -> None:
    with zipfile.ZipFile(fp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for info, array in zip(infos, tensors, strict=True):
            with zf.open(info.name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)


def _write_torch(fp: Any, infos: Sequence[TensorInfo], tensors: Iterable[np.ndarray], meta: dict[str, str]) -> None:
    torch = _need_torch("writing a .pt file")
    state: dict[str, Any] = {}
    for info, array in zip(infos, tensors, strict=True):
        if info.dtype == "BF16":
            value = torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16)
        else:
            value = torch.from_numpy(np.ascontiguousarray(array))
        state[info.name] = value
    torch.save(state, fp)


_WRITERS = {"safetensors": _write_safetensors, "npz": _write_npz, "torch": _write_torch}


def _check_writable(fmt: str, infos: Sequence[TensorInfo], path: Path) -> None:
    for info in infos:
        if fmt == "npz" and info.dtype in _RAW_CODES:
            raise CheckpointError(
                f"tensor {info.name!r} has dtype {info.dtype}, which .npz cannot store; write {path.stem}.safetensors"
            )
        if fmt == "torch" and info.dtype not in _TORCH_CODES.values():
            raise CheckpointError(f"tensor {info.name!r} has dtype {info.dtype}, which this writer cannot store in .pt")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


@contextlib.contextmanager
def _atomic(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Temporary files beside each destination, renamed into place only if the block succeeds."""
    temps: list[Path] = []
    try:
        for path in paths:
            handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(handle)
            temps.append(Path(name))
        yield temps
        umask = os.umask(0)
        os.umask(umask)
        for temp, path in zip(temps, paths, strict=True):
            os.chmod(temp, 0o666 & ~umask)  # mkstemp makes files private; give them the usual mode
            os.replace(temp, path)
    finally:
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def write_checkpoint(
    path: str | os.PathLike[str],
    infos: Sequence[TensorInfo],
    tensors: Iterable[np.ndarray],
    *,
    metadata: dict[str, str] | None = None,
    overwrite: bool = False,
) -> None:
    """Write tensors, consumed one at a time, to a new checkpoint; the format follows the extension.

    Parameters
    ----------
    path : str or Path
        Destination (``.safetensors``, ``.npz`` or ``.pt``). Written to a temporary file in the same
        folder and renamed into place when complete, so no partial file is ever left behind.
    infos : sequence of TensorInfo
        Names, shapes and dtypes, in the order ``tensors`` yields them.
    tensors : iterable of ndarray
        The arrays (bfloat16 as raw ``uint16`` bits); a generator keeps memory to one tensor.
    metadata : dict of str, optional
        Stored in the .safetensors header (ignored by other formats).
    overwrite : bool, default False
        Replace an existing file at ``path``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> write_checkpoint(path, [TensorInfo("fc", (2, 4), "F32")], [np.ones((2, 4), np.float32)])
    >>> with open_checkpoint(path) as ckpt:
    ...     ckpt.read("fc").shape
    (2, 4)
    """
    path = Path(path)
    fmt = _format_of(path)
    _check_writable(fmt, infos, path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} already exists; choose another name or pass overwrite (--overwrite)")
    if not path.parent.is_dir():
        raise CheckpointError(f"folder {path.parent} does not exist")

    def checked() -> Iterator[np.ndarray]:
        for info, array in zip(infos, tensors, strict=True):
            if tuple(array.shape) != info.shape:
                raise CheckpointError(f"tensor {info.name!r} has shape {array.shape}, header says {info.shape}")
            yield array

    with _atomic([path]) as (temp,), open(temp, "wb") as fp:
        _WRITERS[fmt](fp, infos, checked(), metadata or {})


# --------------------------------------------------------------------------- methods


def _transposable_methods() -> tuple[Callable[..., np.ndarray] | None, list[str]]:
    """``nmsolve.transposable_mask`` and its method names, or ``(None, [])`` if it is not available."""
    try:
        module = importlib.import_module("nmsolve.transposable")
        solver = module.transposable_mask
    except (ImportError, AttributeError):
        return None, []
    for attr in ("METHODS", "TRANSPOSABLE_METHODS", "_METHODS"):
        names = getattr(module, attr, None)
        if isinstance(names, (dict, tuple, list)) and names:
            return solver, sorted(str(k) for k in names)
    try:  # fall back on the project-wide error message "method must be one of [...]"
        solver(np.ones((4, 4)), 2, 4, method="\x00")
    except ValueError as err:
        found = re.search(r"method must be one of \[([^\]]*)\]", str(err))
        if found:
            return solver, sorted(s.strip().strip("'\"") for s in found.group(1).split(",") if s.strip())
    return solver, []


# Names the CLI recognises as transposable methods even when the module is missing (for the message).
EXPECTED_TRANSPOSABLE = ("approx", "mcf")


def mask_methods(n: int, m: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Available mask methods by name: ``"nm"`` and every ``nmsolve.transposable_mask`` method.

    Each takes a 2-D weight matrix ``(rows, cols)`` (groups along ``cols``) and returns a bool mask.

    Examples
    --------
    >>> import numpy as np
    >>> mask_methods(2, 4)["nm"](np.array([[1.0, -3.0, 2.0, 0.0]])).astype(int)
    array([[0, 1, 1, 0]])
    """
    import nmsolve

    n, m = check_nm(n, m)
    methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {"nm": lambda w: nmsolve.magnitude_mask(w, n, m)}
    solver, names = _transposable_methods()
    for name in names:
        methods[name] = lambda w, name=name: solver(np.abs(w), n, m, method=name)  # type: ignore[misc]
    return methods


def is_transposable_method(method: str) -> bool:
    return method != "nm"


# What ``nmsolve report`` measures by default: the fast methods (the reference flow solvers are slow).
DEFAULT_REPORT_METHODS = ("nm", "approx", "mcf")


def _warm(solve: Callable[[np.ndarray], np.ndarray], dtype: np.dtype, m: int, done: set[Any]) -> None:
    """Call ``solve`` once on a tiny matrix of ``dtype`` so that compilation is not timed."""
    key = (id(solve), np.dtype(dtype).str)
    if key not in done:
        done.add(key)
        with contextlib.suppress(ValueError, TypeError):
            solve(np.ones((m, m), dtype=dtype))


def _unavailable(method: str, available: Sequence[str]) -> CheckpointError:
    if method in EXPECTED_TRANSPOSABLE and _transposable_methods()[0] is None:
        return CheckpointError(
            f"method {method!r} is unavailable: nmsolve.transposable_mask is not part of this installation; "
            f"available: {sorted(available)}"
        )
    return CheckpointError(f"method must be one of {sorted(available)}, got {method!r}")


# --------------------------------------------------------------------------- selection


def _compile(patterns: Sequence[str], what: str) -> list[re.Pattern[str]]:
    out = []
    for pattern in patterns:
        try:
            out.append(re.compile(pattern))
        except re.error as err:
            raise CheckpointError(f"{what} pattern {pattern!r} is not a valid regular expression: {err}") from None
    return out


def select(
    infos: Sequence[TensorInfo], include: Sequence[str] = (), exclude: Sequence[str] = DEFAULT_EXCLUDE
) -> list[TensorInfo]:
    """The tensors to prune: float, 2-D or more, name matching an ``include`` regex (any; all if none)
    and no ``exclude`` regex (``re.search``, so a substring is enough)."""
    inc, exc = _compile(include, "--include"), _compile(exclude, "--exclude")
    chosen = []
    for info in infos:
        if not info.is_float or len(info.shape) < 2:
            continue
        if inc and not any(p.search(info.name) for p in inc):
            continue
        if any(p.search(info.name) for p in exc):
            continue
        chosen.append(info)
    return chosen


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    return shape[0] * math.prod(shape[2:]), shape[1]


def _check_divisible(infos: Sequence[TensorInfo], m: int, transposable: bool) -> None:
    for info in infos:
        rows, cols = _matrix_shape(info.shape)
        if cols % m:
            raise CheckpointError(
                f"tensor {info.name!r} of shape {info.shape} has {cols} input channels, not a multiple of m={m}; "
                f"leave it out with --exclude '{re.escape(info.name)}' or choose an m that divides {cols}"
            )
        if transposable and rows % m:
            view = "rows" if len(info.shape) == 2 else "rows of its channel-last view (out * kernel)"
            raise CheckpointError(
                f"tensor {info.name!r} of shape {info.shape} has {rows} {view}, not a multiple of m={m}, "
                "which transposable masks need; leave it out with "
                f"--exclude '{re.escape(info.name)}' or use --method nm"
            )


def _to_2d(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array
    return np.ascontiguousarray(np.moveaxis(array, 1, -1)).reshape(_matrix_shape(array.shape))


def _from_2d(matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) == 2:
        return matrix
    return np.ascontiguousarray(np.moveaxis(matrix.reshape(shape[0], *shape[2:], shape[1]), -1, 1))


def _scores_2d(info: TensorInfo, array: np.ndarray) -> np.ndarray:
    weights = decode_float(array, info.dtype)
    if np.isnan(weights).any():
        raise CheckpointError(f"tensor {info.name!r} contains NaN; repair the checkpoint first")
    return _to_2d(weights)


# --------------------------------------------------------------------------- prune


@dataclass(frozen=True)
class LayerPrune:
    """One pruned tensor: its kept fraction of ``sum |W|`` and the time its mask took."""

    name: str
    shape: tuple[int, ...]
    pattern: str
    kept_fraction: float
    kept_magnitude: float
    total_magnitude: float
    seconds: float


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_checkpoint` did."""

    source: Path
    destination: Path
    masks: Path | None
    method: str
    n: int
    m: int
    layers: tuple[LayerPrune, ...]
    copied: int  # tensors written unchanged
    seconds: float

    @property
    def kept_fraction(self) -> float:
        """Kept share of the total ``sum |W|`` over all pruned tensors."""
        total = sum(layer.total_magnitude for layer in self.layers)
        return sum(layer.kept_magnitude for layer in self.layers) / total if total else 1.0

    @property
    def pruned_parameters(self) -> int:
        return sum(math.prod(layer.shape) for layer in self.layers)


def _kept(weights2d: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    magnitude = np.abs(weights2d.astype(np.float64, copy=False))
    return float(magnitude[mask].sum()), float(magnitude.sum())


def prune_checkpoint(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    n: int = 2,
    m: int = 4,
    method: str = "nm",
    include: Sequence[str] = (),
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    masks: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> PruneResult:
    """Prune the selected weights of a checkpoint to N:M (or transposable N:M) and write a new file.

    Parameters
    ----------
    source, destination : str or Path
        Input and output checkpoints (.safetensors, .npz, .pt; the formats may differ). The source is
        never modified; the destination must differ from it.
    n, m : int
        The pattern: keep ``n`` of every ``m`` along the input channels.
    method : str, default "nm"
        ``"nm"`` (magnitude N:M) or a :func:`nmsolve.transposable_mask` method (see
        :func:`mask_methods`).
    include, exclude : sequence of str
        Regular expressions (``re.search``) on tensor names; float tensors of 2 or more dimensions
        that match an ``include`` (or all, if none) and no ``exclude`` are pruned. Default excludes
        embedding tables.
    masks : str or Path, optional
        Also write the boolean masks of the pruned tensors here (.safetensors or .npz).
    overwrite : bool, default False
        Allow replacing an existing destination (never the source).
    progress : bool, default False
        Show a tqdm progress bar over tensors.

    Returns
    -------
    PruneResult
        Per-layer kept magnitude and time, totals.

    Raises
    ------
    FileNotFoundError, CheckpointError (ValueError)
        Missing or unreadable source, destination equal to the source or existing, ``n > m``, a
        selected tensor whose input channels (or rows, for transposable methods) are not a multiple
        of ``m``, NaN weights, unavailable method. Nothing is written in any of these cases.

    Notes
    -----
    Every selected tensor is checked before anything is written; tensors are then read, masked and
    written one at a time. Conv weights ``[out, in, *kernel]`` are masked on their channel-last view
    ``[out * prod(kernel), in]`` (groups along ``in``). Pruned entries become zero in the tensor's
    own dtype. Ties follow the chosen solver (lower index first for ``"nm"``).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> np.savez(os.path.join(folder, "in.npz"), fc=np.arange(1.0, 17.0).reshape(2, 8))
    >>> result = prune_checkpoint(os.path.join(folder, "in.npz"), os.path.join(folder, "out.npz"), n=2, m=4)
    >>> np.load(os.path.join(folder, "out.npz"))["fc"]
    array([[ 0.,  0.,  3.,  4.,  0.,  0.,  7.,  8.],
           [ 0.,  0., 11., 12.,  0.,  0., 15., 16.]])
    """
    n, m = check_nm(n, m)
    start = time.perf_counter()
    source, destination = Path(source), Path(destination)
    masks_path = Path(masks) if masks is not None else None
    outputs = [destination] + ([masks_path] if masks_path is not None else [])
    for out in outputs:
        if _same_file(out, source):
            raise CheckpointError(f"{out} is the input checkpoint; write the pruned model to a new file")
    if masks_path is not None and _same_file(masks_path, destination):
        raise CheckpointError("--masks must name a different file than the pruned checkpoint")
    methods = mask_methods(n, m)
    if method not in methods:
        raise _unavailable(method, list(methods))
    solve = methods[method]
    transposable = is_transposable_method(method)
    if transposable:
        check_nm(n, m, allow_dense=False)  # a transposable pattern needs n < m
    pattern = f"{n}:{m} T" if transposable else f"{n}:{m}"
    with open_checkpoint(source) as reader:
        chosen = {info.name for info in select(reader.infos, include, exclude)}
        selected = [info for info in reader.infos if info.name in chosen]
        _check_divisible(selected, m, transposable)
        fmt = _format_of(destination)
        _check_writable(fmt, reader.infos, destination)
        mask_infos = [TensorInfo(info.name, info.shape, "BOOL") for info in selected]
        for out in outputs:
            if out.exists() and not overwrite:
                raise CheckpointError(f"{out} already exists; choose another name or pass --overwrite")
            if not out.parent.is_dir():
                raise CheckpointError(f"folder {out.parent} does not exist")
        layers: list[LayerPrune] = []
        packed_masks: list[np.ndarray] = []  # 1 bit per pruned weight until the masks file is written
        warmed: set[Any] = set()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(selected), desc=f"prune {pattern}", unit="tensor")

        def pruned_tensors() -> Iterator[np.ndarray]:
            for info in reader.infos:
                array = reader.read(info.name)
                if info.name not in chosen:
                    yield array
                    continue
                if bar is not None:
                    bar.set_postfix_str(info.name[-40:], refresh=False)
                weights = _scores_2d(info, array)
                _warm(solve, weights.dtype, m, warmed)
                tick = time.perf_counter()
                mask2d = np.asarray(solve(weights), dtype=bool)
                seconds = time.perf_counter() - tick
                kept, total = _kept(weights, mask2d)
                layers.append(
                    LayerPrune(info.name, info.shape, pattern, kept / total if total else 1.0, kept, total, seconds)
                )
                mask = _from_2d(mask2d, info.shape)
                if masks_path is not None:
                    packed_masks.append(np.packbits(mask, axis=None))
                if bar is not None:
                    bar.update(1)
                yield np.where(mask, array, np.zeros((), dtype=array.dtype))

        meta = dict(reader.metadata)
        meta["nmsolve"] = f"pruned {pattern} method={method} from {source.name}"
        try:
            with _atomic(outputs) as temps:
                with open(temps[0], "wb") as fp:
                    _WRITERS[fmt](fp, reader.infos, pruned_tensors(), meta)
                if masks_path is not None:
                    with open(temps[1], "wb") as fp:
                        unpacked = (
                            np.unpackbits(bits, count=info.size).view(bool).reshape(info.shape)
                            for bits, info in zip(packed_masks, mask_infos, strict=True)
                        )
                        _WRITERS[_format_of(masks_path)](fp, mask_infos, unpacked, {"nmsolve": f"masks {pattern}"})
        finally:
            if bar is not None:
                bar.close()
        copied = len(reader.infos) - len(selected)
    return PruneResult(
        source, destination, masks_path, method, n, m, tuple(layers), copied, time.perf_counter() - start
    )


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class LayerReport:
    """How far one tensor is from N:M and what each method would keep (fractions of ``sum |W|``)."""

    name: str
    shape: tuple[int, ...]
    magnitude: float  # sum |W|
    density: float  # nonzero fraction
    nm_violations: float  # fraction of groups of m with more than n nonzeros
    transposable_violations: float | None  # fraction of m x m tiles not transposable N:M (None: rows % m)
    kept: dict[str, float | None] = field(default_factory=dict)  # method -> kept fraction (None: n/a)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointReport:
    """Result of :func:`checkpoint_report`."""

    path: Path
    n: int
    m: int
    methods: tuple[str, ...]
    layers: tuple[LayerReport, ...]
    skipped: tuple[tuple[str, str], ...]  # (name, why) for selected tensors that could not be measured


def _violations(nonzero2d: np.ndarray, n: int, m: int) -> tuple[float, float | None]:
    rows, cols = nonzero2d.shape
    groups = nonzero2d.reshape(rows, cols // m, m).sum(axis=2)
    nm_bad = float((groups > n).mean()) if groups.size else 0.0
    if rows % m:
        return nm_bad, None
    tiles = nonzero2d.reshape(rows // m, m, cols // m, m)
    bad = (tiles.sum(axis=3) > n).any(axis=1) | (tiles.sum(axis=1) > n).any(axis=2)
    return nm_bad, float(bad.mean()) if bad.size else 0.0


def checkpoint_report(
    path: str | os.PathLike[str],
    *,
    n: int = 2,
    m: int = 4,
    methods: Sequence[str] | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    progress: bool = False,
) -> CheckpointReport:
    """How far each selected tensor already is from N:M / transposable N:M, and what each method keeps.

    Parameters
    ----------
    path : str or Path
        The checkpoint (read one tensor at a time, never modified).
    n, m : int
        The pattern.
    methods : sequence of str, optional
        Methods to measure (default: ``DEFAULT_REPORT_METHODS`` that are available, i.e. "nm",
        "approx" and "mcf"; any name of :func:`mask_methods` may be given). A method that cannot handle
        a tensor (e.g. rows not a multiple of ``m`` for transposable masks) is reported as None.
    include, exclude : sequence of str
        Tensor selection, as in :func:`prune_checkpoint`.
    progress : bool, default False
        Show a tqdm progress bar.

    Returns
    -------
    CheckpointReport
        Per tensor: nonzero density, the fraction of groups of ``m`` holding more than ``n``
        nonzeros (0 means the tensor is already N:M), the fraction of ``m x m`` tiles violating
        transposable N:M, and the kept fraction of ``sum |W|`` per method.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> np.savez(path, fc=np.array([[1.0, 0.0, 2.0, 0.0], [3.0, 4.0, 5.0, 0.0]]))
    >>> layer = checkpoint_report(path, n=2, m=4, methods=["nm"]).layers[0]
    >>> layer.nm_violations, round(layer.kept["nm"], 3)
    (0.5, 0.8)
    """
    n, m = check_nm(n, m)
    available = mask_methods(n, m)
    if methods is None:
        chosen_methods = [name for name in DEFAULT_REPORT_METHODS if name in available]
    else:
        chosen_methods = list(methods)
    for method in chosen_methods:
        if method not in available:
            raise _unavailable(method, list(available))
    layers: list[LayerReport] = []
    skipped: list[tuple[str, str]] = []
    warmed: set[Any] = set()
    with open_checkpoint(path) as reader:
        selected = select(reader.infos, include, exclude)
        iterator: Iterable[TensorInfo] = selected
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(selected, desc=f"report {n}:{m}", unit="tensor")
        for info in iterator:
            rows, cols = _matrix_shape(info.shape)
            if cols % m:
                skipped.append((info.name, f"{cols} input channels, not a multiple of m={m}"))
                continue
            weights = _scores_2d(info, reader.read(info.name))
            nonzero = weights != 0
            nm_bad, t_bad = _violations(nonzero, n, m)
            kept: dict[str, float | None] = {}
            seconds: dict[str, float] = {}
            for method in chosen_methods:
                if is_transposable_method(method) and rows % m:
                    kept[method] = None
                    continue
                _warm(available[method], weights.dtype, m, warmed)
                tick = time.perf_counter()
                try:
                    mask = np.asarray(available[method](weights), dtype=bool)
                except ValueError as err:  # e.g. transposable masks need n < m
                    kept[method] = None
                    skipped.append((info.name, f"{method}: {err}"))
                    continue
                seconds[method] = time.perf_counter() - tick
                got, total = _kept(weights, mask)
                kept[method] = got / total if total else 1.0
            magnitude = float(np.abs(weights).sum(dtype=np.float64))
            layers.append(
                LayerReport(info.name, info.shape, magnitude, float(nonzero.mean()), nm_bad, t_bad, kept, seconds)
            )
    return CheckpointReport(Path(path), n, m, tuple(chosen_methods), tuple(layers), tuple(skipped))


# --------------------------------------------------------------------------- command line


def _add_selection_arguments(parser: Any) -> None:
    parser.add_argument("--n", type=int, default=2, help="keep n of every m (default 2)")
    parser.add_argument("--m", type=int, default=4, help="group size m (default 4)")
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="REGEX",
        help="only tensors whose name matches (re.search; repeatable; default: every float tensor of 2+ dims)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=None,
        metavar="REGEX",
        help=f"skip tensors whose name matches (repeatable; default {list(DEFAULT_EXCLUDE)}, embedding tables; "
        "any --exclude replaces the default, --exclude '$^' excludes nothing)",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")


def add_prune_arguments(parser: Any) -> None:
    """Arguments of ``nmsolve prune`` (registered in :data:`nmsolve.cli.COMMANDS`)."""
    parser.add_argument("input", metavar="IN", help="checkpoint to read (.safetensors, .npz, .pt/.pth/.bin)")
    parser.add_argument("output", metavar="OUT", help="pruned checkpoint to write (format from its extension)")
    parser.add_argument(
        "--method",
        default="nm",
        help="nm (magnitude N:M) or a transposable method of nmsolve.transposable_mask, e.g. mcf, approx",
    )
    parser.add_argument("--masks", metavar="FILE", help="also write the boolean masks (.safetensors or .npz)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT (and FILE) if they exist")
    _add_selection_arguments(parser)


def add_report_arguments(parser: Any) -> None:
    """Arguments of ``nmsolve report``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint to inspect")
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated methods to measure (default: {','.join(DEFAULT_REPORT_METHODS)}; "
        "any method of nmsolve prune --method)",
    )
    _add_selection_arguments(parser)


def _show_progress(args: Any) -> bool:
    import sys

    return bool(sys.stderr.isatty()) if args.progress is None else bool(args.progress)


def _cli_call(fn: Callable[[], Any]) -> Any:
    from nmsolve.cli import CliError

    try:
        return fn()
    except (FileNotFoundError, CheckpointError, ValueError) as err:
        raise CliError(str(err)) from None
    except (PermissionError, IsADirectoryError, OSError) as err:
        raise CliError(f"{type(err).__name__}: {err}") from None


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def run_prune(args: Any) -> int:
    """``nmsolve prune IN OUT ...``: prune, write, print a per-layer table and totals."""
    from nmsolve.cli import print_table

    exclude = DEFAULT_EXCLUDE if args.exclude is None else tuple(args.exclude)
    result: PruneResult = _cli_call(
        lambda: prune_checkpoint(
            args.input,
            args.output,
            n=args.n,
            m=args.m,
            method=args.method,
            include=tuple(args.include),
            exclude=exclude,
            masks=args.masks,
            overwrite=args.overwrite,
            progress=_show_progress(args),
        )
    )
    rows = [
        (layer.name, _shape(layer.shape), layer.pattern, f"{layer.kept_fraction:.4f}", f"{layer.seconds * 1e3:.1f}")
        for layer in result.layers
    ]
    print_table(("tensor", "shape", "pattern", "kept |W|", "ms"), rows)
    mask_seconds = sum(layer.seconds for layer in result.layers)
    print(
        f"\n{len(result.layers)} tensors pruned ({result.pruned_parameters:,} weights) with method {result.method!r}, "
        f"{result.copied} copied unchanged; kept |W| overall {result.kept_fraction:.4f}; "
        f"masks {mask_seconds:.2f} s, total {result.seconds:.2f} s"
    )
    print(f"wrote {result.destination}" + (f" and masks {result.masks}" if result.masks else ""))
    if not result.layers:
        print("note: no tensor matched the selection (float, 2+ dims, --include/--exclude); output equals input")
    return 0


def run_report(args: Any) -> int:
    """``nmsolve report CHECKPOINT ...``: distance from N:M / transposable N:M and kept |W| per method."""
    from nmsolve.cli import print_table

    exclude = DEFAULT_EXCLUDE if args.exclude is None else tuple(args.exclude)
    methods = None if args.methods is None else [s.strip() for s in args.methods.split(",") if s.strip()]
    report: CheckpointReport = _cli_call(
        lambda: checkpoint_report(
            args.checkpoint,
            n=args.n,
            m=args.m,
            methods=methods,
            include=tuple(args.include),
            exclude=exclude,
            progress=_show_progress(args),
        )
    )
    pattern = f"{report.n}:{report.m}"

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    header = ["tensor", "shape", "nonzero", f"groups not {pattern}", f"tiles not {pattern} T"]
    header += [f"kept {name}" for name in report.methods]
    rows = []
    for layer in report.layers:
        row = [layer.name, _shape(layer.shape), pct(layer.density), pct(layer.nm_violations)]
        row.append(pct(layer.transposable_violations))
        row += ["n/a" if layer.kept[name] is None else f"{layer.kept[name]:.4f}" for name in report.methods]
        rows.append(row)
    total = sum(layer.magnitude for layer in report.layers)
    if report.layers:
        summary = ["all (|W|-weighted)", "", "", "", ""]
        for name in report.methods:
            parts = [(layer.kept[name], layer.magnitude) for layer in report.layers]
            if any(k is None for k, _ in parts) or not total:
                summary.append("n/a")
            else:
                summary.append(f"{sum(k * w for k, w in parts if k is not None) / total:.4f}")
        rows.append(summary)
    print_table(header, rows)
    print(
        f"\ngroups not {pattern}: share of groups of {report.m} (along input channels) holding more than "
        f"{report.n} nonzeros (0% = already {pattern}); tiles not {pattern} T: share of {report.m}x{report.m} tiles "
        "that break the transposable pattern; kept: fraction of sum|W| each method keeps."
    )
    for name, why in report.skipped:
        print(f"skipped {name}: {why}")
    return 0
