"""Writes CIFAR archives in the official binary format with random images (tests, benchmarks)."""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np

# name -> (folder inside the archive, train files, test file, [(label file, label count)])
_LAYOUTS = {
    "cifar10": (
        "cifar-10-batches-bin",
        [f"data_batch_{i}.bin" for i in range(1, 6)],
        "test_batch.bin",
        [("batches.meta.txt", 10)],
    ),
    "cifar100": (
        "cifar-100-binary",
        ["train.bin"],
        "test.bin",
        [("coarse_label_names.txt", 20), ("fine_label_names.txt", 100)],
    ),
}


def _records(
    rng: np.random.Generator, count: int, label_counts: list[int]
) -> tuple[bytes, np.ndarray]:
    labels = np.stack([rng.integers(0, n, count) for n in label_counts], axis=1).astype(np.uint8)
    images = rng.integers(0, 256, (count, 3 * 32 * 32)).astype(np.uint8)
    return np.concatenate([labels, images], axis=1).tobytes(), labels[:, -1]


def write_cifar_archive(
    directory: str, name: str, num_train: int, num_test: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Writes `<directory>/<official archive name>` with random images; returns the labels."""
    folder, train_files, test_file, label_files = _LAYOUTS[name]
    label_counts = [count for _, count in label_files]
    rng = np.random.default_rng(seed)
    members = {}
    train_labels = []
    per_file = np.array_split(np.arange(num_train), len(train_files))
    for file_name, indices in zip(train_files, per_file):
        members[file_name], labels = _records(rng, len(indices), label_counts)
        train_labels.append(labels)
    members[test_file], test_labels = _records(rng, num_test, label_counts)
    for file_name, count in label_files:
        members[file_name] = "\n".join(f"class_{i}" for i in range(count)).encode()
    archive_name = "cifar-10-binary.tar.gz" if name == "cifar10" else "cifar-100-binary.tar.gz"
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, archive_name)
    with tarfile.open(path, "w:gz") as archive:
        for file_name, payload in members.items():
            info = tarfile.TarInfo(f"{folder}/{file_name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return {"train": np.concatenate(train_labels), "test": test_labels, "path": path}
