"""The bounds every HTTP call of hostfit obeys, in one place: a total deadline on top of httpx's
connect and per-read timeouts (which bound each read, never the whole), bodies and streamed lines
read raw (never decompressed) up to a size, and URLs redacted before they are shown or written.

Callers translate `LimitExceeded` (and httpx's errors) at their own boundary: a download retries,
discovery warns, a load fails over to the next model.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from urllib.parse import unquote

CONNECT = 10.0  # seconds to open a connection
READ = 30.0  # seconds one read may wait for the next bytes
# a parameter (query, `;` path parameter or fragment) whose name contains one of these, case-insensitively,
# has its value redacted: token, access_token, key, api_key, apikey, sig, signature, X-Amz-Signature,
# hmac, password, pwd, secret, credential, X-Amz-Credential, auth... (README, "The lock")
SECRET_PARAMS = ("token", "key", "sig", "secret", "pass", "pwd", "auth", "credential", "hmac", "session", "jwt")
REDACTED = "***"


class LimitExceeded(Exception):
    """A server broke a bound: too slow, too large, a line too long, a compressed body."""


class DeadlinePassed(LimitExceeded):
    """The total deadline passed."""


class BadResponse(ValueError):
    """A server's answer is not the JSON it should be (malformed, or nested too deeply to parse)."""


class BadURL(ValueError):
    """A configured server address that is not an http(s) URL httpx can use."""


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


def parse_json(body: bytes, what: str):
    """A server's JSON answer; BadResponse (a ValueError) for anything else. Every server response
    hostfit decodes goes through here: a deeply nested answer raises RecursionError inside the json
    module, which is translated here, once."""
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise BadResponse(f"{what}: the answer is JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadResponse(f"{what}: the answer is not JSON ({str(exc)[:120]})") from exc


MAX_REDIRECTS = 10  # per request
REDIRECTS = (301, 302, 303, 307, 308)


class RedirectRefused(LimitExceeded):
    """A redirect without a target, to a URL the policy refuses, from https to http, or one too many."""


def open_following_redirects(client, url: str, headers: dict, deadline: Deadline, take_request=lambda: None):
    """(streamed response, final URL): redirects followed here, at most MAX_REDIRECTS, each target checked
    by the URL policy the catalog's own URLs pass (validate.url_problem), and never from https to http.
    `take_request()` is called before each request (hops included), so a caller can bound them all."""
    from urllib.parse import urljoin, urlsplit

    from .validate import url_problem

    for _ in range(MAX_REDIRECTS + 1):
        take_request()
        request = client.build_request("GET", url, headers=headers, timeout=deadline.timeout())
        response = client.send(request, stream=True)
        if response.status_code not in REDIRECTS:
            return response, url
        response.close()
        location = response.headers.get("location")
        if not location:
            raise RedirectRefused(f"HTTP {response.status_code} without a Location header")
        target = urljoin(url, location)
        problem = url_problem(target)
        if not problem and urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
            problem = "a redirect may not leave https"
        if problem:
            raise RedirectRefused(f"refused the redirect to {redact_url(target)}: {problem}")
        url = target
    raise RedirectRefused(f"more than {MAX_REDIRECTS} redirects (a redirect loop?)")


def parse_json_object(body: bytes, what: str) -> dict:
    """A server's answer that must be a JSON object (BadResponse otherwise)."""
    answer = parse_json(body, what)
    if not isinstance(answer, dict):
        raise BadResponse(f"{what}: the answer is not a JSON object")
    return answer


def backoff(base: float, attempt: int, cap: float) -> float:
    """Seconds to wait before retry `attempt` (0-based): exponential up to `cap`, with +-50% jitter so
    clients that failed together do not retry together."""
    return min(cap, base * 2 ** attempt) * (0.5 + random.random())


def check_base_url(url: str) -> str:
    """`url` if httpx can use it as a server's base URL (http or https, a host, printable); else BadURL
    with a message that shows it redacted."""
    import httpx

    try:
        parsed = httpx.URL(url)
        problem = None if parsed.scheme in ("http", "https") and parsed.host else "not an http(s) URL with a host"
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        problem = str(exc).split("\n")[0][:120]
        userinfo = url.partition("://")[2].split("/")[0].rpartition("@")[0]
        for secret in filter(None, re.split("[:@]", userinfo)):  # httpx may quote a part of the URL
            problem = problem.replace(secret, REDACTED)
    if problem:
        raise BadURL(f"{redact_url(url)!r} is not a usable server URL: {problem}")
    return url


_PATH_PARAM = re.compile(r";([^;/=]*)=([^;/]*)")


def redact_url(url: str) -> str:
    """`url` fit to show or write: the user name and password, and the value of every parameter with a
    secret-looking name (SECRET_PARAMS; in the query, in `;` path parameters and in the fragment)
    become ***. The string is cut as a URL is, by hand, so nothing is re-encoded and even a URL that
    does not parse is redacted."""
    url = str(url)
    scheme, sep, rest = url.partition("://")
    if not sep:  # OLLAMA_HOST may be host:port, or user:password@host:port
        scheme, rest = "", url
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = REDACTED + "@" + authority.rpartition("@")[2]
    tail, hashmark, fragment = tail.partition("#")
    path, mark, query = tail.partition("?")
    path = _PATH_PARAM.sub(lambda m: f";{m.group(1)}={REDACTED}" if _secret(m.group(1)) else m.group(0), path)
    shown = scheme + sep + authority + path + mark + _redact_pairs(query) + hashmark + _redact_pairs(fragment)
    return shown


def _redact_pairs(text: str) -> str:
    """`a=1&token=x;b=2` with the secret values as ***; the separators and the rest kept verbatim."""
    pieces = re.split(r"([&;])", text)
    for index in range(0, len(pieces), 2):
        name, equals, _ = pieces[index].partition("=")
        if equals and _secret(name):
            pieces[index] = f"{name}={REDACTED}"
    return "".join(pieces)


def _secret(name: str) -> bool:
    name = unquote(name).lower()
    return any(word in name for word in SECRET_PARAMS)
