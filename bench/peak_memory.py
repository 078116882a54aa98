"""Peak resident memory of each training run, each run in its own process.

Runs bench/train_step.py once per (network, M) in a child process, forwarding this script's
flags (batch, b, MSDA, precision, XLA, steps), so that each peak covers one model alone. The
child reports its peak RSS at the end of its run, after its timed steps; the matmul ceiling
is left out, as its buffers would raise the peak. Prints one JSON line per run and one
MixMo / plain peak ratio line per network.

Example: python bench/peak_memory.py --networks=28-10 --members=2,1
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from typing import Any

import harness
import train_step
from absl import flags

TRAIN_STEP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_step.py")
# Chosen per child rather than forwarded.
_PER_CHILD = ("networks", "members")
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


def forwarded_flags(values: flags.FlagValues) -> list[str]:
    """train_step.py's run flags as set in `values`, except the per-child ones."""
    run_flags = flags.FlagValues()
    train_step.define_run_flags(run_flags)
    return [values[name].serialize() for name in run_flags if name not in _PER_CHILD]


def child_command(network: str, members: int, values: flags.FlagValues) -> list[str]:
    """The command timing M = `members` of `network` alone, without the matmul ceiling."""
    return [
        sys.executable,
        TRAIN_STEP,
        f"--networks={network}",
        f"--members={members}",
        "--ceiling_networks=",
        *forwarded_flags(values),
    ]


def child_record(command: list[str]) -> dict[str, Any]:
    """Runs `command` and returns its train_step JSON record.

    Raises:
        RuntimeError: the child failed; the message holds its stderr.
    """
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{completed.stderr}")
    records = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return next(record for record in records if record["bench"] == "train_step")


def run(values: flags.FlagValues) -> None:
    """Measures every (network, M) in its own process and prints the JSON lines."""
    for network in values.networks:
        peaks = {}
        for members in harness.member_counts(values):
            command = child_command(network, members, values)
            child = child_record(command)
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
