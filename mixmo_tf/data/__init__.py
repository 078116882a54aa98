"""Datasets: loading into memory and the training / evaluation tf.data pipelines."""

from __future__ import annotations

import numpy as np

from mixmo_tf.data.digits import load_digits_split
from mixmo_tf.data.pipeline import TrainStream, eval_dataset, normalize, train_dataset
from mixmo_tf.data.specs import DATASETS, DatasetSpec, dataset_spec
from mixmo_tf.data.tfds_loading import DataNotFoundError, ensure_prepared, load_tfds_split
from mixmo_tf.data.validation import split_validation


def load_split(
    spec: DatasetSpec, split: str, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, H, W, C)` uint8 and labels `(N,)` of a dataset split, in memory."""
    if spec.name == "digits":
        return load_digits_split(split, spec.num_train)
    return load_tfds_split(spec, split, data_dir)


__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "DatasetSpec",
    "TrainStream",
    "dataset_spec",
    "ensure_prepared",
    "eval_dataset",
    "load_split",
    "normalize",
    "split_validation",
    "train_dataset",
]
