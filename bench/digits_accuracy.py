"""What the digits demo reaches: test accuracy of its flagfile's run in each precision.

Trains `flags/digits_wrn10-1_cut_mixmo.flags` (Cut-MixMo WRN-10-1, M=2, 600 steps on
scikit-learn's bundled digits) once per --precisions value in a temporary folder, evaluates
the final checkpoint on the 360 test digits, and prints one JSON line per run: ensemble and
member accuracies, NLL, ECE and the wall time. The runs are deterministic for a given
machine and precision. This is the source of the digits numbers in the README.

Example: python bench/digits_accuracy.py --precisions=float32 --precisions=mixed_bfloat16
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import harness
from absl import flags

from mixmo_tf.cli import flags as mixmo_flags
from mixmo_tf.config.choices import PRECISIONS
from mixmo_tf.evaluation.run import evaluate
from mixmo_tf.training.run import train

DIGITS_FLAGFILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "flags",
    "digits_wrn10-1_cut_mixmo.flags",
)


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_multi_enum(
        "precisions",
        ["float32"],
        [p for p in PRECISIONS if p != "auto"],
        "Precisions to train the demo in.",
        flag_values=values,
    )
    flags.DEFINE_string("flagfile_path", DIGITS_FLAGFILE, "The run to train.", flag_values=values)


def demo_config(flagfile: str, precision: str, model_dir: str):
    """The Config of `flagfile` in `precision`, writing to `model_dir`."""
    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    values(["main.py", f"--flagfile={flagfile}"])
    config = mixmo_flags.config_from_flags(values)
    return dataclasses.replace(config, precision=precision, model_dir=model_dir)


def train_and_evaluate(flagfile: str, precision: str) -> dict:
    """Trains and evaluates one run; its record."""
    with tempfile.TemporaryDirectory() as model_dir:
        config = demo_config(flagfile, precision, model_dir)
        with harness.progress_to_stderr():
            start = time.perf_counter()
            train(config)
            seconds = time.perf_counter() - start
            results = evaluate(config)
    members = [results[f"member_{i}_accuracy"] for i in range(config.num_members)]
    return {
        "bench": "digits_accuracy",
        "flagfile": os.path.relpath(flagfile),
        "precision": precision,
        "steps": results["step"],
        "accuracy": results["accuracy"],
        "member_accuracies": members,
        "nll": results["nll"],
        "ece": results["ece"],
        "train_s": seconds,
    }


def run(values: flags.FlagValues) -> None:
    """Trains the demo in each precision of --precisions and prints its JSON line."""
    for precision in values.precisions:
        harness.emit(train_and_evaluate(values.flagfile_path, precision))


if __name__ == "__main__":
    harness.run_script(define_flags, run)
