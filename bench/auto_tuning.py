"""What `--precision=auto` and the oneDNN choice cost a training run's start, and what they find.

For each network, with an empty cache, as `main.py --mode=train` would: the oneDNN choice
(two child processes, one per setting, where TensorFlow leaves oneDNN off) and the in-process
timing of the precisions `auto` weighs on this CPU (`--time_both` also times
mixed_bfloat16 on a CPU without bfloat16 instructions, where `auto` skips it). One JSON
line per network: the wall seconds of each part, the step times found, and what `auto`
itself pays (`auto_cost_s`: the oneDNN choice, plus the precision timing only where the CPU
has bfloat16 instructions) as a share of one epoch of the network's paper dataset in
float32 steps (`cost_over_epoch`; the bench process keeps TensorFlow's oneDNN setting).

Example: python bench/auto_tuning.py --networks=10-1,16-4,28-10
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import Any

import harness
from absl import flags

from mixmo_tf.tuning import machine, onednn, rules, step_timing
from mixmo_tf.tuning.step_times import StepTimeCache


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_list("networks", ["10-1", "16-4"], "WRNs as depth-width.", flag_values=values)
    flags.DEFINE_integer("members", 2, "M.", flag_values=values)
    flags.DEFINE_integer("batch_size", 64, "Slots per batch B.", flag_values=values)
    flags.DEFINE_integer("batch_repetitions", 4, "b.", flag_values=values)
    flags.DEFINE_bool(
        "time_both",
        False,
        "Time float32 and mixed_bfloat16 in-process even where auto times float32 only.",
        flag_values=values,
    )


def _timed(function) -> tuple[Any, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def measure_network(network: str, values: flags.FlagValues) -> dict[str, Any]:
    """The record of what choosing costs and finds for `network` (fresh, empty cache)."""
    config = harness.bench_config(
        network,
        values.members,
        batch_size=values.batch_size,
        batch_repetitions=values.batch_repetitions,
    )
    config = dataclasses.replace(config, precision="auto", model_dir="")
    requested = os.environ.pop(machine.ONEDNN_VARIABLE, None)  # as a user's shell has it
    try:
        with tempfile.TemporaryDirectory() as folder:
            choice, onednn_s = _timed(lambda: onednn.choose_onednn(config, StepTimeCache(folder)))
    finally:
        if requested is not None:
            os.environ[machine.ONEDNN_VARIABLE] = requested
    precisions = rules.precisions_to_time(config, machine.this_machine())
    auto_times_precisions = len(precisions) > 1  # one candidate is taken untimed
    if values.time_both:
        precisions = (rules.REFERENCE, rules.BFLOAT16)
    # Timed even where auto does not, for the float32 step of the epoch estimate.
    seconds, precision_s = _timed(lambda: step_timing.time_training_steps(config, precisions))
    epoch_s = config.derived_steps_per_epoch * seconds[rules.REFERENCE]
    auto_cost_s = onednn_s + (precision_s if auto_times_precisions else 0.0)
    return {
        "bench": "auto_tuning",
        "network": harness.network_name(network),
        "members": values.members,
        "batch_size": config.batch_size,
        "batch_repetitions": config.batch_repetitions,
        "onednn_choice": choice.record(),
        "onednn_choice_s": onednn_s,
        "auto_times_precisions": auto_times_precisions,
        "precisions_timed": list(precisions),
        "precision_step_s": seconds,
        "precision_timing_s": precision_s,
        "chosen_precision": rules.fastest_precision(seconds),
        "epoch_s_float32": epoch_s,
        "auto_cost_s": auto_cost_s,
        "cost_over_epoch": auto_cost_s / epoch_s,
    }


def run(values: flags.FlagValues) -> None:
    """Measures each network of --networks and prints its JSON line."""
    for network in values.networks:
        with harness.progress_to_stderr():
            record = measure_network(network, values)
        harness.emit(record)


if __name__ == "__main__":
    harness.run_script(define_flags, run)
