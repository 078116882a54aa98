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
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in results["figures"]]
    return "\n".join(lines) + "\n"
