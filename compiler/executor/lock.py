"""out/<host>/models.lock: what was verified, pinned (url, revision, file, size, sha256, and
final_url: where the bytes came from after redirects), like a package lock file. URLs are
written redacted (no user name, password or signature). Later fetches verify against it;
`fetch --require-pinned` refuses anything it does not pin."""

from __future__ import annotations

import json
from pathlib import Path

from ..emit import write_atomic
from ..errors import InputError
from .documents import LOCK_VERSION, read_lock

FIELDS = ("url", "final_url", "revision", "file", "size", "sha256")


class Lock:
    def __init__(self, path: Path, host: str, artifacts: dict[str, dict] | None = None):
        self.path, self.host = path, host
        self.artifacts: dict[str, dict] = artifacts or {}

    @classmethod
    def load(cls, path: Path, host: str) -> "Lock":
        doc = read_lock(path)  # checked against lock.v1.json, names confined to the cache
        return cls(path, host, doc.data["artifacts"] if doc else None)

    def get(self, model_id: str) -> dict | None:
        return self.artifacts.get(model_id)

    def pin(self, model_id: str, entry: dict) -> bool:
        """Record a verified artifact; True when that changed the lock."""
        entry = {key: entry.get(key) for key in FIELDS}
        known = self.artifacts.get(model_id) or {}
        if entry["final_url"] is None and all(known.get(k) == entry[k] for k in ("url", "file", "sha256")):
            entry["final_url"] = known.get("final_url")  # served from the cache: where it came from still holds
        if entry["final_url"] is None:
            del entry["final_url"]  # not known (pinned from the catalog): locks without it stay as they were
        if self.artifacts.get(model_id) == entry:
            return False
        self.artifacts[model_id] = entry
        return True

    def render(self) -> bytes:
        body = {"lock_version": LOCK_VERSION, "host": self.host,
                "artifacts": {key: self.artifacts[key] for key in sorted(self.artifacts)}}
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()

    def save(self) -> None:
        from .. import publish

        # out/<host>/models.lock lives in a folder a build swaps as a unit: write it under the build lock
        with publish.locked(self.path.parent.parent):
            write_atomic(self.path, self.render())


def pinned(out: Path | None) -> set[tuple[str, str]]:
    """(model id, sha256) of everything a lock under out/ pins: never evicted by prune or clean.
    A lock that cannot be read is an error, not an empty pin set: its pins would be lost."""
    pins: set[tuple[str, str]] = set()
    problems = []
    for path in sorted(out.glob("*/models.lock")) if out is not None and out.is_dir() else ():
        try:
            doc = read_lock(path)
        except InputError as exc:
            problems.extend(exc.diagnostics)
            continue
        pins.update((model_id, entry.get("sha256")) for model_id, entry in doc.data["artifacts"].items())
    if problems:
        raise InputError(problems)
    return pins


def record_facts(root: Path, artifacts, cache, lock: Lock) -> list[str]:
    """The header facts of each pinned GGUF artifact whose verified file is in the cache, written to
    sources/facts/ (facts.write: the same writer and bytes as `inspect --write`), so a compile needs
    neither the file nor the network. One line per artifact: what was written, or why nothing was.
    A header that does not parse is reported, not fatal: the pin itself was verified by its sha256."""
    from .. import facts
    from ..errors import InputError
    from ..inspect_gguf import inspect

    notes = []
    entries = cache.entries()
    for artifact in artifacts:
        if artifact.format != "gguf":
            continue
        pin, entry = lock.get(artifact.model_id) or {}, entries.get(artifact.model_id)
        path = cache.artifact_path(artifact.model_id, artifact.file)
        verified = (entry is not None and entry.sha256 == pin.get("sha256") and path.is_file()
                    and path.stat().st_size == entry.size)
        if not verified:  # pinned from the catalog's own size and sha256: the file was never fetched
            notes.append(f"{artifact.model_id}: facts not recorded: its verified file is not in the cache "
                         "(`hostfit fetch`, then `hostfit lock` again)")
            continue
        try:
            found = inspect(str(path))
        except InputError as exc:
            notes.append(f"{artifact.model_id}: facts not recorded: {exc.diagnostics[0].message}")
            continue
        written, changed = facts.write(root, artifact.model_id, found, artifact.file)
        notes.append(f"{artifact.model_id}: facts {'written to' if changed else 'unchanged in'} "
                     f"{Path(*facts.FOLDER) / written.name}")
    return notes
