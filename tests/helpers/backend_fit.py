"""Builds, trains, saves and reloads a tiny MixMo model on this process's Keras backend.

Run once per backend by a test, with tests/ and the repository on the path:

    KERAS_BACKEND=torch python -m helpers.backend_fit OUT [KERAS_FILE ...]

Off TensorFlow, TensorFlow is made unimportable first (`helpers.no_tensorflow`), as on a
machine without it. The run builds a WRN-10-1 M=2 `MixMoModel` with the public builder
(`build_model`, compiled with the run's `PyTorchSGD`), fits it on NumPy arrays for 2 steps,
saves `OUT/<backend>.keras` and loads it back with `mixmo_tf.load_model`, then loads each
given `KERAS_FILE` (written on other backends). It writes `OUT/<backend>.npz`: the members'
predicted probabilities on `probe_images()` of the trained model, of its reload and of each
loaded file (`file/<path>`), the training logs, and whether TensorFlow was imported.
"""

from __future__ import annotations

import os
import sys

import numpy as np

BATCH = 8
STEPS = 2


def probe_images() -> np.ndarray:
    """The images every backend predicts on."""
    return np.random.default_rng(7).standard_normal((4, 32, 32, 3)).astype(np.float32)


def _training_data(members: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    slots = (BATCH * STEPS, members)
    return {
        "images": rng.standard_normal((*slots, 32, 32, 3)).astype(np.float32),
        "labels": rng.integers(0, 10, slots).astype(np.int32),
    }


def _members(model) -> np.ndarray:
    from keras import ops

    return ops.convert_to_numpy(model.predict_on_batch(probe_images())["members"])


def run(out: str, *keras_files: str) -> None:
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        from helpers.no_tensorflow import block_tensorflow

        block_tensorflow(backend)
    from mixmo_tf.config import Config
    from mixmo_tf.models import build_model, load_model

    config = Config(
        dataset="digits",
        depth=10,
        width=1,
        num_members=2,
        mixing="cutmix",
        batch_size=BATCH,
        batch_repetitions=1,
        epochs=1,
        steps_per_epoch=STEPS,
        precision="float32",
        model_dir=out,
    )
    model = build_model(config)
    history = model.fit(
        _training_data(config.num_members), batch_size=BATCH, epochs=1, shuffle=False, verbose=0
    )
    path = os.path.join(out, f"{backend}.keras")
    model.save(path)
    results = {
        "trained": _members(model),
        "reloaded": _members(load_model(path)),
        "iterations": np.asarray(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        **{f"log/{name}": np.asarray(values) for name, values in history.history.items()},
    }
    for keras_file in keras_files:
        results[f"file/{keras_file}"] = _members(load_model(keras_file))
    results["imported_tensorflow"] = np.asarray("tensorflow" in sys.modules)
    np.savez(os.path.join(out, f"{backend}.npz"), **results)


if __name__ == "__main__":
    run(*sys.argv[1:])
