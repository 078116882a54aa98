"""FusedBatchNormalization computes Keras' BatchNormalization, with PyTorch's running variance.

Checked against `keras.layers.BatchNormalization` holding the same variables: training and
inference outputs, the gradients of inputs, gamma and beta, and the moving mean; the moving
variance against numpy's unbiased variance. Also bfloat16 inputs, serialization and the
inputs it refuses.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mixmo_tf.models import FusedBatchNormalization, batch_norm, batch_norm_tensorflow

SHAPE = (6, 5, 5, 4)
SETTINGS = {"epsilon": 1e-5, "momentum": 0.9}


def _pair(seed: int = 0):
    """A fused and a Keras BN built on SHAPE with the same random variables."""
    rng = np.random.default_rng(seed)
    fused = FusedBatchNormalization(**SETTINGS)
    plain = keras.layers.BatchNormalization(**SETTINGS)
    for layer in (fused, plain):
        layer.build(SHAPE)
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        low = 0.5 if name in ("gamma", "moving_variance") else -0.5
        value = rng.uniform(low, low + 1.0, SHAPE[-1]).astype(np.float32)
        getattr(fused, name).assign(value)
        getattr(plain, name).assign(value)
    return fused, plain


def _inputs(seed: int = 1) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).normal(2.0, 3.0, SHAPE).astype(np.float32))


@pytest.mark.parametrize("training", [True, False])
def test_outputs_and_gradients_match_keras(training):
    fused, plain = _pair()
    x = _inputs()
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            # A non-uniform loss so that the gradients are not trivially zero.
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * tf.range(y.shape[-1], dtype=y.dtype) * y)
        results.append([y, *tape.gradient(loss, [x, layer.gamma, layer.beta])])
    for fused_value, plain_value in zip(*results):
        np.testing.assert_allclose(fused_value, plain_value, rtol=1e-4, atol=1e-4)


def test_training_updates_moving_statistics_with_the_unbiased_variance():
    fused, plain = _pair()
    old_mean, old_variance = fused.moving_mean.numpy(), fused.moving_variance.numpy()
    x = _inputs()
    fused(x, training=True)
    plain(x, training=True)
    flat = x.numpy().reshape(-1, SHAPE[-1])
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        fused.moving_variance.numpy(),
        0.9 * old_variance + 0.1 * flat.var(axis=0, ddof=1),
        rtol=1e-5,
    )
    assert not np.allclose(fused.moving_mean.numpy(), old_mean)


def test_frozen_layer_uses_the_moving_statistics_and_keeps_them():
    fused, plain = _pair()
    fused.trainable = False
    plain.trainable = False
    x = _inputs()
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-4)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), plain.moving_mean.numpy())


def test_bfloat16_inputs_keep_float32_statistics():
    fused = FusedBatchNormalization(dtype="mixed_bfloat16", **SETTINGS)
    reference = FusedBatchNormalization(**SETTINGS)
    x = _inputs()
    y = fused(x, training=True)
    expected = reference(x, training=True)
    assert y.dtype == tf.bfloat16
    assert fused.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(y, tf.float32), expected, atol=0.05)
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.moving_mean.numpy(), atol=0.02)


def test_serializes_as_itself():
    fused, _ = _pair()
    restored = keras.layers.deserialize(keras.layers.serialize(fused))
    assert type(restored) is FusedBatchNormalization
    assert restored.get_config() == fused.get_config()


def test_refuses_what_it_cannot_fuse():
    with pytest.raises(ValueError, match="4D inputs"):
        FusedBatchNormalization()(tf.zeros((2, 3)))
    with pytest.raises(ValueError, match="4D inputs"):
        FusedBatchNormalization(axis=1)(tf.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="renorm"):
        FusedBatchNormalization(renorm=True)


@pytest.mark.parametrize("training", [True, False])
def test_the_keras_ops_form_of_other_backends_is_the_fused_kernel(training):
    """JAX and PyTorch run `normalize` / `normalize_batch`; TensorFlow the fused kernel."""
    x = _inputs()
    rng = np.random.default_rng(2)
    scale, offset, mean, variance = (
        tf.constant(rng.uniform(0.5, 1.5, SHAPE[-1]).astype(np.float32)) for _ in range(4)
    )
    results = []
    for normalize, normalize_batch in (
        (batch_norm.normalize, batch_norm.normalize_batch),
        (batch_norm_tensorflow.fused_normalize, batch_norm_tensorflow.fused_normalize_batch),
    ):
        with tf.GradientTape() as tape:
            tape.watch([x, scale, offset])
            if training:
                y, batch_mean, batch_variance = normalize_batch(x, scale, offset, 1e-5)
                statistics = [batch_mean, batch_variance]
            else:
                y = normalize(x, mean, variance, scale, offset, 1e-5)
                statistics = []
            loss = tf.reduce_sum(y * tf.range(y.shape[-1], dtype=y.dtype) * y)
        results.append([y, *statistics, *tape.gradient(loss, [x, scale, offset])])
    for ops_value, fused_value in zip(*results):
        np.testing.assert_allclose(ops_value, fused_value, rtol=1e-5, atol=1e-5)
