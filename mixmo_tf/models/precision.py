"""The Keras dtype policy a model is built with.

Variables stay float32 in every mode (Keras mixed policies); only the compute dtype of the
layers changes, and `MixMoModel` casts the logits back to float32 before the loss, the
probabilities and the metrics. Which policy a machine should use is decided above the
models (`mixmo_tf.tuning.device_rules`, `mixmo_tf.tuning.precision_choice`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

from mixmo_tf.config.choices import PRECISIONS


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Layers and models created inside use the Keras dtype policy `precision`.

    "auto" keeps the process's global policy (float32 unless the user set another): the
    machine's choice for a run is made by `mixmo_tf.tuning` before the model is built. The
    global policy is restored on exit, so building one mixed-precision model leaves later
    models (and other tests in the process) in float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}. Received: {precision!r}")
    previous = keras.config.dtype_policy()
    if precision != "auto":
        keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
