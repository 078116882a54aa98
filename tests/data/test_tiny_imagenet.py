"""Tiny ImageNet from a zip in the official layout, written by the test.

The archive (3 classes, 4 training JPEGs each, one of them grayscale, 6 validation images)
is prepared by the tfds builder (`mixmo_tf.data.tiny_imagenet`) from the manual folder; the
validation images become the test split with val_annotations.txt's labels; a broken archive
fails with its path and the fix; `main.py --dataset=tiny_imagenet --smoke` trains on it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers.datasets import TRAIN_PER_CLASS, VAL, WNIDS, write_tiny_imagenet_zip
from helpers.paths import REPO

from mixmo_tf import data
from mixmo_tf.config.datasets import dataset_spec
from mixmo_tf.data.tfds_loading import DataNotFoundError, manual_dir


def _data_dir(tmp_path, skip: str | None = None) -> str:
    data_dir = str(tmp_path / "tfds")
    os.makedirs(manual_dir(data_dir))
    write_tiny_imagenet_zip(os.path.join(manual_dir(data_dir), "tiny-imagenet-200.zip"), skip)
    return data_dir


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> str:
    data_dir = _data_dir(tmp_path_factory.mktemp("tiny"))
    data.ensure_prepared(dataset_spec("tiny_imagenet"), data_dir)
    return data_dir


def test_the_builder_prepares_train_and_the_labelled_validation_as_test(prepared):
    spec = dataset_spec("tiny_imagenet")
    images, labels = data.load_split(spec, "train", prepared)
    assert images.shape == (3 * TRAIN_PER_CLASS, 64, 64, 3) and images.dtype == np.uint8
    assert sorted(labels.tolist()) == sorted([0, 1, 2] * TRAIN_PER_CLASS)
    # Each image's value says its class (40 * label + i): labels follow the sorted wnids.
    np.testing.assert_array_equal(images[:, 0, 0, 0] // 40, labels)
    test_images, test_labels = data.load_split(spec, "test", prepared)
    expected = {200 + i: sorted(WNIDS).index(wnid) for i, (_, wnid) in enumerate(VAL)}
    assert {int(v): int(label) for v, label in zip(test_images[:, 0, 0, 0], test_labels)} == (
        expected
    )


def test_a_grayscale_jpeg_becomes_three_equal_channels(prepared):
    images, labels = data.load_split(dataset_spec("tiny_imagenet"), "train", prepared)
    (gray,) = [image for image in images if image[0, 0, 0] == 0]
    assert np.all(gray == gray[..., :1])


def test_an_archive_without_validation_labels_fails_with_path_and_fix(tmp_path):
    data_dir = _data_dir(tmp_path, skip="val_annotations")
    with pytest.raises(DataNotFoundError, match="val_annotations.txt is missing.*Download it"):
        data.ensure_prepared(dataset_spec("tiny_imagenet"), data_dir)


def test_a_corrupt_zip_fails_with_path_and_fix(tmp_path):
    data_dir = str(tmp_path)
    os.makedirs(manual_dir(data_dir))
    path = os.path.join(manual_dir(data_dir), "tiny-imagenet-200.zip")
    with open(path, "wb") as stream:
        stream.write(io.BytesIO(b"not a zip").getvalue())
    with pytest.raises(DataNotFoundError, match="corrupt.*cs231n"):
        data.ensure_prepared(dataset_spec("tiny_imagenet"), data_dir)


@pytest.mark.slow
def test_main_trains_a_smoke_run_on_the_archive(tmp_path):
    data_dir = _data_dir(tmp_path)
    model_dir = str(tmp_path / "run")
    completed = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "main.py"),
            "--dataset=tiny_imagenet",
            "--smoke",
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
            "--precision=float32",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert os.path.exists(os.path.join(model_dir + "_smoke", "model.keras"))
    assert os.path.isdir(os.path.join(data_dir, "tiny_imagenet"))
