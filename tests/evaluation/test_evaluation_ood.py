"""OOD scores and detection metrics against scikit-learn and by formula."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_curve

from mixmo_tf.evaluation import metrics, ood


def test_average_precision_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 8, 500) / 7.0
    positives = rng.random(500) < 0.2 + 0.6 * scores
    assert ood.average_precision(scores, positives) == pytest.approx(
        average_precision_score(positives, scores)
    )


def test_fpr_at_95_tpr_matches_the_roc_curve():
    rng = np.random.default_rng(1)
    inside, outside = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 300)
    labels = np.r_[np.ones(400), np.zeros(300)]
    fpr, tpr, _ = roc_curve(labels, np.r_[inside, outside])
    expected = fpr[np.searchsorted(tpr, 0.95, side="left")]
    assert ood.fpr_at_tpr(inside, outside) == pytest.approx(expected)
    # In-distribution 0..99: keeping 95 of them puts the threshold at 5; only 5.0 passes.
    assert ood.fpr_at_tpr(np.arange(100.0), np.array([5.0, 4.0, 3.0])) == pytest.approx(1 / 3)


def test_confidence_scores_by_formula():
    member_logits = np.array([[[3.0, 0.0], [0.0, 3.0]]])  # members disagree
    ensemble_logits = member_logits.mean(axis=1)  # uniform
    scores = ood.confidence_scores(member_logits, ensemble_logits)
    assert scores["max_probability"][0] == pytest.approx(0.5)
    assert scores["entropy"][0] == pytest.approx(-np.log(2))
    p = metrics.softmax(np.array([3.0, 0.0]))
    member_entropy = -np.sum(p * np.log(p))
    assert scores["mutual_information"][0] == pytest.approx(-(np.log(2) - member_entropy))


def test_detection_separates_confident_from_uncertain_predictions():
    rng = np.random.default_rng(2)
    sharp = rng.standard_normal((200, 2, 10)) + 6.0 * np.eye(10)[rng.integers(0, 10, 200)][:, None]
    flat = rng.standard_normal((200, 2, 10))
    results = ood.ood_metrics((sharp, sharp.mean(1)), (flat, flat.mean(1)))
    assert set(results) == set(ood.SCORES)
    for name in ("max_probability", "entropy"):
        assert results[name]["auroc"] > 0.95 and results[name]["fpr_at_95_tpr"] < 0.2
        assert results[name]["aupr_in"] > 0.9 and results[name]["aupr_out"] > 0.9
    flipped = ood.detection_metrics(np.arange(5.0), np.arange(5.0) + 10)
    assert flipped["auroc"] == 0.0 and flipped["fpr_at_95_tpr"] == 1.0
