"""The artifact cache: `$XDG_CACHE_HOME/hostfit/models` (or `HOSTFIT_CACHE`) and its manifest.

    <cache>/manifest.json                  id, path, size, sha256, downloaded_at, last_used, use_count
    <cache>/<model id, escaped>/<file>     verified artifacts
    <cache>/.downloading/<key>.part        partial downloads (resumed across runs)

The manifest is rewritten atomically under a file lock; a missing or corrupt one is rebuilt from
the files (hashing them) with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import DiskError
from ..validate import file_name_problem

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._:/-]*$")
STALE_PART_SECONDS = 24 * 3600


def cache_root() -> Path:
    if os.environ.get("HOSTFIT_CACHE"):
        return Path(os.environ["HOSTFIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hostfit" / "models"


class UnsafeName(ValueError):
    """A name that would put a file outside its place in the cache."""


def unsafe(what: str, name: str, why: str) -> UnsafeName:
    return UnsafeName(f"refusing {what} {name!r}: {why}")


def escape_id(model_id: str) -> str:
    """A model id as one folder name: `/` and `:` escaped, so distinct ids stay distinct."""
    if not isinstance(model_id, str) or not ID_PATTERN.match(model_id) or ".." in model_id.split("/"):
        raise unsafe("model id", str(model_id), "not a valid model id")
    return model_id.replace("%", "%25").replace("/", "%2F").replace(":", "%3A")


def check_file_name(name: str) -> str:
    problem = file_name_problem(name) if isinstance(name, str) and name and "\0" not in name else "is empty"
    if problem or name.startswith("/") or name in (".", ".."):
        raise unsafe("artifact file", str(name), f"it {problem or 'is not a plain name'}")
    return name


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Entry:
    id: str
    path: str  # relative to the cache root
    size: int
    sha256: str
    downloaded_at: str
    last_used: str
    use_count: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Cache:
    def __init__(self, root: Path | None = None):
        self.root = (root or cache_root()).resolve()
        self.warnings: list[str] = []

    # ------------------------------------------------------------------------------ paths

    def inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise unsafe("path", str(path), "it is outside the cache")
        return resolved

    def artifact_path(self, model_id: str, file: str) -> Path:
        return self.inside(self.root / escape_id(model_id) / check_file_name(file))

    def part_path(self, model_id: str, file: str) -> Path:
        return self.inside(self.root / ".downloading" / f"{escape_id(model_id)}%2F{check_file_name(file)}.part")

    def lock_for(self, path: Path):
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path) + ".lock", timeout=3600)

    # --------------------------------------------------------------------------- manifest

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def _read(self) -> dict[str, Entry] | None:
        try:
            raw = json.loads(self.manifest_path.read_text())
            return {key: Entry(**value) for key, value in raw["artifacts"].items()}
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None

    def entries(self) -> dict[str, Entry]:
        entries = self._read()
        if entries is None:
            with self.lock_for(self.manifest_path):
                entries = self._read()
                if entries is None:
                    entries = self._rebuild()
        return entries

    def _rebuild(self) -> dict[str, Entry]:
        """The manifest from the files themselves (hashing each): for a missing or corrupt one."""
        entries: dict[str, Entry] = {}
        existed = self.manifest_path.exists()
        if self.root.is_dir():
            for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
                model_id = folder.name.replace("%2F", "/").replace("%3A", ":").replace("%25", "%")
                for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".lock")):
                    stamp = datetime.fromtimestamp(file.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                    entries[model_id] = Entry(model_id, str(file.relative_to(self.root)), file.stat().st_size,
                                              sha256_file(file), stamp, stamp, 0)
        if existed or entries:
            self.warnings.append(f"{self.manifest_path} was {'unreadable' if existed else 'missing'}; "
                                 f"rebuilt it from the {len(entries)} cached file(s)")
            self._write(entries)
        return entries

    def _write(self, entries: dict[str, Entry]) -> None:
        from ..emit import write_atomic

        body = {"manifest_version": 1, "artifacts": {k: entries[k].to_dict() for k in sorted(entries)}}
        try:
            write_atomic(self.manifest_path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())
        except Exception as exc:  # write_atomic raises RuntimeFailure; the cache is a disk concern
            raise DiskError(str(exc)) from exc

    def update(self, change) -> dict[str, Entry]:
        """Apply `change(entries)` to the manifest under its lock, then write it atomically."""
        with self.lock_for(self.manifest_path):
            entries = self._read()
            if entries is None:
                entries = self._rebuild()
            change(entries)
            self._write(entries)
            return entries

    def record(self, model_id: str, path: Path, size: int, sha256: str, downloaded: bool) -> None:
        def change(entries):
            old = entries.get(model_id)
            stamp = now()
            entries[model_id] = Entry(model_id, str(path.relative_to(self.root)), size, sha256,
                                      stamp if downloaded or old is None else old.downloaded_at, stamp,
                                      (old.use_count if old else 0) + 1)
        self.update(change)

    # ------------------------------------------------------------------------ maintenance

    def parts(self) -> list[Path]:
        """Partial downloads, resumable by the next fetch."""
        folder = self.root / ".downloading"
        return sorted(folder.glob("*.part")) if folder.is_dir() else []

    def stale_parts(self, older_than: float = STALE_PART_SECONDS) -> list[Path]:
        limit = time.time() - older_than
        return [p for p in self.parts() if p.stat().st_mtime < limit]

    def remove(self, model_id: str) -> bool:
        removed = []

        def change(entries):
            entry = entries.pop(model_id, None)
            if entry is not None:
                (self.root / entry.path).unlink(missing_ok=True)
                removed.append(entry)
        self.update(change)
        return bool(removed)


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def parse_size(text: str) -> int:
    """'20G', '500MB', '1.5GiB', '1024' -> bytes (binary units: 1G = 1024^3)."""
    import re as _re

    match = _re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not match:
        raise ValueError(f"not a size: {text!r} (try 20G or 500M)")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " "))


def parse_age(text: str) -> float:
    """'30d', '12h', '90m' -> seconds."""
    import re as _re

    match = _re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([dhms])\s*", text.lower())
    if not match:
        raise ValueError(f"not a duration: {text!r} (try 30d or 12h)")
    return float(match.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[match.group(2)]


def pinned(out: Path | None) -> set[tuple[str, str]]:
    """(model id, sha256) of everything a lock under out/ pins: never evicted by prune."""
    pins: set[tuple[str, str]] = set()
    if out is None or not out.is_dir():
        return pins
    for path in sorted(out.glob("*/models.lock")):
        try:
            for model_id, entry in json.loads(path.read_text())["artifacts"].items():
                pins.add((model_id, entry.get("sha256")))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return pins


def age_seconds(stamp: str) -> float:
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - then).total_seconds()


def clean(store: Cache, older_than: float, pins: set[tuple[str, str]]) -> tuple[list[str], int]:
    """Remove artifacts unused for `older_than` seconds (never a pinned one) and stale partials."""
    old = [e.id for e in store.entries().values()
           if age_seconds(e.last_used) > older_than and (e.id, e.sha256) not in pins]
    for model_id in old:
        store.remove(model_id)
    parts = store.stale_parts()
    for part in parts:
        part.unlink(missing_ok=True)
    return old, len(parts)


def prune(store: Cache, limit: int, pins: set[tuple[str, str]]) -> tuple[list[str], int]:
    """Evict least recently used artifacts until the cache fits `limit` bytes; pins stay.
    Returns the evicted ids and the size left. Stale partials go too."""
    entries = store.entries()
    total = sum(e.size for e in entries.values())
    evicted = []
    for entry in sorted(entries.values(), key=lambda e: (e.last_used, e.id)):
        if total <= limit:
            break
        if (entry.id, entry.sha256) in pins:
            continue
        store.remove(entry.id)
        total -= entry.size
        evicted.append(entry.id)
    for part in store.stale_parts():
        part.unlink(missing_ok=True)
    return evicted, total


def verify(store: Cache) -> list[tuple[str, str | None, str]]:
    """(id, actual sha256 or None if missing, manifest sha256) for every artifact that fails."""
    bad = []
    for entry in store.entries().values():
        path = store.root / entry.path
        actual = sha256_file(path) if path.exists() else None
        if actual != entry.sha256:
            bad.append((entry.id, actual, entry.sha256))
    return bad
