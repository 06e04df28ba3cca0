"""The JSON Schemas shipped in compiler/schemas/, and fast validators compiled from them.

Each document kind has a strict schema (what a merged catalog must be). A single layer may
patch a lower one, so it is checked against a derived *layer* schema: every field may be
null (RFC 7386: delete) and nothing below the top is required.

Validation runs a fastjsonschema validator first (generated Python, about 9x faster than
jsonschema on a 4,800-model catalog); only when it rejects a document does jsonschema's
Draft 2020-12 validator run, to report every error with its exact path. The schemas keep to
keywords both implement alike (tests/test_schema.py checks this).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import marshal
import os
import sys
from importlib import resources
from pathlib import Path

SCHEMA_DIR = resources.files("compiler") / "schemas"


@functools.cache
def strict_schema(kind: str, version: int = 2) -> dict:
    return json.loads((SCHEMA_DIR / f"{kind}.v{version}.json").read_text())


@functools.cache
def layer_schema(kind: str, version: int = 2) -> dict:
    schema = copy.deepcopy(strict_schema(kind, version))
    schema["$id"] = schema["$id"] + ":layer"
    top_required = schema.pop("required", None)
    _nullable(schema)
    if top_required:
        schema["required"] = top_required
    return schema


NULL = {"type": "null"}  # second in each anyOf: tried only when the real schema fails
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "propertyNames", "not", "contains")


def _nullable(node: dict) -> None:
    """Let every property be null and drop `required` below the top, in place."""
    if isinstance(node.get("required"), list):
        del node["required"]
    for keyword in _SCHEMA_MAPS:
        for sub in node.get(keyword, {}).values():
            _nullable(sub)
    for keyword in _SCHEMA_LISTS:
        for sub in node.get(keyword, ()):
            _nullable(sub)
    for keyword in _SCHEMA_VALUES:
        if isinstance(node.get(keyword), dict):
            _nullable(node[keyword])
    for keyword in ("properties", "patternProperties"):
        if keyword in node:
            node[keyword] = {name: {"anyOf": [sub, NULL]} for name, sub in node[keyword].items()}
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = {"anyOf": [node["additionalProperties"], NULL]}
    if node.get("additionalProperties") is False:  # `$` keys are checked by validate, not here
        node.setdefault("patternProperties", {})["^\\$"] = {}


@functools.cache
def reference_validator(kind: str, layer: bool, version: int = 2):
    import jsonschema

    schema = layer_schema(kind, version) if layer else strict_schema(kind, version)
    return jsonschema.Draft202012Validator(schema)


@functools.cache
def fast_validator(kind: str, layer: bool, version: int = 2):
    """A fastjsonschema validator; its generated code is cached as bytecode between runs."""
    import fastjsonschema

    schema = layer_schema(kind, version) if layer else strict_schema(kind, version)
    text = json.dumps(schema, sort_keys=True)
    key = hashlib.sha256(f"{text}|{fastjsonschema.VERSION}|{sys.version}".encode()).hexdigest()[:24]
    cache = _cache_dir() / f"{kind}.v{version}-{'layer' if layer else 'strict'}-{key}.marshal"
    code = None
    try:
        code = marshal.loads(cache.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        source = fastjsonschema.compile_to_code(schema)
        code = compile(source, f"<fastjsonschema {kind}>", "exec")
        _write_quietly(cache, marshal.dumps(code))
    namespace: dict = {}
    exec(code, namespace)
    return namespace[next(n for n in namespace if n.startswith("validate"))]


def _cache_dir() -> Path:
    from . import paths

    return paths.schema_cache()


def _write_quietly(path: Path, data: bytes) -> None:
    """Best effort: a read-only home only costs the compile on the next run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass


def is_valid(kind: str, data, layer: bool, version: int = 2) -> bool:
    import fastjsonschema

    try:
        fast_validator(kind, layer, version)(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def iter_errors(kind: str, data, layer: bool, version: int = 2):
    """Every schema error in `data`; empty for a valid document."""
    if is_valid(kind, data, layer, version):
        return []
    return list(reference_validator(kind, layer, version).iter_errors(data))
