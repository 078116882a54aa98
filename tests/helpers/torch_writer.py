"""Writes files in `torch.save`'s two formats from numpy arrays, without PyTorch.

For the tests and the benchmark of `mixmo_tf.importing.torch_format`: they need torch.save files
of known content, damaged ones and malicious ones, on machines without PyTorch.

The pickles are those torch writes (protocol 2; checked against torch 2.13's bytes): a tensor
is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`, its
storage a persistent id ("storage", torch.<Type>Storage, key, "cpu", numel) in the zip format,
plus a None view in the legacy one. numpy views of one base array share its storage, as torch
views do. The zip holds torch's entries in torch's order, stored uncompressed, each entry's
data aligned to 64 bytes by padding its local header's extra field (torch's "FB" field).

The globals are emitted as GLOBAL opcodes by a pure-Python pickler (`pickle._Pickler`) that
knows marker objects, so that no `torch` module is faked in sys.modules (TensorFlow and Keras
look for one there).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile
import zlib
from typing import Any

import ml_dtypes
import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
PROTOCOL = 2  # torch.save's default pickle protocol
ALIGNMENT = 64  # torch aligns every zip entry's data to this
_STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}
_TYPE_CODES = (("short", "h"), ("int", "i"), ("long", "l"))  # torch's system info sizes
_LOCAL_HEADER_SIZE = 30  # a zip local file header before its name and extra field
_PADDING_FIELD_HEADER = 4  # "FB" and the padding's length
_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so that equal content gives equal files


@dataclasses.dataclass(frozen=True)
class TensorView:
    """A tensor written with exactly this storage (a C-contiguous array; all its elements),
    offset, size and stride (in elements), unchecked: for views that overrun their storage."""

    storage: np.ndarray
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class PersistentId:
    """An object written as this persistent id, verbatim: for ids of other forms."""

    pid: tuple


@dataclasses.dataclass(frozen=True)
class _Global:
    """A reference to module.name, written as a GLOBAL opcode."""

    module: str
    name: str


@dataclasses.dataclass(frozen=True)
class _Call:
    """module.name(*args), written as GLOBAL, the arguments and REDUCE."""

    module: str
    name: str
    args: tuple


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    """A tensor's storage, written as its persistent id."""

    root: np.ndarray


def write_torch_file(
    obj: Any,
    path: str | os.PathLike[str],
    legacy: bool = False,
    prefix: str = "archive",
    byteorder: str = "little",
) -> None:
    """Writes `obj` to `path` as `torch.save` would, with its numpy arrays as tensors.

    Args:
        obj: nested dicts, OrderedDicts, lists, tuples, numbers, strings, None and numpy
            arrays (float16/32/64, ml_dtypes.bfloat16, int8/16/32/64, uint8, bool) or
            `TensorView`s.
        path: the file to write.
        legacy: the format of torch < 1.6 (`_use_new_zipfile_serialization=False`) instead
            of the zip.
        prefix: the zip's folder (torch names it after the file).
        byteorder: the writing machine's: in the zip the storages' byte order (recorded in
            `byteorder`); in the legacy format only the system info's `little_endian`, as
            torch writes legacy storages little-endian on every machine.
    """
    if legacy:
        _write_legacy(obj, path, byteorder)
    else:
        _write_zip(obj, path, prefix, byteorder)


def write_pickle_with_global(
    path: str | os.PathLike[str],
    module: str,
    name: str,
    args: tuple,
    legacy: bool = False,
    prefix: str = "archive",
) -> None:
    """Writes a torch.save-shaped file whose main pickle calls module.name(*args) when loaded
    with plain pickle (or torch.load(weights_only=False)): a malicious checkpoint."""
    write_torch_file(_Call(module, name, tuple(args)), path, legacy, prefix)


# ---- pickling --------------------------------------------------------------------------


class _TorchPickler(pickle._Pickler):
    """Pickles like torch.save: arrays as rebuilt tensors over persistent storage ids.

    `storages` maps each storage's key to its array (C-contiguous), in order of first use; the
    same array object is the same storage.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, stream: io.BufferedIOBase, legacy: bool) -> None:
        super().__init__(stream, protocol=PROTOCOL)
        self.storages: dict[str, np.ndarray] = {}
        self._keys: dict[int, str] = {}  # id(storage) -> key
        self._legacy = legacy
        self._globals: dict[tuple[str, str], _Global] = {}

    def global_marker(self, module: str, name: str) -> _Global:
        """One marker per global, so that the memo writes repeats as BINGET, as torch's do."""
        return self._globals.setdefault((module, name), _Global(module, name))

    def persistent_id(self, obj: Any) -> tuple | None:
        if isinstance(obj, PersistentId):
            return obj.pid
        if not isinstance(obj, _StorageRef):
            return None
        key = self._key(obj.root)
        storage_type = self.global_marker("torch", _STORAGE_NAMES[_native(obj.root.dtype)])
        if self._legacy:  # a new key string each time and a view metadata, as torch's
            return ("storage", storage_type, str(int(key)), "cpu", obj.root.size, None)
        return ("storage", storage_type, key, "cpu", obj.root.size)

    def _key(self, root: np.ndarray) -> str:
        """The storage's key: "0", "1", ... in the zip; in the legacy format, as torch's
        storage addresses, the array's id (the files sort them as strings)."""
        if id(root) not in self._keys:
            key = str(id(root) if self._legacy else len(self._keys))
            self._keys[id(root)] = key
            self.storages[key] = root
        return self._keys[id(root)]

    def save_call(self, module: str, name: str, args: tuple, obj: Any) -> None:
        """Writes module.name(*args) as GLOBAL, args, REDUCE, then memoizes `obj`."""
        self.save(self.global_marker(module, name))
        self.save(args)
        self.write(pickle.REDUCE)
        self.memoize(obj)


def _save_global(pickler: _TorchPickler, marker: _Global) -> None:
    pickler.write(pickle.GLOBAL + f"{marker.module}\n{marker.name}\n".encode("ascii"))
    pickler.memoize(marker)


def _save_call(pickler: _TorchPickler, call: _Call) -> None:
    pickler.save_call(call.module, call.name, call.args, call)


def _save_tensor(pickler: _TorchPickler, tensor: np.ndarray | TensorView) -> None:
    view = tensor if isinstance(tensor, TensorView) else _view_of(tensor)
    hooks = collections.OrderedDict()
    args = (_StorageRef(view.storage), view.offset, view.size, view.stride, False, hooks)
    pickler.save_call("torch._utils", "_rebuild_tensor_v2", args, tensor)


_TorchPickler.dispatch.update(
    {_Global: _save_global, _Call: _save_call, np.ndarray: _save_tensor, TensorView: _save_tensor}
)


def _view_of(array: np.ndarray) -> TensorView:
    """`array` as torch would save it: a view of its base array's storage when it is one
    (same dtype, base contiguous, strides non-negative), else of its own contiguous copy."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    itemsize = array.itemsize
    shares = root.dtype == array.dtype and root.flags.c_contiguous
    if shares and all(step >= 0 and step % itemsize == 0 for step in array.strides):
        start = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        strides = tuple(step // itemsize for step in array.strides)
        return TensorView(root, start // itemsize, array.shape, strides)
    copy = np.ascontiguousarray(array)
    return TensorView(copy, 0, array.shape, tuple(step // itemsize for step in copy.strides))


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=")


def _storage_bytes(root: np.ndarray, byteorder: str) -> memoryview:
    """A storage's elements as bytes in `byteorder`."""
    order = "<" if byteorder == "little" else ">"
    ordered = np.ascontiguousarray(root, dtype=_native(root.dtype).newbyteorder(order))
    return memoryview(ordered.reshape(-1).view(np.uint8))


def _pickled(obj: Any, legacy: bool) -> tuple[bytes, dict[str, np.ndarray]]:
    """`obj`'s main pickle and its storages by key."""
    stream = io.BytesIO()
    pickler = _TorchPickler(stream, legacy)
    pickler.dump(obj)
    return stream.getvalue(), pickler.storages


# ---- the two formats -------------------------------------------------------------------


def _write_zip(obj: Any, path: str | os.PathLike[str], prefix: str, byteorder: str) -> None:
    """The zip format: torch 2.13's entries in its order, each entry's data 64-byte aligned."""
    pickled, storages = _pickled(obj, legacy=False)
    records = [
        ("data.pkl", pickled),
        (".format_version", b"1"),
        (".storage_alignment", str(ALIGNMENT).encode()),
        ("byteorder", byteorder.encode()),
        *((f"data/{key}", _storage_bytes(root, byteorder)) for key, root in storages.items()),
        ("version", b"3\n"),
        # torch writes a 40-digit id of the save; here one derived from the pickle.
        (".data/serialization_id", f"{zlib.crc32(pickled):040d}".encode()),
    ]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in records:
            _write_aligned(archive, f"{prefix}/{name}", payload)


def _write_aligned(archive: zipfile.ZipFile, name: str, payload: bytes | memoryview) -> None:
    """Writes one stored entry whose data starts at a multiple of ALIGNMENT in the file."""
    info = zipfile.ZipInfo(name, date_time=_DATE_TIME)
    info.file_size = memoryview(payload).nbytes
    if info.file_size * 1.05 > zipfile.ZIP64_LIMIT:
        raise ValueError(f"{name}: entries over 2 GiB would need a zip64 field; keep them smaller.")
    data_start = archive.fp.tell() + _LOCAL_HEADER_SIZE + len(name.encode()) + _PADDING_FIELD_HEADER
    padding = -data_start % ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", padding) + b"Z" * padding
    with archive.open(info, "w") as entry:
        entry.write(payload)


def _write_legacy(obj: Any, path: str | os.PathLike[str], byteorder: str) -> None:
    """The legacy format: magic, protocol, system info, object and sorted keys pickles, then
    per key an int64 count and the elements, both little-endian."""
    pickled, storages = _pickled(obj, legacy=True)
    system_info = {
        "protocol_version": LEGACY_PROTOCOL_VERSION,
        "little_endian": byteorder == "little",
        "type_sizes": {name: struct.calcsize(f"={code}") for name, code in _TYPE_CODES},
    }
    keys = sorted(storages)
    with open(path, "wb") as stream:
        for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, system_info):
            pickle.dump(header, stream, protocol=PROTOCOL)
        stream.write(pickled)
        pickle.dump(keys, stream, protocol=PROTOCOL)
        for key in keys:
            stream.write(struct.pack("<q", storages[key].size))
            stream.write(_storage_bytes(storages[key], "little"))


def write_main_pickle(path: str | os.PathLike[str], pickled: bytes, legacy: bool = False) -> None:
    """Writes a torch.save-shaped file whose main pickle is `pickled` verbatim and which holds
    no storages: for pickles torch never writes (hostile nesting, sizes)."""
    if legacy:
        with open(path, "wb") as stream:
            for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {}):
                pickle.dump(header, stream, protocol=PROTOCOL)
            stream.write(pickled)
            pickle.dump([], stream, protocol=PROTOCOL)
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/version", b"3\n")
