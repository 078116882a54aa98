"""A run's checkpoints: the manager that writes them, resuming from them, restoring a run.

A checkpoint holds the model's weights and the optimizer's state (its step counter
included), in `<model_dir>/checkpoints`: the checkpoint `ckpt-<step>` is the Keras weights
file `ckpt-<step>.weights.h5` (what `model.save_weights` writes, optimizer included), which
Keras reads on every backend: a run trained on JAX or PyTorch resumes, evaluates and exports
on TensorFlow, and the other way round. Each is written under a temporary name and renamed
into place, so an interrupted save leaves the previous ones usable; the newest 3 are kept.
Runs of earlier versions hold TensorFlow checkpoints (`mixmo_tf.training.tensorflow_checkpoints`),
still read on TensorFlow; the checkpoints their resumed run writes replace them.

Training resumes from the newest usable checkpoint (`restore_latest`); evaluation, export
and prediction rebuild a finished or running run's model from its recorded settings and load
the newest usable one's weights (`restore_run`). A checkpoint whose file is missing,
truncated or unreadable, or that holds NaN or Inf, is passed over with a line naming it and
why (`newest_usable`). A save that runs out of room (full disk, quota, file size limit)
removes what it half wrote and stops the run with the room it needed (`save`); the previous
checkpoints stay as they were.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import re
import resource
import shutil
import sys

import h5py
import keras
import numpy as np

from mixmo_tf.config.errors import MissingFileError, UserError
from mixmo_tf.config.run_folder import (
    PARTIAL_PREFIX,
    RunFolder,
    RunFolderError,
    is_local_path,
    megabytes,
    out_of_space,
    space_fix,
    space_left,
    write_atomically,
)
from mixmo_tf.config.run_record import CheckpointMismatchError, with_recorded_spec
from mixmo_tf.config.settings import Config
from mixmo_tf.models.build import build_model
from mixmo_tf.models.mixmo_model import MixMoModel
from mixmo_tf.training import tensorflow_checkpoints
from mixmo_tf.tuning.device_rules import resolve_device_defaults

_KEEP = 3
_NAME = tensorflow_checkpoints.NAME  # ckpt-<step>, in both formats
SUFFIX = ".weights.h5"  # Keras' weights file: `model.save_weights` insists on the ending
_FILE = re.compile(rf"{_NAME}-(\d+){re.escape(SUFFIX)}$")
# The group of the optimizer's state in a Keras weights file; the model's are the others.
_OPTIMIZER_GROUP = "optimizer"
# HDF5's headers of one array and its group in a weights file (measured: 1.5 KiB).
_BYTES_PER_ARRAY = 1600


class CheckpointManager:
    """The checkpoints of `model` (weights and optimizer state) in `directory`.

    Attributes:
        model: the compiled model they save and restore.
        directory: the folder they are written in.
    """

    def __init__(self, model: keras.Model, directory: str):
        self.model = model
        self.directory = directory

    @property
    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint saved in the folder (usable or not), or None."""
        saved = all_checkpoints(self.directory)
        return saved[0] if saved else None


def checkpoint_manager(model: keras.Model, model_dir: str) -> CheckpointManager:
    """Manager of `<model_dir>/checkpoints`, holding the weights and the optimizer state."""
    return CheckpointManager(model, RunFolder(model_dir).checkpoints)


def _step(checkpoint: str) -> int:
    """The step in a checkpoint's name, `ckpt-<step>`."""
    return tensorflow_checkpoints.step_of(checkpoint)


def _is_keras_file(checkpoint: str) -> bool:
    """Whether `checkpoint` is of this version's format (else a TensorFlow checkpoint)."""
    return os.path.exists(checkpoint + SUFFIX)


def _is_tensorflow_checkpoint(checkpoint: str) -> bool:
    """Whether `checkpoint` is a TensorFlow checkpoint of an earlier version."""
    if _is_keras_file(checkpoint):
        return False
    return checkpoint in tensorflow_checkpoints.listed(os.path.dirname(checkpoint))


def all_checkpoints(directory: str) -> list[str]:
    """The checkpoints in `directory` (their names, `<directory>/ckpt-<step>`), of both
    formats, newest first."""
    if not os.path.isdir(directory):
        return []
    found = {
        os.path.join(directory, f"{_NAME}-{match.group(1)}")
        for match in map(_FILE.match, os.listdir(directory))
        if match
    }
    listed = tensorflow_checkpoints.listed(directory)
    found.update(path for path in listed if _step(path) is not None)
    return sorted(found, key=_step, reverse=True)


class CheckpointSpaceError(RunFolderError):
    """A checkpoint did not fit (full disk, quota, file size limit); the older ones are kept."""


def checkpoint_bytes(manager: CheckpointManager) -> int:
    """About how many bytes a checkpoint of `manager` takes: its model's and optimizer's
    variables, and the file's headers of each."""
    model = manager.model
    variables = [*model.weights, *model.optimizer.variables]
    values = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)
    return values + _BYTES_PER_ARRAY * len(variables)


def remove_unfinished(directory: str) -> None:
    """Deletes what an interrupted save left in `directory`, so it is never read and its
    room comes back: a checkpoint file still under its temporary name, and what an
    interrupted TensorFlow save of an earlier version left
    (`tensorflow_checkpoints.leftovers`)."""
    if not os.path.isdir(directory):
        return  # gs:// and other remote folders
    for name in os.listdir(directory):
        if name.startswith(PARTIAL_PREFIX) and name.endswith(SUFFIX):
            os.remove(os.path.join(directory, name))
    for path in tensorflow_checkpoints.leftovers(directory):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def _remove_oldest(directory: str) -> None:
    """Deletes the checkpoints of `directory` but the newest `_KEEP`."""
    for checkpoint in all_checkpoints(directory)[_KEEP:]:
        if _is_tensorflow_checkpoint(checkpoint):
            tensorflow_checkpoints.remove(checkpoint)
        else:
            os.remove(checkpoint + SUFFIX)


def _space_error(manager: CheckpointManager, step: int, number: int) -> CheckpointSpaceError:
    """The error of the checkpoint of `step` that does not fit, for the errno `number`."""
    directory = manager.directory
    previous = manager.latest_checkpoint
    resumes = f"it resumes from {previous}" if previous else "it starts from step 0"
    return CheckpointSpaceError(
        f"The checkpoint of step {step} does not fit in {directory} ({os.strerror(number)}"
        f"): it needs about {megabytes(checkpoint_bytes(manager))} and "
        f"{space_left(directory, number)}. {space_fix(number)}, then rerun the same "
        f"command: {resumes}."
    )


def _missing_room(directory: str, needed: int) -> int | None:
    """The errno a write of `needed` bytes into `directory` would fail with for lack of room
    (EFBIG over the file size limit, ENOSPC over the free space), or None if it fits.

    Checked before writing: HDF5, which writes the file, reports a full disk by printing
    errors of its own and keeps the half-written file open.
    """
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and needed > limit:
        return errno.EFBIG
    if is_local_path(directory) and shutil.disk_usage(directory).free < needed:
        return errno.ENOSPC
    return None


def save(manager: CheckpointManager, step: int) -> str:
    """Saves the checkpoint of `step`, keeping the newest 3; returns its name.

    Raises:
        CheckpointSpaceError: it did not fit; what it half wrote is removed, and the message
            names the folder, the room it needs and has, and the checkpoint a rerun resumes.
    """
    directory = manager.directory
    os.makedirs(directory, exist_ok=True)
    missing = _missing_room(directory, checkpoint_bytes(manager))
    if missing is not None:
        raise _space_error(manager, step, missing)
    checkpoint = os.path.join(directory, f"{_NAME}-{step}")
    try:
        write_atomically(checkpoint + SUFFIX, manager.model.save_weights, SUFFIX)
    except (OSError, RuntimeError) as error:  # RuntimeError: HDF5's, of a failed write
        full = out_of_space(error)
        if full is None:
            raise
        remove_unfinished(directory)
        raise _space_error(manager, step, full.errno) from error
    _remove_oldest(directory)
    return checkpoint


def _mismatch(checkpoint: str, error: Exception | str) -> CheckpointMismatchError:
    return CheckpointMismatchError(
        f"The checkpoint {checkpoint} does not match this model ({error}). It was written by "
        "a run with another network (--backbone and its --depth/--width), --num_members or "
        "--dataset: use that run's flags or another --model_dir."
    )


class CheckpointUnusableError(UserError, ValueError):
    """Every checkpoint of a run is unreadable or holds non-finite values."""


def _arrays(stored: h5py.File) -> dict[str, h5py.Dataset]:
    """The arrays of an open Keras weights file, by their path in it."""
    found = {}

    def add(name: str, item) -> None:
        if isinstance(item, h5py.Dataset):
            found[name] = item

    stored.visititems(add)
    return found


def unusable_reason(checkpoint: str) -> str | None:
    """Why `checkpoint` cannot be used (its file missing, truncated or unreadable, a NaN or
    Inf value), or None if every array reads back finite."""
    if _is_tensorflow_checkpoint(checkpoint):
        return tensorflow_checkpoints.unusable_reason(checkpoint)
    try:
        with h5py.File(checkpoint + SUFFIX, "r") as stored:
            for name, array in _arrays(stored).items():
                if array.dtype.kind == "f" and not np.isfinite(array[()]).all():
                    return f"{name} holds NaN or Inf"
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        return str(error).strip().splitlines()[0]
    return None


def newest_usable(directory: str) -> str | None:
    """The newest checkpoint in `directory` that can be used, saying on stderr which newer
    ones were passed over and why (stdout carries only results); None if the folder holds none.

    Raises:
        CheckpointUnusableError: it holds checkpoints, and none is usable.
        tensorflow_checkpoints.NeedsTensorFlowError: the newest usable may be a TensorFlow
            checkpoint, and Keras runs on another backend.
    """
    passed = []
    for checkpoint in all_checkpoints(directory):
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


def _check_counts(model: keras.Model, checkpoint: str, with_optimizer: bool) -> None:
    """Raises CheckpointMismatchError unless the file holds as many arrays as `model` has
    variables (and its optimizer, if `with_optimizer`): Keras skips an optimizer of another
    size with a warning only, and leaves a file's extra layers unread."""
    with h5py.File(checkpoint + SUFFIX, "r") as stored:
        names = list(_arrays(stored))
    optimizer = sum(name.split("/", 1)[0] == _OPTIMIZER_GROUP for name in names)
    counts = {"model": (len(names) - optimizer, len(model.weights))}
    if with_optimizer:
        counts["optimizer"] = (optimizer, len(model.optimizer.variables))
    for part, (saved, expected) in counts.items():
        if saved != expected:
            raise _mismatch(checkpoint, f"{saved} {part} arrays for {expected} variables")


def load_checkpoint(model: keras.Model, checkpoint: str, with_optimizer: bool) -> None:
    """Loads `checkpoint`'s weights into `model`, and its optimizer's state if
    `with_optimizer` (else the model may be uncompiled).

    Raises:
        CheckpointMismatchError: the checkpoint is of another architecture or dataset.
    """
    try:
        if _is_tensorflow_checkpoint(checkpoint):
            tensorflow_checkpoints.restore(model, checkpoint, with_optimizer)
        else:
            _check_counts(model, checkpoint, with_optimizer)
            model.load_weights(checkpoint + SUFFIX)
    except ValueError as error:
        raise _mismatch(checkpoint, str(error).strip().splitlines()[0]) from error


def restore_latest(manager: CheckpointManager) -> tuple[int, str | None]:
    """Restores the newest usable checkpoint, if any (`newest_usable`).

    Returns:
        The optimizer step it was taken at and its name; (0, None) without checkpoints.

    Raises:
        CheckpointMismatchError: the checkpoint is of another architecture or dataset.
        CheckpointUnusableError: the run has checkpoints and none is usable.
    """
    latest = newest_usable(manager.directory)
    if latest is None:
        return 0, None
    load_checkpoint(manager.model, latest, with_optimizer=True)
    return int(keras.ops.convert_to_numpy(manager.model.optimizer.iterations)), latest


def _checkpoint_step(checkpoint: str) -> int:
    """The optimizer step `checkpoint` was taken at, read without restoring the optimizer."""
    if _is_tensorflow_checkpoint(checkpoint):
        return tensorflow_checkpoints.step(checkpoint)
    return _step(checkpoint)  # saved at the step it is named after


@dataclasses.dataclass(frozen=True)
class RestoredRun:
    """A run's model at its newest checkpoint.

    Attributes:
        model: the model (uncompiled: it predicts) with that checkpoint's weights.
        config: the run's Config, with the precision the model computes in.
        step: the optimizer step the checkpoint was taken at.
        checkpoint: the checkpoint's name, `<model_dir>/checkpoints/ckpt-<step>`.
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
    load_checkpoint(model, latest, with_optimizer=False)
    return RestoredRun(model, config, _checkpoint_step(latest), latest)
