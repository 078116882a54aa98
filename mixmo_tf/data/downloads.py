"""Whether to let tfds download a dataset: `--download=auto|never|always` (no TensorFlow).

tfds' own download retries for minutes on a machine without network. `auto` first opens a
TCP connection to the download's host with a short timeout (name resolution included, in a
thread, since `getaddrinfo` has no timeout of its own) and downloads only if it answers.
"""

from __future__ import annotations

import concurrent.futures
import socket
import urllib.parse

# Long enough for a distant host, short enough that an offline machine fails in seconds.
REACHABILITY_TIMEOUT_S = 3.0
_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="reach")


def _connect(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=REACHABILITY_TIMEOUT_S):
        pass


def is_reachable(url: str, timeout: float = REACHABILITY_TIMEOUT_S) -> bool:
    """Whether a TCP connection to `url`'s host (and port) opens within `timeout` seconds."""
    parsed = urllib.parse.urlparse(url)
    if not parsed.hostname:
        return False
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    future = _EXECUTOR.submit(_connect, parsed.hostname, port)
    try:
        future.result(timeout=timeout)
    except (OSError, concurrent.futures.TimeoutError):
        return False
    return True


def may_download(mode: str, url: str | None) -> bool:
    """Whether `--download=mode` lets tfds download from `url` now.

    `never`: no; `always`: yes, unchecked; `auto`: if `url`'s host answers (no URL: no).
    """
    if mode == "never":
        return False
    if mode == "always":
        return True
    return bool(url) and is_reachable(url)
