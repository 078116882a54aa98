"""A released row's file by name: downloaded as from Google Drive, checked, cached, imported.

Every download goes to a loopback server answering as Drive does today (`helpers.drive_server`:
the redirect, the "can't scan this file for viruses" page, then the file), set through the
documented `MIXMO_TF_DOWNLOAD_HOST`; no test touches the network. The served file is the
authors' WRN-10-1 fixture (tests/fixtures/authors/), under a test row added to the table.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time

import gdown
import pytest
from helpers.drive_server import QUOTA_REASON, drive_server
from helpers.flags import parse
from helpers.paths import AUTHORS_FIXTURES
from helpers.runs import run_main_in_process

from mixmo_tf.config.errors import ConfigError
from mixmo_tf.importing import downloads, released
from mixmo_tf.importing.downloads import (
    DownloadError,
    UnknownCheckpointError,
    WrongNetworkError,
    fetch_checkpoint,
)

SMALL = os.path.join(AUTHORS_FIXTURES, "wrn10-1_m2_zip.pt")
SINGLE = os.path.join(AUTHORS_FIXTURES, "wrn10-1_m1_zip.pt")
ROW = released.ReleasedRow(
    name="cifar10_wrn10-1_test_row",
    accuracy=12.34,
    drive_id="1TestDriveFileOfTheSmallCheckpoint",
    dataset="cifar10",
    backbone="wrn",
    depth=10,
    width=1,
    num_members=2,
    num_classes=10,
    authors_config="config/cifar10/none.yaml",
)
RECIPE = """# A test row: WRN-10-1 Cut-MixMo on CIFAR-10.
--dataset=cifar10
--model_dir={model_dir}
--depth=10
--width=1
--num_members=2
--mixing=cutmix
--msda=cutmix
--batch_size=8
--precision=float32
"""


def _content(path: str) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()


def _files_under(folder) -> list[str]:
    """The files under `folder`, relative to it (Keras adds its keras.json beside mixmo_tf/)."""
    folder = folder / "mixmo_tf"
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
    )


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """KERAS_HOME in tmp_path; the table holds the test row, whose flagfile is in tmp_path."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    flags_folder = tmp_path / "flags"
    flags_folder.mkdir()
    (flags_folder / f"{ROW.recipe}.flags").write_text(
        RECIPE.format(model_dir=tmp_path / "runs" / ROW.recipe)
    )
    monkeypatch.setattr(released, "FLAGS_FOLDER", str(flags_folder))
    monkeypatch.setattr(released, "ROWS", (*released.ROWS, ROW))
    return tmp_path / "keras"


@pytest.fixture
def server(cache, monkeypatch):
    """The loopback Drive, serving the test row's file; MIXMO_TF_DOWNLOAD_HOST points at it."""
    with drive_server() as running:
        running.files[ROW.drive_id] = (_content(SMALL), "ok")
        monkeypatch.setenv(downloads.HOST_VARIABLE, running.host)
        yield running


def test_a_row_downloads_past_drives_page_and_is_then_used_offline(server, cache):
    fetched = fetch_checkpoint(ROW.name, progress=False)
    assert fetched.path == downloads.cached_path(ROW)
    assert fetched.path == str(
        cache / "mixmo_tf" / "checkpoints" / ROW.name / f"{ROW.drive_id}.ckpt"
    )
    assert _content(fetched.path) == _content(SMALL)
    assert fetched.sha256 == hashlib.sha256(_content(SMALL)).hexdigest()
    assert fetched.row == ROW and fetched.url == ROW.url
    assert fetched.architecture.label == "WRN-10-1, M=2, 10 classes"
    # Drive's way: the redirect, the confirmation page, then the file with its uuid.
    asked = [path.split("?")[0] for path in server.requests]
    assert asked == ["/uc", "/download", "/download"] and "uuid=" in server.requests[-1]
    assert _files_under(cache) == [os.path.relpath(fetched.path, cache / "mixmo_tf")]
    assert oct(os.stat(fetched.path).st_mode & 0o777) == oct(0o666 & ~_umask())

    server.close()  # the network is gone: the cache answers
    again = fetch_checkpoint(ROW.name, progress=False)
    assert again == fetched


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def test_without_network_one_line_says_what_to_fetch_and_where(cache, monkeypatch):
    with drive_server() as stopped:
        host = stopped.host
    monkeypatch.setenv(downloads.HOST_VARIABLE, host)  # nothing listens there any more
    start = time.monotonic()
    with pytest.raises(DownloadError) as raised:
        fetch_checkpoint(ROW.name, progress=False)
    assert time.monotonic() - start < 5
    message = str(raised.value)
    assert "\n" not in message and f"Cannot reach 127.0.0.1:{host.rsplit(':', 1)[1]}" in message
    assert ROW.url in message and downloads.cached_path(ROW) in message
    assert not (cache / "mixmo_tf").exists()

    # Saved there by hand, the name then works offline.
    os.makedirs(os.path.dirname(downloads.cached_path(ROW)))
    with open(downloads.cached_path(ROW), "wb") as stream:
        stream.write(_content(SMALL))
    assert fetch_checkpoint(ROW.name, progress=False).architecture.num_members == 2


@pytest.mark.parametrize(
    "behaviour, error, pattern",
    [
        ("quota", DownloadError, f"Google Drive refused .*{re.escape(QUOTA_REASON)} Try again"),
        ("html", DownloadError, "answered with a web page instead of the file"),
        ("cut", DownloadError, r"failed \(Download is incomplete"),
        ("interrupted", DownloadError, r"failed \(Download is incomplete"),
        ("unannounced", DownloadError, "the file downloaded from .* is truncated or damaged"),
        (
            "another_network",
            WrongNetworkError,
            "holds a WRN-10-1, M=1, 10 classes, not the "
            "WRN-10-1, M=2, 10 classes of cifar10_wrn10-1_test_row",
        ),
    ],
)
def test_a_failed_download_is_one_line_and_caches_nothing(server, cache, behaviour, error, pattern):
    if behaviour == "another_network":
        server.files[ROW.drive_id] = (_content(SINGLE), "ok")
    else:
        server.files[ROW.drive_id] = (_content(SMALL), behaviour)
    with pytest.raises(error) as raised:
        fetch_checkpoint(ROW.name, progress=False)
    message = str(raised.value)
    assert "\n" not in message and re.search(pattern, message), message
    assert ".partial-" not in message  # the temporary file is no name a user knows
    assert _files_under(cache) == []


def test_an_interrupted_download_leaves_nothing(server, cache, monkeypatch):
    def stopped(url, output, **kwargs):
        output.write(_content(SMALL)[:1000])
        raise KeyboardInterrupt

    monkeypatch.setattr(gdown, "download", stopped)
    with pytest.raises(KeyboardInterrupt):
        fetch_checkpoint(ROW.name, progress=False)
    assert _files_under(cache) == []


def test_a_cached_file_of_another_network_is_named_to_remove(cache):
    os.makedirs(os.path.dirname(downloads.cached_path(ROW)))
    with open(downloads.cached_path(ROW), "wb") as stream:
        stream.write(_content(SINGLE))
    with pytest.raises(WrongNetworkError, match=r"^/.*\.ckpt holds a WRN-10-1, M=1.*remove it"):
        fetch_checkpoint(ROW.name, progress=False)


def test_a_plain_url_downloads_the_same_way(server, cache):
    server.files["small.pt"] = (_content(SMALL), "ok")
    url = f"{server.host}/files/small.pt"
    fetched = fetch_checkpoint(url, progress=False)
    assert fetched.row is None and fetched.url == url
    assert fetched.path.startswith(str(cache / "mixmo_tf" / "checkpoints" / "urls"))
    assert _content(fetched.path) == _content(SMALL)
    assert server.requests == ["/files/small.pt", "/files/small.pt"]


def test_a_url_that_answers_an_error_says_its_status(server, cache):
    url = f"{server.host}/files/Missing.pt"
    with pytest.raises(DownloadError) as raised:
        fetch_checkpoint(url, progress=False)
    assert str(raised.value).startswith(f"{url} answered HTTP 404 (Not Found): download {url}")
    assert _files_under(cache) == []


def test_a_rows_drive_link_picks_the_row_but_a_shared_link_none():
    row = released.find_row("cifar100_wrn28-10_cut_mixmo_cutmix@seed2")
    assert downloads.checkpoint_row(f"{row.url}?usp=sharing") == row
    shared = [row for row in released.ROWS if row.note.startswith("the authors' README links")]
    assert len(shared) == 2 and shared[0].drive_id == shared[1].drive_id
    assert downloads.checkpoint_row(shared[0].url) is None


def test_an_unknown_name_names_the_closest_rows(cache):
    with pytest.raises(UnknownCheckpointError) as raised:
        fetch_checkpoint("cifar100_wrn28-10_cutmixmo_cutmix")
    assert "the closest: cifar100_wrn28-10_cut_mixmo_cutmix," in str(raised.value)
    assert not (cache / "mixmo_tf").exists()


def test_a_name_without_seed_is_the_first_seed():
    assert released.find_row("cifar100_wrn28-10_cut_mixmo").name.endswith("@seed1")
    assert released.find_row("cifar100_wrn28-10_cut_mixmo@seed2").accuracy == 85.59
    assert released.find_row("cifar100_wrn28-10_cut_mixmo@seed3") is None


# ---- the table against the flagfiles -----------------------------------------------------------


@pytest.mark.parametrize("row", released.ROWS, ids=lambda row: row.name)
def test_every_row_is_its_flagfiles_network_and_published_number(row):
    config = parse(f"--flagfile={row.flagfile}")
    assert (config.dataset, config.backbone, config.num_members) == (
        row.dataset,
        row.backbone,
        row.num_members,
    )
    assert config.spec.num_classes == row.num_classes and config.width == row.width
    if row.backbone == "wrn":
        assert config.depth == row.depth
    with open(row.flagfile, encoding="utf-8") as stream:
        published = next(line for line in stream if "Published top-1" in line)
    assert f"{row.accuracy:.2f}" in published
    assert re.fullmatch(r"[-\w]{28,40}", row.drive_id)


def test_the_table_has_every_released_file():
    assert len(released.ROWS) == 28  # 8 + 3 seeds CIFAR-100, 8 CIFAR-10, 9 Tiny ImageNet
    assert len({row.name for row in released.ROWS}) == 28
    assert len({row.drive_id for row in released.ROWS}) == 27  # one link shared by two rows
    flagfiles = {os.path.basename(row.flagfile) for row in released.ROWS}
    assert len(flagfiles) == 25  # every CIFAR and Tiny ImageNet flagfile of the repository


# ---- the command line --------------------------------------------------------------------------


def test_the_command_imports_a_row_by_name_with_its_recipe(server, cache, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_main_in_process(
        "--mode=import", f"--checkpoint={ROW.name}", f"--model_dir={run}"
    )
    assert code == 0, err
    record = json.loads((run / "imported_from.json").read_text())
    assert record["released_row"] == ROW.name and record["url"] == ROW.url
    assert record["sha256"] == hashlib.sha256(_content(SMALL)).hexdigest()
    assert record["source"] == downloads.cached_path(ROW)
    recorded = json.loads((run / "run_config.json").read_text())
    assert (recorded["mixing"], recorded["msda"], recorded["batch_size"]) == ("cutmix", "cutmix", 8)
    assert f"Imported {downloads.cached_path(ROW)} (WRN-10-1, M=2" in out


def test_the_command_refuses_another_flagfile_with_a_row(server, cache, tmp_path):
    other = tmp_path / "other.flags"
    other.write_text("--mixing=linear\n")
    code, out, err = run_main_in_process(
        "--mode=import",
        f"--checkpoint={ROW.name}",
        f"--flagfile={other}",
        f"--model_dir={tmp_path / 'run'}",
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "brings its own recipe" in lines[0], lines
    assert not (tmp_path / "run").exists() and server.requests == []


def test_a_flag_contradicting_the_rows_network_is_refused_before_the_download(server, tmp_path):
    code, out, err = run_main_in_process(
        "--mode=import", f"--checkpoint={ROW.name}", "--num_members=3", f"--model_dir={tmp_path}/r"
    )
    lines = err.strip().splitlines()
    assert code == 2 and lines == [
        "ERROR: --num_members=3 but the file holds 2. Drop those flags: the file decides them."
    ], lines
    assert server.requests == []


def test_the_command_refuses_a_failed_download_in_one_line(server, cache, tmp_path):
    server.files[ROW.drive_id] = (_content(SMALL), "quota")
    code, out, err = run_main_in_process(
        "--mode=import", f"--checkpoint={ROW.name}", f"--model_dir={tmp_path / 'run'}"
    )
    lines = err.strip().splitlines()
    assert code == 2 and lines == [f"ERROR: {lines[0][len('ERROR: ') :]}"], lines
    assert QUOTA_REASON in lines[0]
    assert not (tmp_path / "run").exists() and _files_under(cache) == []


def test_the_command_lists_the_rows(cache):
    code, out, err = run_main_in_process("--checkpoint=list")
    assert code == 0, err
    for row in released.ROWS:
        assert re.search(rf"^  {re.escape(row.name)} +{row.accuracy:.2f}  ", out, re.M), row.name


def test_a_file_keeps_the_file_form(cache, tmp_path, monkeypatch):
    """A path is a path (here named like a row): nothing is downloaded."""
    monkeypatch.chdir(tmp_path)
    with open(ROW.name, "wb") as stream:
        stream.write(_content(SMALL))
    code, out, err = run_main_in_process(
        "--mode=import", f"--checkpoint={ROW.name}", f"--model_dir={tmp_path / 'run'}"
    )
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "imported_from.json").read_text())
    assert "released_row" not in record and record["source"] == str(tmp_path / ROW.name)
    assert not (cache / "mixmo_tf").exists()


def test_a_row_brings_its_flagfile_unless_the_command_line_names_it(cache, tmp_path, monkeypatch):
    from mixmo_tf.cli.released_rows import row_flagfile

    assert row_flagfile(ROW.name, []) == ROW.flagfile
    assert row_flagfile(ROW.name, [f"--flagfile={ROW.flagfile}"]) is None  # given already
    assert row_flagfile(ROW.name, ["--flagfile", ROW.flagfile]) is None
    other = tmp_path / "other.flags"
    other.write_text("--mixing=linear\n")
    with pytest.raises(ConfigError, match=rf"--flagfile={re.escape(str(other))} would record"):
        row_flagfile(ROW.name, [f"--flagfile={other}"])
    assert row_flagfile("https://example.org/model.pt", []) is None  # a URL of no row
    monkeypatch.chdir(tmp_path)
    (tmp_path / ROW.name).write_bytes(b"")
    assert row_flagfile(ROW.name, []) is None  # a file named like the row is the file
    os.remove(ROW.flagfile)
    with pytest.raises(ConfigError, match="which is missing: run from a clone"):
        row_flagfile("https://drive.google.com/file/d/" + ROW.drive_id + "/view", [])
