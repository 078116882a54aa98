"""Runs one of the helpers' modules in a process of another Keras backend."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers.paths import REPO


def run_helper(backend: str, module: str, *args: str) -> None:
    """`KERAS_BACKEND=backend python -m helpers.<module> ARGS` from the repository, with the
    package and tests/ importable; fails the test with the end of its stderr if it fails."""
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "tests")]),
    }
    process = subprocess.run(
        [sys.executable, "-m", f"helpers.{module}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
