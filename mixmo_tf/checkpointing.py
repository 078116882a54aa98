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

from mixmo_tf.config import changeable_on_resume, complete_recorded

CHECKPOINT_SUBDIR = "checkpoints"
RUN_CONFIG = "run_config.json"
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


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Saves at the end of each epoch and, if `every_steps` > 0, every that many steps."""

    def __init__(self, manager: tf.train.CheckpointManager, every_steps: int = 0):
        super().__init__()
        self.manager = manager
        self.every_steps = every_steps
        self._last_saved_step = -1

    def _save(self, step: int) -> None:
        if step != self._last_saved_step:
            self.manager.save(checkpoint_number=step)
            self._last_saved_step = step

    def on_train_batch_end(self, batch, logs=None):
        if not self.every_steps:
            return
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every_steps == 0:
            self._save(step)

    def on_epoch_end(self, epoch, logs=None):
        self._save(int(self.model.optimizer.iterations.numpy()))


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with the step and learning rate when the loss stops being finite.

    Args:
        learning_rate_at: the optimizer's schedule, step -> rate; read only on failure, so
            the training loop pays nothing for the report.
    """

    def __init__(self, learning_rate_at: Callable[[int], float]):
        super().__init__()
        self.learning_rate_at = learning_rate_at

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if math.isfinite(loss):
            return
        step = int(self.model.optimizer.iterations.numpy())
        # The optimizer has already counted this step: its rate is the schedule's at step - 1.
        learning_rate = float(keras.ops.convert_to_numpy(self.learning_rate_at(step - 1)))
        raise FloatingPointError(
            f"The training loss became {loss} at step {step} (learning rate {learning_rate:.3g}). "
            "The last checkpoint is intact; lower --lr or check the input data, then rerun."
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
