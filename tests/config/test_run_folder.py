"""The run folder's one writer of whole files: atomic, umask-respecting, nothing left behind."""

from __future__ import annotations

import errno
import os
import shutil
import stat

import pytest
from helpers import disk_limits

from mixmo_tf.config import run_folder
from mixmo_tf.config.run_folder import RunFolder, write_atomically, write_text_atomically


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_text_atomically(str(tmp_path / "report.md"), "# report\n")
        with open(tmp_path / "plain.txt", "w") as stream:
            stream.write("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "report.md").read_text() == "# report\n"
    assert _mode(tmp_path / "report.md") == _mode(tmp_path / "plain.txt") == 0o666 & ~umask


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "run_config.json"
    write_text_atomically(str(path), "old")

    def write_then_fail(temporary: str) -> None:
        with open(temporary, "w") as stream:
            stream.write("half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(str(path), write_then_fail)
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["run_config.json"]


def test_writers_get_the_suffix_they_need_and_folders_are_created(tmp_path):
    seen = []

    def write(temporary: str) -> None:
        seen.append(temporary)
        with open(temporary, "wb") as stream:
            stream.write(b"\x93NUMPY")

    target = tmp_path / "new" / "cache" / "train_64x64.npy"
    write_atomically(str(target), write, ".npy")
    assert seen[0].endswith(".npy") and os.path.dirname(seen[0]) == str(target.parent)
    assert target.read_bytes() == b"\x93NUMPY"


def test_every_path_of_a_run_folder_lies_in_it_under_its_documented_name():
    folder = RunFolder("runs/x")
    assert folder.run_config == os.path.join("runs/x", "run_config.json")
    assert folder.checkpoints == os.path.join("runs/x", "checkpoints")
    assert folder.validation_logs == os.path.join("runs/x", "logs", "validation")
    assert folder.evaluation_logs == os.path.join("runs/x", "logs", "eval")
    assert folder.ensemble_evaluation == os.path.join("runs/x", "eval", "ensemble")
    paths = {
        getattr(folder, name)
        for name in dir(RunFolder)
        if isinstance(getattr(RunFolder, name), property)
    }
    assert len(paths) == 14 and all(path.startswith("runs/x" + os.sep) for path in paths)
    # The module docstring's layout names every file and folder.
    for name in (
        run_folder.RUN_CONFIG,
        run_folder.DATASET_SPEC,
        run_folder.LOCK,
        run_folder.IMPORT_RECORD,
        run_folder.PRESET,
    ):
        assert name in run_folder.__doc__


def test_a_write_over_the_file_size_limit_is_named_by_its_file_and_the_limit(tmp_path):
    path = tmp_path / "model.keras"

    def write(temporary: str) -> None:
        with open(temporary, "wb") as stream:
            stream.write(bytes(2 * 2**20))

    limit = 2**20
    with disk_limits.file_size_limit(limit):
        with pytest.raises(OSError) as error:
            write_atomically(str(path), write)
        described = run_folder.describe_os_error(error.value)  # while the limit holds
    assert error.value.filename == str(path)  # not the temporary name, which is gone
    assert os.listdir(tmp_path) == []
    assert described == (
        f"{path} cannot be used (File too large: this process may write files of at most "
        "1.0 MiB (ulimit -f)). Raise the file size limit (ulimit -f) or write elsewhere, "
        "then rerun."
    )


def test_a_full_disk_is_described_with_the_room_left_in_the_folder(tmp_path):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "results.json"))
    free = run_folder.megabytes(shutil.disk_usage(tmp_path).free)
    assert run_folder.describe_os_error(full, "--model_dir") == (
        f"{tmp_path / 'results.json'} cannot be used (No space left on device: {free} are "
        "free there). Free some space there (or choose another folder), then rerun."
    )


@pytest.mark.parametrize(
    "message, number, path",
    [
        # TensorFlow's file errors, as its checkpoint and SavedModel writers raise them.
        (
            "{{function_node SaveV2}} /r/ckpt-2_temp/part.data; No space left on device",
            errno.ENOSPC,
            "/r/ckpt-2_temp/part.data",
        ),
        (
            "/r/export/.incomplete-1/v.data; File too large [Op:SaveV2]",
            errno.EFBIG,
            "/r/export/.incomplete-1/v.data",
        ),
        ("/r/ckpt-2.index; Disk quota exceeded", errno.EDQUOT, "/r/ckpt-2.index"),
        ("/r/ckpt-2.index; Permission denied", None, None),
    ],
)
def test_tensorflows_out_of_space_errors_are_read_as_os_errors(message, number, path):
    import tensorflow as tf

    full = run_folder.out_of_space(tf.errors.ResourceExhaustedError(None, None, message))
    assert (full.errno, full.filename) == (number, path) if number else full is None


def test_tensorboard_events_that_do_not_fit_raise_the_os_error_naming_the_file(tmp_path):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(tmp_path))
    with disk_limits.file_size_limit(200), pytest.raises(OSError) as error:
        with run_folder.space_errors_as_os_errors(), writer.as_default():
            for step in range(100):
                tf.summary.text("notes", "x" * 1000, step=step)
    assert error.value.errno == errno.EFBIG
    (events,) = os.listdir(tmp_path)
    assert error.value.filename == str(tmp_path / events)
