"""A loopback HTTP server that answers as Google Drive does for a large public file.

Drive today answers `GET /uc?export=download&id=ID` with a redirect to its download host,
which answers a file too large to scan with a "can't scan this file for viruses" page: a form
(`id="download-form"`, hidden inputs id, export, confirm=t and a fresh uuid) whose submission
returns the file (`Content-Disposition: attachment`). Over its daily quota it answers with an
error page instead (`<p class="uc-error-subcaption">`). gdown 6.5.1 reads both pages
(`gdown.download.get_url_from_gdrive_confirmation`, line by line: each page is one line, as
Drive sends it).

Each served file has a behaviour, to test the download's failures: "ok"; "quota" (the quota
page instead of the confirmation); "html" (a sign-in page where the file should be); "cut"
(the connection closes halfway through a body of announced length); "interrupted" (a
chunked body that stops mid-chunk, as a dropped connection); "unannounced" (half the file,
then the connection closes, no length announced: only the file's own check can tell).
`/files/<name>` serves a file directly, as a plain web server does.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import urllib.parse
import uuid
from collections.abc import Iterator

CONFIRMATION_PAGE = (
    "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title><meta "
    'http-equiv="content-type" content="text/html; charset=utf-8"/></head><body><div '
    'class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can\'t scan '
    'this file for viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size"><a '
    'href="/open?id={id}">checkpoint.ckpt</a> (280M)</span> is too large for Google to scan '
    'for viruses. Would you still like to download this file?</p><form id="download-form" '
    'action="{action}" method="get"><input type="submit" id="uc-download-link" '
    'class="goog-inline-block jfk-button jfk-button-action" value="Download anyway"/><input '
    'type="hidden" name="id" value="{id}"><input type="hidden" name="export" '
    'value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" '
    'name="uuid" value="{uuid}"></form></div></div></body></html>'
)
QUOTA_REASON = (
    "Too many users have viewed or downloaded this file recently. Please try accessing the "
    "file again later."
)
QUOTA_PAGE = (
    "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body><div "
    'class="uc-main"><div id="uc-text"><p class="uc-error-caption">Sorry, you can&#39;t view '
    f'or download this file at this time.</p><p class="uc-error-subcaption">{QUOTA_REASON}'
    "</p></div></div></body></html>"
)
SIGN_IN_PAGE = "<!DOCTYPE html><html><head><title>Sign in</title></head><body></body></html>"


class DriveServer:
    """The server: `files` maps a Drive id (or a plain file's name) to (bytes, behaviour);
    `requests` lists the paths asked, in order."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        self._uuids: dict[str, str] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                server.answer(self)

            def log_message(self, *args) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.host = f"http://127.0.0.1:{self.port}"

    def answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlparse(handler.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        if parsed.path == "/uc":  # drive.google.com: on to the download host
            location = f"/download?id={query.get('id', '')}&export=download"
            return _send(handler, 303, b"", {"Location": location})
        if parsed.path.startswith("/files/"):
            return self._send_file(handler, parsed.path[len("/files/") :])
        if parsed.path != "/download" or query.get("id") not in self.files:
            return _send(handler, 404, b"Not Found", {"Content-Type": "text/plain"})
        file_id = query["id"]
        behaviour = self.files[file_id][1]
        if "uuid" not in query:
            if behaviour == "quota":
                return _send_page(handler, QUOTA_PAGE)
            self._uuids[file_id] = str(uuid.uuid4())
            page = CONFIRMATION_PAGE.format(
                id=file_id, action=f"{self.host}/download", uuid=self._uuids[file_id]
            )
            return _send_page(handler, page)
        if query["uuid"] != self._uuids.get(file_id) or query.get("confirm") != "t":
            return _send(handler, 400, b"Bad Request", {"Content-Type": "text/plain"})
        self._send_file(handler, file_id)

    def _send_file(self, handler: http.server.BaseHTTPRequestHandler, key: str) -> None:
        if key not in self.files:
            return _send(handler, 404, b"Not Found", {"Content-Type": "text/plain"})
        content, behaviour = self.files[key]
        if behaviour == "html":
            return _send_page(handler, SIGN_IN_PAGE)
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": 'attachment; filename="checkpoint.ckpt"',
        }
        half = content[: len(content) // 2]
        if behaviour == "cut":
            headers["Content-Length"] = str(len(content))
            return _send(handler, 200, half, headers, close=True)
        if behaviour == "unannounced":
            handler.close_connection = True
            return _send(handler, 200, half, {**headers, "Connection": "close"}, length=False)
        if behaviour == "interrupted":
            handler.send_response(200)
            for name, value in {**headers, "Transfer-Encoding": "chunked"}.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(b"%x\r\n" % len(content) + half)  # the chunk never ends
            handler.wfile.flush()
            handler.close_connection = True
            return None
        _send(handler, 200, content, headers)

    def serve(self) -> None:
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _send(handler, status: int, body: bytes, headers: dict, close=False, length=True) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    if length and "Content-Length" not in headers:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()
    if close or not length:
        handler.close_connection = True


def _send_page(handler, page: str) -> None:
    _send(handler, 200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})


@contextlib.contextmanager
def drive_server() -> Iterator[DriveServer]:
    """A running `DriveServer` on a free loopback port, stopped at the end."""
    server = DriveServer()
    server.serve()
    try:
        yield server
    finally:
        server.close()
