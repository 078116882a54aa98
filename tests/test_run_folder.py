"""The run folder's one writer of whole files: atomic, umask-respecting, nothing left behind."""

from __future__ import annotations

import os
import stat

import pytest

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
    assert len(paths) == 13 and all(path.startswith("runs/x" + os.sep) for path in paths)
    # The module docstring's layout names every file and folder.
    for name in (
        run_folder.RUN_CONFIG,
        run_folder.DATASET_SPEC,
        run_folder.LOCK,
        run_folder.IMPORT_RECORD,
    ):
        assert name in run_folder.__doc__
