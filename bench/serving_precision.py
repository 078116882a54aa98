"""Serving in bfloat16 against float32: throughput, batch-1 latency, probability differences.

The export computes in float32 (`SERVING_PRECISION` of mixmo_tf/serving/export.py). This
measures whether another precision would serve better: it exports one trained run
(--run_dir) with `export_run` once per --precisions value (the first, float32 by default, is
the reference: what `main.py --mode=export` writes), loads each export back as a server would
(`tf.saved_model.load`, signatures only) and prints one JSON line each:

- `serving_precision_throughput`: per export, `serving_default` on --batch_size uint8 test
  images, the exports interleaved; `over_first` is each median over the reference's,
  `paired_over_first` the median over rounds of each round's ratio.
- `serving_precision_latency`: per export, batch 1 (`serving_default`, one test image),
  interleaved over --latency_rounds calls: p50 and p99 in milliseconds.
- `serving_precision_agreement`: per export after the first, on the whole test split: the
  largest absolute difference of its ensemble and member probabilities to the reference's,
  the share of images whose top class agrees, and both exports' accuracy, NLL and ECE
  (`mixmo_tf.evaluation.metrics.prediction_metrics`).

Example (the digits demo as the trained run):
    python main.py --flagfile=flags/digits_wrn10-1_cut_mixmo.flags --model_dir=/tmp/digits
    python bench/serving_precision.py --run_dir=/tmp/digits --precisions=float32,mixed_bfloat16
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import harness
import numpy as np
import tensorflow as tf
from absl import flags
from serving import percentiles_ms, signature_call, timing_ratios

from mixmo_tf import data
from mixmo_tf.config.run_record import recorded_config
from mixmo_tf.evaluation.metrics import prediction_metrics
from mixmo_tf.serving.export import export_run
from mixmo_tf.serving.graph import SERVING_DEFAULT

_MEASURED = ("accuracy", "nll", "ece")  # the prediction metrics an agreement line reports


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_string(
        "run_dir", None, "A trained run's folder (main.py's --model_dir).", flag_values=values
    )
    flags.mark_flag_as_required("run_dir", flag_values=values)
    harness.define_precisions_flag(
        values,
        ["float32", "mixed_bfloat16"],
        "Precisions to export the run in; the first is the reference.",
    )
    flags.DEFINE_integer(
        "batch_size", 256, "Images per call of the throughput rounds.", flag_values=values
    )
    flags.DEFINE_integer("warmup_steps", 2, "Untimed rounds.", flag_values=values)
    flags.DEFINE_integer(
        "timed_steps", 5, "Timed throughput rounds; medians reported.", flag_values=values
    )
    flags.DEFINE_integer(
        "latency_rounds", 100, "Timed batch-1 calls per export.", flag_values=values
    )


def served_probabilities(
    signature, images: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ensemble `(N, classes)`, members `(N, members, classes)`) probabilities of an export's
    `serving_default` on uint8 `images`, fed `batch_size` at a time."""
    outputs = [
        signature(images=tf.constant(images[start : start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]
    return tuple(
        np.concatenate([output[key].numpy() for output in outputs])
        for key in ("probabilities", "member_probabilities")
    )


def agreement_record(
    served: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    labels: np.ndarray,
) -> dict[str, Any]:
    """How far one export's test predictions are from the reference export's.

    Args:
        served: its (ensemble, member) probabilities (`served_probabilities`).
        reference: the reference export's, on the same images.
        labels: the images' classes.
    """
    probabilities, members = served
    reference_probabilities, reference_members = reference
    ours = prediction_metrics(probabilities, labels)
    theirs = prediction_metrics(reference_probabilities, labels)
    return {
        "num_examples": len(labels),
        "max_abs_probability_difference": float(
            np.max(np.abs(probabilities - reference_probabilities))
        ),
        "max_abs_member_probability_difference": float(np.max(np.abs(members - reference_members))),
        "top1_agreement": float(
            np.mean(probabilities.argmax(axis=-1) == reference_probabilities.argmax(axis=-1))
        ),
        **{key: ours[key] for key in _MEASURED},
        **{f"reference_{key}": theirs[key] for key in _MEASURED},
    }


def compare_exports(values: flags.FlagValues) -> list[dict[str, Any]]:
    """The throughput, latency and agreement records of the run exported in each precision."""
    config = recorded_config(values.run_dir)
    images, labels = data.load_split(config.spec, "test", config.data_dir, config.download)
    # The first --batch_size test images, repeated if the split is smaller.
    batch = tf.constant(np.resize(images, (values.batch_size, *images.shape[1:])))
    single = tf.constant(images[:1])
    precisions = values.precisions
    with tempfile.TemporaryDirectory() as directory:
        signatures = {
            precision: tf.saved_model.load(
                export_run(values.run_dir, os.path.join(directory, precision), precision=precision)
            ).signatures[SERVING_DEFAULT]
            for precision in precisions
        }
        throughput = harness.interleaved_medians(
            {p: signature_call(signatures[p], "images", batch) for p in precisions},
            values.warmup_steps,
            values.timed_steps,
        )
        latency = harness.interleaved_medians(
            {p: signature_call(signatures[p], "images", single) for p in precisions},
            values.warmup_steps,
            values.latency_rounds,
        )
        predictions = {
            p: served_probabilities(signatures[p], images, values.batch_size) for p in precisions
        }
    common = {"run_dir": values.run_dir, "dataset": config.dataset, "members": config.num_members}
    reference = precisions[0]
    records = []
    for precision in precisions:
        line = {**common, "precision": precision, "reference_precision": reference}
        timing = throughput[precision]
        records.append(
            {
                **line,
                "bench": "serving_precision_throughput",
                "batch_size": values.batch_size,
                "median_s": timing["median_s"],
                "images_per_s": values.batch_size / timing["median_s"],
                **timing_ratios(timing, throughput[reference], "first"),
                "durations_s": timing["durations_s"],
            }
        )
        records.append(
            {
                **line,
                "bench": "serving_precision_latency",
                "batch_size": 1,
                **percentiles_ms(latency[precision]["durations_s"]),
                "rounds": len(latency[precision]["durations_s"]),
                "durations_s": latency[precision]["durations_s"],
            }
        )
        if precision != reference:
            records.append(
                {
                    **line,
                    "bench": "serving_precision_agreement",
                    **agreement_record(predictions[precision], predictions[reference], labels),
                }
            )
    return records


def run(values: flags.FlagValues) -> None:
    """Compares the exports of --run_dir and prints their JSON lines."""
    with harness.progress_to_stderr():
        records = compare_exports(values)
    for record in records:
        harness.emit(record)


if __name__ == "__main__":
    harness.run_script(define_flags, run)
