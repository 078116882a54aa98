"""Tiny ImageNet as a tensorflow-datasets builder over the official archive (docs/method.md §8).

`TinyImagenet` (tfds name "tiny_imagenet") reads `tiny-imagenet-200.zip` from tfds'
manual-download folder (`<data_dir>/downloads/manual/`) and writes the prepared dataset into
`<data_dir>/tiny_imagenet/`, after which `tfds.load("tiny_imagenet", download=False)` reads
it like any tfds dataset. Splits: "train" (100,000 images, `train/<wnid>/images/*.JPEG`) and
"test", the 10,000 validation images labelled by val/val_annotations.txt, which the paper
(and the authors' code) use as the test set; the archive's unlabelled test/ folder is unused.
Labels index the sorted wnids of wnids.txt. A few images of the archive are grayscale: they
are decoded to 3 channels.
"""

from __future__ import annotations

import os
import zipfile

import tensorflow as tf
import tensorflow_datasets as tfds

from mixmo_tf.config.errors import MissingFileError, UnusableFileError

ARCHIVE_NAME = "tiny-imagenet-200.zip"
HOMEPAGE = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
NUM_CLASSES = 200
IMAGE_SHAPE = (64, 64, 3)
_ROOT = "tiny-imagenet-200"


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
    """Tiny ImageNet 200 from the official zip, placed by hand in the manual folder."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Train split and the labelled validation images as test."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {ARCHIVE_NAME} from {HOMEPAGE} and place it in the manual folder "
        "(<data_dir>/downloads/manual/)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=IMAGE_SHAPE),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=HOMEPAGE,
        )

    def _split_generators(self, dl_manager):
        archive = os.path.join(dl_manager.manual_dir, ARCHIVE_NAME)
        root = os.path.join(os.fspath(dl_manager.extract(archive)), _ROOT)
        wnids = read_wnids(root)
        return {
            "train": self._generate_examples(train_files(root, wnids)),
            "test": self._generate_examples(test_files(root, wnids)),
        }

    def _generate_examples(self, files):
        for path, label in files:
            yield os.path.basename(path), {"image": read_rgb(path), "label": label}


def _require(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise MissingFileError(
            f"{path} is missing: the archive is not the official {ARCHIVE_NAME} ({what}). "
            f"Download it again from {HOMEPAGE}."
        )


def read_wnids(root: str) -> dict[str, int]:
    """wnid -> label, the sorted order of wnids.txt."""
    path = os.path.join(root, "wnids.txt")
    _require(path, "the class list")
    with open(path) as stream:
        wnids = sorted(line.strip() for line in stream if line.strip())
    if not wnids or len(wnids) > NUM_CLASSES:
        raise UnusableFileError(
            f"{path} lists {len(wnids)} classes; Tiny ImageNet has {NUM_CLASSES}."
        )
    return {wnid: label for label, wnid in enumerate(wnids)}


def train_files(root: str, wnids: dict[str, int]) -> list[tuple[str, int]]:
    """(path, label) of `train/<wnid>/images/*.JPEG`, every class non-empty."""
    files = []
    for wnid, label in wnids.items():
        folder = os.path.join(root, "train", wnid, "images")
        _require(folder, f"training images of {wnid}")
        images = sorted(name for name in os.listdir(folder) if name.endswith(".JPEG"))
        if not images:
            raise MissingFileError(f"{folder} holds no .JPEG image: the archive is incomplete.")
        files.extend((os.path.join(folder, name), label) for name in images)
    return files


def test_files(root: str, wnids: dict[str, int]) -> list[tuple[str, int]]:
    """(path, label) of the validation images listed in val/val_annotations.txt."""
    annotations = os.path.join(root, "val", "val_annotations.txt")
    _require(annotations, "the validation labels")
    files = []
    with open(annotations) as stream:
        for line in stream:
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in wnids:
                raise UnusableFileError(f"{annotations}: unreadable line {line.strip()!r}.")
            path = os.path.join(root, "val", "images", fields[0])
            _require(path, "a validation image")
            files.append((path, wnids[fields[1]]))
    return files


def read_rgb(path: str):
    """The image at `path` as uint8 `(64, 64, 3)` (grayscale JPEGs expanded to RGB)."""
    try:
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3).numpy()
    except tf.errors.OpError as error:
        raise UnusableFileError(f"{path} is not a readable JPEG ({error.message}).") from error
    if image.shape != IMAGE_SHAPE:
        raise UnusableFileError(f"{path} is {image.shape[0]}x{image.shape[1]}, not 64x64.")
    return image


def check_archive(path: str) -> None:
    """Raises UnusableFileError unless `path` is a readable zip holding tiny-imagenet-200/."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise UnusableFileError(f"{path} is not a readable zip ({error}).") from error
    if not any(name.startswith(f"{_ROOT}/") for name in names):
        raise UnusableFileError(f"{path} holds no {_ROOT}/ folder.")
