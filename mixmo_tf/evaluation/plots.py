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
