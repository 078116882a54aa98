"""What the library knows about each dataset: sizes, classes, normalisation, augmentation."""

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
