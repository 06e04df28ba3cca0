"""The team mirror: every artifact file the compiled hosts use, verified, in a folder a static HTTP server serves.

    <dir>/sha256/<sha256>          each file under its own sha256: content-addressed, so one copy serves
                                   every host and model that uses those bytes, and a name never changes content
    <dir>/index.json               each sha256's size, and which hosts, models, files and origin URLs use it
                                   (for people and scripts; fetch needs nothing but the file's name)
    <dir>/.hostfit-mirror/         the marker (hostfit made this folder and may write in it), `seen.json`
                                   ([size, mtime_ns, inode] of each file when last hashed) and partial
                                   downloads; not meant to be served

A host fetches `<base>/sha256/<sha256>` from each mirror its configuration lists (mirror_url) and verifies
the bytes like any other download, so a mirror is trusted with nothing: only files whose sha256 a host
knows (the catalog's, or its models.lock's) are asked of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..emit import write_atomic
from ..errors import DiskError, DownloadError, IntegrityError, UsageError
from ..net import redact_url
from .cache import file_stat, open_artifact, regular, sha256_file
from .download import download, size_ceiling

FOLDER = "sha256"  # the layout's one folder: <base>/sha256/<sha256>
STATE = ".hostfit-mirror"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def mirror_url(base: str, sha256: str) -> str:
    """Where a mirror at `base` serves the file with this sha256."""
    return f"{base.rstrip('/')}/{FOLDER}/{sha256.lower()}"


@dataclass
class Wanted:
    """One file the mirror must hold, and everything that uses it."""
    sha256: str
    size: int | None
    artifact: object  # fetch.Artifact (the first that uses it: its URLs, format and size ceiling)
    spec: object  # fetch.File
    uses: set = field(default_factory=set)  # (host, model id, file name, origin URL redacted)


@dataclass
class Outcome:
    present: list[str] = field(default_factory=list)  # sha256s already there and verified
    downloaded: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)  # from this machine's artifact cache
    failed: dict[str, str] = field(default_factory=dict)  # sha256 -> why
    unpinned: list[str] = field(default_factory=list)  # "host: model file": no sha256 to name it by


def wanted_files(folders: list[Path]) -> tuple[dict[str, Wanted], list[str]]:
    """({sha256: Wanted}, unpinned) over the compiled hosts in `folders`: each role's model and its
    fallbacks (a host may fetch either), with the sha256 the catalog or the host's lock gives."""
    from .fetch import expected, plan
    from .lock import Lock

    wanted: dict[str, Wanted] = {}
    unpinned = []
    for folder in folders:
        found = plan(folder, (), with_fallbacks=True)
        lock = Lock.load(folder / "models.lock", found.host)
        for artifact in found.artifacts:
            for spec, (size, sha) in zip(artifact.files, expected(artifact, lock)):
                if not sha:
                    unpinned.append(f"{found.host}: {artifact.model_id} {spec.name}")
                    continue
                sha = sha.lower()
                item = wanted.setdefault(sha, Wanted(sha, size, artifact, spec))
                item.size = item.size or size
                item.uses.add((found.host, artifact.model_id, spec.name, redact_url(spec.url)))
    return wanted, unpinned


class Mirror:
    """The mirror folder at `root`: claimed with a marker, so hostfit writes only in a folder it made."""

    def __init__(self, root: Path):
        self.root = Path(os.path.abspath(root))
        state = self.root / STATE
        try:
            if self.root.is_dir() and any(self.root.iterdir()) and not state.is_dir():
                raise UsageError(f"{self.root} is not a hostfit mirror: it holds files and no {STATE}/ folder, "
                                 "so hostfit writes nothing there; name a new or empty folder")
            (self.root / FOLDER).mkdir(parents=True, exist_ok=True)
            state.mkdir(exist_ok=True)
        except OSError as exc:
            raise DiskError(f"cannot make {self.root} a mirror: {exc.strerror or exc}") from exc
        self.state = state
        try:
            self.seen: dict = json.loads((state / "seen.json").read_text())
            if not isinstance(self.seen, dict):
                self.seen = {}
        except (OSError, ValueError):
            self.seen = {}  # lost or unreadable: every file is hashed again

    def path(self, sha256: str) -> Path:
        if not SHA256.match(sha256):  # names come from locks and catalogs, checked; never a path
            raise UsageError(f"{sha256!r} is not a sha256")
        return self.root / FOLDER / sha256

    def verified(self, item: Wanted) -> bool:
        """True when the file is there with its sha256: unchanged since hashed (size, mtime, inode), or
        hashed now. A file with other bytes is deleted (the next download replaces it)."""
        path = self.path(item.sha256)
        if not os.path.lexists(path):
            return False
        if not regular(path):
            raise DiskError(f"{path} is not a regular file: remove it")
        now = file_stat(path)
        if self.seen.get(item.sha256) == now and (item.size is None or now[0] == item.size):
            return True
        if (item.size is None or now[0] == item.size) and sha256_file(path) == item.sha256:
            self.seen[item.sha256] = now
            return True
        path.unlink()
        self.seen.pop(item.sha256, None)
        return False

    def from_cache(self, item: Wanted, cache) -> bool:
        """Copy the file from this machine's artifact cache when it holds these bytes (hashed while copied,
        renamed into place only if they are the sha256): True if it did."""
        entry = cache.entries().get(item.artifact.model_id) if cache is not None and cache.marked else None
        known = next((f for f in entry.file_list() if f["name"] == item.spec.name and f["sha256"] == item.sha256),
                     None) if entry else None
        source = cache.root / known["path"] if known else None
        if source is None or not regular(source):
            return False
        part = self.state / f"{item.sha256}.part"
        digest, size = hashlib.sha256(), 0
        with open_artifact(source) as reader, open_artifact(part, "wb") as writer:
            while block := reader.read(1 << 20):
                digest.update(block)
                writer.write(block)
                size += len(block)
            writer.flush()
            os.fsync(writer.fileno())
        if digest.hexdigest() != item.sha256 or (item.size is not None and size != item.size):
            part.unlink()  # the cache's copy changed since it was verified: download instead
            return False
        os.replace(part, self.path(item.sha256))
        return True

    def fill(self, wanted: dict[str, Wanted], reporter, verify: bool = False, cache=None) -> Outcome:
        """Every wanted file present and verified: the ones already there are skipped, the others copied
        from this machine's artifact cache (`cache`) or downloaded from their own URLs, and verified. One
        failure does not stop the others."""
        from filelock import FileLock, Timeout

        outcome = Outcome()
        if verify:
            self.seen = {}
        run_lock = FileLock(str(self.state / "run.lock"), timeout=0)  # two runs would share partials
        try:
            run_lock.acquire()
        except Timeout as exc:
            raise DiskError(f"another `hostfit mirror` is filling {self.root} (it holds "
                            f"{self.state / 'run.lock'}): wait for it to finish") from exc
        try:
            for sha in sorted(wanted):
                item = wanted[sha]
                if self.verified(item):
                    outcome.present.append(sha)
                    continue
                if self.from_cache(item, cache):
                    self.seen[sha] = file_stat(self.path(sha))
                    outcome.copied.append(sha)
                    continue
                tick = reporter.start(item.artifact, item.spec, item.size)
                try:
                    download([item.spec.url, *item.spec.mirrors], self.state / f"{sha}.part", self.path(sha),
                             item.size, sha, tick, fmt=item.spec.format,
                             ceiling=None if item.size else size_ceiling(item.artifact.memory_mb))
                except (DownloadError, IntegrityError) as exc:
                    outcome.failed[sha] = str(exc)
                    continue
                finally:
                    reporter.stop()
                self.seen[sha] = file_stat(self.path(sha))
                outcome.downloaded.append(sha)
        finally:
            try:
                self.write_index(wanted)
            finally:
                run_lock.release()
        return outcome

    def write_index(self, wanted: dict[str, Wanted]) -> None:
        files = {}
        for sha in sorted(wanted):
            if regular(self.path(sha)) and sha in self.seen:
                item = wanted[sha]
                files[sha] = {"size": self.seen[sha][0], "path": f"{FOLDER}/{sha}",
                              "uses": [{"host": h, "model": m, "file": f, "url": u} for h, m, f, u in sorted(item.uses)]}
        # files of earlier runs that no host uses now stay listed until removed by hand: they are still served
        try:
            old = json.loads((self.root / "index.json").read_text()).get("files", {})
        except (OSError, ValueError, AttributeError):
            old = {}
        for sha, entry in old.items() if isinstance(old, dict) else ():
            if sha not in files and SHA256.match(sha) and regular(self.path(sha)):
                files[sha] = {**entry, "uses": []}
        body = {"mirror_version": 1, "layout": f"{FOLDER}/<sha256>", "files": dict(sorted(files.items()))}
        write_atomic(self.root / "index.json", (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())
        write_atomic(self.state / "seen.json", (json.dumps(self.seen, sort_keys=True) + "\n").encode())
