"""Checkpoint files: read and write .safetensors, .npz and torch .pt state dicts, one tensor at a time.

* :func:`open_checkpoint` lists a checkpoint's tensors (:class:`TensorInfo`: name, shape, dtype code)
  from its header and reads them one at a time; :func:`write_checkpoint` streams tensors into a new
  file.
* Writes go to a temporary file beside the destination and are renamed into place only when
  complete (:func:`atomic_files`), so a failure never leaves a partial file.
* Tensors travel as numpy arrays; dtypes are named by safetensors codes (``"F32"``, ``"BF16"``...),
  and dtypes numpy lacks (bfloat16, float8) are kept as their raw bits. :func:`decode_float` gives
  the float view that masks are computed on.

This module knows nothing about pruning. The format-level helpers :func:`format_of`,
:func:`check_writable`, :data:`WRITERS`, :func:`same_file` and :func:`atomic_files` are shared with
:mod:`nmsolve.checkpoint.prune`, which writes a pruned checkpoint and its masks in one atomic step.

Memory: .safetensors and .npz are read and written one tensor at a time. ``torch.save`` needs the
whole state dict at once, so a ``.pt`` *output* holds every tensor in memory until it is written (a
``.pt`` input is memory-mapped); prefer .safetensors for very large models.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import importlib.util
import itertools
import json
import math
import os
import shutil
import signal
import stat
import struct
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nmsolve._validate import check_bool

__all__ = [
    "FORMATS",
    "WRITERS",
    "CheckpointError",
    "Reader",
    "TensorInfo",
    "atomic_files",
    "check_writable",
    "commit",
    "decode_float",
    "format_of",
    "open_checkpoint",
    "place_noreplace",
    "same_file",
    "write_checkpoint",
    "write_torch",
]

FORMATS = {".safetensors": "safetensors", ".npz": "npz", ".pt": "torch", ".pth": "torch", ".bin": "torch"}

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
    def nbytes(self) -> int:
        return self.size * _CODE_TO_NUMPY[self.dtype].itemsize

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


def _header_metadata(path: Path, meta: Any) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(
            f"{path}: the header's __metadata__ must be a JSON object of strings to strings, got {meta!r:.200}; "
            "the file is corrupt or was not written by a safetensors writer"
        )
    return dict(meta)


def _header_entries(path: Path, header: dict[str, Any], data_size: int) -> list[tuple[int, TensorInfo]]:
    """Check every tensor entry of a safetensors header; ``(begin, info)`` in file order.

    Offsets must be integers within the data section, each tensor's byte size must be its dtype's
    size times the product of its shape, and tensors may not overlap (the data section is ``data_size`` bytes).
    """
    entries: list[tuple[int, int, TensorInfo]] = []
    for name, entry in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise CheckpointError(f"{where} has a malformed header entry {entry!r:.200} (dtype, shape, data_offsets)")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(code, str) or code not in _CODE_TO_NUMPY:
            raise CheckpointError(
                f"{where} has dtype {code!r:.50}, which is not supported; one of {list(_CODE_TO_NUMPY)}"
            )
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise CheckpointError(f"{where} has shape {shape!r:.100}; a shape is a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise CheckpointError(f"{where} has data_offsets {offsets!r:.100}; they must be two integers [begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise CheckpointError(
                f"{where} has data_offsets [{begin}, {end}] outside the data section of {data_size} bytes"
            )
        nbytes = math.prod(shape) * _CODE_TO_NUMPY[code].itemsize
        if end - begin != nbytes:
            raise CheckpointError(
                f"{where} has data_offsets [{begin}, {end}] ({end - begin} bytes) but dtype {code} and shape "
                f"{tuple(shape)} need {nbytes} bytes"
            )
        entries.append((begin, end, TensorInfo(name, tuple(shape), code)))
    entries.sort(key=lambda e: (e[0], e[1]))  # file order, so reading is sequential
    for (_, end_a, a), (begin_b, _, b) in itertools.pairwise(entries):
        if begin_b < end_a:
            raise CheckpointError(f"{path}: tensors {a.name!r} and {b.name!r} overlap (bytes {begin_b}..{end_a})")
    return [(begin, info) for begin, _, info in entries]


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
        self.metadata = _header_metadata(path, header.pop("__metadata__", {}))
        entries = _header_entries(path, header, size - self._start)
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


def _flatten(tree: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """``(key path, leaf)`` for every leaf of nested dicts (anything that is not a dict is a leaf)."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _dotted(keys: tuple[Any, ...]) -> str:
    return ".".join(str(k) for k in keys)


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


def _key_path(keys: tuple[Any, ...]) -> str:
    return "".join(f"[{k!r}]" for k in keys)


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
        self.tree = obj  # the nested structure, rebuilt around the pruned tensors for a .pt output
        self._tensors: dict[str, Any] = {}
        self.non_tensors: list[str] = []  # entries that are not tensors (kept in a .pt output only)
        paths: dict[str, tuple[Any, ...]] = {}
        for keys, value in _flatten(obj):
            name = _dotted(keys)
            if name in paths:
                raise CheckpointError(
                    f"{path}: entries {_key_path(paths[name])} and {_key_path(keys)} both flatten to the name "
                    f"{name!r}; rename one of them (a checkpoint's tensor names must be unique)"
                )
            paths[name] = keys
            if isinstance(value, torch.Tensor):
                self._tensors[name] = value
            else:
                self.non_tensors.append(name)
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


def format_of(path: Path) -> str:
    """The format (``"safetensors"``, ``"npz"`` or ``"torch"``) that ``path``'s extension names."""
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
        installed for the latter); or a sharded checkpoint (:class:`ShardedReader`): its index
        (``model.safetensors.index.json``) or the folder holding it.

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
    reader: Reader
    if path.is_dir():
        reader = ShardedReader(find_index(path), folder=path)
    elif path.name.endswith(".index.json"):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        reader = ShardedReader(path)
    else:
        fmt = format_of(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        reader = _READERS[fmt](path)
    try:
        yield reader
    finally:
        reader.close()


# --------------------------------------------------------------------------- sharded checkpoints

INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# files of a model folder that hold weights, and so are never copied beside a pruned sharded checkpoint
WEIGHT_SUFFIXES = (*FORMATS, ".h5", ".msgpack", ".ckpt", ".gguf", ".onnx", ".tflite")


def find_index(folder: Path) -> Path:
    """The index file of a sharded checkpoint folder (``model.safetensors.index.json`` preferred)."""
    for name in INDEX_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for p in folder.glob("*.index.json") if p.is_file())
    if len(found) == 1:
        return folder / found[0]
    if found:
        raise CheckpointError(f"{folder} holds several index files {found}; name the one to use")
    raise CheckpointError(
        f"{folder} is a folder, not a checkpoint file, and holds no model.safetensors.index.json; name a "
        f"checkpoint file in it (.safetensors, .npz, .pt/.pth/.bin) or the folder of a sharded checkpoint"
    )


class ShardedReader:
    """A sharded checkpoint (the way ``save_pretrained`` writes large models): an index JSON
    ``{"metadata": {"total_size": N}, "weight_map": {tensor: shard file}}`` beside the shard files.

    Tensors are listed shard by shard (``shards``, ``shard_infos``); ``read`` opens one shard at a
    time and closes it when a tensor of another shard is asked for, so memory stays at one shard
    (one tensor for .safetensors shards).
    """

    format = "sharded"

    def __init__(self, index: Path, folder: Path | None = None) -> None:
        self.path = index
        self.folder = folder  # the folder the user named, whose other files are copied to the output
        self.metadata: dict[str, str] = {}
        try:
            self.index = json.loads(index.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{index} is not a sharded-checkpoint index: it is not JSON ({err})") from None
        weight_map = self.index.get("weight_map") if isinstance(self.index, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
        ):
            raise CheckpointError(f"{index} is not a sharded-checkpoint index: no weight_map of tensor -> shard file")
        self.shards: list[str] = sorted(set(weight_map.values()))
        for shard in self.shards:
            if Path(shard).name != shard or shard.startswith("."):
                raise CheckpointError(f"{index}: shard {shard!r} must be a plain file name in the index's folder")
            format_of(Path(shard))
            if not (index.parent / shard).is_file():
                raise CheckpointError(f"{index}: shard file {shard} is missing from {index.parent}")
        self.shard_infos: dict[str, list[TensorInfo]] = {}
        self.shard_metadata: dict[str, dict[str, str]] = {}
        for shard in self.shards:
            reader = _READERS[format_of(Path(shard))](index.parent / shard)
            try:
                self.shard_infos[shard] = list(reader.infos)
                self.shard_metadata[shard] = dict(reader.metadata)
            finally:
                reader.close()
            for info in reader.infos:
                if weight_map.get(info.name) != shard:
                    raise CheckpointError(
                        f"{index}: tensor {info.name!r} is in {shard} but the weight_map says "
                        f"{weight_map.get(info.name)!r}; the index does not match its shards"
                    )
        self._shard_of = {info.name: shard for shard, infos in self.shard_infos.items() for info in infos}
        missing = sorted(set(weight_map) - set(self._shard_of))
        if missing:
            raise CheckpointError(f"{index}: tensors {missing[:5]} of the weight_map are in none of the shards")
        self.infos = [info for shard in self.shards for info in self.shard_infos[shard]]
        self._open: tuple[str, Reader] | None = None

    def read(self, name: str) -> np.ndarray:
        shard = self._shard_of[name]
        if self._open is None or self._open[0] != shard:
            self.close()
            self._open = (shard, _READERS[format_of(Path(shard))](self.path.parent / shard))
        return self._open[1].read(name)

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def extra_files(self) -> tuple[list[Path], list[Path]]:
        """The folder's files to copy beside a pruned copy (config, tokenizer...), and those left out
        (other weight files, index files, sub-folders). Nothing when the index itself was named."""
        if self.folder is None:
            return [], []
        copy: list[Path] = []
        skip: list[Path] = []
        for item in sorted(self.folder.iterdir()):
            if item.name.startswith(".") or item.name in self.shards or item == self.path:
                continue
            weights = item.name.endswith(".index.json") or item.suffix.lower() in WEIGHT_SUFFIXES
            (copy if item.is_file() and not weights else skip).append(item)
        return copy, skip


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


def write_torch(
    fp: Any,
    infos: Sequence[TensorInfo],
    tensors: Iterable[np.ndarray],
    meta: dict[str, str],
    template: dict[Any, Any] | None = None,
) -> None:
    """A flat state dict; or, given the ``template`` a .pt reader loaded (its ``tree``), the same nested
    structure with each tensor replaced by the one written under its dotted name and every other entry kept."""
    torch = _need_torch("writing a .pt file")
    state: dict[str, Any] = {}
    for info, array in zip(infos, tensors, strict=True):
        array = np.require(array, requirements="C")  # keeps 0-d tensors 0-d (ascontiguousarray makes them 1-d)
        if info.dtype == "BF16":
            value = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        else:
            value = torch.from_numpy(array)
        state[info.name] = value
    if template is not None:

        def rebuild(tree: dict[Any, Any], prefix: tuple[Any, ...]) -> dict[Any, Any]:
            out: dict[Any, Any] = {}
            for key, value in tree.items():
                keys = (*prefix, key)
                if isinstance(value, dict) and value:
                    out[key] = rebuild(value, keys)
                else:
                    out[key] = state.get(_dotted(keys), value)
            return out

        torch.save(rebuild(template, ()), fp)
        return
    torch.save(state, fp)


# format -> writer(fp, infos, tensors, metadata): consumes ``tensors`` one at a time into ``fp``
WRITERS: dict[str, Callable[[Any, Sequence[TensorInfo], Iterable[np.ndarray], dict[str, str]], None]] = {
    "safetensors": _write_safetensors,
    "npz": _write_npz,
    "torch": write_torch,
}


def check_writable(fmt: str, infos: Sequence[TensorInfo], path: Path) -> None:
    """Raise :class:`CheckpointError` if format ``fmt`` cannot store every dtype of ``infos``."""
    for info in infos:
        if fmt == "npz" and info.dtype in _RAW_CODES:
            raise CheckpointError(
                f"tensor {info.name!r} has dtype {info.dtype}, which .npz cannot store; write {path.stem}.safetensors"
            )
        if fmt == "torch" and info.dtype not in _TORCH_CODES.values():
            raise CheckpointError(f"tensor {info.name!r} has dtype {info.dtype}, which this writer cannot store in .pt")


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file (resolved paths, or the same inode)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _renameat2_noreplace(src: Path, dst: Path) -> bool:
    """``rename(src, dst)`` failing if ``dst`` exists (Linux ``renameat2``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # this kernel or file system cannot do it: the caller falls back
    raise OSError(err, os.strerror(err), str(dst))


def _exists_error(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path} already exists (another process may have written it meanwhile); "
        "nothing was replaced: choose another name or pass --overwrite"
    )


def place_noreplace(temp: Path, path: Path) -> None:
    """Move ``temp`` to ``path`` only if ``path`` does not exist, atomically (never replaces a file).

    ``renameat2(RENAME_NOREPLACE)`` where the kernel has it, else a hard link then unlink of ``temp``
    (files only). A collision raises :class:`CheckpointError`; so does a file system that supports
    neither (pass overwrite there).
    """
    try:
        if _renameat2_noreplace(temp, path):
            return
    except FileExistsError:
        raise _exists_error(path) from None
    if temp.is_dir():  # a folder cannot be hard-linked: rename refuses a non-empty target, check the rest
        if path.exists():
            raise _exists_error(path)
        try:
            os.rename(temp, path)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                raise _exists_error(path) from None
            raise
        return
    try:
        os.link(temp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as err:
        if err.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise CheckpointError(
                f"cannot create {path} without the risk of replacing a file written meanwhile: its file system "
                f"supports neither hard links nor renameat2 ({err.strerror}); pass --overwrite to replace it"
            ) from None
        raise
    temp.unlink()


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot fsync a folder
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _mode_for(temp: Path, path: Path, overwrite: bool) -> int:
    """The mode an output gets: that of the file it replaces (with overwrite), else the usual 0o666/0o777 less umask."""
    if overwrite:
        with contextlib.suppress(FileNotFoundError):
            return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if temp.is_dir() else 0o666) & ~umask


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while outputs are moved into place, so they appear together or not at all."""
    held = {signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])}
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def commit(temps: Sequence[Path], paths: Sequence[Path], *, overwrite: bool = False) -> None:
    """Move finished temporaries onto their destinations: all of them, or (on a collision) none.

    Each temporary is fsynced first and its folder after. Without ``overwrite`` an existing
    destination is never replaced, even one created after the start (:func:`place_noreplace`); the
    destinations already placed are then removed again. With ``overwrite`` a replaced file keeps its mode.
    """
    for temp, path in zip(temps, paths, strict=True):
        os.chmod(temp, _mode_for(temp, path, overwrite))  # mkstemp/mkdtemp make them private
        if temp.is_dir():
            for item in temp.iterdir():
                _fsync(item)
        _fsync(temp)
    with _signals_deferred():
        placed: list[Path] = []
        try:
            for temp, path in zip(temps, paths, strict=True):
                if overwrite and temp.is_dir() and path.is_dir():  # a folder: move the old one aside first
                    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
                    os.rename(path, old / path.name)
                    os.rename(temp, path)
                    shutil.rmtree(old, ignore_errors=True)
                elif overwrite:
                    os.replace(temp, path)
                else:
                    place_noreplace(temp, path)
                placed.append(path)
        except BaseException:
            if not overwrite:  # what this call created is removed: all or nothing
                for path in placed:
                    with contextlib.suppress(OSError):
                        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            raise
        for folder in {path.parent for path in paths}:
            _fsync(folder)


@contextlib.contextmanager
def atomic_files(
    paths: Sequence[Path], *, overwrite: bool = False, folders: Sequence[Path] = ()
) -> Iterator[list[Path]]:
    """Temporaries beside each destination, moved into place (:func:`commit`) only if the block succeeds.

    A destination listed in ``folders`` gets a temporary folder, the others a temporary file. The
    temporaries are removed on any failure, an interrupt included (the command line turns SIGTERM
    and SIGHUP into an exception for this).
    """
    temps: list[Path] = []
    try:
        for path in paths:
            if path in folders:
                temps.append(Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)))
            else:
                handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                os.close(handle)
                temps.append(Path(name))
        yield temps
        commit(temps, paths, overwrite=overwrite)
    finally:
        for temp in temps:
            if temp.is_dir() and not temp.is_symlink():
                shutil.rmtree(temp, ignore_errors=True)
            else:
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
    overwrite = check_bool(overwrite, "overwrite")
    path = Path(path)
    fmt = format_of(path)
    check_writable(fmt, infos, path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} already exists; choose another name or pass overwrite (--overwrite)")
    if not path.parent.is_dir():
        raise CheckpointError(f"folder {path.parent} does not exist")

    def checked() -> Iterator[np.ndarray]:
        for info, array in zip(infos, tensors, strict=True):
            if tuple(array.shape) != info.shape:
                raise CheckpointError(f"tensor {info.name!r} has shape {array.shape}, header says {info.shape}")
            yield array

    with atomic_files([path], overwrite=overwrite) as (temp,), open(temp, "wb") as fp:
        WRITERS[fmt](fp, infos, checked(), metadata or {})
