"""tf.data pipelines: batch repetition, member permutations, per-slot augmentation.

Every training batch is a pure function of (seed, global step): the epoch's order of unique
images comes from `tf.random.experimental.index_shuffle`, member permutations and
augmentations from stateless RNGs. A run resumed at step s therefore sees exactly the
batches it would have seen, and parallel map stays deterministic. Images in memory are
gathered from a constant; `StreamedImages` are read from their files by the same indices.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from mixmo_tf.config.datasets import DatasetSpec
from mixmo_tf.config.errors import ConfigError
from mixmo_tf.data.streamed import StreamedImages

_ORDER_STREAM, _MEMBER_STREAM, _AUGMENT_STREAM = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class TrainStream:
    """What shapes the training stream.

    Attributes:
        batch_size: slots per batch B.
        batch_repetitions: b; each batch holds B / b unique images, each repeated b times.
        num_members: M; each member gets its own permutation of the B slots.
        steps_per_epoch: batches per epoch; one epoch visits each unique image once.
        with_partners: also yield a uniformly drawn, augmented partner per slot and member
            (for input MSDA).
        seed: seed of the stream.
    """

    batch_size: int
    batch_repetitions: int
    num_members: int
    steps_per_epoch: int
    with_partners: bool
    seed: int

    @property
    def unique_per_batch(self) -> int:
        return self.batch_size // self.batch_repetitions


def image_reader(images: np.ndarray | StreamedImages):
    """A function from example indices (any shape) to their uint8 images.

    In memory: a gather from one constant. Streamed: a read of those rows from the files.
    """
    if isinstance(images, StreamedImages):
        return images.gather
    constant = tf.constant(images)
    return lambda indices: tf.gather(constant, indices)


def normalize(images: tf.Tensor, spec: DatasetSpec) -> tf.Tensor:
    """uint8 images -> float32 with the dataset's per-channel mean and std."""
    scaled = tf.cast(images, tf.float32) / 255.0
    return (scaled - tf.constant(spec.mean)) / tf.constant(spec.std)


def augment(images: tf.Tensor, seed: tf.Tensor, spec: DatasetSpec) -> tf.Tensor:
    """Random crop with zero padding and (if the dataset allows) horizontal flip, per image.

    Args:
        images: `(N, H, W, C)` uint8; each image gets its own crop offset and flip.
        seed: stateless seed.
    """
    height, width = spec.image_shape[0], spec.image_shape[1]
    count = tf.shape(images)[0]
    offset_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    pad = spec.pad
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [count, 2], offset_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis, :]
    columns = offsets[:, 1:] + tf.range(width)[tf.newaxis, :]
    if spec.flip:
        flip = tf.random.stateless_uniform([count, 1], flip_seed) < 0.5
        columns = tf.where(flip, columns[:, ::-1], columns)
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, columns, axis=2, batch_dims=1)


def _augment_members(images: tf.Tensor, seed: tf.Tensor, spec: DatasetSpec) -> tf.Tensor:
    """Augments `(B, M, H, W, C)` slot images independently and normalises them."""
    shape = tf.shape(images)
    flat = tf.reshape(images, tf.concat([[-1], shape[2:]], axis=0))
    return tf.reshape(normalize(augment(flat, seed, spec), spec), shape)


def train_batch_indices(step: tf.Tensor, num_examples: int, stream: TrainStream) -> tf.Tensor:
    """Example indices of the batch at global `step`, shape (B, M).

    The epoch's unique images are the slice of a seeded permutation of the whole set; each
    is repeated b times and every member sees the B slots in its own random order.
    """
    step = tf.cast(step, tf.int64)
    epoch = step // stream.steps_per_epoch
    position = step % stream.steps_per_epoch
    unique = stream.unique_per_batch
    order_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([stream.seed, _ORDER_STREAM], tf.int64), epoch
    )
    slots = position * unique + tf.range(unique, dtype=tf.int64)
    unique_indices = tf.random.experimental.index_shuffle(
        slots % num_examples, order_seed, num_examples - 1
    )
    repeated = tf.repeat(unique_indices, stream.batch_repetitions)
    member_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([stream.seed, _MEMBER_STREAM], tf.int64), step
    )
    member_orders = tf.argsort(
        tf.random.stateless_uniform([stream.num_members, stream.batch_size], member_seed), axis=-1
    )
    return tf.transpose(tf.gather(repeated, member_orders))


def train_dataset(
    images: np.ndarray | StreamedImages,
    labels: np.ndarray,
    spec: DatasetSpec,
    stream: TrainStream,
    start_step: int,
    end_step: int,
) -> tf.data.Dataset:
    """Training batches for global steps [start_step, end_step).

    Yields dicts: `images` `(B, M, H, W, C)` float32 normalised, `labels` `(B, M)` int32, and
    with partners also `partner_images`, `partner_labels` of the same shapes.

    Args:
        images: `(N, H, W, C)` uint8 in memory, or `StreamedImages` read per batch.
    """
    num_examples = len(labels)
    if num_examples < stream.unique_per_batch:
        raise ConfigError(
            f"The training set has {num_examples} examples, fewer than the "
            f"{stream.unique_per_batch} unique images a batch needs "
            "(batch_size / batch_repetitions)."
        )
    read_images = image_reader(images)
    all_labels = tf.constant(labels, tf.int32)

    def make_batch(step):
        indices = train_batch_indices(step, num_examples, stream)
        step_key = tf.random.experimental.stateless_fold_in(
            tf.constant([stream.seed, _AUGMENT_STREAM], tf.int64), step
        )
        own_seed, partner_seed, partner_augment_seed = tf.unstack(
            tf.random.experimental.stateless_split(step_key, 3)
        )
        batch = {
            "images": _augment_members(read_images(indices), own_seed, spec),
            "labels": tf.gather(all_labels, indices),
        }
        if stream.with_partners:
            partners = tf.random.stateless_uniform(
                tf.shape(indices), partner_seed, minval=0, maxval=num_examples, dtype=tf.int32
            )
            batch["partner_images"] = _augment_members(
                read_images(partners), partner_augment_seed, spec
            )
            batch["partner_labels"] = tf.gather(all_labels, partners)
        return batch

    return (
        tf.data.Dataset.range(start_step, end_step)
        .map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def eval_dataset(
    images: np.ndarray | StreamedImages,
    labels: np.ndarray,
    spec: DatasetSpec,
    batch_size: int,
    num_batches: int = 0,
) -> tf.data.Dataset:
    """Normalised test batches `{"images": (batch, H, W, C), "labels": (batch,)}`, in order.

    Args:
        images: `(N, H, W, C)` uint8 in memory, or `StreamedImages` read per batch.
        num_batches: keep only the first batches (smoke runs); 0 keeps the whole split.
    """
    read_images = image_reader(images)
    all_labels = tf.constant(labels, tf.int32)
    dataset = tf.data.Dataset.range(len(labels)).batch(batch_size)
    if num_batches:
        dataset = dataset.take(num_batches)
    return dataset.map(
        lambda indices: {
            "images": normalize(read_images(indices), spec),
            "labels": tf.gather(all_labels, indices),
        },
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)
