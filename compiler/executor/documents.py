"""The executor's readers: out/<host>/models.json, models.lock and a bundle's bundle.json.

Every executor command reads these only through the functions here. Each document is loaded with
positions (compiler/load.py), refused when written by a newer hostfit, checked against its JSON
Schema (compiler/schemas/{output.v2,lock.v1,bundle.v1}.json), then checked for what a schema cannot
say: a role naming a model that is not there, a name that would leave the cache, a path. So the
commands after them index plain, well-shaped data and never meet a KeyError or TypeError.
A problem is an InputError (exit 1) with file:line:col; a file that cannot be read, a DiskError.
"""

from __future__ import annotations

import itertools
import stat
from pathlib import Path

from .. import schema
from ..artifacts import files_of
from ..errors import Diagnostic, DiskError, InputError, LoadError
from ..load import Document, NotRegular, load_json_text, open_regular
from ..memory import is_cloud
from .cache import UnsafeName, check_file_name, escape_id

MODELS_VERSION, LOCK_VERSION, BUNDLE_VERSION = 2, 1, 1
MAX_DOCUMENT_BYTES = 64 * 2**20  # a compiled models.json is KiBs (20 KiB for the shipped hosts)
MAX_SCHEMA_DIAGNOSTICS = 50
LOCK_HINT = "delete it and run `hostfit lock` to pin again"


def read_models(path: Path) -> Document:
    """out/<host>/models.json, checked."""
    return parse_models(read_bytes(path), str(path))


def read_lock(path: Path) -> Document | None:
    """out/<host>/models.lock, checked; None when there is none yet."""
    if not path.exists():
        return None
    return parse_lock(read_bytes(path), str(path))


def read_bytes(path: Path) -> bytes:
    """The whole file, if it is a regular one (a FIFO would block) of at most MAX_DOCUMENT_BYTES."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise InputError([Diagnostic(str(path), 0, 0, "E001", "cannot read file: not a regular file")])
        with open_regular(path) as handle:  # a FIFO swapped in since the stat cannot block
            raw = handle.read(MAX_DOCUMENT_BYTES + 1)
    except NotRegular:
        raise InputError([Diagnostic(str(path), 0, 0, "E001", "cannot read file: not a regular file")]) from None
    except OSError as exc:  # the file is there (or was): the disk or its permissions are at fault
        raise DiskError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise too_large(str(path), path.stat().st_size)
    return raw


def too_large(display: str, size: int) -> InputError:
    return InputError([Diagnostic(display, 0, 0, "E273", f"{size:,} bytes; hostfit reads at most "
                                  f"{MAX_DOCUMENT_BYTES:,} for this file", "it is not one hostfit wrote")])


def parse_models(raw: bytes, display: str) -> Document:
    """A compiled models.json (from out/, or a bundle's) as the executor may use it."""
    doc = _load(raw, display, "schema_version", MODELS_VERSION, "output", 2)
    problems = _models_problems(doc)
    if problems:
        raise InputError(problems)
    return doc


def parse_lock(raw: bytes, display: str) -> Document:
    doc = _load(raw, display, "lock_version", LOCK_VERSION, "lock", 1, LOCK_HINT)
    problems = []
    for model_id, entry in doc.data["artifacts"].items():  # a lock names cache paths too
        try:
            escape_id(model_id)
            if "files" in entry and "file" in entry:
                raise UnsafeName("refusing an entry with both file and files: it is one file or a set")
            names = [item["name"] for item in entry["files"]] if "files" in entry else [entry["file"]]
            for name in names:
                check_file_name(name)
            if len({name.casefold() for name in names}) != len(names):  # one file on macOS and Windows
                raise UnsafeName(f"refusing file set {names!r}: it names a file twice")
        except UnsafeName as exc:
            problems.append(_at(doc, ("artifacts", model_id), "E210", f"unreadable lock file: {exc}", LOCK_HINT))
    if problems:
        raise InputError(problems)
    return doc


def parse_manifest(raw: bytes, display: str) -> Document:
    """A bundle's bundle.json (its members' names are checked where the bundle is read)."""
    return _load(raw, display, "bundle_version", BUNDLE_VERSION, "bundle", 1,
                 "bundles are made by `hostfit bundle HOST -o FILE`")


# ------------------------------------------------------------------------------ the steps

def _load(raw: bytes, display: str, version_field: str, version: int, kind: str, schema_version: int,
          hint: str | None = None) -> Document:
    """Bytes to a Document that matches its schema, or an InputError naming the file."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise too_large(display, len(raw))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoadError([Diagnostic(display, 1, 1, "E002", f"file is not UTF-8 ({exc.reason} at byte {exc.start})",
                                    hint)]) from None
    doc = load_json_text(text, display, layer="out")  # NaN, infinities and huge integers: E016 there
    found = doc.data.get(version_field)
    if isinstance(found, int) and not isinstance(found, bool) and found > version:
        raise InputError([_at(doc, (version_field,), "E011",
                              f"{version_field} {found} is newer than this hostfit reads ({version})",
                              "upgrade hostfit, or make the file again with this one")])
    from ..validate import schema_diagnostics

    errors = itertools.islice(schema.iter_errors(kind, doc.data, layer=False, version=schema_version),
                              MAX_SCHEMA_DIAGNOSTICS)
    # jsonschema reports `required` once per missing field, each error naming them all: dedupe
    problems = list(dict.fromkeys(schema_diagnostics(errors, lambda path: (display, *doc.where(path)))))
    if problems:
        raise InputError(problems)
    return doc


def _models_problems(doc: Document) -> list[Diagnostic]:
    models = doc.data["models"]
    problems = []

    def reference(path: tuple, model_id: str | None, what: str) -> None:
        if model_id is not None and model_id not in models:
            problems.append(_at(doc, path, "E270", f"{what} names model {model_id!r}, which models.json does "
                                "not define", "rebuild it with `hostfit build`"))

    for name, role in doc.data["roles"].items():
        reference(("roles", name, "model"), role["model"], f"role {name!r}")
        for index, model_id in enumerate(role["fallbacks"]):
            reference(("roles", name, "fallbacks", index), model_id, f"role {name!r}")
    for alias, model_id in doc.data["aliases"].items():
        reference(("aliases", alias), model_id, f"alias {alias!r}")
    for model_id, model in models.items():
        artifact = model.get("artifact") or {}
        if "path" in artifact:  # where an artifact lies is this machine's cache, set by `hostfit apply`
            problems.append(_at(doc, ("models", model_id, "artifact", "path"), "E271",
                                f"{model_id}: a compiled models.json carries no artifact.path "
                                f"(found {str(artifact['path'])[:200]!r})",
                                "`hostfit apply` sets it to the verified file in this machine's cache"))
        if (artifact.get("url") or artifact.get("files")) and not is_cloud(model):  # what fetch will cache
            try:
                escape_id(model_id)
                names = [item["name"] for item in files_of(artifact)]
                for name in names:
                    check_file_name(name)
                # two files of a set would be one file in the cache (by case-folded name: one file on macOS and Windows)
                if len({name.casefold() for name in names}) != len(names):
                    raise UnsafeName(f"refusing file set {names!r}: it names a file twice")
            except UnsafeName as exc:
                problems.append(_at(doc, ("models", model_id, "artifact"), "E209", str(exc),
                                    "cache paths are built from model ids and plain file names only"))
    return problems


def artifact_names(artifact: dict) -> list[str]:
    """The names an artifact's files are cached under: its `file` (else the last part of its URL), or
    each name of its `files`."""
    return [item["name"] for item in files_of(artifact)]


def _at(doc: Document, path: tuple, code: str, message: str, hint: str | None = None) -> Diagnostic:
    line, col = doc.where(path)
    return Diagnostic(doc.path, line, col, code, message, hint)
