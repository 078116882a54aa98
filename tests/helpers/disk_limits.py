"""Full disks for the tests: a file size limit (any user) and a small tmpfs (root only).

- `file_size_limit(bytes)`: this process's files cannot grow past `bytes`, so a write
  beyond fails with EFBIG ("File too large"), as on a file system or quota that stops it.
  SIGXFSZ, which would kill the process, is ignored meanwhile.
- `small_tmpfs(folder, kib)`: a real file system of `kib` KiB mounted on `folder`, whose
  writes fail with ENOSPC ("No space left on device") once it is full. Mounting needs root
  (CAP_SYS_ADMIN): `tmpfs_mountable` says whether this machine allows it.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import signal
import subprocess
from collections.abc import Iterator


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Files of this process may not grow beyond `limit` bytes inside the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _mount(folder, kib: int) -> subprocess.CompletedProcess:
    command = ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)]
    return subprocess.run(command, capture_output=True, text=True)


def tmpfs_mountable(folder) -> bool:
    """Whether this process may mount a tmpfs (on `folder`, an empty folder), e.g. as root."""
    if shutil.which("mount") is None or _mount(folder, 64).returncode != 0:
        return False
    subprocess.run(["umount", str(folder)], check=True)
    return True


@contextlib.contextmanager
def small_tmpfs(folder, kib: int) -> Iterator[None]:
    """A tmpfs of `kib` KiB mounted on `folder` (an empty folder) inside the block."""
    mounted = _mount(folder, kib)
    assert mounted.returncode == 0, mounted.stderr
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)
