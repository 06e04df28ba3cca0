"""REVIEW 4, 6 and 9 on the command line: --set values get the artifact checks, secrets in URLs never
reach explain.json, `hostfit explain` or the no-op cache, and the small command-line holes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli

from test_diff import git


def layer(catalog: Path, name: str, text: str) -> None:
    (catalog / "sources" / name).write_text("schema_version: 2\nkind: catalog\n" + text)


# ------------------------------------------------------------------ REVIEW 4: --set gets the artifact checks

@pytest.mark.parametrize(("assignment", "code"), [
    ("models.small-chat.artifact.file=q.gguf$(touch PWNED)", "E204"),
    ("models.small-chat.artifact.url=http://10.0.0.1/x.gguf", "E205"),
    ("models.small-chat.artifact.mirrors=[http://10.0.0.1/x.gguf]", "E205"),
    ('models.small-chat.artifact.url="https://example.com/a b.gguf"', "E233"),
], ids=["file", "url", "mirror", "url-chars"])
def test_set_values_get_the_artifact_checks(base_catalog: Path, assignment, code):
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8", "--set", assignment)
    assert result.exit_code == 1 and f"error[{code}]" in result.stderr and "Traceback" not in result.output
    assert not (base_catalog / "out" / "box-8").exists()


def test_a_file_layers_artifact_problem_is_reported_once(base_catalog: Path):
    layer(base_catalog, "20-bad.yaml", "models:\n  small-chat:\n    artifact: {url: 'http://10.0.0.1/x.gguf'}\n")
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1 and result.stderr.count("error[E205]") == 1


# ------------------------------------------------------------------ REVIEW 6: secrets in URLs

def test_catalog_url_passwords_never_reach_explain(base_catalog: Path):
    layer(base_catalog, "20-secret.yaml", "models:\n  small-chat:\n    artifact:\n"
          "      url: 'https://admin:S3CRET@example.com/x.gguf?token=T0KEN'\n"
          "      mirrors: ['https://bob:PASSW0RD@mirror.example.com/x.gguf']\n")
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    explained = (base_catalog / "out" / "box-8" / "explain.json").read_text()
    shown = run_cli("-C", str(base_catalog), "explain", "box-8", "/models/small-chat/artifact").stdout
    for text in (explained, shown):
        assert "S3CRET" not in text and "T0KEN" not in text and "PASSW0RD" not in text
        assert "https://***@example.com/x.gguf" in text


def test_set_text_never_reaches_explain_or_the_build_cache(base_catalog: Path):
    secret = "models.small-chat.artifact.url=https://admin:SETSECRET@example.com/x.gguf"
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8", "--set", secret).exit_code == 0
    out = base_catalog / "out"
    leaked = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "models.json"
              and b"SETSECRET" in p.read_bytes()]
    assert leaked == []
    assert (out / ".cache").is_dir() and any((out / ".cache").glob("build-*.json"))
    explained = json.loads((out / "box-8" / "explain.json").read_text())
    assert {"layer": "--set", "file": "--set models.small-chat.artifact.url"} in explained["layers"]
    again = run_cli("-C", str(base_catalog), "build", "--host", "box-8", "--set", secret)
    assert "(unchanged)" in again.stdout, "the no-op cache still recognises the same options"
