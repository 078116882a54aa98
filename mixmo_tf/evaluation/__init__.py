"""Evaluation after training, on logits: metrics, temperature scaling, reports of runs.

`metrics`, `temperature` and `options` are NumPy only; `run` restores trained runs and
writes their evaluation (`evaluate`).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=[
        "datasets",
        "epochs",
        "metrics",
        "ood",
        "options",
        "plots",
        "predictions",
        "report",
        "run",
        "shifts",
        "temperature",
        "uncertainty",
    ],
    submod_attrs={
        "metrics": [
            "ensemble_metrics",
            "ensemble_probabilities",
            "expected_calibration_error",
            "prediction_metrics",
            "roc_auc",
        ],
        "options": ["EvaluationOptions"],
        "run": ["evaluate", "evaluate_runs"],
        "temperature": ["cross_validated_scaling", "fit_temperature"],
        "uncertainty": ["entropy", "uncertainty"],
    },
)
