"""What the library knows about each dataset: sizes, classes, normalisation, augmentation
(imports no TensorFlow).

The named datasets (`DATASETS`) have a fixed spec. A tfds or folder source
(`mixmo_tf.config.dataset_names`) gets its sizes and classes from its data
(`mixmo_tf.data.resolved_spec` reads them) and the rest from `source_spec`; the Config of a
run carries that spec (`Config.dataset_spec`).

Choices for the new sources (the paper has none; this project's, not the authors'):
mean = std = 0.5 per channel (inputs in [-1, 1]), as the authors use for Tiny ImageNet; it
assumes nothing about the images' statistics, and the first BatchNorm adapts
anyway. Horizontal flips on. Crop padding = image size / 8, CIFAR's 4 pixels at 32x32.
"""

from __future__ import annotations

import dataclasses

CIFAR_HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static facts of a dataset.

    Attributes:
        name: the `--dataset` value.
        num_classes: number of labels.
        num_train: training examples (sets steps per epoch and the warm-up length).
        num_test: test examples.
        image_shape: `(H, W, C)`.
        mean, std: per-channel normalisation of images scaled to [0, 1].
        flip: whether random horizontal flips are a valid augmentation.
        pad: zero padding (pixels) of the random crop.
        archive_name: official archive tfds reads from its manual-download folder, if any.
        homepage: where that archive is downloaded from.
        class_names: the label names, in label order, of sources that carry them (tfds info,
            folder names); empty for the named datasets (`mixmo_tf.data.class_names`).
    """

    name: str
    num_classes: int
    num_train: int
    num_test: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool = True
    pad: int = 4
    archive_name: str | None = None
    homepage: str = CIFAR_HOMEPAGE
    class_names: tuple[str, ...] = ()


# The authors' CIFAR mean, (125.3, 123.0, 113.9) / 255 (mixmo/augmentations/
# standard_augmentations.py); the spec's (0.4914, 0.4824, 0.4467) rounds it to 4 decimals.
_CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
_CIFAR_STD = (0.2023, 0.1994, 0.2010)

DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10",
        10,
        50_000,
        10_000,
        (32, 32, 3),
        _CIFAR_MEAN,
        _CIFAR_STD,
        archive_name="cifar-10-binary.tar.gz",
    ),
    "cifar100": DatasetSpec(
        "cifar100",
        100,
        50_000,
        10_000,
        (32, 32, 3),
        _CIFAR_MEAN,
        _CIFAR_STD,
        archive_name="cifar-100-binary.tar.gz",
    ),
    # scikit-learn's bundled 8x8 digits, upsampled to 32x32: a real learning signal that
    # needs no download. Flips would turn digits into other symbols, so none.
    "digits": DatasetSpec(
        "digits",
        10,
        1_437,
        360,
        (32, 32, 3),
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        flip=False,
    ),
    # Tiny ImageNet (docs/method.md §8): 200 classes, the 10k val images are the test split.
    "tiny_imagenet": DatasetSpec(
        "tiny_imagenet",
        200,
        100_000,
        10_000,
        (64, 64, 3),
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        archive_name="tiny-imagenet-200.zip",
        homepage="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of `name`, or a ValueError listing the known datasets."""
    if name not in DATASETS:
        raise ValueError(f"--dataset must be one of {sorted(DATASETS)}. Received: dataset={name!r}")
    return DATASETS[name]


# --image_size=0 gives tfds and folder sources this size (Tiny ImageNet's).
DEFAULT_IMAGE_SIZE = 64
# Inputs in [-1, 1]; see the module docstring.
SOURCE_MEAN = SOURCE_STD = (0.5, 0.5, 0.5)
# The random crop's zero padding per side: CIFAR's 4 pixels at 32x32, scaled with the size.
PADDING_FRACTION = 8


def source_spec(
    dataset: str,
    image_size: int,
    num_classes: int,
    num_train: int,
    num_test: int,
    class_names: tuple[str, ...],
    homepage: str = "",
) -> DatasetSpec:
    """The spec of a tfds or folder source with the module's normalisation and augmentation."""
    size = image_size or DEFAULT_IMAGE_SIZE
    return DatasetSpec(
        dataset,
        num_classes,
        num_train,
        num_test,
        (size, size, 3),
        SOURCE_MEAN,
        SOURCE_STD,
        pad=max(1, size // PADDING_FRACTION),
        homepage=homepage,
        class_names=class_names,
    )


def spec_from_json(fields: dict) -> DatasetSpec:
    """The spec whose `dataclasses.asdict` was written as JSON (its tuples read as lists).

    Raises:
        TypeError: `fields` are not a spec's.
    """
    return DatasetSpec(
        **{key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()}
    )
