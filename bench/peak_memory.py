"""Peak resident memory of each training run, each run in its own process.

Runs bench/train_step.py once per (network, M) in a child process, forwarding this script's
flags (batch, b, MSDA, precision, XLA, steps), so that each peak covers one model alone. The
child reports its peak RSS at the end of its run, after its timed steps; the matmul ceiling
is left out, as its buffers would raise the peak. Prints one JSON line per run and one
MixMo / plain peak ratio line per network.

Example: python bench/peak_memory.py --networks=28-10 --members=2,1
"""

from __future__ import annotations

import shlex
import sys

import harness
import train_step
from absl import flags

# What the child's line says about its run, repeated in this script's line.
_RUN_FIELDS = (
    "network",
    "members",
    "batch_size",
    "batch_repetitions",
    "msda",
    "precision",
    "jit_compile",
    "median_step_s",
    "peak_rss_mib",
)


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`: those of train_step.py's runs."""
    train_step.define_run_flags(values)


def child_command(network: str, members: int, values: flags.FlagValues) -> list[str]:
    """The command timing M = `members` of `network` alone, without the matmul ceiling."""
    return [
        sys.executable,
        train_step.SCRIPT,
        f"--networks={network}",
        f"--members={members}",
        "--ceiling_networks=",
        *train_step.forwarded_run_flags(values),
    ]


def run(values: flags.FlagValues) -> None:
    """Measures every (network, M) in its own process and prints the JSON lines."""
    for network in values.networks:
        peaks = {}
        for members in harness.member_counts(values):
            command = child_command(network, members, values)
            child = train_step.child_record(command)
            peaks[members] = child["peak_rss_mib"]
            harness.emit(
                {
                    "bench": "peak_memory",
                    **{field: child[field] for field in _RUN_FIELDS},
                    "child_command": shlex.join(command),
                }
            )
        for ratio in harness.ratio_records("peak_memory_ratio", network, "peak_rss_mib", peaks):
            harness.emit(ratio)


if __name__ == "__main__":
    harness.run_script(define_flags, run)
