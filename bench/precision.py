"""Which precision and compiler are fastest here: the training step in each, interleaved.

Times the same MixMo training step (as bench/train_step.py does) in every combination of
--precisions and --jit_compiles, interleaved in one process, and prints one JSON line per
combination with its step time over the first combination's. This is the measurement behind
the per-device default of `--precision` and `--jit_compile` (mixmo_tf/tuning/). Run it
under ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 or AVX512_CORE to see a CPU without AMX
(Cooper Lake, Skylake), as oneDNN then leaves out the newer instructions.

Example: python bench/precision.py --networks=28-10 --precisions=float32,mixed_bfloat16
"""

from __future__ import annotations

import itertools
from typing import Any

import harness
from absl import flags
from train_step import prepare_steps


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_list("networks", ["16-4"], "WRNs as depth-width.", flag_values=values)
    flags.DEFINE_integer("members", 2, "M (1 = the plain network).", flag_values=values)
    flags.DEFINE_integer("batch_size", 64, "Slots per batch B.", flag_values=values)
    flags.DEFINE_integer("batch_repetitions", 4, "b for M > 1.", flag_values=values)
    harness.define_precisions_flag(
        values,
        ["float32", "mixed_bfloat16"],
        "Precisions to compare; the first is the reference of the ratios.",
    )
    flags.DEFINE_list(
        "jit_compiles", ["false", "true"], "XLA settings to compare.", flag_values=values
    )
    flags.DEFINE_integer("warmup_steps", 2, "Untimed rounds.", flag_values=values)
    flags.DEFINE_integer("timed_steps", 5, "Timed rounds; medians reported.", flag_values=values)


def compare_network(network: str, values: flags.FlagValues) -> list[dict[str, Any]]:
    """One record per (precision, XLA) of `network`, timed interleaved."""
    variants = list(
        itertools.product(values.precisions, [j.lower() == "true" for j in values.jit_compiles])
    )
    configs = {
        (precision, jit_compile): harness.bench_config(
            network,
            values.members,
            batch_size=values.batch_size,
            batch_repetitions=values.batch_repetitions,
            precision=precision,
            jit_compile=jit_compile,
            steps_per_epoch=values.warmup_steps + values.timed_steps,
            epochs=1,
        )
        for precision, jit_compile in variants
    }
    timings, _ = harness.time_models(
        configs, prepare_steps, values.warmup_steps, values.timed_steps
    )
    reference = timings[variants[0]]["median_s"]
    return [
        {
            **harness.run_record("precision", network, configs[variant]),
            "median_step_s": timings[variant]["median_s"],
            "step_durations": timings[variant]["durations_s"],
            "over_first": timings[variant]["median_s"] / reference,
        }
        for variant in variants
    ]


def run(values: flags.FlagValues) -> None:
    """Compares the variants for each network of --networks and prints its JSON lines."""
    harness.emit_networks(values, compare_network)


if __name__ == "__main__":
    harness.run_script(define_flags, run)
