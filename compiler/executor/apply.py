"""Apply and bundle: install a compiled host where applications read it, or carry it to a
machine with no network.

    hostfit apply [--host H]    fetch + lock + install models.json at $XDG_DATA_HOME/hostfit/
    hostfit bundle HOST -o F    one tar: bundle.json, models.json, models.lock, artifacts/<id>/<file>
    hostfit apply --from F      every member checked by name and sha256 before it enters the cache

A bundle is untrusted input: only the members bundle.json lists are read, each name is checked
the way the cache checks names, and every byte is hashed against the bundled lock.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

from ..emit import atomic_output, render, write_atomic
from ..errors import Diagnostic, DiskError, InputError, IntegrityError
from ..runtime import check, installed_path
from . import documents
from .cache import Cache, UnsafeName, check_file_name, escape_id, open_artifact
from .fetch import Fetched, Plan
from .lock import Lock

BLOCK = 1 << 20
MAX_EXTENDED_HEADER = 1 << 20  # a pax record or GNU long name; hostfit writes none over 1 KiB


class _BoundedHeaders(tarfile.TarInfo):
    """tarfile reads an extended header (pax records, a GNU long name) whole while it lists the
    members: refuse a large one before it is read."""

    def _proc_member(self, tar):
        extended = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                    tarfile.GNUTYPE_LONGLINK)
        if self.type in extended and self.size > MAX_EXTENDED_HEADER:
            raise tarfile.HeaderError(f"an extended header of {self.size:,} bytes")
        return super()._proc_member(tar)


def installed_document(document: dict, fetched: list[Fetched]) -> dict:
    """The (checked) compiled document with each fetched artifact's place in this machine's cache."""
    document = copy.deepcopy(document)
    for item in fetched:
        artifact = document["models"][item.artifact.model_id].setdefault("artifact", {})
        artifact["path"] = str(item.path)
        artifact["sha256"] = item.sha256
    return document


def install(document: dict) -> Path:
    check(document)
    target = installed_path()
    write_atomic(target, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    return target


def bundle(plan: Plan, lock: Lock, fetched: list[Fetched], output: Path) -> int:
    """Write the tar atomically; returns the number of artifacts in it. The documents packed are
    the ones read and checked (not the files re-read), so the bundle carries what was verified."""
    artifacts = {}
    for item in fetched:
        member = f"artifacts/{escape_id(item.artifact.model_id)}/{check_file_name(item.artifact.file)}"
        artifacts[item.artifact.model_id] = {"member": member, "file": item.artifact.file, "size": item.size,
                                             "sha256": item.sha256}
    manifest = {"bundle_version": documents.BUNDLE_VERSION, "host": plan.host, "artifacts": artifacts}
    # the output goes through emit's atomic writer: a fresh mkstemp file (never a planted link) renamed
    # over the output, which must be missing or a regular file (E025)
    # (no folder is created for it: a typo in -o is an error, not a new folder)
    with atomic_output(output, make_parents=False) as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        _add_bytes(tar, "bundle.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        _add_bytes(tar, "models.json", render(plan.document))
        if lock.path.exists():
            _add_bytes(tar, "models.lock", lock.render())
        for item in fetched:  # opened only as a regular file (a FIFO would block), its verified size copied
            with open_artifact(item.path) as source:
                info = tarfile.TarInfo(artifacts[item.artifact.model_id]["member"])
                info.size = item.size
                tar.addfile(info, source)
    return len(artifacts)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------- apply --from

def bad_bundle(path: Path, message: str) -> InputError:
    return InputError([Diagnostic(str(path), 0, 0, "E213", f"refusing bundle: {message}",
                                  "bundles are made by `hostfit bundle HOST -o FILE`")])


def apply_from(path: Path, open_cache: Callable[[], Cache] = Cache) -> tuple[dict, int]:
    """Verify and unpack a bundle into the cache; returns the document to install and the count.

    Everything is checked before the first byte enters the cache: the three documents through
    their readers, every member's name, type and size (as its tar header declares it, against
    bundle.json and the lock). Then each artifact is copied in 1 MiB blocks, never more bytes than
    declared, hashed on the way. Nothing is ever read whole but the (bounded) documents. The cache
    is opened (and, when new, created) only once the bundle has passed every check."""
    if not path.is_file():  # a FIFO or a device would block or never end
        raise bad_bundle(path, "it is not a regular file")
    try:
        # a bundle is a plain tar ("r:"): no decompression to bound
        with tarfile.open(path, "r:", tarinfo=_BoundedHeaders) as tar:
            members = _members(path, tar)
            manifest = documents.parse_manifest(_metadata(path, tar, members, "bundle.json"),
                                                f"{path}[bundle.json]").data
            document = documents.parse_models(_metadata(path, tar, members, "models.json"),
                                              f"{path}[models.json]").data
            lock = (documents.parse_lock(_metadata(path, tar, members, "models.lock"), f"{path}[models.lock]")
                    .data["artifacts"] if "models.lock" in members else {})
            planned = [_planned(path, members, document, lock, model_id, entry)
                       for model_id, entry in sorted(manifest["artifacts"].items())]
            cache = open_cache()
            for model_id, entry, member, pinned in planned:
                final = _unpack(path, tar, member, cache, model_id, entry["file"], pinned)
                document["models"][model_id]["artifact"].update(path=str(final), sha256=pinned)
    except (tarfile.TarError, EOFError, ValueError) as exc:  # tarfile's word for a damaged archive
        raise bad_bundle(path, f"it is truncated or damaged, not a readable tar file ({exc})") from exc
    except OSError as exc:
        raise DiskError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return document, len(planned)


def _members(path: Path, tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Every member by name: regular files only, each once, none sparse. (tarfile refuses a member
    whose declared size runs past the end of the archive while it lists them.)"""
    members: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        if member.name in members:
            raise bad_bundle(path, f"it holds {member.name} twice")
        if not member.isfile():
            raise bad_bundle(path, f"{member.name} is not a regular file")
        if member.issparse():  # a few KiB in the archive can declare terabytes of holes
            raise bad_bundle(path, f"{member.name} is a sparse member")
        members[member.name] = member
    return members


def _metadata(path: Path, tar: tarfile.TarFile, members: dict, name: str) -> bytes:
    if name not in members:
        raise bad_bundle(path, f"it has no {name}")
    if members[name].size > documents.MAX_DOCUMENT_BYTES:
        raise documents.too_large(f"{path}[{name}]", members[name].size)
    return tar.extractfile(members[name]).read(members[name].size)


def _planned(path: Path, members: dict, document: dict, lock: dict, model_id: str, entry: dict):
    """(model id, manifest entry, tar member, sha256 to verify) once all of it is consistent."""
    try:
        expected = f"artifacts/{escape_id(model_id)}/{check_file_name(entry['file'])}"
    except UnsafeName as exc:
        raise bad_bundle(path, str(exc)) from None
    if entry["member"] != expected:
        raise bad_bundle(path, f"member {entry['member']!r} of {model_id!r} is not {expected!r}")
    artifact = (document["models"].get(model_id) or {}).get("artifact")
    if artifact is None or not artifact.get("url") or documents.artifact_file(artifact) != entry["file"]:
        raise bad_bundle(path, f"its models.json has no artifact {entry['file']!r} for {model_id!r}")
    pin = lock.get(model_id) or {}
    if pin.get("size") is not None and pin["size"] != entry["size"]:
        raise bad_bundle(path, f"{model_id}: bundle.json says {entry['size']:,} bytes, models.lock {pin['size']:,}")
    if expected not in members:
        raise bad_bundle(path, f"it has no {expected}")
    member = members[expected]
    if member.size != entry["size"]:
        raise bad_bundle(path, f"{expected} holds {member.size:,} bytes, bundle.json says {entry['size']:,}")
    return model_id, entry, member, pin.get("sha256") or entry["sha256"]


def _unpack(path: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, cache: Cache, model_id: str, file: str,
            pinned: str) -> Path:
    """Copy one member into the cache in blocks (never more than its declared size), verified."""
    final = cache.artifact_path(model_id, file)
    part = cache.part_path(model_id, file)
    source = tar.extractfile(member)
    digest = hashlib.sha256()
    left = member.size
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        with open_artifact(part, "wb") as handle:  # a FIFO planted as the partial would block
            while left:
                chunk = source.read(min(BLOCK, left))
                if not chunk:  # tarfile raises on a short member; this keeps the loop bounded regardless
                    raise bad_bundle(path, f"it is truncated inside {member.name}")
                digest.update(chunk)
                handle.write(chunk)
                left -= len(chunk)
        if digest.hexdigest() != pinned:
            raise IntegrityError(f"{path}: {model_id} has sha256 {digest.hexdigest()}, the bundle pins {pinned}")
        part.replace(final)
    except OSError as exc:
        raise DiskError(f"cannot write {part}: {exc.strerror or exc}") from exc
    finally:
        cache.delete(part)
    cache.record(model_id, final, member.size, pinned, downloaded=True)
    return final
