"""The learning-rate schedule and the Config's derived numbers follow docs/method.md §9.

Proves that, for the paper's CIFAR run built from `Config()` defaults (B = 64, b = 4):
- the base rate is 0.1 * 16 / 128 = 0.0125 (0.05 for the vanilla b = 1 run);
- one epoch is floor(50000 * 4 / 64) = 3125 steps (781 for b = 1) and the warm-up lasts
  782 * b steps, rising linearly from base / warmup_steps to base;
- the rate drops x0.1 exactly at the first step of the 1-indexed epochs 101, 201 and 226;
- `WarmupStepDecay` round-trips through `get_config` and works inside `tf.function`;
- the effective mixing parameters per `--mixing` method are MIMO's plain sum (alpha 0, no
  cut, r = 1) or MixMo's (alpha, cut probability, r = 3).
"""

import keras
import numpy as np
import pytest

from mixmo_tf.config import Config
from mixmo_tf.models.schedules import WarmupStepDecay, learning_rate_schedule

pytestmark = pytest.mark.backends

CIFAR_TRAIN = 50_000
PAPER_BASE_LR = 0.1 * (64 / 4) / 128  # 0.0125
VANILLA_BASE_LR = 0.1 * 64 / 128  # 0.05


def learning_rate(schedule, step: int) -> float:
    return float(schedule(np.int64(step)))


def test_paper_config_derived_numbers():
    config = Config()
    assert (config.batch_size, config.batch_repetitions, config.epochs) == (64, 4, 300)
    assert config.base_learning_rate == pytest.approx(PAPER_BASE_LR) == pytest.approx(0.0125)
    assert config.derived_steps_per_epoch == CIFAR_TRAIN * 4 // 64 == 3125
    assert config.warmup_steps == 782 * 4 == 3128
    assert config.lr_decay_steps == (100 * 3125, 200 * 3125, 225 * 3125)
    assert config.total_steps == 300 * 3125


def test_vanilla_config_derived_numbers():
    config = Config(num_members=1, mixing="none", batch_repetitions=1)
    assert config.base_learning_rate == pytest.approx(VANILLA_BASE_LR)
    assert config.derived_steps_per_epoch == CIFAR_TRAIN // 64 == 781
    assert config.warmup_steps == 782
    assert config.lr_decay_steps == (100 * 781, 200 * 781, 225 * 781)


def test_explicit_steps_per_epoch_moves_the_decay_steps():
    config = Config(steps_per_epoch=10, lr_decay_epochs=(2, 5))
    assert config.derived_steps_per_epoch == 10
    assert config.lr_decay_steps == (10, 40)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, PAPER_BASE_LR / 3128),
        (1, PAPER_BASE_LR * 2 / 3128),
        (1563, PAPER_BASE_LR / 2),
        (3126, PAPER_BASE_LR * 3127 / 3128),
        (3127, PAPER_BASE_LR),
        (3128, PAPER_BASE_LR),
        (100 * 3125 - 1, PAPER_BASE_LR),  # last step of epoch 100
        (100 * 3125, PAPER_BASE_LR * 0.1),  # first step of epoch 101
        (200 * 3125 - 1, PAPER_BASE_LR * 0.1),
        (200 * 3125, PAPER_BASE_LR * 0.01),  # epoch 201
        (225 * 3125 - 1, PAPER_BASE_LR * 0.01),
        (225 * 3125, PAPER_BASE_LR * 0.001),  # epoch 226
        (300 * 3125 - 1, PAPER_BASE_LR * 0.001),  # last step of training
    ],
)
def test_paper_schedule_values(step, expected):
    assert learning_rate(learning_rate_schedule(Config()), step) == pytest.approx(
        expected, rel=1e-5
    )


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, VANILLA_BASE_LR / 782),
        (781, VANILLA_BASE_LR),
        (100 * 781 - 1, VANILLA_BASE_LR),
        (100 * 781, VANILLA_BASE_LR / 10),
    ],
)
def test_vanilla_schedule_values(step, expected):
    schedule = learning_rate_schedule(Config(num_members=1, mixing="none", batch_repetitions=1))
    assert learning_rate(schedule, step) == pytest.approx(expected, rel=1e-5)


def test_decay_boundaries_fall_on_the_first_step_of_one_indexed_epochs():
    config = Config()
    for step, epoch in zip(config.lr_decay_steps, config.lr_decay_epochs):
        assert step // config.derived_steps_per_epoch + 1 == epoch
        assert step % config.derived_steps_per_epoch == 0


def test_zero_warmup_starts_at_base_rate():
    schedule = WarmupStepDecay(0.2, 0, [5], factor=0.5)
    assert learning_rate(schedule, 0) == pytest.approx(0.2)
    assert learning_rate(schedule, 5) == pytest.approx(0.1)


def test_schedule_is_monotone_in_warmup_and_flat_between_boundaries():
    schedule = WarmupStepDecay(1.0, 10, [20, 30])
    values = np.array([learning_rate(schedule, s) for s in range(40)])
    np.testing.assert_allclose(values[:10], np.arange(1, 11) / 10, rtol=1e-6)
    np.testing.assert_allclose(values[10:20], 1.0, rtol=1e-6)
    np.testing.assert_allclose(values[20:30], 0.1, rtol=1e-6)
    np.testing.assert_allclose(values[30:], 0.01, rtol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow graph function")
def test_schedule_in_tf_function_with_an_iterations_variable():
    import tensorflow as tf

    schedule = learning_rate_schedule(Config())
    step = tf.Variable(0, dtype=tf.int64)
    compiled = tf.function(lambda: schedule(step))
    for value in (0, 3127, 100 * 3125):
        step.assign(value)
        assert float(compiled()) == pytest.approx(learning_rate(schedule, value), rel=1e-7)


def test_schedule_config_round_trip():
    schedule = learning_rate_schedule(Config())
    config = schedule.get_config()
    assert config == {
        "base_lr": pytest.approx(0.0125),
        "warmup_steps": 3128,
        "boundaries": [312500, 625000, 703125],
        "factor": pytest.approx(0.1),
    }
    for restored in (
        WarmupStepDecay.from_config(config),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule)),
    ):
        assert isinstance(restored, WarmupStepDecay)
        for step in (0, 5000, 625000):
            assert learning_rate(restored, step) == learning_rate(schedule, step)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(base_lr=0.0, warmup_steps=1, boundaries=[]), "base_lr must be > 0"),
        (dict(base_lr=0.1, warmup_steps=-1, boundaries=[]), "warmup_steps must be >= 0"),
        (dict(base_lr=0.1, warmup_steps=1, boundaries=[5, 3]), "boundaries must be ascending"),
    ],
)
def test_schedule_rejects_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WarmupStepDecay(**kwargs)


@pytest.mark.parametrize(
    "overrides, alpha, cut_prob, power",
    [
        (dict(num_members=1, mixing="none", batch_repetitions=1), 0.0, 0.0, 1.0),
        (dict(mixing="mimo"), 0.0, 0.0, 1.0),
        (dict(mixing="linear"), 2.0, 0.0, 3.0),
        (dict(mixing="cutmix"), 2.0, 0.5, 3.0),
    ],
)
def test_effective_mixing_parameters(overrides, alpha, cut_prob, power):
    config = Config(**overrides)
    assert config.effective_mixing_alpha == alpha
    assert config.effective_cut_prob == cut_prob
    assert config.effective_loss_power == power


def test_mimo_ignores_a_configured_mixing_alpha():
    config = Config(mixing="mimo", mixing_alpha=2.0, cut_prob=0.5, loss_power=3.0)
    assert config.effective_mixing_alpha == 0.0
    assert config.effective_cut_prob == 0.0
    assert config.effective_loss_power == 1.0
