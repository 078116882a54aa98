"""`batch_norm`'s two functions on TensorFlow's fused kernel (`FusedBatchNormV3`).

Same signatures and results as `batch_norm.normalize` and `normalize_batch`; one op each and a fused
gradient, which oneDNN and cuDNN implement (bench/README.md). Imported on the TensorFlow
backend only.
"""

from __future__ import annotations

import tensorflow as tf


def fused_normalize(inputs, mean, variance, scale, offset, epsilon: float) -> tf.Tensor:
    """`(inputs - mean) / sqrt(variance + epsilon) * scale + offset`, in the inputs' dtype."""
    outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
        inputs,
        scale,
        offset,
        mean=mean,
        variance=variance,
        epsilon=epsilon,
        is_training=False,
    )
    return outputs


def fused_normalize_batch(inputs, scale, offset, epsilon: float) -> tuple[tf.Tensor, ...]:
    """The batch normalized by its own statistics: `(outputs, mean, unbiased variance)`."""
    return tf.compat.v1.nn.fused_batch_norm(
        inputs, scale, offset, epsilon=epsilon, is_training=True
    )
