"""Artifacts as file sets: the one-file shorthand (`file`, `size_bytes`, `sha256`) and `files` read as one list."""

from __future__ import annotations

import hashlib

SINGLE_FILE_KEYS = ("file", "size_bytes", "sha256")  # the shorthand; with `files` they would say it twice


def files_of(artifact: dict | None) -> list[dict]:
    """Each file of an artifact as {name, url?, size_bytes?, sha256?}, in order (a runtime opens the
    first). The shorthand is one file, named by `file`, else by the last part of its URL; an artifact
    that names no file (a repo alone, an Ollama tag) has none."""
    artifact = artifact or {}
    if artifact.get("files"):
        return [dict(item) for item in artifact["files"]]
    name = artifact.get("file") or (artifact["url"].rsplit("/", 1)[-1] if artifact.get("url") else None)
    if not name:
        return []
    return [{key: value for key, value in (("name", name), ("url", artifact.get("url")),
                                           ("size_bytes", artifact.get("size_bytes")),
                                           ("sha256", artifact.get("sha256"))) if value is not None}]


def set_digest(files: list[tuple[str, int, str]]) -> str:
    """One sha256 for a set of (name, size, sha256): the cache manifest and the lock compare a set by it,
    so a set is cached, pinned and evicted as a whole. A single file's digest is its own sha256. Taken
    in name order: the set is the same whatever order lists it (a rebuilt manifest lists by name)."""
    if len(files) == 1:
        return files[0][2]
    digest = hashlib.sha256()
    for name, size, sha in sorted(files):
        digest.update(f"{name}\0{size}\0{sha}\n".encode())
    return digest.hexdigest()
