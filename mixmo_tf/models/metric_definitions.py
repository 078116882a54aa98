"""The definitions both forms of the metrics share: the NLL epsilon and the ECE bins.

The reported metrics (`mixmo_tf.evaluation.metrics`, NumPy) and the streaming ones that follow
training (`mixmo_tf.models.metrics`, Keras) take them from here, so both give one number.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
# NLL adds this to the probability of the label, as the authors do, so a confident mistake
# costs at most log(1e12) ~ 27.6 instead of infinity.
NLL_EPSILON = 1e-12


def bin_boundaries(num_bins: int = ECE_BINS) -> np.ndarray:
    """The `num_bins + 1` equal-width bin edges on [0, 1], in float64.

    Bins are (lo, hi]: a confidence exactly on an edge belongs to the lower bin. The edges
    are the authors' `np.linspace(0, 1, num_bins + 1)` and confidences are compared with
    them in float64, as their numpy ECE compares its float32 confidences; computing
    ceil(confidence * bins) in float32 puts some confidences near k/15 in other bins.
    """
    return np.linspace(0.0, 1.0, num_bins + 1)
