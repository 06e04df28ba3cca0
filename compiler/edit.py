"""Edits of catalog files in place: ruamel.yaml round-trip, so the lines an edit does not touch
keep their comments, order and quoting byte for byte; every result is re-validated before it
is written, and written atomically.
"""

from __future__ import annotations

import difflib
import io
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import migrate as migration
from . import validate
from .emit import write_atomic
from .errors import Diagnostic, InputError, RuntimeFailure
from .load import load_json_text, load_yaml_text


def roundtrip(text: str):
    """A ruamel.yaml round-trip loader set to this file's own indentation, and the loaded tree."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line the edit did not touch
    yaml.indent(**guess_indent(text))
    return yaml, yaml.load(text)


def guess_indent(text: str) -> dict:
    """The file's mapping indent and its block-sequence dash offset, read off its lines
    (ruamel's own guesser loads the whole file a second time to learn this)."""
    indents = [len(m.group(1)) for m in re.finditer(r"^( +)[^ #\-\n]", text, re.M)]
    offset = 0
    previous = None
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("- ") and previous is not None and previous.rstrip().endswith(":"):
            offset = len(line) - len(stripped) - (len(previous) - len(previous.lstrip(" ")))
            break
        previous = line
    return {"mapping": min(indents) if indents else 2, "sequence": offset + 2, "offset": offset}


def dump(yaml, tree) -> str:
    out = io.StringIO()
    yaml.dump(tree, out)
    return out.getvalue()


def load_text(text: str, display: str):
    return load_json_text(text, display) if display.endswith(".json") else load_yaml_text(text, display)


def recheck(text: str, display: str) -> list[Diagnostic]:
    """Errors the rewritten text would have: it must load, be at the current version and validate."""
    try:
        doc = load_text(text, display)
        if migration.check_version(doc) != migration.CURRENT:
            return [Diagnostic(display, 1, 1, "E014", "the rewrite is not at the current schema version")]
    except InputError as exc:
        return exc.diagnostics
    return [d for d in validate.check_document(doc) if d.severity == "error"]


@dataclass
class Rewrite:
    path: Path
    display: str
    before: str
    after: str
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        return "".join(difflib.unified_diff(self.before.splitlines(True), self.after.splitlines(True),
                                            f"a/{self.display}", f"b/{self.display}"))


def migrate_file(path: Path, display: str) -> Rewrite:
    """The file brought to the current schema version; raises InputError if it cannot be."""
    from .load import read_regular

    try:
        before = read_regular(path, display).decode("utf-8-sig")  # a FIFO or dangling link: refused by name
    except UnicodeDecodeError as exc:
        raise InputError([Diagnostic(display, 0, 0, "E001", f"cannot read file: {exc}")]) from exc
    doc = load_text(before, display)
    version = migration.check_version(doc)
    if version == migration.CURRENT:
        return Rewrite(path, display, before, before)
    warnings = migration.migrate(doc).notes  # validates the old version and collects what was kept aside
    if display.endswith(".json"):
        data = json.loads(before)
        _run_steps(data, version)
        after = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        yaml, tree = roundtrip(before)
        _run_steps(tree, version)
        after = dump(yaml, tree)
    problems = recheck(after, display)
    if problems:
        raise InputError([Diagnostic(display, 1, 1, "E014", "the migrated file would not validate; left unchanged",
                                     "; ".join(f"{p.where}: {p.message}" for p in problems[:3]))])
    return Rewrite(path, display, before, after, warnings)


def _run_steps(tree, version: int) -> None:
    for step_version in range(version, migration.CURRENT):
        migration.TREE_STEPS[step_version](tree, migration.StepLog())


def write(rewrite: Rewrite, backup: bool = False) -> None:
    if backup:
        try:  # through write_atomic: a FILE.bak link someone planted is replaced, never written through
            write_atomic(rewrite.path.with_name(rewrite.path.name + ".bak"), rewrite.path.read_bytes())
        except OSError as exc:
            raise RuntimeFailure(f"cannot write the backup of {rewrite.display}: {exc.strerror or exc}") from exc
    write_atomic(rewrite.path, rewrite.after.encode())


# ------------------------------------------------------------------------- adopt and retire

def edit_catalog(project, edits: dict[Path, "callable"]) -> list[Rewrite]:
    """Apply `edits` (file -> function changing its round-trip tree) and return the rewrites,
    after checking that the whole catalog, edited, still validates; nothing is written here."""
    rewrites = []
    for path, change in sorted(edits.items()):
        before = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(before)
            change(data)
            after = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        else:
            yaml, tree = roundtrip(before)
            change(tree)
            after = dump(yaml, tree)
        rewrites.append(Rewrite(path, project.display(path), before, after))
    check_changes(project, {rewrite.path: rewrite.after for rewrite in rewrites})
    return rewrites


def check_changes(project, changes: dict[Path, str | None]) -> None:
    """Validate the whole catalog as it would be with `changes` (file -> its new text; None: the
    file deleted), on a copy; raise InputError with what would break. Nothing is written here."""
    import tempfile

    from .pipeline import Project

    with tempfile.TemporaryDirectory(prefix="hostfit-edit-") as tmp:
        copy = Path(tmp)
        for name in ("sources", "profiles", "templates"):
            if (project.root / name).is_dir():
                shutil.copytree(project.root / name, copy / name)
        for path, text in changes.items():
            target = copy / path.relative_to(project.root)
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
        report = Project(copy).validate()
    if report.errors:
        raise InputError([Diagnostic(d.path, d.line, d.col, d.code, d.message + " (after the edit; nothing written)",
                                     d.hint) for d in report.errors])
