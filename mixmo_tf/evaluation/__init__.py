"""Evaluation after training, on logits: metrics, temperature scaling, reports of runs.

`metrics` and `temperature` are NumPy only; `run` (imported on demand) loads trained runs.
"""

from mixmo_tf.evaluation.metrics import (
    ensemble_metrics,
    ensemble_probabilities,
    expected_calibration_error,
    prediction_metrics,
    roc_auc,
)
from mixmo_tf.evaluation.options import EvaluationOptions
from mixmo_tf.evaluation.temperature import cross_validated_scaling, fit_temperature

__all__ = [
    "EvaluationOptions",
    "cross_validated_scaling",
    "ensemble_metrics",
    "ensemble_probabilities",
    "expected_calibration_error",
    "fit_temperature",
    "prediction_metrics",
    "roc_auc",
]
