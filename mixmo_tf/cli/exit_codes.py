"""The exit codes of `main.py`, the one-line error every refusal prints, and the one line of
a command stopped by a signal.

0 done; 1 an unexpected failure (with a traceback: please report it), or `--mode=predict`
could not read or decode some of the files (the others were predicted); 2 an error the
`ERROR:` line explains (flags, data, folder, full disk, lock, divergence, a lost worker, no TPU,
nothing to export or predict); 3 stopped by SIGTERM or SIGINT after saving a checkpoint
(rerun the same command to resume); 130 or 143 stopped by SIGINT (Ctrl-C) or SIGTERM where
no checkpoint was saved: before training's first step, a second Ctrl-C that does not wait
for the stop's checkpoint, or any other mode (128 + the signal's number, the shell's code of
a command a signal ended, so scripts and schedulers read it as they would without us).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator

SUCCESS = 0
SOME_FILES_FAILED = 1
ERROR = 2
INTERRUPTED = 3
# Stopped where nothing was saved: 128 + the signal's number, as a shell reports it.
STOPPED_BY_SIGINT = 128 + signal.SIGINT
STOPPED_BY_SIGTERM = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training's own handler: stops the command as Ctrl-C does (clean-up in
    `finally` blocks runs: staging folders, child processes)."""


class LineTrackingStream:
    """A text stream (stdout) that remembers whether its last write left a line unfinished.

    Keras' progress bar redraws its line without ending it until the epoch ends; an error
    or a stop line printed meanwhile must start on a line of its own.
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self.mid_line = False

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if text:
            self.mid_line = not text.endswith("\n")
        return written

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def stdout_lines_tracked() -> Iterator[None]:
    """Inside, stdout is a `LineTrackingStream`, written line by line: in a file shared with
    stderr (`2>&1`), lines then keep the order in which they were printed."""
    stream = sys.stdout
    with contextlib.suppress(AttributeError):  # not a text file (an embedding's stream)
        stream.reconfigure(line_buffering=True)
    sys.stdout = LineTrackingStream(stream)
    try:
        yield
    finally:
        sys.stdout = stream


def _start_fresh_line() -> None:
    """Ends a line stdout left unfinished and flushes stdout, so that a line on stderr comes
    after what stdout printed and on its own line (a terminal, or `2>&1` into one file). A
    stdout that cannot be written (a closed pipe) must not keep the line from showing."""
    with contextlib.suppress(OSError, ValueError):
        if getattr(sys.stdout, "mid_line", False):
            sys.stdout.write("\n")
        sys.stdout.flush()


def report_error(message: str) -> int:
    """Prints `ERROR: <message>` on stderr; returns `ERROR`, the exit code that goes with it."""
    _start_fresh_line()
    print(f"ERROR: {message}", file=sys.stderr)
    return ERROR


def report_line(line: str) -> None:
    """Prints `line` on stderr on a line of its own, after what stdout printed."""
    _start_fresh_line()
    print(line, file=sys.stderr)


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def stops_reported(doing: Callable[[], str]) -> Iterator[None]:
    """Inside, SIGTERM stops the command as Ctrl-C does; a stop that reaches the end of the
    block exits with one line and 130 (SIGINT) or 143 (SIGTERM).

    Training handles both signals itself while it runs (`training.run_guard`: a checkpoint,
    exit code 3); this block answers the stops outside it, where nothing was saved.

    Args:
        doing: what the command was doing and what it left, asked when stopped ("the
            import; nothing was saved: rerun the same command").
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except KeyboardInterrupt as stop:
        # A stop that knows better what it left (training's second Ctrl-C) says it itself.
        terminated = isinstance(stop, Terminated)
        report_line(
            str(stop)
            or f"Stopped by {'SIGTERM' if terminated else 'Ctrl-C (SIGINT)'} during {doing()}."
        )
        sys.exit(STOPPED_BY_SIGTERM if terminated else STOPPED_BY_SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
