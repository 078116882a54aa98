"""Builders and random data shared by the model and training tests."""

from __future__ import annotations

import keras
import numpy as np

from mixmo_tf.models import MixMoModel, wide_resnet

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of `model`, descending into nested models (the WRN core)."""
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(all_layers(layer))
    return layers


def perturb_batchnorm(model: keras.Model, seed: int) -> None:
    """Gives every BatchNorm random gamma, beta and moving statistics.

    Freshly built BatchNorms are nearly the identity at inference (mean 0, variance 1,
    gamma 1, beta 0); random values make comparisons of inference paths meaningful and put
    non-zero values in every beta, so sums over variables that skip them are detectable.
    """
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        size = layer.gamma.shape
        layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype(np.float32))
        layer.beta.assign(rng.uniform(-0.5, 0.5, size).astype(np.float32))
        layer.moving_mean.assign(rng.uniform(-0.5, 0.5, size).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype(np.float32))


def tiny_mixmo_model(
    num_members: int = 2, depth: int = 10, width: int = 1, learning_rate: float = 0.05, **kwargs
) -> MixMoModel:
    """A compiled MixMo WRN-depth-width on 32x32x3 images with 10 classes, variables built."""
    network = wide_resnet(depth, width, NUM_CLASSES, num_members, IMAGE_SHAPE)
    model = MixMoModel(network, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True))
    model(np.zeros((1, *IMAGE_SHAPE), np.float32))
    model.optimizer.build(model.trainable_variables)
    return model


def random_images(count: int, seed: int, shape=IMAGE_SHAPE) -> np.ndarray:
    """Standard-normal float32 images `(count, *shape)`."""
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


def random_train_batch(
    batch_size: int, num_members: int, seed: int, shape=IMAGE_SHAPE, num_classes: int = NUM_CLASSES
) -> dict[str, np.ndarray]:
    """A training batch in the pipeline's format, with input-mixing partners.

    Returns:
        `images` / `partner_images` `(batch, members, *shape)` float32 and `labels` /
        `partner_labels` `(batch, members)` int32.
    """
    rng = np.random.default_rng(seed)
    slots = (batch_size, num_members)
    return {
        "images": rng.standard_normal((*slots, *shape)).astype(np.float32),
        "labels": rng.integers(0, num_classes, slots).astype(np.int32),
        "partner_images": rng.standard_normal((*slots, *shape)).astype(np.float32),
        "partner_labels": rng.integers(0, num_classes, slots).astype(np.int32),
    }


def uniform_masks(batch_size: int, grid: tuple[int, int], num_members: int) -> np.ndarray:
    """Inference masks 1/M, `(batch, h, w, members)`, written out independently of the library."""
    return np.full((batch_size, *grid, num_members), 1.0 / num_members, np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return exp / exp.sum(axis=-1, keepdims=True)
