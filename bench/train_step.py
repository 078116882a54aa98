"""Times the full MixMo training step against the plain network's, interleaved, on any backend.

The step is `MixMoModel.train_step` (mask sampling, input MSDA, weighted loss, L2, SGD
update) compiled by Keras and run as the backend's `fit` runs it (`frameworks.training_step`),
on batches made into memory beforehand, so the timing excludes the input pipeline
(bench/input_pipeline.py times it). Each step gets its own batch and advances the optimizer,
as in training. Prints one JSON line per (network, M) and one MixMo / plain step-time ratio
line per network.

The batches are the real input pipeline's (`--batches=pipeline`, tf.data: TensorFlow only,
its default there) or random ones of the same shapes (`--batches=synthetic`, the default on
JAX and PyTorch), with which the script imports no TensorFlow: it runs on a machine that has
only JAX or PyTorch, e.g. with a GPU. bench/backends.py compares the backends with it.

Examples:
    python bench/train_step.py --networks=28-10 --members=2,1 --precision=auto
    KERAS_BACKEND=jax python bench/train_step.py --networks=28-10 --members=2 --precision=float32
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

import frameworks
import harness
from absl import flags

from mixmo_tf.config import Config
from mixmo_tf.config.choices import MSDA_KINDS
from mixmo_tf.models import MixMoModel
from mixmo_tf.tuning.device_rules import resolve_precision

SCRIPT = os.path.abspath(__file__)
PIPELINE, SYNTHETIC = "pipeline", "synthetic"
# Chosen per child process rather than forwarded (`forwarded_run_flags`).
_PER_CHILD = ("networks", "members")
# Seed of the synthetic batches' content.
_SYNTHETIC_SEED = 0


def define_run_flags(values: flags.FlagValues) -> None:
    """Defines the flags shaping the timed runs on `values` (bench/peak_memory.py's too)."""
    harness.define_model_flags(values, batch_size=64)
    flags.DEFINE_integer("batch_repetitions", 4, "b for M > 1.", flag_values=values)
    flags.DEFINE_enum(
        "msda", "none", list(MSDA_KINDS), "Input mixing for M > 1.", flag_values=values
    )
    flags.DEFINE_enum(
        "batches",
        PIPELINE if frameworks.backend() == "tensorflow" else SYNTHETIC,
        [PIPELINE, SYNTHETIC],
        "The timed steps' batches: the real input pipeline's (tf.data, TensorFlow only) or "
        "random ones of the same shapes. Defaults to pipeline on the TensorFlow backend, "
        "synthetic on the others.",
        flag_values=values,
    )
    flags.register_validator(
        "batches",
        lambda batches: batches == SYNTHETIC or frameworks.backend() == "tensorflow",
        f"--batches={PIPELINE} needs the TensorFlow backend (tf.data); "
        f"on {frameworks.backend()} use --batches={SYNTHETIC}.",
        flag_values=values,
    )


def forwarded_run_flags(values: flags.FlagValues) -> list[str]:
    """The run flags (`define_run_flags`) as set in `values`, except the per-child ones: the
    arguments that give a child process of this script the same runs."""
    run_flags = flags.FlagValues()
    define_run_flags(run_flags)
    return [values[name].serialize() for name in run_flags if name not in _PER_CHILD]


def child_record(command: list[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Runs `command` (this script in a child process, in `env`) and returns its first
    train_step JSON record.

    Raises:
        RuntimeError: the child failed; the message holds its stderr.
    """
    completed = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if completed.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{completed.stderr}")
    records = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return next(record for record in records if record["bench"] == "train_step")


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


def timed_batches(config: Config, source: str) -> list[Any]:
    """The batches of one epoch of `config` (one per step) from `source`, in memory."""
    if source == PIPELINE:
        # tf.data: imported only here, so that synthetic batches need no TensorFlow.
        from pipeline_batches import pipeline_batches

        return pipeline_batches(config)
    return harness.synthetic_batches(config, config.derived_steps_per_epoch, _SYNTHETIC_SEED)


def step_function(model: MixMoModel, batches: list[Any]) -> Callable[[], None]:
    """One compiled training step per call, each on the next batch; waits for the loss."""
    train = frameworks.training_step(model)
    remaining = iter(batches)
    return lambda: train(next(remaining))


def prepare_steps(model: MixMoModel, config: Config, batches: str = PIPELINE) -> Callable[[], None]:
    """The timed function of `model`: one step per call on `config`'s batches from `batches`."""
    return step_function(model, timed_batches(config, batches))


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


def step_record(
    network: str, config: Config, batches: str, timing: dict, flops: float
) -> dict[str, Any]:
    """The JSON record of one (network, M) from its timing and FLOPs per step."""
    median = timing["median_s"]
    return {
        **harness.run_record("train_step", network, config),
        "batch_repetitions": config.batch_repetitions,
        "msda": config.msda,
        "batches": batches,
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
        configs,
        functools.partial(prepare_steps, batches=values.batches),
        values.warmup_steps,
        values.timed_steps,
    )
    records = [
        step_record(
            network,
            config,
            values.batches,
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
