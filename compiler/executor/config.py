"""The executor's settings from the user configuration ($XDG_CONFIG_HOME/hostfit/config.yaml), checked."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from .. import paths, schema
from ..errors import Diagnostic, InputError
from ..load import Document, load_yaml_text, read_regular
from .cache import parse_size

MAX_DIAGNOSTICS = 20
MIN_PART_SIZE = 64 << 10  # schemas/config.v1.json says the same for an integer
SIZE_HINT = "bytes, or a number and a unit: 200G, 500 GiB, 1.5T (binary units: 1G = 1024^3 bytes)"


def _size(text: str) -> int | None:
    try:
        return parse_size(text)
    except ValueError:
        return None


def document(path: Path | None = None) -> Document | None:
    """config.yaml as read, positions kept (the one reader of it); None when there is none or it sets
    nothing: empty or only comments (a settings file, not a catalog: the loader would call it empty, E008)."""
    path = path or paths.config_file()
    if not path.is_file():
        return None
    display = str(path)
    try:
        text = read_regular(path, display).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError([Diagnostic(display, 0, 0, "E001", f"cannot read file: {exc}")]) from exc
    if all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()):
        return None
    return load_yaml_text(text, display, "config")


def read(path: Path | None = None) -> tuple[Path, dict]:
    """(the file, its data checked against schemas/config.v1.json); {} when there is none or it sets
    nothing. A bad value is an InputError with its file:line:col (exit 1)."""
    path = path or paths.config_file()
    doc = document(path)
    if doc is None or doc.data is None:
        return path, {}
    if not isinstance(doc.data, dict):
        raise InputError([Diagnostic(str(path), 1, 1, "E720", "the configuration is not a mapping",
                                     "write `key: value` pairs, e.g. `cache: {max_size: 200G}`")])
    value = doc.data["cache"].get("max_size") if isinstance(doc.data.get("cache"), dict) else None
    if isinstance(value, str) and _size(value) is None:  # said in words here, not as the schema's pattern
        raise InputError([Diagnostic(str(path), *doc.where(("cache", "max_size")), "E720",
                                     f"cache.max_size {value!r} is not a size", SIZE_HINT)])
    part = (doc.data.get("download") or {}).get("part_size") if isinstance(doc.data.get("download"), dict) else None
    if isinstance(part, str) and (_size(part) or 0) < MIN_PART_SIZE:
        raise InputError([Diagnostic(str(path), *doc.where(("download", "part_size")), "E840",
                                     f"download.part_size {part!r} is not a size of at least 64K", SIZE_HINT)])
    from ..validate import schema_diagnostics

    errors = itertools.islice(schema.iter_errors("config", doc.data, layer=False, version=1), MAX_DIAGNOSTICS)
    problems = list(dict.fromkeys(schema_diagnostics(errors, lambda where: (str(path), *doc.where(where)))))
    if problems:
        raise InputError(problems)
    return path, doc.data


@dataclass(frozen=True)
class Settings:
    """config.yaml read and checked once; a command passes it along instead of reading the file again."""

    path: Path
    data: dict

    @property
    def max_size(self) -> int | None:
        """`cache.max_size` in bytes, or None when no limit is set."""
        value = (self.data.get("cache") or {}).get("max_size")
        return value if value is None or isinstance(value, int) else parse_size(value)  # read() checked it

    @property
    def mirrors(self) -> tuple[str, ...]:
        """`mirrors`: the team mirrors' base URLs this user's fetches try first (read() checked them)."""
        return tuple(self.data.get("mirrors") or ())


    @property
    def download(self) -> tuple[int | None, int | None]:
        """(`download.connections`, `download.part_size` in bytes); None where the configuration sets none."""
        section = self.data.get("download") or {}
        size = section.get("part_size")
        return section.get("connections"), size if size is None or isinstance(size, int) else parse_size(size)


def settings(path: Path | None = None) -> Settings:
    return Settings(*read(path))


def cache_max_size(path: Path | None = None) -> int | None:
    """`cache.max_size` in bytes, or None when no limit is set."""
    return settings(path).max_size
