"""Every source's splits behind one call: `open_split(spec, split, data_dir, download)`.

Small datasets come back in memory (CIFAR as tfds prepares it, digits from scikit-learn);
the others stream from their files (`mixmo_tf.data.streamed`): Tiny ImageNet and `tfds:NAME`
sources from a `.npy` cache written once (`mixmo_tf.data.cache`), `folder:PATH` sources
from the image files themselves. The training and evaluation pipelines accept both.
"""

from __future__ import annotations

import numpy as np

from mixmo_tf.config.dataset_names import source_argument, source_kind
from mixmo_tf.config.datasets import DATASETS, DatasetSpec
from mixmo_tf.data import sources, tfds_loading
from mixmo_tf.data.cache import cached_split
from mixmo_tf.data.digits import load_digits_split
from mixmo_tf.data.folder import index_folder
from mixmo_tf.data.streamed import ImageFiles, StreamedImages

# Named datasets small enough to hold in memory (CIFAR: 150 MB as uint8).
IN_MEMORY = ("cifar10", "cifar100", "digits")
Images = np.ndarray | StreamedImages


def prepare_source(dataset: str, data_dir: str | None, download: str) -> None:
    """Makes the data of `--dataset` ready to read: prepares (or downloads, if `download`
    allows) tfds data; an image folder needs nothing.

    Raises:
        FileNotFoundError: the data is missing and could not be prepared (the message says
            how to fix it).
    """
    kind = source_kind(dataset)
    if kind == "tfds":
        tfds_loading.ensure_tfds_prepared(source_argument(dataset), data_dir, download)
    elif sources.tfds_prepares(dataset):
        tfds_loading.ensure_prepared(DATASETS[dataset], data_dir, download)


def _tfds_cached_split(
    spec: DatasetSpec, split: str, data_dir: str | None, download: str
) -> tuple[StreamedImages, np.ndarray]:
    if spec.name == "tiny_imagenet":
        from mixmo_tf.data.tiny_imagenet import TinyImagenet  # registers "tiny_imagenet"

        data_dir = tfds_loading.ensure_prepared(spec, data_dir, download)
        builder = TinyImagenet(data_dir=data_dir)
        count = builder.info.splits[split].num_examples
    else:
        name = source_argument(spec.name)
        data_dir = tfds_loading.ensure_tfds_prepared(name, data_dir, download)
        builder = tfds_loading.tfds_builder(name, data_dir)
        count = tfds_loading.tfds_splits(builder, name)[split]
    dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    return cached_split(dataset, count, spec.image_shape, builder.data_dir, split)


def open_split(
    spec: DatasetSpec, split: str, data_dir: str | None = None, download: str = "never"
) -> tuple[Images, np.ndarray]:
    """Images `(N, H, W, C)` uint8 (in memory, or `StreamedImages`) and labels `(N,)` int64.

    Args:
        split: "train" or "test".
        download: when tfds may download missing data (`mixmo_tf.data.downloads`).

    Raises:
        FileNotFoundError: the data is missing or unusable (path and fix in the message).
    """
    kind = source_kind(spec.name)
    if spec.name == "digits":
        return load_digits_split(split, spec.num_train)
    if spec.name in IN_MEMORY:
        return tfds_loading.load_tfds_split(spec, split, data_dir, download)
    if kind == "folder":
        files = index_folder(source_argument(spec.name)).splits[split]
        return ImageFiles(files.paths, spec.image_shape), np.asarray(files.labels, np.int64)
    return _tfds_cached_split(spec, split, data_dir, download)


def load_split(
    spec: DatasetSpec, split: str, data_dir: str | None = None, download: str = "never"
) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, H, W, C)` uint8 and labels `(N,)` of a split, all in memory (`open_split`
    read whole: for small splits and tests)."""
    images, labels = open_split(spec, split, data_dir, download)
    if isinstance(images, StreamedImages):
        images = images.numpy()
    return images, labels
