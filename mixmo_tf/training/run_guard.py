"""What keeps a run folder safe: one writer per folder, usable folders, a clean stop on signals.

- `hold_run_folder` takes an OS advisory lock (`fcntl.flock`) on `<model_dir>/run.lock` for
  the whole run. The kernel releases it when the holding process ends in any way (kill -9,
  out of memory, power loss of a local disk), so a stale lock cannot exist: the next run
  takes it over at once. An O_EXCL lock file would outlive a killed process and need a
  "is pid P on host H alive?" test that no process can answer for another host. The file
  also records the holder's pid and host, for the refusal message.
- `stop_on_signals` turns SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) into a
  request that the training loop honours at the next step boundary: it checkpoints there and
  raises `Interrupted`. A second Ctrl-C before that save starts stops at once
  (`StoppedAtOnce`: the run keeps its last checkpoint); once the save has started, further
  signals wait for it, so a stop always ends with a complete checkpoint.

The command line turns `Interrupted` into exit code 3, `StoppedAtOnce` into 130
(`mixmo_tf.cli.exit_codes`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator

from mixmo_tf.config.errors import UserError
from mixmo_tf.config.run_folder import (
    RunFolder,
    RunFolderError,
    describe_os_error,
    ensure_writable_folder,
    is_local_path,
)


class RunLockedError(UserError):
    """Another process holds the run folder."""


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint.

    A stop, not an error (exit code 3: rerun to resume), so not a `UserError`.
    """


class StoppedAtOnce(KeyboardInterrupt):
    """A second Ctrl-C stopped training before the stop's checkpoint was saved."""


@contextlib.contextmanager
def hold_run_folder(model_dir: str) -> Iterator[None]:
    """Holds the exclusive lock of `model_dir` while the block runs.

    Remote folders (gs://...) have no advisory locks: they are used without one.

    Raises:
        RunFolderError: the folder cannot be created or written.
        RunLockedError: another live process holds the lock; names its pid and host.
    """
    if not is_local_path(model_dir):
        yield
        return
    ensure_writable_folder(model_dir)
    path = RunFolder(model_dir).lock
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
    """Set by a signal handler, read by the training loop at step boundaries.

    Args:
        signalled: the request its signal handler sets, if not this one (a multi-worker
            loop's callbacks read the stop all workers agreed on); `saving` marks both.
    """

    def __init__(self, signalled: StopRequest | None = None) -> None:
        self.signal_name: str | None = None
        self.saving = False
        self._signalled = signalled

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def mark_saving(self) -> None:
        """The stop's checkpoint is being saved: signals from now on wait for it."""
        self.saving = True
        if self._signalled is not None:
            self._signalled.mark_saving()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While the block runs, SIGTERM and SIGINT set the yielded `StopRequest`.

    Handlers are installed only in the main thread (Python delivers signals there); the
    previous handlers are restored afterwards. A second SIGINT while a stop is pending
    raises `StoppedAtOnce`, for a user who cannot wait for the step to end; once the stop's
    checkpoint is being saved (`StopRequest.mark_saving`), signals only say to wait: a save
    cut short would cost the steps since the last checkpoint for the few seconds it takes.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, frame):
        if request.saving:
            _say("Still saving the checkpoint of the stop: it ends in seconds.")
            return
        if request and signum == signal.SIGINT:
            raise StoppedAtOnce(
                "Stopped at once by a second Ctrl-C (SIGINT), before the stop's checkpoint "
                "was saved: rerun the same command to resume from the run's last checkpoint."
            )
        request.signal_name = signal.Signals(signum).name
        _say(f"\n{request.signal_name} received: saving a checkpoint at the end of this step.")

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(line: str) -> None:
    """Prints `line` on stderr from a signal handler. A stderr that cannot be written (a
    closed terminal), or that the signal interrupted mid-write (a reentrant call), must not
    turn the stop into a crash without its checkpoint."""
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        print(line, file=sys.stderr, flush=True)
