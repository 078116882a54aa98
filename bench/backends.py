"""Times the same MixMo training step on each Keras backend, one process per run, interleaved.

For each network, each round runs bench/train_step.py once per variant, each in its own
child process (a backend is chosen per process, by KERAS_BACKEND). A variant is a backend
("tensorflow", "jax", "torch") or, with --baseline=PATH, "tensorflow@baseline": the
TensorFlow step of the library checkout at PATH (put first on the child's PYTHONPATH), to
compare the step before and after a change. The variants alternate within a round and their
order reverses every other round, so that a shared machine's drifts and the position in a
round hit every variant alike. By default the children time M = 2 in float32 on synthetic
batches: the same batches on every backend, and no TensorFlow in the JAX and PyTorch
children.

Prints one JSON line per (variant, network): the median over rounds of the child's median
step time, the rounds' spread, the fastest step, and the ratios to the first variant's: of
the medians (`over_first`), the median over rounds of the ratio within a round
(`paired_over_first`, which a drift between rounds does not move) and of the fastest steps
(`fastest_over_first`, the least disturbed on a loaded machine).

Examples:
    TF_ENABLE_ONEDNN_OPTS=1 python bench/backends.py --networks=16-4 --rounds=5
    python bench/backends.py --networks=28-10 --rounds=3 --warmup_steps=1 --timed_steps=1
    python bench/backends.py --backends=tensorflow --baseline=/path/to/older/checkout
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shlex
import statistics
import sys
from typing import Any

import harness
import train_step
from absl import flags

import mixmo_tf

BACKENDS = ("tensorflow", "jax", "torch")
BASELINE = "tensorflow@baseline"
# What a child's line says about its run, repeated in this script's line.
_RUN_FIELDS = (
    "network",
    "members",
    "batch_size",
    "batch_repetitions",
    "msda",
    "batches",
    "precision",
    "jit_compile",
    "training_gflop_per_step",
)
# What a child's line says about its backend, repeated in this script's line.
_BACKEND_FIELDS = (
    "backend",
    "device",
    "tensorflow",
    "jax",
    "torch",
    "torch_threads",
    "intra_op_threads",
    "inter_op_threads",
    "onednn",
    "onednn_max_cpu_isa",
)


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`: train_step.py's, and the variants and rounds."""
    train_step.define_flags(values)
    values.set_default("networks", ["16-4", "28-10"])
    values.set_default("members", ["2"])
    values.set_default("precision", "float32")
    values.set_default("batches", train_step.SYNTHETIC)
    flags.DEFINE_list(
        "backends", list(BACKENDS), "Keras backends to time, in this order.", flag_values=values
    )
    flags.DEFINE_string(
        "baseline",
        "",
        "A checkout of this library whose TensorFlow step is timed too, first, as "
        f"{BASELINE} (empty: none); it must have what bench/train_step.py imports.",
        flag_values=values,
    )
    flags.DEFINE_integer(
        "rounds", 3, "Rounds; each runs every variant once, in a child process.", flag_values=values
    )
    flags.register_validator(
        "backends",
        lambda backends: set(backends) <= set(BACKENDS) and len(set(backends)) == len(backends),
        f"--backends must name distinct backends of {', '.join(BACKENDS)}.",
        flag_values=values,
    )
    flags.register_validator(
        "backends",
        lambda backends: all(importlib.util.find_spec(name) for name in backends),
        "--backends names a framework that is not installed here.",
        flag_values=values,
    )
    flags.register_validator(
        "baseline",
        lambda path: not path or os.path.isdir(os.path.join(path, "mixmo_tf")),
        "--baseline must be a checkout of this library (a folder holding mixmo_tf/).",
        flag_values=values,
    )
    flags.register_validator(
        "rounds", lambda rounds: rounds >= 1, "--rounds must be >= 1.", flag_values=values
    )
    flags.register_multi_flags_validator(
        ["batches", "backends"],
        lambda chosen: (
            chosen["batches"] == train_step.SYNTHETIC or chosen["backends"] == ["tensorflow"]
        ),
        f"--batches={train_step.PIPELINE} is TensorFlow's tf.data: time other backends on "
        f"--batches={train_step.SYNTHETIC}.",
        flag_values=values,
    )


def library_folder() -> str:
    """The folder holding the mixmo_tf this process imports (what the backends' children run)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(mixmo_tf.__file__)))


@dataclasses.dataclass(frozen=True)
class Variant:
    """One timed variant: its name, the library folder it runs, and its child's environment
    variables (on top of this process's)."""

    name: str
    library: str
    environment: dict[str, str]

    def child_environment(self) -> dict[str, str]:
        """The child process's whole environment."""
        return {**os.environ, **self.environment}

    def command_text(self, command: list[str]) -> str:
        """`command` as a shell line with this variant's environment variables."""
        settings = [f"{name}={value}" for name, value in self.environment.items()]
        return shlex.join([*settings, *command])


def variants(values: flags.FlagValues) -> list[Variant]:
    """The timed variants, in order."""
    chosen = []
    if values.baseline:
        baseline = os.path.abspath(values.baseline)
        pythonpath = os.pathsep.join(filter(None, [baseline, os.environ.get("PYTHONPATH")]))
        environment = {"KERAS_BACKEND": "tensorflow", "PYTHONPATH": pythonpath}
        chosen.append(Variant(BASELINE, baseline, environment))
    for backend in values.backends:
        chosen.append(Variant(backend, library_folder(), {"KERAS_BACKEND": backend}))
    return chosen


def child_command(network: str, values: flags.FlagValues) -> list[str]:
    """The command timing `network` in one child process."""
    return [
        sys.executable,
        train_step.SCRIPT,
        f"--networks={network}",
        values["members"].serialize(),
        values["ceiling_networks"].serialize(),
        values["ceiling_size"].serialize(),
        *train_step.forwarded_run_flags(values),
    ]


def round_order(chosen: list[Variant], round_index: int) -> list[Variant]:
    """The variants' order in a round: as given in even rounds, reversed in odd ones."""
    return chosen if round_index % 2 == 0 else chosen[::-1]


def time_rounds(
    command: list[str], rounds: int, chosen: list[Variant]
) -> dict[str, list[dict[str, Any]]]:
    """Each variant's child lines of `command`, one per round, the variants alternating."""
    lines: dict[str, list[dict[str, Any]]] = {variant.name: [] for variant in chosen}
    for round_index in range(rounds):
        for variant in round_order(chosen, round_index):
            print(f"round {round_index + 1}: {variant.command_text(command)}", file=sys.stderr)
            record = train_step.child_record(command, env=variant.child_environment())
            print(f"  median {record['median_step_s']:.3f} s/step", file=sys.stderr, flush=True)
            lines[variant.name].append(record)
    return lines


def variant_record(variant: Variant, command: list[str], lines: list[dict]) -> dict[str, Any]:
    """One variant's line from its rounds' child lines (ratios added by `add_ratios`)."""
    medians = [line["median_step_s"] for line in lines]
    median = statistics.median(medians)
    first = lines[0]
    record = {
        "bench": "backend_step",
        "variant": variant.name,
        "library": variant.library,
        **{field: first[field] for field in _RUN_FIELDS},
        **{field: first[field] for field in _BACKEND_FIELDS if field in first},
        "rounds": len(lines),
        "median_step_s": median,
        "round_medians_s": medians,
        # (slowest - fastest) / median of the rounds' medians.
        "spread": (max(medians) - min(medians)) / median,
        "step_durations": [line["step_durations"] for line in lines],
        # The least disturbed step: on a loaded machine, the closest to the step's own time.
        "fastest_step_s": min(min(line["step_durations"]) for line in lines),
        "achieved_gflops": first["training_gflop_per_step"] / median,
        "round_load_averages": [line["load_average"] for line in lines],
        "peak_rss_mib": max(line["peak_rss_mib"] for line in lines),
        "child_command": variant.command_text(command),
    }
    if "matmul_ceiling_gflops" in first:
        record.update(
            ceiling_dtype=first["ceiling_dtype"],
            matmul_ceiling_gflops=statistics.median(
                line["matmul_ceiling_gflops"] for line in lines
            ),
            # Each round's step over its own process's ceiling; the median of those.
            fraction_of_ceiling=statistics.median(line["fraction_of_ceiling"] for line in lines),
        )
    return record


def add_ratios(records: list[dict[str, Any]]) -> None:
    """Adds each record's step time over the first record's, as medians and paired by round."""
    first = records[0]
    for record in records:
        paired = [
            mine / theirs
            for mine, theirs in zip(record["round_medians_s"], first["round_medians_s"])
        ]
        record.update(
            first_variant=first["variant"],
            over_first=record["median_step_s"] / first["median_step_s"],
            paired_over_first=statistics.median(paired),
            fastest_over_first=record["fastest_step_s"] / first["fastest_step_s"],
        )


def run(values: flags.FlagValues) -> None:
    """Times each network of --networks on every variant, interleaved, and prints the lines."""
    chosen = variants(values)
    for network in values.networks:
        command = child_command(network, values)
        lines = time_rounds(command, values.rounds, chosen)
        records = [variant_record(variant, command, lines[variant.name]) for variant in chosen]
        add_ratios(records)
        for record in records:
            harness.emit(record, measured_here=False)


if __name__ == "__main__":
    harness.run_script(define_flags, run)
