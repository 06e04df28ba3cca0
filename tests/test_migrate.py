"""Schema migration v1 -> v2: in memory on load (positions kept), and `hostfit migrate` on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compiler.errors import VersionError
from compiler.load import load_file, load_yaml_text
from compiler.migrate import migrate, normalize_id, params_billions, score

from conftest import FIXTURES, run_cli

V1 = FIXTURES / "v1" / "models.yaml"


def test_v1_maps_roles_models_capabilities_and_cloud_fallbacks():
    doc = migrate(load_file(V1, "models.yaml"))
    data = doc.data
    assert (data["schema_version"], data["kind"]) == (2, "catalog")
    assert data["roles"]["planner"] == {
        "workload": "chat", "prefer": ["llama3.1:8b", "qwen2.5-coder:7b"], "fallback": ["gpt-4o-mini"],
        "requires": {"reasoning_min": 0.6, "context_min": 8192}, "x-legacy": {"memory_gb_max": 12}}
    assert data["roles"]["coder"]["workload"] == "code" and data["roles"]["coder"]["requires"] == {"tools": True}
    assert data["roles"]["summarizer"]["workload"] == "summarization"
    llama = data["models"]["llama3.1:8b"]
    assert llama["provider"] == "ollama" and llama["ollama"] == {"name": "llama3.1:8b"}
    assert (llama["context_window"], llama["quantization"], llama["params_b"]) == (131072, "Q4_K_M", 8.0)
    assert llama["memory"] == {"ram_mb": 6656}
    assert llama["capabilities"] == {"reasoning": 0.7, "coding": 0.55, "creativity": 0.68, "multilingual": 0.7,
                                     "tools": True, "vision": False}
    assert llama["x-legacy"] == {"min_memory_gb": 6, "recommended_memory_gb": 8}
    assert data["models"]["qwen2.5-coder:7b"]["workloads"] == ["chat", "code"]
    assert data["models"]["qwen2.5-coder:7b"]["params_b"] == 7.6156
    cloud = data["models"]["gpt-4o-mini"]
    assert cloud == {"provider": "openai", "workloads": ["chat", "code"], "context_window": 128000,
                     "api_key_env": "OPENAI_API_KEY",
                     "x-legacy": {"cost_per_1k_input": 0.00015, "api_endpoint": "https://api.openai.com/v1"}}


def test_v1_positions_still_point_into_the_original_file():
    doc = migrate(load_file(V1, "models.yaml"))
    assert doc.where(("roles", "planner", "requires", "context_min")) == (9, 7)
    assert doc.where(("models", "llama3.1:8b", "capabilities", "reasoning")) == (26, 7)
    assert doc.where(("models", "qwen2.5-coder:7b", "context_window")) == (39, 7)
    assert doc.where(("roles", "coder", "prefer", 1)) == (14, 9)
    assert [(n.code, n.line) for n in doc.notes] == [
        ("W100", 1), ("W101", 10), ("W101", 31), ("W101", 32), ("W101", 55), ("W101", 57)]


def test_v1_version_is_explicit_or_implied_by_its_keys():
    explicit = migrate(load_yaml_text("schema_version: 1\nrole_mappings:\n  chat: {preferred: [a]}\n", "f.yaml"))
    implied = migrate(load_yaml_text("role_mappings:\n  chat: {preferred: [a]}\n", "f.yaml"))
    assert explicit.data["roles"] == implied.data["roles"] == {"chat": {"workload": "chat", "prefer": ["a"]}}


def test_a_broken_v1_file_is_reported_at_its_own_lines():
    with pytest.raises(VersionError) as exc:
        migrate(load_yaml_text("model_profiles:\n  m:\n    capabilities:\n      context_length: big\n", "f.yaml"))
    assert [(d.line, d.col, d.code) for d in exc.value.diagnostics] == [(4, 7, "E100")]


def test_a_v1_reference_error_points_at_the_original_line(base_catalog: Path):
    (base_catalog / "sources" / "05-legacy.yaml").write_text(
        "# v1\nrole_mappings:\n  chat:\n    preferred: [big-chat, mystery-model]\n")
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1
    assert "sources/05-legacy.yaml:4:27: error[E200]: role 'chat' prefers unknown model 'mystery-model'" \
        in result.stderr
    assert "sources/05-legacy.yaml:1:1: warning[W100]: schema version 1" in result.stderr


@pytest.mark.parametrize("raw, billions", [("8B", 8.0), ("494M", 0.494), (7615616512, 7.615616512),
                                           (7.6, 7.6), ("3.1b", 3.1), ("huge", None)])
def test_model_sizes(raw, billions):
    assert params_billions(raw) == billions


def test_scores_and_ids():
    assert (score(0.6), score(7), score(85), score(500)) == (0.6, 0.7, 0.85, None)
    assert normalize_id("Qwen2.5 Coder:7B") == "qwen2.5-coder:7b"
    assert normalize_id("--odd--") == "odd"


# ------------------------------------------------------------------------------ on disk

@pytest.fixture
def legacy_catalog(base_catalog: Path) -> Path:
    shutil.copyfile(V1, base_catalog / "sources" / "05-legacy.yaml")
    return base_catalog


def test_migrate_prints_a_diff_and_writes_nothing(legacy_catalog: Path):
    target = legacy_catalog / "sources" / "05-legacy.yaml"
    before = target.read_bytes()
    result = run_cli("-C", str(legacy_catalog), "migrate")
    assert result.exit_code == 0
    assert result.stdout.startswith("--- a/sources/05-legacy.yaml\n+++ b/sources/05-legacy.yaml\n")
    assert "-role_mappings:\n" in result.stdout and "+roles:\n" in result.stdout
    assert target.read_bytes() == before


def test_migrate_write_keeps_untouched_lines_byte_for_byte(legacy_catalog: Path):
    target = legacy_catalog / "sources" / "05-legacy.yaml"
    before = target.read_text()
    result = run_cli("-C", str(legacy_catalog), "migrate", "--write", "--backup")
    assert result.exit_code == 0, result.output
    after = target.read_text()
    assert (legacy_catalog / "sources" / "05-legacy.yaml.bak").read_text() == before
    untouched = [
        "# Our model routing, as the old router read it (schema version 1).",
        "# Keep this list short: every model here gets pulled on every laptop.",
        "  planner:", "  coder:", "      - qwen2.5-coder:7b", "      - qwen2.5-coder:3b", "  summarizer:",
        "  llama3.1:8b:", '  "qwen2.5-coder:7b":', "    description: 'the coder we trust'", "  qwen2.5:0.5b:",
    ]
    lines = after.splitlines()
    assert all(line in lines for line in untouched)
    assert [line for line in lines if line in untouched] == [line for line in before.splitlines() if line in untouched]
    assert "# scored out of 10 back then" in after and "# below this the plans wander" in after
    assert after.startswith("# Our model routing")
    # the result is a current, valid catalog, and compiles with the rest
    assert run_cli("-C", str(legacy_catalog), "validate").exit_code == 0
    doc = load_file(target, "05-legacy.yaml")
    assert doc.data["schema_version"] == 2 and doc.notes == []
    assert migrate(doc).data == migrate(load_file(legacy_catalog / "sources" / "05-legacy.yaml.bak",
                                                  "bak.yaml")).data


def test_a_second_migration_changes_nothing(legacy_catalog: Path):
    assert run_cli("-C", str(legacy_catalog), "migrate", "--write").exit_code == 0
    snapshot = {p.name: p.read_bytes() for p in (legacy_catalog / "sources").iterdir()}
    again = run_cli("-C", str(legacy_catalog), "migrate", "--write")
    assert again.exit_code == 0 and "nothing to migrate" in again.stderr and again.stdout == ""
    assert {p.name: p.read_bytes() for p in (legacy_catalog / "sources").iterdir()} == snapshot


def test_json_v1_files_migrate_too(tmp_path: Path):
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps({"role_mappings": {"chat": {"preferred": ["Llama3:8B"]}},
                                "model_profiles": {"Llama3:8B": {"capabilities": {"context_length": 8192}}}}))
    assert run_cli("-C", str(tmp_path), "migrate", "--write", str(path)).exit_code == 0
    data = json.loads(path.read_text())
    assert data["roles"]["chat"]["prefer"] == ["llama3:8b"]
    assert data["models"]["llama3:8b"]["ollama"] == {"name": "Llama3:8B"}


def test_a_file_that_would_not_validate_is_left_alone(tmp_path: Path):
    path = tmp_path / "legacy.yaml"
    path.write_text("role_mappings:\n  code review:\n    preferred: [a]\n")
    before = path.read_bytes()
    result = run_cli("-C", str(tmp_path), "migrate", "--write", str(path))
    assert result.exit_code == 1
    assert "error[E014]: the migrated file would not validate; left unchanged" in result.stderr
    assert "'code review' is not a valid name" in result.stderr
    assert path.read_bytes() == before


def test_newer_documents_are_refused(tmp_path: Path):
    path = tmp_path / "future.yaml"
    path.write_text("schema_version: 3\nkind: catalog\n")
    result = run_cli("-C", str(tmp_path), "migrate", str(path))
    assert result.exit_code == 1 and "error[E011]: schema_version 3 is newer" in result.stderr


def test_indentation_of_the_file_is_kept(tmp_path: Path):
    path = tmp_path / "legacy.yaml"
    path.write_text("role_mappings:\n    chat:\n        preferred:\n        - 'llama3:8b'   # the default\n"
                    "        - mistral:7b\n")
    assert run_cli("-C", str(tmp_path), "migrate", "--write", str(path)).exit_code == 0
    lines = path.read_text().splitlines()
    assert "    chat:" in lines and "        - 'llama3:8b'   # the default" in lines and "        - mistral:7b" in lines
    assert "        prefer:" in lines and "        workload: chat" in lines
