"""Fetch: the artifacts a compiled host needs, into the cache, verified and pinned in its lock."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..artifacts import files_of
from ..errors import Diagnostic, DownloadError, InputError, IntegrityError, UsageError
from ..memory import is_cloud
from ..net import redact_url
from ..validate import plain_http_to
from .cache import Cache, NotRegular, regular, sha256_file
from .documents import read_models
from .download import Parallel, download, size_ceiling
from .lock import Lock


@dataclass(frozen=True)
class File:
    """One file of an artifact, as the compiled models.json gives it."""
    name: str
    url: str
    mirrors: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None  # from the catalog
    format: str | None = None  # the format whose magic bytes the download must start with


@dataclass(frozen=True)
class Artifact:
    """A model's artifact: one file, or a set (GGUF shards, a safetensors folder) cached, pinned and
    evicted together in one folder under the files' own names."""
    model_id: str
    files: tuple[File, ...]
    revision: str | None = None
    memory_mb: int | None = None  # the model's memory estimate when it bounds its weights (size_ceiling)
    team_mirrors: tuple[str, ...] = ()  # base URLs (config.yaml, then hosts.yaml) tried before the file's own
    parallel: Parallel | None = None  # config.yaml's `download:` as the command read it (None: read it here)

    @property
    def file(self) -> str:
        """The file a runtime opens: the only one, or a set's first (llama.cpp finds further shards beside it)."""
        return self.files[0].name

    @property
    def is_set(self) -> bool:
        return len(self.files) > 1


def size_ceiling_mb(model: dict) -> int | None:
    """The model's compiled memory_mb (weights + KV cache + overhead, so more than the weights file)
    when it says something about the file: declared, or estimated from a parameter count. None when
    the estimate knew neither the file's size nor the parameters (then it is the overhead alone)."""
    if model.get("memory_method") == "estimated" and not model.get("params_b"):
        return None
    return model.get("memory_mb") or None


def file_format(declared: str | None, file: str, single: bool = True) -> str | None:
    """The format whose magic bytes a download must start with: a single file's declared format, else
    the file's extension (a safetensors folder holds config.json and tokenizer files too)."""
    if declared and single:
        return declared
    suffix = file.rsplit(".", 1)[-1].lower() if "." in file else ""
    return suffix if suffix in ("gguf", "safetensors") else None


@dataclass
class Plan:
    host: str
    folder: Path
    artifacts: list[Artifact]
    skipped: dict[str, str] = field(default_factory=dict)  # model id -> why there is nothing to fetch
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


def plan(folder: Path, roles: tuple[str, ...] = (), with_fallbacks: bool = False,
         mirrors: tuple[str, ...] = (), compiled: dict | None = None, parallel: Parallel | None = None) -> Plan:
    """The artifacts to fetch; `mirrors`: the user configuration's team mirrors, tried before the host's;
    `compiled`: the folder's models.json when the caller has read it already; `parallel`: the user
    configuration's `download:` settings, when the caller has read them already."""
    if compiled is None:
        compiled = read_models(folder / "models.json").data  # schema-checked; ids and file names confined
    team = tuple(dict.fromkeys((*mirrors, *compiled["host"].get("mirrors", ()))))
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
        files = files_of(artifact)
        if not files or not all(item.get("url") for item in files):
            result.skipped[model_id] = _unfetchable(model, files)
            continue
        single = len(files) == 1
        mirrors = tuple(artifact.get("mirrors") or ()) if single else ()  # a mirror is one file's other address
        result.artifacts.append(Artifact(
            model_id, tuple(File(item["name"], item["url"], mirrors, item.get("size_bytes"), item.get("sha256"),
                                 file_format(artifact.get("format"), item["name"], single)) for item in files),
            artifact.get("revision"), size_ceiling_mb(model), team, parallel))
    return result


def _unfetchable(model: dict, files: list[dict]) -> str:
    """Why a local model has nothing to download, and what the catalog must add."""
    artifact = model.get("artifact") or {}
    if not files and artifact.get("repo"):  # a repository (an importer's GGUF conversion) without its file
        which = f"the {model['quantization']} " if model.get("quantization") else "the "
        return (f"artifact names repository {artifact['repo']} but no file: set artifact.file to {which}"
                f".{artifact.get('format') or 'gguf'} in it, or artifact.files")
    if not files and (model.get("ollama") or {}).get("name"):
        return f"no file to download: Ollama pulls it by name ({model['ollama']['name']})"
    return "no download URL for each file (artifact.url, repo+file or files)"


@dataclass
class FetchedFile:
    name: str
    path: Path
    size: int
    sha256: str
    downloaded: bool
    resumed_from: int = 0
    final_url: str | None = None  # where the bytes came from after redirects (None: from the cache)


@dataclass
class Fetched:
    """An artifact verified in the cache: each of its files, in the artifact's order, in one folder."""
    artifact: Artifact
    files: tuple[FetchedFile, ...]

    @property
    def path(self) -> Path:
        """The file a runtime opens (a set's first; the others lie beside it under their own names)."""
        return self.files[0].path


class Reporter:
    """Progress for people (a rich bar on a terminal, a line per file otherwise) or JSON events."""

    def __init__(self, mode: str = "auto", stream=None):
        self.stream = stream or sys.stderr
        self.mode = mode if mode != "auto" else ("bar" if self.stream.isatty() else "lines")
        self._bar = None

    def event(self, **fields) -> None:
        if self.mode == "json":
            print(json.dumps(fields, sort_keys=True), file=self.stream, flush=True)

    @staticmethod
    def label(artifact: Artifact, name: str) -> str:
        return f"{artifact.model_id} {name}" if artifact.is_set else artifact.model_id

    def start(self, artifact: Artifact, file: File, expected: int | None):
        self.event(event="start", model=artifact.model_id, file=file.name, url=redact_url(file.url), size=expected)
        if self.mode == "bar":
            from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                                       TransferSpeedColumn)
            self._bar = Progress("[bold]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                 TimeRemainingColumn(), transient=False)
            self._bar.start()
            task = self._bar.add_task(self.label(artifact, file.name), total=expected)
            return lambda done, total: self._bar.update(task, completed=done, total=total)
        if self.mode == "json":
            last = [0.0]

            def tick(done, total):
                if time.monotonic() - last[0] >= 0.5:
                    last[0] = time.monotonic()
                    self.event(event="progress", model=artifact.model_id, file=file.name, bytes=done, size=total)
            return tick
        return None

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def say(self, text: str) -> None:
        self.event(event="note", message=text)
        if self.mode != "json":
            print(text, file=self.stream, flush=True)

    def finish(self, artifact: Artifact, fetched: FetchedFile) -> None:
        how = ("downloaded" + (f" (resumed at {fetched.resumed_from:,} bytes)" if fetched.resumed_from else "")
               if fetched.downloaded else "cached")
        self.event(event="done", model=artifact.model_id, file=fetched.name, path=str(fetched.path),
                   size=fetched.size, sha256=fetched.sha256, downloaded=fetched.downloaded,
                   resumed_from=fetched.resumed_from)
        if self.mode != "json":
            print(f"{self.label(artifact, fetched.name)}: {how}, {fetched.size:,} bytes, "
                  f"sha256 {fetched.sha256[:16]}...", file=self.stream, flush=True)


def fetch(artifacts: list[Artifact], cache: Cache, lock: Lock, reporter: Reporter,
          require_pinned: bool = False, verify: bool = False, repair: bool = True) -> list[Fetched]:
    """Every artifact (every file of it) verified in the cache and pinned in the lock (saved if it changed)."""
    if require_pinned:
        unpinned = [a.model_id for a in artifacts if not all(sha for _, sha in expected(a, lock))]
        if unpinned:
            raise InputError([Diagnostic(str(lock.path), 0, 0, "E211", f"not pinned: {', '.join(unpinned)}",
                                         "run `hostfit lock` and commit models.lock, or give the catalog sha256")])
    results = []
    try:
        for artifact in artifacts:
            results.append(fetch_one(artifact, cache, lock, reporter, verify, repair))
    finally:  # pin what was verified, even when a later artifact failed
        changed = [lock.pin(r.artifact.model_id, lock_entry(r)) for r in results]
        if any(changed):
            lock.save()
    return results


def lock_entry(fetched: Fetched) -> dict:
    """The lock's entry: url, file, size, sha256 for one file; for a set, `files` with each one's."""
    a = fetched.artifact
    pins = [{"url": redact_url(spec.url), "final_url": got.final_url and redact_url(got.final_url), "file": got.name,
             "size": got.size, "sha256": got.sha256} for spec, got in zip(a.files, fetched.files)]
    return _entry(a, pins)


def _entry(artifact: Artifact, pins: list[dict]) -> dict:
    if not artifact.is_set:
        return {"revision": artifact.revision, **pins[0]}
    return {"revision": artifact.revision,
            "files": [{("name" if key == "file" else key): value for key, value in pin.items()} for pin in pins]}


def expected(artifact: Artifact, lock: Lock) -> list[tuple[int | None, str | None]]:
    """(size, sha256) each file must have: the catalog's, else the lock's when the lock pins these
    same files (same URLs and names; otherwise the catalog now points elsewhere and the old pin says
    nothing). A catalog sha256 that differs from the lock's is E212."""
    pinned = pinned_files(lock.get(artifact.model_id))
    if [(p.get("url"), p.get("name")) for p in pinned] != [(redact_url(f.url), f.name) for f in artifact.files]:
        pinned = [{} for _ in artifact.files]
    result = []
    for spec, pin in zip(artifact.files, pinned):
        if spec.sha256 and pin.get("sha256") and spec.sha256 != pin["sha256"]:
            raise InputError([Diagnostic(str(lock.path), 0, 0, "E212",
                                         f"{artifact.model_id}: the catalog's sha256 of {spec.name} differs from "
                                         "the lock's", "a catalog change must be re-locked: `hostfit lock`")])
        result.append((spec.size or pin.get("size"), spec.sha256 or pin.get("sha256")))
    return result


def pinned_files(entry: dict | None) -> list[dict]:
    """A lock entry's files as [{name, url, final_url, size, sha256}]: one for the one-file form."""
    if not entry:
        return []
    if "files" in entry:
        return [dict(item) for item in entry["files"]]
    return [{"name": entry.get("file"), **{k: entry.get(k) for k in ("url", "final_url", "size", "sha256")}}]


def moved(artifact: Artifact, lock: Lock) -> dict[str, str]:
    """{name: sha256 pinned} of files the lock pins from another URL than the catalog now gives: a cached
    file with that sha256 came from there, so it says nothing about the new URL's bytes (a new revision
    under the same name)."""
    urls = {spec.name: redact_url(spec.url) for spec in artifact.files}
    return {pin["name"]: pin["sha256"] for pin in pinned_files(lock.get(artifact.model_id))
            if pin.get("name") in urls and pin.get("url") != urls[pin["name"]] and pin.get("sha256")}


def fetch_one(artifact: Artifact, cache: Cache, lock: Lock, reporter: Reporter, verify: bool = False,
              repair: bool = True) -> Fetched:
    """Every file of the artifact verified in its folder of the cache, recorded as one manifest entry
    (`verify`: hash every cached file; `repair` off: a corrupt cached file is refused, not replaced)."""
    wanted = expected(artifact, lock)
    elsewhere = moved(artifact, lock)
    # one fetch per artifact, however many processes ask: a set's files are fetched under its first file's lock
    with cache.lock_for(cache.part_path(artifact.model_id, artifact.file)):
        entry = cache.entries().get(artifact.model_id)
        files: list[FetchedFile] = []
        for spec, (size, sha) in zip(artifact.files, wanted):
            # the unsized ceiling bounds the weights, which are every file of a set: what the files
            # before this one hold is spent
            files.append(_fetch_file(artifact, spec, size, sha, entry, cache, reporter,
                                     sum(f.size for f in files), elsewhere.get(spec.name), verify, repair))
        cache.record(artifact.model_id, [(f.path, f.size, f.sha256) for f in files],
                     downloaded=any(f.downloaded for f in files))
    return Fetched(artifact, tuple(files))


def _fetch_file(artifact: Artifact, spec: File, size: int | None, sha: str | None, entry, cache: Cache,
                reporter: Reporter, spent: int = 0, old_pin: str | None = None, verify: bool = False,
                repair: bool = True) -> FetchedFile:
    """One file: the manifest's record when the file is unchanged since it was hashed (size, mtime, inode;
    never with `verify`), else the file hashed, else downloaded. A file whose bytes are no longer those the
    manifest recorded is downloaded again, or with `repair` off (apply, bundle, load) an IntegrityError.
    `spent`: bytes of the set's earlier files, taken from the unsized ceiling. `old_pin`: the sha256 the
    lock pinned it with from another URL; with no checksum for this URL, a file with it is not this URL's."""
    final = cache.artifact_path(artifact.model_id, spec.name)
    part = cache.part_path(artifact.model_id, spec.name)
    known = next((item for item in entry.file_list() if item["name"] == spec.name), None) if entry else None
    if os.path.lexists(final) and not regular(final):  # a FIFO would block the first read: never opened
        raise NotRegular(f"{final} is not a regular file, so {artifact.model_id} is not cached; hostfit "
                         "neither opens nor replaces it: remove it and fetch again")
    stale = old_pin if sha is None else None  # with a checksum for this URL, the checksum decides
    fetched = None
    if not (known and known["path"] == str(final.relative_to(cache.root))):
        known = None  # the manifest says nothing about this file
    if final.exists() and known and not verify and cache.unchanged(entry, spec.name) \
            and (sha is None or known["sha256"] == sha) and (size is None or known["size"] == size) \
            and known["sha256"] != stale:
        fetched = FetchedFile(spec.name, final, known["size"], known["sha256"], False)
    if fetched is None and final.exists():  # changed since hashed, unknown or --verify: hash it, not download
        actual = sha256_file(final)
        if known and actual != known["sha256"] and actual != sha:  # the bytes the manifest vouched for changed
            message = (f"{artifact.model_id}: cached file {final} is corrupt: sha256 {actual}, expected "
                       f"{known['sha256']} (as verified when cached)")
            if not repair:
                raise IntegrityError(f"{message}; `hostfit fetch` downloads it again")
            reporter.say(f"{message}; downloading it again")
        elif (sha is None and actual != stale) or actual == sha:
            fetched = FetchedFile(spec.name, final, final.stat().st_size, actual, False)
    if fetched is None:
        cache.forget(artifact.model_id)  # its file is about to be replaced; fetch_one records the whole again
        if final.exists():  # hashed above and not these bytes
            cache.delete(final)
        tick = reporter.start(artifact, spec, size)
        try:
            outcome = _download_from_sources(artifact, spec, cache, part, final, size, sha, tick, reporter,
                                             None if size else max(0, size_ceiling(artifact.memory_mb) - spent))
        finally:
            reporter.stop()
        fetched = FetchedFile(spec.name, final, outcome.size, outcome.sha256, True, outcome.resumed_from, outcome.url)
    reporter.finish(artifact, fetched)
    return fetched


# A mirror that is down costs every retry with backoff (seconds) for each file; once a failed mirror is
# seen not to accept connections at all, the files after it skip it for a while.
MIRROR_DOWN_SECONDS = 300.0
_MIRRORS_DOWN: dict[str, float] = {}  # base URL -> when it was found down (time.monotonic)


def _down_recently(base: str) -> bool:
    found = _MIRRORS_DOWN.get(base)
    return found is not None and time.monotonic() - found < MIRROR_DOWN_SECONDS


def _accepts_connections(base: str, timeout: float = 3.0) -> bool:
    """True when the mirror's host accepts a TCP connection (a failure of its own, such as a missing
    file, says nothing about the next file)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    try:
        with socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                      timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _download_from_sources(artifact: Artifact, spec: File, cache: Cache, part: Path, final: Path, size: int | None,
                           sha: str | None, tick, reporter: Reporter, ceiling: int | None):
    """The team mirrors first (only for a file whose sha256 is known: nothing else could verify their
    bytes), each on its own, then the file's own URLs. A mirror that fails, or serves other bytes than
    the pinned ones (IntegrityError), is reported and the next source tried; its partial is dropped so
    no source resumes another's bytes."""
    from .mirror import mirror_url

    bases = [base for base in artifact.team_mirrors if not _down_recently(base)] if sha else []
    with plain_http_to(artifact.team_mirrors):  # only while the mirrors are asked for bytes a sha256 verifies
        for base in bases:
            try:
                return download([mirror_url(base, sha)], part, final, size, sha, tick, fmt=spec.format,
                                ceiling=ceiling, parallel=artifact.parallel)
            except (DownloadError, IntegrityError) as exc:
                reporter.say(f"{Reporter.label(artifact, spec.name)}: mirror failed, trying the next source: {exc}")
                cache.delete_part(part)
                if isinstance(exc, DownloadError) and not _accepts_connections(base):
                    _MIRRORS_DOWN[base] = time.monotonic()
                    reporter.say(f"mirror {redact_url(base)} does not accept connections: not asked again for "
                                 f"{MIRROR_DOWN_SECONDS:g} s")
    # the file's own URLs keep the https rule, redirects included, even to a team mirror's host
    return download([spec.url, *spec.mirrors], part, final, size, sha, tick, fmt=spec.format, ceiling=ceiling,
                    parallel=artifact.parallel)


def lock_all(artifacts: list[Artifact], cache: Cache, lock: Lock, reporter: Reporter) -> int:
    """Pin every artifact without downloading where its size and sha256 are known: from the catalog, from
    the lock's own pin of the same URL, else from what the server publishes (lock.published); a file
    nobody publishes them for is downloaded and verified (and the others checked against what was
    published). Returns how many pins changed; the lock is saved when any did."""
    import httpx

    changed = 0
    with httpx.Client(follow_redirects=False, verify=True) as client:  # one pool: a hub's files share connections
        for artifact in artifacts:
            files = _known(artifact, lock, reporter, client)
            if all(spec.sha256 and spec.size for spec in files):
                entry = _entry(artifact, [{"url": redact_url(spec.url), "file": spec.name, "size": spec.size,
                                           "sha256": spec.sha256} for spec in files])
            else:
                entry = lock_entry(fetch_one(replace(artifact, files=files), cache, lock, reporter))
            changed += lock.pin(artifact.model_id, entry)
    if changed or not lock.path.exists():
        lock.save()
    return changed


def _known(artifact: Artifact, lock: Lock, reporter: Reporter, client=None) -> tuple[File, ...]:
    """The artifact's files, each with the size and sha256 the catalog, the lock or the server's
    metadata gives (a file the catalog sizes but does not hash keeps its size, checked against the
    metadata's: a difference is an IntegrityError, exit 3)."""
    from .lock import published

    files = []
    for spec, (size, sha) in zip(artifact.files, expected(artifact, lock)):
        if not (size and sha):
            meta = published(spec.url, client)
            if meta is not None:
                if (size and size != meta.size) or (sha and sha.lower() != meta.sha256):
                    raise IntegrityError(f"{artifact.model_id}: {redact_url(spec.url)} publishes {meta.size:,} bytes, "
                                         f"sha256 {meta.sha256}; the catalog or lock says {size or '?'} bytes, "
                                         f"sha256 {sha or '?'}")
                reporter.say(f"{Reporter.label(artifact, spec.name)}: size and sha256 from the server's metadata"
                             + (f" (commit {meta.commit})" if meta.commit else ""))
                size, sha = meta.size, meta.sha256
        files.append(replace(spec, size=size, sha256=sha))
    return tuple(files)
