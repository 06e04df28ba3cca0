"""out/<host>/models.lock: what was verified, pinned (url, revision, file, size, sha256, and
final_url: where the bytes came from after redirects; for a file set, `files` with each file's name,
url, final_url, size and sha256), like a package lock file. URLs are
written redacted (no user name, password or signature). Later fetches verify against it;
`fetch --require-pinned` refuses anything it does not pin. `hostfit lock` takes a file's size and
sha256 from the server's metadata where it publishes them (published()), so nothing is downloaded."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from ..artifacts import set_digest
from ..emit import write_atomic
from ..errors import InputError
from .documents import LOCK_VERSION, read_lock

FIELDS = ("url", "final_url", "revision", "file", "size", "sha256")
SET_FIELDS = ("name", "url", "final_url", "size", "sha256")  # each file of a set; the set's revision beside them


def _pinned(entry: dict, known: dict, fields: tuple[str, ...], name: str) -> dict:
    """One file's pin: `fields` only; a final_url not known now (served from the cache, or pinned from
    the catalog) is kept from the old pin of the same file, else left out, so such locks stay as they were."""
    entry = {key: entry.get(key) for key in fields}
    if entry["final_url"] is None and all(known.get(k) == entry[k] for k in ("url", name, "sha256")):
        entry["final_url"] = known.get("final_url")
    if entry["final_url"] is None:
        del entry["final_url"]
    return entry


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
        """Record a verified artifact (one file, or a set's `files`); True when that changed the lock."""
        known = self.artifacts.get(model_id) or {}
        if "files" in entry:
            before = {item.get("name"): item for item in known.get("files") or ()}
            entry = {"revision": entry.get("revision"),
                     "files": [_pinned(item, before.get(item.get("name")) or {}, SET_FIELDS, "name")
                               for item in entry["files"]]}
        else:
            entry = _pinned(entry, known, FIELDS, "file")
        if known == entry:
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


ETAG = re.compile(r'^(?:W/)?"?([0-9a-fA-F]{64})"?$')
METADATA_DEADLINE = 30.0  # seconds for one file's HEAD, redirects included


@dataclass(frozen=True)
class Published:
    """What a server publishes about a file without sending it."""
    size: int
    sha256: str
    commit: str | None = None  # Hugging Face's X-Repo-Commit: the commit a branch name resolved to


def published(url: str, client=None) -> Published | None:
    """The size and sha256 a server publishes for `url` in answer to HEAD, or None (then the file must be
    downloaded to learn them). Hugging Face answers HEAD on a resolve URL of an LFS file with a redirect
    to its CDN that carries `X-Linked-Size` and `X-Linked-Etag` (the file's sha256, quoted) and
    `X-Repo-Commit`; the redirect is not followed, as the CDN's answer has none of them. A relative
    redirect (a renamed repository) is followed, as huggingface_hub does. A file kept in git, not LFS,
    has only an ETag, which is a git blob's sha1: never taken for a sha256. Any failure is None."""
    import httpx

    from ..net import IDENTITY, MAX_REDIRECTS, REDIRECTS, Deadline
    from ..validate import url_problem

    own = client is None
    client = client or httpx.Client(follow_redirects=False, verify=True)
    deadline = Deadline(METADATA_DEADLINE)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            if url_problem(url):
                return None
            response = client.head(url, headers=IDENTITY, timeout=deadline.timeout())
            size, etag = response.headers.get("x-linked-size", ""), ETAG.match(response.headers.get("x-linked-etag", ""))
            if size.isdigit() and etag and (response.status_code < 300 or response.status_code in REDIRECTS):
                return Published(int(size), etag.group(1).lower(), response.headers.get("x-repo-commit"))
            location = response.headers.get("location", "")
            if response.status_code not in REDIRECTS or not location or urlsplit(location).netloc \
                    or urlsplit(location).scheme:
                return None  # no metadata here, and no relative redirect to look further
            url = urljoin(url, location)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError):
        return None
    finally:
        if own:
            client.close()
    return None


def pin_digest(entry: dict) -> str | None:
    """What a lock entry pins, as the cache manifest records it: a file's sha256, or a set's digest
    (None while any file of the set is unpinned)."""
    if "files" not in entry:
        return entry.get("sha256")
    files = [(item.get("name"), item.get("size"), item.get("sha256")) for item in entry["files"]]
    return set_digest(files) if all(size is not None and sha for _, size, sha in files) else None


def pinned(out: Path | None) -> set[tuple[str, str]]:
    """(model id, sha256 or a set's digest) of everything a lock under out/ pins: never evicted by prune or clean.
    A lock that cannot be read is an error, not an empty pin set: its pins would be lost."""
    pins: set[tuple[str, str]] = set()
    problems = []
    for path in sorted(out.glob("*/models.lock")) if out is not None and out.is_dir() else ():
        try:
            doc = read_lock(path)
        except InputError as exc:
            problems.extend(exc.diagnostics)
            continue
        pins.update((model_id, pin_digest(entry)) for model_id, entry in doc.data["artifacts"].items())
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
        if artifact.files[0].format != "gguf":
            continue
        if artifact.is_set:  # one shard holds only its own tensors: its header cannot size the model
            notes.append(f"{artifact.model_id}: facts not recorded: a set of {len(artifact.files)} files "
                         "(`hostfit inspect` the first shard for its shape)")
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


def installed_pins(cache) -> set[tuple[str, str]]:
    """(model id, manifest sha256) of each cached artifact the installed catalog ($XDG_DATA_HOME/hostfit/
    models.json, written by `hostfit apply`) uses with the same file hashes: applications read it, so
    prune never evicts it. An unreadable installed catalog pins nothing (the runtime reader refuses it too)."""
    from .. import paths

    try:
        data = json.loads(paths.installed_catalog().read_text())
    except (OSError, ValueError):
        return set()
    models = data.get("models") if isinstance(data, dict) else None
    entries = cache.entries()
    pins = set()
    for model_id, model in models.items() if isinstance(models, dict) else ():
        artifact = model.get("artifact") if isinstance(model, dict) else None
        entry = entries.get(model_id)
        if not isinstance(artifact, dict) or entry is None:
            continue
        files = artifact.get("files")
        shas = [item.get("sha256") for item in files if isinstance(item, dict)] if isinstance(files, list) \
            else [artifact.get("sha256")]
        if shas == [item["sha256"] for item in entry.file_list()]:
            pins.add((model_id, entry.sha256))
    return pins
