"""A file server on 127.0.0.1 for download tests: honours Range, and misbehaves on request.

Faults (set on `server.faults` before a request): `drop_after` bytes then close the connection
(once), `ignore_range`, `always_416`, `fail` (the next N requests get a 500), `throttle` (seconds
per 64 KiB), `wrong` (serve other bytes after the first 16), `fail_range` ({first byte: N}: the next N
requests for a Range starting there get a 500); hostile ones: `redirect` ({path: Location}),
`html` (an error page with 200), `content_type`, `endless` (that many bytes, no Content-Length),
`gzip` (these compressed bytes, as Content-Encoding: gzip), `trickle` (seconds per byte, for at most
`trickle_for` seconds). Every request is logged with its Range and Accept-Encoding headers and the
bytes sent (and the client's port: one per connection), so tests can assert what was actually asked for.

HEAD (logged with "method": "HEAD") answers like a plain server (200, Content-Length, no body), or,
for a path in `server.hub`, like Hugging Face's resolve URL of an LFS file: a 302 to `location` carrying
X-Linked-Size, X-Linked-Etag (quoted) and X-Repo-Commit; a path in `server.moved` gets a relative 307
to its new path first (a renamed repository)."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

from loopback import LoopbackServer, trickle


class FileServer(LoopbackServer):
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict = {}
        self.log: list[dict] = []
        self.hub: dict[str, dict] = {}  # path -> {size, sha256, commit, location}: HEAD answers with the headers
        self.moved: dict[str, str] = {}  # path -> relative Location for HEAD
        super().__init__(self._handler())

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                entry = {"path": self.path, "range": self.headers.get("Range"), "status": None, "sent": 0,
                         "accept_encoding": self.headers.get("Accept-Encoding"), "port": self.client_address[1]}
                server.log.append(entry)
                faults = server.faults
                if faults.get("fail", 0) > 0:
                    faults["fail"] -= 1
                    return self._reply(entry, 500, b"boom")
                first_byte = (entry["range"] or "=").split("=")[1].partition("-")[0]
                if (faults.get("fail_range") or {}).get(int(first_byte or -1), 0) > 0:
                    faults["fail_range"][int(first_byte)] -= 1
                    return self._reply(entry, 500, b"boom")
                location = (faults.get("redirect") or {}).get(self.path.lstrip("/"))
                if location:
                    entry["status"] = 302
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if faults.get("html"):
                    page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
                    return self._reply(entry, 200, page, faults.get("content_type", "text/html; charset=utf-8"))
                if faults.get("gzip") is not None:
                    return self._reply(entry, 200, faults["gzip"], "application/octet-stream",
                                       {"Content-Encoding": "gzip"})
                if faults.get("endless"):
                    return self._endless(entry, faults["endless"])
                if faults.get("trickle"):
                    return self._trickle(entry, server.files.get(self.path.lstrip("/"), b""), faults["trickle"],
                                         faults.get("trickle_for", 10.0))
                body = server.files.get(self.path.split("?", 1)[0].lstrip("/"))
                if body is None:
                    return self._reply(entry, 404, b"no such file")
                if faults.get("wrong"):
                    body = body[:16] + bytes(255 - b for b in body[16:])  # the format's magic bytes kept
                start = 0
                wanted = self.headers.get("Range")
                if wanted and not faults.get("ignore_range"):
                    first, _, last = wanted.split("=")[1].partition("-")
                    start = int(first)
                    stop = min(len(body), int(last) + 1) if last else len(body)  # bytes=a-b honours b
                    if start >= len(body) or faults.get("always_416"):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        entry["status"] = 416
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(body)}")
                    entry["status"] = 206
                else:
                    stop = len(body)
                    self.send_response(200)
                    if not faults.get("ignore_range"):
                        self.send_header("Accept-Ranges", "bytes")
                    entry["status"] = 200
                self.send_header("Content-Length", str(stop - start))
                self.end_headers()
                drop = faults.pop("drop_after", None)
                view = memoryview(body)[start:stop]
                for offset in range(0, len(view), 65536):
                    chunk = view[offset:offset + 65536]
                    if drop is not None and entry["sent"] + len(chunk) > drop:
                        self.wfile.write(chunk[: max(0, drop - entry["sent"])])
                        entry["sent"] = drop
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    entry["sent"] += len(chunk)
                    if faults.get("throttle"):
                        time.sleep(faults["throttle"])

            def do_HEAD(self):
                path = self.path.split("?", 1)[0].lstrip("/")
                entry = {"method": "HEAD", "path": self.path, "range": self.headers.get("Range"), "sent": 0}
                server.log.append(entry)
                if path in server.moved:
                    entry["status"] = 307
                    self.send_response(307)
                    self.send_header("Location", server.moved[path])
                elif path in server.hub:
                    meta = server.hub[path]
                    entry["status"] = 302
                    self.send_response(302)
                    self.send_header("Location", meta.get("location", "https://cdn.example.invalid/blob"))
                    self.send_header("X-Linked-Size", str(meta["size"]))
                    self.send_header("X-Linked-Etag", f'"{meta["sha256"]}"')
                    self.send_header("X-Repo-Commit", meta.get("commit", "0" * 40))
                    self.send_header("ETag", '"0123456789abcdef0123456789abcdef01234567"')  # a git sha1: not it
                elif path in server.files:
                    entry["status"] = 200
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(server.files[path])))
                    self.end_headers()
                    return
                else:
                    entry["status"] = 404
                    self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _reply(self, entry, status, body, content_type=None, headers=None):
                entry["status"] = status
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                entry["sent"] = len(body)

            def _endless(self, entry, limit):
                """A body with no declared length that goes on (up to `limit` bytes, then the connection closes)."""
                entry["status"] = 200
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                block = b"GGUF" + bytes(65532)
                while entry["sent"] < limit:
                    try:
                        self.wfile.write(block)
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    entry["sent"] += len(block)

            def _trickle(self, entry, body, seconds, at_most):
                """A slow-loris: the declared length, then one byte every `seconds`, for at most `at_most` s."""
                entry["status"] = 200
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                entry["sent"] = trickle(self.wfile, body, seconds, at_most)
                self.close_connection = True

        return Handler
