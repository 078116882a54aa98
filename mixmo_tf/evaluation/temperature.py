"""Temperature scaling of the ensemble's mean logits (Guo et al. 2017; docs/method.md §10).

One scalar T divides the logits; it is fitted by minimising the NLL on held-out examples.
The NLL of softmax(beta * z) is convex in beta = 1 / T (a log-sum-exp of a linear function
minus a linear function), so its derivative is increasing in beta and a bisection finds the
minimum to float precision. The authors run LBFGS from T = 1 at several learning rates and
keep the best; both find the same minimum, and like theirs the result is never worse than
T = 1 on the examples it was fitted on.
"""

from __future__ import annotations

import numpy as np

from mixmo_tf.evaluation.metrics import prediction_metrics, softmax

# The authors' seed for the halves of the test split (their torch shuffle; ours is NumPy's,
# so the halves differ from theirs though the protocol is the same).
SPLIT_SEED = 31
# Searched range of beta = 1 / T; the bisection stops at a bound if the minimum is beyond.
_BETA_RANGE = (1e-3, 1e3)
_BISECTION_STEPS = 60  # the bracket of log beta shrinks to 14 / 2^60


def scaled_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Cross-entropy of softmax(logits / T), without the metric's epsilon (the fit's loss)."""
    scaled = np.asarray(logits, np.float64) / temperature
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    log_normaliser = np.log(np.exp(shifted).sum(axis=-1))
    return float(np.mean(log_normaliser - shifted[np.arange(len(labels)), labels]))


def _nll_slope(logits: np.ndarray, labels: np.ndarray, beta: float) -> float:
    """d NLL / d beta of softmax(beta * logits): mean of E_p[z] - z_label."""
    probabilities = softmax(beta * logits)
    expected = np.sum(probabilities * logits, axis=-1)
    return float(np.mean(expected - logits[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the NLL of softmax(logits / T) on (logits, labels).

    Args:
        logits: `(examples, classes)`, the ensemble's mean logits.
        labels: `(examples,)` integer classes.

    Returns:
        The fitted temperature; 1.0 if no T in the searched range lowers the NLL.
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    low, high = np.log(_BETA_RANGE[0]), np.log(_BETA_RANGE[1])
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if _nll_slope(logits, labels, np.exp(middle)) > 0:
            high = middle
        else:
            low = middle
    temperature = float(1.0 / np.exp((low + high) / 2))
    if scaled_nll(logits, labels, temperature) > scaled_nll(logits, labels, 1.0):
        return 1.0
    return temperature


def split_halves(num_examples: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint index sets covering `num_examples`, from a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(num_examples)
    return order[: num_examples // 2], order[num_examples // 2 :]


def _cross_fitted(
    ensemble_logits: np.ndarray, labels: np.ndarray, seed: int
) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """For each half: (its indices, the T fitted on the other half, its scaled probabilities)."""
    ensemble_logits = np.asarray(ensemble_logits, np.float64)
    labels = np.asarray(labels, np.int64)
    first, second = split_halves(len(labels), seed)
    halves = []
    for fit, held_out in ((first, second), (second, first)):
        temperature = fit_temperature(ensemble_logits[fit], labels[fit])
        halves.append((held_out, temperature, softmax(ensemble_logits[held_out] / temperature)))
    return halves


def cross_validated_scaling(
    ensemble_logits: np.ndarray, labels: np.ndarray, seed: int = SPLIT_SEED
) -> dict[str, float]:
    """The paper's temperature-scaled metrics: fit on one half of the test split, evaluate
    on the other, swap, and average the metrics and T over the two halves.

    Returns:
        The ensemble's prediction metrics after scaling, and `temperature` (the mean T).
    """
    labels = np.asarray(labels, np.int64)
    runs = [
        {**prediction_metrics(probabilities, labels[indices]), "temperature": temperature}
        for indices, temperature, probabilities in _cross_fitted(ensemble_logits, labels, seed)
    ]
    return {name: float(np.mean([run[name] for run in runs])) for name in runs[0]}


def cross_validated_probabilities(
    ensemble_logits: np.ndarray, labels: np.ndarray, seed: int = SPLIT_SEED
) -> np.ndarray:
    """Every example's probabilities scaled by the T fitted on the other half (for plots)."""
    probabilities = np.empty(np.shape(ensemble_logits), np.float64)
    for indices, _, scaled in _cross_fitted(ensemble_logits, labels, seed):
        probabilities[indices] = scaled
    return probabilities
