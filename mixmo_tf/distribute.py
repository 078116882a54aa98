"""The tf.distribute strategy a run asks for."""

from __future__ import annotations

import tensorflow as tf


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy for `--distribution`.

    "default": the current (single-device) strategy. "mirrored": all local GPUs, or the CPU.
    "multi_worker_mirrored": synchronous training over the workers in TF_CONFIG; create it
    at program start, before other TensorFlow work.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(
        "--distribution must be one of default, mirrored, multi_worker_mirrored. "
        f"Received: distribution={name!r}"
    )
