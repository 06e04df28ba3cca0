"""Downloads: streamed, resumed, hashed on the fly, verified, renamed into place atomically.

    .part exists (n bytes)  -> GET with `Range: bytes=n-`
        206 + Content-Range "bytes n-..."  -> append
        200                                 -> the server ignored Range: restart from zero
        416                                 -> the partial is complete (size known) or restart
    connection error, timeout, 5xx          -> retry with exponential backoff and jitter
    4xx, exhausted retries                  -> next mirror
    size or sha256 differ                   -> delete the partial, IntegrityError (exit 3)

The receiving thread only reads the socket; 1 MiB blocks go to two more threads, one writing the
file and one updating SHA-256 (file writes and hashlib both release the GIL), so network, disk
and hashing overlap instead of taking turns. A resumed download hashes the bytes it already has
once, before it asks for the rest.
"""

from __future__ import annotations

import hashlib
import os
import queue
import random
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import DiskError, DownloadError, IntegrityError
from ..validate import url_problem

CHUNK = 1 << 20
ATTEMPTS = 5  # per mirror
BACKOFF_BASE = 0.5  # seconds; doubled each attempt, plus jitter, capped at BACKOFF_CAP
BACKOFF_CAP = 8.0
TIMEOUT = 30.0
DISK_MARGIN = 64 << 20  # keep this much free beyond the artifact


@dataclass
class Outcome:
    size: int
    sha256: str
    url: str
    resumed_from: int  # bytes already on disk when the successful attempt began


class Retry(Exception):
    """A transient failure worth another attempt on the same URL."""


class NextMirror(Exception):
    """A failure this URL will keep giving; try the next mirror."""


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


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
    if part.exists():
        with open(part, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    return size, digest


def download(urls: list[str], part: Path, final: Path, expected_size: int | None, expected_sha: str | None,
             progress: Callable[[int, int | None], None] | None = None, client=None) -> Outcome:
    """Fetch the first URL that works into `part`, verify it, rename it to `final`."""
    import httpx

    for url in urls:
        problem = url_problem(url)
        if problem:
            raise DownloadError(f"{url}: {problem}")
    part.parent.mkdir(parents=True, exist_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    own_client = client is None
    client = client or httpx.Client(timeout=httpx.Timeout(TIMEOUT), follow_redirects=True, verify=True)
    errors: list[str] = []
    try:
        for url in urls:
            for attempt in range(ATTEMPTS):
                try:
                    outcome = _attempt(client, url, part, expected_size, progress)
                    _verify(outcome, part, expected_size, expected_sha)
                    os.replace(part, final)
                    return outcome
                except Retry as exc:
                    errors.append(f"{url}: {exc}")
                    if attempt < ATTEMPTS - 1:
                        base = float(paths.env(paths.HOSTFIT_BACKOFF_BASE) or BACKOFF_BASE)
                        delay = min(BACKOFF_CAP, base * 2 ** attempt)
                        time.sleep(delay * (0.5 + random.random()))
                except NextMirror as exc:
                    errors.append(f"{url}: {exc}")
                    break
    finally:
        if own_client:
            client.close()
    raise DownloadError(f"could not download {final.name}: " + "; ".join(errors[-3:]))


def _attempt(client, url: str, part: Path, expected_size: int | None, progress) -> Outcome:
    import httpx

    offset, digest = _seed(part)
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset, digest = 0, hashlib.sha256()
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with client.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if status == 416:
                if expected_size is not None and offset == expected_size:
                    return Outcome(offset, digest.hexdigest(), url, offset)
                part.unlink(missing_ok=True)
                raise Retry("416 Range Not Satisfiable for a partial that is not complete: restarting")
            if status >= 500 or status == 429:
                raise Retry(f"HTTP {status}")
            if status not in (200, 206):
                raise NextMirror(f"HTTP {status}")
            total = _total(response, offset)
            if offset and status == 206:
                match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("content-range", ""))
                if not match or int(match.group(1)) != offset:
                    part.unlink(missing_ok=True)
                    raise Retry(f"Content-Range {response.headers.get('content-range')!r} does not start at {offset}")
            elif offset:  # 200: the server ignored Range; take the whole body from the start
                offset, digest = 0, hashlib.sha256()
            needed = (expected_size or total or 0) - offset
            if needed > 0 and free_bytes(part.parent) < needed + DISK_MARGIN:
                raise DiskError(f"not enough free disk for {part.name}: {needed:,} bytes needed, "
                                f"{free_bytes(part.parent):,} free in {part.parent}")
            with open(part, "r+b" if offset else "wb") as handle:
                handle.seek(offset)
                handle.truncate()
                sinks = [_Sink(handle.write), _Sink(digest.update)]
                for sink in sinks:
                    sink.start()
                written = offset
                pending = bytearray()

                def dispatch() -> None:
                    block = bytes(pending)
                    pending.clear()
                    for sink in sinks:
                        sink.chunks.put(block)

                try:
                    for chunk in response.iter_bytes():  # as received: a drop loses nothing already here
                        pending += chunk
                        written += len(chunk)
                        if len(pending) >= CHUNK:
                            dispatch()
                            if progress:
                                progress(written, expected_size or total)
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
                    progress(written, expected_size or total)
                handle.flush()
                os.fsync(handle.fileno())
            if total is not None and written != total:
                raise Retry(f"connection ended at {written:,} of {total:,} bytes")
            return Outcome(written, digest.hexdigest(), url, offset)
    except (httpx.TransportError, httpx.TimeoutException) as exc:
        raise Retry(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise DiskError(f"cannot write {part}: {exc.strerror or exc}") from exc


def _total(response, offset: int) -> int | None:
    """The artifact's full size: from Content-Range, else Content-Length (after `offset` for a 206)."""
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("content-range", ""))
    if match:
        return int(match.group(1))
    length = response.headers.get("content-length", "")
    if not length.isdigit():
        return None
    return offset + int(length) if response.status_code == 206 else int(length)


def _verify(outcome: Outcome, part: Path, expected_size: int | None, expected_sha: str | None) -> None:
    problems = []
    if expected_size is not None and outcome.size != expected_size:
        problems.append(f"size {outcome.size:,} bytes, expected {expected_size:,}")
    if expected_sha and outcome.sha256 != expected_sha.lower():
        problems.append(f"sha256 {outcome.sha256}, expected {expected_sha.lower()}")
    if problems:
        part.unlink(missing_ok=True)
        raise IntegrityError(f"{outcome.url}: " + "; ".join(problems) + " (the partial download was deleted)")
