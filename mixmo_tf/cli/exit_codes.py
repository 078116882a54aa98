"""The exit codes of `main.py`, and the one-line error every refusal prints.

0 done; 1 an unexpected failure (with a traceback: please report it), or `--mode=predict`
could not read or decode some of the files (the others were predicted); 2 an error the
`ERROR:` line explains (flags, data, folder, full disk, lock, divergence, a lost worker, no TPU,
nothing to export or predict); 3 stopped by SIGTERM or SIGINT after saving a checkpoint
(rerun the same command to resume).
"""

from __future__ import annotations

import sys

SUCCESS = 0
SOME_FILES_FAILED = 1
ERROR = 2
INTERRUPTED = 3


def report_error(message: str) -> int:
    """Prints `ERROR: <message>` on stderr; returns `ERROR`, the exit code that goes with it."""
    print(f"ERROR: {message}", file=sys.stderr)
    return ERROR
