"""Logits of a restored run's model on a set of images, batched as in evaluation."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mixmo_tf import data
from mixmo_tf.config.datasets import DatasetSpec
from mixmo_tf.models.mixmo_model import MixMoModel


def predict_logits(
    model: MixMoModel,
    images: np.ndarray,
    labels: np.ndarray,
    spec: DatasetSpec,
    batch_size: int,
    num_batches: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Member logits `(examples, members, classes)` float32 and the matching labels.

    Args:
        images: `(examples, H, W, C)` uint8, normalised here as in training.
        num_batches: predict only the first batches (smoke runs); 0: all of them.
    """
    # One trace whatever the batch size (the last batch is smaller).
    signature = [tf.TensorSpec((None, *spec.image_shape), tf.float32)]
    predict = tf.function(model.prediction_logits, input_signature=signature)
    logits, kept = [], []
    for batch in data.eval_dataset(images, labels, spec, batch_size, num_batches):
        logits.append(predict(batch["images"]).numpy())
        kept.append(batch["labels"].numpy())
    return np.concatenate(logits), np.concatenate(kept).astype(np.int64)
