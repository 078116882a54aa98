"""Dataset sources: folder:PATH, tfds:NAME, streamed Tiny ImageNet, --download.

An image folder and a Tiny ImageNet zip are written by the tests in their real layouts; a
tfds dataset is mocked (`tfds.testing.mock_data`) over real tfds metadata written here.
Streamed splits must give exactly the batches the same images give in memory (so resume
stays exact), without holding the split in the pipeline's graph. Every bad-data case fails
before training with its path and its fix, and `--download=auto` without network fails in
seconds with the missing-data instructions.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers.datasets import CLASSES, TRAIN_PER_CLASS, write_image_folder, write_tiny_imagenet_zip
from helpers.flags import parse

from mixmo_tf import data
from mixmo_tf.config import run_record
from mixmo_tf.config.datasets import dataset_spec
from mixmo_tf.data import downloads, sources, tfds_loading
from mixmo_tf.data.class_names import class_names
from mixmo_tf.data.folder import ImageFolderError
from mixmo_tf.data.streamed import ImageCache, ImageFiles
from mixmo_tf.training.run import train

DIGITS_SPEC = dataset_spec("digits")
FLOWERS_EXAMPLES = 8


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> str:
    return write_image_folder(tmp_path_factory.mktemp("pets"))


def _spec(dataset: str, image_size: int = 16, data_dir: str | None = None):
    return data.resolved_spec(dataset, image_size, data_dir)


# --------------------------------------------------------------------------- folder:PATH


def test_a_folder_source_reads_classes_labels_and_resized_images(image_folder):
    spec = _spec(f"folder:{image_folder}")
    assert spec.class_names == CLASSES and spec.num_classes == 3
    assert (spec.num_train, spec.num_test, spec.image_shape) == (15, 6, (16, 16, 3))
    assert spec.pad == 2  # 16 / 8
    images, labels = data.open_split(spec, "train")
    assert isinstance(images, ImageFiles) and len(images) == 15
    pixels, _ = data.load_split(spec, "train")
    assert pixels.shape == (15, 16, 16, 3) and pixels.dtype == np.uint8
    # A flat image stays flat when resized; its value says its class and index (JPEG: +-2).
    values = pixels.reshape(15, -1).astype(int)
    assert np.all(values.max(axis=1) - values.min(axis=1) <= 4)
    np.testing.assert_array_equal(np.round(values[:, 0] / 60), labels)


def test_flags_accept_sources_and_name_the_run_folder_after_them(image_folder):
    config = parse(f"--dataset=folder:{image_folder}/", "--image_size=24", "--download=never")
    assert config.model_dir.startswith(f"runs/{os.path.basename(image_folder)}_wrn28-10")
    assert parse("--dataset=tfds:oxford_flowers102").model_dir.startswith(
        "runs/oxford_flowers102_wrn"
    )
    relative = os.path.relpath(image_folder)
    assert parse(f"--dataset=folder:{relative}").dataset == f"folder:{image_folder}"
    with pytest.raises(ValueError, match="--image_size applies to tfds:NAME"):
        parse("--dataset=cifar10", "--image_size=24")
    with pytest.raises(ValueError, match="tfds:NAME.*folder:PATH.*Received: dataset='cifar1'"):
        parse("--dataset=cifar1")


def _break(root: str, case: str) -> str:
    """A copy of the good layout under `root` with one problem; returns the path it names."""
    write_image_folder(root, 2, 1)
    if case == "missing folder":
        return os.path.join(root, "nowhere")
    if case == "missing split":
        path = os.path.join(root, "test")
        for name in CLASSES:
            for entry in os.scandir(os.path.join(path, name)):
                os.remove(entry.path)
            os.rmdir(os.path.join(path, name))
        os.rmdir(path)
        return path
    if case == "empty class":
        path = os.path.join(root, "train", "dog")
        for name in os.listdir(path):
            os.remove(os.path.join(path, name))
        return path
    if case == "test class not in train":
        path = os.path.join(root, "test")
        os.makedirs(os.path.join(path, "yak"))
        return path
    path = os.path.join(root, "train", "emu", "0.jpg")  # "corrupt image"
    with open(path, "w") as stream:
        stream.write("<html>404 Not Found</html>")
    return path


@pytest.mark.parametrize(
    "case, fix",
    [
        ("missing folder", "Check the path"),
        ("missing split", "Create"),
        ("empty class", "add images of this class or delete the folder"),
        ("test class not in train", "Add their training images"),
        ("corrupt image", "replace or delete it"),
    ],
)
def test_bad_folders_fail_before_training_with_the_path_and_the_fix(tmp_path, case, fix):
    named = _break(str(tmp_path), case)
    dataset = "folder:" + (named if case == "missing folder" else str(tmp_path))
    with pytest.raises(ImageFolderError) as caught:
        data.prepare_source(dataset, None, "never")
        _spec(dataset)
    assert named in str(caught.value) and fix in str(caught.value)


@pytest.mark.parametrize("name", ["ca\nt", "ca\rt", "ca\tt", "ca\x1bt", "ca\u2028t"])
def test_a_class_folder_named_with_a_control_character_is_refused_by_name(tmp_path, name):
    """The exported class names are one per line: a newline in one would shift the others."""
    root = write_image_folder(str(tmp_path), 2, 1)
    for split in ("train", "test"):
        os.rename(os.path.join(root, split, "cat"), os.path.join(root, split, name))
    with pytest.raises(ImageFolderError) as caught:
        _spec(f"folder:{root}")
    message = str(caught.value)
    assert message == (
        f"The class folder {os.path.join(root, 'train', name)!r} has a control character "
        "(newline, tab, ...) in its name; the class names are exported one per line: rename "
        "the folder."
    )
    assert len(message.splitlines()) == 1


def test_class_names_refuse_a_name_that_would_break_the_exported_file():
    spec = dataclasses.replace(DIGITS_SPEC, class_names=("0", "1\n2", *"23456789"))
    with pytest.raises(ValueError, match=r"The class name '1\\n2' of digits holds a control"):
        class_names(spec)


def test_a_corrupt_body_behind_a_valid_header_is_named_at_its_first_read(tmp_path):
    root = write_image_folder(str(tmp_path), 2, 1)
    path = os.path.join(root, "train", "dog", "1.png")
    with open(path, "wb") as stream:
        stream.write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    spec = _spec(f"folder:{root}")  # the header passes the start-up check
    images, labels = data.open_split(spec, "train")
    with pytest.raises(ImageFolderError, match=f"{path} cannot be decoded.*replace or delete"):
        with data.naming_unreadable_files(images):
            list(data.eval_dataset(images, labels, spec, batch_size=4))


# ---------------------------------------------------------------- streaming and resume


def _batches(images, labels, spec, start: int, end: int, msda: bool = True):
    stream = data.TrainStream(8, 2, 2, steps_per_epoch=3, with_partners=msda, seed=5)
    dataset = data.train_dataset(images, labels, spec, stream, start, end)
    return [{key: value.numpy() for key, value in batch.items()} for batch in dataset]


def _assert_same_batches(first, second) -> None:
    assert len(first) == len(second)
    for one, other in zip(first, second):
        assert one.keys() == other.keys()
        for key in one:
            np.testing.assert_array_equal(one[key], other[key])


def test_streamed_files_give_the_in_memory_batches_and_resume_exactly(image_folder):
    spec = _spec(f"folder:{image_folder}")
    streamed, labels = data.open_split(spec, "train")
    in_memory, _ = data.load_split(spec, "train")
    full = _batches(streamed, labels, spec, 0, 5)
    _assert_same_batches(full, _batches(in_memory, labels, spec, 0, 5))
    _assert_same_batches(full[3:], _batches(streamed, labels, spec, 3, 5))  # resumed at step 3
    # The held-out validation slice of a streamed split is a lazy subset, not a copy.
    (kept, kept_labels), (held, _) = data.split_validation(streamed, labels, 4)
    assert isinstance(kept, ImageFiles) and (len(kept), len(held)) == (11, 4)
    reference, _ = data.split_validation(in_memory, labels, 4)
    np.testing.assert_array_equal(kept.numpy(), reference[0])
    evaluated = [b["images"].numpy() for b in data.eval_dataset(streamed, labels, spec, 4)]
    expected = [b["images"].numpy() for b in data.eval_dataset(in_memory, labels, spec, 4)]
    np.testing.assert_array_equal(np.concatenate(evaluated), np.concatenate(expected))


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tiny") / "tfds")
    os.makedirs(tfds_loading.manual_dir(data_dir))
    archive = os.path.join(tfds_loading.manual_dir(data_dir), "tiny-imagenet-200.zip")
    write_tiny_imagenet_zip(archive)
    return data_dir


def _graph_bytes(dataset: tf.data.Dataset) -> int:
    policy = tf.data.experimental.ExternalStatePolicy.WARN
    return len(dataset._as_serialized_graph(external_state_policy=policy).numpy())


def test_tiny_imagenet_streams_from_a_cache_without_holding_the_split(tiny_imagenet):
    spec = dataset_spec("tiny_imagenet")
    streamed, labels = data.open_split(spec, "train", tiny_imagenet)
    assert isinstance(streamed, ImageCache) and len(streamed) == 3 * TRAIN_PER_CLASS
    in_memory, again = data.load_split(spec, "train", tiny_imagenet)
    np.testing.assert_array_equal(again, labels)
    stream = data.TrainStream(4, 1, 2, steps_per_epoch=3, with_partners=False, seed=0)
    graphs = {
        name: _graph_bytes(data.train_dataset(images, labels, spec, stream, 0, 3))
        for name, images in (("streamed", streamed), ("in memory", in_memory))
    }
    # The in-memory pipeline embeds the split (147 kB) in its graph; the streamed one (22 kB
    # of ops, whatever the split's size) reads it from the cache.
    assert graphs["in memory"] > in_memory.nbytes > 4 * graphs["streamed"]
    full = _batches(streamed, labels, spec, 0, 4)
    _assert_same_batches(full, _batches(in_memory, labels, spec, 0, 4))
    _assert_same_batches(full[2:], _batches(streamed, labels, spec, 2, 4))


# --------------------------------------------------------------------------- training


def _train(tmp_path, *flags: str):
    config = parse(*flags, f"--model_dir={tmp_path / 'run'}", "--precision=float32", "--smoke")
    config = dataclasses.replace(config, epochs=1, eval_steps=1)
    train(config)
    return config


@pytest.mark.slow
def test_main_trains_on_an_image_folder_and_the_run_keeps_its_class_names(image_folder, tmp_path):
    config = _train(tmp_path, f"--dataset=folder:{image_folder}", "--image_size=16")
    assert os.path.exists(os.path.join(config.model_dir, "model.keras"))
    # Export and prediction read the spec the run recorded, not the data.
    recorded = run_record.recorded_config(config.model_dir)
    assert run_record.recorded_spec(config.model_dir) == _spec(f"folder:{image_folder}")
    assert recorded.spec == _spec(f"folder:{image_folder}")
    assert class_names(recorded.spec) == CLASSES


def test_a_resume_on_changed_data_is_refused(image_folder, tmp_path):
    spec = _spec(f"folder:{image_folder}")
    run_record.record_spec(spec, str(tmp_path))
    sources.check_unchanged(spec, str(tmp_path))  # the same data: fine
    grown = dataclasses.replace(spec, num_train=spec.num_train + 1)
    with pytest.raises(sources.DataSourceError, match="changed.*num_train.*another --model_dir"):
        sources.check_unchanged(grown, str(tmp_path))


def _write_flowers_metadata(data_dir: str, splits=("train", "test")) -> None:
    """Real tfds metadata of oxford_flowers102 (as `tfds build` writes it), tiny splits."""
    builder = tfds.builder("oxford_flowers102", data_dir=data_dir)
    infos = [
        tfds.core.SplitInfo(name=name, shard_lengths=[FLOWERS_EXAMPLES], num_bytes=0)
        for name in splits
    ]
    builder.info.set_splits(tfds.core.SplitDict(infos))
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)


@pytest.mark.slow
def test_main_trains_on_a_tfds_dataset_by_name(tmp_path):
    data_dir = str(tmp_path / "tfds")
    _write_flowers_metadata(data_dir)
    with tfds.testing.mock_data(num_examples=FLOWERS_EXAMPLES, data_dir=data_dir):
        config = _train(
            tmp_path,
            "--dataset=tfds:oxford_flowers102",
            f"--data_dir={data_dir}",
            "--image_size=16",
        )
        spec = run_record.recorded_config(config.model_dir).spec
        images, _ = data.open_split(spec, "test", data_dir)
    assert (spec.num_classes, spec.num_train, spec.image_shape) == (102, 8, (16, 16, 3))
    assert spec.class_names[0] == "pink primrose"
    assert isinstance(images, ImageCache) and images.shape == (8, 16, 16, 3)
    assert os.path.exists(os.path.join(config.model_dir, "model.keras"))


def test_a_tfds_dataset_without_a_test_split_names_its_splits(tmp_path):
    _write_flowers_metadata(str(tmp_path), splits=("train", "validation"))
    with pytest.raises(data.DataNotFoundError, match=r"no 'test' split.*\['train', 'validation'\]"):
        _spec("tfds:oxford_flowers102", 16, str(tmp_path))


def test_an_unknown_tfds_name_fails_with_the_catalog(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="tfds has no such dataset.*catalog"):
        data.prepare_source("tfds:no_such_flowers", str(tmp_path), "never")


# --------------------------------------------------------------------------- --download


@pytest.fixture
def no_network(monkeypatch) -> list:
    """An offline machine: connections hang (longer than the check waits) or fail, and any
    tfds download attempt is recorded and refused."""
    attempts = []

    def hang(address, timeout=None):
        time.sleep(12 if address[0].endswith("toronto.edu") else 0)
        raise OSError("Network is unreachable")

    def refuse(self, *args, **kwargs):
        attempts.append(args)
        raise AssertionError("tfds tried to download")

    monkeypatch.setattr(socket, "create_connection", hang)
    for method in ("download", "download_and_extract"):
        monkeypatch.setattr(tfds.download.DownloadManager, method, refuse)
    return attempts


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cifar10", "tfds:oxford_flowers102"])
def test_download_auto_without_network_fails_in_seconds_with_instructions(
    dataset, tmp_path, no_network
):
    start = time.monotonic()
    with pytest.raises(data.DataNotFoundError) as caught:
        data.prepare_source(dataset, str(tmp_path), "auto")
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert f"--data_dir={tmp_path}" in message and "did not answer within 3 s" in message
    if dataset == "cifar10":  # a named dataset's instructions: the manual folder, the archive
        assert os.path.join(str(tmp_path), "downloads", "manual") in message
        assert "cifar-10-binary.tar.gz" in message
    assert no_network == []


def test_download_modes_decide_without_or_with_the_check(monkeypatch):
    calls = []
    monkeypatch.setattr(downloads, "_connect", lambda host, port: calls.append((host, port)))
    assert not downloads.may_download("never", "https://example.org/x")
    assert downloads.may_download("always", "https://example.org/x") and calls == []
    assert downloads.may_download("auto", "http://example.org:8080/x")
    assert calls == [("example.org", 8080)]
