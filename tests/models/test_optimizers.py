"""`PyTorchSGD` is torch.optim.SGD's Nesterov step, and runs use it (docs/method.md §9).

Proven here:
- over a sequence with changing learning rates (per-step warm-up, then two x0.1 decays) its
  updates equal PyTorch's rule written out by hand, b = mu * b + g, w -= lr * (g + mu * b),
  while Keras' SGD (lr inside the velocity) measurably differs;
- it serializes and registers like a Keras optimizer, and its state restores from a
  checkpoint and continues as if never interrupted;
- `build_model` uses it for the paper's recipe (`--optimizer=pytorch_sgd`, the default),
  Keras' SGD on request, and a run recorded before the choice existed (Keras' SGD) is not
  resumed with the other one.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from mixmo_tf.config import Config, run_folder, run_record
from mixmo_tf.models.build import build_model
from mixmo_tf.models.optimizers import PyTorchSGD
from mixmo_tf.models.schedules import WarmupStepDecay

pytestmark = pytest.mark.backends

MOMENTUM = 0.9
STEPS = 12


def _rates() -> list[float]:
    """0.1 with a 4-step linear warm-up and x0.1 at steps 6 and 9, by hand."""
    return [0.1 * min(1.0, (t + 1) / 4) * 0.1 ** ((t >= 6) + (t >= 9)) for t in range(STEPS)]


def _gradients() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(STEPS, 3)).astype(np.float32)


def _pytorch_by_hand(start: np.ndarray) -> np.ndarray:
    """torch.optim.SGD(momentum=0.9, nesterov=True), dampening 0: weights after each step."""
    weights, buffer, history = start.astype(np.float64), np.zeros(3), []
    for rate, gradient in zip(_rates(), _gradients()):
        buffer = MOMENTUM * buffer + gradient
        weights = weights - rate * (gradient + MOMENTUM * buffer)
        history.append(weights.copy())
    return np.array(history)


def _run(optimizer: keras.optimizers.Optimizer, start: np.ndarray) -> np.ndarray:
    variable = keras.Variable(start)
    optimizer.build([variable])
    history = []
    for gradient in _gradients():
        optimizer.apply([keras.ops.convert_to_tensor(gradient)], [variable])
        history.append(keras.ops.convert_to_numpy(variable).copy())
    return np.array(history)


def _schedule() -> WarmupStepDecay:
    return WarmupStepDecay(0.1, warmup_steps=4, boundaries=[6, 9], factor=0.1)


def test_updates_follow_pytorch_through_warmup_and_decays():
    start = np.array([1.0, -2.0, 0.5], np.float32)
    expected = _pytorch_by_hand(start)
    ours = _run(PyTorchSGD(_schedule(), momentum=MOMENTUM, nesterov=True), start)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    # The test can fail: Keras' velocity carries the earlier rates after each change.
    keras_sgd = _run(keras.optimizers.SGD(_schedule(), momentum=MOMENTUM, nesterov=True), start)
    np.testing.assert_allclose(keras_sgd[:1], expected[:1], rtol=1e-5)  # same first step
    after_decay = np.abs(keras_sgd[6] - keras_sgd[5]) / np.abs(expected[6] - expected[5])
    assert np.all(np.abs(after_decay - 1) > 0.1)


def test_plain_momentum_and_no_momentum_follow_pytorch():
    start = np.zeros(3, np.float32)
    gradients, rates = _gradients(), _rates()
    heavy_ball = _run(PyTorchSGD(_schedule(), momentum=MOMENTUM), start)
    plain = _run(PyTorchSGD(_schedule()), start)
    buffer, weights = np.zeros(3), np.zeros(3)
    for t in range(STEPS):
        buffer = MOMENTUM * buffer + gradients[t]
        weights = weights - rates[t] * buffer
        np.testing.assert_allclose(heavy_ball[t], weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        plain[-1], -np.sum(np.array(rates)[:, None] * gradients, axis=0), rtol=1e-5
    )


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow checkpoint")
def test_serializes_and_resumes_from_a_checkpoint(tmp_path):
    import tensorflow as tf

    optimizer = PyTorchSGD(_schedule(), momentum=MOMENTUM, nesterov=True)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is PyTorchSGD
    assert restored.get_config() == optimizer.get_config()

    start = np.array([1.0, -2.0, 0.5], np.float32)
    variable = keras.Variable(start)
    optimizer.build([variable])
    gradients = _gradients()
    for gradient in gradients[:7]:
        optimizer.apply([tf.constant(gradient)], [variable])
    path = tf.train.Checkpoint(optimizer=optimizer, weights=variable).save(str(tmp_path / "c"))

    fresh_variable = keras.Variable(np.zeros(3, np.float32))
    fresh = PyTorchSGD(_schedule(), momentum=MOMENTUM, nesterov=True)
    fresh.build([fresh_variable])
    tf.train.Checkpoint(optimizer=fresh, weights=fresh_variable).restore(path)
    assert int(fresh.iterations) == 7
    for gradient in gradients[7:]:
        fresh.apply([tf.constant(gradient)], [fresh_variable])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fresh_variable), _pytorch_by_hand(start)[-1], rtol=1e-5
    )


@pytest.mark.parametrize("name, kind", [("pytorch_sgd", PyTorchSGD), ("keras_sgd", None)])
def test_build_model_uses_the_chosen_formulation(name, kind):
    model = build_model(
        Config(dataset="digits", depth=10, width=1, optimizer=name, precision="float32")
    )
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov
    assert (type(optimizer) is PyTorchSGD) == (kind is PyTorchSGD)


def test_runs_recorded_before_the_choice_resume_only_with_keras_sgd(tmp_path):
    old = Config(dataset="digits", model_dir=str(tmp_path), optimizer="keras_sgd")
    recorded = dataclasses.asdict(old)
    del recorded["optimizer"]  # as written before the field existed
    os.makedirs(tmp_path, exist_ok=True)
    with open(tmp_path / run_folder.RUN_CONFIG, "w") as stream:
        json.dump(recorded, stream)
    with pytest.raises(run_record.CheckpointMismatchError, match="--optimizer"):
        run_record.record_run_config(dataclasses.replace(old, optimizer="pytorch_sgd"))
    run_record.record_run_config(old)
    assert run_record.recorded_config(str(tmp_path)).optimizer == "keras_sgd"
