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
- The validation metrics of the two workers are those of one process evaluating the same
  weights, although the test split ends with a partial batch and a batch of one image
  (one replica gets an empty slice).
- A streamed source (`folder:PATH`, images decoded from their files per batch) trains on two
  workers with exactly the batches of one process: the workers' slices of each step,
  concatenated, are the one process's batch.
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
from helpers.datasets import write_image_folder
from helpers.paths import REPO
from helpers.runs import assert_validates_as_one_device

from mixmo_tf import data
from mixmo_tf.config import Config

# Every test here trains for tens of seconds or starts training processes.
pytestmark = pytest.mark.slow


# The digits test split (360 images) is validated in a batch of 359, split 180 / 179 over
# the two replicas, then a batch of one image: one replica gets it, the other an empty slice.
EVAL_BATCH_SIZE = 359

# One worker: trains the smoke run, validating on the whole test split in batches of
# EVAL_BATCH_SIZE; saves its final state, and its history as `out` with .json. With a step
# number and a signal name as third and fourth arguments, the worker sends itself that
# signal at the end of that step: SIGKILL as a lost machine, SIGTERM as a preemption
# notice. It exits like main.py: code 3 after a signal stop.
WORKER = textwrap.dedent(
    """
    import dataclasses, json, os, signal, sys
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
    smoke = dataclasses.replace(
        smoke, model_dir=model_dir, eval_batch_size=EVAL_BATCH_SIZE, eval_steps=0
    )
    try:
        model = train(smoke)
    except run_guard.Interrupted as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(exit_codes.INTERRUPTED)
    np.savez(out, *[np.asarray(v) for v in model.weights + model.optimizer.variables])
    with open(os.path.splitext(out)[0] + ".json", "w") as stream:
        json.dump(model.history.history, stream)
    """
).replace("EVAL_BATCH_SIZE", str(EVAL_BATCH_SIZE))

# One process of the streamed run, one of two workers or alone (distribution "default"):
# records the batch (its replica's slice of it) that each training step receives.
STREAMED_WORKER = textwrap.dedent(
    """
    import dataclasses, sys
    import numpy as np
    import tensorflow as tf
    from mixmo_tf.config import Config
    from mixmo_tf.models.mixmo_model import MixMoModel
    from mixmo_tf.training.run import train

    model_dir, out, folder, distribution = sys.argv[1:5]
    KEYS = ("images", "labels", "partner_images", "partner_labels")
    received = {}

    def record(step, *tensors):
        received[int(step)] = [tensor.numpy() for tensor in tensors]

    train_step = MixMoModel.train_step

    def recording_train_step(self, data):
        # The optimizer's step is read before the step's own update increments it.
        tf.py_function(record, [self.optimizer.iterations, *(data[k] for k in KEYS)], Tout=[])
        return train_step(self, data)

    MixMoModel.train_step = recording_train_step
    smoke = Config(
        dataset=f"folder:{folder}",
        image_size=16,
        msda="cutmix",
        precision="float32",
        distribution=distribution,
    ).smoke()
    model = train(dataclasses.replace(smoke, model_dir=model_dir))
    assert all(np.isfinite(np.asarray(v)).all() for v in model.weights)
    arrays = {f"{step}/{key}": v for step, vs in received.items() for key, v in zip(KEYS, vs)}
    np.savez(out, **arrays)
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


def _start(script: str, arguments: list, scratch, tf_config: dict | None) -> subprocess.Popen:
    """Runs `script` as one worker of `tf_config`'s cluster, or alone if None."""
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TMPDIR": str(scratch),  # where a non-chief worker keeps its scratch files
    }
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, arguments)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _workers(script: str, arguments: list[list], scratch) -> list[subprocess.Popen]:
    """Starts one worker per list of `arguments`, all in one cluster on localhost."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(len(arguments))]}
    return [
        _start(script, args, scratch, {"cluster": cluster, "task": {"type": "worker", "index": i}})
        for i, args in enumerate(arguments)
    ]


def _launch(model_dir, outputs, scratch, signal_at: tuple[int, int] = (0, 0), name="SIGKILL"):
    """Starts the two workers, worker i signalled by `name` after step `signal_at[i]` (0: not)."""
    arguments = [[model_dir, outputs[i], signal_at[i], name] for i in range(2)]
    return _workers(WORKER, arguments, scratch)


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


def _history(path) -> dict[str, list[float]]:
    with open(path.with_suffix(".json")) as stream:
        return json.load(stream)


def _assert_identical(state_a, state_b) -> None:
    assert len(state_a) == len(state_b)
    for a, b in zip(state_a, state_b):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The two-worker smoke run without incident: (run folder, results, states, histories,
    scratch)."""
    root = tmp_path_factory.mktemp("multi_worker")
    scratch = root / "tmp"
    scratch.mkdir()
    outputs = [root / "worker0.npz", root / "worker1.npz"]
    results = _finish(_launch(root / "run", outputs, scratch))
    finished = [path for path in outputs if path.exists()]
    states, histories = [_load(p) for p in finished], [_history(p) for p in finished]
    return root / "run", results, states, histories, scratch


def test_two_workers_train_to_identical_weights_with_one_set_of_checkpoints(uninterrupted):
    model_dir, results, states, _, scratch = uninterrupted
    for code, _, err in results:
        assert code == 0, err[-3000:]
    chief_out = results[0][1]
    assert "Epoch 2/2" in chief_out and "val_accuracy" in chief_out
    first, second = states
    _assert_identical(first, second)
    assert all(np.isfinite(v).all() for v in first)

    checkpoints = sorted(os.listdir(model_dir / "checkpoints"))
    assert checkpoints == [f"ckpt-{step}.weights.h5" for step in (4, 5, 6)]
    assert sorted(os.listdir(model_dir)) == [
        "checkpoints",
        "logs",
        "model.keras",
        "run.lock",
        "run_config.json",
    ]
    assert os.listdir(scratch) == []  # the other worker's scratch folder is gone


def test_two_workers_validate_with_the_metrics_of_one_process_despite_a_partial_last_batch(
    uninterrupted,
):
    model_dir, results, _, histories, _ = uninterrupted
    for code, _, err in results:
        assert code == 0, err[-3000:]  # an empty slice must not crash a worker (oneDNN's BN)
    _, labels = data.open_split(Config(dataset="digits").spec, "test")
    assert len(labels) % EVAL_BATCH_SIZE == 1  # a partial batch, and a last one of one image
    chief, worker = histories
    assert chief == worker
    # The final weights are those the last epoch was validated with (180 + 1 and 179
    # images per replica).
    last = {name: values[-1] for name, values in chief.items() if name.startswith("val_")}
    assert_validates_as_one_device(model_dir, last, EVAL_BATCH_SIZE)


def test_kill_9_of_a_worker_then_a_restart_of_both_ends_as_the_uninterrupted_run(
    tmp_path, uninterrupted
):
    _, _, reference, _, _ = uninterrupted
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
    assert (tmp_path / "run" / "checkpoints" / "ckpt-6.weights.h5").exists()
    assert "Traceback" not in chief_err + worker_err


def test_a_streamed_folder_trains_on_two_workers_with_the_batches_of_one_process(tmp_path):
    folder = write_image_folder(tmp_path / "pets")
    outputs = [tmp_path / "worker0.npz", tmp_path / "worker1.npz", tmp_path / "alone.npz"]
    arguments = [[tmp_path / "run", path, folder, "multi_worker_mirrored"] for path in outputs[:2]]
    launched = _workers(STREAMED_WORKER, arguments, tmp_path)
    alone = [tmp_path / "alone_run", outputs[2], folder, "default"]
    launched.append(_start(STREAMED_WORKER, alone, tmp_path, tf_config=None))
    for code, _, err in _finish(launched):
        assert code == 0, err[-3000:]
    slices = [np.load(path) for path in outputs[:2]]
    batches = np.load(outputs[2])
    assert sorted(batches.files) == sorted(slices[0].files) == sorted(slices[1].files)
    assert {name.split("/")[0] for name in batches.files} == {str(step) for step in range(6)}
    for name in batches.files:
        first, second = slices[0][name], slices[1][name]
        assert len(first) == len(second) == len(batches[name]) // 2, name
        np.testing.assert_array_equal(np.concatenate([first, second]), batches[name], name)
