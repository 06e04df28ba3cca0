"""Fetch: the artifacts a compiled host needs, into the cache, verified and pinned in its lock."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Diagnostic, InputError, UsageError
from ..memory import is_cloud
from ..net import redact_url
from .cache import Cache, NotRegular, regular, sha256_file
from .documents import artifact_file, read_models
from .download import download, size_ceiling
from .lock import Lock


@dataclass(frozen=True)
class Artifact:
    model_id: str
    file: str
    url: str
    mirrors: tuple[str, ...] = ()
    revision: str | None = None
    size: int | None = None
    sha256: str | None = None  # from the catalog
    format: str | None = None  # the catalog's artifact.format, else from the file's extension
    memory_mb: int | None = None  # the model's memory estimate when it bounds its weights file (size_ceiling)


def size_ceiling_mb(model: dict) -> int | None:
    """The model's compiled memory_mb (weights + KV cache + overhead, so more than the weights file)
    when it says something about the file: declared, or estimated from a parameter count. None when
    the estimate knew neither the file's size nor the parameters (then it is the overhead alone)."""
    if model.get("memory_method") == "estimated" and not model.get("params_b"):
        return None
    return model.get("memory_mb") or None


def file_format(declared: str | None, file: str) -> str | None:
    """The format whose magic bytes a download must start with."""
    if declared:
        return declared
    suffix = file.rsplit(".", 1)[-1].lower() if "." in file else ""
    return suffix if suffix in ("gguf", "safetensors") else None


@dataclass
class Plan:
    host: str
    folder: Path
    artifacts: list[Artifact]
    skipped: list[str] = field(default_factory=list)  # models with nothing to fetch, and why
    document: dict = field(default_factory=dict)  # the compiled models.json it was read from


HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # as hosts.v2.json names them


def host_folder(out: Path, host: str | None) -> Path:
    """out/<host>/, or for this machine its declared name's folder if built, else out/local/."""
    from ..hosts import LOCAL, machine_name

    if host:
        if not HOST_NAME.match(host):  # one folder under out/, never a path out of it
            raise UsageError(f"{host!r} is not a host name (letters, digits, '.', '_' and '-')")
        folder = out / host
    else:
        name = machine_name()
        folder = out / name
        if not HOST_NAME.match(name) or not (folder / "models.json").exists():
            folder = out / LOCAL
    if not (folder / "models.json").exists():
        raise UsageError(f"{folder / 'models.json'} does not exist: run `hostfit build"
                         f"{' --host ' + host if host else ''}` first")
    return folder


def plan(folder: Path, roles: tuple[str, ...] = (), with_fallbacks: bool = False) -> Plan:
    compiled = read_models(folder / "models.json").data  # schema-checked; ids and file names confined
    known = compiled["roles"]
    for role in roles:
        if role not in known:
            raise UsageError(f"unknown role {role!r}; roles: {', '.join(sorted(known))}")
    wanted: list[str] = []
    for name in sorted(roles or known):
        role = known[name]
        for model_id in [role["model"]] + (role["fallbacks"] if with_fallbacks else []):
            if model_id and model_id not in wanted:
                wanted.append(model_id)
    result = Plan(compiled["host"]["name"], folder, [], document=compiled)
    for model_id in wanted:
        model = compiled["models"][model_id]
        artifact = model.get("artifact") or {}
        if is_cloud(model):
            continue
        if not artifact.get("url"):
            result.skipped.append(f"{model_id}: no single-file download URL (artifact.url or repo+file)")
            continue
        file = artifact_file(artifact)
        result.artifacts.append(Artifact(model_id, file, artifact["url"], tuple(artifact.get("mirrors") or ()),
                                         artifact.get("revision"), artifact.get("size_bytes"), artifact.get("sha256"),
                                         file_format(artifact.get("format"), file), size_ceiling_mb(model)))
    return result


@dataclass
class Fetched:
    artifact: Artifact
    path: Path
    size: int
    sha256: str
    downloaded: bool
    resumed_from: int = 0
    final_url: str | None = None  # where the bytes came from after redirects (None: from the cache)


class Reporter:
    """Progress for people (a rich bar on a terminal, a line per artifact otherwise) or JSON events."""

    def __init__(self, mode: str = "auto", stream=None):
        self.stream = stream or sys.stderr
        self.mode = mode if mode != "auto" else ("bar" if self.stream.isatty() else "lines")
        self._bar = None

    def event(self, **fields) -> None:
        if self.mode == "json":
            print(json.dumps(fields, sort_keys=True), file=self.stream, flush=True)

    def start(self, artifact: Artifact, expected: int | None):
        self.event(event="start", model=artifact.model_id, url=redact_url(artifact.url), size=expected)
        if self.mode == "bar":
            from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                                       TransferSpeedColumn)
            self._bar = Progress("[bold]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                 TimeRemainingColumn(), transient=False)
            self._bar.start()
            task = self._bar.add_task(artifact.model_id, total=expected)
            return lambda done, total: self._bar.update(task, completed=done, total=total)
        if self.mode == "json":
            last = [0.0]

            def tick(done, total):
                if time.monotonic() - last[0] >= 0.5:
                    last[0] = time.monotonic()
                    self.event(event="progress", model=artifact.model_id, bytes=done, size=total)
            return tick
        return None

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def finish(self, fetched: Fetched) -> None:
        how = ("downloaded" + (f" (resumed at {fetched.resumed_from:,} bytes)" if fetched.resumed_from else "")
               if fetched.downloaded else "cached")
        self.event(event="done", model=fetched.artifact.model_id, path=str(fetched.path), size=fetched.size,
                   sha256=fetched.sha256, downloaded=fetched.downloaded, resumed_from=fetched.resumed_from)
        if self.mode != "json":
            print(f"{fetched.artifact.model_id}: {how}, {fetched.size:,} bytes, sha256 {fetched.sha256[:16]}...",
                  file=self.stream, flush=True)


def fetch(artifacts: list[Artifact], cache: Cache, lock: Lock, reporter: Reporter,
          require_pinned: bool = False) -> list[Fetched]:
    """Every artifact verified in the cache and pinned in the lock (saved if it changed)."""
    if require_pinned:
        unpinned = [a.model_id for a in artifacts if not (a.sha256 or (lock.get(a.model_id) or {}).get("sha256"))]
        if unpinned:
            raise InputError([Diagnostic(str(lock.path), 0, 0, "E211", f"not pinned: {', '.join(unpinned)}",
                                         "run `hostfit lock` and commit models.lock, or give the catalog sha256")])
    results = []
    try:
        for artifact in artifacts:
            results.append(fetch_one(artifact, cache, lock, reporter))
    finally:  # pin what was verified, even when a later artifact failed
        changed = [lock.pin(r.artifact.model_id, lock_entry(r)) for r in results]
        if any(changed):
            lock.save()
    return results


def lock_entry(fetched: Fetched) -> dict:
    a = fetched.artifact
    return {"url": redact_url(a.url), "final_url": fetched.final_url and redact_url(fetched.final_url),
            "revision": a.revision, "file": a.file, "size": fetched.size, "sha256": fetched.sha256}


def expected(artifact: Artifact, lock: Lock) -> tuple[int | None, str | None]:
    pinned = lock.get(artifact.model_id) or {}
    if pinned and (pinned.get("url"), pinned.get("file")) != (redact_url(artifact.url), artifact.file):
        pinned = {}  # the catalog now points elsewhere: the old pin says nothing about it
    sha = artifact.sha256 or pinned.get("sha256")
    if artifact.sha256 and pinned.get("sha256") and artifact.sha256 != pinned["sha256"]:
        raise InputError([Diagnostic(str(lock.path), 0, 0, "E212",
                                     f"{artifact.model_id}: the catalog's sha256 differs from the lock's",
                                     "a catalog change must be re-locked: `hostfit lock`")])
    return artifact.size or pinned.get("size"), sha


def fetch_one(artifact: Artifact, cache: Cache, lock: Lock, reporter: Reporter) -> Fetched:
    size, sha = expected(artifact, lock)
    final = cache.artifact_path(artifact.model_id, artifact.file)
    part = cache.part_path(artifact.model_id, artifact.file)
    with cache.lock_for(part):  # one download per artifact, however many processes ask
        entry = cache.entries().get(artifact.model_id)
        if os.path.lexists(final) and not regular(final):  # a FIFO would block the first read: never opened
            raise NotRegular(f"{final} is not a regular file, so {artifact.model_id} is not cached; hostfit "
                             "neither opens nor replaces it: remove it and fetch again")
        if final.exists() and entry and entry.path == str(final.relative_to(cache.root)):
            if (sha is None or entry.sha256 == sha) and (size is None or entry.size == size) \
                    and final.stat().st_size == entry.size:
                cache.record(artifact.model_id, final, entry.size, entry.sha256, downloaded=False)
                fetched = Fetched(artifact, final, entry.size, entry.sha256, False)
                reporter.finish(fetched)
                return fetched
        if final.exists():  # present but unknown or unverified: hash it rather than download again
            actual = sha256_file(final)
            if sha is None or actual == sha:
                cache.record(artifact.model_id, final, final.stat().st_size, actual, downloaded=False)
                fetched = Fetched(artifact, final, final.stat().st_size, actual, False)
                reporter.finish(fetched)
                return fetched
            cache.delete(final)
        tick = reporter.start(artifact, size)
        try:
            outcome = download([artifact.url, *artifact.mirrors], part, final, size, sha, tick, fmt=artifact.format,
                               ceiling=None if size else size_ceiling(artifact.memory_mb))
        finally:
            reporter.stop()
        cache.record(artifact.model_id, final, outcome.size, outcome.sha256, downloaded=True)
        fetched = Fetched(artifact, final, outcome.size, outcome.sha256, True, outcome.resumed_from, outcome.url)
        reporter.finish(fetched)
        return fetched


def lock_all(artifacts: list[Artifact], cache: Cache, lock: Lock, reporter: Reporter) -> int:
    """Pin every artifact: straight from the catalog when it gives size and sha256, else from a
    verified download. Returns how many pins changed; the lock is saved when any did."""
    changed = 0
    for artifact in artifacts:
        if artifact.sha256 and artifact.size:
            entry = {"url": redact_url(artifact.url), "revision": artifact.revision, "file": artifact.file,
                     "size": artifact.size, "sha256": artifact.sha256}
        else:
            entry = lock_entry(fetch_one(artifact, cache, lock, reporter))
        changed += lock.pin(artifact.model_id, entry)
    if changed or not lock.path.exists():
        lock.save()
    return changed
