"""Batch normalization as PyTorch's `BatchNorm2d` computes it, fused on TensorFlow.

Keras 3's `BatchNormalization` composes the statistics and the normalization from
elementwise ops (in float32 even under a mixed policy). On CPU those run in Eigen, off the
oneDNN path, and take a large share of a WRN training step's op time, most of all in
mixed_bfloat16. On TensorFlow, `FusedBatchNormalization` computes the same function with one
`FusedBatchNormV3` op and its fused gradient, which oneDNN (CPU) and cuDNN (GPU) implement,
also for bfloat16 and float16 inputs with float32 statistics, so the step is faster in both
precisions (the profile and the step times: `bench/README.md`). On JAX and PyTorch it computes
the function in `keras.ops`, with float32 statistics too.

One difference from Keras, shared with the PyTorch reference and TensorFlow's kernel: the
moving variance is updated with the unbiased (n / (n - 1)) batch variance, as
`torch.nn.BatchNorm2d` does; the batch is normalized with the biased variance in both.
"""

from __future__ import annotations

import keras
from keras import ops

_CHANNEL_STATISTICS_AXES = (0, 1, 2)


def normalize(inputs, mean, variance, scale, offset, epsilon: float):
    """`(inputs - mean) / sqrt(variance + epsilon) * scale + offset`, in float32.

    Args:
        inputs: `(batch, H, W, channels)`, any float dtype.
        mean, variance, scale, offset: float32 `(channels,)`.
    """
    multiplier = scale * ops.rsqrt(variance + epsilon)
    return ops.cast(inputs, "float32") * multiplier + (offset - mean * multiplier)


def normalize_batch(inputs, scale, offset, epsilon: float):
    """The batch normalized by its own statistics, in float32.

    Returns:
        `(outputs, mean, unbiased variance)`: the statistics per channel, the variance with
        n / (n - 1) for the moving average (the batch itself uses the biased one).
    """
    values = ops.cast(inputs, "float32")
    mean = ops.mean(values, axis=_CHANNEL_STATISTICS_AXES)
    centered = values - mean
    variance = ops.mean(ops.square(centered), axis=_CHANNEL_STATISTICS_AXES)
    outputs = centered * (scale * ops.rsqrt(variance + epsilon)) + offset
    count = 1
    for axis in _CHANNEL_STATISTICS_AXES:
        count *= values.shape[axis]
    return outputs, mean, variance * (count / (count - 1))


_normalize, _normalize_batch = normalize, normalize_batch
if keras.backend.backend() == "tensorflow":
    # The same function as one fused op with a fused gradient (module docstring).
    from mixmo_tf.models.batch_norm_tensorflow import fused_normalize as _normalize
    from mixmo_tf.models.batch_norm_tensorflow import fused_normalize_batch as _normalize_batch


@keras.saving.register_keras_serializable(package="mixmo_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` over the last axis of 4D inputs, as PyTorch's.

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
        scale = ops.cast(self.gamma, "float32") if self.scale else ops.ones([channels])
        offset = ops.cast(self.beta, "float32") if self.center else ops.zeros([channels])
        if training and self.trainable:
            outputs, mean, variance = _normalize_batch(inputs, scale, offset, self.epsilon)
            # moving = momentum * moving + (1 - momentum) * batch, as in Keras and PyTorch.
            self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
            self.moving_variance.assign(
                self.momentum * self.moving_variance + (1.0 - self.momentum) * variance
            )
        else:
            mean = ops.cast(self.moving_mean, "float32")
            variance = ops.cast(self.moving_variance, "float32")
            outputs = _normalize(inputs, mean, variance, scale, offset, self.epsilon)
        return ops.cast(outputs, self.compute_dtype)
