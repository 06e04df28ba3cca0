"""Downloads: streamed, resumed, hashed on the fly, verified, renamed into place atomically.

    .part exists (n bytes)  -> GET with `Range: bytes=n-`
        206 + Content-Range "bytes n-..."  -> append
        200                                 -> the server ignored Range: restart from zero
        416                                 -> the partial is complete (size known) or restart
    3xx                                     -> followed here; every target passes the URL policy
    connection error, timeout, 5xx, too slow -> retry with exponential backoff and jitter
    4xx, a refused body or redirect         -> next mirror
    size or sha256 differ                   -> delete the partial, IntegrityError (exit 3)

Honest bytes only: identity encoding is asked for and a compressed body refused (never inflated);
nothing is written past the declared size (the catalog's size_bytes, else Content-Length), nor, when
neither is known, past a ceiling (size_ceiling: twice the model's memory estimate, else 16 GiB); an HTML
page, or a body without its format's magic bytes, is refused before anything is cached or pinned.
Bounded: at most MAX_REQUESTS requests per artifact whatever the number of mirrors (redirect hops
count; a ranged download's part requests are bounded instead by PART_ATTEMPTS per part and MAX_PARTS
parts), a total deadline and a minimum speed (limits(); README "Network limits").

The receiving thread only reads the socket; 1 MiB blocks go to two more threads, one writing the
file and one updating SHA-256 (file writes and hashlib both release the GIL), so network, disk
and hashing overlap instead of taking turns. A resumed download hashes the bytes it already has
once, before it asks for the rest.

A file of known size and at least two parts (config.yaml `download:`, Parallel) is fetched in ranges
over several connections, each part resumable from a sidecar of its written bytes; a server that
answers the first Range request with 200 is read as one stream (see "ranged downloads" below).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import shutil
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import gguf_header, paths
from ..errors import DiskError, DownloadError, IntegrityError, UsageError
from ..net import (IDENTITY, Deadline, DeadlinePassed, LimitExceeded, backoff, check_identity,
                   open_following_redirects, raw_chunks, redact_url)
from ..validate import url_problem
from .cache import open_artifact, sidecar_path

if TYPE_CHECKING:
    from .config import Settings

CHUNK = 1 << 20
ATTEMPTS = 5  # per mirror
CONNECTIONS = 8  # per file, for a file of at least two parts (config.yaml `download.connections`)
PART_SIZE = 16 << 20  # bytes per range (config.yaml `download.part_size`)
PART_ATTEMPTS = 5  # per part of a ranged download, then the URL is given up
MAX_REQUESTS = 20  # per artifact, across every mirror, redirect hops included
BACKOFF_BASE = 0.5  # seconds; doubled each attempt, plus jitter, capped at BACKOFF_CAP
BACKOFF_CAP = 8.0
DISK_MARGIN = 64 << 20  # keep this much free beyond the artifact
MIN_SPEED = 32 << 10  # bytes per second, averaged over SPEED_WINDOW; slower is a stall: retry
SPEED_WINDOW = 30.0  # seconds
DEADLINE_BASE = 300.0  # seconds for one artifact, all attempts and mirrors, plus size / MIN_SPEED
DEADLINE_UNSIZED = 24 * 3600.0  # when neither the catalog nor the lock knows the size
# An artifact of unknown size (no size_bytes, no pin, no Content-Length) is cut off at a ceiling, so an
# endless body cannot fill the disk: the weights file is smaller than the memory its model needs
# (memory_mb: weights + KV cache + overhead), so CEILING_FACTOR x memory_mb leaves a margin for a low
# estimate; with no estimate, CEILING_DEFAULT. HOSTFIT_MAX_UNSIZED (bytes) overrides both.
CEILING_FACTOR = 2
CEILING_DEFAULT = 16 << 30
CEILING_HINT = "give the catalog's artifact.size_bytes, or raise HOSTFIT_MAX_UNSIZED"


@dataclass
class Outcome:
    size: int
    sha256: str
    url: str  # where the bytes came from, after redirects
    resumed_from: int  # bytes already on disk when the successful attempt began


class Retry(Exception):
    """A transient failure worth another attempt on the same URL."""


class NextMirror(Exception):
    """A failure this URL will keep giving; try the next mirror."""


class GiveUp(Exception):
    """The artifact's deadline or request budget is spent: no more attempts anywhere."""


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _env_number(name: str, default: float) -> float:
    value = paths.env(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0 or number == float("inf"):
        raise UsageError(f"{name}={value!r}: expected a positive number")
    return number


def limits(expected_size: int | None) -> tuple[float, Deadline]:
    """(minimum bytes per second, the artifact's total deadline). HOSTFIT_MIN_SPEED and
    HOSTFIT_DOWNLOAD_DEADLINE (seconds) override the defaults."""
    min_speed = _env_number(paths.HOSTFIT_MIN_SPEED, MIN_SPEED)
    default = DEADLINE_BASE + expected_size / min_speed if expected_size else DEADLINE_UNSIZED
    return min_speed, Deadline(_env_number(paths.HOSTFIT_DOWNLOAD_DEADLINE, default))


def size_ceiling(memory_mb: int | None) -> int:
    """The most bytes an artifact of unknown size may have (see CEILING_FACTOR)."""
    override = paths.env(paths.HOSTFIT_MAX_UNSIZED)
    if override is not None:
        return int(_env_number(paths.HOSTFIT_MAX_UNSIZED, 0))
    return CEILING_FACTOR * memory_mb << 20 if memory_mb else CEILING_DEFAULT


def format_problem(fmt: str | None, head: bytes) -> str | None:
    """Why the first bytes of a download are not the catalog's format, or None (formats without
    a fixed signature pass)."""
    if fmt == "gguf" and not head.startswith(gguf_header.MAGIC):
        return f"not a GGUF file (it starts with {head[:16]!r})"
    if fmt == "safetensors":  # an 8-byte little-endian header length, then a JSON object
        if len(head) < 9 or struct.unpack("<Q", head[:8])[0] == 0 or head[8:9] != b"{":
            return f"not a safetensors file (it starts with {head[:16]!r})"
    return None


class _Budget:
    def __init__(self, requests: int):
        self.left = requests

    def take(self) -> None:
        if self.left <= 0:
            raise GiveUp(f"gave up after {MAX_REQUESTS} requests, the limit per artifact")
        self.left -= 1


class _Sink(threading.Thread):
    """Consumes chunks on its own thread (file writes and hashlib both release the GIL), so the
    network, the disk and SHA-256 proceed at once; the first error is kept for the caller."""

    def __init__(self, consume):
        super().__init__(daemon=True)
        self.consume = consume
        self.chunks: queue.Queue = queue.Queue(maxsize=16)  # at most 16 MiB in flight: bounded memory
        self.error: BaseException | None = None

    def run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            if self.error is None:
                try:
                    self.consume(chunk)
                except BaseException as exc:  # reported by the caller after join()
                    self.error = exc


def _seed(part: Path) -> tuple[int, "hashlib._Hash"]:
    digest = hashlib.sha256()
    size = 0
    if os.path.lexists(part):
        with open_artifact(part) as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    return size, digest


def download(urls: list[str], part: Path, final: Path, expected_size: int | None, expected_sha: str | None,
             progress: Callable[[int, int | None], None] | None = None, fmt: str | None = None,
             ceiling: int | None = None, parallel: "Parallel | None" = None) -> Outcome:
    """Fetch the first URL that works into `part`, check and verify it, rename it to `final`.
    `ceiling`: the most bytes to accept when neither `expected_size` nor the server gives a size.
    `parallel`: connections and part size (default: config.yaml's `download:`); see "ranged downloads"."""
    import httpx

    parallel = parallel or configured()
    # an unknown size is learnt from the first answer's Content-Length (or a ranged partial's sidecar)
    ranged = parallel.parts(expected_size) > 1 if expected_size is not None else parallel.connections > 1
    if not ranged and os.path.lexists(sidecar_path(part)):  # a ranged partial is sparse: not a one-stream prefix
        part.unlink(missing_ok=True)
        _drop_sidecar(part)

    for url in urls:
        problem = url_problem(url)
        if problem:
            raise DownloadError(f"{redact_url(url)}: {problem}")
    min_speed, deadline = limits(expected_size)
    part.parent.mkdir(parents=True, exist_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    larger_reads()
    client = httpx.Client(follow_redirects=False, verify=True)  # redirects: _open() checks each one
    budget = _Budget(MAX_REQUESTS)
    errors: list[str] = []
    try:
        for url in urls:
            for attempt in range(ATTEMPTS):
                try:
                    if ranged and expected_size is None and os.path.lexists(part) \
                            and not os.path.lexists(sidecar_path(part)):
                        ranged = False  # a one-stream partial of unknown size resumes as one stream
                    if ranged:
                        outcome, ranged = _ranged(client, url, part, expected_size, parallel, progress, deadline,
                                                  min_speed, budget, ceiling)
                    else:
                        outcome = _attempt(client, url, part, expected_size, progress, deadline, min_speed, budget,
                                           ceiling)
                    _check_format(fmt, part)
                    _verify(outcome, part, expected_size, expected_sha)
                    os.replace(part, final)
                    return outcome
                except Retry as exc:
                    errors.append(f"{redact_url(url)}: {exc}")
                    if attempt < ATTEMPTS - 1:
                        base = _env_number(paths.HOSTFIT_BACKOFF_BASE, BACKOFF_BASE)
                        time.sleep(max(0.0, min(backoff(base, attempt, BACKOFF_CAP), deadline.remaining())))
                except NextMirror as exc:
                    errors.append(f"{redact_url(url)}: {exc}")
                    break
    except GiveUp as exc:
        errors.append(str(exc))
    finally:
        client.close()
    raise DownloadError(f"could not download {final.name}: " + "; ".join(errors[-3:]))


@contextlib.contextmanager
def _translated(deadline: Deadline):
    """The one place a request's failures become the download's outcomes: past the deadline, give up;
    a limit or an unusable URL, the next mirror; a transport failure or timeout, retry the same URL."""
    import httpx

    try:
        yield
    except DeadlinePassed as exc:
        raise GiveUp(f"gave up after the {deadline.seconds:g} s deadline") from exc
    except LimitExceeded as exc:
        raise NextMirror(str(exc)) from exc
    except httpx.InvalidURL as exc:
        raise NextMirror(f"{type(exc).__name__}: {exc}") from exc
    except (httpx.TransportError, httpx.TimeoutException) as exc:
        raise Retry(f"{type(exc).__name__}: {exc}") from exc


def _attempt(client, url: str, part: Path, expected_size: int | None, progress, deadline: Deadline,
             min_speed: float, budget: _Budget, ceiling: int | None = None) -> Outcome:
    if deadline.remaining() <= 0:
        raise GiveUp(f"gave up after the {deadline.seconds:g} s deadline")
    offset, digest = _seed(part)
    if offset > (expected_size if expected_size is not None else ceiling if ceiling is not None else offset):
        part.unlink()
        offset, digest = 0, hashlib.sha256()
    headers = {**IDENTITY, **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        with _translated(deadline):
            response, final_url = open_following_redirects(client, url, headers, deadline, budget.take)
            try:
                return _receive(response, final_url, part, offset, digest, expected_size, progress, deadline,
                                min_speed, ceiling)
            finally:
                response.close()
    except OSError as exc:
        raise DiskError(f"cannot write {part}: {exc.strerror or exc}") from exc


def _receive(response, url: str, part: Path, offset: int, digest, expected_size: int | None, progress,
             deadline: Deadline, min_speed: float, ceiling: int | None = None) -> Outcome:
    status = response.status_code
    if status == 416:
        if expected_size is not None and offset == expected_size:
            return Outcome(offset, digest.hexdigest(), url, offset)
        part.unlink(missing_ok=True)
        raise Retry("416 Range Not Satisfiable for a partial that is not complete: restarting")
    _check_response(response, "the server")  # before any size: a compressed body's sizes are not the artifact's
    total = _total(response, offset)
    if offset and status == 206:
        match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("content-range", ""))
        if not match or int(match.group(1)) != offset:
            part.unlink(missing_ok=True)
            raise Retry(f"Content-Range {response.headers.get('content-range')!r} does not start at {offset}")
    elif offset:  # 200: the server ignored Range; take the whole body from the start
        offset, digest = 0, hashlib.sha256()
    if expected_size is not None and total is not None and total != expected_size:
        raise NextMirror(f"the server offers {total:,} bytes, the catalog says {expected_size:,}")
    known = expected_size if expected_size is not None else total
    if expected_size is None and ceiling is not None and total is not None and total > ceiling:
        raise NextMirror(f"the server offers {total:,} bytes, over the {ceiling:,}-byte ceiling for an artifact "
                         f"of unknown size ({CEILING_HINT})")
    limit = known if known is not None else ceiling  # never write past it
    needed = (known or 0) - offset
    if needed > 0 and free_bytes(part.parent) < needed + DISK_MARGIN:
        raise DiskError(f"not enough free disk for {part.name}: {needed:,} bytes needed, "
                        f"{free_bytes(part.parent):,} free in {part.parent}")
    with open_artifact(part, "r+b" if offset else "wb") as handle:
        handle.seek(offset)
        handle.truncate()
        sinks = [_Sink(handle.write), _Sink(digest.update)]
        for sink in sinks:
            sink.start()
        written = offset
        pending = bytearray()
        overflow = False
        since, since_bytes = time.monotonic(), written

        def dispatch() -> None:
            block = bytes(pending)
            pending.clear()
            for sink in sinks:
                sink.chunks.put(block)

        try:
            for chunk in raw_chunks(response, deadline, "the server"):  # as received, never inflated
                if limit is not None and written + len(chunk) > limit:
                    chunk, overflow = chunk[:limit - written], True
                pending += chunk
                written += len(chunk)
                if overflow:
                    break
                if len(pending) >= CHUNK:
                    dispatch()
                    if known is None and free_bytes(part.parent) < DISK_MARGIN:
                        raise DiskError(f"the disk is nearly full ({part.parent}) and {part.name}, of "
                                        "unknown size, is still arriving")
                    if progress:
                        progress(written, known)
                now = time.monotonic()
                if now - since >= SPEED_WINDOW:  # the minimum-speed rule: a trickle is a stall
                    if (written - since_bytes) / (now - since) < min_speed:
                        raise Retry(f"slower than {min_speed:,.0f} bytes/s for {SPEED_WINDOW:g} s")
                    since, since_bytes = now, written
        finally:
            if pending:
                dispatch()
            for sink in sinks:
                sink.chunks.put(None)
            for sink in sinks:
                sink.join()
        for sink in sinks:
            if sink.error is not None:
                raise sink.error
        if progress:
            progress(written, known)
        handle.flush()
        os.fsync(handle.fileno())
    if overflow:
        part.unlink(missing_ok=True)
        if known is None:
            raise NextMirror(f"the body goes on past {limit:,} bytes, the ceiling for an artifact of unknown size "
                             f"({CEILING_HINT}; the partial download was deleted)")
        raise NextMirror(f"the body goes on past the declared {limit:,} bytes (the partial download was deleted)")
    if total is not None and written != total:
        raise Retry(f"connection ended at {written:,} of {total:,} bytes")
    return Outcome(written, digest.hexdigest(), url, offset)


def _total(response, offset: int) -> int | None:
    """The artifact's full size: from Content-Range, else Content-Length (after `offset` for a 206)."""
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("content-range", ""))
    if match:
        return int(match.group(1))
    length = response.headers.get("content-length", "")
    if not length.isdigit():
        return None
    return offset + int(length) if response.status_code == 206 else int(length)


def _check_format(fmt: str | None, part: Path) -> None:
    """Refuse (and delete) a download that is not the catalog's format: an error page served with
    200 must not be cached or pinned."""
    with open_artifact(part) as handle:
        problem = format_problem(fmt, handle.read(16))
    if problem:
        part.unlink(missing_ok=True)
        raise NextMirror(f"{problem} (the partial download was deleted)")


def _verify(outcome: Outcome, part: Path, expected_size: int | None, expected_sha: str | None) -> None:
    problems = []
    if expected_size is not None and outcome.size != expected_size:
        problems.append(f"size {outcome.size:,} bytes, expected {expected_size:,}")
    if expected_sha and outcome.sha256 != expected_sha.lower():
        problems.append(f"sha256 {outcome.sha256}, expected {expected_sha.lower()}")
    if problems:
        part.unlink(missing_ok=True)
        raise IntegrityError(f"{redact_url(outcome.url)}: " + "; ".join(problems)
                             + " (the partial download was deleted)")


# ------------------------------------------------------------------ ranged (parallel) downloads
#
# A file of at least two parts (its size declared, else learnt) is fetched in parts of `part_size` bytes
# over `connections` connections at once, each worker taking the next part in file order (as aria2c -x or
# Ollama's parts).
# `<key>.part` is the file at its final size (sparse); `<key>.part.ranges` (the sidecar) records how many
# bytes of each part are written. The sidecar is saved at most once a SAVE_INTERVAL, each time after an
# fdatasync of the file, so it never claims bytes a power cut could lose; after kill -9 every part resumes
# where its last save left it. One SHA-256 follows the contiguous prefix as parts complete, reading the bytes
# back in HASH_BLOCK blocks (from the page cache), so memory stays bounded and little is left to hash at the end.

SAVE_INTERVAL = 1.0  # seconds between sidecar saves
HASH_BLOCK = 4 << 20
MAX_PARTS = 4096  # a larger file gets larger parts
SIDECAR_VERSION = 1
READ_SIZE = 256 << 10  # bytes per socket read (larger_reads)


@dataclass(frozen=True)
class Parallel:
    connections: int = CONNECTIONS
    part_size: int = PART_SIZE

    def parts(self, size: int | None) -> int:
        """How many parts a file of `size` bytes is fetched in (1: one stream)."""
        if size is None or self.connections < 2 or size < 2 * self.part_size:
            return 1
        return -(-size // self.span(size))

    def span(self, size: int) -> int:
        return max(self.part_size, -(-size // MAX_PARTS))


def configured(settings: Settings | None = None) -> Parallel:
    """The user configuration's `download:` settings (config.yaml, read here unless the command has read it
    already), defaults where unset."""
    from .config import settings as read_settings

    connections, part_size = (settings or read_settings()).download
    return Parallel(connections or CONNECTIONS, part_size or PART_SIZE)



def _drop_sidecar(part: Path) -> None:
    sidecar_path(part).unlink(missing_ok=True)


class _Ranges:
    """Which bytes of each part are on disk: `done[i]` bytes from the start of part i."""

    def __init__(self, size: int, span: int, done: list[int] | None = None):
        self.size, self.span = size, span
        self.count = -(-size // span)
        self.done = done or [0] * self.count
        self.lock = threading.Condition()

    def bounds(self, index: int) -> tuple[int, int]:
        return index * self.span, min(self.size, (index + 1) * self.span)

    def complete(self, index: int) -> bool:
        start, end = self.bounds(index)
        return start + self.done[index] >= end

    def total(self) -> int:
        return sum(self.done)

    def frontier(self, position: int) -> int:
        """The end of the contiguous bytes on disk from `position` (itself inside them)."""
        index = position // self.span
        while index < self.count and self.complete(index):
            index += 1
        return self.size if index >= self.count else self.bounds(index)[0] + self.done[index]

    def to_json(self) -> str:
        return json.dumps({"version": SIDECAR_VERSION, "size": self.size, "span": self.span, "done": self.done})

    @classmethod
    def load(cls, part: Path, size: int, span: int) -> "_Ranges | None":
        """The sidecar's ranges when they describe this download (same size and parts), else None."""
        try:
            with open_artifact(sidecar_path(part)) as handle:
                state = json.loads(handle.read(1 << 20))
            done = state["done"]
            if (state.get("version"), state.get("size"), state.get("span")) != (SIDECAR_VERSION, size, span):
                return None
            ranges = cls(size, span, [int(d) for d in done])
            if len(done) != ranges.count or os.lstat(part).st_size != size or any(
                    not 0 <= d <= ranges.bounds(i)[1] - ranges.bounds(i)[0] for i, d in enumerate(ranges.done)):
                return None
            return ranges
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def started(part: Path) -> int | None:
        """The size a ranged partial of unknown size was begun with (its sidecar's), or None."""
        try:
            with open_artifact(sidecar_path(part)) as handle:
                size = json.loads(handle.read(1 << 20)).get("size")
            return size if isinstance(size, int) and size > 0 else None
        except (OSError, ValueError, AttributeError):
            return None

    @classmethod
    def from_prefix(cls, size: int, span: int, have: int) -> "_Ranges":
        """A one-stream partial of `have` bytes: its whole parts done, the part it ends in begun."""
        ranges = cls(size, span)
        for index in range(ranges.count):
            start, end = ranges.bounds(index)
            ranges.done[index] = max(0, min(end, have) - start)
        return ranges


def _save(part: Path, ranges: _Ranges, fd: int | None) -> None:
    """The sidecar, atomically; after the file's data is flushed, so it claims only durable bytes."""
    with ranges.lock:
        text = ranges.to_json()  # the snapshot is taken before the flush: everything it claims is flushed
    if fd is not None:
        os.fdatasync(fd)
    sidecar = sidecar_path(part)
    temporary = sidecar.with_name(sidecar.name + ".tmp")
    with open_artifact(temporary, "wb") as handle:
        handle.write(text.encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, sidecar)


def _check_response(response, what: str) -> None:
    """The checks every answer gets before its bytes are taken (Retry, NextMirror)."""
    status = response.status_code
    if status >= 500 or status == 429:
        raise Retry(f"HTTP {status}")
    if status not in (200, 206):
        raise NextMirror(f"HTTP {status}")
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        raise NextMirror(f"the server sent an HTML page (Content-Type: {kind}), not the artifact")
    try:
        check_identity(response, what)
    except LimitExceeded as exc:
        raise NextMirror(str(exc)) from exc


def _content_range(response, start: int, end: int, size: int) -> None:
    """A 206 must be the bytes asked for, of a file of the expected size."""
    match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("content-range", ""))
    if match and match.group(3) != "*" and int(match.group(3)) != size:
        raise NextMirror(f"the server offers {int(match.group(3)):,} bytes, {size:,} expected")
    if not match or int(match.group(1)) != start or int(match.group(2)) >= end:
        raise Retry(f"Content-Range {response.headers.get('content-range')!r} is not bytes {start}-{end - 1}")


class _Ranged:
    """One ranged download of `url` into `part`: workers fetch parts, a thread saves the sidecar, the
    calling thread hashes."""

    def __init__(self, client, url: str, part: Path, size: int, parallel: Parallel, deadline: Deadline,
                 min_speed: float, progress):
        self.client, self.url, self.part, self.size = client, url, part, size
        self.parallel, self.deadline, self.min_speed, self.progress = parallel, deadline, min_speed, progress
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.todo: queue.Queue = queue.Queue()
        self.fd: int | None = None

    def open(self, index: int, start: int):
        """A streamed response to `Range: bytes=start-(end of part index)`."""
        end = self.ranges.bounds(index)[1]
        headers = {**IDENTITY, "Range": f"bytes={start}-{end - 1}"}
        response, final_url = open_following_redirects(self.client, self.url, headers, self.deadline)
        return response, final_url

    def run(self, first, first_index: int, ranges: _Ranges) -> Outcome:
        """`first`: the probe's 206 answer, for part `first_index`."""
        self.ranges = ranges
        resumed = ranges.total()
        digest = None
        with open_artifact(self.part, "r+b") as handle:
            self.fd = handle.fileno()
            for index in range(ranges.count):
                if not ranges.complete(index) and index != first_index:
                    self.todo.put(index)
            count = min(self.parallel.connections, self.todo.qsize() + (first is not None))
            # the first worker starts with the probe's part, on the probe's answer
            workers = [threading.Thread(target=self.work, args=((first_index, first) if n == 0 and first else None,),
                                        daemon=True) for n in range(count)]
            saver = threading.Thread(target=self.save, daemon=True)
            for thread in [*workers, saver]:
                thread.start()
            try:
                digest = self.hash(workers)
            finally:
                self.stop.set()
                for thread in [*workers, saver]:
                    thread.join()
                if first is not None:
                    first.close()
                if self.errors or digest is None:
                    _save(self.part, ranges, self.fd)  # what was written stays: the next run resumes every part
            if self.errors:
                raise self.errors[0]
            os.fsync(self.fd)
        _drop_sidecar(self.part)
        if self.progress:
            self.progress(self.size, self.size)
        return Outcome(self.size, digest.hexdigest(), self.url, resumed)

    def hash(self, workers) -> "hashlib._Hash | None":
        """SHA-256 of the contiguous bytes on disk as they grow."""
        digest, hashed, shown = hashlib.sha256(), 0, time.monotonic()
        ranges = self.ranges
        while True:
            with ranges.lock:
                available = ranges.frontier(hashed)
                if available == hashed and not self.errors and any(w.is_alive() for w in workers):
                    ranges.lock.wait(timeout=0.2)
                    available = ranges.frontier(hashed)
            while hashed < available and not self.errors:
                block = os.pread(self.fd, min(HASH_BLOCK, available - hashed), hashed)
                if not block:
                    raise DiskError(f"{self.part} is shorter than its {self.size:,} bytes")
                digest.update(block)
                hashed += len(block)
            if self.errors:
                return None
            if hashed >= self.size:
                return digest
            if not any(w.is_alive() for w in workers):
                with ranges.lock:
                    if ranges.frontier(hashed) == hashed:
                        raise Retry(f"parts ended at {hashed:,} of {self.size:,} bytes")  # not expected
            now = time.monotonic()
            if self.progress and now - shown >= 0.5:
                self.progress(ranges.total(), self.size)
                shown = now
            if self.deadline.remaining() <= 0:
                raise GiveUp(f"gave up after the {self.deadline.seconds:g} s deadline")

    def save(self) -> None:
        """The sidecar every SAVE_INTERVAL, on its own thread: its fdatasync waits for the disk, hashing does not."""
        try:
            while not self.stop.wait(SAVE_INTERVAL):
                _save(self.part, self.ranges, self.fd)
        except BaseException as exc:
            with self.ranges.lock:
                self.errors.append(exc)
                self.ranges.lock.notify_all()

    def work(self, first: tuple | None) -> None:
        try:
            if first is not None:
                self.fetch_part(*first)
            while not self.stop.is_set():
                try:
                    index = self.todo.get_nowait()
                except queue.Empty:
                    return
                self.fetch_part(index)
        except BaseException as exc:  # the hashing thread reports it
            with self.ranges.lock:
                self.errors.append(exc)
                self.ranges.lock.notify_all()

    def fetch_part(self, index: int, response=None) -> None:
        """Part `index`, resumed from what it has, retried with backoff; NextMirror after PART_ATTEMPTS."""
        ranges = self.ranges
        start, end = ranges.bounds(index)
        failures = 0
        while not ranges.complete(index) and not self.stop.is_set():
            position = start + ranges.done[index]
            try:
                with _translated(self.deadline):
                    try:
                        if response is None:
                            response, _ = self.open(index, position)
                        _check_response(response, "the server")
                        if response.status_code != 206:
                            raise Retry(f"HTTP {response.status_code} to a Range request (the server ignored it)")
                        _content_range(response, position, end, self.size)
                        self.receive(response, index, position, end)
                    finally:
                        if response is not None:
                            response.close()
                        response = None
            except Retry as exc:
                failures += 1
                if failures >= PART_ATTEMPTS:
                    raise NextMirror(f"part {index + 1} of {ranges.count} (bytes {start:,}-{end - 1:,}) failed "
                                     f"{failures} times; the last: {exc}") from exc
                base = _env_number(paths.HOSTFIT_BACKOFF_BASE, BACKOFF_BASE)
                self.stop.wait(max(0.0, min(backoff(base, failures - 1, BACKOFF_CAP), self.deadline.remaining())))

    def receive(self, response, index: int, position: int, end: int) -> None:
        ranges = self.ranges
        since, since_bytes = time.monotonic(), position
        for chunk in raw_chunks(response, self.deadline, "the server"):
            if self.stop.is_set():
                return
            if position + len(chunk) > end:
                raise Retry(f"the server sent more than bytes {position}-{end - 1}")
            os.pwrite(self.fd, chunk, position)
            position += len(chunk)
            with ranges.lock:
                ranges.done[index] = position - ranges.bounds(index)[0]
                ranges.lock.notify_all()
            now = time.monotonic()
            if now - since >= SPEED_WINDOW:  # the minimum-speed rule, per connection
                if (position - since_bytes) / (now - since) < self.min_speed:
                    raise Retry(f"slower than {self.min_speed:,.0f} bytes/s for {SPEED_WINDOW:g} s")
                since, since_bytes = now, position
        if position < end:
            raise Retry(f"connection ended at byte {position:,} of part {index + 1} (bytes to {end - 1:,})")


def larger_reads() -> None:
    """httpcore reads a response 64 KiB at a time; each read costs the same Python work whatever its
    size, so 256 KiB reads halve the CPU a download takes (measured: 0.57 -> 0.29 s user per GiB).
    httpcore has no setting for it: its class attribute is raised, when it still exists."""
    try:
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:
        return
    if getattr(HTTP11Connection, "READ_NUM_BYTES", None) == 64 << 10:
        HTTP11Connection.READ_NUM_BYTES = READ_SIZE


def _ranged(client, url: str, part: Path, size: int, parallel: Parallel, progress, deadline: Deadline,
            min_speed: float, budget: _Budget, ceiling: int | None) -> tuple[Outcome, bool]:
    """(outcome, still ranged): the parts fetched in parallel; or, when the server answers the first
    Range request with 200 (it ignores Range), that answer taken as one stream and (..., False)."""
    try:
        return _ranged_attempt(client, url, part, size, parallel, progress, deadline, min_speed, budget, ceiling)
    except OSError as exc:
        raise DiskError(f"cannot write {part}: {exc.strerror or exc}") from exc


def _plain_get(client, url: str, part: Path, parallel: Parallel, progress, deadline: Deadline, min_speed: float,
               budget: _Budget, ceiling: int | None) -> tuple[Outcome | None, int | None]:
    """A file of unknown size: (its download as one stream, None), or (None, its size) when the answer
    offers ranges of more than one part (then it is closed unread, and the parts are asked for)."""
    with _translated(deadline):
        response, final_url = open_following_redirects(client, url, IDENTITY, deadline, budget.take)
    try:
        length = response.headers.get("content-length", "")
        size = int(length) if length.isdigit() else None
        if (response.status_code == 200 and response.headers.get("accept-ranges", "").strip().lower() == "bytes"
                and parallel.parts(size) > 1 and (ceiling is None or size <= ceiling)
                and response.headers.get("content-encoding", "identity").strip().lower() in ("", "identity")):
            return None, size
        with _translated(deadline):  # the checks, the ceiling and the body: as any one-stream download
            return _receive(response, final_url, part, 0, hashlib.sha256(), None, progress, deadline, min_speed,
                            ceiling), None
    finally:
        response.close()


def _prepare(part: Path, size: int, parallel: Parallel) -> _Ranges:
    """The parts of `part` already on disk (its sidecar, or a one-stream partial as the first bytes),
    the file grown to `size` once the sidecar says what it holds."""
    span = parallel.span(size)
    ranges = _Ranges.load(part, size, span)
    if ranges is None:  # a new download, or a one-stream partial (no sidecar) taken over as its prefix
        # a sidecar that does not describe this download (other parts or size): its file is sparse, not a prefix
        have = os.lstat(part).st_size if os.path.lexists(part) and not os.path.lexists(sidecar_path(part)) else 0
        ranges = _Ranges.from_prefix(size, span, have if have <= size else 0)
        needed = size - ranges.total()
        if free_bytes(part.parent) < needed + DISK_MARGIN:
            raise DiskError(f"not enough free disk for {part.name}: {needed:,} bytes needed, "
                            f"{free_bytes(part.parent):,} free in {part.parent}")
        _save(part, ranges, None)  # before the file grows: a full-size file without its sidecar never exists
        with open_artifact(part, "r+b" if ranges.total() else "wb") as handle:
            handle.truncate(size)
    return ranges


def _ranged_attempt(client, url: str, part: Path, size: int | None, parallel: Parallel, progress,
                    deadline: Deadline, min_speed: float, budget: _Budget, ceiling: int | None) -> tuple[Outcome, bool]:
    """`size` None: a ranged partial's sidecar gives it, else a plain GET's answer: taken as one stream
    unless it offers ranges (Accept-Ranges: bytes) of a file of more than one part."""
    if deadline.remaining() <= 0:
        raise GiveUp(f"gave up after the {deadline.seconds:g} s deadline")
    learnt = False
    if size is None:
        size = _Ranges.started(part)
        learnt = size is not None
    if size is None:
        outcome, size = _plain_get(client, url, part, parallel, progress, deadline, min_speed, budget, ceiling)
        if outcome is not None:
            return outcome, False
        learnt = True
    ranges = _prepare(part, size, parallel)
    if ranges.total() >= size:
        return _Ranged(client, url, part, size, parallel, deadline, min_speed, progress).run(None, -1, ranges), True
    index = next(i for i in range(ranges.count) if not ranges.complete(i))
    start, end = ranges.bounds(index)
    position = start + ranges.done[index]
    with _translated(deadline):
        response, final_url = open_following_redirects(
            client, url, {**IDENTITY, "Range": f"bytes={position}-{end - 1}"}, deadline, budget.take)
    try:
        _check_response(response, "the server")
        if response.status_code == 200:  # Range ignored: this answer is the whole file, taken as one stream
            part.unlink(missing_ok=True)  # before its sidecar: a sparse file without one would pass for a prefix
            _drop_sidecar(part)
            with _translated(deadline):
                return _receive(response, final_url, part, 0, hashlib.sha256(), None if learnt else size, progress,
                                deadline, min_speed, ceiling), False
        try:
            _content_range(response, position, end, size)
        except NextMirror:
            if learnt:  # the file changed since its size was learnt: what is on disk is of no use
                part.unlink(missing_ok=True)
                _drop_sidecar(part)
                raise Retry("the file's size changed since the partial download began: starting over") from None
            raise
    except BaseException:
        response.close()
        raise
    return _Ranged(client, final_url, part, size, parallel, deadline, min_speed, progress).run(response, index,
                                                                                              ranges), True
