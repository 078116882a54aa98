"""A run's checkpoints: the manager that writes them, resuming from them, restoring a run.

A checkpoint holds the model's weights and the optimizer's state (its step counter
included), in `<model_dir>/checkpoints`. Training resumes from the newest usable one
(`restore_latest`); evaluation, export and prediction rebuild a finished or running run's
model from its recorded settings and load the newest usable one's weights (`restore_run`).
A checkpoint whose files are missing, truncated or unreadable, or that holds NaN or Inf,
is passed over with a line naming it and why (`newest_usable`). A save that runs out of
room (full disk, quota, file size limit) removes what it half wrote and stops the run with
the room it needed (`save`); the previous checkpoints stay as they were.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import sys

import keras
import numpy as np
import tensorflow as tf

from mixmo_tf.config.errors import MissingFileError, UserError
from mixmo_tf.config.run_folder import (
    RunFolder,
    RunFolderError,
    megabytes,
    out_of_space,
    space_fix,
    space_left,
)
from mixmo_tf.config.run_record import CheckpointMismatchError, with_recorded_spec
from mixmo_tf.config.settings import Config
from mixmo_tf.models.build import build_model
from mixmo_tf.models.mixmo_model import MixMoModel
from mixmo_tf.tuning.device_rules import resolve_device_defaults

_KEEP = 3
# The optimizer's step counter in a checkpoint: a mixed_float16 LossScaleOptimizer counts in
# its inner optimizer (its own counter stays 0), every other optimizer in itself.
_STEP_KEYS = (
    "optimizer/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE",
    "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE",
)


def checkpoint_manager(model: keras.Model, model_dir: str) -> tf.train.CheckpointManager:
    """Manager of `<model_dir>/checkpoints`, holding the weights and the optimizer state.

    TensorFlow writes each checkpoint under a temporary name and updates the `checkpoint`
    index file atomically afterwards, so an interrupted save leaves the previous one usable.
    """
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    return tf.train.CheckpointManager(
        checkpoint, RunFolder(model_dir).checkpoints, max_to_keep=_KEEP
    )


_NAME = "ckpt"  # the manager's checkpoint_name: ckpt-<step>.index, ckpt-<step>.data-*
# What TensorFlow writes while saving ckpt-<step>: a folder merged into place at the end.
_UNFINISHED_FOLDER = re.compile(rf"{_NAME}-(\d+)_temp$")
_CHECKPOINT_FILE = re.compile(rf"{_NAME}-(\d+)\.(index|data-\d+-of-\d+)$")
_CHECKPOINT = re.compile(rf"{_NAME}-(\d+)$")  # a checkpoint's path prefix, as indexed


class CheckpointSpaceError(RunFolderError):
    """A checkpoint did not fit (full disk, quota, file size limit); the older ones are kept."""


def checkpoint_bytes(manager: tf.train.CheckpointManager) -> int:
    """About how many bytes a checkpoint of `manager` takes: its model's and optimizer's
    variables (the index and bookkeeping add a few KiB)."""
    checkpoint = manager.checkpoint
    variables = [*checkpoint.model.weights, *checkpoint.optimizer.variables]
    return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)


def remove_unfinished(directory: str) -> None:
    """Deletes what an interrupted save left in `directory`, so it is never read and its
    room comes back: TensorFlow's `ckpt-<step>_temp` folders, and the files of checkpoints
    newer than the newest one the index lists (written, but never recorded)."""
    if not os.path.isdir(directory):
        return  # gs:// and other remote folders: TensorFlow's own clean-up only
    state = tf.train.get_checkpoint_state(directory)
    indexed = [
        _CHECKPOINT.match(os.path.basename(path))
        for path in (state.all_model_checkpoint_paths if state else [])
    ]
    newest = max((int(found.group(1)) for found in indexed if found), default=None)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        checkpoint_file = _CHECKPOINT_FILE.match(name)
        if _UNFINISHED_FOLDER.match(name):
            shutil.rmtree(path, ignore_errors=True)
        elif newest is not None and checkpoint_file and int(checkpoint_file.group(1)) > newest:
            os.remove(path)


def save(manager: tf.train.CheckpointManager, step: int) -> str:
    """Saves the checkpoint of `step`; returns its path.

    Raises:
        CheckpointSpaceError: it did not fit; what it half wrote is removed, and the message
            names the folder, the room it needs and has, and the checkpoint a rerun resumes.
    """
    try:
        return manager.save(checkpoint_number=step)
    except tf.errors.OpError as error:
        full = out_of_space(error)
        if full is None:
            raise
        number = full.errno
        directory = manager.directory
        remove_unfinished(directory)
        previous = tf.train.latest_checkpoint(directory)
        resumes = f"it resumes from {previous}" if previous else "it starts from step 0"
        raise CheckpointSpaceError(
            f"The checkpoint of step {step} does not fit in {directory} ({os.strerror(number)}"
            f"): it needs about {megabytes(checkpoint_bytes(manager))} and "
            f"{space_left(directory, number)}. {space_fix(number)}, then rerun the same "
            f"command: {resumes}."
        ) from error


def _mismatch(checkpoint: str, error: Exception) -> CheckpointMismatchError:
    return CheckpointMismatchError(
        f"The checkpoint {checkpoint} does not match this model ({error}). It was written by "
        "a run with another network (--backbone and its --depth/--width), --num_members or "
        "--dataset: use that run's flags or another --model_dir."
    )


class CheckpointUnusableError(UserError, ValueError):
    """Every checkpoint of a run is unreadable or holds non-finite values."""


def unusable_reason(checkpoint: str) -> str | None:
    """Why `checkpoint` cannot be used (a file missing, truncated or unreadable, a NaN or Inf
    value), or None if every tensor reads back finite."""
    try:
        reader = tf.train.load_checkpoint(checkpoint)
        for name, dtype in reader.get_variable_to_dtype_map().items():
            if not dtype.is_floating:
                continue
            value = reader.get_tensor(name)
            if not np.isfinite(value).all():
                return f"{name} holds NaN or Inf"
    except (tf.errors.OpError, ValueError, OSError, IndexError) as error:
        # IndexError: TensorFlow's reader on a truncated data file ("Read less bytes than
        # requested").
        message = getattr(error, "message", None) or str(error)
        return message.strip().splitlines()[0]
    return None


def newest_usable(directory: str) -> str | None:
    """The newest checkpoint in `directory` that can be used, saying on stderr which newer
    ones were passed over and why (stdout carries only results); None if the folder holds none.

    Raises:
        CheckpointUnusableError: it holds checkpoints, and none is usable.
    """
    state = tf.train.get_checkpoint_state(directory)
    candidates = list(reversed(state.all_model_checkpoint_paths)) if state else []
    passed = []
    for checkpoint in candidates:
        reason = unusable_reason(checkpoint)
        if reason is None:
            for skipped, why in passed:
                print(
                    f"The checkpoint {skipped} is unusable ({why}); using {checkpoint}.",
                    file=sys.stderr,
                )
            return checkpoint
        passed.append((checkpoint, reason))
    if passed:
        described = "; ".join(f"{path}: {why}" for path, why in passed)
        raise CheckpointUnusableError(
            f"No usable checkpoint in {directory} ({described}). Restore the folder from a "
            "copy, or remove the checkpoints to train from step 0."
        )
    return None


def restore_latest(manager: tf.train.CheckpointManager) -> tuple[int, str | None]:
    """Restores the newest usable checkpoint, if any (`newest_usable`).

    Returns:
        The optimizer step it was taken at and its path; (0, None) without checkpoints.

    Raises:
        CheckpointMismatchError: the checkpoint is of another architecture or dataset.
        CheckpointUnusableError: the run has checkpoints and none is usable.
    """
    latest = newest_usable(manager.directory)
    if latest is None:
        return 0, None
    try:
        manager.checkpoint.restore(latest).assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        raise _mismatch(latest, error) from error
    return int(manager.checkpoint.optimizer.iterations.numpy()), latest


def _checkpoint_step(checkpoint: str) -> int:
    """The optimizer step `checkpoint` was taken at, read without restoring the optimizer."""
    reader = tf.train.load_checkpoint(checkpoint)
    key = next(key for key in _STEP_KEYS if reader.has_tensor(key))
    return int(reader.get_tensor(key))


@dataclasses.dataclass(frozen=True)
class RestoredRun:
    """A run's model at its newest checkpoint.

    Attributes:
        model: the model (uncompiled: it predicts) with that checkpoint's weights.
        config: the run's Config, with the precision the model computes in.
        step: the optimizer step the checkpoint was taken at.
        checkpoint: the checkpoint's path prefix.
    """

    model: MixMoModel
    config: Config
    step: int
    checkpoint: str


def restore_run(config: Config, precision: str | None = None) -> RestoredRun:
    """The model of the run in `config.model_dir` with its newest checkpoint's weights.

    Args:
        config: the run's Config (its recorded one, with any flags that may differ); one
            of a tfds or folder source given without its spec takes the run's recorded one.
        precision: the precision to compute in; None: the run's own, resolved for this
            machine if "auto". Serving passes "float32" (variables are float32 in every
            precision, so any run loads in any precision).

    Raises:
        MissingFileError: the folder holds no checkpoint (a FileNotFoundError).
        CheckpointMismatchError: the checkpoint is of another model than the recorded one.
        CheckpointUnusableError: the run has checkpoints and none is usable.
    """
    config = with_recorded_spec(config)
    if precision is not None:
        config = dataclasses.replace(config, precision=precision)
    config = resolve_device_defaults(config)
    directory = RunFolder(config.model_dir).checkpoints
    latest = newest_usable(directory)
    if latest is None:
        raise MissingFileError(
            f"No checkpoint in {directory}: train the run first, or point --model_dir at a run "
            "that has one."
        )
    # The weights only, into an uncompiled model: the optimizer's state is not needed to
    # predict, and a LossScaleOptimizer's (mixed_float16) fits no other precision's optimizer.
    model = build_model(config, with_optimizer=False)
    status = tf.train.Checkpoint(model=model).restore(latest)
    try:
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        raise _mismatch(latest, error) from error
    status.expect_partial()
    return RestoredRun(model, config, _checkpoint_step(latest), latest)
