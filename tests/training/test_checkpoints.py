"""A run's checkpoints on every Keras backend: Keras weights files, written whole, the newest 3.

Proven here (under each backend's test session: `pytest -m backends`):
- a checkpoint restores the weights and the optimizer's state (its step counter included)
  bit for bit, into a compiled model or into an uncompiled one that predicts;
- a save leaves one file per checkpoint, no temporary file, and only the newest 3;
- a checkpoint of another network (another width) or of another optimizer state is refused
  with `CheckpointMismatchError`, not loaded in part (Keras itself only warns about an
  optimizer of another size);
- a damaged or non-finite checkpoint is passed over by name.
"""

from __future__ import annotations

import dataclasses
import os

import h5py
import keras
import numpy as np
import pytest
from helpers.runs import tiny_run_config

from mixmo_tf.config.run_record import CheckpointMismatchError
from mixmo_tf.models.build import build_model
from mixmo_tf.training import checkpoints

pytestmark = pytest.mark.backends


def _values(variables) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(variable) for variable in variables]


def _moved(model: keras.Model, seed: int) -> None:
    """Gives every weight and optimizer variable of `model` new values (the step a count)."""
    generator = np.random.default_rng(seed)
    for variable in [*model.weights, *model.optimizer.variables]:
        if keras.backend.is_float_dtype(variable.dtype):
            variable.assign(generator.normal(size=variable.shape).astype(variable.dtype))
    model.optimizer.iterations.assign(seed)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_run_config(tmp_path_factory.mktemp("run"))


def test_a_checkpoint_restores_weights_and_optimizer_state_exactly(config, tmp_path):
    model = build_model(config)
    _moved(model, 7)
    manager = checkpoints.checkpoint_manager(model, str(tmp_path))
    name = checkpoints.save(manager, 7)
    assert name == os.path.join(manager.directory, "ckpt-7")
    assert sorted(os.listdir(manager.directory)) == ["ckpt-7.weights.h5"]

    fresh = build_model(config)
    step, used = checkpoints.restore_latest(checkpoints.checkpoint_manager(fresh, str(tmp_path)))
    assert (step, used) == (7, name)
    for saved, restored in zip(_values(model.weights), _values(fresh.weights)):
        np.testing.assert_array_equal(saved, restored)
    for saved, restored in zip(
        _values(model.optimizer.variables), _values(fresh.optimizer.variables)
    ):
        np.testing.assert_array_equal(saved, restored)

    # Into an uncompiled model, to predict: the weights only.
    predicting = build_model(config, with_optimizer=False)
    checkpoints.load_checkpoint(predicting, name, with_optimizer=False)
    for saved, restored in zip(_values(model.weights), _values(predicting.weights)):
        np.testing.assert_array_equal(saved, restored)


def test_only_the_newest_three_are_kept(config, tmp_path):
    manager = checkpoints.checkpoint_manager(build_model(config), str(tmp_path))
    for step in (1, 2, 3, 4, 5):
        checkpoints.save(manager, step)
    assert sorted(os.listdir(manager.directory)) == [
        f"ckpt-{step}.weights.h5" for step in (3, 4, 5)
    ]
    assert manager.latest_checkpoint == os.path.join(manager.directory, "ckpt-5")


def test_a_checkpoint_of_another_network_or_optimizer_is_refused(config, tmp_path):
    name = checkpoints.save(checkpoints.checkpoint_manager(build_model(config), str(tmp_path)), 1)
    wider = build_model(dataclasses.replace(config, width=2))
    with pytest.raises(CheckpointMismatchError, match="does not match this model"):
        checkpoints.load_checkpoint(wider, name, with_optimizer=True)
    adam = build_model(config, with_optimizer=False)
    adam.compile(optimizer=keras.optimizers.Adam())
    adam.optimizer.build(adam.trainable_variables)
    with pytest.raises(CheckpointMismatchError, match="optimizer arrays for"):
        checkpoints.load_checkpoint(adam, name, with_optimizer=True)


def test_a_damaged_or_non_finite_newest_checkpoint_is_passed_over(config, tmp_path, capsys):
    manager = checkpoints.checkpoint_manager(build_model(config), str(tmp_path))
    first, second, third = (checkpoints.save(manager, step) for step in (1, 2, 3))
    with open(third + checkpoints.SUFFIX, "r+b") as stream:
        stream.truncate(100)
    with h5py.File(second + checkpoints.SUFFIX, "r+") as stored:
        names = []
        stored.visit(names.append)
        weights = next(stored[name] for name in names if getattr(stored[name], "ndim", 0) == 4)
        weights[0, 0, 0, 0] = np.inf
    capsys.readouterr()
    assert checkpoints.newest_usable(manager.directory) == first
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"The checkpoint {third} is unusable (")
    assert lines[1].startswith(f"The checkpoint {second} is unusable (")
    assert lines[1].endswith(f"holds NaN or Inf); using {first}.")
