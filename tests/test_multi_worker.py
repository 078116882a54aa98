"""Multi-worker training: two workers on localhost, the way two machines would run it.

Proven here, with real processes, TF_CONFIG and gRPC between them (ports picked free):
- `--distribution=multi_worker_mirrored` trains a digits smoke run: both workers exit 0 with
  bitwise-identical weights, batch-norm statistics and optimizer state; the run folder holds
  one set of checkpoints, written by the chief; the other worker leaves nothing behind.
- SIGTERM to one worker (a preemption notice) stops both at the same step: the chief
  checkpoints it and both exit with code 3.
- `kill -9` of one worker in the middle of the run, then a restart of both, resumes from
  the chief's last checkpoint and ends with the weights of the uninterrupted run, bit for
  bit (the same batches, the same collective sums in the same order).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# Every test here trains for tens of seconds or starts training processes.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One worker: trains the smoke run, saves its final state. With a step number and a signal
# name as third and fourth arguments, the worker sends itself that signal at the end of
# that step: SIGKILL as a lost machine, SIGTERM as a preemption notice. It exits like
# main.py: code 3 after a signal stop.
WORKER = textwrap.dedent(
    """
    import dataclasses, os, signal, sys
    import numpy as np
    from mixmo_tf.training.run import train
    from mixmo_tf.cli import exit_codes
    from mixmo_tf.config import Config
    from mixmo_tf.training import callbacks, run_guard

    model_dir, out, at_step, signal_name = sys.argv[1:5]

    class SignalAt(callbacks.PeriodicCheckpoint):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == int(at_step):
                os.kill(os.getpid(), getattr(signal, signal_name))
            super().on_train_batch_end(batch, logs)

    callbacks.PeriodicCheckpoint = SignalAt
    smoke = Config(
        dataset="digits", distribution="multi_worker_mirrored", checkpoint_every_steps=1
    ).smoke()
    try:
        model = train(dataclasses.replace(smoke, model_dir=model_dir))
    except run_guard.Interrupted as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(exit_codes.INTERRUPTED)
    np.savez(out, *[np.asarray(v) for v in model.weights + model.optimizer.variables])
    """
)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _launch(model_dir, outputs, scratch, signal_at: tuple[int, int] = (0, 0), name="SIGKILL"):
    """Starts the two workers, worker i signalled by `name` after step `signal_at[i]` (0: not)."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(tf_config),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TMPDIR": str(scratch),  # where a non-chief worker keeps its scratch files
        }
        command = [sys.executable, "-c", WORKER, str(model_dir), str(outputs[index])]
        processes.append(
            subprocess.Popen(
                [*command, str(signal_at[index]), name],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


def _finish(processes, timeout: float = 300) -> list[tuple[int, str, str]]:
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        results.append((process.returncode, out, err))
    return results


def _load(path) -> list[np.ndarray]:
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def _assert_identical(state_a, state_b) -> None:
    assert len(state_a) == len(state_b)
    for a, b in zip(state_a, state_b):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The two-worker smoke run without incident: (run folder, results, states, scratch)."""
    root = tmp_path_factory.mktemp("multi_worker")
    scratch = root / "tmp"
    scratch.mkdir()
    outputs = [root / "worker0.npz", root / "worker1.npz"]
    results = _finish(_launch(root / "run", outputs, scratch))
    return root / "run", results, [_load(p) for p in outputs if p.exists()], scratch


def test_two_workers_train_to_identical_weights_with_one_set_of_checkpoints(uninterrupted):
    model_dir, results, states, scratch = uninterrupted
    for code, _, err in results:
        assert code == 0, err[-3000:]
    chief_out = results[0][1]
    assert "Epoch 2/2" in chief_out and "val_accuracy" in chief_out
    first, second = states
    _assert_identical(first, second)
    assert all(np.isfinite(v).all() for v in first)

    checkpoints = sorted(os.listdir(model_dir / "checkpoints"))
    assert checkpoints == ["checkpoint"] + [
        f"ckpt-{step}.{part}" for step in (4, 5, 6) for part in ("data-00000-of-00001", "index")
    ]
    assert sorted(os.listdir(model_dir)) == [
        "checkpoints",
        "logs",
        "model.keras",
        "run.lock",
        "run_config.json",
    ]
    assert os.listdir(scratch) == []  # the other worker's scratch folder is gone


def test_kill_9_of_a_worker_then_a_restart_of_both_ends_as_the_uninterrupted_run(
    tmp_path, uninterrupted
):
    _, _, reference, _ = uninterrupted
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    outputs = [tmp_path / "worker0.npz", tmp_path / "worker1.npz"]
    # Worker 1 dies at the end of step 5. The chief would stop by itself once the
    # coordination service misses the dead worker's heartbeats (minutes); a scheduler
    # restarting the job kills it first, and so does the test.
    chief, worker = _launch(tmp_path / "run", outputs, scratch, signal_at=(0, 5))
    assert worker.wait(timeout=300) == -9
    chief.kill()
    _finish([chief, worker])
    assert not any(path.exists() for path in outputs)

    restarted = _finish(_launch(tmp_path / "run", outputs, scratch))
    for code, _, err in restarted:
        assert code == 0, err[-3000:]
    resumed_at = restarted[0][1].split("Resuming from step ")[1].split(" ")[0]
    assert resumed_at in ("4", "5")  # the chief's last complete checkpoint
    _assert_identical(_load(outputs[0]), reference[0])
    _assert_identical(_load(outputs[1]), reference[0])


def test_sigterm_to_one_worker_stops_both_at_the_same_step_with_exit_code_3(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    outputs = [tmp_path / "worker0.npz", tmp_path / "worker1.npz"]
    # Worker 1's handler runs after the workers agreed on step 5: they stop after step 6.
    launched = _launch(tmp_path / "run", outputs, scratch, signal_at=(0, 5), name="SIGTERM")
    (chief_code, _, chief_err), (worker_code, _, worker_err) = _finish(launched)
    assert (chief_code, worker_code) == (3, 3), chief_err[-2000:] + worker_err[-2000:]
    assert "Stopped by a signal to another worker at step 6; saved " in chief_err
    assert "Stopped by SIGTERM at step 6" in worker_err
    assert (tmp_path / "run" / "checkpoints" / "ckpt-6.index").exists()
    assert "Traceback" not in chief_err + worker_err
