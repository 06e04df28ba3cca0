"""A file server on 127.0.0.1 for download tests: honours Range, and misbehaves on request.

Faults (set on `server.faults` before a request): `drop_after` bytes then close the connection
(once), `ignore_range`, `always_416`, `fail` (the next N requests get a 500), `throttle` (seconds
per 64 KiB), `wrong` (serve other bytes). Every request is logged with its Range header and the
bytes sent, so tests can assert what was actually asked for."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

from loopback import LoopbackServer


class FileServer(LoopbackServer):
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict = {}
        self.log: list[dict] = []
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
                entry = {"path": self.path, "range": self.headers.get("Range"), "status": None, "sent": 0}
                server.log.append(entry)
                faults = server.faults
                if faults.get("fail", 0) > 0:
                    faults["fail"] -= 1
                    return self._reply(entry, 500, b"boom")
                body = server.files.get(self.path.lstrip("/"))
                if body is None:
                    return self._reply(entry, 404, b"no such file")
                if faults.get("wrong"):
                    body = bytes(255 - b for b in body)
                start = 0
                wanted = self.headers.get("Range")
                if wanted and not faults.get("ignore_range"):
                    start = int(wanted.split("=")[1].split("-")[0])
                    if start >= len(body) or faults.get("always_416"):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        entry["status"] = 416
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    entry["status"] = 206
                else:
                    self.send_response(200)
                    entry["status"] = 200
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                drop = faults.pop("drop_after", None)
                view = memoryview(body)[start:]
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

            def _reply(self, entry, status, body):
                entry["status"] = status
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
