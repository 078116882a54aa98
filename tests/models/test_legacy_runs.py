"""Runs written before `MixMoNetwork` existed still load and predict the same.

The fixture (tests/fixtures/legacy_wrn10_1_digits, see its README) was written by the code
of commit e330368, whose network was a plain functional model: its `.keras` file and its
tf.train checkpoint must both give back that code's predictions, with the network's parts
held by the loaded `MixMoNetwork`; the run resumes from that checkpoint, and the checkpoints
it then writes (Keras weights files) replace it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import keras
import numpy as np
import pytest
from helpers.paths import FIXTURES

# keras.saving.load_model below: importing mixmo_tf.models.saving registers the classes.
import mixmo_tf.models.saving  # noqa: F401
from mixmo_tf.config import run_record
from mixmo_tf.models import MixMoNetwork
from mixmo_tf.models.build import build_model
from mixmo_tf.training import checkpoints

FIXTURE = os.path.join(FIXTURES, "legacy_wrn10_1_digits")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(os.path.join(FIXTURE, "reference.npz")))


def _assert_predicts_reference(model, reference) -> None:
    outputs = model(reference["images"], training=False)
    np.testing.assert_allclose(outputs["ensemble"], reference["ensemble"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["members"], reference["members"], rtol=1e-5, atol=1e-6)


def test_a_legacy_keras_file_loads_with_its_parts_and_predicts_the_same(reference, tmp_path):
    model = keras.saving.load_model(os.path.join(FIXTURE, "model.keras"))
    assert isinstance(model.network, MixMoNetwork)
    assert [stem.name for stem in model.network.stems] == ["stem_0", "stem_1"]
    assert model.network.core.name == "wrn10_1_core"
    assert [head.name for head in model.network.heads] == ["head_0", "head_1"]
    _assert_predicts_reference(model, reference)
    assert int(model.optimizer.iterations.numpy()) == 2
    # Saved again by this code, it loads again.
    path = str(tmp_path / "again.keras")
    model.save(path)
    _assert_predicts_reference(keras.saving.load_model(path), reference)


def test_a_legacy_checkpoint_restores_into_todays_model(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    config = run_record.recorded_config(str(run))
    model = build_model(config)
    assert not np.allclose(model(reference["images"])["ensemble"], reference["ensemble"])
    step, _ = checkpoints.restore_latest(checkpoints.checkpoint_manager(model, str(run)))
    assert step == 2
    _assert_predicts_reference(model, reference)


@pytest.mark.slow
def test_a_legacy_run_resumes_and_its_new_checkpoints_replace_the_tensorflow_ones(tmp_path, capsys):
    from mixmo_tf.training.run import train

    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    config = dataclasses.replace(
        run_record.recorded_config(str(run)), epochs=3, checkpoint_every_steps=1
    )
    train(config)
    assert f"Resuming from step 2 of 6 ({run}/checkpoints/ckpt-2)." in capsys.readouterr().out
    assert sorted(os.listdir(run / "checkpoints")) == [
        f"ckpt-{step}.weights.h5" for step in (4, 5, 6)
    ]
    assert checkpoints.restore_run(config).step == 6
