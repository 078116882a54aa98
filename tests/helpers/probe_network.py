"""A MixMo network that shows what `train_step` feeds it, for tests of the wiring.

Its stems are identities that keep the image each member received, and its core starts
with a layer that keeps the mixed features, so a test reads the pixels, the masks and the
logits of a real training step instead of recomputing them with the code under test.

The images tests feed it encode who is who in their channels:
- channel 0: 1 in a member's own image, 0 in its input-mixing partner, so the received
  channel 0 is the member's own-pixel mask;
- channel 1: 1 in member 0's images (own and partner), 0 in the other members', so the
  mixed features' channel 1 is M * m_0, member 0's feature-mixing mask times M;
- channel 2: noise, so that the core's output (and the loss) depends on the content.
"""

from __future__ import annotations

import keras
import numpy as np

from mixmo_tf.models import MixMoModel, build_mixmo_network
from mixmo_tf.models.batch_norm import FusedBatchNormalization

IMAGE_SHAPE = (8, 8, 3)
NUM_CLASSES = 5
OWN_CHANNEL, MEMBER_0_CHANNEL = 0, 1


class Recorder(keras.layers.Layer):
    """The identity, keeping the last tensor it was called on (`seen`)."""

    def call(self, inputs):
        self.seen = inputs
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def probe_model(
    num_members: int = 2, learning_rate: float = 0.05, seed: int = 0, **kwargs
) -> MixMoModel:
    """A compiled MixMo model around a probe network: identity stems, a small conv core.

    The core (recorder, conv 3x3, BN, ReLU, global pooling, recorder) has every kind of
    trainable variable the L2 term must cover; `model.network.get_layer("pooled")` holds the
    features the heads read. Its initial weights come from `seed`, whatever ran before in
    the test process.
    """
    keras.utils.set_random_seed(seed)
    core = keras.Sequential(
        [
            Recorder(name="mixed"),
            keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
            FusedBatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            Recorder(name="pooled"),
        ],
        name="probe_core",
    )
    network = build_mixmo_network(
        lambda member: Recorder(name=f"stem_{member}"),
        core,
        NUM_CLASSES,
        num_members,
        IMAGE_SHAPE,
    )
    model = MixMoModel(network, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True))
    model(np.zeros((1, *IMAGE_SHAPE), np.float32))
    model.optimizer.build(model.trainable_variables)
    return model


def coded_batch(batch_size: int, num_members: int, seed: int) -> dict[str, np.ndarray]:
    """A training batch whose channels encode own/partner and member 0 (module docstring).

    Labels and partner labels never coincide, so the soft targets show both shares.
    """
    rng = np.random.default_rng(seed)
    shape = (batch_size, num_members, *IMAGE_SHAPE)
    images = np.zeros(shape, np.float32)
    images[..., OWN_CHANNEL] = 1.0
    images[:, 0, ..., MEMBER_0_CHANNEL] = 1.0
    images[..., 2] = rng.standard_normal(shape[:-1])
    partners = images.copy()
    partners[..., OWN_CHANNEL] = 0.0
    partners[..., 2] = rng.standard_normal(shape[:-1])
    labels = rng.integers(0, NUM_CLASSES, (batch_size, num_members))
    offsets = rng.integers(1, NUM_CLASSES, (batch_size, num_members))
    return {
        "images": images,
        "labels": labels.astype(np.int32),
        "partner_images": partners,
        "partner_labels": ((labels + offsets) % NUM_CLASSES).astype(np.int32),
    }


def received(model: MixMoModel) -> dict[str, np.ndarray]:
    """What the network received in its last call, read from the recorders (M = 1 or 2).

    Returns:
        `images` `(batch, M, H, W, C)` as the stems saw them, `masks` `(batch, H, W, M)`
        read off the mixed features, `pooled` `(batch, features)` the heads' input.
    """
    network = model.network
    num_members = model.num_members
    images = np.stack(
        [
            keras.ops.convert_to_numpy(network.get_layer(f"stem_{i}").seen)
            for i in range(num_members)
        ],
        axis=1,
    )
    core = network.get_layer("probe_core")
    mixed = keras.ops.convert_to_numpy(core.get_layer("mixed").seen)
    member_0 = mixed[..., MEMBER_0_CHANNEL] / num_members
    masks = [member_0] if num_members == 1 else [member_0, 1.0 - member_0]
    return {
        "images": images,
        "masks": np.stack(masks, axis=-1),
        "pooled": keras.ops.convert_to_numpy(core.get_layer("pooled").seen),
    }


def head_weights(model: MixMoModel) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of each head, copied (take them before a step updates them)."""
    return [
        (
            keras.ops.convert_to_numpy(head.kernel).copy(),
            keras.ops.convert_to_numpy(head.bias).copy(),
        )
        for head in (model.network.get_layer(f"head_{i}") for i in range(model.num_members))
    ]


def head_logits(weights: list[tuple[np.ndarray, np.ndarray]], pooled: np.ndarray) -> np.ndarray:
    """Each head's logits `(batch, M, classes)` from the pooled features, in numpy."""
    return np.stack([pooled @ kernel + bias for kernel, bias in weights], axis=1)


def own_shares(seen: dict[str, np.ndarray]) -> np.ndarray:
    """Own image's share of what each member keeps, `(batch, M)`, from what the network saw.

    lambda' = mean(own pixels * m_member) / (mean(m_member) + 1e-8), docs/method.md §6; the probe's
    stems do not downsample, so the pixel grid is the feature grid.
    """
    own = seen["images"][..., OWN_CHANNEL]  # (batch, M, H, W)
    masks = np.moveaxis(seen["masks"], -1, 1)  # (batch, M, H, W)
    return (own * masks).mean(axis=(2, 3)) / (masks.mean(axis=(2, 3)) + 1e-8)
