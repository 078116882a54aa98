"""PNG figures of an evaluation (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from mixmo_tf.evaluation.metrics import calibration_bins, expected_calibration_error  # noqa: E402

# Bins with fewer images are drawn hatched: one or two images make a full-height bar that
# says nothing about calibration.
SPARSE_BIN_IMAGES = 10


def _reliability_panel(
    axes, probabilities: np.ndarray, labels: np.ndarray, title: str, reported_ece: float | None
) -> dict:
    """Draws one reliability diagram with its per-bin image counts underneath; returns what
    it shows (`title`, `count`, `sparse` per bin)."""
    axis, counts_axis = axes
    bins = calibration_bins(probabilities.max(axis=-1), probabilities.argmax(axis=-1) == labels)
    edges, count = bins["edges"], bins["count"]
    width = np.diff(edges)
    sparse = (count > 0) & (count < SPARSE_BIN_IMAGES)
    accuracy = np.where(count > 0, bins["accuracy"], 0.0)
    confidence = np.where(count > 0, bins["confidence"], 0.0)
    for shown, style in (
        (~sparse, {"edgecolor": "black", "label": "accuracy"}),
        (
            sparse,
            {
                "edgecolor": "gray",
                "facecolor": "none",
                "hatch": "//",
                "label": f"accuracy, < {SPARSE_BIN_IMAGES} images",
            },
        ),
    ):
        if shown.any():
            axis.bar(edges[:-1][shown], accuracy[shown], width[shown], align="edge", **style)
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
    pooled = expected_calibration_error(probabilities, labels)
    if reported_ece is None:
        full_title = f"{title}: ECE {pooled:.4f}"
    else:  # the report averages the two halves; the bars pool them
        full_title = (
            f"{title}\nECE {reported_ece:.4f} (report: mean of the 2 halves)\n"
            f"bars: halves pooled, ECE {pooled:.4f}"
        )
    axis.set_title(full_title, fontsize="medium")
    axis.set(xlim=(0, 1), ylim=(0, 1))
    axis.legend(loc="upper left", fontsize="small")
    hatches = ["//" if few else "" for few in sparse]
    counts_axis.bar(
        edges[:-1], count, width, align="edge", color="gray", edgecolor="black", hatch=hatches
    )
    counts_axis.set(xlabel="confidence (max probability)", xlim=(0, 1))
    return {"title": full_title, "count": count, "sparse": sparse}


def reliability_diagram(
    path: str,
    probabilities: np.ndarray,
    scaled_probabilities: np.ndarray,
    labels: np.ndarray,
    temperature: float,
    scaled_ece: float,
) -> list[dict]:
    """Writes the reliability diagrams (15 bins) before and after temperature scaling, each
    over a histogram of the images per bin; returns what each panel shows.

    Args:
        scaled_ece: the temperature-scaled ECE of the report (mean over the two halves of
            the test split), shown beside the ECE of the pooled bars.
    """
    figure, axes = plt.subplots(
        2, 2, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": (3, 1)}
    )
    panels = [
        _reliability_panel(axes[:, 0], probabilities, labels, "Raw", None),
        _reliability_panel(
            axes[:, 1],
            scaled_probabilities,
            labels,
            f"Temperature-scaled (mean T={temperature:.3f})",
            scaled_ece,
        ),
    ]
    axes[0, 0].set_ylabel("accuracy")
    axes[1, 0].set_ylabel("images")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return panels


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
