"""The real input pipeline's training batches, generated into memory: TensorFlow only.

bench/train_step.py imports this module only for `--batches=pipeline` (its default on the
TensorFlow backend), so that on the other backends it runs without TensorFlow.
"""

from __future__ import annotations

import harness
import tensorflow as tf

from mixmo_tf import data
from mixmo_tf.config import Config
from mixmo_tf.training.run import train_stream

# Enough distinct images for the batches of a short timing run.
NUM_EXAMPLES = 1024


def pipeline_batches(config: Config) -> list[dict[str, tf.Tensor]]:
    """One epoch of the real training pipeline's batches on synthetic data, in memory."""
    images, labels = harness.synthetic_data(NUM_EXAMPLES, config.spec, seed=0)
    stream = train_stream(config)
    dataset = data.train_dataset(images, labels, config.spec, stream, 0, stream.steps_per_epoch)
    return list(dataset)
