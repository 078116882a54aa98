"""Resumable training state: atomic checkpoints of the model and optimizer, and guards."""

from __future__ import annotations

import math
import os
import tempfile

import keras
import tensorflow as tf

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


def restore_latest(manager: tf.train.CheckpointManager) -> int:
    """Restores the newest checkpoint, if any; returns the optimizer step it was taken at.

    Raises:
        ValueError: the checkpoint does not match the model (another architecture or flags).
    """
    latest = manager.latest_checkpoint
    if latest is None:
        return 0
    status = manager.checkpoint.restore(latest)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise ValueError(
            f"The checkpoint {latest} does not match this model ({error}). It was written by "
            "a run with other --depth/--width/--num_members/--dataset flags: use those flags "
            "or another --model_dir."
        ) from error
    return int(manager.checkpoint.optimizer.iterations.numpy())


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
    """Stops training with the step and learning rate when the loss stops being finite."""

    def on_train_batch_begin(self, batch, logs=None):
        # The rate this step uses; by its end the optimizer already reports the next step's.
        self._learning_rate = self.model.optimizer.learning_rate

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if math.isfinite(loss):
            return
        step = int(self.model.optimizer.iterations.numpy())
        learning_rate = float(keras.ops.convert_to_numpy(self._learning_rate))
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
