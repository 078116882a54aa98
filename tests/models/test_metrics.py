"""The evaluation metrics follow docs/method.md §10.

Proves that, against plain numpy implementations and hand-computed examples:
- NegativeLogLikelihood is -mean log(p_y + 1e-12), finite even when p_y = 0;
- BrierScore is the mean over samples of sum_k (p_k - onehot_k)^2 / K;
- ExpectedCalibrationError uses 15 equal-width confidence bins (lower, upper], weights each
  bin's |accuracy - confidence| gap by its share of samples, and accumulates over
  `update_state` calls exactly as one call on the concatenation (not the mean of batch ECEs);
- all three reset and round-trip through `get_config`.
"""

import keras
import numpy as np
import pytest

from mixmo_tf.evaluation import metrics as evaluation_metrics
from mixmo_tf.models.metrics import BrierScore, ExpectedCalibrationError, NegativeLogLikelihood

NUM_CLASSES = 10


def random_predictions(seed: int, count: int = 300, num_classes: int = NUM_CLASSES):
    """Labels and probabilities, confidences spread over all bins, right ~60% of the time."""
    rng = np.random.default_rng(seed)
    concentration = rng.choice([0.05, 0.3, 2.0], size=count)[:, None]
    probabilities = np.stack([rng.dirichlet(np.full(num_classes, c)) for c in concentration[:, 0]])
    probabilities = probabilities.astype(np.float32)
    random_labels = rng.integers(0, num_classes, count)
    labels = np.where(rng.uniform(size=count) < 0.6, probabilities.argmax(axis=1), random_labels)
    return labels.astype(np.int32), probabilities


def numpy_nll(labels, probabilities):
    return -np.mean(
        np.log(probabilities[np.arange(len(labels)), labels].astype(np.float64) + 1e-12)
    )


def numpy_brier(labels, probabilities):
    one_hot = np.eye(probabilities.shape[1])[labels]
    return np.mean(np.sum((probabilities - one_hot) ** 2, axis=1) / probabilities.shape[1])


def numpy_ece(labels, probabilities, num_bins=15):
    """Textbook ECE: bins (lo, hi] over [0, 1], sum of |acc - conf| weighted by bin share."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return ece


METRICS = [
    (NegativeLogLikelihood, numpy_nll),
    (BrierScore, numpy_brier),
    (ExpectedCalibrationError, numpy_ece),
]


def evaluate(metric, *batches) -> float:
    for labels, probabilities in batches:
        metric.update_state(labels, probabilities)
    return float(metric.result())


@pytest.mark.parametrize("metric_class, reference", METRICS)
def test_metric_matches_numpy(metric_class, reference):
    labels, probabilities = random_predictions(0)
    assert evaluate(metric_class(), (labels, probabilities)) == pytest.approx(
        reference(labels, probabilities), rel=1e-5, abs=1e-7
    )


@pytest.mark.parametrize("metric_class, reference", METRICS)
def test_accumulating_batches_equals_one_call_on_the_concatenation(metric_class, reference):
    labels, probabilities = random_predictions(1, count=250)
    splits = [0, 17, 100, 101, 250]  # uneven batches, one of a single sample
    batches = [(labels[a:b], probabilities[a:b]) for a, b in zip(splits[:-1], splits[1:])]
    accumulated = evaluate(metric_class(), *batches)
    assert accumulated == pytest.approx(evaluate(metric_class(), (labels, probabilities)), rel=1e-5)
    assert accumulated == pytest.approx(reference(labels, probabilities), rel=1e-5)


def test_ece_is_not_the_mean_of_batch_eces():
    """Guards the accumulation: averaging per-batch ECEs would give a different number."""
    labels, probabilities = random_predictions(2, count=200)
    halves = [(labels[:60], probabilities[:60]), (labels[60:], probabilities[60:])]
    mean_of_batches = np.mean([numpy_ece(*half) for half in halves])
    accumulated = evaluate(ExpectedCalibrationError(), *halves)
    assert abs(mean_of_batches - numpy_ece(labels, probabilities)) > 1e-3
    assert accumulated == pytest.approx(numpy_ece(labels, probabilities), rel=1e-5)


@pytest.mark.parametrize("metric_class, reference", METRICS)
def test_reset_state_forgets_previous_batches(metric_class, reference):
    metric = metric_class()
    evaluate(metric, random_predictions(3))
    metric.reset_state()
    labels, probabilities = random_predictions(4, count=50)
    expected = reference(labels, probabilities)
    assert evaluate(metric, (labels, probabilities)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("metric_class, reference", METRICS)
def test_config_round_trip_gives_same_results(metric_class, reference):
    metric = metric_class(name="custom")
    config = metric.get_config()
    labels, probabilities = random_predictions(5)
    for restored in (
        metric_class.from_config(config),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric)),
    ):
        assert type(restored) is metric_class and restored.name == "custom"
        fresh = evaluate(metric_class(), (labels, probabilities))
        assert evaluate(restored, (labels, probabilities)) == fresh


def test_ece_number_of_bins_round_trips_and_matters():
    metric = ExpectedCalibrationError(num_bins=4)
    assert ExpectedCalibrationError.from_config(metric.get_config()).num_bins == 4
    assert ExpectedCalibrationError().num_bins == 15
    labels, probabilities = random_predictions(6)
    expected = numpy_ece(labels, probabilities, 4)
    assert evaluate(metric, (labels, probabilities)) == pytest.approx(expected, rel=1e-5)
    assert abs(numpy_ece(labels, probabilities, 4) - numpy_ece(labels, probabilities, 15)) > 1e-4
    with pytest.raises(ValueError, match="num_bins must be >= 1"):
        ExpectedCalibrationError(num_bins=0)


def test_ece_bins_include_their_upper_edge():
    """With 4 bins the edges 0.25, 0.5, 0.75 are exact: a confidence of 0.5 is in (0.25, 0.5]."""
    labels = np.array([0, 1, 0, 0])
    probabilities = np.array(
        [[0.5, 0.25, 0.25], [0.4, 0.3, 0.3], [0.75, 0.25, 0.0], [0.7, 0.2, 0.1]], np.float32
    )
    # Bin (0.25, 0.5]: confidences 0.5 (right) and 0.4 (wrong): |0.5 - 0.45| * 2/4.
    # Bin (0.5, 0.75]: 0.75 and 0.7, both right: |1 - 0.725| * 2/4.
    expected = 0.05 * 2 / 4 + 0.275 * 2 / 4
    assert numpy_ece(labels, probabilities, 4) == pytest.approx(expected)
    metric = ExpectedCalibrationError(num_bins=4)
    assert evaluate(metric, (labels, probabilities)) == pytest.approx(expected, rel=1e-5)


def test_ece_bins_of_confidences_on_k_over_15_are_the_authors_numpy_bins():
    """float32 confidences nearest to k/15 against float64 np.linspace(0, 1, 16) boundaries.

    Some of them are just above k/15 (0.2f = 0.2000000030) and so in the upper bin, some
    just below: exactly what the authors' numpy ECE gives, which a bin index computed as
    ceil(15 * confidence) - 1 in float32 does not.
    """
    confidences = np.float32(np.arange(1, 15) / 15.0)
    # 16 classes: the 15 others share 1 - confidence, each below the confidence itself.
    probabilities = np.empty((14, 16), np.float32)
    probabilities[:] = ((1.0 - confidences) / 15.0)[:, None]
    probabilities[:, 0] = confidences
    assert np.array_equal(probabilities.max(axis=1), confidences)
    labels = np.zeros(14, np.int32)
    metric = ExpectedCalibrationError()
    metric.update_state(labels, probabilities)
    edges = np.linspace(0.0, 1.0, 16)
    authors_counts = [
        np.sum((confidences > low) & (confidences <= high)) for low, high in zip(edges, edges[1:])
    ]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(metric.counts), authors_counts)
    float32_ceil = np.ceil(np.float32(15) * confidences) - 1
    authors_bins = np.sum(confidences[:, None] > edges[None, 1:-1], axis=1)
    assert (float32_ceil != authors_bins).any(), "the boundary cases this test is about"


def test_nll_is_finite_when_the_true_class_has_zero_probability():
    probabilities = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)
    value = evaluate(NegativeLogLikelihood(), (np.array([1, 0]), probabilities))
    assert value == pytest.approx((-np.log(1e-12) - np.log(0.5)) / 2, rel=1e-5)


def test_hand_computed_brier_and_ece():
    labels = np.array([0, 1, 2, 0])
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.15, 0.15, 0.7], [0.5, 0.3, 0.2]], np.float32
    )
    # Brier per sample: sum of squared errors / 3.
    per_sample = [
        (0.01 + 0.0025 + 0.0025) / 3,
        (0.81 + 0.9025 + 0.0025) / 3,
        (0.0225 + 0.0225 + 0.09) / 3,
        (0.25 + 0.09 + 0.04) / 3,
    ]
    assert evaluate(BrierScore(), (labels, probabilities)) == pytest.approx(
        np.mean(per_sample), rel=1e-5
    )
    # 15 bins of width 1/15: 0.9 -> (0.8667, 0.9333], 0.7 -> (0.6667, 0.7333],
    # 0.5 -> (0.4667, 0.5333].
    # Bin of 0.9: one right, one wrong: |0.5 - 0.9| * 2/4.
    # Bin of 0.7: |1 - 0.7| / 4. Bin of 0.5: |1 - 0.5| / 4.
    expected_ece = 0.4 * 2 / 4 + 0.3 / 4 + 0.5 / 4
    ece = evaluate(ExpectedCalibrationError(), (labels, probabilities))
    assert ece == pytest.approx(expected_ece, rel=1e-5)


def test_ece_sample_weights_of_zero_drop_those_samples():
    labels, probabilities = random_predictions(seed=7)
    weights = np.zeros(len(labels), np.float32)
    weights[::2] = 1.0
    metric = ExpectedCalibrationError()
    metric.update_state(labels, probabilities, sample_weight=weights)
    kept = numpy_ece(labels[::2], probabilities[::2])
    assert float(metric.result()) == pytest.approx(kept, abs=1e-5)


def test_the_streamed_metrics_equal_the_reported_ones():
    """Training's per-epoch ECE / NLL / Brier are the evaluation's, over any batching.

    The evaluation (`mixmo_tf.evaluation.metrics`) defines the bins and the epsilon; the
    streaming metrics take them from there. Confidences exactly on bin edges included.
    """
    labels, probabilities = random_predictions(seed=7, count=250)
    edges = np.linspace(0.0, 1.0, 16)[1:-1].astype(np.float32)
    on_edges = np.full((len(edges), NUM_CLASSES), 0.0, np.float32)
    on_edges[:, 0] = edges
    on_edges[:, 1:] = ((1 - edges) / (NUM_CLASSES - 1))[:, None]
    probabilities = np.concatenate([probabilities, on_edges])
    labels = np.concatenate([labels, np.zeros(len(edges), np.int32)])
    reported = evaluation_metrics.prediction_metrics(probabilities, labels)
    batches = [(labels[a:b], probabilities[a:b]) for a, b in ((0, 97), (97, 98), (98, 264))]
    for metric, name in (
        (ExpectedCalibrationError(), "ece"),
        (NegativeLogLikelihood(), "nll"),
        (BrierScore(), "brier"),
    ):
        assert evaluate(metric, *batches) == pytest.approx(reported[name], rel=1e-5, abs=1e-7)
