"""A prepared tfds split as a uint8 `.npy` cache that training reads by index (`ImageCache`).

Tiny ImageNet's train split is 1.2 GB as uint8, too much to hold as a tf.constant (which
also copies it into the graph). tfds' prepared format (TFRecord) has no random access, and
its random-access `tfds.data_source` needs the ArrayRecord format (not what `tfds build`
writes by default) and decodes a JPEG per read. So each split is decoded (and resized to the
run's image size) once into `<dataset's tfds folder>/mixmo_cache/<split>_<H>x<W>.npy` plus
`<split>_labels.npy`; reads are then a memory-mapped copy of rows. Written atomically
(`mixmo_tf.config.run_folder.write_atomically`): an interrupted write leaves no cache behind.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from mixmo_tf.config.errors import UnusableFileError
from mixmo_tf.config.run_folder import write_atomically
from mixmo_tf.data.streamed import ImageCache, to_rgb_uint8

CACHE_SUBDIR = "mixmo_cache"
_WRITE_BATCH = 256


def cache_paths(dataset_dir: str, split: str, image_shape) -> tuple[str, str]:
    """(images, labels) `.npy` paths of `split` at `image_shape` under a tfds dataset folder."""
    folder = os.path.join(dataset_dir, CACHE_SUBDIR)
    height, width = image_shape[:2]
    return (
        os.path.join(folder, f"{split}_{height}x{width}.npy"),
        os.path.join(folder, f"{split}_labels.npy"),
    )


def _write(dataset: tf.data.Dataset, count: int, image_shape, images_path: str) -> np.ndarray:
    """Writes the (image, label) pairs of `dataset` resized to `image_shape`; returns labels."""
    size = tuple(image_shape[:2])
    batches = dataset.map(
        lambda image, label: (to_rgb_uint8(image, size), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).batch(_WRITE_BATCH)
    labels = np.zeros(count, np.int64)

    def write(path: str) -> None:
        array = np.lib.format.open_memmap(path, "w+", np.uint8, (count, *image_shape))
        start = 0
        for images, batch_labels in batches.as_numpy_iterator():
            if start + len(images) > count:
                raise ValueError(f"The split has more than the {count} examples its info says.")
            array[start : start + len(images)] = images
            labels[start : start + len(images)] = batch_labels
            start += len(images)
        if start != count:
            raise ValueError(f"The split has {start} examples; its info says {count}.")
        array.flush()
        del array

    write_atomically(images_path, write, ".npy")
    return labels


def cached_split(
    dataset: tf.data.Dataset, count: int, image_shape, dataset_dir: str, split: str
) -> tuple[ImageCache, np.ndarray]:
    """The split's images as an `ImageCache` and its labels, writing the cache if missing.

    Args:
        dataset: the split's (image, label) pairs in tfds' order (read only to write).
        count: its number of examples.
        image_shape: `(H, W, C)` the images are resized to.
        dataset_dir: the tfds folder of the prepared dataset (builder.data_dir).
    """
    images_path, labels_path = cache_paths(dataset_dir, split, image_shape)
    if not (os.path.exists(images_path) and os.path.exists(labels_path)):
        os.makedirs(os.path.dirname(images_path), exist_ok=True)
        labels = _write(dataset, count, image_shape, images_path)
        write_atomically(labels_path, lambda path: np.save(path, labels), ".npy")
    images = ImageCache(images_path)
    if images.shape != (count, *image_shape):
        raise UnusableFileError(
            f"{images_path} holds {images.shape}, not {(count, *image_shape)}: delete it; it "
            "is written again on the next run."
        )
    return images, np.load(labels_path)
