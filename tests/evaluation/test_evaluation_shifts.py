"""Corrupted and out-of-distribution test sets, read from files in the official layouts.

CIFAR-100-C is a folder of .npy files written here in the release's layout; CIFAR-10-C and
SVHN come through tfds, mocked by `tfds.testing.mock_data` (which checks that the
requested configs exist). A stand-in predictor, exact by construction, makes the expected
metrics known: it is right on severities 1-2 and wrong on 3-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mixmo_tf.data import DataNotFoundError
from mixmo_tf.evaluation import datasets, plots, report, shifts
from mixmo_tf.evaluation.options import EvaluationOptions, OptionError

PER_SEVERITY = 6
CLASSES = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_cifar100_c(folder, stems=None) -> None:
    """The release layout: <corruption>.npy (5 x N images, severity-major), labels.npy."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 5 * PER_SEVERITY
    severity = np.repeat(np.arange(1, 6), PER_SEVERITY).astype(np.uint8)
    for index, (_, stem) in enumerate(datasets.CORRUPTIONS):
        if stems is not None and stem not in stems:
            continue
        images = np.zeros((count, 32, 32, 3), np.uint8)
        images[:, 0, 0, 0] = severity  # which severity each image belongs to
        images[:, 0, 0, 1] = index  # and which corruption
        np.save(folder / f"{stem}.npy", images)
    np.save(folder / "labels.npy", np.arange(count) % CLASSES)


def right_on_mild_severities(images, labels):
    """Logits 5 on the label for severities 1-2, on the next class for 3-5; 2 members."""
    severity = images[:, 0, 0, 0]
    predicted = np.where(severity <= 2, labels, (labels + 1) % CLASSES)
    logits = 5.0 * np.eye(CLASSES)[predicted]
    return np.stack([logits, logits], axis=1), logits, labels


def test_cifar100_c_reads_each_severity_slice_of_the_release(tmp_path):
    write_cifar100_c(tmp_path)
    images, labels = datasets.cifar100_c(str(tmp_path), "glass_blur", 3)
    assert images.shape == (PER_SEVERITY, 32, 32, 3) and images.dtype == np.uint8
    assert np.all(images[:, 0, 0, 0] == 3)
    assert np.all(images[:, 0, 0, 1] == [s for _, s in datasets.CORRUPTIONS].index("glass_blur"))
    np.testing.assert_array_equal(labels, np.arange(2 * PER_SEVERITY, 3 * PER_SEVERITY))


def test_corruption_metrics_per_type_and_severity_and_their_means(tmp_path):
    write_cifar100_c(tmp_path)
    results = shifts.corruption_results(right_on_mild_severities, "cifar100", str(tmp_path), None)
    assert len(results["by_corruption"]) == 19
    assert all(list(row) == ["1", "2", "3", "4", "5"] for row in results["by_corruption"].values())
    confidence = np.exp(5.0) / (np.exp(5.0) + CLASSES - 1)
    for severity, accuracy in zip("12345", [1, 1, 0, 0, 0]):
        cell = results["by_severity"][severity]
        assert cell["accuracy"] == accuracy
        assert cell["ece"] == pytest.approx(abs(accuracy - confidence))
        label_probability = confidence if accuracy else (1 - confidence) / (CLASSES - 1)
        assert cell["nll"] == pytest.approx(-np.log(label_probability))
    assert results["mean"]["accuracy"] == pytest.approx(0.4)
    assert results["benchmark_mean"]["accuracy"] == pytest.approx(0.4)
    assert results["by_corruption_mean"]["spatter"]["accuracy"] == pytest.approx(0.4)

    path = tmp_path / "severity.png"
    plots.severity_curves(str(path), {"accuracy": 1.0, "ece": 0.05}, results["by_severity"])
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    section = "\n".join(report._corruption_section(results))
    assert "| gaussian_noise |" in section and "Severity 5" in section


def test_missing_or_incomplete_cifar100_c_names_the_expected_layout(tmp_path):
    with pytest.raises(
        DataNotFoundError, match=r"CIFAR-100-C folder.*glass_blur.*50000.*5 severities.*labels.npy"
    ):
        next(datasets.corrupted_sets("cifar100", str(tmp_path), None))
    write_cifar100_c(tmp_path, stems={"gaussian_noise"})
    np.save(tmp_path / "labels.npy", np.zeros(7, np.int64))
    with pytest.raises(DataNotFoundError, match="5 severities"):
        datasets.cifar100_c(str(tmp_path), "gaussian_noise", 1)


def test_cifar10_c_reads_every_tfds_config(monkeypatch, tmp_path):
    # Two of the 19 types keep the test short; the names are the real tfds config names.
    monkeypatch.setattr(datasets, "CORRUPTIONS", datasets.CORRUPTIONS[3:5])
    with tfds.testing.mock_data(num_examples=4):
        sets = list(datasets.corrupted_sets("cifar10", None, str(tmp_path)))
    assert [(name, severity) for name, severity, _, _ in sets] == [
        (name, s) for name in ("defocus_blur", "frosted_glass_blur") for s in range(1, 6)
    ]
    assert all(images.shape == (4, 32, 32, 3) and len(labels) == 4 for *_, images, labels in sets)


def test_missing_cifar10_c_says_how_to_prepare_it(tmp_path):
    with pytest.raises(DataNotFoundError, match="tfds build cifar10_corrupted"):
        next(datasets.corrupted_sets("cifar10", None, str(tmp_path)))


def test_corruptions_of_a_dataset_without_a_release_are_refused():
    with pytest.raises(OptionError, match="--corruptions exists for cifar10 and cifar100"):
        EvaluationOptions(corruptions=True).check("digits")


def test_ood_set_of_another_image_shape_is_refused(tmp_path):
    from mixmo_tf.config.datasets import dataset_spec

    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(OptionError, match="mnist has images of shape"):
            shifts.ood_results(
                right_on_mild_severities,
                (None, None),
                "mnist",
                str(tmp_path),
                dataset_spec("cifar10"),
            )
