"""Streaming (Keras) forms of the evaluation metrics, for the test split after each epoch.

The reported numbers are `mixmo_tf.evaluation.metrics`'; these follow training and share
their definitions (the NLL epsilon, the ECE bins: `metric_definitions`), so the per-epoch
values of TensorBoard equal those of an evaluation of the same checkpoint (tested). Each
metric takes integer labels `(batch,)` and probabilities `(batch, classes)`, so they serve
the ensemble and any single member alike.
"""

from __future__ import annotations

import keras
from keras import ops

from mixmo_tf.models.metric_definitions import ECE_BINS, NLL_EPSILON, bin_boundaries


@keras.saving.register_keras_serializable(package="mixmo_tf")
class NegativeLogLikelihood(keras.metrics.Mean):
    """-mean log(p_y + 1e-12), the paper's NLL."""

    def __init__(self, name: str = "nll", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, labels, probabilities, sample_weight=None):
        labels = ops.cast(labels, "int32")
        true_probability = ops.take_along_axis(probabilities, labels[:, None], axis=-1)[:, 0]
        return super().update_state(-ops.log(true_probability + NLL_EPSILON), sample_weight)


@keras.saving.register_keras_serializable(package="mixmo_tf")
class BrierScore(keras.metrics.Mean):
    """Sum over classes of the squared error to the one-hot label, divided by the classes."""

    def __init__(self, name: str = "brier", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, labels, probabilities, sample_weight=None):
        num_classes = ops.shape(probabilities)[-1]
        one_hot = ops.one_hot(ops.cast(labels, "int32"), num_classes)
        per_sample = ops.mean(ops.square(probabilities - one_hot), axis=-1)
        return super().update_state(per_sample, sample_weight)


@keras.saving.register_keras_serializable(package="mixmo_tf")
class ExpectedCalibrationError(keras.metrics.Metric):
    """ECE with equal-width confidence bins (lo, hi] (15 in the paper).

    Accumulates per bin the (weighted) count, the summed confidence and the number correct,
    so the result over several batches equals the ECE of their concatenation.
    """

    def __init__(self, num_bins: int = ECE_BINS, name: str = "ece", **kwargs):
        super().__init__(name=name, **kwargs)
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1. Received: num_bins={num_bins}")
        self.num_bins = num_bins
        self._inner_boundaries = bin_boundaries(num_bins)[1:-1]
        self.counts = self.add_variable((num_bins,), "zeros", name="counts")
        self.confidence_sums = self.add_variable((num_bins,), "zeros", name="confidence_sums")
        self.correct_sums = self.add_variable((num_bins,), "zeros", name="correct_sums")

    def update_state(self, labels, probabilities, sample_weight=None):
        confidence = ops.max(probabilities, axis=-1)
        correct = ops.cast(
            ops.equal(ops.argmax(probabilities, axis=-1), ops.cast(labels, "int64")), "float32"
        )
        # The bins of `calibration_bins`: (lo, hi] on float64 edges, the float32 confidence
        # promoted to float64; a confidence of exactly 0 joins the first bin.
        above = ops.cast(confidence, "float64")[:, None] > self._inner_boundaries[None, :]
        bins = ops.sum(ops.cast(above, "int32"), axis=1)
        one_hot_bins = ops.one_hot(bins, self.num_bins)
        if sample_weight is not None:
            one_hot_bins = one_hot_bins * ops.cast(sample_weight, "float32")[:, None]
        self.counts.assign_add(ops.sum(one_hot_bins, axis=0))
        self.confidence_sums.assign_add(ops.sum(one_hot_bins * confidence[:, None], axis=0))
        self.correct_sums.assign_add(ops.sum(one_hot_bins * correct[:, None], axis=0))

    def result(self):
        total = ops.maximum(ops.sum(self.counts), 1.0)
        gaps = ops.abs(self.confidence_sums - self.correct_sums)
        return ops.sum(gaps) / total

    def reset_state(self):
        for variable in (self.counts, self.confidence_sums, self.correct_sums):
            variable.assign(ops.zeros(variable.shape, variable.dtype))

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}
