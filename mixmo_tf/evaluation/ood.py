"""Out-of-distribution detection from an ensemble's logits.

Each score is a confidence: higher means "more in-distribution". The uncertainty behind the
scores is the served graph's (`mixmo_tf.evaluation.uncertainty`), so an evaluated score
and the value TF Serving answers for the same image are one number. Detection metrics treat
the in-distribution test images as positives (AUROC is the same either way round):
AUROC, AUPR-In (in-distribution positive), AUPR-Out (OOD positive, scores negated) and the
FPR at 95% TPR (the fraction of OOD images accepted when 95% of in-distribution images are).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from mixmo_tf.evaluation.metrics import roc_auc
from mixmo_tf.evaluation.uncertainty import uncertainty

SCORES = ("max_probability", "entropy", "mutual_information")


def confidence_scores(
    member_logits: np.ndarray, ensemble_logits: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-example confidences: the ensemble's max probability, minus its predictive
    entropy, and minus the members' mutual information (`uncertainty`), all computed in
    float32 as the served graph computes them.

    Args:
        member_logits: `(examples, members, classes)`.
        ensemble_logits: `(examples, classes)`, the ensemble's prediction is their softmax.
    """
    probabilities = tf.nn.softmax(tf.constant(ensemble_logits, tf.float32))
    members = tf.nn.softmax(tf.constant(member_logits, tf.float32))
    measures = uncertainty(probabilities, members)
    return {
        "max_probability": np.max(probabilities.numpy(), axis=-1),
        "entropy": -measures["entropy"].numpy(),
        "mutual_information": -measures["mutual_information"].numpy(),
    }


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the precision-recall curve as the step sum sum_k (R_k - R_{k-1}) P_k over
    the distinct score thresholds, high to low (scikit-learn's average_precision_score)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    sorted_scores = np.asarray(scores, np.float64)[order]
    hits = np.asarray(positives, bool)[order]
    # The last index of each run of tied scores is where a threshold takes them all.
    ends = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), len(hits) - 1]
    true_positives = np.cumsum(hits)[ends]
    precision = true_positives / (ends + 1)
    recall = true_positives / hits.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of OOD scores at or above the highest threshold that keeps `tpr` of the
    in-distribution scores."""
    ranked = np.sort(np.asarray(in_scores, np.float64))[::-1]
    threshold = ranked[math.ceil(tpr * len(ranked)) - 1]
    return float(np.mean(np.asarray(out_scores) >= threshold))


def detection_metrics(in_scores: np.ndarray, out_scores: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FPR at 95% TPR of separating in from out by a score."""
    scores = np.concatenate([in_scores, out_scores])
    is_in = np.r_[np.ones(len(in_scores), bool), np.zeros(len(out_scores), bool)]
    return {
        "auroc": roc_auc(scores, is_in),
        "aupr_in": average_precision(scores, is_in),
        "aupr_out": average_precision(-scores, ~is_in),
        "fpr_at_95_tpr": fpr_at_tpr(in_scores, out_scores),
    }


def ood_metrics(
    in_logits: tuple[np.ndarray, np.ndarray], out_logits: tuple[np.ndarray, np.ndarray]
) -> dict[str, dict[str, float]]:
    """{score: detection metrics} from (member logits, ensemble logits) of both sets."""
    inside, outside = confidence_scores(*in_logits), confidence_scores(*out_logits)
    return {name: detection_metrics(inside[name], outside[name]) for name in SCORES}
