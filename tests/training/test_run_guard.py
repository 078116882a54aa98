"""Runs that survive: divergence, a second writer, signals, unusable folders.

Proven here:
- A diverging run checkpoints only finite states (weights, batch-norm statistics, optimizer
  slots); its error names the last finite checkpoint, or says there is none, and the rerun
  with a sane --lr resumes from that checkpoint and finishes.
- A run folder has one writer: a second run is refused naming the holder's pid and host
  (exit code 2 through main); after `kill -9` of the holder the lock is taken over.
- SIGTERM and SIGINT in the middle of an epoch of a real `main.py` process save a
  checkpoint at the next step and exit with code 3 and one line; the rerun ends with the
  weights of an uninterrupted run, bit for bit. A second Ctrl-C during the stop's save
  waits for it; one before the save stops at once and says the run resumes from its last
  checkpoint (exit code 130).
- Outside training's handler (the oneDNN timing of a real `main.py`), SIGTERM and Ctrl-C
  end the command with one line and exit code 143 / 130, its timing children at once, and
  nothing written.
- An error that ends training mid-epoch starts its own line after the progress bar when
  stdout and stderr share a file.
- A checkpoint that does not fit (a full disk: a real tmpfs where this user may mount one,
  and a file size limit) leaves no file behind and the previous checkpoints usable; the
  run stops with one line naming the folder, the room needed and left, and the checkpoint
  a rerun resumes from, and the rerun ends bit for bit as the uninterrupted run. What an
  interrupted save left is removed when training starts.
- Every unusable folder gives one `ERROR:` line and exit code 2 (a path under a regular
  file; a folder this user cannot write, tested by dropping root's effective uid); an
  evaluation that cannot write its results prints them first.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from helpers import disk_limits
from helpers.paths import FIXTURES, REPO
from helpers.runs import run_main_in_process as _run_main
from helpers.runs import smoke_config

from mixmo_tf.cli import exit_codes
from mixmo_tf.config import Config, run_folder
from mixmo_tf.models.build import build_model
from mixmo_tf.models.schedules import learning_rate_schedule
from mixmo_tf.training import callbacks, checkpoints, run_guard
from mixmo_tf.training.run import train


def _smoke(model_dir, **overrides) -> Config:
    return smoke_config(model_dir, **{"checkpoint_every_steps": 1, **overrides})


def _state(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in model.weights + model.optimizer.variables]


def _checkpoint_states(config: Config) -> dict[str, list[np.ndarray]]:
    """Every checkpoint kept in the run folder, restored into a fresh model."""
    states = {}
    model = build_model(config)
    for path in checkpoints.all_checkpoints(run_folder.RunFolder(config.model_dir).checkpoints):
        checkpoints.load_checkpoint(model, path, with_optimizer=True)
        states[os.path.basename(path)] = _state(model)
    return states


def _smoke_flags(model_dir) -> list[str]:
    return ["--dataset=digits", "--smoke", f"--model_dir={model_dir}"]


# ---- divergence ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_diverging_run_keeps_only_finite_checkpoints_and_the_rerun_resumes(tmp_path):
    train(_smoke(tmp_path, epochs=1))  # healthy checkpoints at steps 1, 2, 3
    # An absurd rate: after step 4 the loss is still finite, but weights of ~1e26 overflow
    # the L2 penalty of step 5. The state of step 4 must not be checkpointed.
    diverging = _smoke(tmp_path, lr=1e30)
    with pytest.raises(FloatingPointError) as error:
        train(diverging)
    message = str(error.value)
    assert "diverged at step 4 " in message and "overflows" in message
    rate_of_step_4 = learning_rate_schedule(diverging)(3)  # after 3 finished steps
    assert f"learning rate {float(keras.ops.convert_to_numpy(rate_of_step_4)):.3g}" in message
    last = os.path.join(diverging.model_dir, "checkpoints", "ckpt-3")
    assert f"the last is {last}. Lower --lr" in message and "resumes from ckpt-3" in message

    states = _checkpoint_states(diverging)
    assert sorted(states) == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert all(np.isfinite(v).all() for state in states.values() for v in state)

    model = train(_smoke(tmp_path))  # the sane default --lr: resumes and finishes
    assert int(model.optimizer.iterations.numpy()) == 6
    assert all(np.isfinite(v).all() for v in _state(model))


@pytest.mark.slow
def test_a_non_finite_loss_before_the_first_checkpoint_says_there_is_none(tmp_path):
    with pytest.raises(FloatingPointError) as error:
        train(_smoke(tmp_path, lr=1e30, checkpoint_every_steps=0))
    # nan or inf: which one a step of lr 1e30 reaches first depends on the CPU's kernels.
    assert re.search(r"the training loss became (nan|inf)\.", str(error.value))
    assert "No checkpoint was saved before it" in str(error.value)
    assert "starts from step 0" in str(error.value)
    assert not glob.glob(str(tmp_path / "checkpoints" / "ckpt-*"))


# ---- one writer per run folder -------------------------------------------------------------------

# Holds the lock until killed (run_guard imports no TensorFlow: the process starts at once).
_HOLD_LOCK = """
import sys, time
from mixmo_tf.training import run_guard
with run_guard.hold_run_folder(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_locked_folder_is_refused_naming_the_holder_and_taken_over_after_kill_9(tmp_path, capsys):
    model_dir = tmp_path / "run_smoke"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(model_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = _run_main(*_smoke_flags(tmp_path / "run"))
        assert code == exit_codes.ERROR
        expected = f"ERROR: {model_dir} is in use by process {holder.pid} on host "
        assert err.startswith(expected + socket.gethostname())
        assert len(err.strip().splitlines()) == 1
        assert not os.path.exists(model_dir / run_folder.RUN_CONFIG)  # nothing written
    finally:
        holder.kill()  # SIGKILL: the holder cannot clean up
        holder.wait()

    capsys.readouterr()
    with run_guard.hold_run_folder(str(model_dir)):
        taken_over = capsys.readouterr().out
        assert (
            f"Taking over the lock of {model_dir} from process {holder.pid} on host" in taken_over
        )
        assert (model_dir / run_folder.LOCK).read_text().split()[0] == str(os.getpid())
    # Released normally, the lock is empty: the next holder takes it quietly.
    assert (model_dir / run_folder.LOCK).read_text() == ""
    with run_guard.hold_run_folder(str(model_dir)):
        assert "Taking over" not in capsys.readouterr().out


# ---- unusable folders ----------------------------------------------------------------------------


# Linux capabilities that let root read and write whatever the permission bits say.
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
_CAPABILITY_VERSION_3 = 0x20080522


def _effective_capabilities(libc, new: int | None = None) -> int:
    """This thread's effective capability set (its low 64 bits); sets it first if `new`."""
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) x 2 words
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    if new is not None:
        data[0], data[3] = new & 0xFFFFFFFF, new >> 32
        if libc.capset(header, data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
    return data[0] | data[3] << 32


@contextlib.contextmanager
def _as_unprivileged_user():
    """Makes root honour permission bits as any user would; a no-op for other users.

    Root keeps its uid (so it still reads this checkout and its venv, wherever they are,
    e.g. under a 0700 `mktemp -d` folder) but loses the capabilities that override the
    permission bits, so a file or folder writable by none is not writable by it either.
    """
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    saved = _effective_capabilities(libc)
    overrides = 1 << _CAP_DAC_OVERRIDE | 1 << _CAP_DAC_READ_SEARCH
    _effective_capabilities(libc, saved & ~overrides)
    try:
        yield
    finally:
        _effective_capabilities(libc, saved)


def test_unusable_folders_give_one_error_line_and_exit_code_2(tmp_path):
    regular_file = tmp_path / "file"
    regular_file.write_text("not a folder")
    code, _, err = _run_main(*_smoke_flags(regular_file / "run"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ERROR: ")
    assert "a part of that path is a regular file, not a folder" in err

    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | 0o005)
    with _as_unprivileged_user():
        code, _, err = _run_main(*_smoke_flags(read_only / "run"))
    assert code == 2
    assert err.count("\n") == 1 and "this user cannot write there" in err


def test_an_unreachable_tpu_fails_within_seconds_with_one_error_line(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"grpc://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    start = time.monotonic()
    code, _, err = _run_main(*_smoke_flags(tmp_path), "--distribution=tpu", f"--tpu={address}")
    assert code == 2
    assert err.startswith(f"ERROR: No TPU is reachable at {address} (") and err.count("\n") == 1
    assert time.monotonic() - start < 15


@pytest.mark.slow
def test_evaluating_a_read_only_run_prints_the_metrics_then_fails(tmp_path, uninterrupted):
    model_dir, _ = uninterrupted
    read_only = tmp_path / "run"
    shutil.copytree(model_dir, read_only)
    for path in [read_only, *read_only.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)  # readable by all, writable by none
    with _as_unprivileged_user():
        code, out, err = _run_main(*_signal_flags(read_only), "--mode=evaluate")
    assert code == 2
    results = json.loads(out[out.index("{") :])
    assert results["step"] == 30 and 0 <= results["accuracy"] <= 1
    assert err.count("\n") == 1 and "this user cannot write there" in err
    assert not os.path.exists(read_only / os.path.join(run_folder.EVALUATION, run_folder.RESULTS))


# ---- signals -------------------------------------------------------------------------------------

# Long enough an epoch (WRN-10-1, 8 slots a step) to signal it in the middle.
_SIGNAL_RUN = dict(depth=10, width=1, epochs=1, steps_per_epoch=30, eval_steps=2, batch_size=8)


def _signal_config(model_dir) -> Config:
    return Config(dataset="digits", model_dir=str(model_dir), eval_batch_size=32, **_SIGNAL_RUN)


def _signal_flags(model_dir) -> list[str]:
    """The flags of `_signal_config(model_dir)`."""
    run_flags = [f"--{name}={value}" for name, value in _SIGNAL_RUN.items()]
    return [*run_flags, "--dataset=digits", "--eval_batch_size=32", f"--model_dir={model_dir}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted run: (its folder, its final state)."""
    model_dir = tmp_path_factory.mktemp("uninterrupted")
    return model_dir, _state(train(_signal_config(model_dir)))


def _assert_rerun_finishes_as(model_dir, uninterrupted) -> None:
    model = train(_signal_config(model_dir))
    assert int(model.optimizer.iterations.numpy()) == 30
    for resumed, reference in zip(_state(model), uninterrupted[1], strict=True):
        np.testing.assert_array_equal(resumed, reference)


@pytest.mark.slow
def test_sigterm_mid_epoch_checkpoints_exits_3_and_the_rerun_matches(tmp_path, uninterrupted):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "main.py", *_signal_flags(tmp_path), "--checkpoint_every_steps=5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    first = tmp_path / "checkpoints" / "ckpt-5.weights.h5"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)

    assert process.returncode == exit_codes.INTERRUPTED, err[-3000:]
    assert "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("Stopped by SIGTERM at step ")
    step = int(last_line.split(" at step ")[1].split(";")[0])
    assert 5 <= step < 30  # mid-epoch: after the signal, before the epoch's end
    assert (tmp_path / "checkpoints" / f"ckpt-{step}.weights.h5").exists()
    _assert_rerun_finishes_as(tmp_path, uninterrupted)


@pytest.mark.slow
def test_sigint_mid_epoch_checkpoints_and_the_rerun_matches(tmp_path, uninterrupted, monkeypatch):
    """Ctrl-C, delivered to this process by the kernel at the end of step 7."""

    class SignalAtStep7(callbacks.PeriodicCheckpoint):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 7:
                os.kill(os.getpid(), signal.SIGINT)
            super().on_train_batch_end(batch, logs)

    monkeypatch.setattr(callbacks, "PeriodicCheckpoint", SignalAtStep7)
    # What pytest started with: Python's default, or SIG_IGN under nohup or a background job.
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(run_guard.Interrupted, match="Stopped by SIGINT at step 7; saved "):
        train(_signal_config(tmp_path))
    assert signal.getsignal(signal.SIGINT) is handler_before  # restored
    assert (tmp_path / "checkpoints" / "ckpt-7.weights.h5").exists()
    monkeypatch.undo()
    _assert_rerun_finishes_as(tmp_path, uninterrupted)


def _signal_at_step_2(monkeypatch, times: int) -> None:
    """Ctrl-C `times` times in a row at the end of step 2 of a training run."""

    class SignalAtStep2(callbacks.PeriodicCheckpoint):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 2:
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGINT)
            super().on_train_batch_end(batch, logs)

    monkeypatch.setattr(callbacks, "PeriodicCheckpoint", SignalAtStep2)


def test_a_second_ctrl_c_during_the_stop_save_waits_for_it(tmp_path, monkeypatch, capsys):
    _signal_at_step_2(monkeypatch, times=1)
    save = checkpoints.save

    def save_signalled_again(manager, step):
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C again
        return save(manager, step)

    monkeypatch.setattr(checkpoints, "save", save_signalled_again)
    with pytest.raises(run_guard.Interrupted, match="Stopped by SIGINT at step 2; saved "):
        train(_smoke(tmp_path, checkpoint_every_steps=0))
    assert "Still saving the checkpoint of the stop: it ends in seconds." in capsys.readouterr().err
    assert (tmp_path / "checkpoints" / "ckpt-2.weights.h5").exists()


def test_a_second_ctrl_c_before_the_stop_save_stops_at_once_and_says_so(tmp_path, monkeypatch):
    _signal_at_step_2(monkeypatch, times=2)
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(run_guard.StoppedAtOnce) as stopped:
        train(_smoke(tmp_path, checkpoint_every_steps=0))
    assert signal.getsignal(signal.SIGINT) is handler_before  # restored
    with pytest.raises(SystemExit) as exit_, exit_codes.stops_reported(lambda: "unused"):
        raise stopped.value
    assert exit_.value.code == exit_codes.STOPPED_BY_SIGINT
    assert str(stopped.value) == (
        "Stopped at once by a second Ctrl-C (SIGINT), before the stop's checkpoint was saved: "
        "rerun the same command to resume from the run's last checkpoint."
    )
    assert not glob.glob(str(tmp_path / "checkpoints" / "ckpt-2.*"))


# ---- signals outside training's handler ----------------------------------------------------------


def test_stops_outside_training_exit_with_one_line_after_their_clean_up(capsys):
    cleaned = []
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_, exit_codes.stops_reported(lambda: "the import; x"):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            cleaned.append(True)  # a staging folder's removal, a child's end
    assert cleaned and exit_.value.code == 143 == exit_codes.STOPPED_BY_SIGTERM
    assert signal.getsignal(signal.SIGTERM) is handler_before
    with pytest.raises(SystemExit) as exit_, exit_codes.stops_reported(lambda: "the import; x"):
        raise KeyboardInterrupt
    assert exit_.value.code == 130 == exit_codes.STOPPED_BY_SIGINT
    assert capsys.readouterr().err == (
        "Stopped by SIGTERM during the import; x.\n"
        "Stopped by Ctrl-C (SIGINT) during the import; x.\n"
    )


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["sigterm", "ctrl-c"])
def test_a_stop_during_the_onednn_timing_ends_its_children_and_says_one_line(stop, tmp_path):
    """SIGTERM to the command only (a scheduler), or Ctrl-C to its process group."""
    env = {**os.environ, "MIXMO_TF_CACHE": str(tmp_path / "cache")}
    env.pop("TF_ENABLE_ONEDNN_OPTS")  # the command then measures oneDNN on this CPU
    process = subprocess.Popen(
        [sys.executable, "main.py", *_signal_flags(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
        start_new_session=True,
    )
    for line in process.stdout:
        if line.startswith("Timing the training step with oneDNN off and on"):
            break
    else:
        pytest.skip(f"oneDNN is not measured on this machine: {process.communicate()}")
    deadline = time.monotonic() + 60
    while len(children := _children(process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(children) == 2
    if stop == "sigterm":
        process.send_signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=20)

    signal_name = "SIGTERM" if stop == "sigterm" else "Ctrl-C (SIGINT)"
    assert process.returncode == 128 + (15 if stop == "sigterm" else 2), err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"Stopped by {signal_name} during training's start, before its first step; nothing "
        "was saved: rerun the same command (a resumed run resumes from its last checkpoint)."
    )
    assert not [child for child in children if os.path.exists(f"/proc/{child}")]
    # Nothing saved: the run folder holds only the lock file its checks took before the
    # timing (no settings, no checkpoint), and the step-time cache is empty.
    assert [path.name for path in (tmp_path / "run").iterdir()] == ["run.lock"]
    assert not list((tmp_path / "cache").glob("*"))


# ---- full disks ----------------------------------------------------------------------------------


def _checkpoint_files(directory) -> list[str]:
    return sorted(os.listdir(directory))


def _data_size(checkpoint: str) -> int:
    return os.path.getsize(checkpoint + checkpoints.SUFFIX)


def test_a_checkpoint_over_the_file_size_limit_leaves_nothing_and_names_the_room(tmp_path):
    model = build_model(_smoke(tmp_path))
    manager = checkpoints.checkpoint_manager(model, str(tmp_path))
    first = checkpoints.save(manager, 1)
    size = _data_size(first)
    needed = checkpoints.checkpoint_bytes(manager)
    assert needed == pytest.approx(size, rel=0.02)
    kept = _checkpoint_files(manager.directory)

    with (
        disk_limits.file_size_limit(size // 2),
        pytest.raises(checkpoints.CheckpointSpaceError) as error,
    ):
        checkpoints.save(manager, 2)
    assert str(error.value) == (
        f"The checkpoint of step 2 does not fit in {manager.directory} (File too large): it "
        f"needs about {run_folder.megabytes(needed)} and this process may write files of at "
        f"most {run_folder.megabytes(size // 2)} (ulimit -f). Raise the file size limit "
        f"(ulimit -f) or write elsewhere, then rerun the same command: it resumes from {first}."
    )
    assert _checkpoint_files(manager.directory) == kept  # no temporary file, no ckpt-2 file
    assert checkpoints.newest_usable(manager.directory) == first

    assert checkpoints.save(manager, 2).endswith("ckpt-2")  # room again: saves as usual
    assert checkpoints.newest_usable(manager.directory).endswith("ckpt-2")


def test_a_checkpoint_on_a_full_disk_leaves_nothing_and_says_what_is_free(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not disk_limits.tmpfs_mountable(disk):
        pytest.skip("mounting a tmpfs needs root: the file size limit test covers the rest")
    model = build_model(_smoke(tmp_path))
    with disk_limits.small_tmpfs(disk, kib=1100):  # one checkpoint (~630 KiB) fits, not two
        manager = checkpoints.checkpoint_manager(model, str(disk / "run"))
        first = checkpoints.save(manager, 1)
        kept = _checkpoint_files(manager.directory)
        with pytest.raises(checkpoints.CheckpointSpaceError) as error:
            checkpoints.save(manager, 2)
        free = shutil.disk_usage(disk).free  # once the half-written files are gone
        assert _checkpoint_files(manager.directory) == kept
        assert checkpoints.newest_usable(manager.directory) == first
    needed = run_folder.megabytes(checkpoints.checkpoint_bytes(manager))
    assert str(error.value) == (
        f"The checkpoint of step 2 does not fit in {manager.directory} (No space left on "
        f"device): it needs about {needed} and {run_folder.megabytes(free)} are free there. "
        "Free some space there (or choose another folder), then rerun the same command: it "
        f"resumes from {first}."
    )


def test_leftovers_of_interrupted_saves_are_removed_and_recorded_checkpoints_kept(tmp_path):
    model = build_model(_smoke(tmp_path))
    manager = checkpoints.checkpoint_manager(model, str(tmp_path))
    for step in (3, 4):
        checkpoints.save(manager, step)
    directory = manager.directory
    kept = _checkpoint_files(directory)
    # A save of step 5 killed while writing its file under the temporary name, and files
    # that are not the run's checkpoints (left alone).
    for name in (f"{run_folder.PARTIAL_PREFIX}x1y2{checkpoints.SUFFIX}", "notes.txt"):
        shutil.copy(os.path.join(directory, "ckpt-4.weights.h5"), os.path.join(directory, name))

    checkpoints.remove_unfinished(directory)
    assert _checkpoint_files(directory) == sorted([*kept, "notes.txt"])
    assert checkpoints.newest_usable(directory).endswith("ckpt-4")


def test_leftovers_of_an_interrupted_tensorflow_save_of_an_earlier_version_are_removed(
    tmp_path,
):
    directory = str(tmp_path / "checkpoints")
    shutil.copytree(os.path.join(FIXTURES, "legacy_wrn10_1_digits", "checkpoints"), directory)
    kept = _checkpoint_files(directory)
    # A save of step 5 killed while writing, one of step 6 killed before the index named
    # it, and a file of an older checkpoint the index does not name (left alone: not ours).
    os.makedirs(os.path.join(directory, "ckpt-5_temp"))
    open(os.path.join(directory, "ckpt-5_temp", "part-00000-of-00001.index"), "w").close()
    for name in ("ckpt-6.index", "ckpt-6.data-00000-of-00001", "ckpt-1.index"):
        shutil.copy(os.path.join(directory, "ckpt-2.index"), os.path.join(directory, name))

    checkpoints.remove_unfinished(directory)
    assert _checkpoint_files(directory) == sorted([*kept, "ckpt-1.index"])
    assert checkpoints.newest_usable(directory).endswith("ckpt-2")


# Trains like main.py, but from the end of step `at_step` on, this process may write files of
# at most `limit` bytes (SIGXFSZ ignored): the checkpoint of that step does not fit.
_LIMIT_AT_STEP = """
import resource, signal, sys
from mixmo_tf.cli import app
from mixmo_tf.training import callbacks

at_step, limit = int(sys.argv[1]), int(sys.argv[2])

class LimitAtStep(callbacks.PeriodicCheckpoint):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == at_step:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        super().on_train_batch_end(batch, logs)

callbacks.PeriodicCheckpoint = LimitAtStep
sys.argv = ["main.py", *sys.argv[3:]]
app.run()
"""


@pytest.mark.slow
def test_a_full_disk_mid_run_stops_with_one_line_and_the_rerun_matches(tmp_path, uninterrupted):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    directory = tmp_path / "checkpoints"
    limit = 100_000  # below a checkpoint's ~630 KiB, above every log file of the run
    command = [sys.executable, "-c", _LIMIT_AT_STEP, "10", str(limit)]
    process = subprocess.run(
        [*command, *_signal_flags(tmp_path), "--checkpoint_every_steps=5"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert process.returncode == exit_codes.ERROR, process.stderr[-3000:]
    # The script imports TensorFlow before main.py would hide its start-up notes: what
    # follows them is ours, one line.
    error = process.stderr.split("ERROR: ", 1)[1]
    assert "Traceback" not in process.stderr and error.count("\n") == 1, process.stderr[-3000:]
    assert error.startswith(
        f"The checkpoint of step 10 does not fit in {directory} (File too large): it needs about "
    )
    assert error.rstrip().endswith(
        f"at most {run_folder.megabytes(limit)} (ulimit -f). Raise the file size limit "
        f"(ulimit -f) or write elsewhere, then rerun the same command: it resumes from "
        f"{directory / 'ckpt-5'}."
    )
    assert _checkpoint_files(directory) == ["ckpt-5.weights.h5"]
    _assert_rerun_finishes_as(tmp_path, uninterrupted)  # from ckpt-5, bit for bit


@pytest.mark.slow
def test_an_error_mid_epoch_starts_its_own_line_after_the_progress_bar(tmp_path):
    """stdout and stderr in one file (`2>&1`): the bar's unfinished line is ended first."""
    shared = tmp_path / "output.txt"
    with open(shared, "w") as output:
        process = subprocess.run(
            [
                sys.executable,
                "-c",
                _LIMIT_AT_STEP,
                "4",
                "100000",
                *_signal_flags(tmp_path),
                "--checkpoint_every_steps=2",
            ],
            stdout=output,
            stderr=output,
            cwd=REPO,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            timeout=300,
        )
    lines = shared.read_text().splitlines()
    assert process.returncode == exit_codes.ERROR, lines[-5:]
    assert "/30" in lines[-2]  # the bar, mid-epoch
    assert lines[-1].startswith("ERROR: The checkpoint of step 4 does not fit in "), lines[-2:]


def test_a_first_checkpoint_that_does_not_fit_says_the_rerun_starts_over(tmp_path):
    limit = 100_000  # the run's logs fit; its first checkpoint (~630 KiB) does not
    with disk_limits.file_size_limit(limit):
        code, _, err = _run_main(*_smoke_flags(tmp_path / "run"))
    directory = tmp_path / "run_smoke" / "checkpoints"
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(
        f"ERROR: The checkpoint of step 3 does not fit in {directory} (File too large): "
    )
    assert err.endswith("then rerun the same command: it starts from step 0.\n")
    assert os.listdir(directory) == []
