"""--precision: the per-device default, the Keras policy scope, and short runs in each mode.

- "auto" resolves from the device: AMX-BF16 CPUs read from /proc/cpuinfo-style files.
- Building a model in one precision leaves the process's global policy untouched.
- Every precision trains a smoke run end to end on CPU: layers compute in the chosen dtype,
  variables and outputs stay float32, the saved model reloads with its policy, and
  run_config.json records the resolved precision. (Under XLA: test_training.py's XLA test,
  in mixed_float16.)
- mixed_float16's loss scaling: one step's update matches the float32 step's update.
- A run records the precision "auto" chose and is not resumed in another precision
  (how "auto" chooses: test_tuning.py).
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.models import random_train_batch
from helpers.runs import smoke_config

# keras.saving.load_model below: importing mixmo_tf.models.saving registers the classes.
import mixmo_tf.models.saving  # noqa: F401
from mixmo_tf.config import Config, run_folder, run_record
from mixmo_tf.models.build import build_model
from mixmo_tf.models.precision import dtype_policy
from mixmo_tf.training.checkpoints import restore_run
from mixmo_tf.training.run import train
from mixmo_tf.tuning import device_rules as precision
from mixmo_tf.tuning.precision_choice import choose_training_precision

_COMPUTE_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def _smoke(model_dir, **overrides) -> Config:
    return smoke_config(model_dir, **{"epochs": 1, **overrides})


def _write_cpu_info(path, flags: str) -> str:
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n")
    return str(path)


def test_amx_bf16_is_read_from_the_cpu_flags(tmp_path):
    with_amx = _write_cpu_info(tmp_path / "amx", "fpu avx512f amx_bf16 amx_tile")
    without = _write_cpu_info(tmp_path / "plain", "fpu avx2 avx512f avx512_bf16")
    assert precision.cpu_has_amx_bf16(with_amx)
    assert not precision.cpu_has_amx_bf16(without)
    assert not precision.cpu_has_amx_bf16(str(tmp_path / "missing"))


def test_auto_resolves_to_this_machines_default_and_names_pass_through():
    assert precision.resolve_precision("auto") == precision.default_precision()
    for name in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert precision.resolve_precision(name) == name
    with pytest.raises(ValueError, match="--precision must be one of"):
        precision.resolve_precision("bfloat16")


@pytest.mark.parametrize(
    "gpu_capability, amx, expected",
    [
        (None, True, "mixed_bfloat16"),  # no GPU: the CPU decides
        (None, False, "float32"),
        ((8, 0), True, "mixed_float16"),  # tensor cores: the GPU decides
        ((7, 0), False, "mixed_float16"),
        ((6, 1), True, "float32"),  # a GPU without tensor cores
        ("unknown", False, "float32"),  # a GPU whose capability TF does not report
    ],
)
def test_the_default_precision_follows_the_training_device(
    monkeypatch, gpu_capability, amx, expected
):
    """Holds on any machine: the devices TensorFlow sees are replaced by the case's."""
    gpus = [] if gpu_capability is None else ["GPU:0"]
    details = {} if gpu_capability == "unknown" else {"compute_capability": gpu_capability}
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: gpus)
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda gpu: details)
    monkeypatch.setattr(precision, "cpu_has_amx_bf16", lambda: amx)
    assert precision.default_precision() == expected


def test_a_bad_precision_is_rejected_by_the_config():
    with pytest.raises(ValueError, match="--precision must be one of .* precision='fp8'"):
        Config(precision="fp8")


def test_the_policy_scope_restores_the_global_policy_even_on_error():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError):
        with dtype_policy("mixed_bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            assert keras.layers.Dense(2).compute_dtype == "bfloat16"
            raise RuntimeError
    assert keras.config.dtype_policy().name == before


def test_auto_builds_with_the_global_policy_the_machine_choice_is_made_above_the_models():
    with dtype_policy("auto"):
        assert keras.config.dtype_policy().name == keras.config.dtype_policy().name
        assert keras.layers.Dense(2).compute_dtype == "float32"
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        with dtype_policy("auto"):
            assert keras.layers.Dense(2).compute_dtype == "bfloat16"
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_each_precision_trains_saves_and_reloads(tmp_path, name):
    config = _smoke(tmp_path, precision=name)
    model = train(config)

    assert int(model.optimizer.iterations.numpy()) == config.total_steps
    assert np.isfinite(model.history.history["loss"]).all()
    stem = model.network.get_layer("stem_0")
    assert stem.compute_dtype == _COMPUTE_DTYPES[name]
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (
        name == "mixed_float16"
    )
    images = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
    outputs = model.predict(images, verbose=0)
    assert outputs["ensemble"].dtype == np.float32
    np.testing.assert_allclose(outputs["ensemble"].sum(axis=-1), 1.0, rtol=1e-5)

    reloaded = keras.saving.load_model(os.path.join(config.model_dir, run_folder.FINAL_MODEL))
    assert reloaded.network.get_layer("stem_0").compute_dtype == _COMPUTE_DTYPES[name]
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0)["ensemble"], outputs["ensemble"], atol=1e-6
    )
    with open(os.path.join(config.model_dir, run_folder.RUN_CONFIG)) as stream:
        assert json.load(stream)["precision"] == name
    # Serving restores any run's weights into a float32 model (a mixed_float16 run's
    # LossScaleOptimizer state included in its checkpoint), at the run's last step.
    served = restore_run(config, precision="float32")
    assert served.step == config.total_steps
    assert served.model.network.get_layer("stem_0").compute_dtype == "float32"
    np.testing.assert_allclose(
        served.model.predict(images, verbose=0)["ensemble"], outputs["ensemble"], atol=2e-2
    )


@pytest.mark.slow
def test_auto_is_recorded_resolved_and_another_precision_is_not_resumed(tmp_path):
    train(_smoke(tmp_path, precision="auto"))
    with open(os.path.join(tmp_path, run_folder.RUN_CONFIG)) as stream:
        recorded = json.load(stream)
    assert recorded["precision"] != "auto"
    assert recorded["precision"] == recorded["speed_choices"]["precision"]["precision"]
    # What "auto" resolves to on this machine for this network (its times now cached).
    fresh = _smoke(tmp_path / "fresh", precision="auto")
    assert recorded["precision"] == choose_training_precision(fresh).precision

    other = "float32" if recorded["precision"] != "float32" else "mixed_bfloat16"
    with pytest.raises(run_record.CheckpointMismatchError, match="--precision"):
        train(_smoke(tmp_path, precision=other, epochs=2))


def _one_step_update(name: str, batch) -> list[np.ndarray]:
    """Weight changes of one training step of a fixed-seed smoke model in `name`."""
    keras.utils.set_random_seed(0)
    model = build_model(_smoke("/tmp/unused", precision=name, l2=0.0))
    before = [v.numpy() for v in model.trainable_variables]
    model.train_on_batch(batch)
    return [v.numpy() - b for v, b in zip(model.trainable_variables, before)]


@pytest.mark.slow
def test_mixed_float16_loss_scaling_gives_the_float32_update():
    """The loss is scaled before the gradient and the gradients unscaled before SGD.

    A missing unscale would make the float16 update 32768 times too large; a scale applied
    twice or never (with gradients underflowing in float16) would shrink it. Both would
    break the match with the float32 step, which only float16 rounding separates.
    """
    batch = random_train_batch(16, 2, seed=3)
    batch = {key: tf.constant(value) for key, value in batch.items() if "partner" not in key}
    reference = _one_step_update("float32", batch)
    scaled = _one_step_update("mixed_float16", batch)
    reference_norm = np.sqrt(sum(np.sum(d**2) for d in reference))
    difference = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(reference, scaled)))
    assert reference_norm > 0
    assert difference < 0.05 * reference_norm
