"""Uncertainty and diversity metrics of an ensemble, in NumPy, from logits (docs/method.md §10).

Everything here works on arrays after prediction: `member_logits` `(examples, members,
classes)` and integer `labels` `(examples,)`. The ensemble's prediction is the softmax of
the members' mean logits, as in MixMo's evaluation. These are the reported numbers; the
Keras metrics of `mixmo_tf.models.metrics`, which follow training, share their definitions
(the NLL epsilon, the ECE bins).
"""

from __future__ import annotations

import numpy as np

from mixmo_tf.models.metric_definitions import ECE_BINS, NLL_EPSILON, bin_boundaries


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float64."""
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def ensemble_probabilities(member_logits: np.ndarray) -> np.ndarray:
    """Probabilities `(examples, classes)` of the ensemble: softmax of the mean member logits."""
    return softmax(np.asarray(member_logits, np.float64).mean(axis=1))


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of examples whose label is among the k most probable classes."""
    k = min(k, probabilities.shape[-1])
    top = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, np.newaxis], axis=-1)))


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """-mean log(p_label + 1e-12)."""
    label_probabilities = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(label_probabilities + NLL_EPSILON)))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Squared error to the one-hot label, summed over classes, divided by the number of
    classes, averaged over examples (the authors' normalisation)."""
    one_hot = np.eye(probabilities.shape[-1])[labels]
    return float(np.mean((probabilities - one_hot) ** 2))


def calibration_bins(
    confidences: np.ndarray, correct: np.ndarray, num_bins: int = ECE_BINS
) -> dict[str, np.ndarray]:
    """Per-bin statistics of a reliability diagram.

    Args:
        confidences: `(examples,)` the probability of the predicted class.
        correct: `(examples,)` whether the prediction was right.
        num_bins: equal-width (lo, hi] bins on [0, 1].

    Returns:
        `edges` `(bins + 1,)`, and per bin `count`, `confidence` (mean) and `accuracy`
        (NaN where the bin is empty).
    """
    edges = bin_boundaries(num_bins)
    confidences = np.asarray(confidences, np.float64)
    # side="left" finds the first edge >= confidence: its bin (lo, hi] ends at that edge.
    # A confidence of exactly 0 cannot be a maximum probability; it is counted in bin 0.
    index = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, num_bins - 1)
    count = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidences, num_bins) / count
        accuracy = np.bincount(index, np.asarray(correct, np.float64), num_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = ECE_BINS
) -> float:
    """Sum over bins of `|accuracy - mean confidence| * fraction of examples in the bin`."""
    bins = calibration_bins(
        probabilities.max(axis=-1), probabilities.argmax(axis=-1) == labels, num_bins
    )
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(gaps * bins["count"][filled]) / len(labels))


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of `scores` separating `positives` from the rest.

    The Mann-Whitney statistic with tied scores sharing their mean rank (as scikit-learn's
    roc_auc_score). NaN when one of the two classes is empty.
    """
    scores = np.asarray(scores, np.float64)
    positives = np.asarray(positives, bool)
    num_positive, num_negative = positives.sum(), (~positives).sum()
    if num_positive == 0 or num_negative == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # Tied scores share the mean of the ranks they span (1-indexed).
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    positive_rank_sum = ranks[positives].sum()
    return float(
        (positive_rank_sum - num_positive * (num_positive + 1) / 2) / (num_positive * num_negative)
    )


def prediction_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1, top-5, NLL, ECE, Brier and AUROC (confidence vs correctness) of one predictor."""
    labels = np.asarray(labels, np.int64)
    correct = probabilities.argmax(axis=-1) == labels
    return {
        "accuracy": float(np.mean(correct)),
        "top5": top_k_accuracy(probabilities, labels, 5),
        "nll": negative_log_likelihood(probabilities, labels),
        "ece": expected_calibration_error(probabilities, labels),
        "brier": brier_score(probabilities, labels),
        "auroc": roc_auc(probabilities.max(axis=-1), correct),
    }


def _pairs(num_members: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(num_members) for j in range(i + 1, num_members)]


def ratio_errors(member_predictions: np.ndarray, labels: np.ndarray) -> float:
    """Mean over member pairs of (N01 + N10) / N00, the authors' diversity measure.

    N01, N10: fractions of examples exactly one of the two members gets wrong; N00: both
    wrong. With no shared error the ratio is 2 (N01 + N10) (fractions), as in the authors'
    code. Higher is more diverse. NaN with a single member.
    """
    wrong = member_predictions != labels[:, np.newaxis]
    ratios = []
    for i, j in _pairs(wrong.shape[1]):
        both = np.mean(wrong[:, i] & wrong[:, j])
        one = np.mean(wrong[:, i] ^ wrong[:, j])
        ratios.append(one / both if both > 0 else 2 * one)
    return float(np.mean(ratios)) if ratios else float("nan")


def disagreement(member_predictions: np.ndarray) -> float:
    """Mean over member pairs of the fraction of examples where their predictions differ.

    Our addition; the authors report only the ratio-error. NaN with a single member.
    """
    pairs = _pairs(member_predictions.shape[1])
    if not pairs:
        return float("nan")
    return float(
        np.mean([np.mean(member_predictions[:, i] != member_predictions[:, j]) for i, j in pairs])
    )


def member_metrics(member_logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Each member's accuracy, their mean, and the pairwise ratio-error and disagreement."""
    labels = np.asarray(labels, np.int64)
    predictions = np.asarray(member_logits).argmax(axis=-1)
    accuracies = np.mean(predictions == labels[:, np.newaxis], axis=0)
    results = {f"member_{i}_accuracy": float(a) for i, a in enumerate(accuracies)}
    results["mean_member_accuracy"] = float(accuracies.mean())
    results["ratio_errors"] = ratio_errors(predictions, labels)
    results["disagreement"] = disagreement(predictions)
    return results


def ensemble_metrics(
    member_logits: np.ndarray, labels: np.ndarray, ensemble_logits: np.ndarray | None = None
) -> dict[str, float]:
    """All metrics of an ensemble: its prediction's, then its members'.

    Args:
        member_logits: `(examples, members, classes)`.
        labels: `(examples,)` integer classes.
        ensemble_logits: `(examples, classes)` the ensemble's logits; defaults to the mean of
            `member_logits` (an ensemble of runs with different member counts passes the
            mean of each run's mean instead).
    """
    if ensemble_logits is None:
        probabilities = ensemble_probabilities(member_logits)
    else:
        probabilities = softmax(ensemble_logits)
    return {**prediction_metrics(probabilities, labels), **member_metrics(member_logits, labels)}
