"""Batch normalization through TensorFlow's fused kernel.

Keras 3's `BatchNormalization` composes the statistics and the normalization from
elementwise ops (in float32 even under a mixed policy). On CPU those run in Eigen, off the
oneDNN path, and take a large share of a WRN training step's op time, most of all in
mixed_bfloat16. `FusedBatchNormalization` computes the same function with one
`FusedBatchNormV3` op and its fused gradient, which oneDNN (CPU) and cuDNN (GPU) implement,
also for bfloat16 and float16 inputs with float32 statistics, so the step is faster in both
precisions (the profile and the step times: `bench/README.md`).

One difference from Keras, shared with the PyTorch reference: the moving variance is
updated with the unbiased (n / (n - 1)) batch variance, as `torch.nn.BatchNorm2d` does; the
batch is normalized with the biased variance in both.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mixmo_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` over the last axis of 4D inputs, fused.

    Same arguments, variables and saved format as the Keras layer; the renormalization,
    masking, non-4D inputs and other axes are not supported (the WRNs need none of them).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.renorm:
            raise ValueError("FusedBatchNormalization does not support renorm=True.")

    def add_weight(self, *args, **kwargs):
        # Keras 3 creates the moving statistics with aggregation "none": under a
        # tf.distribute strategy each replica then keeps the statistics of its own batches and
        # the copies drift apart (replica 0's are what gets saved). "mean" averages each
        # update over the replicas, so every copy holds the same statistics.
        if kwargs.get("name") in ("moving_mean", "moving_variance"):
            kwargs.setdefault("aggregation", "mean")
        return super().add_weight(*args, **kwargs)

    def build(self, input_shape):
        if len(input_shape) != 4 or self.axis not in (-1, 3):
            raise ValueError(
                "FusedBatchNormalization normalizes the channels (last axis) of 4D inputs. "
                f"Received: input_shape={input_shape}, axis={self.axis}"
            )
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError("FusedBatchNormalization does not support masks.")
        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, epsilon=self.epsilon, is_training=True
            )
            # moving = momentum * moving + (1 - momentum) * batch, as in Keras and PyTorch.
            self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
            self.moving_variance.assign(
                self.momentum * self.moving_variance + (1.0 - self.momentum) * variance
            )
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                scale,
                offset,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                is_training=False,
            )
        return tf.cast(outputs, self.compute_dtype)
