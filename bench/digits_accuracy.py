"""What the digits demo reaches: test accuracy of its flagfile's run per precision and seed.

Trains `flags/digits_wrn10-1_cut_mixmo.flags` (Cut-MixMo WRN-10-1, M=2, 600 steps on
scikit-learn's bundled digits) once per --precisions value and --seeds value in a temporary
folder, evaluates the final checkpoint on the 360 test digits with the project's evaluation
(`mixmo_tf.evaluation.evaluate`, whose numbers are `mixmo_tf.evaluation.metrics`'), and prints
one JSON line per run: ensemble and member accuracies, NLL, ECE and the training time. After
each precision's runs, a `digits_accuracy_summary` line gives their means. A run is
deterministic for a given machine, precision and seed. This is the source of the digits
numbers in the documentation (docs/getting-started.md, docs/method.md).

Example: python bench/digits_accuracy.py --precisions=float32,mixed_bfloat16 --seeds=0,1,2
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from typing import Any

import harness
from absl import flags

from mixmo_tf.cli import flags as mixmo_flags
from mixmo_tf.config import Config
from mixmo_tf.evaluation.run import evaluate
from mixmo_tf.training.run import train

DIGITS_FLAGFILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "flags",
    "digits_wrn10-1_cut_mixmo.flags",
)
# The per-run numbers a summary line averages.
_AVERAGED = ("accuracy", "mean_member_accuracy", "nll", "ece", "train_s")


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    harness.define_precisions_flag(values, ["float32"], "Precisions to train the demo in.")
    flags.DEFINE_list(
        "seeds",
        [],
        "Seeds (--seed of the run) to train each precision with; empty: the flagfile's own.",
        flag_values=values,
    )
    flags.register_validator(
        "seeds",
        lambda seeds: all(seed.isdigit() for seed in seeds),
        "--seeds must be non-negative integers, e.g. 0,1,2.",
        flag_values=values,
    )
    flags.DEFINE_string("flagfile_path", DIGITS_FLAGFILE, "The run to train.", flag_values=values)


def flagfile_config(flagfile: str) -> Config:
    """The Config that `main.py --flagfile=FLAGFILE` trains."""
    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    values(["main.py", f"--flagfile={flagfile}"])
    return mixmo_flags.config_from_flags(values)


def train_and_evaluate(config: Config, flagfile: str) -> dict[str, Any]:
    """Trains `config` in a temporary folder and evaluates it; its record.

    Args:
        config: the run; its model_dir is replaced by the temporary folder.
        flagfile: where `config` came from, recorded in the line.
    """
    with tempfile.TemporaryDirectory() as model_dir:
        config = dataclasses.replace(config, model_dir=model_dir)
        with harness.progress_to_stderr():
            start = time.perf_counter()
            train(config)
            seconds = time.perf_counter() - start
            results = evaluate(config)
    return {
        "bench": "digits_accuracy",
        "flagfile": os.path.relpath(flagfile),
        "precision": config.precision,
        "seed": config.seed,
        "steps": results["step"],
        "accuracy": results["accuracy"],
        "member_accuracies": [results[f"member_{i}_accuracy"] for i in range(config.num_members)],
        "mean_member_accuracy": results["mean_member_accuracy"],
        "nll": results["nll"],
        "ece": results["ece"],
        "train_s": seconds,
    }


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The means over the runs of one precision (`records`, one per seed)."""
    return {
        "bench": "digits_accuracy_summary",
        "flagfile": records[0]["flagfile"],
        "precision": records[0]["precision"],
        "seeds": [record["seed"] for record in records],
        **{f"mean_{key}": statistics.fmean(r[key] for r in records) for key in _AVERAGED},
    }


def run(values: flags.FlagValues) -> None:
    """Trains the demo per precision and seed, printing each run's line, then the means."""
    config = flagfile_config(values.flagfile_path)
    seeds = [int(seed) for seed in values.seeds] or [config.seed]
    for precision in values.precisions:
        records = []
        for seed in seeds:
            run_config = dataclasses.replace(config, precision=precision, seed=seed)
            records.append(train_and_evaluate(run_config, values.flagfile_path))
            harness.emit(records[-1])
        harness.emit(summary(records))


if __name__ == "__main__":
    harness.run_script(define_flags, run)
