"""The image decoders' own stderr messages are kept out of what a user sees, nothing else.

TensorFlow's JPEG decoder writes libjpeg's message for a corrupt file ("Input file read
error") straight to file descriptor 2, besides raising the error our commands report in one
line. `decoder_messages_dropped` drops those lines and forwards every other one unchanged,
partial lines included, also when the process aborts or is interrupted; Python's own stderr
lines skip the filter (in order with stdout in a shared file, and shown when the filter was
killed); predict and train through main.py print only their ERROR lines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers.datasets import write_image_folder
from helpers.paths import REPO
from helpers.runs import run_main

from mixmo_tf.cli.decoder_messages import decoder_messages_dropped, is_decoder_message


def _corrupt_jpeg() -> bytes:
    """A JPEG whose header is intact and whose body past byte 200 is zeros."""
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    encoded = tf.io.encode_jpeg(image).numpy()
    return encoded[:200] + bytes(len(encoded) - 200)


def _decode(data: bytes) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_jpeg(data)


def test_the_decoders_message_is_dropped_and_shows_without_the_filter(capfd):
    data = _corrupt_jpeg()
    _decode(data)
    assert "Input file read error" in capfd.readouterr().err  # what the filter is for
    with decoder_messages_dropped():
        _decode(data)
        os.write(2, b"a line of our own\n")
    assert capfd.readouterr().err == "a line of our own\n"


def test_other_lines_pass_unchanged_partial_lines_without_delay(capfd):
    with decoder_messages_dropped():
        os.write(2, b"Improper call to JPEG library in state 201\nkept\r\nlibpng warning: x\n")
        os.write(2, b"Premature end of JPEG file\nPassword: ")
        time.sleep(0.5)  # a line without its newline still shows
        assert capfd.readouterr().err == "kept\r\nPassword: "
        print("ERROR: from Python", file=sys.stderr)
    assert capfd.readouterr().err == "ERROR: from Python\n"


def test_without_a_filter_process_everything_still_shows(capfd, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # it cannot start
    with decoder_messages_dropped():
        os.write(2, b"Input file read error\nours\n")
    assert capfd.readouterr().err == "Input file read error\nours\n"


# Enters the filter, writes a line, then ends as the first argument says: "abort" (a fatal
# check), "sigint" (Ctrl-C to the whole process group, then a line of its own).
_ENDING = """
import os, signal, sys, time
from mixmo_tf.cli.decoder_messages import decoder_messages_dropped

with decoder_messages_dropped():
    os.write(2, b"Input file read error\\nbefore the end\\n")
    if sys.argv[1] == "abort":
        os.abort()
    try:
        os.killpg(os.getpgrp(), signal.SIGINT)
        time.sleep(5)
    except KeyboardInterrupt:
        print("Stopped by SIGINT", file=sys.stderr)
"""


@pytest.mark.parametrize("ending", ["abort", "sigint"])
def test_what_a_crashing_or_interrupted_process_wrote_still_shows(ending):
    result = subprocess.run(
        [sys.executable, "-c", _ENDING, ending],
        capture_output=True,
        text=True,
        cwd=REPO,
        start_new_session=True,  # Ctrl-C reaches this process group only
        timeout=60,
    )
    # Python's line skips the filter, the native line passes it: either may come first.
    expected = {"before the end"} | ({"Stopped by SIGINT"} if ending == "sigint" else set())
    assert sorted(result.stderr.splitlines()) == sorted(expected)
    assert result.returncode == (-6 if ending == "abort" else 0)


# Enters the filter with stdout and stderr sharing one file (`2>&1`), then writes as the
# first argument says: "order" (stderr, then stdout), "killed filter" (the filter is killed,
# then Ctrl-C asks training to stop: its handler's line must show and the stop stand).
_SHARED_FILE = """
import os, signal, sys, time
from mixmo_tf.cli import decoder_messages
from mixmo_tf.training import run_guard

started = []
start_filter = decoder_messages._start_filter
decoder_messages._start_filter = lambda target: started.append(start_filter(target)) or started[0]

with decoder_messages.decoder_messages_dropped():
    if sys.argv[1] == "order":
        print("first, on stderr", file=sys.stderr)
        print("second, on stdout", flush=True)
    else:
        started[0].kill()
        started[0].wait()
        with run_guard.stop_on_signals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        print(f"stop requested by {stop.signal_name}", flush=True)
"""


@pytest.mark.parametrize("writes", ["order", "killed filter"])
def test_python_writes_skip_the_filter_in_order_and_when_it_died(writes, tmp_path):
    shared = tmp_path / "output.txt"
    with open(shared, "w") as output:
        result = subprocess.run(
            [sys.executable, "-c", _SHARED_FILE, writes],
            stdout=output,
            stderr=output,
            cwd=REPO,
            timeout=60,
        )
    assert result.returncode == 0, shared.read_text()
    if writes == "order":
        assert shared.read_text() == "first, on stderr\nsecond, on stdout\n"
    else:
        assert shared.read_text() == (
            "\nSIGINT received: saving a checkpoint at the end of this step.\n"
            "stop requested by SIGINT\n"
        )


@pytest.mark.parametrize(
    "line, dropped",
    [
        (b"Input file read error", True),
        (b"Corrupt JPEG data: 12 extraneous bytes before marker 0xd9", True),
        (b"Not a JPEG file: starts with 0x89 0x50", True),
        (b"ERROR: scan.jpg: Input file read error", False),
        (b"Fatal Python error: Segmentation fault", False),
        (b"F0000 00:00:1 check.cc:1] Check failed: ok", False),
    ],
)
def test_only_whole_decoder_messages_are_recognised(line, dropped):
    assert is_decoder_message(line) is dropped


@pytest.mark.slow
def test_predict_through_main_prints_one_line_per_bad_jpeg(trained_tiny_run, tmp_path):
    config, _ = trained_tiny_run
    images = tmp_path / "images"
    images.mkdir()
    (images / "bad.jpg").write_bytes(_corrupt_jpeg())
    (images / "good.jpg").write_bytes(tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy())
    (images / "truncated.jpg").write_bytes(_corrupt_jpeg()[:300])
    result = run_main("--mode=predict", f"--model_dir={config.model_dir}", f"--images={images}")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith(f"ERROR: {images / 'bad.jpg'}: ")
    assert lines[1].startswith(f"ERROR: {images / 'truncated.jpg'}: ")
    assert lines[2] == "Predicted 1 of 3 files; 2 failed."


@pytest.mark.slow
def test_training_on_a_folder_with_a_corrupt_jpeg_prints_one_line(tmp_path):
    folder = write_image_folder(tmp_path / "pets")
    bad = os.path.join(folder, "train", "cat", "0.jpg")
    with open(bad, "wb") as stream:
        stream.write(_corrupt_jpeg())
    result = run_main(
        f"--dataset=folder:{folder}",
        "--image_size=16",
        "--smoke",
        "--precision=float32",
        f"--model_dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"ERROR: {bad} cannot be decoded (")
    assert result.stderr.count("\n") == 1, result.stderr
