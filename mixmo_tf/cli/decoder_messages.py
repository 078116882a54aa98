"""Keeps the image decoders' own stderr messages out of what a user sees.

TensorFlow reports a corrupt image twice: as the decode op's error, which the commands turn
into one `ERROR:` line naming the file, and through the C libraries' default message
handlers, which write straight to file descriptor 2 with no file name and no switch to turn
them off (TensorFlow's JPEG error handler calls libjpeg's `output_message`: "Input file read
error", "Improper call to JPEG library in state 201"; libpng warns the same way).

Inside `decoder_messages_dropped()`, descriptor 2 is a pipe to a small filter process (this
file run as a script) that forwards every line but those messages to the real stderr,
unchanged. A process, not a thread: if this one crashes (a fatal TensorFlow check, a
segfault), the filter still forwards what it wrote before dying. It runs in a session of its
own and ignores the signals that stop a run, so that Ctrl-C or a scheduler's SIGTERM leaves
it alive and the run's own "Stopped by ..." line still shows.

Python's own writes to `sys.stderr` skip the filter: they go straight to the real stderr.
They are never decoder messages; through the filter they would reach a file shared with
stdout (`2>&1`) after stdout lines written later, and fail ("Broken pipe") if the filter
has been killed, which would turn a stop on Ctrl-C into a crash without its checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator

# libjpeg's messages that TensorFlow's decoders print for a corrupt or truncated file, and
# libpng's warnings and errors (which name their library).
_DECODER_MESSAGE = re.compile(
    rb"Input file read error"
    rb"|Improper call to JPEG library in state \d+"
    rb"|Premature end of JPEG file"
    rb"|Corrupt JPEG data: .*"
    rb"|Not a JPEG file: starts with 0x[0-9a-f]{2} 0x[0-9a-f]{2}"
    rb"|Invalid JPEG file structure: .*"
    rb"|Unsupported marker type 0x[0-9a-f]{2}"
    rb"|Bogus (marker length|Huffman table definition|DQT index \d+|DHT index \d+)"
    rb"|(Huffman|Quantization) table 0x[0-9a-f]{2} was not defined"
    rb"|Empty input file"
    rb"|libpng (warning|error): .*"
)
# A line that has waited this long without its newline is forwarded as it is (a prompt, a
# progress line): the filter delays nothing else.
_PARTIAL_LINE_SECONDS = 0.1
_CHUNK = 65536
# How long leaving the block waits for the filter to forward the last lines; longer only if
# a child process of this one still holds the pipe.
_DRAIN_SECONDS = 5.0


def is_decoder_message(line: bytes) -> bool:
    """Whether `line` (without its newline) is one of the decoders' own messages."""
    return _DECODER_MESSAGE.fullmatch(line.rstrip(b"\r")) is not None


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def forward(source: int, target: int) -> None:
    """Copies `source` to `target` line by line until end of file, leaving decoder messages
    out; a partial line is forwarded once it has waited `_PARTIAL_LINE_SECONDS`."""
    pending = b""
    while True:
        ready, _, _ = select.select([source], [], [], _PARTIAL_LINE_SECONDS)
        if not ready:
            _write_all(target, pending)
            pending = b""
            continue
        chunk = os.read(source, _CHUNK)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        _write_all(target, b"".join(line + b"\n" for line in lines if not is_decoder_message(line)))
    if not is_decoder_message(pending):
        _write_all(target, pending)


def _start_filter(target: int) -> subprocess.Popen | None:
    """The filter process writing to `target`, or None if it cannot start.

    This file runs as a script (it needs the standard library only, not an installed
    package), in a session of its own: Ctrl-C and signals to this process group miss it.
    """
    try:
        return subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=target,
            start_new_session=True,
        )
    except OSError:
        return None


@contextlib.contextmanager
def decoder_messages_dropped() -> Iterator[None]:
    """Inside, the decoders' messages on stderr are dropped; everything else passes (all of
    it, if the filter cannot start: no filter rather than no run)."""
    sys.stderr.flush()
    real_stderr = os.dup(2)
    filtering = _start_filter(real_stderr)
    if filtering is not None:
        os.dup2(filtering.stdin.fileno(), 2)
        filtering.stdin.close()
    try:
        with _python_stderr_to(real_stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes the pipe's last writer here: the filter drains and ends
        os.close(real_stderr)
        if filtering is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                filtering.wait(timeout=_DRAIN_SECONDS)


def _writes_to_descriptor_2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a StringIO, a closed stream
        return False


@contextlib.contextmanager
def _python_stderr_to(descriptor: int) -> Iterator[None]:
    """Inside, `sys.stderr` writes to `descriptor`, line by line, if it wrote to descriptor
    2 (a stream that writes elsewhere, such as a test's, is left as it is)."""
    if not _writes_to_descriptor_2(sys.stderr):
        yield
        return
    stream = open(  # closed below; the descriptor stays open (closefd=False)
        descriptor,
        "w",
        buffering=1,
        encoding=sys.stderr.encoding,
        errors=sys.stderr.errors,
        closefd=False,
    )
    try:
        with contextlib.redirect_stderr(stream):
            yield
    finally:
        stream.close()


def _main() -> None:
    # It ends at the end of its input, not before, even when a scheduler signals every
    # process of the job.
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_IGN)
    forward(sys.stdin.fileno(), sys.stdout.fileno())


if __name__ == "__main__":
    _main()
