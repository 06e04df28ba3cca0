"""The reader applications use: find the compiled catalog and answer "which model for role R".

Standard library only (with compiler/paths.py, where the XDG locations are defined), so any Python
application can vendor the two files or import them without hostfit's dependencies. Priority: $XDG_DATA_HOME/hostfit/models.json (what `hostfit apply` installs),
then a path the application ships, then a minimal built-in catalog (`test`, `silent`) so an
application still starts on a machine where nothing was applied.

    from compiler.runtime import Runtime
    rt = Runtime.load(app_default="config/models.json")
    rt.model_for("coder")      # -> {"id": ..., "provider": ..., "artifact": {...}, ...} or None
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .paths import installed_catalog

SCHEMA_VERSION = 2
REQUIRED = ("schema_version", "host", "roles", "models", "aliases")
BUILTIN = {
    "schema_version": SCHEMA_VERSION,
    "host": {"name": "builtin", "ram_mb": 0, "usable_mb": 0, "gpus": [], "detected": False},
    "profiles": [],
    "roles": {},
    "models": {
        "test": {"provider": "builtin", "workloads": ["chat"], "description": "echoes its prompt, for tests",
                 "memory_mb": 0, "memory_method": "cloud"},
        "silent": {"provider": "builtin", "workloads": ["chat"], "description": "answers nothing",
                   "memory_mb": 0, "memory_method": "cloud"},
    },
    "aliases": {},
}


def installed_path() -> Path:
    return installed_catalog()


class RuntimeCatalogError(ValueError):
    pass


def check(document) -> dict:
    if not isinstance(document, dict) or any(key not in document for key in REQUIRED):
        raise RuntimeCatalogError("not a compiled hostfit catalog")
    if document["schema_version"] != SCHEMA_VERSION:
        raise RuntimeCatalogError(f"schema_version {document['schema_version']!r}; this reader knows {SCHEMA_VERSION}")
    return document


class Runtime:
    def __init__(self, document: dict, source: str):
        self.document, self.source = check(document), source
        self._names = {model_id.lower(): model_id for model_id in document["models"]}
        self._names.update({alias.lower(): model_id for alias, model_id in document["aliases"].items()})

    @classmethod
    def load(cls, app_default: str | os.PathLike | None = None) -> "Runtime":
        """The first usable catalog in priority order; a broken file is passed over, not fatal."""
        for path in (installed_path(), Path(app_default) if app_default else None):
            if path is None or not path.is_file():
                continue
            try:
                return cls(json.loads(path.read_text(encoding="utf-8")), str(path))
            except (OSError, ValueError):
                continue
        return cls(BUILTIN, "builtin")

    def resolve(self, name: str) -> str | None:
        """A model id from an id or alias, case-insensitively."""
        return self._names.get(str(name).lower())

    def model(self, name: str) -> dict | None:
        model_id = self.resolve(name)
        return {"id": model_id, **self.document["models"][model_id]} if model_id else None

    def model_for(self, role: str) -> dict | None:
        """The role's model, else the first of its fallbacks, else (built-in catalog) `test`."""
        spec = self.document["roles"].get(role)
        if spec is None:
            return self.model("test") if self.source == "builtin" else None
        for model_id in [spec.get("model"), *spec.get("fallbacks", [])]:
            if model_id:
                return self.model(model_id)
        return None
