"""A JSON API on 127.0.0.1 for ingest tests: routes map a path to a callable(query) returning
(status, body, headers); every request is logged; `delay` makes it slow, `trickle` (seconds per
byte) a slow-loris."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from loopback import LoopbackServer, trickle


class JsonServer(LoopbackServer):
    def __init__(self, routes: dict):
        self.routes, self.log, self.delay, self.trickle = routes, [], 0.0, 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                server.log.append(self.path)
                if server.delay:
                    time.sleep(server.delay)
                route = server.routes.get(parts.path)
                status, body, headers = route(parse_qs(parts.query)) if route else (404, {"error": "no"}, {})
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                if server.trickle:
                    self.send_header("Connection", "close")
                self.end_headers()
                if server.trickle:
                    trickle(self.wfile, data, server.trickle)
                    self.close_connection = True
                    return
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        super().__init__(Handler)
        self.start()
