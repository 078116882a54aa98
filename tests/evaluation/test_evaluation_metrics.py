"""Evaluation metrics and temperature scaling against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mixmo_tf.evaluation import metrics, temperature


def random_logits(count=400, members=3, classes=7, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    logits = rng.standard_normal((count, members, classes)) * scale
    logits[np.arange(count), :, labels] += 2.0  # better than chance
    return logits, labels


def test_ensemble_is_softmax_of_mean_logits():
    logits = np.array([[[2.0, 0.0], [0.0, 4.0]]])
    expected = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()
    np.testing.assert_allclose(metrics.ensemble_probabilities(logits)[0], expected)


def test_nll_and_brier_by_formula():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0]])
    labels = np.array([0, 1, 2])
    nll = -(np.log(0.7 + 1e-12) + np.log(0.1 + 1e-12) + np.log(1e-12)) / 3
    assert metrics.negative_log_likelihood(probabilities, labels) == pytest.approx(nll)
    squared = [0.3**2 + 0.2**2 + 0.1**2, 0.1**2 + 0.9**2 + 0.8**2, 0.5**2 + 0.5**2 + 1.0]
    assert metrics.brier_score(probabilities, labels) == pytest.approx(np.sum(squared) / 9)


def test_top_k_accuracy():
    probabilities = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    labels = np.array([0, 0])
    assert metrics.top_k_accuracy(probabilities, labels, 1) == 0.5
    assert metrics.top_k_accuracy(probabilities, labels, 3) == 0.5
    assert metrics.top_k_accuracy(probabilities, labels, 4) == 1.0
    assert metrics.top_k_accuracy(probabilities, labels, 5) == 1.0  # k capped at the classes


def test_ece_by_hand_on_a_small_example():
    # Confidences 0.95 (right), 0.95 (wrong), 0.5 (right), 0.3 (wrong) over 3 classes.
    probabilities = np.array(
        [[0.95, 0.03, 0.02], [0.95, 0.03, 0.02], [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]]
    )
    probabilities[3] = [0.3, 0.35, 0.35]  # max 0.35 for class 1, label 0: wrong
    labels = np.array([0, 1, 0, 0])
    # Bins of width 1/15: 0.95 in bin 14, 0.5 in bin 7, 0.35 in bin 5.
    expected = (2 * abs(0.5 - 0.95) + abs(1.0 - 0.5) + abs(0.0 - 0.35)) / 4
    assert metrics.expected_calibration_error(probabilities, labels) == pytest.approx(expected)


def test_ece_bins_are_lower_open_upper_closed_on_the_authors_float64_edges():
    edges = metrics.bin_boundaries()
    np.testing.assert_array_equal(edges, np.linspace(0, 1, 16))
    # A confidence exactly on the edge k/15 belongs to bin k - 1, just above it to bin k.
    on_edge = edges[5]
    above = np.nextafter(on_edge, 1.0)
    bins = metrics.calibration_bins(np.array([on_edge, above, 1.0]), np.array([1, 0, 1]))
    assert bins["count"][4] == 1 and bins["count"][5] == 1 and bins["count"][14] == 1
    assert bins["accuracy"][4] == 1.0 and bins["accuracy"][5] == 0.0
    assert np.isnan(bins["accuracy"][0])
    # float32 confidences nearest to k/15 fall where the authors' numpy comparison puts them
    # (0.2f = 0.2000000030 is above the edge 0.2, so in bin 3).
    confidences = np.float32(np.arange(1, 15) / 15.0)
    authors = [
        np.flatnonzero((confidences[i] > edges[:-1]) & (confidences[i] <= edges[1:]))[0]
        for i in range(14)
    ]
    counts = metrics.calibration_bins(confidences, np.ones(14))["count"]
    np.testing.assert_array_equal(counts, np.bincount(authors, minlength=15))


def test_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, 300) / 5.0  # many ties
    positives = rng.random(300) < 0.3 + 0.5 * scores
    assert metrics.roc_auc(scores, positives) == pytest.approx(roc_auc_score(positives, scores))
    assert np.isnan(metrics.roc_auc(scores, np.ones(300, bool)))


def test_diversity_against_hand_counts():
    labels = np.array([0, 0, 0, 0, 0, 0])
    predictions = np.array(
        [  # member 0, 1, 2
            [0, 0, 1],
            [0, 1, 1],
            [1, 0, 0],
            [1, 1, 0],
            [1, 2, 0],
            [0, 0, 0],
        ]
    )
    # Pair (0, 1): both wrong rows 3, 4 -> N00 = 2/6; one wrong rows 1, 2 -> 2/6: ratio 1.
    # Pair (0, 2): both wrong none -> 2 * (N01 + N10) = 2 * 5/6.
    # Pair (1, 2): both wrong row 1 -> 1/6; one wrong rows 0, 3, 4 -> 3/6: ratio 3.
    assert metrics.ratio_errors(predictions, labels) == pytest.approx((1 + 10 / 6 + 3) / 3)
    # Disagreement: (0,1) rows 1,2,4 -> 3/6; (0,2) rows 0-4 -> 5/6; (1,2) rows 0,3,4 -> 3/6.
    assert metrics.disagreement(predictions) == pytest.approx((3 / 6 + 5 / 6 + 3 / 6) / 3)


def test_member_metrics_and_ensemble_metrics_keys():
    logits, labels = random_logits()
    results = metrics.ensemble_metrics(logits, labels)
    for i in range(3):
        expected = np.mean(logits[:, i].argmax(-1) == labels)
        assert results[f"member_{i}_accuracy"] == pytest.approx(expected)
    assert results["mean_member_accuracy"] == pytest.approx(
        np.mean([results[f"member_{i}_accuracy"] for i in range(3)])
    )
    ensemble = metrics.softmax(logits.mean(axis=1))
    assert results["accuracy"] == pytest.approx(np.mean(ensemble.argmax(-1) == labels))
    assert results["accuracy"] > results["mean_member_accuracy"]  # independent noise averages
    assert results["auroc"] == pytest.approx(
        roc_auc_score(ensemble.argmax(-1) == labels, ensemble.max(-1))
    )


def overconfident(seed=0):
    logits, labels = random_logits(count=600, members=1, seed=seed, scale=4.0)
    return logits[:, 0] * 3.0, labels  # far too sharp: T > 1 should help


def test_fitted_temperature_is_the_grid_minimum_of_the_nll():
    logits, labels = overconfident()
    fitted = temperature.fit_temperature(logits, labels)
    grid = np.exp(np.linspace(np.log(0.05), np.log(50), 4001))
    nlls = [temperature.scaled_nll(logits, labels, t) for t in grid]
    best = grid[int(np.argmin(nlls))]
    assert fitted == pytest.approx(best, rel=2e-3)
    assert fitted > 1.5
    assert temperature.scaled_nll(logits, labels, fitted) <= min(nlls) + 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_temperature_never_worsens_the_nll_it_was_fitted_on(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 50)
    logits = rng.standard_normal((50, 5)) * rng.choice([0.1, 1.0, 10.0])
    fitted = temperature.fit_temperature(logits, labels)
    assert temperature.scaled_nll(logits, labels, fitted) <= temperature.scaled_nll(
        logits, labels, 1.0
    )


def test_temperature_of_a_calibrated_predictor_stays_near_one():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((20000, 4)) * 2.0
    labels = np.array([rng.choice(4, p=p) for p in metrics.softmax(logits)])
    assert temperature.fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.05)


def test_cross_validated_scaling_fits_on_one_half_and_evaluates_on_the_other():
    logits, labels = overconfident(seed=4)
    first, second = temperature.split_halves(len(labels))
    assert len(np.intersect1d(first, second)) == 0 and len(first) + len(second) == len(labels)
    np.testing.assert_array_equal(first, temperature.split_halves(len(labels))[0])  # seeded
    scaled = temperature.cross_validated_scaling(logits, labels)
    t_first = temperature.fit_temperature(logits[first], labels[first])
    t_second = temperature.fit_temperature(logits[second], labels[second])
    assert scaled["temperature"] == pytest.approx((t_first + t_second) / 2)
    nll_second = metrics.negative_log_likelihood(
        metrics.softmax(logits[second] / t_first), labels[second]
    )
    nll_first = metrics.negative_log_likelihood(
        metrics.softmax(logits[first] / t_second), labels[first]
    )
    assert scaled["nll"] == pytest.approx((nll_first + nll_second) / 2)
    raw = metrics.prediction_metrics(metrics.softmax(logits), labels)
    assert scaled["nll"] < raw["nll"] and scaled["ece"] < raw["ece"]


def test_cross_validated_probabilities_scale_each_half_with_the_other_halfs_temperature():
    logits, labels = overconfident(seed=5)
    first, second = temperature.split_halves(len(labels))
    probabilities = temperature.cross_validated_probabilities(logits, labels)
    t_first = temperature.fit_temperature(logits[first], labels[first])
    np.testing.assert_allclose(probabilities[second], metrics.softmax(logits[second] / t_first))


def test_the_reliability_diagram_shows_the_reports_ece_and_counts_per_bin(tmp_path):
    """One number per metric: the scaled panel shows the report's ECE (mean of the halves),
    labelled, beside the pooled bars' own; bins of < 10 images are marked sparse."""
    from mixmo_tf.evaluation import plots

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 400)
    logits = rng.normal(0, 1, (400, 10))
    logits[np.arange(400), labels] += rng.normal(2, 1.5, 400)
    logits[:3] = 0.0  # three images at confidence 0.1: a sparse bin
    reported = temperature.cross_validated_scaling(logits, labels)
    scaled = temperature.cross_validated_probabilities(logits, labels)
    raw = metrics.softmax(logits)
    path = tmp_path / "reliability.png"
    raw_panel, scaled_panel = plots.reliability_diagram(
        str(path), raw, scaled, labels, reported["temperature"], reported["ece"]
    )
    assert path.stat().st_size > 0
    pooled = metrics.expected_calibration_error(scaled, labels)
    assert f"ECE {reported['ece']:.4f} (report: mean of the 2 halves)\n" in scaled_panel["title"]
    assert f"bars: halves pooled, ECE {pooled:.4f}" in scaled_panel["title"]
    assert raw_panel["title"] == f"Raw: ECE {metrics.expected_calibration_error(raw, labels):.4f}"
    for panel in (raw_panel, scaled_panel):
        assert panel["count"].sum() == 400
        np.testing.assert_array_equal(
            panel["sparse"], (panel["count"] > 0) & (panel["count"] < plots.SPARSE_BIN_IMAGES)
        )
    assert raw_panel["sparse"][1]  # the three images at 0.1 (bin (0.067, 0.133])
