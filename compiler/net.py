"""The bounds every HTTP call of hostfit obeys, in one place: a total deadline on top of httpx's
connect and per-read timeouts (which bound each read, never the whole), bodies and streamed lines
read raw (never decompressed) up to a size, and URLs redacted before they are shown or written.

Callers translate `LimitExceeded` (and httpx's errors) at their own boundary: a download retries,
discovery warns, a load fails over to the next model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

CONNECT = 10.0  # seconds to open a connection
READ = 30.0  # seconds one read may wait for the next bytes
SECRET_PARAMS = ("token", "key", "sig", "secret", "pass", "auth", "credential")  # query names, as substrings
REDACTED = "***"


class LimitExceeded(Exception):
    """A server broke a bound: too slow, too large, a line too long, a compressed body."""


class DeadlinePassed(LimitExceeded):
    """The total deadline passed."""


class Deadline:
    """A point in time after which a call (or a whole download) is given up."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.remaining() <= 0:
            raise DeadlinePassed(f"{what}: not finished within the {self.seconds:g} s deadline")

    def timeout(self, connect: float = CONNECT, read: float = READ):
        """httpx timeouts no longer than what is left, so even one blocked read ends near the deadline."""
        import httpx

        left = max(0.001, self.remaining())
        return httpx.Timeout(connect=min(connect, left), read=min(read, left), write=min(read, left),
                             pool=min(connect, left))


IDENTITY = {"Accept-Encoding": "identity"}  # ask for bytes as stored: nothing to inflate


def check_identity(response, what: str) -> None:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise LimitExceeded(f"refused a compressed body from {what} (Content-Encoding: {encoding}); "
                            "identity encoding was asked for")


def raw_chunks(response, deadline: Deadline, what: str) -> Iterator[bytes]:
    """The body's bytes as received, never decoded; a compressed body is refused (a small gzip can
    inflate to gigabytes), and the deadline is checked between reads."""
    check_identity(response, what)
    for chunk in response.iter_raw():
        yield chunk
        deadline.check(what)


def read_body(response, deadline: Deadline, limit: int, what: str) -> bytes:
    """The whole body, at most `limit` bytes (checked against Content-Length first, then as read)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise LimitExceeded(f"{what}: a {int(declared):,}-byte body is over the {limit:,}-byte limit")
    body = bytearray()
    for chunk in raw_chunks(response, deadline, what):
        body += chunk
        if len(body) > limit:
            raise LimitExceeded(f"{what}: the body grew over the {limit:,}-byte limit")
    return bytes(body)


def iter_lines(response, deadline: Deadline, max_line: int, what: str) -> Iterator[bytes]:
    """Newline-delimited lines of a streamed body, each at most `max_line` bytes: a stream that
    never sends a newline fails instead of growing in memory."""
    pending = bytearray()
    for chunk in raw_chunks(response, deadline, what):
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            line = bytes(pending[:end])
            del pending[:end + 1]
            yield line
        if len(pending) > max_line:
            raise LimitExceeded(f"{what}: a streamed line grew over {max_line:,} bytes without a newline")
    if pending:
        yield bytes(pending)


def request(client, method: str, url: str, deadline: Deadline, limit: int, what: str, read: float = READ,
            **kwargs):
    """(response, body) of one bounded request: the deadline caps connect, each read and the whole;
    the body is at most `limit` bytes, raw. The response is closed; its status and headers remain."""
    headers = {**IDENTITY, **kwargs.pop("headers", {})}
    with client.stream(method, url, headers=headers, timeout=deadline.timeout(read=read),
                       **kwargs) as response:
        return response, read_body(response, deadline, limit, what)


def redact_url(url: str) -> str:
    """`url` fit to show or write: a user name or password and secret-looking query values
    (token, key, signature...) become ***. Anything unparsable is shown as ***."""
    url = str(url)
    bare = "://" not in url  # OLLAMA_HOST may be host:port, or user:password@host:port
    try:
        parts = urlsplit("//" + url if bare else url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(_secret(name) for name, _ in pairs):
                query = urlencode([(name, REDACTED if _secret(name) else value) for name, value in pairs], safe="*")
        shown = SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment).geturl()
        return shown[2:] if bare else shown
    except ValueError:
        return REDACTED


def _secret(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_PARAMS)
