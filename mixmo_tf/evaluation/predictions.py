"""Logits of a trained run: restore its newest checkpoint and predict a set of images."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mixmo_tf import checkpointing, data
from mixmo_tf.config import Config
from mixmo_tf.data.specs import DatasetSpec
from mixmo_tf.experiment import build_model, resolve_device_defaults
from mixmo_tf.training import MixMoModel


def restore_run(config: Config) -> tuple[MixMoModel, int]:
    """The model of the run in `config.model_dir` at its newest checkpoint, and that step.

    Raises:
        FileNotFoundError: the folder has no checkpoint.
    """
    model = build_model(resolve_device_defaults(config))
    manager = checkpointing.checkpoint_manager(model, config.model_dir)
    step = checkpointing.restore_latest(manager)
    if not step:
        raise FileNotFoundError(
            f"No checkpoint in {manager.directory}: train first, or point --model_dir at a run."
        )
    return model, step


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
