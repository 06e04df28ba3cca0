"""Schemas: valid Draft 2020-12, within the keywords both validators implement alike, and the
fast path agrees with the reference validator on every fixture."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from compiler import schema
from compiler.errors import InputError
from compiler.load import load_file

from conftest import FIXTURES, REPO

SHARED_KEYWORDS = {
    "$schema", "$id", "$defs", "$ref", "title", "description", "type", "properties", "patternProperties",
    "additionalProperties", "propertyNames", "required", "enum", "const", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "minLength", "maxLength", "minItems", "uniqueItems", "items", "anyOf",
}
SCHEMA_FILES = sorted((REPO / "compiler" / "schemas").glob("*.json"))


def keywords(node, found: set, in_map: bool = False) -> set:
    if isinstance(node, dict):
        for key, value in node.items():
            if not in_map:
                found.add(key)
            keywords(value, found, in_map=(not in_map and key in ("properties", "patternProperties", "$defs")))
    elif isinstance(node, list):
        for item in node:
            keywords(item, found)
    return found


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=[p.name for p in SCHEMA_FILES])
def test_schema_is_valid_2020_12_and_uses_shared_keywords_only(path: Path):
    document = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert keywords(document, set()) <= SHARED_KEYWORDS


def all_documents():
    for folder in (FIXTURES, REPO / "sources", REPO / "profiles"):
        yield from sorted(folder.rglob("*.y*ml"))
        yield from sorted(folder.rglob("*.json"))


def version_2_documents():
    """The documents there is something to validate for: they load and are version 2 (the fixtures
    of unloadable and version-1 files are left out here rather than skipped at run time)."""
    for path in all_documents():
        try:
            doc = load_file(path)
        except InputError:
            continue
        if doc.data.get("kind") in ("catalog", "profile", "hosts") and doc.data.get("schema_version") == 2:
            yield path


@pytest.mark.parametrize("path", list(version_2_documents()), ids=lambda p: str(p.relative_to(REPO)))
def test_fast_path_agrees_with_reference(path: Path):
    doc = load_file(path)
    kind = doc.data["kind"]
    for layer in (True, False):
        reference = not list(schema.reference_validator(kind, layer).iter_errors(doc.data))
        assert schema.is_valid(kind, doc.data, layer) == reference


def test_layer_schema_allows_null_patches_but_strict_does_not():
    patch = {"schema_version": 2, "kind": "catalog", "models": {"m": {"params_b": None}}}
    assert schema.is_valid("catalog", patch, layer=True)
    assert not schema.is_valid("catalog", patch, layer=False)
    full = {"schema_version": 2, "kind": "catalog", "models": {"m": {"provider": "local", "workloads": ["chat"]}}}
    assert schema.is_valid("catalog", full, layer=False)
    role_flag = {"schema_version": 2, "kind": "catalog", "roles": {"r": {"required": True}}}
    assert schema.is_valid("catalog", role_flag, layer=True), "a property named 'required' must survive"


def test_compiled_validators_are_cached_between_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    schema.fast_validator.cache_clear()
    schema.fast_validator("hosts", True)
    cached = list((tmp_path / "hostfit" / "schemas").glob("hosts.v2-layer-*.marshal"))
    assert len(cached) == 1
    schema.fast_validator.cache_clear()
    assert schema.fast_validator("hosts", True)({"schema_version": 2, "kind": "hosts"}) is not None


@pytest.mark.parametrize("date, ok", [("2025-04-29", True), ("2024-02-31", True), ("2024-13-01", False),
                                      ("2024-12-99", False), ("2024-00-10", False), ("24-12-01", False)])
def test_release_date_is_a_calendar_shaped_date(date: str, ok: bool):
    """best_fit reads months out of release_date (superseded): a month 13 would count as a later release."""
    doc = {"schema_version": 2, "kind": "catalog",
           "models": {"m": {"provider": "ollama", "workloads": ["chat"], "release_date": date}}}
    assert schema.is_valid("catalog", doc, layer=False) is ok
