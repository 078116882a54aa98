"""The TensorFlow checkpoints that runs of earlier versions wrote, read on TensorFlow.

Such a run's `checkpoints/` folder holds `ckpt-<step>.index` and `ckpt-<step>.data-*` files,
listed by the text file `checkpoint` (TensorFlow's CheckpointState). Listing them and removing
them needs no TensorFlow (`listed`, `remove`, `leftovers`); reading them does (`unusable_reason`,
`restore`, `step`), and only a TensorFlow process can: Keras variables of other backends are
not `tf.Variable`s. `mixmo_tf.training.checkpoints` reads them through this module, and
writes its own format from then on.
"""

from __future__ import annotations

import glob
import os
import re

import keras

from mixmo_tf.config.errors import UserError
from mixmo_tf.config.run_folder import write_text_atomically

NAME = "ckpt"
INDEX_FILE = "checkpoint"
# The optimizer's step counter in a checkpoint: a mixed_float16 LossScaleOptimizer counts in
# its inner optimizer (its own counter stays 0), every other optimizer in itself.
_STEP_KEYS = (
    "optimizer/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE",
    "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE",
)
_LISTED = re.compile(r'^all_model_checkpoint_paths:\s*"(.*)"\s*$')
# What TensorFlow writes while saving ckpt-<step>: a folder merged into place at the end.
_UNFINISHED_FOLDER = re.compile(rf"{NAME}-(\d+)_temp$")
_CHECKPOINT_FILE = re.compile(rf"{NAME}-(\d+)\.(index|data-\d+-of-\d+)$")
_CHECKPOINT = re.compile(rf"{NAME}-(\d+)$")  # a checkpoint's path prefix, as listed


class NeedsTensorFlowError(UserError):
    """A TensorFlow checkpoint met by a process of another Keras backend."""


def listed(directory: str) -> list[str]:
    """The path prefixes of the checkpoints `directory`'s index file lists, oldest first."""
    try:
        with open(os.path.join(directory, INDEX_FILE), encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = (_LISTED.match(line.strip()) for line in lines)
    return [os.path.join(directory, match.group(1)) for match in found if match]


def step_of(checkpoint: str) -> int | None:
    """The step in a listed checkpoint's name (`ckpt-<step>`), or None for another name."""
    found = _CHECKPOINT.match(os.path.basename(checkpoint))
    return int(found.group(1)) if found else None


def remove(checkpoint: str) -> None:
    """Deletes a listed checkpoint's files and its line of the index (the index itself once
    it lists none)."""
    for path in glob.glob(glob.escape(checkpoint) + ".*"):
        if _CHECKPOINT_FILE.match(os.path.basename(path)):
            os.remove(path)
    directory = os.path.dirname(checkpoint)
    remaining = [path for path in listed(directory) if path != checkpoint]
    index = os.path.join(directory, INDEX_FILE)
    if not remaining:
        os.remove(index)
        return
    names = [os.path.relpath(path, directory) for path in remaining]
    write_text_atomically(
        index,
        f'model_checkpoint_path: "{names[-1]}"\n'
        + "".join(f'all_model_checkpoint_paths: "{name}"\n' for name in names),
    )


def leftovers(directory: str) -> list[str]:
    """What an interrupted TensorFlow save left in `directory`: its `ckpt-<step>_temp`
    folders, and the files of checkpoints newer than the newest one the index lists
    (written, but never recorded)."""
    steps = [step_of(path) for path in listed(directory)]
    newest = max((step for step in steps if step is not None), default=None)
    found = []
    for name in os.listdir(directory):
        checkpoint_file = _CHECKPOINT_FILE.match(name)
        if _UNFINISHED_FOLDER.match(name) or (
            newest is not None and checkpoint_file and int(checkpoint_file.group(1)) > newest
        ):
            found.append(os.path.join(directory, name))
    return found


def _tensorflow():
    """TensorFlow, in a process whose Keras computes with it.

    Raises:
        NeedsTensorFlowError: Keras runs on another backend.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise NeedsTensorFlowError(
            "This run's checkpoints are TensorFlow checkpoints of an earlier mixmo_tf version "
            f"({NAME}-<step>.index), which Keras on {backend} cannot read: run it with "
            "KERAS_BACKEND=tensorflow (once it has trained a step there, its checkpoints are "
            "read on every backend)."
        )
    import tensorflow as tf

    return tf


def unusable_reason(checkpoint: str) -> str | None:
    """Why `checkpoint` cannot be used (a file missing, truncated or unreadable, a NaN or Inf
    value), or None if every tensor reads back finite."""
    import numpy as np

    tf = _tensorflow()
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


def restore(model: keras.Model, checkpoint: str, with_optimizer: bool) -> None:
    """Loads `checkpoint` into `model` (and its optimizer's state if `with_optimizer`).

    Raises:
        ValueError: the checkpoint does not match the model (AssertionError as ValueError).
    """
    tf = _tensorflow()
    if with_optimizer:
        saved = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    else:
        saved = tf.train.Checkpoint(model=model)
    status = saved.restore(checkpoint)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise ValueError(str(error)) from error
    if not with_optimizer:
        status.expect_partial()


def step(checkpoint: str) -> int:
    """The optimizer step `checkpoint` was taken at, read without restoring the optimizer."""
    reader = _tensorflow().train.load_checkpoint(checkpoint)
    key = next(key for key in _STEP_KEYS if reader.has_tensor(key))
    return int(reader.get_tensor(key))
