"""Apply and bundle: install a compiled host where applications read it, or carry it to a
machine with no network.

    hostfit apply [--host H]    fetch + lock + install models.json at $XDG_DATA_HOME/hostfit/
    hostfit bundle HOST -o F    one tar: bundle.json, models.json, models.lock, artifacts/<id>/<file>
    hostfit apply --from F      every member checked by name and sha256 before it enters the cache

A bundle is untrusted input: only the members bundle.json lists are read, each name is checked
the way the cache checks names, and every byte is hashed against the bundled lock.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from ..emit import write_atomic
from ..errors import Diagnostic, InputError, IntegrityError
from ..runtime import check, installed_path
from .cache import Cache, UnsafeName, check_file_name, escape_id
from .fetch import Fetched

BUNDLE_VERSION = 1


def installed_document(folder: Path, fetched: list[Fetched]) -> dict:
    """models.json with each fetched artifact's place in this machine's cache."""
    document = json.loads((folder / "models.json").read_text())
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


def bundle(folder: Path, fetched: list[Fetched], output: Path) -> int:
    """Write the tar atomically; returns the number of artifacts in it."""
    artifacts = {}
    for item in fetched:
        member = f"artifacts/{escape_id(item.artifact.model_id)}/{check_file_name(item.artifact.file)}"
        artifacts[item.artifact.model_id] = {"member": member, "file": item.artifact.file, "size": item.size,
                                             "sha256": item.sha256}
    manifest = {"bundle_version": BUNDLE_VERSION, "host": json.loads((folder / "models.json").read_text())["host"]["name"],
                "artifacts": artifacts}
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        with tarfile.open(tmp, "w") as tar:
            _add_bytes(tar, "bundle.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
            tar.add(folder / "models.json", arcname="models.json")
            if (folder / "models.lock").exists():
                tar.add(folder / "models.lock", arcname="models.lock")
            for item in fetched:
                tar.add(item.path, arcname=artifacts[item.artifact.model_id]["member"])
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    return len(artifacts)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def bad_bundle(path: Path, message: str) -> InputError:
    return InputError([Diagnostic(str(path), 0, 0, "E213", f"refusing bundle: {message}",
                                  "bundles are made by `hostfit bundle HOST -o FILE`")])


def apply_from(path: Path, cache: Cache) -> tuple[dict, int]:
    """Verify and unpack a bundle into the cache; returns the document to install and the count."""
    try:
        tar = tarfile.open(path, "r")
    except (OSError, tarfile.TarError) as exc:
        raise bad_bundle(path, f"not a readable tar file ({exc})") from exc
    with tar:
        def regular(name: str) -> tarfile.TarInfo:
            """The member `name`, which must be a regular file (no links, devices, folders)."""
            try:
                member = tar.getmember(name)
            except KeyError:
                raise bad_bundle(path, f"it has no {name}") from None
            if not member.isfile():
                raise bad_bundle(path, f"{name} is not a regular file")
            return member

        def read(name: str) -> bytes:
            return tar.extractfile(regular(name)).read()

        try:
            manifest = json.loads(read("bundle.json"))
            document = check(json.loads(read("models.json")))
            lock = json.loads(read("models.lock"))["artifacts"] if "models.lock" in tar.getnames() else {}
            artifacts = manifest["artifacts"]
        except (ValueError, KeyError, TypeError) as exc:
            raise bad_bundle(path, f"its metadata is unreadable ({exc})") from exc
        for model_id, entry in sorted(artifacts.items()):
            try:
                expected = f"artifacts/{escape_id(model_id)}/{check_file_name(entry['file'])}"
            except (UnsafeName, KeyError, TypeError) as exc:
                raise bad_bundle(path, str(exc)) from None
            if entry.get("member") != expected:
                raise bad_bundle(path, f"member {entry.get('member')!r} of {model_id!r} is not {expected!r}")
            pinned = (lock.get(model_id) or {}).get("sha256") or entry.get("sha256")
            if not pinned:
                raise bad_bundle(path, f"{model_id!r} carries no sha256 to verify against")
            member = regular(expected)
            final = cache.artifact_path(model_id, entry["file"])
            part = cache.part_path(model_id, entry["file"])
            part.parent.mkdir(parents=True, exist_ok=True)
            final.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            size = 0
            source = tar.extractfile(member)
            with open(part, "wb") as handle:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
            if digest.hexdigest() != pinned:
                cache.delete(part)
                raise IntegrityError(f"{path}: {model_id} has sha256 {digest.hexdigest()}, the bundle pins {pinned}")
            part.replace(final)
            cache.record(model_id, final, size, pinned, downloaded=True)
            artifact = document["models"].get(model_id, {}).setdefault("artifact", {})
            artifact["path"], artifact["sha256"] = str(final), pinned
    return document, len(artifacts)
