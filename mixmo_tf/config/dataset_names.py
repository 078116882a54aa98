"""What a `--dataset` value names, checked and labelled (imports no TensorFlow).

Three kinds of source:

- a named dataset of `mixmo_tf.config.datasets.DATASETS` (cifar10, cifar100, digits,
  tiny_imagenet), whose spec is fixed;
- `tfds:NAME`, any tfds image-classification dataset: classes, class names and split sizes
  from its tfds info (it must be prepared, or downloaded with --download), images resized to
  --image_size;
- `folder:PATH`, an image folder with train/<class>/* and test/<class>/*
  (`mixmo_tf.data.folder`), images resized to --image_size.
"""

from __future__ import annotations

import os
import re

from mixmo_tf.config.datasets import DATASETS, DEFAULT_IMAGE_SIZE
from mixmo_tf.config.errors import ConfigError

TFDS_PREFIX = "tfds:"
# What tfds accepts as a dataset name: [namespace:]name[/config][:version]
# (tensorflow_datasets.core.naming; keyword arguments are not taken here).
_TFDS_NAME = re.compile(r"([\w-]+:)?[A-Za-z]\w*(/[\w+.-]+)?(:(\d+|\*)(\.(\d+|\*)){2})?")
FOLDER_PREFIX = "folder:"


def source_kind(dataset: str) -> str:
    """ "named", "tfds" or "folder"."""
    if dataset.startswith(TFDS_PREFIX):
        return "tfds"
    if dataset.startswith(FOLDER_PREFIX):
        return "folder"
    return "named"


def source_argument(dataset: str) -> str:
    """The tfds name of `tfds:NAME`, the absolute folder of `folder:PATH`."""
    kind = source_kind(dataset)
    if kind == "folder":
        return os.path.abspath(os.path.expanduser(dataset[len(FOLDER_PREFIX) :]))
    return dataset[len(TFDS_PREFIX) :] if kind == "tfds" else dataset


def normalized_dataset(dataset: str) -> str:
    """`dataset` with the folder of `folder:PATH` absolute (and `~` expanded)."""
    if source_kind(dataset) != "folder" or not dataset[len(FOLDER_PREFIX) :]:
        return dataset
    return FOLDER_PREFIX + source_argument(dataset)


def check_dataset(dataset: str, image_size: int) -> None:
    """Raises ConfigError naming the flag unless `dataset` and `image_size` can make a source."""
    kind = source_kind(dataset)
    if kind == "named" and dataset not in DATASETS:
        raise ConfigError(
            f"--dataset must be one of {sorted(DATASETS)}, tfds:NAME (a tfds image "
            f"classification dataset) or folder:PATH (an image folder). Received: "
            f"dataset={dataset!r}"
        )
    if kind != "named" and not source_argument(dataset).strip("/"):
        raise ConfigError(
            f"--dataset={dataset} names no dataset: write e.g. tfds:oxford_flowers102 or "
            "folder:/data/pets."
        )
    if kind == "tfds" and not _TFDS_NAME.fullmatch(source_argument(dataset)):
        raise ConfigError(
            f"--dataset={dataset}: a tfds name is letters, digits and underscores, with an "
            "optional /config and :version (e.g. tfds:oxford_flowers102, "
            "tfds:cifar10_corrupted/fog_5:3.0.0); tfds writes oxford-flowers102 as "
            "oxford_flowers102."
        )
    if image_size and image_size < 8:
        raise ConfigError(
            f"--image_size must be >= 8 (0: {DEFAULT_IMAGE_SIZE}). Received: "
            f"image_size={image_size}"
        )
    if kind == "named" and image_size:
        raise ConfigError(
            f"--image_size applies to tfds:NAME and folder:PATH sources; {dataset} has its own "
            f"size {DATASETS[dataset].image_shape[:2]}. Drop the flag. Received: "
            f"image_size={image_size}"
        )


def dataset_label(dataset: str) -> str:
    """The dataset's part of a run folder name: oxford_flowers102 for tfds:oxford_flowers102,
    the folder's name for folder:PATH."""
    kind = source_kind(dataset)
    if kind == "folder":
        return os.path.basename(source_argument(dataset).rstrip("/"))
    return source_argument(dataset).replace("/", "-")
