"""Tests of `mixmo_tf.data`: offline CIFAR loading, the training stream, augmentation.

What these tests prove:

* Loading never waits on the network. Missing data fails in well under 10 s with a
  `DataNotFoundError` naming `--data_dir`, the manual-download folder and the archive, and no
  download is attempted. An official-format archive in `<data_dir>/downloads/manual` is
  prepared into a real tfds data_dir (cifar10 and cifar100): every written (image, label) pair
  comes back, the prepared data is read again after the archive and its extraction are
  deleted, and plain `tfds.load(..., download=False)` reads it too. A corrupt or foreign
  archive gives a `DataNotFoundError` saying so and what to do; a good archive placed
  afterwards is then prepared normally.
* tfds-shaped data (`tfds.testing.mock_data`) matches the `DatasetSpec` and feeds both the
  training and the evaluation pipeline.
* Batch repetition (docs/method.md §5): a batch holds B/b unique images, each exactly b times in
  every member's column; members' slot orders are independent random permutations; an epoch
  of floor(N * b / B) steps uses each image at most once, and epochs differ in order.
* Every batch is a function of (seed, step): the same seed gives the same batches, a run
  resumed at step s yields the batches of a run from 0, another seed gives other batches.
* Augmentation (docs/method.md §8): each output is a 32x32 window of the 4-pixel zero-padded
  image, flipped about half of the time for CIFAR and never for digits, drawn independently
  per slot and per member; normalisation uses the CIFAR mean and std.
* Input-MSDA partners have shapes (B, M, ...), carry their own source's label, are augmented
  and are drawn from the whole training set.
* The evaluation stream is in order, normalised only, complete, and cut by `num_batches`.
* The data functions give identical results eagerly and inside `tf.data.Dataset.map`.
* The digits dataset is a fixed, deterministic 1437/360 partition of scikit-learn's digits.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers.cifar_archive import write_cifar_archive

from mixmo_tf import data
from mixmo_tf.config import Config
from mixmo_tf.config.datasets import CIFAR_HOMEPAGE
from mixmo_tf.data import pipeline, tfds_loading

# The authors' mean (mixmo/augmentations/standard_augmentations.py), not its 4-decimal rounding.
CIFAR_MEAN = (0.4913725490196078, 0.4823529411764706, 0.4466666666666667)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR_SPEC = data.dataset_spec("cifar10")
DIGITS_SPEC = data.dataset_spec("digits")
PAD = 4
NUM_TRAIN_WRITTEN, NUM_TEST_WRITTEN = 30, 12


# --------------------------------------------------------------------------- helpers


def _random_images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def _normalize_reference(images: np.ndarray, mean=CIFAR_MEAN, std=CIFAR_STD) -> np.ndarray:
    return (images / 255.0 - np.array(mean)) / np.array(std)


def _denormalize(normalized: np.ndarray) -> np.ndarray:
    """Inverts CIFAR normalisation back to uint8, checking the values land on integers."""
    raw = (normalized * np.array(CIFAR_STD) + np.array(CIFAR_MEAN)) * 255.0
    assert np.abs(raw - np.round(raw)).max() < 1e-3, "not normalised with the CIFAR mean and std"
    return np.round(raw).astype(np.uint8)


def _crop_params(output: np.ndarray, image: np.ndarray) -> list[tuple[int, int, bool]]:
    """Every (row offset, column offset, flipped) whose zero-padded window is `output`."""
    padded = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, output.shape[:2], axis=(0, 1))
    windows = windows.transpose(0, 1, 3, 4, 2)  # (offset row, offset column, H, W, C)
    matches = []
    for flipped, candidate in ((False, output), (True, output[:, ::-1])):
        equal = (windows == candidate).all(axis=(2, 3, 4))
        matches += [(int(row), int(column), flipped) for row, column in zip(*np.nonzero(equal))]
    return matches


def _stream(num_examples: int, batch_repetitions: int = 4, num_members: int = 2, **overrides):
    """A B=64 stream whose epoch is floor(N * b / B) steps, the rule of Config."""
    stream = pipeline.TrainStream(
        batch_size=64,
        batch_repetitions=batch_repetitions,
        num_members=num_members,
        steps_per_epoch=num_examples * batch_repetitions // 64,
        with_partners=False,
        seed=0,
    )
    return dataclasses.replace(stream, **overrides)


def _collect(dataset: tf.data.Dataset) -> list[dict[str, np.ndarray]]:
    return [{key: value.numpy() for key, value in batch.items()} for batch in dataset]


def _archive_pairs(archive_path: str, name: str) -> dict[str, list[tuple[int, bytes]]]:
    """Sorted (label, HWC image bytes) of every record of an official CIFAR binary archive."""
    label_bytes = 1 if name == "cifar10" else 2  # cifar100 records: coarse label, fine label.
    pairs = {"train": [], "test": []}
    with tarfile.open(archive_path, "r:gz") as archive:
        for member in archive.getmembers():
            if not member.name.endswith(".bin"):
                continue
            split = "test" if "test" in os.path.basename(member.name) else "train"
            records = np.frombuffer(archive.extractfile(member).read(), np.uint8)
            records = records.reshape(-1, label_bytes + 32 * 32 * 3)
            images = records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels = records[:, label_bytes - 1]
            pairs[split] += [(int(label), image.tobytes()) for label, image in zip(labels, images)]
    return {split: sorted(split_pairs) for split, split_pairs in pairs.items()}


def _loaded_pairs(images: np.ndarray, labels: np.ndarray) -> list[tuple[int, bytes]]:
    return sorted((int(label), image.tobytes()) for image, label in zip(images, labels))


@pytest.fixture
def download_attempts(monkeypatch) -> list:
    """Records (and refuses) every tfds download; tests assert the list stays empty."""
    attempts = []

    def refuse(self, url_or_urls):
        attempts.append(url_or_urls)
        raise AssertionError(f"tfds tried to download {url_or_urls}")

    for method in ("download", "download_and_extract"):
        monkeypatch.setattr(tfds.download.DownloadManager, method, refuse)
    return attempts


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_data_fails_fast_with_instructions(name, tmp_path, download_attempts):
    spec = data.dataset_spec(name)
    start = time.monotonic()
    with pytest.raises(data.DataNotFoundError) as caught:
        data.load_split(spec, "train", str(tmp_path))
    # Far below the ~3.5 min tfds spends retrying a download with no network; the first call
    # of a process also imports tensorflow_datasets, which took 25 s on a loaded 2-core CI.
    assert time.monotonic() - start < 60
    message = str(caught.value)
    assert f"--data_dir={tmp_path}" in message
    assert os.path.join(str(tmp_path), "downloads", "manual") in message
    assert spec.archive_name in message
    assert download_attempts == []


def test_missing_data_without_data_dir_names_the_tfds_default(
    tmp_path, monkeypatch, download_attempts
):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match="--data_dir=") as caught:
        data.load_split(CIFAR_SPEC, "test", None)
    assert tfds_loading.manual_dir(str(tmp_path)) in str(caught.value)
    assert download_attempts == []


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_archive_in_manual_folder_is_prepared_and_read_back(name, tmp_path, download_attempts):
    spec = data.dataset_spec(name)
    data_dir = str(tmp_path)
    written = write_cifar_archive(
        tfds_loading.manual_dir(data_dir), name, NUM_TRAIN_WRITTEN, NUM_TEST_WRITTEN, seed=7
    )
    assert os.path.basename(written["path"]) == spec.archive_name
    expected_pairs = _archive_pairs(written["path"], name)
    loaded = {split: data.load_split(spec, split, data_dir) for split in ("train", "test")}

    for split, count in (("train", NUM_TRAIN_WRITTEN), ("test", NUM_TEST_WRITTEN)):
        images, labels = loaded[split]
        assert images.shape == (count, *spec.image_shape) and images.dtype == np.uint8
        assert labels.shape == (count,) and labels.dtype == np.int64
        np.testing.assert_array_equal(np.sort(labels), np.sort(written[split]))
        # Each image comes back with its own label, decoded from the archive's CHW layout.
        assert _loaded_pairs(images, labels) == expected_pairs[split]

    shutil.rmtree(os.path.join(data_dir, "downloads"))  # the archive and its extraction
    for split, (images, labels) in loaded.items():
        again = data.load_split(spec, split, data_dir)
        direct = tfds.as_numpy(
            tfds.load(
                name,
                split=split,
                data_dir=data_dir,
                download=False,
                as_supervised=True,
                batch_size=-1,
            )
        )
        for reread_images, reread_labels in (again, direct):
            np.testing.assert_array_equal(reread_images, images)
            np.testing.assert_array_equal(reread_labels, labels)
    assert download_attempts == []


def _truncate(path: str) -> None:
    with open(path, "rb") as archive:
        payload = archive.read()
    with open(path, "wb") as archive:
        archive.write(payload[: len(payload) // 2])


def _overwrite_with_garbage(path: str) -> None:
    with open(path, "wb") as archive:
        archive.write(np.random.default_rng(0).bytes(5000))


def _overwrite_with_foreign_tar(path: str) -> None:
    readme = os.path.join(os.path.dirname(path), "README.txt")
    with open(readme, "w") as text:
        text.write("not CIFAR")
    with tarfile.open(path, "w:gz") as archive:
        archive.add(readme, arcname="README.txt")


@pytest.mark.parametrize(
    "spoil, expected_phrases",
    [
        (_truncate, ["corrupt or incomplete", "Download it again"]),
        (_overwrite_with_garbage, ["corrupt or incomplete", "Download it again"]),
        (_overwrite_with_foreign_tar, ["Could not prepare", "Is it the official binary archive"]),
    ],
    ids=["truncated", "garbage", "not_cifar"],
)
def test_bad_archive_is_reported_and_a_good_one_still_works(
    spoil, expected_phrases, tmp_path, download_attempts
):
    data_dir = str(tmp_path)
    manual = tfds_loading.manual_dir(data_dir)
    spoil(write_cifar_archive(manual, "cifar10", NUM_TRAIN_WRITTEN, NUM_TEST_WRITTEN)["path"])
    start = time.monotonic()
    with pytest.raises(data.DataNotFoundError) as caught:
        data.load_split(CIFAR_SPEC, "train", data_dir)
    assert time.monotonic() - start < 10
    message = str(caught.value)
    archive_path = os.path.join(manual, CIFAR_SPEC.archive_name)
    for phrase in [*expected_phrases, archive_path, CIFAR_HOMEPAGE]:
        assert phrase in message

    # Following the advice (a good archive in the same place) recovers without manual cleanup.
    written = write_cifar_archive(manual, "cifar10", NUM_TRAIN_WRITTEN, NUM_TEST_WRITTEN, seed=1)
    _, labels = data.load_split(CIFAR_SPEC, "train", data_dir)
    np.testing.assert_array_equal(np.sort(labels), np.sort(written["train"]))
    assert download_attempts == []


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_pipelines_consume_tfds_shaped_data(name):
    spec = data.dataset_spec(name)
    num_examples = 48
    with tfds.testing.mock_data(num_examples=num_examples):
        features = tfds.builder(name).info.features
        dataset = tfds.load(name, split="train", as_supervised=True)
        # batch_size=-1 aborts the process under mock_data (tfds 4.9.10), so batch explicitly.
        images, labels = tfds.as_numpy(dataset.batch(num_examples).get_single_element())
    assert features["label"].num_classes == spec.num_classes
    assert features["image"].shape == spec.image_shape
    assert images.shape == (num_examples, *spec.image_shape) and images.dtype == np.uint8

    stream = _stream(num_examples, with_partners=True)
    batch = _collect(data.train_dataset(images, labels, spec, stream, 0, 1))[0]
    for key in ("images", "partner_images"):
        assert batch[key].shape == (64, 2, *spec.image_shape) and batch[key].dtype == np.float32
    assert set(np.unique(batch["labels"])) <= set(labels)
    evaluated = _collect(data.eval_dataset(images, labels, spec, batch_size=32))
    np.testing.assert_array_equal(np.concatenate([b["labels"] for b in evaluated]), labels)
    evaluated_images = np.concatenate([b["images"] for b in evaluated])
    np.testing.assert_allclose(evaluated_images, _normalize_reference(images), atol=1e-5)


# --------------------------------------------------------------------------- training stream


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"dataset": "cifar10"}, 3125),
        ({"dataset": "cifar100"}, 3125),
        ({"dataset": "cifar100", "batch_repetitions": 1}, 781),
        ({"dataset": "cifar10", "num_members": 1, "mixing": "none", "batch_repetitions": 1}, 781),
        ({"dataset": "digits"}, 1437 * 4 // 64),
        ({"dataset": "cifar10", "steps_per_epoch": 7}, 7),
    ],
)
def test_steps_per_epoch_is_floor_n_b_over_batch_size(overrides, expected):
    assert Config(**overrides).derived_steps_per_epoch == expected


@pytest.mark.parametrize("batch_repetitions, num_members", [(4, 2), (2, 3)])
def test_batch_repetition_and_independent_member_permutations(batch_repetitions, num_members):
    num_examples, batch_size, num_steps = 400, 64, 100
    stream = _stream(num_examples, batch_repetitions, num_members)
    unique = batch_size // batch_repetitions
    indices = np.stack(
        [
            pipeline.train_batch_indices(step, num_examples, stream).numpy()
            for step in range(num_steps)
        ]
    )
    assert indices.shape == (num_steps, batch_size, num_members)

    for batch in indices:
        images_in_batch = np.unique(batch)
        assert len(images_in_batch) == unique
        for member in range(num_members):
            values, counts = np.unique(batch[:, member], return_counts=True)
            np.testing.assert_array_equal(values, images_in_batch)
            assert set(counts) == {batch_repetitions}
        assert not any(np.array_equal(batch[:, 0], batch[:, m]) for m in range(1, num_members))

    epochs = []
    for epoch in range(num_steps // stream.steps_per_epoch):
        steps = indices[epoch * stream.steps_per_epoch : (epoch + 1) * stream.steps_per_epoch]
        used = np.concatenate([np.unique(batch) for batch in steps])
        assert len(np.unique(used)) == len(used) == stream.steps_per_epoch * unique
        epochs.append(used)
    assert len(epochs) >= 2
    assert not any(np.array_equal(epochs[0], other) for other in epochs[1:])

    def assert_rate(matches: np.ndarray, expected: float) -> None:
        tolerance = 5 * np.sqrt(expected * (1 - expected) / matches.size)
        assert abs(matches.mean() - expected) < tolerance, (matches.mean(), expected)

    # Independent permutations: a slot holds the same image in two members with chance b / B.
    for first in range(num_members):
        for second in range(first + 1, num_members):
            assert_rate(
                indices[:, :, first] == indices[:, :, second], batch_repetitions / batch_size
            )
        # Within a member, neighbouring slots repeat an image with chance (b - 1) / (B - 1).
        column = indices[:, :, first]
        assert_rate(column[:, 1:] == column[:, :-1], (batch_repetitions - 1) / (batch_size - 1))


def test_same_seed_same_batches_and_resume_matches_a_full_run():
    num_examples, end_step, resume_step = 100, 14, 8  # 6 steps per epoch: crosses two epochs
    images = _random_images(num_examples, seed=1)
    labels = np.arange(num_examples)
    stream = _stream(num_examples, with_partners=True)

    def run(start_step: int, seed: int = 0):
        seeded = dataclasses.replace(stream, seed=seed)
        return _collect(
            data.train_dataset(images, labels, CIFAR_SPEC, seeded, start_step, end_step)
        )

    full, again, resumed, other = run(0), run(0), run(resume_step), run(0, seed=1)
    assert len(resumed) == end_step - resume_step
    for step in range(end_step):
        for key in full[step]:
            np.testing.assert_array_equal(again[step][key], full[step][key])
            if step >= resume_step:
                np.testing.assert_array_equal(resumed[step - resume_step][key], full[step][key])
            assert not np.array_equal(other[step][key], full[step][key]), (step, key)


# --------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize(
    "spec, flip_rate_range",
    [(CIFAR_SPEC, (0.4, 0.6)), (DIGITS_SPEC, (0.0, 0.0))],
    ids=["cifar", "digits"],
)
def test_augment_is_a_window_of_the_zero_padded_image(spec, flip_rate_range):
    images = _random_images(400, seed=2)
    outputs = pipeline.augment(tf.constant(images), tf.constant([3, 4], tf.int64), spec).numpy()
    assert outputs.shape == images.shape and outputs.dtype == np.uint8
    params = []
    for output, image in zip(outputs, images):
        matches = _crop_params(output, image)
        assert len(matches) == 1
        params += matches
    rows, columns, flips = (np.array(values) for values in zip(*params))
    assert set(rows) == set(columns) == set(range(2 * PAD + 1))
    assert flip_rate_range[0] <= flips.mean() <= flip_rate_range[1]


def test_training_images_are_augmented_per_slot_and_member_then_normalised():
    num_examples = 400
    images = _random_images(num_examples, seed=3)
    labels = np.arange(num_examples)  # a label names its source example
    batch = _collect(data.train_dataset(images, labels, CIFAR_SPEC, _stream(num_examples), 0, 1))[0]
    assert batch["images"].shape == (64, 2, 32, 32, 3) and batch["images"].dtype == np.float32
    assert batch["labels"].shape == (64, 2) and batch["labels"].dtype == np.int32

    params = np.empty((64, 2), dtype=object)
    per_image = collections.defaultdict(set)
    for slot in range(64):
        for member in range(2):
            source = batch["labels"][slot, member]
            (param,) = _crop_params(_denormalize(batch["images"][slot, member]), images[source])
            params[slot, member] = param
            per_image[source].add(param)
    # Per-image augmentation would give 1 distinct crop per image, per member 2, per slot 4;
    # independent draws give about 7.8 of the b * M = 8 copies distinct.
    assert np.mean([len(crops) for crops in per_image.values()]) > 6.5
    assert np.mean(params[:, 0] == params[:, 1]) < 0.1
    flip_rate = np.mean([flipped for _, _, flipped in params.ravel()])
    assert 0.3 < flip_rate < 0.7


@pytest.mark.parametrize(
    "name, mean, std",
    [
        ("cifar10", CIFAR_MEAN, CIFAR_STD),
        ("cifar100", CIFAR_MEAN, CIFAR_STD),
        ("digits", (0.5,) * 3, (0.5,) * 3),
    ],
)
def test_normalize_uses_the_dataset_mean_and_std(name, mean, std):
    spec = data.dataset_spec(name)
    assert (spec.mean, spec.std) == (mean, std)
    images = _random_images(4, seed=4)
    normalized = data.normalize(tf.constant(images), spec).numpy()
    assert normalized.dtype == np.float32
    np.testing.assert_allclose(normalized, _normalize_reference(images, mean, std), atol=1e-5)


def test_partners_have_their_own_labels_and_come_from_the_whole_set():
    num_examples, num_steps = 400, 20
    index = np.arange(num_examples)
    # Each image is one colour encoding its index; channel 2 shows where zero padding went.
    images = np.zeros((num_examples, 32, 32, 3), np.uint8)
    images[..., 0] = (index % 256)[:, None, None]
    images[..., 1] = (index // 256)[:, None, None]
    images[..., 2] = 200
    labels = np.random.default_rng(5).integers(0, 10, num_examples)
    stream = _stream(num_examples, with_partners=True)
    batches = _collect(data.train_dataset(images, labels, CIFAR_SPEC, stream, 0, num_steps))

    partner_sources, outside_batch, padded = [], [], []
    for batch in batches:
        assert batch["partner_images"].shape == (64, 2, 32, 32, 3)
        assert batch["partner_images"].dtype == np.float32
        assert (
            batch["partner_labels"].shape == (64, 2) and batch["partner_labels"].dtype == np.int32
        )
        sources = {}
        for key in ("images", "partner_images"):
            raw = _denormalize(batch[key])
            centre = raw[:, :, 16, 16].astype(np.int64)  # never padding, whatever the crop
            assert (centre[..., 2] == 200).all()
            sources[key] = centre[..., 0] + 256 * centre[..., 1]
            padded.append((raw[..., 2] == 0).any(axis=(2, 3)))
        np.testing.assert_array_equal(batch["labels"], labels[sources["images"]])
        np.testing.assert_array_equal(batch["partner_labels"], labels[sources["partner_images"]])
        partner_sources.append(sources["partner_images"].ravel())
        outside_batch.append(~np.isin(sources["partner_images"], sources["images"]))
    # 2560 uniform draws over 400 examples cover ~99.8% of them; 96% fall outside the batch.
    assert len(np.unique(np.concatenate(partner_sources))) > 0.9 * num_examples
    assert np.concatenate(outside_batch).mean() > 0.85
    # Only the centred crop (1 of 81) shows no zero padding.
    assert np.concatenate(padded).mean() > 0.9

    plain = _collect(data.train_dataset(images, labels, CIFAR_SPEC, _stream(num_examples), 0, 1))[0]
    assert set(plain) == {"images", "labels"}


# --------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("num_batches, sizes", [(0, [32, 32, 6]), (2, [32, 32]), (5, [32, 32, 6])])
def test_eval_dataset_is_in_order_and_normalised_only(num_batches, sizes):
    images = _random_images(70, seed=6)
    labels = np.random.default_rng(6).integers(0, 10, 70)
    batches = _collect(data.eval_dataset(images, labels, CIFAR_SPEC, 32, num_batches))
    assert [len(batch["labels"]) for batch in batches] == sizes
    count = sum(sizes)
    evaluated_images = np.concatenate([batch["images"] for batch in batches])
    evaluated_labels = np.concatenate([batch["labels"] for batch in batches])
    assert evaluated_images.dtype == np.float32 and evaluated_labels.dtype == np.int32
    np.testing.assert_array_equal(evaluated_labels, labels[:count])
    np.testing.assert_allclose(evaluated_images, _normalize_reference(images[:count]), atol=1e-5)


# --------------------------------------------------------------------------- eager vs tf.data


_INDEX_STREAM = _stream(400, batch_repetitions=2, num_members=3)
_SAMPLE_IMAGES = _random_images(16, seed=7)


def _augmenter(spec):
    return lambda images: pipeline.augment(images, tf.constant([5, 6], tf.int64), spec)


@pytest.mark.parametrize(
    "function, value",
    [
        (_augmenter(CIFAR_SPEC), _SAMPLE_IMAGES),
        (_augmenter(DIGITS_SPEC), _SAMPLE_IMAGES),
        (lambda images: data.normalize(images, CIFAR_SPEC), _SAMPLE_IMAGES),
        (lambda step: pipeline.train_batch_indices(step, 400, _INDEX_STREAM), np.int64(37)),
    ],
    ids=["augment_cifar", "augment_digits", "normalize", "train_batch_indices"],
)
def test_data_functions_agree_eagerly_and_inside_tf_data_map(function, value):
    eager = function(tf.constant(value)).numpy()
    mapped = tf.data.Dataset.from_tensors(value).map(function).get_single_element().numpy()
    np.testing.assert_array_equal(eager, mapped)


def test_train_dataset_labels_follow_the_eager_batch_indices():
    num_examples = 400
    labels = np.arange(num_examples)
    images = _random_images(num_examples, 8)
    batches = _collect(data.train_dataset(images, labels, CIFAR_SPEC, _INDEX_STREAM, 10, 16))
    for step, batch in zip(range(10, 16), batches):
        eager = pipeline.train_batch_indices(step, num_examples, _INDEX_STREAM)
        np.testing.assert_array_equal(batch["labels"], eager)


# --------------------------------------------------------------------------- digits


def test_digits_is_a_fixed_deterministic_partition_of_scikit_learn_digits():
    from sklearn.datasets import load_digits

    splits = {split: data.load_split(DIGITS_SPEC, split) for split in ("train", "test")}
    for split, count in (("train", 1437), ("test", 360)):
        images, labels = splits[split]
        assert images.shape == (count, 32, 32, 3) and images.dtype == np.uint8
        assert labels.shape == (count,) and labels.dtype == np.int64
        assert set(labels) == set(range(10))
        again_images, again_labels = data.load_split(DIGITS_SPEC, split)
        np.testing.assert_array_equal(again_images, images)
        np.testing.assert_array_equal(again_labels, labels)
        # 8x8 pixels replicated into 4x4 blocks, the same in every channel.
        blocks = np.repeat(np.repeat(images[:, ::4, ::4, :1], 4, axis=1), 4, axis=2)
        np.testing.assert_array_equal(images, np.broadcast_to(blocks, images.shape))
    assert (DIGITS_SPEC.num_train, DIGITS_SPEC.num_test, DIGITS_SPEC.flip) == (1437, 360, False)

    # Train and test together are every scikit-learn digit exactly once: disjoint and complete.
    digits = load_digits()
    small = np.round(digits.images / 16.0 * 255.0).astype(np.uint8)
    expected = _loaded_pairs(small, digits.target)
    combined = [
        pair
        for images, labels in splits.values()
        for pair in _loaded_pairs(images[:, ::4, ::4, 0], labels)
    ]
    assert sorted(combined) == expected
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.load_split(DIGITS_SPEC, "validation")
