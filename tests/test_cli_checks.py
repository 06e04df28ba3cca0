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


# ------------------------------------------------------------------ REVIEW 9: the small holes

@pytest.mark.parametrize("kind", ["fifo", "dangling"])
def test_a_special_personal_layer_is_an_error_naming_it(base_catalog: Path, tmp_path, monkeypatch, kind):
    config = tmp_path / "config" / "hostfit"
    config.mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    if kind == "fifo":
        os.mkfifo(config / "user.yaml")
    else:
        (config / "user.yaml").symlink_to(tmp_path / "nowhere.yaml")
    result = run_cli("-C", str(base_catalog), "build", "--host", "local")
    code = "E018" if kind == "fifo" else "E019"
    assert result.exit_code == 1 and f"error[{code}]" in result.stderr and "user.yaml" in result.stderr


def test_build_out_empty_is_a_usage_error(base_catalog: Path, tmp_path, monkeypatch):
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8", "--out", "")
    assert result.exit_code == 2 and "--out" in result.stderr
    assert list(here.iterdir()) == []


def test_diff_git_refuses_a_ref_that_git_would_read_as_an_option(base_catalog: Path, monkeypatch):
    from compiler import diff

    git(base_catalog, "init", "-q")
    git(base_catalog, "add", "-A")
    git(base_catalog, "commit", "-q", "-m", "catalog")
    calls = []
    real = diff._git
    monkeypatch.setattr(diff, "_git", lambda *args: calls.append(args) or real(*args))
    result = run_cli("-C", str(base_catalog), "diff", "--git=--orphan=x")
    assert result.exit_code == 2 and "cannot start with '-'" in result.stderr
    assert not any("worktree" in call for call in calls)


def test_max_errors_below_zero_is_a_usage_error(base_catalog: Path):
    layer(base_catalog, "20-bad.yaml", "models:\n  small-chat: {priority: many}\n")
    result = run_cli("-C", str(base_catalog), "validate", "--max-errors", "-1")
    assert result.exit_code == 2 and "--max-errors" in result.stderr
    assert "error[E100]" in run_cli("-C", str(base_catalog), "validate", "--max-errors", "0").stderr


def test_import_refuses_a_device_without_reading_it():
    result = run_cli("import", "gpt4all", "/dev/zero")
    assert result.exit_code == 1 and "error[E018]" in result.stderr


def test_import_refuses_an_oversized_file(tmp_path: Path):
    big = tmp_path / "big.json"
    with open(big, "wb") as handle:
        handle.truncate(300 << 20)  # sparse: nothing written, nothing read
    result = run_cli("import", "gpt4all", str(big))
    assert result.exit_code == 1 and "error[E026]" in result.stderr


def test_import_skips_an_entry_whose_url_the_policy_refuses(tmp_path: Path):
    source = tmp_path / "models3.json"
    source.write_text(json.dumps([
        {"name": "Good", "filename": "good-q4_0.gguf", "url": "https://example.com/good-q4_0.gguf"},
        {"name": "Plain", "filename": "plain-q4_0.gguf", "url": "http://10.0.0.1/plain-q4_0.gguf"}]))
    output = tmp_path / "layer.yaml"
    result = run_cli("import", "gpt4all", str(source), "-o", str(output))
    assert result.exit_code == 0, result.output
    assert "download URL refused" in result.stdout and "Plain" in result.stdout
    assert "good-q4_0" in output.read_text() and "10.0.0.1" not in output.read_text()
