"""The authors' released checkpoints by name or URL: downloaded once, checked, kept in a cache.

`fetch_checkpoint("cifar100_wrn28-10_cut_mixmo_cutmix")` returns a local file holding the
network that row names (`mixmo_tf.importing.released`), checked by the import's own reader
(no PyTorch, nothing in the file runs), and the file's SHA-256. The file is kept in the Keras
cache folder, `$KERAS_HOME/mixmo_tf/checkpoints/<row>/<Drive id>.ckpt` (`KERAS_HOME` defaults
to ~/.keras, as for Keras' own downloads), so the next call is offline. A URL (`https://...`,
a mirror or a lab server) is fetched the same way, into `.../checkpoints/urls/<hash>/`.

Nothing is downloaded but what a caller names. A download is written to a temporary file in
the cache folder and renamed into place only once complete (the size the server announced)
and checked (a torch file of the row's network): an interrupted, cut or refused transfer, an
HTML page instead of the file, or a file of another network leaves nothing in the cache.
Every failure is one `UserError` line; without network, within seconds
(`mixmo_tf.data.downloads.is_reachable`), naming the link to open in a browser and the path
to save the file at, after which the name works offline.

Google Drive answers a large file (all of the authors') with a "can't scan this file for
viruses" page whose form leads to the file. gdown (a maintained downloader) reads that page
(`get_url_from_gdrive_confirmation`: also the "too many downloads" quota page's reason) and
streams the file with a progress bar on stderr, checking its announced size. The first
request is made here rather than by `gdown.download`, which recognises Drive by its host name
only: so the host can be a mirror or the tests' loopback server, set by the environment
variable `MIXMO_TF_DOWNLOAD_HOST` (e.g. `http://127.0.0.1:8000`; for tests and mirrors, which
answer `/uc?export=download&id=<id>` as Drive does).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request

import gdown
import gdown.parse_url
from gdown.download import get_url_from_gdrive_confirmation

from mixmo_tf.config.errors import ConfigError, UserError
from mixmo_tf.config.run_folder import write_atomically
from mixmo_tf.data.downloads import is_reachable
from mixmo_tf.importing import released
from mixmo_tf.importing.authors_checkpoint import (
    AuthorsArchitecture,
    AuthorsCheckpointError,
    file_sha256,
    read_authors_checkpoint,
)
from mixmo_tf.importing.released import ReleasedRow

HOST_VARIABLE = "MIXMO_TF_DOWNLOAD_HOST"
DRIVE_HOST = "https://drive.google.com"
# Seconds without a byte before a transfer is abandoned (a stalled server, a lost network).
READ_TIMEOUT_S = 60.0
_PAGE_BYTES = 1 << 20  # Drive's pages are a few KB; a larger answer is the file itself
_HTML_SNIFF_BYTES = 512
# Drive serves its pages to a browser; gdown sends this kind of agent too.
_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) mixmo-tf"


class DownloadError(UserError):
    """A checkpoint could not be downloaded: no network, a transfer cut short, or a page (Drive's
    quota page, a sign-in page) instead of the file."""


class UnknownCheckpointError(ConfigError):
    """A name that is neither a released row nor a URL (the message names the closest rows)."""


class WrongNetworkError(AuthorsCheckpointError):
    """A file holds another network than the row that names it."""


@dataclasses.dataclass(frozen=True)
class FetchedCheckpoint:
    """A released checkpoint on this machine, checked.

    Attributes:
        path: the local file (in the cache), an authors' checkpoint of `architecture`.
        sha256: the file's SHA-256 (hex).
        row: the released row it is, or None for a URL of no known row.
        url: where it comes from: the row's Drive link, or the URL given.
        architecture: the network the file holds (the row's, for a row).
    """

    path: str
    sha256: str
    row: ReleasedRow | None
    url: str
    architecture: AuthorsArchitecture


def cache_folder() -> str:
    """`$KERAS_HOME/mixmo_tf/checkpoints`, KERAS_HOME defaulting as Keras' own: ~/.keras, or
    /tmp/.keras if the home folder is not writable."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return os.path.join(home, "mixmo_tf", "checkpoints")


def cached_path(row: ReleasedRow) -> str:
    """Where `row`'s file is kept; a file saved there by hand is used (checked) as well."""
    return os.path.join(cache_folder(), row.name, f"{row.drive_id}.ckpt")


def is_url(name_or_url: str) -> bool:
    """Whether `--checkpoint` names a URL (http or https) rather than a row or a file."""
    return name_or_url.startswith(("https://", "http://"))


def checkpoint_row(name_or_url: str) -> ReleasedRow | None:
    """The released row a name or a URL picks: a row's name, or the Drive link of exactly
    one row (the README's shared link picks none); None otherwise."""
    if not is_url(name_or_url):
        return released.find_row(name_or_url)
    drive_id = gdown.parse_url.parse_url(name_or_url)[0]
    rows = released.rows_of_drive_file(drive_id) if drive_id else []
    return rows[0] if len(rows) == 1 else None


def _drive_download_url(drive_id: str) -> str:
    host = os.environ.get(HOST_VARIABLE, DRIVE_HOST).rstrip("/")
    return f"{host}/uc?export=download&id={urllib.parse.quote(drive_id)}"


@dataclasses.dataclass(frozen=True)
class _Source:
    """What to download, from where, and where to keep it."""

    row: ReleasedRow | None
    shown_url: str  # the link a person opens (a row's Drive page, or the URL given)
    download_url: str  # the first request (a Drive id's through the overridable host)
    path: str


def _source(name_or_url: str) -> _Source:
    row = checkpoint_row(name_or_url)
    if row is not None:
        return _Source(row, row.url, _drive_download_url(row.drive_id), cached_path(row))
    if not is_url(name_or_url):
        closest = released.closest_names(name_or_url)
        hint = f"the closest: {', '.join(closest)}; " if closest else ""
        raise UnknownCheckpointError(
            f"--checkpoint={name_or_url} is neither a file nor a released row ({hint}"
            "--checkpoint=list lists them) nor an http(s):// URL."
        )
    drive_id = gdown.parse_url.parse_url(name_or_url)[0]
    download = _drive_download_url(drive_id) if drive_id else name_or_url
    key = hashlib.sha256(name_or_url.encode()).hexdigest()[:16]
    basename = drive_id or os.path.basename(urllib.parse.urlparse(name_or_url).path)
    path = os.path.join(cache_folder(), "urls", key, basename or "checkpoint")
    return _Source(None, name_or_url, download, path)


def fetch_checkpoint(name_or_url: str, progress: bool = True) -> FetchedCheckpoint:
    """A released checkpoint as a checked local file, downloaded unless already cached.

    Args:
        name_or_url: a row's name (`mixmo_tf.importing.released`, e.g.
            "cifar100_wrn28-10_cut_mixmo_cutmix" or "...@seed2"), or an http(s) URL of an
            authors' checkpoint (a row's Drive link picks that row).
        progress: show the download's progress bar on stderr.

    Returns:
        The file, its SHA-256, its row and the network it holds.

    Raises:
        UnknownCheckpointError: neither a row nor a URL (names the closest rows).
        DownloadError: no network, a transfer cut short, a page instead of the file.
        WrongNetworkError: the file is not the row's network.
        TorchFileError, AuthorsCheckpointError: a cached file (e.g. saved there by hand) that
            is not an authors' checkpoint.
    """
    source = _source(name_or_url)
    if os.path.isfile(source.path):
        architecture = _checked(source.path, source.row, shown=source.path)
    else:
        architecture = _download(source, progress)
    return FetchedCheckpoint(
        path=source.path,
        sha256=file_sha256(source.path),
        row=source.row,
        url=source.shown_url,
        architecture=architecture,
    )


def _by_hand(source: _Source) -> str:
    """How to get the file without this download."""
    named = f"--checkpoint={source.row.name}" if source.row else "the same --checkpoint"
    return (
        f"download {source.shown_url} by hand (e.g. in a browser) and save it as "
        f"{source.path}: {named} then uses it offline"
    )


def _download(source: _Source, progress: bool) -> AuthorsArchitecture:
    """Downloads `source` into its cache path, checked; returns the network it holds."""
    if not is_reachable(source.download_url):
        host = urllib.parse.urlparse(source.download_url).netloc
        raise DownloadError(f"Cannot reach {host} (no network?): {_by_hand(source)}.")
    shown = f"the file downloaded from {source.shown_url}"
    named = f"{source.row.name} ({source.row.network_label})" if source.row else source.shown_url
    checked = []

    def download_and_check(temporary: str) -> None:
        file_url = _file_url(source)
        with open(temporary, "wb") as stream:
            gdown.download(
                file_url,
                output=stream,
                quiet=not progress,
                use_cookies=False,  # nothing of this download is kept outside the cache
                timeout=READ_TIMEOUT_S,
                log_messages={"start": f"Downloading {named}\n", "output": ""},
            )
        _refuse_page(temporary, source)
        checked.append(_checked(temporary, source.row, shown=shown, path_shown=temporary))

    try:
        write_atomically(source.path, download_and_check, ".download")
    except (gdown.exceptions.DownloadError, OSError) as error:
        if isinstance(error, OSError) and error.errno is not None:
            raise  # the disk, not the transfer: described as every OSError
        reason = str(error).replace("\n", " ").strip()
        raise DownloadError(
            f"The download of {source.shown_url} failed ({reason}); nothing was kept. Run the "
            f"command again, or {_by_hand(source)}."
        ) from error
    return checked[0]


def _file_url(source: _Source) -> str:
    """The URL of the file itself: the first answer's, or the one Drive's page leads to."""
    request = urllib.request.Request(source.download_url, headers={"User-Agent": _USER_AGENT})
    status = ""
    try:
        with urllib.request.urlopen(request, timeout=READ_TIMEOUT_S) as response:
            if not _is_page(response.headers):
                return response.geturl()
            page = response.read(_PAGE_BYTES).decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        # An error status may still carry Drive's page; gdown reads the page whatever the status.
        page = error.read(_PAGE_BYTES).decode("utf-8", "replace")
        status = f"HTTP {error.code} ({error.reason})"
    try:
        return get_url_from_gdrive_confirmation(page)
    except gdown.exceptions.FileURLRetrievalError:
        if not status:
            raise DownloadError(_page_message(source, page)) from None
    refusal = _drive_refusal(page)
    said = f"; Google Drive says: {refusal}" if refusal else ""
    raise DownloadError(f"{source.shown_url} answered {status}{said}: {_by_hand(source)}.")


def _is_page(headers) -> bool:
    """Whether an answer is a web page (Drive's confirmation or quota page), not a file."""
    attachment = "attachment" in headers.get("Content-Disposition", "")
    return not attachment and headers.get_content_type() == "text/html"


def _drive_refusal(page: str) -> str:
    """The reason a Drive error page gives (its quota page: "Too many users have viewed or
    downloaded this file recently..."), as gdown reads it; "" for any other page."""
    if "uc-error-subcaption" not in page:
        return ""
    try:
        get_url_from_gdrive_confirmation(page)
    except gdown.exceptions.FileURLRetrievalError as refusal:
        return " ".join(str(refusal).split())
    return ""


def _page_message(source: _Source, page: str) -> str:
    """The line for a web page received instead of the file."""
    refusal = _drive_refusal(page)
    if refusal:
        return (
            f"Google Drive refused {source.shown_url}: {refusal} Try again later (its quota "
            f"resets within a day), or {_by_hand(source)}."
        )
    return (
        f"{source.shown_url} answered with a web page instead of the file (no download link in "
        f"it: a sign-in, error or removed-file page): {_by_hand(source)}."
    )


def _refuse_page(path: str, source: _Source) -> None:
    """Raises DownloadError if the downloaded `path` is a web page rather than a file."""
    with open(path, "rb") as stream:
        head = stream.read(_HTML_SNIFF_BYTES).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        with open(path, encoding="utf-8", errors="replace") as stream:
            raise DownloadError(_page_message(source, stream.read(_PAGE_BYTES)))


def _checked(
    path: str, row: ReleasedRow | None, shown: str, path_shown: str | None = None
) -> AuthorsArchitecture:
    """The network of the authors' checkpoint `path`, which must be `row`'s if given.

    Errors name the file as `shown` (a download's temporary `path_shown` is no place a user
    knows); a file of the wrong network in the cache is named with its path, to remove.
    """
    try:
        architecture = read_authors_checkpoint(path).architecture
    except UserError as error:
        if path_shown is None:
            raise
        raise DownloadError(
            f"{str(error).replace(path_shown, shown)} Nothing was kept in the cache."
        ) from None
    if row is not None and dataclasses.asdict(architecture) != row.network:
        note = f" ({row.note})" if row.note else ""
        fix = "nothing was kept" if path_shown else "remove it, or save the row's file there"
        raise WrongNetworkError(
            f"{shown} holds a {architecture.label}, not the {row.network_label} of "
            f"{row.name}{note}: {fix}."
        )
    return architecture
