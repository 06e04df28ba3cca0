"""adopt and retire edit the catalog's own YAML through ruamel.yaml round-trip: untouched lines keep
their bytes, comments stay, the diff is printed, and a result that would not validate is refused."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, stage_candidates, tree_bytes


def untouched_lines_kept(before: str, after: str, changed: int) -> None:
    """Every line of `before` but `changed` ones is in `after`, in the same order."""
    after_lines = after.splitlines()
    kept, position = 0, 0
    for line in before.splitlines():
        try:
            position = after_lines.index(line, position) + 1
            kept += 1
        except ValueError:
            pass
    assert len(before.splitlines()) - kept <= changed


def test_retire_marks_the_model_and_empties_it_from_every_list(shipped_catalog: Path):
    files = {name: (shipped_catalog / name).read_text() for name in
             ("sources/00-models.yaml", "sources/10-roles.yaml", "profiles/writing.yaml")}
    result = run_cli("-C", str(shipped_catalog), "retire", "Mistral-7B")
    assert result.exit_code == 0, result.output
    assert "+    status: retired" in result.stdout and "-    prefer: [llama-3.1-8b-instruct, mistral-7b" in result.stdout
    for name, before in files.items():
        after = (shipped_catalog / name).read_text()
        assert after != before
        untouched_lines_kept(before, after, changed=1)
    assert (shipped_catalog / "sources/00-models.yaml").read_text().startswith("# The shipped model catalog")
    assert "# Cloud models: fallbacks only" in (shipped_catalog / "sources/00-models.yaml").read_text()
    assert run_cli("-C", str(shipped_catalog), "validate").exit_code == 0
    listed = run_cli("-C", str(shipped_catalog), "models", "--host", "laptop-8")
    assert "mistral-7b-instruct-v0.2" not in listed.stdout, "retired models leave the curated view"


def test_adopt_a_staged_candidate(shipped_catalog: Path):
    staged_file = stage_candidates(shipped_catalog, {
        "model_id": "HuggingFaceTB/SmolLM2-1.7B-Instruct", "provider": "huggingface", "license": "apache-2.0",
        "source": "huggingface_hub", "popularity_score": 10, "tags": ["chat"], "status": "pending",
        "params_b": 1.711, "format": "safetensors"})  # sized: the Hub's safetensors.total
    before = (shipped_catalog / "sources/00-models.yaml").read_text()
    result = run_cli("-C", str(shipped_catalog), "adopt", "huggingfacetb/smollm2-1.7b-instruct", "--role", "chat",
                     "--priority", "150")
    assert result.exit_code == 0, result.output
    after = (shipped_catalog / "sources/00-models.yaml").read_text()
    assert after.startswith(before.rstrip("\n")), "the new entry is appended; nothing above it changes"
    assert "huggingfacetb/smollm2-1.7b-instruct:" in after and "priority: 150" in after
    assert "type: instruct" in after[len(before):]  # the kind its name states, declared in the entry
    staged = json.loads(staged_file.read_text())["candidates"][0]
    assert staged["status"] == "adopted"
    assert run_cli("-C", str(shipped_catalog), "validate").exit_code == 0


def test_adopt_into_a_prefer_list(shipped_catalog: Path):
    before = (shipped_catalog / "sources/10-roles.yaml").read_text()
    result = run_cli("-C", str(shipped_catalog), "adopt", "phi3-mini", "--role", "code")
    assert result.exit_code == 0, result.output
    after = (shipped_catalog / "sources/10-roles.yaml").read_text()
    assert "prefer: [qwen2.5-coder-14b-q8, qwen2.5-coder-14b-q5, qwen2.5-coder-7b-q5, qwen2.5-coder-3b-q4, " \
           "phi-3-mini]" in after
    untouched_lines_kept(before, after, changed=1)


def test_a_result_that_would_not_validate_is_refused(base_catalog: Path):
    assert run_cli("-C", str(base_catalog), "retire", "big-chat").exit_code == 0
    before = tree_bytes(base_catalog / "sources")
    result = run_cli("-C", str(base_catalog), "retire", "small-chat")
    assert result.exit_code == 1
    assert "error[E300]: required role 'chat' cannot be served" in result.stderr
    assert "(after the edit; nothing written)" in result.stderr
    assert tree_bytes(base_catalog / "sources") == before


def test_dry_run_writes_nothing(base_catalog: Path):
    before = tree_bytes(base_catalog / "sources")
    result = run_cli("-C", str(base_catalog), "retire", "tiny", "--dry-run")
    assert result.exit_code == 0 and "status: retired" in result.stdout
    assert tree_bytes(base_catalog / "sources") == before
    assert run_cli("-C", str(base_catalog), "adopt", "nope", "--role", "chat").exit_code == 2


def test_adopting_a_model_a_prefer_list_names_by_alias_leaves_the_list_alone(shipped_catalog: Path):
    roles = shipped_catalog / "sources/10-roles.yaml"
    roles.write_text(roles.read_text().replace(
        "prefer: [gpt-oss-20b, llama-3.1-8b-instruct, qwen2.5-coder-7b-q5, phi-3-mini]",
        "prefer: [gpt-oss-20b, phi3-mini, llama-3.1-8b-instruct, qwen2.5-coder-7b-q5]"))
    before = roles.read_text()
    result = run_cli("-C", str(shipped_catalog), "adopt", "phi-3-mini", "--role", "critic")
    assert result.exit_code == 0, result.output
    assert roles.read_text() == before, "listed already (by its alias): no priority given, so no move"


def test_adopting_a_staged_candidate_the_catalog_has_marks_it_adopted(shipped_catalog: Path):
    staged_file = stage_candidates(shipped_catalog, {
        "model_id": "microsoft/Phi-3-mini-4k-instruct-gguf", "provider": "huggingface", "license": "mit",
        "source": "huggingface_hub", "popularity_score": 10, "tags": [], "status": "pending",
        "in_catalog": "phi-3-mini"})  # ingest found it in the catalog
    models = (shipped_catalog / "sources/00-models.yaml").read_text()
    result = run_cli("-C", str(shipped_catalog), "adopt", "microsoft/Phi-3-mini-4k-instruct-gguf", "--role", "critic",
                     "--priority", "50")
    assert result.exit_code == 0, result.output
    assert (shipped_catalog / "sources/00-models.yaml").read_text() != models, "the catalog's own entry is updated"
    assert "microsoft/phi-3-mini-4k-instruct-gguf:" not in (shipped_catalog / "sources/00-models.yaml").read_text()
    staged = json.loads(staged_file.read_text())["candidates"][0]
    assert staged["status"] == "adopted", "off the review queue, as any adopted candidate"
