"""`read_torch_file` reads torch.save files of both formats without PyTorch, and safely.

The files come from tests/helpers/torch_writer.py (torch's pickles, checked byte for byte against
torch 2.13's) and from the MixMo authors' code (tests/fixtures/authors/, made with torch).
Round trips cover dtypes, shapes, shared storages and strided views, nested Python values
and byte orders; every damaged, foreign or malicious file must fail with a one-line
`TorchFileError` naming the file, and a malicious one without running anything.
"""

import collections
import glob
import os
import pickle
import re
import shlex
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
from helpers.paths import AUTHORS_FIXTURES, REPO
from helpers.torch_writer import (
    PersistentId,
    TensorView,
    write_main_pickle,
    write_pickle_with_global,
    write_torch_file,
)

from mixmo_tf.importing import torch_format
from mixmo_tf.importing.torch_format import TorchFileError, UnsafeTorchFileError, read_torch_file

FORMATS = pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
AUTHORS_FILES = sorted(glob.glob(os.path.join(AUTHORS_FIXTURES, "*.pt")))


def _content() -> dict:
    """A checkpoint-like object with every supported dtype, views and plain Python values."""
    shared = np.arange(20, dtype=np.float32)
    grid = np.arange(12, dtype=np.int64).reshape(3, 4)
    weights = collections.OrderedDict(
        [
            ("z.weight", np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)),
            ("a.bias", np.array([1.5, -2.0], np.float64)),
            ("half", np.array([0.5, 1e-3], np.float16)),
            ("steps", np.array(7, np.int64)),
            ("i32", np.array([[1, -2]], np.int32)),
            ("i16", np.array([300], np.int16)),
            ("i8", np.array([-3, 4], np.int8)),
            ("u8", np.array([250], np.uint8)),
            ("mask", np.array([True, False, True])),
            ("empty", np.zeros((0, 3), np.float32)),
            ("view_a", shared[2:8]),
            ("view_b", shared[5:15].reshape(2, 5)),
            ("transposed", grid.T),
            ("every_other", grid[:, ::2]),
        ]
    )
    optimizer = {
        "state": {0: {"momentum_buffer": np.full((2, 2), 0.25, np.float32)}},
        "param_groups": [{"lr": 0.1, "momentum": 0.9, "nesterov": True, "params": [0]}],
    }
    return {
        "epoch": 3,
        "weights": weights,
        "optimizer": optimizer,
        "misc": [None, False, 2.5, "s", (1, (2,))],
    }


def _assert_same(got, expected, where="") -> None:
    """Equal types (dict vs OrderedDict, list vs tuple), keys in order, arrays equal in
    dtype, shape, values and strides."""
    assert type(got) is type(expected), where
    if isinstance(expected, np.ndarray):
        assert (got.dtype, got.shape, got.strides) == (
            expected.dtype,
            expected.shape,
            expected.strides,
        ), where
        np.testing.assert_array_equal(got, expected, err_msg=where)
    elif isinstance(expected, dict):
        assert list(got) == list(expected), where
        for key in expected:
            _assert_same(got[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for index, (item, expected_item) in enumerate(zip(got, expected)):
            _assert_same(item, expected_item, f"{where}/{index}")
    else:
        assert got == expected, where


def _read_error(path, error_type=TorchFileError) -> str:
    """The message `read_torch_file(path)` fails with, checked to be one line naming it."""
    with pytest.raises(error_type) as raised:
        read_torch_file(path)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    return message


# ---- round trips -----------------------------------------------------------------------


@FORMATS
def test_round_trip_keeps_types_order_dtypes_shapes_strides_and_values(tmp_path, legacy):
    path = tmp_path / "checkpoint.pt"
    write_torch_file(_content(), path, legacy=legacy)
    _assert_same(read_torch_file(path), _content())


@FORMATS
def test_views_of_one_storage_share_memory_and_writes_stay_in_memory(tmp_path, legacy):
    path = tmp_path / "views.pt"
    write_torch_file(_content(), path, legacy=legacy)
    before = path.read_bytes()
    weights = read_torch_file(path)["weights"]
    view_a, view_b = weights["view_a"], weights["view_b"]  # elements 2..7 and 5..14
    assert np.shares_memory(view_a, view_b)
    view_a[3] = -1.0  # element 5 of the storage
    assert view_b[0, 0] == -1.0
    assert path.read_bytes() == before  # the mapping is copy-on-write


def test_zip_entries_are_stored_aligned_and_read_in_place(tmp_path):
    path = tmp_path / "aligned.pt"
    write_torch_file({"w": np.ones(1000, np.float32)}, path)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            header = info.header_offset
            start = header + 30 + int.from_bytes(raw[header + 26 : header + 28], "little")
            start += int.from_bytes(raw[header + 28 : header + 30], "little")
            assert info.compress_type == zipfile.ZIP_STORED and start % 64 == 0, info.filename
    weights = read_torch_file(path)["w"]
    assert not weights.flags.owndata  # a view of the mapped file, not a copy


def test_compressed_zip_is_read_too(tmp_path):
    stored, deflated = tmp_path / "stored.pt", tmp_path / "deflated.pt"
    write_torch_file(_content(), stored)
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(deflated, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info), zipfile.ZIP_DEFLATED)
    _assert_same(read_torch_file(deflated), _content())


@pytest.mark.parametrize(
    "legacy", [False, True], ids=["zip_byteorder_big", "legacy_from_big_endian"]
)
def test_files_of_big_endian_machines_read_in_native_order(tmp_path, legacy):
    """A big-endian machine's zip holds big-endian storages (byteorder "big"); its legacy file
    says little_endian False but holds little-endian storages, as torch converts them."""
    path = tmp_path / "big.pt"
    write_torch_file(_content(), path, legacy=legacy, byteorder="big")
    with open(path, "rb") as stream:
        if legacy:
            assert [pickle.load(stream) for _ in range(3)][2]["little_endian"] is False
    got = read_torch_file(path)
    _assert_same(got, _content())
    assert all(array.dtype.isnative for array in got["weights"].values())


@FORMATS
def test_bfloat16_becomes_equal_float32(tmp_path, legacy):
    path = tmp_path / "bf16.pt"
    values = np.array([1.5, -2.25, 3e-3, 65504.0], ml_dtypes.bfloat16)
    write_torch_file({"b": values}, path, legacy=legacy)
    got = read_torch_file(path)["b"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values.astype(np.float32))


@pytest.mark.parametrize("path", AUTHORS_FILES, ids=os.path.basename)
def test_reads_the_authors_checkpoints(path):
    checkpoint = read_torch_file(path)
    assert list(checkpoint) == ["epoch", "classifier_state_dict", "classifier_optimizer_state_dict"]
    weights = checkpoint["classifier_state_dict"]
    assert isinstance(weights, collections.OrderedDict) and len(weights) > 40
    first_conv = "list_conv1.0.weight" if "_m2_" in path else "conv1.weight"
    assert weights[first_conv].shape == (16, 3, 3, 3) and weights[first_conv].dtype == np.float32
    optimizer = checkpoint["classifier_optimizer_state_dict"]
    (group,) = optimizer["param_groups"]
    assert (group["momentum"], group["nesterov"]) == (0.9, True)
    buffers = [optimizer["state"][key]["momentum_buffer"] for key in group["params"]]
    assert all(buffer.dtype == np.float32 and np.isfinite(buffer).all() for buffer in buffers)


def test_the_authors_legacy_and_zip_files_hold_the_same_checkpoint():
    directory = AUTHORS_FIXTURES
    legacy = read_torch_file(os.path.join(directory, "wrn10-1_m2_legacy.pt"))
    _assert_same(read_torch_file(os.path.join(directory, "wrn10-1_m2_zip.pt")), legacy)


# ---- files that are not torch's, or damaged --------------------------------------------


def _zip_without_data_pkl(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("checkpoint/model.pt", b"weights")


@pytest.mark.parametrize(
    "write, expected",
    [
        (lambda path: path.write_text("404: Not Found\n"), "is a text file"),
        (
            lambda path: path.write_text(
                "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>"
            ),
            "is an HTML page",
        ),
        (lambda path: path.write_bytes(b""), "is empty"),
        (lambda path: path.write_bytes(bytes(range(256))), "neither a zip holding data.pkl"),
        (lambda path: path.write_bytes(pickle.dumps([1, 2], protocol=2)), "neither a zip"),
        (_zip_without_data_pkl, "zip archive without data.pkl"),
    ],
    ids=["text", "html", "empty", "binary", "other_pickle", "zip_without_data_pkl"],
)
def test_files_that_are_not_torch_files_are_named_so(tmp_path, write, expected):
    path = tmp_path / "model.pt"
    write(path)
    message = _read_error(path)
    assert "is not a PyTorch file" in message and expected in message


def test_html_page_message_says_to_download_the_file_itself(tmp_path):
    path = tmp_path / "wrn.pt"
    path.write_text("<html><body>Google Drive can't scan this file for viruses.</body></html>")
    assert "download the file itself" in _read_error(path)


def test_truncated_zip_says_download_again(tmp_path):
    path = tmp_path / "cut.pt"
    write_torch_file(_content(), path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    message = _read_error(path)
    assert "truncated or damaged" in message and message.endswith("download it again.")


def test_legacy_file_cut_in_its_storage_bytes_says_download_again(tmp_path):
    path = tmp_path / "cut.pt"
    write_torch_file({"w": np.ones(100, np.float32)}, path, legacy=True)
    path.write_bytes(path.read_bytes()[:-10])
    message = _read_error(path)
    assert "is cut short" in message and message.endswith("download it again.")


def test_zip_with_a_changed_storage_byte_fails_its_crc(tmp_path):
    path = tmp_path / "flipped.pt"
    write_torch_file({"w": np.zeros(1000, np.float32)}, path)
    raw = bytearray(path.read_bytes())
    raw[raw.index(bytes(4000)) + 100] = 1  # a byte inside the storage's zeros
    path.write_bytes(bytes(raw))
    assert "fails its CRC check" in _read_error(path)


@FORMATS
def test_view_overrunning_its_storage_is_refused(tmp_path, legacy):
    path = tmp_path / "overrun.pt"
    view = TensorView(np.zeros(4, np.float32), offset=2, size=(3,), stride=(1,))
    write_torch_file({"w": view}, path, legacy=legacy)
    assert "overruns its storage of 4 elements" in _read_error(path)


@FORMATS
def test_persistent_ids_other_than_storages_are_refused(tmp_path, legacy):
    module_id, short_id = tmp_path / "module.pt", tmp_path / "short.pt"
    write_torch_file([PersistentId(("module", "net.Net", "net.py", "source"))], module_id, legacy)
    write_torch_file([PersistentId(("storage", "FloatStorage"))], short_id, legacy)
    assert "persistent id 'module'" in _read_error(module_id)
    assert "has 2 fields" in _read_error(short_id)


def test_pickle_cannot_rewrite_a_storage_view_it_was_given(tmp_path):
    """BUILD on a persistent id's result would widen the view after its check: refused."""
    storage_id = (  # ("storage", torch.FloatStorage, "0", "cpu", 4) as a persistent id
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
        b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ"
    )
    widen = b"}X\x05\x00\x00\x00numelJ\x00\x00\x00\x01sb"  # BUILD with {"numel": 2**24}
    tensor_args = b"K\x00J\x00\x00\x00\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rt"
    pickled = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(" + storage_id + widen + tensor_args + b"R."
    )
    path = tmp_path / "widened.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/data/0", bytes(16))
        archive.writestr("archive/version", b"3\n")
    assert "sets the state of a StorageView" in _read_error(path)


# ---- hostile files: bounded before they are built ----------------------------------------

_DEPTH = 100_000


def _tuple_key(depth: int) -> bytes:
    """{((...),): 1}: a dict whose key is `depth` nested tuples, hashed recursively."""
    return b"}" + b")" + b"\x85" * depth + b"K\x01s"


def _memo_chain(depth: int) -> bytes:
    """Lists each holding the previous one, built through the memo with a stack of two."""
    chain = b"]q\x00" + b"0"  # EMPTY_LIST, PUT 0, POP
    for index in range(1, depth):
        chain += b"]r" + index.to_bytes(4, "little")  # EMPTY_LIST, LONG_BINPUT index
        chain += b"j" + (index - 1).to_bytes(4, "little") + b"a0"  # GET index-1, APPEND, POP
    return chain + b"j" + (depth - 1).to_bytes(4, "little")


_DEEP_PICKLES = {
    "tuple_key": _tuple_key(_DEPTH),
    "lists": b"]" * _DEPTH + b"a" * (_DEPTH - 1),
    "dicts": b"}" + b"K\x01}" * _DEPTH + b"s" * _DEPTH,
    "marks": b"(" * _DEPTH + b"t" * _DEPTH,
    "memo_chain": _memo_chain(200),
    "list_holding_itself": b"]q\x00h\x00a",
}


@FORMATS
@pytest.mark.parametrize("kind", list(_DEEP_PICKLES))
def test_deep_nesting_is_refused_before_unpickling(tmp_path, monkeypatch, legacy, kind):
    path = tmp_path / "deep.pt"
    write_main_pickle(path, b"\x80\x02" + _DEEP_PICKLES[kind] + b".", legacy)
    loads = []
    load = torch_format._StateDictUnpickler.load
    monkeypatch.setattr(
        torch_format._StateDictUnpickler, "load", lambda self: loads.append(1) or load(self)
    )
    message = _read_error(path)
    assert "values nested more than 100 levels deep (or holding themselves)" in message
    assert len(loads) == (3 if legacy else 0)  # a legacy file's headers, not its main pickle


def _nested_lists(count: int) -> list:
    """`count` lists, each but the innermost holding the next: count - 1 levels of nesting."""
    outer = inner = []
    for _ in range(count - 1):
        inner.append([])
        inner = inner[0]
    return outer


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_nesting_bound_is_exact_in_every_pickle_protocol(tmp_path, protocol):
    """100 levels are read, 101 refused, whichever opcodes build the lists (MARK and LIST in
    protocol 0, EMPTY_LIST and APPENDS later, MEMOIZE and FRAME from 4)."""
    read, refused = tmp_path / "read.pt", tmp_path / "refused.pt"
    write_main_pickle(read, pickle.dumps(_nested_lists(101), protocol=protocol))
    write_main_pickle(refused, pickle.dumps(_nested_lists(102), protocol=protocol))
    assert read_torch_file(read) == _nested_lists(101)
    assert "nested more than 100 levels deep" in _read_error(refused)


def test_nesting_of_a_checkpoint_is_read():
    """The bound leaves room: the authors' checkpoints nest far less than 100 levels."""
    assert read_torch_file(AUTHORS_FILES[0])["classifier_state_dict"]


def test_deep_tuple_key_exits_2_through_main(tmp_path):
    """In a process of its own: hashing a key of a million nested tuples overflows the C
    stack (SIGSEGV) unless the read bounds the nesting first."""
    path = tmp_path / "deep.pt"
    write_main_pickle(path, b"\x80\x02" + _tuple_key(1_000_000) + b".")
    done = subprocess.run(
        [
            sys.executable,
            "main.py",
            "--mode=import",
            f"--checkpoint={path}",
            f"--model_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("ERROR: ") and "nested more than 100 levels" in done.stderr
    assert not (tmp_path / "run").exists()


@FORMATS
def test_a_pickle_over_1_mib_is_refused(tmp_path, legacy):
    path = tmp_path / "big.pt"
    write_main_pickle(path, _big_pickle(), legacy)
    assert "a pickle of more than 1 MiB" in _read_error(path)


def _big_pickle() -> bytes:
    """Two distinct 1 MiB strings: over the bound."""
    return pickle.dumps([str(index) * 2**20 for index in range(2)], protocol=2)


def test_pickle_reading_past_its_end_is_refused_before_allocating(tmp_path):
    """BINBYTES8 declaring 2**50 bytes: the scan finds them missing, nothing is allocated."""
    path = tmp_path / "declared.pt"
    write_main_pickle(path, b"\x80\x04\x8e" + (2**50).to_bytes(8, "little") + b"x.")
    assert "unreadable pickle" in _read_error(path)


def _rezipped(source, target, compression) -> None:
    """`source`'s entries in a zip compressed with `compression`."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as rezipped:
        for info in original.infolist():
            rezipped.writestr(info.filename, original.read(info), compression)


def test_zip_entries_compressed_otherwise_than_deflate_are_refused(tmp_path):
    stored, bzip2 = tmp_path / "stored.pt", tmp_path / "bzip2.pt"
    write_torch_file(_content(), stored)
    _rezipped(stored, bzip2, zipfile.ZIP_BZIP2)
    assert "compressed by method 12" in _read_error(bzip2)


def test_a_zip_bomb_is_refused_by_its_declared_sizes(tmp_path):
    """Zeros deflate ~1000 to 1: 4 MiB of zeros in a ~4 KiB file."""
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("archive/version", b"3\n")
        archive.writestr("archive/data/0", bytes(4 * 2**20))
    assert path.stat().st_size < 10_000
    assert re.search(r"inflate to 41943\d\d bytes, more than 16 times the file", _read_error(path))


def test_an_entry_inflating_past_its_declared_size_is_cut_there(tmp_path):
    """A directory that declares 3 bytes of data.pkl whose stream inflates to 1 MiB: reading
    stops at 3 bytes, whose CRC then fails."""
    path = tmp_path / "lying.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02]" + bytes(2**20))
        archive.writestr("archive/version", b"3\n")
    raw = bytearray(path.read_bytes())
    directory = raw.rindex(b"PK\x01\x02", 0, raw.rindex(b"archive/data.pkl"))
    raw[directory + 24 : directory + 28] = (3).to_bytes(4, "little")  # its uncompressed size
    path.write_bytes(bytes(raw))
    assert "Bad CRC-32" in _read_error(path)


@FORMATS
def test_a_broadcast_view_is_refused(tmp_path, legacy):
    """Size (10**9, 10**9) over 4 elements (stride 0): copying it would take 4 EB."""
    path = tmp_path / "broadcast.pt"
    view = TensorView(np.zeros(4, np.float32), offset=0, size=(10**9, 10**9), stride=(0, 0))
    write_torch_file({"w": view}, path, legacy=legacy)
    assert "repeats the 4 elements of its storage (a broadcast view)" in _read_error(path)


# ---- malicious files -------------------------------------------------------------------


# Plain pickle on a file's main pickle: data.pkl of the zip, the 4th pickle of a legacy file.
_LOAD_MAIN_PICKLE = {
    False: "import pickle, sys, zipfile as z; "
    "pickle.loads(z.ZipFile(sys.argv[1]).read('archive/data.pkl'))",
    True: "import pickle, sys; stream = open(sys.argv[1], 'rb'); "
    "[pickle.load(stream) for _ in range(4)]",
}


@FORMATS
def test_malicious_file_is_refused_without_running_its_command(tmp_path, legacy):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    write_pickle_with_global(path, "os", "system", (f"touch {shlex.quote(str(marker))}",), legacy)
    message = _read_error(path, UnsafeTorchFileError)
    assert "os.system" in message and "refused without being run" in message
    assert not marker.exists()
    # The same file's main pickle does run the command under plain pickle.
    subprocess.run([sys.executable, "-c", _LOAD_MAIN_PICKLE[legacy], str(path)], check=True)
    assert marker.exists()
