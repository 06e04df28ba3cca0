"""`hostfit inspect`: the I/O around gguf_header. A GGUF header is read in growing pieces (256 KiB,
then doubling up to gguf_header.MAX_HEADER) until it parses, from a local file or with HTTP Range
requests, so a 60 GB file costs a few MiB and the tensor data is never read.

A server that ignores Range (200 and the whole body) is read as a stream only as far as the header
needs, then the connection is closed. Bad bytes are an InputError (exit 1) with the file or URL as
its place; a refused URL or a missing file is a usage error (exit 2); a network failure, after
retries, is a DownloadError (exit 3).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from . import gguf_header
from .errors import Diagnostic, DownloadError, InputError, UsageError
from .load import NotRegular, open_regular
from .net import IDENTITY, Deadline, LimitExceeded, backoff, open_following_redirects, raw_chunks, redact_url

FIRST = 256 << 10  # bytes asked for first: most headers of small-vocabulary models fit
ATTEMPTS = 3  # per request, for connection errors, timeouts and 5xx
BACKOFF = 0.25  # seconds, doubled each attempt, with jitter
DEADLINE = 120.0  # seconds for the whole inspection of one URL
MAX_REQUESTS = 64  # doubling from 256 KiB reaches the 64 MiB bound in 9; the rest is for retries and short answers


def inspect(target: str) -> dict:
    """The header facts of a local GGUF file or an http(s) URL, with `source` and `bytes_read`."""
    if "://" in target:
        return _inspect_url(target)
    return _inspect_file(Path(target))


def _grow(read, size_of, where: str) -> dict:
    """Parse the header from `read(start, length) -> bytes`, asking for more until it parses.
    `size_of()` is the file's size once known (None before); a short read also means the end."""
    data = bytearray()
    want = FIRST
    while True:
        asked = want - len(data)
        more = read(len(data), asked)
        data += more
        size = size_of()
        # the end of the file: its known size reached, nothing more, or (size unknown) a short read; a server
        # that answers a Range with fewer bytes than asked, before the end, is simply asked again
        complete = not more or (len(data) >= size if size is not None else len(more) < asked)
        try:
            found = gguf_header.parse(bytes(data), complete, size)
        except gguf_header.NeedMore as more_needed:
            # doubling keeps the number of reads (and requests) logarithmic in the header's size
            want = min(gguf_header.MAX_HEADER, max(more_needed.size, 2 * len(data)))
            if size is not None:
                want = min(want, size)
            continue
        except gguf_header.BadHeader as exc:
            raise InputError([Diagnostic(where, 0, 0, exc.code, str(exc))]) from exc
        found["bytes_read"] = len(data)
        return found


def _inspect_file(path: Path) -> dict:
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such file") from exc
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block, a directory cannot be read
        raise UsageError(f"{path}: not a regular file")
    try:
        handle = open_regular(path)  # a FIFO swapped in since the stat cannot block
    except NotRegular:
        raise UsageError(f"{path}: not a regular file") from None
    with handle:
        def read(start: int, length: int) -> bytes:
            handle.seek(start)
            return handle.read(length)

        size = os.fstat(handle.fileno()).st_size
        found = _grow(read, lambda: size, str(path))
    return {"source": str(path), **found}


def _inspect_url(url: str) -> dict:
    import httpx

    from .validate import url_problem

    shown = redact_url(url)
    problem = url_problem(url)
    if problem:
        raise UsageError(f"{shown}: {problem}")
    deadline = Deadline(DEADLINE)
    with httpx.Client(follow_redirects=False) as client:
        source = _HTTPSource(client, url, shown, deadline)
        try:
            found = _grow(source.read, lambda: source.size, shown)
        finally:
            source.close()
    found["bytes_read"] = source.received  # off the network: more than parsed when a chunk overshoots
    found["requests"] = source.requests
    return {"source": shown, **found}


class _HTTPSource:
    """`read(start, length)` over HTTP Range requests; a 200 answer is kept open and read on."""

    def __init__(self, client, url: str, shown: str, deadline: Deadline):
        self.client, self.url, self.shown, self.deadline = client, url, shown, deadline
        self.size: int | None = None
        self.requests: list[str] = []  # the Range header of each request, for the report and tests
        self.stream = None  # (response, chunk iterator) of a 200 answer
        self.pending = b""
        self.received = 0
        self.sent = 0

    def read(self, start: int, length: int) -> bytes:
        if self.stream is not None:
            return self._from_stream(start, length)
        for attempt in range(ATTEMPTS):
            try:
                return self._request(start, start + length - 1, length)
            except _Transient as exc:
                if attempt == ATTEMPTS - 1 or self.deadline.remaining() <= 0:
                    raise DownloadError(f"{self.shown}: {exc} (after {attempt + 1} attempts)") from exc
                time.sleep(backoff(BACKOFF, attempt, 2.0))
        raise AssertionError("unreachable")

    def _request(self, start: int, end: int, length: int) -> bytes:
        import httpx

        headers = {**IDENTITY, "Range": f"bytes={start}-{end}"}
        self.requests.append(headers["Range"])
        response = None
        try:
            self.deadline.check(self.shown)
            # redirects (a hub sends the bytes from elsewhere) are followed as downloads follow them, under
            # the same URL policy; the later ranges go straight to where the first one was answered
            response, self.url = open_following_redirects(self.client, self.url, headers, self.deadline, self.take)
            if response.status_code >= 500:
                raise _Transient(f"HTTP {response.status_code}")
            if response.status_code == 416 and start == 0:  # an empty file
                self.size = 0
                return b""
            if response.status_code == 200 and start == 0:
                declared = response.headers.get("content-length", "")
                self.size = int(declared) if declared.isdigit() else None
                self.stream = (response, raw_chunks(response, self.deadline, self.shown))
                response = None  # kept open: read on as far as the header needs, then closed
                return self._from_stream(start, length)
            if response.status_code != 206:
                raise DownloadError(f"{self.shown}: HTTP {response.status_code} for {self.requests[-1]}")
            self._check_range(response.headers.get("content-range", ""), start)
            body = bytearray()
            for chunk in raw_chunks(response, self.deadline, self.shown):
                body += chunk
                self.received += len(chunk)
                if len(body) >= length:  # a server that sends past the range end is not read further
                    break
            return bytes(body[:length])
        except httpx.HTTPError as exc:
            raise _Transient(str(exc) or type(exc).__name__) from exc
        except LimitExceeded as exc:  # the deadline passed, a compressed body, a refused
            raise DownloadError(f"{self.shown}: {exc}") from exc  # redirect: no second attempt helps
        finally:
            if response is not None:
                response.close()

    def take(self) -> None:
        """One more HTTP request (redirect hops included), within MAX_REQUESTS."""
        self.sent += 1
        if self.sent > MAX_REQUESTS:  # a server that answers a few bytes at a time, or redirects in a loop
            raise DownloadError(f"{self.shown}: the header was not complete after {MAX_REQUESTS} requests")

    def _check_range(self, content_range: str, start: int) -> None:
        """Content-Range `bytes START-END/SIZE`: it must start where asked; SIZE is the file's size."""
        unit, _, spec = content_range.partition(" ")
        span, _, total = spec.partition("/")
        first = span.partition("-")[0]
        if unit != "bytes" or not first.isdigit() or int(first) != start:
            raise DownloadError(f"{self.shown}: the server answered {content_range!r} to {self.requests[-1]}")
        self.size = int(total) if total.isdigit() else self.size

    def _from_stream(self, start: int, length: int) -> bytes:
        """The next `length` bytes of the 200 answer (read in order: `start` is where it stands)."""
        import httpx

        chunks = self.stream[1]
        while len(self.pending) < length:
            try:
                chunk = next(chunks, None)
            except (httpx.HTTPError, LimitExceeded) as exc:
                raise DownloadError(f"{self.shown}: {exc or type(exc).__name__}") from exc
            if chunk is None:
                break
            self.pending += chunk
            self.received += len(chunk)
        taken, self.pending = self.pending[:length], self.pending[length:]
        return taken

    def close(self) -> None:
        if self.stream is not None:
            self.stream[0].close()
            self.stream = None


class _Transient(Exception):
    """A failure worth another attempt: a connection error, a timeout, a 5xx."""


LABELS = [("architecture", "architecture"), ("name", "name"), ("parameters", "parameters"),
          ("file_type", "file type"), ("context_length", "context length"), ("block_count", "layers"),
          ("embedding_length", "embedding"), ("head_count", "heads"), ("head_count_kv", "KV heads"),
          ("head_dim", "head dim"), ("sliding_window", "sliding window"), ("expert_count", "experts"),
          ("expert_used_count", "experts used"), ("vocab_size", "vocabulary"), ("file_size", "file size"),
          ("bytes_read", "bytes read")]


def render(found: dict, as_json: bool) -> str:
    """The facts as text (one per line, absent ones left out) or as one JSON object (keys sorted)."""
    if as_json:
        import json

        return json.dumps(found, indent=2, sort_keys=True)
    lines = [f"{'source':<16}{found['source']}"]
    for key, label in LABELS:
        value = found.get(key)
        if value is not None:
            lines.append(f"{label:<16}{value:,}" if isinstance(value, int) else f"{label:<16}{value}")
    lines.append("tensor types")
    for name, entry in found["tensor_types"].items():
        size = "" if entry["bytes"] is None else f", {entry['bytes']:,} bytes"
        lines.append(f"  {name:<14}{entry['tensors']:,} tensors, {entry['parameters']:,} parameters{size}")
    return "\n".join(lines)
