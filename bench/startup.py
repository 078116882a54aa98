"""How long the command line takes to answer before any work: `main.py --help` and a refused flag.

Both run in fresh processes, interleaved with a process that only imports TensorFlow (what
every command would pay if the package root imported everything), so the ratio is measured
in one run on one machine. One JSON line per command.

Example: python bench/startup.py --rounds=5
"""

from __future__ import annotations

import os
import subprocess
import sys

import harness
from absl import flags

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPOSITORY, "main.py")
# name: (arguments of python, what its output must contain: the command did its job).
COMMANDS = {
    "main_help": ([MAIN, "--help"], "optimisation:"),
    "main_refused_flag": ([MAIN, "--depth=27"], "--depth must be 6n+4"),
    "import_tensorflow": (["-c", "import tensorflow; print(tensorflow.__version__)"], "2."),
}


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_integer("rounds", 5, "Timed rounds of each command.", flag_values=values)


def _run_command(arguments: list[str], expected: str):
    def run() -> None:
        finished = subprocess.run(
            [sys.executable, *arguments], capture_output=True, text=True, cwd=REPOSITORY
        )
        if expected not in finished.stdout + finished.stderr:
            raise RuntimeError(f"python {' '.join(arguments)} did not answer {expected!r}.")

    return run


def run(values: flags.FlagValues) -> None:
    """Times every command in alternating rounds (one untimed first); prints their lines."""
    functions = {name: _run_command(*command) for name, command in COMMANDS.items()}
    timings = harness.interleaved_medians(functions, warmup=1, timed=values.rounds)
    reference = timings["import_tensorflow"]["median_s"]
    for name, timing in timings.items():
        harness.emit(
            {
                "bench": "startup",
                "variant": name,
                **timing,
                "over_import_tensorflow": timing["median_s"] / reference,
            }
        )


if __name__ == "__main__":
    harness.run_script(define_flags, run)
