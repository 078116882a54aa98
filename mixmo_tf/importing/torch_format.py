"""Reads files written by `torch.save`, without PyTorch and without running anything in them.

The MixMo authors released their checkpoints as `torch.save` files: a dict of the epoch, the
classifier's state dict and its SGD optimizer's state dict. `read_torch_file` returns such a
file's object with every tensor as a `numpy.ndarray`, so that their weights can be loaded with
no PyTorch installed.

Both formats of `torch.save` are read:

- zip (torch >= 1.6): `<prefix>/data.pkl`, a pickle whose tensors name their storages by
  persistent id ("storage", type, key, location, numel); `<prefix>/data/<key>`, each
  storage's raw bytes, stored uncompressed at 64-byte aligned offsets; `<prefix>/version`;
  and since torch 2.1 `<prefix>/byteorder` ("little" or "big", the writer's; "little" when
  absent, as torch assumes).
- legacy (torch < 1.6, which the authors pinned, or `_use_new_zipfile_serialization=False`):
  pickles of the magic number, of the protocol version 1001, of the writer's system info, of
  the object (persistent ids ("storage", type, root key, location, numel, view metadata)) and
  of the sorted storage keys; then per key an int64 element count and the elements. Count and
  elements are little-endian whatever the writer: torch converts them on big-endian machines,
  and its own reader ignores the system info (torch/csrc/generic/serialization.cpp,
  torch/serialization.py `_legacy_load`).

Safety: unpickling can call any importable function. The unpickler here resolves only what a
state dict holds (`_StateDictUnpickler.find_class`) to this module's own functions, which build
numpy views; nothing is imported or called by name from the file, and any other global stops
the read (`UnsafeTorchFileError`) before anything runs. Every argument a pickle passes is
checked: types, each tensor view inside its storage, each storage inside the file.

Bounds: nothing a file declares makes the reader allocate much more than the file. Before a
pickle is unpickled, a scan of its opcodes (`_scan_pickle`) checks its size, that every
length it declares is present, and how deep its containers nest (deep nesting crashes
Python); a compressed zip entry is inflated only up to its declared size, and the declared
sizes are bounded by the file's; a tensor holds at most the elements of its storage (no
broadcast views), so that copying it costs no more than the file holds.

Memory: the file is memory-mapped copy-on-write and tensors are numpy views of the mapping, so
storages shared by several tensors are read once, nothing is copied, and the arrays are
writable (a written page becomes private; the file never changes). Only a compressed zip
entry, a storage in a foreign byte order or bfloat16 (widened to float32, exactly) is copied.
The arrays keep the mapping alive: replacing the file is safe, but truncating it in place
while they are in use makes reading them crash the process (SIGBUS), as with any mapping.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import mmap
import os
import pickle
import pickletools
import reprlib
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from mixmo_tf.config.errors import UserError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
# torch.<name>Storage -> the numpy dtype of its elements. bfloat16's are read as their raw
# 16 bits and widened to float32 (`_elements`).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(np.uint16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}
_ZIP_SIGNATURE = b"PK\x03\x04"  # every zip torch writes starts with a local file header
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, name length and extra length
_LEGACY_COUNT = struct.Struct("<q")  # a legacy storage's element count
_PICKLE_PROTO = b"\x80"  # the PROTO opcode that starts a pickle of protocol >= 2
_SNIFF_BYTES = 1024  # what is read to tell a zip, a pickle, a web page or text apart
# Bounds on what a file may ask of this reader, checked before the work they bound:
# - a pickle's size: a state dict pickles in ~100 bytes per tensor (WRN-28-10 M=2 with its
#   momentum buffers: 24 KB), so 1 MiB is ~10,000 tensors; a pickle is scanned in pure
#   Python before it is unpickled (at worst seconds and tens of MiB per MiB: one empty list
#   per byte), and each of its bytes can build an object.
_MAX_PICKLE_BYTES = 2**20
_LARGE_PICKLE = f"a pickle of more than {_MAX_PICKLE_BYTES // 2**20} MiB"
# - how deep its containers nest: a checkpoint nests ~10 levels (the dict, the optimizer's
#   state by parameter, a tensor's arguments); Python hashes nested tuples recursively, and a
#   few hundred thousand levels overflow the C stack (a crash, not an exception).
_MAX_NESTING = 100
# - the bytes its compressed zip entries inflate to, in all: 16 times the file (torch stores
#   entries uncompressed; re-zipped weights shrink by less than 2), at least 1 MiB.
_MAX_INFLATION = 16
_MIN_INFLATION_BYTES = 2**20
# - the size of a record that holds a word or a number (version, byteorder).
_MAX_RECORD_BYTES = 64
# Bytes of text (as file(1) counts them): controls that text uses and everything from space.
_TEXT_BYTES = bytes({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x100)))
# What pickle, zipfile and numpy raise on damaged input (zipfile: RuntimeError for an
# encrypted entry, NotImplementedError for an unknown compression), turned into
# `TorchFileError`.
_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    AttributeError,
    IndexError,
    KeyError,
    TypeError,
    ValueError,
    OverflowError,
    struct.error,
    RecursionError,
)
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    IndexError,
    NotImplementedError,
    RuntimeError,
)


class TorchFileError(UserError, ValueError):
    """The file cannot be read: not a torch.save file, truncated or damaged, or holding what
    a state dict never holds."""


class UnsafeTorchFileError(TorchFileError):
    """The file's pickle names a global outside the allow-list; it was refused, not run."""


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """The object that `torch.save` wrote to `path`, every tensor as a `numpy.ndarray`.

    Tensors keep their dtype, shape and strides (views of a shared storage stay views of one
    array) in this machine's byte order; bfloat16 tensors come back as float32. Dicts,
    OrderedDicts (in order), lists, tuples, numbers, strings and None come back as themselves.

    Raises:
        UnsafeTorchFileError: the file names a global that a state dict never needs.
        TorchFileError: not a torch.save file (e.g. a web page saved by a download), truncated
            or damaged, holding content other than tensors and plain Python values, or
            beyond the reader's bounds (module docstring: nesting, pickle and inflated sizes,
            broadcast tensors), all checked before what they bound is built.
        OSError: the file cannot be opened.
    """
    name = os.fspath(path)
    try:
        return _read(name)
    except _Problem as problem:
        error_type = UnsafeTorchFileError if isinstance(problem, _Refused) else TorchFileError
        detail = str(problem).replace("\n", " ")
        raise error_type(problem.template.format(path=name, detail=detail)) from problem.__cause__


# ---- what can go wrong, each with its one-line message -----------------------------------


class _Problem(Exception):
    """Why a file cannot be read; `read_torch_file` names the file in `template`."""

    template: str  # each kind's one-line message, with fields {path} and {detail}


class _NotTorch(_Problem):
    """Neither format of torch.save: a web page, text, another zip or another pickle."""

    template = "{path} is not a PyTorch file: {detail}."


class _Damaged(_Problem):
    """A torch.save file whose bytes do not add up: cut short, or changed."""

    template = "{path} is truncated or damaged ({detail}): download it again."


class _Unsupported(_Problem):
    """A sound torch.save file holding more than tensors and plain values."""

    template = (
        "{path} holds {detail}, which is not part of a PyTorch state dict: this reader takes "
        "files of state dicts and tensors, e.g. torch.save(model.state_dict(), path)."
    )


class _Refused(_Problem):
    """A global outside the allow-list; its detail is the global's module.name."""

    template = (
        "{path} names the global {detail}, which was refused without being run: a PyTorch "
        "state dict never needs it, so do not load this file with torch.load either."
    )


_NEITHER = (
    "it is neither a zip holding data.pkl nor a legacy torch.save file; check the path, "
    "or download the file again"
)


def _describe_other(head: bytes) -> str:
    """Why a file starting with `head` (neither a zip nor a pickle) is no torch file."""
    if not head:
        return "it is empty; download it again"
    if b"<html" in head.lower() or head.lstrip().lower().startswith(b"<!doctype html"):
        return (
            "it is an HTML page, which links to large files often return instead of the file "
            "(Google Drive answers curl and wget with a 'virus scan' warning page); download "
            "the file itself, e.g. in a browser or with gdown"
        )
    if not head.translate(None, _TEXT_BYTES):
        return (
            "it is a text file (perhaps an error message saved by the download); download "
            "the file itself"
        )
    return _NEITHER


# ---- reading ---------------------------------------------------------------------------


def _read(path: str) -> Any:
    """Tells the format from the first bytes and reads the file in it."""
    with open(path, "rb") as stream:
        head = stream.read(_SNIFF_BYTES)
        if head.startswith(_ZIP_SIGNATURE):
            return _read_zip(stream, _map(stream))
        if head.startswith(_PICKLE_PROTO):
            return _read_legacy(_map(stream))
    raise _NotTorch(_describe_other(head))


def _map(stream: BinaryIO) -> mmap.mmap:
    """The whole file mapped copy-on-write: arrays of it are writable, the file never is."""
    return mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_COPY)


@dataclasses.dataclass(frozen=True, slots=True)
class _StorageType:
    """What `torch.<name>` stands for in a pickle: the element type of a storage."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]

    def __setstate__(self, state: Any) -> None:
        _refuse_build(self)


@dataclasses.dataclass
class _Storage:
    """One storage of the file: its type, its element count, and its elements once located
    (a legacy file's are located after its main pickle)."""

    storage_type: _StorageType
    numel: int
    elements: np.ndarray | None


@dataclasses.dataclass(frozen=True, slots=True)
class _StorageView:
    """What a persistent id stands for: elements [start, start + numel) of a storage."""

    storage: _Storage
    start: int
    numel: int

    def __setstate__(self, state: Any) -> None:
        _refuse_build(self)


def _refuse_build(target: Any) -> None:
    """Stops a pickle's BUILD opcode from rewriting what this module hands the pickle.

    The classes on a pickle's stack define `__setstate__` as this: otherwise BUILD would set
    their fields (dataclasses give frozen slotted classes a `__setstate__` that does), e.g.
    a storage view's bounds after they were checked.
    """
    raise _Damaged(f"its pickle sets the state of a {type(target).__name__.lstrip('_')}")


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that resolves only what a state dict holds, and nothing by import.

    `find_class` answers from a fixed table: `collections.OrderedDict` (an immutable type),
    the tensor rebuilders as bound methods of this instance (a pickle cannot rebind their
    attributes, as it could a plain function's), and storage-type markers. `persistent_load`
    hands storage ids to `storage_for`.
    """

    def __init__(self, stream: BinaryIO, storage_for: Callable[[Any], _StorageView]) -> None:
        super().__init__(stream, encoding="utf-8")  # torch.load's encoding
        self._storage_for = storage_for
        self._allowed = {
            ("collections", "OrderedDict"): OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
        }

    def find_class(self, module: str, name: str) -> Any:
        """The allowed object named module.name; refuses every other name."""
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name.endswith("Storage"):
            raise _Unsupported(f"tensors of torch.{name}")
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _StorageView:
        """The storage view that persistent id `pid` names."""
        return self._storage_for(pid)

    def _rebuild_tensor_v2(self, *args: Any) -> np.ndarray:
        """torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
        requires_grad, backward_hooks[, metadata]): the tensor as a view of its storage."""
        _check_arity("_rebuild_tensor_v2", args, (6, 7))
        _check_type(args[4], bool, "requires_grad")
        _check_type(args[5], dict, "backward_hooks")
        if len(args) == 7 and args[6] is not None:
            _check_type(args[6], dict, "metadata")
        return _tensor(*args[:4])

    def _rebuild_tensor(self, *args: Any) -> np.ndarray:
        """torch._utils._rebuild_tensor(storage, storage_offset, size, stride): the view."""
        _check_arity("_rebuild_tensor", args, (4,))
        return _tensor(*args)

    def _rebuild_parameter(self, *args: Any) -> np.ndarray:
        """torch._utils._rebuild_parameter(data, requires_grad, backward_hooks): the data."""
        _check_arity("_rebuild_parameter", args, (3,))
        _check_type(args[0], np.ndarray, "a parameter's data")
        return args[0]


def _check_arity(function: str, args: tuple, counts: tuple[int, ...]) -> None:
    if len(args) not in counts:
        raise _Damaged(f"torch._utils.{function} called with {len(args)} arguments")


def _check_type(value: Any, expected: type, what: str) -> None:
    if not isinstance(value, expected):
        raise _Damaged(f"{what} is {reprlib.repr(value)}, not a {expected.__name__}")


def _count(value: Any, what: str) -> int:
    """`value` if it is a non-negative int (not a bool)."""
    if type(value) is not int or value < 0:
        raise _Damaged(f"{what} is {reprlib.repr(value)}, not a non-negative integer")
    return value


def _counts(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)):
        raise _Damaged(f"{what} is {reprlib.repr(values)}, not a tuple")
    return tuple(_count(value, what) for value in values)


def _tensor(view: Any, offset: Any, size: Any, stride: Any) -> np.ndarray:
    """The tensor of `size` and `stride` (in elements) at `offset` in `view`, checked to lie
    inside it. Before its storage is located (a legacy file's first pass), a stand-in of the
    right shape that takes no memory."""
    _check_type(view, _StorageView, "a tensor's storage")
    offset = _count(offset, "a tensor's storage offset")
    size, stride = _counts(size, "a tensor's size"), _counts(stride, "a tensor's stride")
    if len(size) != len(stride):
        raise _Damaged(f"a tensor's size {size} and stride {stride} differ in length")
    extent = 0 if 0 in size else 1 + sum((n - 1) * step for n, step in zip(size, stride))
    if offset + extent > view.numel:
        raise _Damaged(
            f"a tensor of size {size} and stride {stride} at offset {offset} overruns its "
            f"storage of {view.numel} elements"
        )
    if math.prod(size) > view.numel:  # what it would take once copied, bounded by the file
        raise _Unsupported(
            f"a tensor of size {size} and stride {stride} that repeats the {view.numel} "
            "elements of its storage (a broadcast view)"
        )
    elements = view.storage.elements
    if elements is None:
        return np.broadcast_to(np.zeros(()), size)
    return np.lib.stride_tricks.as_strided(
        elements[view.start + offset :], size, tuple(step * elements.itemsize for step in stride)
    )


def _unpickle(stream: BinaryIO, storage_for: Callable[[Any], _StorageView]) -> Any:
    """The next object pickled in `stream`, through the allow-list, once `_scan_pickle` has
    found it within bounds."""
    start = stream.tell()
    try:
        _scan_pickle(stream, start)
        stream.seek(start)
        return _StateDictUnpickler(stream, storage_for).load()
    except _PICKLE_ERRORS as error:
        raise _Damaged(f"unreadable pickle: {error}") from error


def _no_storage(pid: Any) -> _StorageView:
    """The persistent-id handler of the pickles that hold no tensors."""
    raise _Damaged(f"unexpected persistent id {reprlib.repr(pid)}")


def _storage_id(pid: Any, length: int) -> tuple[_StorageType, str, int]:
    """(type, key, numel) of a storage persistent id of `length` fields."""
    if not isinstance(pid, tuple) or not pid or not isinstance(pid[0], str):
        raise _Damaged(f"persistent id {reprlib.repr(pid)} is not a tagged tuple")
    if pid[0] != "storage":
        raise _Unsupported(f"an object saved by reference (persistent id {pid[0]!r})")
    if len(pid) != length:
        raise _Damaged(f"storage id {reprlib.repr(pid)} has {len(pid)} fields, not {length}")
    storage_type, key, location = pid[1:4]
    _check_type(storage_type, _StorageType, "a storage's type")
    _check_type(key, str, "a storage's key")
    _check_type(location, str, "a storage's location")
    return storage_type, key, _count(pid[4], "a storage's element count")


def _storage(
    storages: dict[str, _Storage],
    key: str,
    storage_type: _StorageType,
    numel: int,
    locate: Callable[[str, _StorageType, int], np.ndarray | None],
) -> _Storage:
    """The storage `key`, located on its first mention; later mentions must agree."""
    storage = storages.get(key)
    if storage is None:
        storage = _Storage(storage_type, numel, locate(key, storage_type, numel))
        storages[key] = storage
    elif (storage.storage_type, storage.numel) != (storage_type, numel):
        raise _Damaged(f"storage {key!r} is declared with two types or sizes")
    return storage


def _elements(raw: np.ndarray, storage_type: _StorageType, byteorder: str) -> np.ndarray:
    """A storage's bytes `raw`, stored in `byteorder`, as native-order elements: a view of
    `raw`, or one copy when the byte order is foreign or the type bfloat16."""
    order = "<" if byteorder == "little" else ">"
    stored = raw.view(storage_type.dtype.newbyteorder(order))
    if storage_type.name == "BFloat16Storage":
        return (stored.astype(np.uint32) << 16).view(np.float32)  # bfloat16: float32's top half
    return stored if stored.dtype.isnative else stored.astype(stored.dtype.newbyteorder("="))


# ---- the pickle's size and nesting, before it is unpickled ------------------------------


class _Nest:
    """What the scan knows of an object a pickle builds: how deep its containers nest, and
    the objects that hold it (whose depth grows with its own)."""

    __slots__ = ("depth", "holders")

    def __init__(self) -> None:
        self.depth = 0
        self.holders: list[_Nest] | None = None  # most objects have one: made on first use


_LEAF = _Nest()  # every object that holds nothing: numbers, strings, globals
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_FILLS = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})
_EMPTY_CONTAINERS = frozenset({"EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"})


def _scan_pickle(stream: BinaryIO, start: int) -> None:
    """Checks the pickle at `start` in `stream` without building it: at most
    `_MAX_PICKLE_BYTES`, every declared length present (`pickletools.genops` reads them),
    containers nested at most `_MAX_NESTING` deep (an object that holds itself nests without
    end), no stack underflow.

    Follows the unpickler's stack, marks and memo, so that nesting built through the memo
    (an object filled after another took it) counts too.
    """
    scan = _PickleScan()
    for opcode, arg, position in pickletools.genops(stream):
        if position - start > _MAX_PICKLE_BYTES:
            raise _Unsupported(_LARGE_PICKLE)
        scan.apply(opcode, arg)


class _PickleScan:
    """The unpickler's stack, marks and memo, holding `_Nest`s instead of objects."""

    def __init__(self) -> None:
        self.stack: list[_Nest] = []
        self.marks: list[int] = []  # stack lengths at each MARK, as the unpickler keeps them
        self.memo: dict[int, _Nest] = {}

    def apply(self, opcode: pickletools.OpcodeInfo, arg: Any) -> None:
        name = opcode.name
        if name in _GETS:
            if arg not in self.memo:
                raise _Damaged(f"its pickle reads memo entry {arg}, which it never wrote")
            self.stack.append(self.memo[arg])
        elif name in _PUTS:
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = self.top()
        elif name == "MARK":
            self.marks.append(len(self.stack))
        elif name == "POP" and self.marks and self.marks[-1] == len(self.stack):
            self.marks.pop()  # POP drops a MARK on top, as the unpickler's
        elif name == "DUP":
            self.stack.append(self.top())
        else:
            self.build(opcode)

    def build(self, opcode: pickletools.OpcodeInfo) -> None:
        """An opcode that pops its arguments and pushes at most one result: a new object
        holding them, or the first argument (a container it fills)."""
        before = opcode.stack_before
        if pickletools.markobject in before:  # the objects under the MARK, then those above
            if not self.marks:
                raise _Damaged(f"its pickle's {opcode.name} has no MARK")
            items = self.stack[self.marks[-1] :]
            del self.stack[self.marks.pop() :]
            items = self.pop(before.index(pickletools.markobject)) + items
        else:
            items = self.pop(len(before))
        if opcode.name in _FILLS:
            target = items.pop(0)
            if target is _LEAF:
                raise _Damaged(f"its pickle's {opcode.name} adds to a value that holds nothing")
            _hold(target, items)
            self.stack.append(target)
        elif opcode.stack_after:
            result = _Nest() if before or opcode.name in _EMPTY_CONTAINERS else _LEAF
            _hold(result, items)
            self.stack.append(result)

    def top(self) -> _Nest:
        """The top object, left in place; it must lie above the last MARK."""
        self.check_available(1)
        return self.stack[-1]

    def pop(self, count: int) -> list[_Nest]:
        """The top `count` objects, removed; none may lie under the last MARK."""
        self.check_available(count)
        items = self.stack[len(self.stack) - count :]
        del self.stack[len(self.stack) - count :]
        return items

    def check_available(self, count: int) -> None:
        if len(self.stack) - count < (self.marks[-1] if self.marks else 0):
            raise _Damaged("its pickle's stack underflows")


def _hold(holder: _Nest, items: list[_Nest]) -> None:
    """Records that `holder` holds `items`; deepens it, and what holds it, to match."""
    depth = 0
    for item in items:
        if item is not _LEAF:
            if item.holders is None:
                item.holders = [holder]
            else:
                item.holders.append(holder)
            depth = max(depth, item.depth + 1)
    pending = [(holder, depth)]
    while pending:  # each object deepens at most _MAX_NESTING times
        node, depth = pending.pop()
        if depth <= node.depth:
            continue
        if depth > _MAX_NESTING:
            raise _Unsupported(
                f"values nested more than {_MAX_NESTING} levels deep (or holding themselves)"
            )
        node.depth = depth
        pending.extend((outer, depth + 1) for outer in node.holders or ())


# ---- the zip format --------------------------------------------------------------------


def _read_zip(stream: BinaryIO, mapped: mmap.mmap) -> Any:
    """The object of a zip-format file; storages are views of `mapped`."""
    try:
        archive = zipfile.ZipFile(stream)
    except _ZIP_ERRORS as error:
        raise _Damaged("the zip's directory, at its end, is missing or broken") from error
    with archive:
        _check_inflated_sizes(archive, len(mapped))
        prefix = _zip_prefix(archive)
        _check_zip_version(archive, prefix)
        byteorder = _zip_byteorder(archive, prefix)
        locate = functools.partial(_zip_storage_elements, archive, mapped, prefix, byteorder)
        storage_for = functools.partial(_zip_storage_view, storages={}, locate=locate)
        if archive.getinfo(f"{prefix}/data.pkl").file_size > _MAX_PICKLE_BYTES:
            raise _Unsupported(_LARGE_PICKLE)
        pickled = _zip_record(archive, f"{prefix}/data.pkl", _MAX_PICKLE_BYTES)
        return _unpickle(io.BytesIO(pickled), storage_for)


def _check_inflated_sizes(archive: zipfile.ZipFile, file_size: int) -> None:
    """Refuses compression that torch never writes and zips whose compressed entries declare
    more than `_MAX_INFLATION` times the file (reads never inflate past what is declared:
    `_inflate`)."""
    compressed = [info for info in archive.infolist() if info.compress_type != zipfile.ZIP_STORED]
    for info in compressed:
        if info.compress_type != zipfile.ZIP_DEFLATED:
            raise _Unsupported(
                f"{info.filename} compressed by method {info.compress_type} (torch stores its "
                "entries uncompressed; deflate is read too)"
            )
    inflated = sum(info.file_size for info in compressed)
    budget = max(_MAX_INFLATION * file_size, _MIN_INFLATION_BYTES)
    if inflated > budget:
        raise _Unsupported(
            f"compressed entries that inflate to {inflated} bytes, more than {_MAX_INFLATION} "
            f"times the file's {file_size} (torch stores its entries uncompressed)"
        )


def _zip_prefix(archive: zipfile.ZipFile) -> str:
    """The folder of the first entry, which torch's reader takes as the archive's."""
    names = archive.namelist()
    prefix = names[0].split("/", 1)[0] if names else ""
    if f"{prefix}/data.pkl" not in names:
        raise _NotTorch(
            "it is a zip archive without data.pkl; if it packs checkpoints, extract them and "
            "read the .pt file inside"
        )
    return prefix


def _zip_record(
    archive: zipfile.ZipFile, name: str, limit: int = _MAX_RECORD_BYTES
) -> bytes | None:
    """The (CRC-checked) content of entry `name`, at most `limit` bytes, or None if there is
    none."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > limit:
        raise _Damaged(f"{name} declares {info.file_size} bytes, more than its {limit}")
    return _inflate(archive, info)


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The entry's content, CRC-checked: exactly its declared size, as zipfile stops a
    deflate stream there (a longer stream then fails the CRC check)."""
    try:
        with archive.open(info) as entry:
            content = entry.read(info.file_size)  # read() would inflate 2 GiB at once
    except _ZIP_ERRORS as error:
        raise _Damaged(f"unreadable {info.filename}: {error}") from error
    if len(content) != info.file_size:
        raise _Damaged(f"{info.filename} holds {len(content)} bytes, not its {info.file_size}")
    return content


def _check_zip_version(archive: zipfile.ZipFile, prefix: str) -> None:
    """Checks that the archive has torch's version record, an integer."""
    record = _zip_record(archive, f"{prefix}/version")
    if record is None:  # where torch writes it from file format version 6 on
        record = _zip_record(archive, f"{prefix}/.data/version")
    if record is None or not record.strip().isdigit():
        raise _Damaged(f"no valid version record in {prefix}/")


def _zip_byteorder(archive: zipfile.ZipFile, prefix: str) -> str:
    """The byte order of the storages: the byteorder record's, "little" without one."""
    record = _zip_record(archive, f"{prefix}/byteorder")
    if record is None:
        return "little"
    if record not in (b"little", b"big"):
        raise _Damaged(f"unknown byte order {reprlib.repr(record)}")
    return record.decode()


def _zip_storage_view(
    pid: Any,
    storages: dict[str, _Storage],
    locate: Callable[[str, _StorageType, int], np.ndarray],
) -> _StorageView:
    """The whole storage that a zip persistent id ("storage", type, key, location, numel)
    names."""
    storage_type, key, numel = _storage_id(pid, 5)
    return _StorageView(_storage(storages, key, storage_type, numel, locate), 0, numel)


def _zip_storage_elements(
    archive: zipfile.ZipFile,
    mapped: mmap.mmap,
    prefix: str,
    byteorder: str,
    key: str,
    storage_type: _StorageType,
    numel: int,
) -> np.ndarray:
    """The elements of storage `key`, from entry `<prefix>/data/<key>`."""
    name = f"{prefix}/data/{key}"
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise _Damaged(f"{name} is missing") from None
    expected = numel * storage_type.dtype.itemsize
    if info.file_size != expected:
        raise _Damaged(f"{name} holds {info.file_size} bytes, not the {expected} of its storage")
    return _elements(_entry_bytes(archive, info, mapped), storage_type, byteorder)


def _entry_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo, mapped: mmap.mmap) -> np.ndarray:
    """An entry's bytes, CRC-checked: a view of `mapped` if stored (as torch writes them),
    else read and decompressed by zipfile."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # 0x1: encrypted
        return np.frombuffer(_inflate(archive, info), np.uint8)
    start = _entry_data_offset(info, mapped)
    if info.compress_size != info.file_size or start + info.file_size > len(mapped):
        raise _Damaged(f"{info.filename} extends past the end of the file")
    raw = np.frombuffer(mapped, np.uint8, count=info.file_size, offset=start)
    if zlib.crc32(raw) != info.CRC:
        raise _Damaged(f"{info.filename} fails its CRC check")
    return raw


def _entry_data_offset(info: zipfile.ZipInfo, mapped: mmap.mmap) -> int:
    """Where an entry's data starts: after its local header, whose extra field (torch's
    alignment padding) may differ from the central directory's."""
    header = mapped[info.header_offset : info.header_offset + _LOCAL_HEADER.size]
    if len(header) < _LOCAL_HEADER.size:
        raise _Damaged(f"the local header of {info.filename} is cut")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    if signature != _ZIP_SIGNATURE:
        raise _Damaged(f"the local header of {info.filename} is missing")
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


# ---- the legacy format -----------------------------------------------------------------


def _read_legacy(mapped: mmap.mmap) -> Any:
    """The object of a legacy-format file; storages are views of `mapped`.

    The main pickle is read twice: first to learn each storage's type (which says where the
    next storage starts), then, storages located, to build the object of views.
    """
    _check_legacy_header(mapped)
    start = mapped.tell()
    storages: dict[str, _Storage] = {}
    storage_for = functools.partial(_legacy_storage_view, storages=storages)
    _unpickle(mapped, storage_for)
    keys = _unpickle(mapped, _no_storage)
    _locate_legacy_storages(mapped, mapped.tell(), keys, storages)
    mapped.seek(start)
    return _unpickle(mapped, storage_for)


def _check_legacy_header(mapped: mmap.mmap) -> None:
    """Reads the magic number, the protocol version and the system info, checking them."""
    try:
        magic = _unpickle(mapped, _no_storage)
    except _Damaged:
        raise _NotTorch(_NEITHER) from None
    if type(magic) is not int or magic != LEGACY_MAGIC_NUMBER:
        raise _NotTorch(_NEITHER)
    version = _unpickle(mapped, _no_storage)
    if type(version) is not int or version != LEGACY_PROTOCOL_VERSION:
        raise _Damaged(f"legacy protocol version {reprlib.repr(version)}, not 1001")
    # The system info describes the writer; its byte order is not the storages' (see above).
    _check_type(_unpickle(mapped, _no_storage), dict, "the system info")


def _legacy_storage_view(pid: Any, storages: dict[str, _Storage]) -> _StorageView:
    """What a legacy persistent id ("storage", type, root key, location, numel,
    view metadata) names: the root storage, or its view (view key, offset, numel)."""
    storage_type, key, numel = _storage_id(pid, 6)
    storage = _storage(storages, key, storage_type, numel, _located_later)
    if pid[5] is None:
        return _StorageView(storage, 0, numel)
    metadata = pid[5]
    if not isinstance(metadata, tuple) or len(metadata) != 3 or not isinstance(metadata[0], str):
        raise _Damaged(f"storage view {reprlib.repr(metadata)} is not (key, offset, size)")
    start = _count(metadata[1], "a storage view's offset")
    size = _count(metadata[2], "a storage view's size")
    if start + size > numel:
        raise _Damaged(f"a storage view [{start}, {start + size}) overruns {numel} elements")
    return _StorageView(storage, start, size)


def _located_later(key: str, storage_type: _StorageType, numel: int) -> None:
    """A legacy storage's elements follow the main pickle: `_locate_legacy_storages`."""
    return None


def _locate_legacy_storages(
    mapped: mmap.mmap, offset: int, keys: Any, storages: dict[str, _Storage]
) -> None:
    """Points each storage at its elements: from `offset`, per key of `keys` in order, an
    int64 element count and the elements, both little-endian."""
    if (
        not isinstance(keys, list)
        or not all(isinstance(key, str) for key in keys)
        or sorted(keys) != sorted(storages)
    ):
        raise _Damaged("its storage keys do not match the storages its tensors use")
    for key in keys:
        storage = storages[key]
        count_bytes = mapped[offset : offset + _LEGACY_COUNT.size]
        if len(count_bytes) < _LEGACY_COUNT.size:
            raise _Damaged(f"storage {key!r} is missing")
        (count,) = _LEGACY_COUNT.unpack(count_bytes)
        if count != storage.numel:
            raise _Damaged(f"storage {key!r} has {count} elements, not {storage.numel}")
        start = offset + _LEGACY_COUNT.size
        offset = start + count * storage.storage_type.dtype.itemsize
        if offset > len(mapped):
            raise _Damaged(f"storage {key!r} is cut short")
        raw = np.frombuffer(mapped, np.uint8, count=offset - start, offset=start)
        storage.elements = _elements(raw, storage.storage_type, "little")
