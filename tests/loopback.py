"""The shared shell of the test servers: a threaded HTTP server on 127.0.0.1, an OS-chosen port,
started and stopped by the test that owns it; a client hanging up is never an error."""

from __future__ import annotations

import threading
import time
from http.server import ThreadingHTTPServer


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients that hang up are part of the tests
        pass


class LoopbackServer:
    def __init__(self, handler):
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def trickle(wfile, data: bytes, seconds: float, at_most: float = 10.0) -> int:
    """A slow-loris body: one byte every `seconds`, for at most `at_most` seconds or until the client
    hangs up; returns the bytes sent."""
    ends, sent = time.monotonic() + at_most, 0
    for byte in data:
        if time.monotonic() > ends:
            break
        try:
            wfile.write(bytes([byte]))
            wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 1
        time.sleep(seconds)
    return sent
