"""`report.md`: the evaluation's tables in Markdown."""

from __future__ import annotations

# Rows of the metric tables: (key, label, whether it is a fraction shown in percent).
_METRICS = (
    ("accuracy", "Top-1 accuracy (%)", True),
    ("top5", "Top-5 accuracy (%)", True),
    ("nll", "NLL", False),
    ("ece", "ECE (15 bins)", False),
    ("brier", "Brier", False),
    ("auroc", "AUROC (confidence vs correct)", False),
)


def _format(value, percent: bool) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def _table(columns: list[tuple[str, dict]], rows) -> list[str]:
    lines = ["| Metric | " + " | ".join(name for name, _ in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for key, label, percent in rows:
        cells = [_format(values.get(key), percent) for _, values in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _member_rows(results: dict) -> list[tuple[str, str, bool]]:
    members = sorted(k for k in results if k.startswith("member_") and k.endswith("_accuracy"))
    rows = [(key, f"Member {key.split('_')[1]} accuracy (%)", True) for key in members]
    return rows + [
        ("mean_member_accuracy", "Mean member accuracy (%)", True),
        ("ratio_errors", "Diversity: ratio-error (N01+N10)/N00", False),
        ("disagreement", "Diversity: pairwise disagreement", False),
    ]


def _corruption_section(corruptions: dict | None) -> list[str]:
    if not corruptions:
        return []
    metrics = [
        (name, label, percent) for name, label, percent in _METRICS if name in corruptions["mean"]
    ]
    lines = ["## Corrupted test sets", ""]
    lines += _table(
        [
            ("Mean (19 types x 5 severities)", corruptions["mean"]),
            ("Mean (15 benchmark types)", corruptions["benchmark_mean"]),
        ]
        + [(f"Severity {s}", values) for s, values in corruptions["by_severity"].items()],
        metrics,
    )
    lines += ["", "Per corruption type (mean over the 5 severities):", ""]
    lines.append("| Corruption | " + " | ".join(label for _, label, _ in metrics) + " |")
    lines.append("|---" * (len(metrics) + 1) + "|")
    for name, values in corruptions["by_corruption_mean"].items():
        cells = [_format(values[key], percent) for key, _, percent in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _ood_section(ood: dict | None) -> list[str]:
    if not ood:
        return []
    scores = [name for name in ood if isinstance(ood[name], dict)]
    lines = [
        f"## Out-of-distribution detection: {ood['dataset']} ({ood['num_examples']} images)",
        "",
        "In-distribution test images are the positives; each score is a confidence.",
        "",
    ]
    rows = (
        ("auroc", "AUROC", False),
        ("aupr_in", "AUPR-In", False),
        ("aupr_out", "AUPR-Out", False),
        ("fpr_at_95_tpr", "FPR at 95% TPR", False),
    )
    return lines + _table([(name.replace("_", " "), ood[name]) for name in scores], rows) + [""]


def markdown_report(results: dict) -> str:
    """The Markdown report of `results` (as written to results.json)."""
    runs = results.get("runs", [])
    title = f"Ensemble of {len(runs)} runs" if runs else results["model_dir"]
    lines = [f"# Evaluation: {title}", ""]
    lines += [
        f"Test split of `{results['dataset']}` ({results['num_examples']} images), newest "
        f"checkpoint (step {results['step']}, the final one of a finished run). Ensemble "
        "prediction: softmax of the members' mean logits.",
        "",
        "## Ensemble",
        "",
    ]
    scaled = results["temperature_scaled"]
    lines += _table(
        [("Raw", results), (f"Temperature-scaled (T={scaled['temperature']:.3f})", scaled)],
        _METRICS,
    )
    lines += [
        "",
        "Temperature-scaled: the paper's protocol. The test split is halved by a seeded "
        "shuffle; T is fitted on one half (minimum NLL), applied to the other, and the halves "
        "swapped; metrics and T are the means over the two halves.",
        "",
    ]
    if "validation_temperature" in results:
        fitted = results["validation_temperature"]
        lines += [
            f"Temperature fitted on the {fitted['num_examples']} held-out training images "
            f"(--validation_split): T={fitted['temperature']:.4f}; test metrics with it:",
            "",
        ]
        lines += _table([("Validation T", fitted["test"])], _METRICS)
        lines.append("")
    lines += ["## Members and diversity", ""]
    lines += _table([("Value", results)], _member_rows(results))
    lines.append("")
    if runs:
        lines += ["## Runs of the ensemble", ""]
        lines += _table([(run["model_dir"], run) for run in runs], _METRICS[:4])
        lines.append("")
    epochs = results.get("epochs")
    if epochs:
        lines += [
            "## Best and final epoch (per-epoch test evaluations of training)",
            "",
            f"The paper reports its best test epoch (here epoch {epochs['best']['epoch']}); "
            "choosing an epoch on the test split is optimistic. The tables above are the "
            f"newest checkpoint; the final epoch is epoch {epochs['final']['epoch']}.",
            "",
        ]
        lines += _table(
            [
                (f"Final epoch ({epochs['final']['epoch']})", epochs["final"]),
                (f"Best epoch ({epochs['best']['epoch']})", epochs["best"]),
            ],
            _METRICS[:5],
        )
        lines.append("")
    lines += _corruption_section(results.get("corruptions")) + _ood_section(results.get("ood"))
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in results["figures"]]
    return "\n".join(lines) + "\n"
