"""Datasets: sources (in memory or streamed from files) and the training / evaluation
tf.data pipelines."""

from __future__ import annotations

from mixmo_tf.data.pipeline import TrainStream, eval_dataset, normalize, train_dataset
from mixmo_tf.data.specs import DATASETS, DatasetSpec, dataset_spec
from mixmo_tf.data.splits import load_split, open_split, prepare_source, resolved_spec
from mixmo_tf.data.streamed import StreamedImages, naming_unreadable_files
from mixmo_tf.data.tfds_loading import DataNotFoundError, ensure_prepared
from mixmo_tf.data.validation import split_validation

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "DatasetSpec",
    "StreamedImages",
    "TrainStream",
    "dataset_spec",
    "ensure_prepared",
    "eval_dataset",
    "load_split",
    "naming_unreadable_files",
    "normalize",
    "open_split",
    "prepare_source",
    "resolved_spec",
    "split_validation",
    "train_dataset",
]
