"""mixmo_tf.load_model: the documented way to read a run's model.keras, and its errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers.models import perturb_batchnorm, random_images, tiny_mixmo_model

import mixmo_tf

pytestmark = pytest.mark.backends


def test_load_model_gives_back_the_same_predictions(tmp_path):
    model = tiny_mixmo_model()
    perturb_batchnorm(model, seed=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = mixmo_tf.load_model(path)
    assert isinstance(loaded, mixmo_tf.MixMoModel) and loaded.num_members == 2
    images = random_images(4, seed=1)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0)["ensemble"],
        model.predict(images, verbose=0)["ensemble"],
        atol=1e-6,
    )


def test_load_model_failures_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="training writes <model_dir>/model.keras"):
        mixmo_tf.load_model(str(tmp_path / "missing.keras"))
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"Load .keras files .* with mixmo_tf.load_model\(path\)"):
        mixmo_tf.load_model(str(corrupt))
    other = tmp_path / "other.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(other)
    with pytest.raises(ValueError, match="holds a Sequential, not a MixMoModel"):
        mixmo_tf.load_model(str(other))
