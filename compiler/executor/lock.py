"""out/<host>/models.lock: what was verified, pinned (url, revision, file, size, sha256, and
final_url: where the bytes came from after redirects), like a package lock file. URLs are
written redacted (no user name, password or signature). Later fetches verify against it;
`fetch --require-pinned` refuses anything it does not pin."""

from __future__ import annotations

import json
from pathlib import Path

from ..emit import write_atomic
from ..errors import Diagnostic, InputError
from .cache import check_file_name, escape_id

LOCK_VERSION = 1
FIELDS = ("url", "final_url", "revision", "file", "size", "sha256")


class Lock:
    def __init__(self, path: Path, host: str, artifacts: dict[str, dict] | None = None):
        self.path, self.host = path, host
        self.artifacts: dict[str, dict] = artifacts or {}

    @classmethod
    def load(cls, path: Path, host: str) -> "Lock":
        if not path.exists():
            return cls(path, host)
        try:
            data = json.loads(path.read_text())
            artifacts = data["artifacts"]
            if data.get("lock_version") != LOCK_VERSION or not isinstance(artifacts, dict):
                raise ValueError(f"lock_version {data.get('lock_version')!r}, expected {LOCK_VERSION}")
            for model_id, entry in artifacts.items():  # a lock is input too: it names cache paths
                escape_id(model_id)
                check_file_name(entry["file"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError([Diagnostic(str(path), 1, 1, "E210", f"unreadable lock file: {exc}",
                                         "delete it and run `hostfit lock` to pin again")]) from exc
        return cls(path, host, artifacts)

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

    def save(self) -> None:
        body = {"lock_version": LOCK_VERSION, "host": self.host,
                "artifacts": {key: self.artifacts[key] for key in sorted(self.artifacts)}}
        write_atomic(self.path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())
