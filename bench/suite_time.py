"""How long the test suite takes: the README's test command, timed, as one JSON line.

Runs `python -m pytest tests -q` in a child process from the repository root (what
`.ci/run` runs after installing) and records the wall time and pytest's closing summary.

Example: python bench/suite_time.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import harness
from absl import flags

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_list(
        "pytest_args", ["tests", "-q"], "Arguments of the timed pytest run.", flag_values=values
    )


def time_suite(pytest_args: list[str]) -> dict:
    """Runs pytest with `pytest_args`; the record (raises if the suite fails)."""
    command = [sys.executable, "-m", "pytest", *pytest_args]
    start = time.perf_counter()
    finished = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    summary = finished.stdout.strip().splitlines()[-1] if finished.stdout.strip() else ""
    if finished.returncode != 0:
        raise RuntimeError(f"The suite failed ({summary}):\n{finished.stdout[-3000:]}")
    return {
        "bench": "test_suite",
        "pytest": " ".join(pytest_args),
        "wall_s": seconds,
        "summary": summary,
    }


def run(values: flags.FlagValues) -> None:
    """Times the suite and prints its JSON line."""
    harness.emit(time_suite(values.pytest_args))


if __name__ == "__main__":
    harness.run_script(define_flags, run)
