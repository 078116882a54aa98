"""The extra test sets of an evaluation: corrupted CIFAR and out-of-distribution images.

CIFAR-10-C comes through tfds (`cifar10_corrupted/<corruption>_<severity>`, prepared
offline like CIFAR: never downloaded here). CIFAR-100-C has no tfds builder; it is read
from the official release folder (Hendrycks & Dietterich 2019): one `<corruption>.npy` per
corruption holding the 10,000 test images at severity 1, then 2, ... 5 (50,000 images
`(50000, 32, 32, 3)` uint8), and `labels.npy` with the matching 50,000 labels.
"""

from __future__ import annotations

import os

import numpy as np

from mixmo_tf.data import DataNotFoundError
from mixmo_tf.data.tfds_loading import default_data_dir
from mixmo_tf.evaluation.options import EvaluationOptions

# The 15 benchmark corruptions, then the 4 extra ones: (tfds name, release file stem).
CORRUPTIONS = (
    ("gaussian_noise", "gaussian_noise"),
    ("shot_noise", "shot_noise"),
    ("impulse_noise", "impulse_noise"),
    ("defocus_blur", "defocus_blur"),
    ("frosted_glass_blur", "glass_blur"),
    ("motion_blur", "motion_blur"),
    ("zoom_blur", "zoom_blur"),
    ("snow", "snow"),
    ("frost", "frost"),
    ("fog", "fog"),
    ("brightness", "brightness"),
    ("contrast", "contrast"),
    ("elastic", "elastic_transform"),
    ("pixelate", "pixelate"),
    ("jpeg_compression", "jpeg_compression"),
    ("gaussian_blur", "gaussian_blur"),
    ("saturate", "saturate"),
    ("spatter", "spatter"),
    ("speckle_noise", "speckle_noise"),
)
SEVERITIES = (1, 2, 3, 4, 5)
CIFAR100_C_FOLDER = "CIFAR-100-C"
_RELEASES = "https://zenodo.org/record/3555552 (CIFAR-100-C), https://zenodo.org/record/2535967"


def load_tfds_test(name: str, data_dir: str | None, missing: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the prepared tfds dataset `name`'s test split, never downloading.

    Raises:
        DataNotFoundError: not prepared in `data_dir`; the message ends with `missing`.
    """
    import tensorflow_datasets as tfds

    data_dir = data_dir or default_data_dir()
    try:
        dataset = tfds.load(
            name, split="test", data_dir=data_dir, download=False, as_supervised=True
        )
    except Exception as error:  # tfds raises AssertionError and others for missing data.
        raise DataNotFoundError(
            f"{name} is not prepared in {data_dir} ({error}). {missing}"
        ) from error
    images, labels = [], []
    for image_batch, label_batch in tfds.as_numpy(dataset.batch(1024)):
        images.append(image_batch)
        labels.append(label_batch)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def cifar10_c(corruption: str, severity: int, data_dir: str | None):
    """CIFAR-10-C test images and labels of one corruption and severity (tfds)."""
    return load_tfds_test(
        f"cifar10_corrupted/{corruption}_{severity}",
        data_dir,
        "Prepare it on a machine with network (`tfds build cifar10_corrupted "
        "--data_dir=DIR`, all 95 configs) and pass --corruptions_dir=DIR.",
    )


def cifar100_c(folder: str, stem: str, severity: int):
    """CIFAR-100-C test images and labels of one corruption and severity (release folder)."""
    images_path = os.path.join(folder, f"{stem}.npy")
    labels_path = os.path.join(folder, "labels.npy")
    for path in (images_path, labels_path):
        if not os.path.exists(path):
            raise DataNotFoundError(
                f"{path} does not exist. --corruptions_dir must be the official CIFAR-100-C "
                f"folder: <corruption>.npy for the 19 corruptions "
                f"({', '.join(stem for _, stem in CORRUPTIONS)}), each (50000, 32, 32, 3) uint8 "
                f"= 5 severities x 10,000 images, and labels.npy (50000,). Download: {_RELEASES}."
            )
    images = np.load(images_path, mmap_mode="r")
    labels = np.load(labels_path, mmap_mode="r")
    per_severity = len(labels) // len(SEVERITIES)
    if len(images) != len(labels) or per_severity * len(SEVERITIES) != len(labels):
        raise DataNotFoundError(
            f"{images_path} holds {len(images)} images and labels.npy {len(labels)} labels; the "
            f"release has 5 severities x the same number of images in each. Download it again."
        )
    chosen = slice((severity - 1) * per_severity, severity * per_severity)
    return np.asarray(images[chosen]), np.asarray(labels[chosen]).astype(np.int64)


def corrupted_sets(dataset: str, corruptions_dir: str | None, data_dir: str | None):
    """Yields (corruption, severity, images, labels) for the 19 x 5 corrupted test sets.

    Raises:
        OptionError: `dataset` has no corrupted release.
        DataNotFoundError: the release is missing, naming the expected layout.
    """
    EvaluationOptions(corruptions=True).check(dataset)
    if dataset == "cifar100":
        folder = corruptions_dir or os.path.join(data_dir or default_data_dir(), CIFAR100_C_FOLDER)
    for name, stem in CORRUPTIONS:
        for severity in SEVERITIES:
            if dataset == "cifar10":
                images, labels = cifar10_c(name, severity, corruptions_dir or data_dir)
            else:
                images, labels = cifar100_c(folder, stem, severity)
            yield name, severity, images, labels


def ood_test_set(name: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The test split of the tfds dataset `name` (e.g. svhn_cropped) as OOD images."""
    return load_tfds_test(
        name,
        data_dir,
        f"Prepare it on a machine with network (`tfds build {name} --data_dir=DIR`) and pass "
        "--data_dir=DIR.",
    )
