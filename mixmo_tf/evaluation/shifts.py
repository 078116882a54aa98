"""Evaluation under distribution shift: corrupted test sets and out-of-distribution sets.

Both take `predict(images, labels) -> (member_logits, ensemble_logits, labels)`, the
ensemble being evaluated, so single runs and ensembles of runs go through the same code.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mixmo_tf.config.datasets import DatasetSpec
from mixmo_tf.evaluation import datasets, ood
from mixmo_tf.evaluation.metrics import prediction_metrics, softmax
from mixmo_tf.evaluation.options import OptionError

Predict = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
CORRUPTION_METRICS = ("accuracy", "nll", "ece")


def _mean(tables: list[dict[str, float]]) -> dict[str, float]:
    return {name: float(np.mean([table[name] for table in tables])) for name in tables[0]}


def corruption_results(
    predict: Predict, dataset: str, corruptions_dir: str | None, data_dir: str | None
) -> dict:
    """Accuracy, NLL and ECE on each of the 19 corruptions x 5 severities, and their means.

    Returns:
        `by_corruption` {corruption: {severity: metrics}}, `by_severity` {severity: mean
        over corruptions}, `by_corruption_mean` {corruption: mean over severities}, and
        `mean` (over all 95 sets) and `benchmark_mean` (the 15 benchmark corruptions).
    """
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name, severity, images, labels in datasets.corrupted_sets(
        dataset, corruptions_dir, data_dir
    ):
        _, ensemble_logits, kept = predict(images, labels)
        metrics = prediction_metrics(softmax(ensemble_logits), kept)
        table.setdefault(name, {})[str(severity)] = {m: metrics[m] for m in CORRUPTION_METRICS}
    benchmark = [name for name, _ in datasets.CORRUPTIONS[:15]]
    return {
        "by_corruption": table,
        "by_severity": {
            str(s): _mean([table[name][str(s)] for name in table]) for s in datasets.SEVERITIES
        },
        "by_corruption_mean": {name: _mean(list(table[name].values())) for name in table},
        "mean": _mean([cell for row in table.values() for cell in row.values()]),
        "benchmark_mean": _mean([cell for n in benchmark for cell in table[n].values()]),
    }


def ood_results(
    predict: Predict,
    in_logits: tuple[np.ndarray, np.ndarray],
    ood_dataset: str,
    data_dir: str | None,
    spec: DatasetSpec,
) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Detection metrics of `ood_dataset`'s test split against the in-distribution logits.

    Returns:
        tuple: ({"dataset", "num_examples", score: detection metrics}, {score: (in scores, OOD
        scores)} for the histograms).

    Raises:
        OptionError: the OOD images do not have the run's image shape.
    """
    images, labels = datasets.ood_test_set(ood_dataset, data_dir)
    if images.shape[1:] != spec.image_shape:
        raise OptionError(
            f"--ood_dataset={ood_dataset} has images of shape {images.shape[1:]}; the run "
            f"takes {spec.image_shape}. Choose a dataset of the same image shape."
        )
    member_logits, ensemble_logits, _ = predict(images, labels)
    results = ood.ood_metrics(in_logits, (member_logits, ensemble_logits))
    inside = ood.confidence_scores(*in_logits)
    outside = ood.confidence_scores(member_logits, ensemble_logits)
    scores = {name: (inside[name], outside[name]) for name in ood.SCORES}
    return {"dataset": ood_dataset, "num_examples": len(member_logits), **results}, scores
