"""Resumable training state: atomic checkpoints of the model and optimizer, and guards."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable

import keras
import tensorflow as tf

from mixmo_tf import run_guard
from mixmo_tf.config import changeable_on_resume, complete_recorded
from mixmo_tf.recorded_run import RUN_CONFIG

CHECKPOINT_SUBDIR = "checkpoints"
_KEEP = 3


def checkpoint_manager(model: keras.Model, model_dir: str) -> tf.train.CheckpointManager:
    """Manager of `<model_dir>/checkpoints`, holding the weights and the optimizer state.

    TensorFlow writes each checkpoint under a temporary name and updates the `checkpoint`
    index file atomically afterwards, so an interrupted save leaves the previous one usable.
    """
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    return tf.train.CheckpointManager(
        checkpoint, os.path.join(model_dir, CHECKPOINT_SUBDIR), max_to_keep=_KEEP
    )


class CheckpointMismatchError(ValueError):
    """The newest checkpoint of model_dir was written for another model."""


def restore_latest(manager: tf.train.CheckpointManager) -> int:
    """Restores the newest checkpoint, if any; returns the optimizer step it was taken at.

    Raises:
        CheckpointMismatchError: the checkpoint is of another architecture or dataset.
    """
    latest = manager.latest_checkpoint
    if latest is None:
        return 0
    try:
        manager.checkpoint.restore(latest).assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        raise CheckpointMismatchError(
            f"The checkpoint {latest} does not match this model ({error}). It was written by "
            "a run with another network (--backbone and its --depth/--width), --num_members or "
            "--dataset: use that run's flags or another --model_dir."
        ) from error
    return int(manager.checkpoint.optimizer.iterations.numpy())


def write_text_atomically(path: str, text: str) -> None:
    """Writes `text` under a temporary name, then renames it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


def record_run_config(config) -> None:
    """Writes `config` to `<model_dir>/run_config.json`, refusing to mix two runs in one folder.

    Raises:
        CheckpointMismatchError: the folder holds a run whose model, method or data-stream
            settings differ (the optimisation schedule and execution settings may change).
    """
    path = os.path.join(config.model_dir, RUN_CONFIG)
    current = json.loads(json.dumps(dataclasses.asdict(config)))
    if os.path.exists(path):
        with open(path) as stream:
            recorded = complete_recorded(json.load(stream))
        changed = sorted(name for name in current if recorded.get(name) != current[name])

        def describe(names):
            return ", ".join(f"--{n}: {recorded.get(n)!r} -> {current[n]!r}" for n in names)

        refused = [name for name in changed if not changeable_on_resume(name)]
        if refused:
            raise CheckpointMismatchError(
                f"{config.model_dir} holds a run with other settings ({describe(refused)}). "
                "Use the recorded values to resume it, or another --model_dir for a new run."
            )
        if changed:
            print(f"Resuming {config.model_dir} with changed settings: {describe(changed)}.")
    write_text_atomically(path, json.dumps(current, indent=2, sort_keys=True))


def first_non_finite(model: keras.Model) -> str | None:
    """The path of the first model or optimizer variable that shows divergence, or None.

    Covers everything a checkpoint stores: weights, batch-norm moving statistics and the
    optimizer's slots. A variable shows divergence when its float32 sum of squares is not
    finite: a NaN or an infinity in it, or values so large (above ~1e19) that the L2
    penalty of the next step overflows; such a state cannot train on.
    """
    for variable in [*model.weights, *model.optimizer.variables]:
        if not keras.backend.is_float_dtype(variable.dtype):
            continue  # the step counter, the loss-scale counters
        values = keras.ops.cast(variable, "float32")
        if not bool(keras.ops.isfinite(keras.ops.sum(keras.ops.square(values)))):
            return variable.path
    return None


def _divergence_error(
    what: str, step: int, learning_rate_at: Callable[[int], float], manager
) -> FloatingPointError:
    """The error of a run that diverged at `step`, naming the checkpoint a rerun resumes."""
    # The optimizer has already counted this step: its rate is the schedule's at step - 1.
    learning_rate = float(keras.ops.convert_to_numpy(learning_rate_at(step - 1)))
    latest = manager.latest_checkpoint
    if latest is None:
        where = "No checkpoint was saved before it"
        rerun = "it starts from step 0"
    else:
        where = f"Only finite states are checkpointed: the last is {latest}"
        rerun = (
            f"it resumes from {os.path.basename(latest)} (if it diverges again at once, "
            "that state is already damaged: start over in a new --model_dir)"
        )
    return FloatingPointError(
        f"Training diverged at step {step} (learning rate {learning_rate:.3g}): {what}. "
        f"{where}. Lower --lr or check the input data, then rerun: {rerun}."
    )


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Saves finite states: at each epoch end, every `every_steps` steps if > 0, and on a stop.

    A state with a non-finite variable is never saved: training stops with a
    FloatingPointError naming the variable and the last (finite) checkpoint, so a rerun with
    a lower --lr resumes before the divergence. A pending `stop_request` (SIGTERM, SIGINT)
    saves the state at the next step boundary, during validation included, and raises
    `run_guard.Interrupted`.

    Args:
        manager: where checkpoints go.
        learning_rate_at: the optimizer's schedule, step -> rate, for the divergence report.
        every_steps: also save every this many steps; 0 saves only at epoch ends.
        stop_request: truthy when the run must stop; None for a run without signal handling.
    """

    def __init__(
        self,
        manager: tf.train.CheckpointManager,
        learning_rate_at: Callable[[int], float],
        every_steps: int = 0,
        stop_request=None,
    ):
        super().__init__()
        self.manager = manager
        self.learning_rate_at = learning_rate_at
        self.every_steps = every_steps
        self.stop_request = stop_request
        self._last_saved_step = -1

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _save(self, step: int) -> None:
        if step == self._last_saved_step:
            return
        variable = first_non_finite(self.model)
        if variable is not None:
            raise _divergence_error(
                f"{variable} overflows (non-finite values, or a non-finite sum of squares)",
                step,
                self.learning_rate_at,
                self.manager,
            )
        self.manager.save(checkpoint_number=step)
        self._last_saved_step = step

    def _stop_if_requested(self) -> None:
        if not self.stop_request:
            return
        step = self._step()
        self._save(step)
        raise run_guard.Interrupted(
            f"Stopped by {self.stop_request.signal_name} at step {step}; saved "
            f"{self.manager.latest_checkpoint}. Rerun the same command to resume."
        )

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if self.every_steps and step % self.every_steps == 0:
            self._save(step)
        self._stop_if_requested()

    def on_test_batch_end(self, batch, logs=None):
        self._stop_if_requested()

    def on_epoch_end(self, epoch, logs=None):
        self._save(self._step())
        self._stop_if_requested()


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with the step, learning rate and last checkpoint when the loss is non-finite.

    Args:
        learning_rate_at: the optimizer's schedule, step -> rate; read only on failure, so
            the training loop pays nothing for the report.
        manager: the run's checkpoints, to name the one a rerun resumes.
    """

    def __init__(
        self, learning_rate_at: Callable[[int], float], manager: tf.train.CheckpointManager
    ):
        super().__init__()
        self.learning_rate_at = learning_rate_at
        self.manager = manager

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if math.isfinite(loss):
            return
        step = int(self.model.optimizer.iterations.numpy())
        raise _divergence_error(
            f"the training loss became {loss}", step, self.learning_rate_at, self.manager
        )


def save_model_atomically(model: keras.Model, path: str) -> None:
    """Writes a `.keras` file under a temporary name, then renames it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".keras")
    os.close(handle)
    try:
        model.save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
