"""Apply and bundle: install a compiled host where applications read it, or carry it to a
machine with no network.

    hostfit apply [--host H]    fetch + lock + install models.json at $XDG_DATA_HOME/hostfit/
    hostfit bundle HOST -o F    one tar: bundle.json, models.json, models.lock, artifacts/<id>/<file>
                                (every file of a file set, each its own member)
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

from ..artifacts import files_of
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
        _installed(document["models"][item.artifact.model_id].setdefault("artifact", {}),
                   item.path, [(f.size, f.sha256) for f in item.files])
    return document


def _installed(artifact: dict, path: Path, verified: list[tuple[int, str]]) -> None:
    """`path`: the file a runtime opens (a set's first; the others lie beside it); each file's sha256."""
    artifact["path"] = str(path)
    if artifact.get("files"):
        for item, (_, sha) in zip(artifact["files"], verified):
            item["sha256"] = sha
    else:
        artifact["sha256"] = verified[0][1]


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
        members = [{"member": f"artifacts/{escape_id(item.artifact.model_id)}/{check_file_name(got.name)}",
                    "file": got.name, "size": got.size, "sha256": got.sha256} for got in item.files]
        artifacts[item.artifact.model_id] = {"files": members} if item.artifact.is_set else members[0]
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
            for got, entry in zip(item.files, bundle_files(artifacts[item.artifact.model_id])):
                with open_artifact(got.path) as source:
                    info = tarfile.TarInfo(entry["member"])
                    info.size = got.size
                    tar.addfile(info, source)
    return len(artifacts)


def bundle_files(entry: dict) -> list[dict]:
    """A bundle.json entry's members: the one-file form, or a set's `files`."""
    return entry["files"] if "files" in entry else [entry]


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
            for model_id, files in planned:
                cache.forget(model_id)  # its files are about to be replaced: no entry vouches for them meanwhile
                finals = [_unpack(path, tar, member, cache, model_id, entry["file"], pinned)
                          for entry, member, pinned in files]
                verified = [(member.size, pinned) for _, member, pinned in files]
                cache.record(model_id, [(final, size, sha) for final, (size, sha) in zip(finals, verified)],
                             downloaded=True)
                _installed(document["models"][model_id]["artifact"], finals[0], verified)
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
    """(model id, [(manifest entry, tar member, sha256 to verify)] for each file) once all of it is consistent:
    the members are the files models.json names for the model, in its order, each as the lock pins it."""
    from .fetch import pinned_files

    files = bundle_files(entry)
    artifact = (document["models"].get(model_id) or {}).get("artifact")
    names = documents.artifact_names(artifact) if artifact else []
    if not names or not all(item.get("url") for item in files_of(artifact)) \
            or names != [item["file"] for item in files]:
        raise bad_bundle(path, f"its models.json has no artifact {[item['file'] for item in files]!r} for "
                         f"{model_id!r}")
    pins = {pin.get("name"): pin for pin in pinned_files(lock.get(model_id))}
    planned = []
    for item in files:
        try:
            expected = f"artifacts/{escape_id(model_id)}/{check_file_name(item['file'])}"
        except UnsafeName as exc:
            raise bad_bundle(path, str(exc)) from None
        if item["member"] != expected:
            raise bad_bundle(path, f"member {item['member']!r} of {model_id!r} is not {expected!r}")
        pin = pins.get(item["file"]) or {}
        if pin.get("size") is not None and pin["size"] != item["size"]:
            raise bad_bundle(path, f"{model_id} {item['file']}: bundle.json says {item['size']:,} bytes, "
                             f"models.lock {pin['size']:,}")
        if expected not in members:
            raise bad_bundle(path, f"it has no {expected}")
        member = members[expected]
        if member.size != item["size"]:
            raise bad_bundle(path, f"{expected} holds {member.size:,} bytes, bundle.json says {item['size']:,}")
        planned.append((item, member, pin.get("sha256") or item["sha256"]))
    return model_id, planned


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
    return final
