"""Times the full MixMo training step against the plain network's, interleaved.

The step is `MixMoModel.train_step` (mask sampling, input MSDA, weighted loss, L2, SGD
update) compiled by Keras, on batches of the real input pipeline generated into memory
beforehand, so the timing excludes the pipeline (bench/input_pipeline.py times it). Each
step gets its own batch and advances the optimizer, as in training. Prints one JSON line per
(network, M) and one MixMo / plain step-time ratio line per network.

Example: python bench/train_step.py --networks=28-10 --members=2,1 --precision=auto
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import harness
import tensorflow as tf
from absl import flags

from mixmo_tf import data
from mixmo_tf.config import Config
from mixmo_tf.config.choices import MSDA_KINDS
from mixmo_tf.models import MixMoModel
from mixmo_tf.training.run import train_stream
from mixmo_tf.tuning.device_rules import resolve_precision

# Enough distinct images for the batches of a short timing run.
NUM_EXAMPLES = 1024


def define_run_flags(values: flags.FlagValues) -> None:
    """Defines the flags shaping the timed runs on `values` (bench/peak_memory.py's too)."""
    harness.define_model_flags(values, batch_size=64)
    flags.DEFINE_integer("batch_repetitions", 4, "b for M > 1.", flag_values=values)
    flags.DEFINE_enum(
        "msda", "none", list(MSDA_KINDS), "Input mixing for M > 1.", flag_values=values
    )


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`: the runs', and the matmul ceiling's."""
    define_run_flags(values)
    flags.DEFINE_list(
        "ceiling_networks",
        ["28-10"],
        "Networks whose lines also get this machine's matmul ceiling in the compute dtype, "
        "measured in the same run (empty: none).",
        flag_values=values,
    )
    flags.DEFINE_integer(
        "ceiling_size", 4096, "Side of the square matmul of the ceiling.", flag_values=values
    )


def step_config(network: str, members: int, values: flags.FlagValues) -> Config:
    """The Config of M = `members` of `network`, one epoch of just the benchmark's steps."""
    return harness.bench_config(
        network,
        members,
        batch_size=values.batch_size,
        batch_repetitions=values.batch_repetitions,
        msda=values.msda,
        precision=values.precision,
        jit_compile=values.jit_compile,
        steps_per_epoch=values.warmup_steps + values.timed_steps,
        epochs=1,
    )


def pipeline_batches(config: Config) -> list[dict[str, tf.Tensor]]:
    """One epoch of the real training pipeline's batches on synthetic data, in memory."""
    images, labels = harness.synthetic_data(NUM_EXAMPLES, config.spec, seed=0)
    stream = train_stream(config)
    dataset = data.train_dataset(images, labels, config.spec, stream, 0, stream.steps_per_epoch)
    return list(dataset)


def step_function(model: MixMoModel, batches: list[dict[str, tf.Tensor]]) -> Callable[[], None]:
    """One compiled training step per call, each on the next batch; waits for the loss."""
    model.make_train_function()
    remaining = iter(batches)

    def step() -> None:
        logs = model.train_function(iter([next(remaining)]))
        float(logs["loss"])

    return step


def prepare_steps(model: MixMoModel, config: Config) -> Callable[[], None]:
    """The timed function of `model`: one step per call on the pipeline's batches of `config`."""
    return step_function(model, pipeline_batches(config))


def add_ceiling(records: list[dict[str, Any]], precision: str, size: int) -> None:
    """Adds this machine's matmul ceiling in the compute dtype, and each record's share of it.

    Measured after the steps, in the same process, so it describes the same machine state.
    """
    dtype = harness.compute_dtype(precision)
    ceiling = harness.matmul_ceiling_gflops(dtype, size)
    for record in records:
        record.update(
            ceiling_dtype=dtype,
            matmul_ceiling_gflops=ceiling,
            fraction_of_ceiling=record["achieved_gflops"] / ceiling,
        )


def step_record(network: str, config: Config, timing: dict, flops: float) -> dict[str, Any]:
    """The JSON record of one (network, M) from its timing and FLOPs per step."""
    median = timing["median_s"]
    return {
        **harness.run_record("train_step", network, config),
        "batch_repetitions": config.batch_repetitions,
        "msda": config.msda,
        "median_step_s": median,
        **harness.throughput(median, config.batch_size, flops),
        "timed_steps": len(timing["durations_s"]),
        "step_durations": timing["durations_s"],
        "training_gflop_per_step": flops / harness.GIGA,
    }


def time_network(network: str, values: flags.FlagValues) -> list[dict[str, Any]]:
    """Records of every M of `network`, timed interleaved, and the ratio records."""
    configs = {m: step_config(network, m, values) for m in harness.member_counts(values)}
    timings, models = harness.time_models(
        configs, prepare_steps, values.warmup_steps, values.timed_steps
    )
    records = [
        step_record(
            network,
            config,
            timings[m],
            harness.training_flops(models[m].network, config.batch_size),
        )
        for m, config in configs.items()
    ]
    if network in values.ceiling_networks:
        add_ceiling(records, resolve_precision(values.precision), values.ceiling_size)
    medians = {m: timing["median_s"] for m, timing in timings.items()}
    return records + harness.ratio_records("train_step_ratio", network, "median_step_s", medians)


def run(values: flags.FlagValues) -> None:
    """Times each network of --networks and prints its JSON lines."""
    harness.emit_networks(values, time_network)


if __name__ == "__main__":
    harness.run_script(define_flags, run)
