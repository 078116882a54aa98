"""PNG figures of an evaluation (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from mixmo_tf.evaluation.metrics import calibration_bins, expected_calibration_error  # noqa: E402


def _reliability_panel(axis, probabilities: np.ndarray, labels: np.ndarray, title: str) -> None:
    bins = calibration_bins(probabilities.max(axis=-1), probabilities.argmax(axis=-1) == labels)
    edges = bins["edges"]
    width = np.diff(edges)
    filled = bins["count"] > 0
    accuracy = np.where(filled, bins["accuracy"], 0.0)
    confidence = np.where(filled, bins["confidence"], 0.0)
    axis.bar(edges[:-1], accuracy, width, align="edge", edgecolor="black", label="accuracy")
    axis.bar(
        edges[:-1],
        confidence - accuracy,
        width,
        bottom=accuracy,
        align="edge",
        color="tab:red",
        alpha=0.35,
        label="gap to confidence",
    )
    axis.plot([0, 1], [0, 1], "k--", linewidth=1)
    ece = expected_calibration_error(probabilities, labels)
    axis.set(
        title=f"{title}: ECE {ece:.4f}",
        xlabel="confidence (max probability)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    axis.legend(loc="upper left")


def reliability_diagram(
    path: str,
    probabilities: np.ndarray,
    scaled_probabilities: np.ndarray,
    labels: np.ndarray,
    temperature: float,
) -> None:
    """Writes the reliability diagrams (15 bins) before and after temperature scaling."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
    _reliability_panel(axes[0], probabilities, labels, "Raw")
    _reliability_panel(
        axes[1], scaled_probabilities, labels, f"Temperature-scaled (mean T={temperature:.3f})"
    )
    axes[0].set_ylabel("accuracy")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def severity_curves(path: str, clean: dict, by_severity: dict[str, dict[str, float]]) -> None:
    """Writes accuracy and ECE against corruption severity (0 = the clean test split),
    averaged over the corruption types."""
    severities = [0, *sorted(int(s) for s in by_severity)]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric, label in ((axes[0], "accuracy", "accuracy"), (axes[1], "ece", "ECE")):
        values = [clean[metric]] + [by_severity[str(s)][metric] for s in severities[1:]]
        axis.plot(severities, values, "o-")
        axis.set(xlabel="corruption severity (0: clean)", ylabel=label, xticks=severities)
        axis.grid(alpha=0.3)
    axes[0].set_title("Accuracy under corruption (mean over types)")
    axes[1].set_title("Calibration under corruption (mean over types)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def ood_histograms(
    path: str, scores: dict[str, tuple[np.ndarray, np.ndarray]], ood_name: str
) -> None:
    """Writes one histogram per OOD score: in-distribution test images against OOD ones."""
    figure, axes = plt.subplots(1, len(scores), figsize=(5 * len(scores), 4))
    for axis, (name, (inside, outside)) in zip(np.atleast_1d(axes), scores.items()):
        bins = np.histogram_bin_edges(np.concatenate([inside, outside]), bins=30)
        axis.hist(inside, bins, alpha=0.6, density=True, label="test (in-distribution)")
        axis.hist(outside, bins, alpha=0.6, density=True, label=f"{ood_name} (OOD)")
        axis.set(title=name.replace("_", " "), xlabel="confidence score (higher: more in)")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
