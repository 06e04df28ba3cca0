"""Migrate stage: check a document's schema version and bring it up to the current one.

Schema versions are integers. STEPS holds one pure function per upgrade (N -> N+1); loading
runs every step from the document's version to CURRENT, in memory. A document newer than
CURRENT, or without an integer version, is refused: guessing would compile the wrong thing.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import Diagnostic, VersionError
from .load import Document

CURRENT = 2
KINDS = ("catalog", "profile", "hosts")

# version N -> the function that turns a version-N document into a version-(N+1) one.
# The v1 -> v2 step (the earlier role-mapping layout) lands with the v1 schema.
STEPS: dict[int, Callable[[Document], Document]] = {}
OLDEST = min(STEPS, default=CURRENT)


def supported() -> str:
    return str(CURRENT) if OLDEST == CURRENT else f"{OLDEST} to {CURRENT}"


def fail(doc: Document, path: tuple, code: str, message: str, hint: str | None = None):
    line, col = doc.where(path)
    raise VersionError([Diagnostic(doc.path, line, col, code, message, hint)])


def check_version(doc: Document) -> int:
    data = doc.data
    if "schema_version" not in data:
        fail(doc, (), "E010", f"missing schema_version (supported: {supported()})",
             f"add `schema_version: {CURRENT}` at the top of the file")
    version = data["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        fail(doc, ("schema_version",), "E010",
             f"schema_version must be an integer, found {version!r} (supported: {supported()})",
             f"write `schema_version: {CURRENT}` without quotes")
    if version > CURRENT:
        fail(doc, ("schema_version",), "E011",
             f"schema_version {version} is newer than this compiler supports (supported: {supported()})",
             "upgrade hostfit to compile this catalog")
    if version < OLDEST:
        fail(doc, ("schema_version",), "E011",
             f"schema_version {version} is older than this compiler can migrate (supported: {supported()})")
    kind = data.get("kind")
    if kind not in KINDS:
        found = "missing" if kind is None else repr(kind)
        fail(doc, ("kind",) if "kind" in data else (), "E012",
             f"kind must be one of {', '.join(KINDS)}; found {found}",
             "catalog layers say `kind: catalog`, profiles `kind: profile`, sources/hosts.yaml `kind: hosts`")
    return version


def migrate(doc: Document) -> Document:
    version = check_version(doc)
    while version < CURRENT:
        doc = STEPS[version](doc)
        version += 1
    return doc
