"""What keeps a run folder safe: one writer per folder, usable folders, a clean stop on signals.

- `hold_run_folder` takes an OS advisory lock (`fcntl.flock`) on `<model_dir>/run.lock` for
  the whole run. The kernel releases it when the holding process ends in any way (kill -9,
  out of memory, power loss of a local disk), so a stale lock cannot exist: the next run
  takes it over at once. An O_EXCL lock file would outlive a killed process and need a
  "is pid P on host H alive?" test that no process can answer for another host. The file
  also records the holder's pid and host, for the refusal message.
- `stop_on_signals` turns SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) into a
  request that the training loop honours at the next step boundary: it checkpoints there and
  raises `Interrupted` (exit code `EXIT_INTERRUPTED`). A second Ctrl-C stops at once.

Exit codes of `main.py`: 0 done; 2 an error the message explains (`EXIT_ERROR`: bad data or
folder, a locked folder, divergence); 3 stopped by a signal after saving a checkpoint
(`EXIT_INTERRUPTED`: rerun the same command to resume); 1 an unexpected failure.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator

EXIT_ERROR = 2
EXIT_INTERRUPTED = 3
LOCK_FILE = "run.lock"


class RunFolderError(Exception):
    """A folder or file of the run cannot be used (created, written or read)."""


class ResultsNotSavedError(RunFolderError):
    """Results were computed but could not be written; `results` holds them, to print."""

    def __init__(self, message: str, results: dict):
        super().__init__(message)
        self.results = results


class RunLockedError(Exception):
    """Another process holds the run folder."""


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint."""


def describe_os_error(error: OSError, flag: str | None = None) -> str:
    """One line naming the path, the reason and the fix, for a folder or file that failed.

    Args:
        error: the failure.
        flag: the flag that chose the path (e.g. "--model_dir"), if one did.
    """
    if error.errno == errno.ENOTDIR:
        hint = ": a part of that path is a regular file, not a folder"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = ": this user cannot write there"
    else:
        hint = ""
    fix = f"Choose another {flag}" if flag else "Fix the path or its permissions, then rerun"
    reason = error.strerror or str(error)
    return f"{error.filename or 'A path'} cannot be used ({reason}{hint}). {fix}."


def is_local_path(path: str) -> bool:
    """Whether `path` is on a POSIX file system (not gs://, s3://, hdfs://...)."""
    return "://" not in path


def ensure_writable_folder(path: str, flag: str = "--model_dir") -> None:
    """Creates `path` if needed and checks that files can be written in it.

    Raises:
        RunFolderError: the folder cannot be created or written, with the path and the fix.
    """
    if not is_local_path(path):
        return
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test_{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise RunFolderError(describe_os_error(error, flag)) from error


@contextlib.contextmanager
def hold_run_folder(model_dir: str) -> Iterator[None]:
    """Holds the exclusive lock of `model_dir` while the block runs.

    Remote folders (gs://...) have no advisory locks: they are used without one, as before.

    Raises:
        RunFolderError: the folder cannot be created or written.
        RunLockedError: another live process holds the lock; names its pid and host.
    """
    if not is_local_path(model_dir):
        yield
        return
    ensure_writable_folder(model_dir)
    path = os.path.join(model_dir, LOCK_FILE)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise RunFolderError(describe_os_error(error, "--model_dir")) from error
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor) or "another process"
            raise RunLockedError(
                f"{model_dir} is in use by {holder} (lock {path}). Wait for that run to "
                "finish or stop it, or choose another --model_dir."
            ) from None
        previous = _read_holder(descriptor)
        if previous:
            # A holder that ended normally empties the file; this one was killed.
            print(f"Taking over the lock of {model_dir} from {previous}, which has ended.")
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _read_holder(descriptor: int) -> str:
    """ "process <pid> on host <host>" from the lock file, or "" if it is empty."""
    fields = os.pread(descriptor, 256, 0).decode(errors="replace").split()
    if len(fields) != 2:
        return ""
    return f"process {fields[0]} on host {fields[1]}"


class StopRequest:
    """Set by a signal handler, read by the training loop at step boundaries."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While the block runs, SIGTERM and SIGINT set the yielded `StopRequest`.

    Handlers are installed only in the main thread (Python delivers signals there); the
    previous handlers are restored afterwards. A second SIGINT while a stop is pending
    raises KeyboardInterrupt at once, for a user who cannot wait for the step to end.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, frame):
        if request and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.signal_name = signal.Signals(signum).name
        print(
            f"\n{request.signal_name} received: saving a checkpoint at the end of this step.",
            file=sys.stderr,
        )

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
