"""Logits of a restored run's model on a set of images, batched as in evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

from mixmo_tf import data
from mixmo_tf.config.datasets import DatasetSpec
from mixmo_tf.models.mixmo_model import MixMoModel


def logits_function(
    model: MixMoModel, image_shape: Sequence[int]
) -> Callable[[np.ndarray], np.ndarray]:
    """normalised images `(batch, H, W, C)` -> member logits `(batch, members, classes)`
    float32, as NumPy arrays on every Keras backend.

    On TensorFlow one traced function, whatever the batch size (the last batch is smaller);
    on the other backends the model's own calls.
    """
    if keras.backend.backend() != "tensorflow":
        return lambda images: keras.ops.convert_to_numpy(
            model.prediction_logits(images, training=False)
        )
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *image_shape), tf.float32)]
    traced = tf.function(model.prediction_logits, input_signature=signature)
    return lambda images: traced(images).numpy()


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
    predict = logits_function(model, spec.image_shape)
    logits, kept = [], []
    for batch in data.eval_dataset(images, labels, spec, batch_size, num_batches):
        logits.append(predict(batch["images"].numpy()))
        kept.append(batch["labels"].numpy())
    return np.concatenate(logits), np.concatenate(kept).astype(np.int64)
