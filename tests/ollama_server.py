"""A stand-in for Ollama's HTTP API on 127.0.0.1 (the documented endpoints: version, tags, show,
pull with streamed status, generate with keep_alive, ps). `failing` names models whose pull fails.
Hostile modes: `pull_unbroken` (a pull stream of that many bytes without a newline; `pull_sent`
counts what went out) and `trickle` (seconds per byte of every JSON answer: a slow-loris)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

from loopback import LoopbackServer, trickle


class FakeOllama(LoopbackServer):
    def __init__(self, failing: set[str] | None = None, installed: dict[str, dict] | None = None):
        self.failing = failing or set()
        self.installed = installed or {}  # name -> {tag fields..., "show": {...} or None for a failing show}
        self.loaded: dict[str, str] = {}  # name -> keep_alive
        self.requests: list[tuple[str, dict]] = []
        self.pull_unbroken = 0
        self.pull_sent = 0
        self.trickle = 0.0
        super().__init__(self._handler())

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if fake.trickle:
                    self.send_header("Connection", "close")
                self.end_headers()
                if fake.trickle:
                    trickle(self.wfile, data, fake.trickle)
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def _unbroken_pull(self) -> None:
                """One status line that never ends: no newline, no Content-Length, until the client hangs up."""
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                block = b'{"status": "pulling' + b" " * 65517
                while fake.pull_sent < fake.pull_unbroken:
                    try:
                        self.wfile.write(block)
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    fake.pull_sent += len(block)

            def do_GET(self):
                fake.requests.append((self.path, {}))
                if self.path == "/api/version":
                    return self._json(200, {"version": "0.12.0"})
                if self.path == "/api/tags":
                    if fake.installed:
                        return self._json(200, {"models": [
                            {"name": n, "model": n, **{k: v for k, v in spec.items() if k != "show"}}
                            for n, spec in fake.installed.items()]})
                    return self._json(200, {"models": [{"name": n, "model": n} for n in fake.loaded]})
                if self.path == "/api/ps":
                    return self._json(200, {"models": [{"name": n, "model": n, "expires_at": "2026-11-22T00:00:00Z"}
                                                       for n in fake.loaded]})
                return self._json(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                fake.requests.append((self.path, body))
                name = body.get("model") or body.get("name")
                if self.path == "/api/pull" and fake.pull_unbroken:
                    return self._unbroken_pull()
                if self.path == "/api/pull":
                    lines = [{"status": "pulling manifest"}]
                    if name in fake.failing:
                        lines.append({"error": f"pull model manifest: file does not exist: {name}"})
                    else:
                        lines += [{"status": "pulling 0123abcd", "digest": "sha256:0123abcd", "total": 100,
                                   "completed": done} for done in (0, 50, 100)]
                        lines += [{"status": "verifying sha256 digest"}, {"status": "success"}]
                    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-ndjson")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                if self.path == "/api/generate":
                    fake.loaded[name] = body.get("keep_alive")
                    return self._json(200, {"model": name, "response": "Hello from a fake model.", "done": True,
                                            "load_duration": 120_000_000, "prompt_eval_duration": 30_000_000})
                if self.path == "/api/show":
                    spec = fake.installed.get(name)
                    if spec is not None:
                        if spec.get("show") is None:
                            return self._json(500, {"error": "failed to read manifest"})
                        return self._json(200, spec["show"])
                    return self._json(200, {"model_info": {"general.architecture": "llama"}})
                return self._json(404, {"error": "not found"})

        return Handler
