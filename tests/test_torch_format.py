"""`read_torch_file` reads torch.save files of both formats without PyTorch, and safely.

The files come from tests/torch_writer.py (torch's pickles, checked byte for byte against
torch 2.13's) and from the MixMo authors' code (tests/fixtures/authors/, made with torch).
Round trips cover dtypes, shapes, shared storages and strided views, nested Python values
and byte orders; every damaged, foreign or malicious file must fail with a one-line
`TorchFileError` naming the file, and a malicious one without running anything.
"""

import collections
import glob
import json
import os
import pickle
import shlex
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
import read_torch_file as read_bench  # bench/read_torch_file.py
from torch_writer import PersistentId, TensorView, write_pickle_with_global, write_torch_file

from mixmo_tf.models.torch_format import TorchFileError, UnsafeTorchFileError, read_torch_file

FORMATS = pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
AUTHORS_FILES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "fixtures/authors/*.pt")))


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
    directory = os.path.join(os.path.dirname(__file__), "fixtures/authors")
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


# ---- the benchmark's checkpoint and measurement ----------------------------------------


def test_bench_checkpoint_has_the_authors_wrn28_10_names_and_shapes():
    seeded = np.load(
        os.path.join(os.path.dirname(__file__), "fixtures/authors/wrn28-10_m2_seeded.npz")
    )
    authors = [(name, tuple(shape)) for name, shape in json.loads(str(seeded["shapes"]))]
    assert read_bench.wrn_state_shapes() == authors
    assert sum(np.prod(shape) for name, shape in authors if "num_batches" not in name) == 36_619_368


def test_bench_child_measures_one_read_in_a_fresh_process(tmp_path):
    path = tmp_path / "small.pt"
    write_torch_file({"w": np.ones(2**20, np.float32)}, path)  # 4 MiB
    timed = read_bench.child_record(str(path), "time")
    assert timed["tensors"] == 1 and 0 < timed["read_s"] < 10
    assert 3.5 < timed["rss_growth_mib"] < 12  # the touched 4 MiB, not the parent's memory
    assert 0 < read_bench.child_record(str(path), "tracemalloc")["tracemalloc_peak_mib"] < 1
