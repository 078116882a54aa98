"""What only TensorFlow can do, refused in one line when Keras runs on another backend.

Training, checkpoints, evaluation and prediction from a run work on every Keras backend;
tf.distribute (the strategies, the multi-worker loop, TPUs) and the SavedModel export are
TensorFlow's. A run trained on JAX or PyTorch is exported by a TensorFlow process: its
checkpoints are read on every backend.
"""

from __future__ import annotations

import keras

from mixmo_tf.config.errors import UserError


class TensorFlowOnlyError(UserError):
    """A feature that only TensorFlow has, asked for while Keras runs on another backend."""


def is_tensorflow() -> bool:
    """Whether Keras computes with TensorFlow in this process."""
    return keras.backend.backend() == "tensorflow"


def require_tensorflow(feature: str) -> None:
    """Raises TensorFlowOnlyError naming `feature` (what the user asked for, e.g.
    "--distribution=mirrored (tf.distribute)") unless Keras runs on TensorFlow."""
    if not is_tensorflow():
        raise TensorFlowOnlyError(
            f"{feature} needs TensorFlow, and Keras runs on {keras.backend.backend()} here: "
            "run it with KERAS_BACKEND=tensorflow."
        )
