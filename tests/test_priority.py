"""A model's priority (lower wins) ranks it in every strategy, and `adopt --priority N` places it by that
priority in a role's prefer list; `hostfit models` shows priority and why each model stands where it does."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, stage_candidates


def compiled(catalog: Path, host: str) -> dict:
    assert run_cli("-C", str(catalog), "build", "--host", host).exit_code == 0
    return json.loads((catalog / "out" / host / "models.json").read_text())


def test_adopt_with_a_priority_makes_the_model_the_pick_of_a_best_fit_role(shipped_catalog: Path):
    """chat has no prefer list (best_fit): priority 10 puts phi-3-mini ahead of every larger model."""
    before = compiled(shipped_catalog, "workstation")["roles"]["chat"]
    assert before["model"] != "phi-3-mini"
    result = run_cli("-C", str(shipped_catalog), "adopt", "phi-3-mini", "--role", "chat", "--priority", "10")
    assert result.exit_code == 0, result.output
    after = compiled(shipped_catalog, "workstation")["roles"]["chat"]
    assert after["model"] == "phi-3-mini", after
    assert before["model"] in after["fallbacks"]
    explained = run_cli("-C", str(shipped_catalog), "explain", "workstation", "chat").stdout
    assert "on priority (10 over " in explained, explained


def test_priority_ranks_before_quality_but_never_buys_a_model_that_does_not_fit(shipped_catalog: Path):
    assert run_cli("-C", str(shipped_catalog), "adopt", "gpt-oss-120b", "--role", "chat", "--priority", "1"
                   ).exit_code == 0
    assert compiled(shipped_catalog, "workstation")["roles"]["chat"]["model"] == "gpt-oss-120b"
    laptop = compiled(shipped_catalog, "laptop-16")["roles"]["chat"]
    assert laptop["model"] not in (None, "gpt-oss-120b"), laptop  # 65 GB of weights: no priority fits them in 16


def test_adopt_with_a_priority_places_the_model_in_the_prefer_list(shipped_catalog: Path):
    """planner prefers gpt-oss-120b (70), gpt-oss-20b (80), qwen2.5-coder-14b-q5 (90), ...: 85 goes
    between 80 and 90, moved from the end, not listed twice."""
    roles = shipped_catalog / "sources" / "10-roles.yaml"
    result = run_cli("-C", str(shipped_catalog), "adopt", "phi-3-mini", "--role", "planner", "--priority", "85")
    assert result.exit_code == 0, result.output
    assert ("prefer: [gpt-oss-120b, gpt-oss-20b, phi-3-mini, qwen2.5-coder-14b-q5, llama-3.1-8b-instruct, "
            "qwen2.5-coder-7b-q5]") in roles.read_text()
    # equal priorities keep their order: the adopted model goes after those of its own priority
    result = run_cli("-C", str(shipped_catalog), "adopt", "phi-3-mini", "--role", "planner", "--priority", "100")
    assert result.exit_code == 0, result.output
    assert ("prefer: [gpt-oss-120b, gpt-oss-20b, qwen2.5-coder-14b-q5, llama-3.1-8b-instruct, qwen2.5-coder-7b-q5, "
            "phi-3-mini]") in roles.read_text()
    result = run_cli("-C", str(shipped_catalog), "adopt", "phi-3-mini", "--role", "planner", "--priority", "5")
    assert "prefer: [phi-3-mini, gpt-oss-120b," in roles.read_text(), result.output
    assert run_cli("-C", str(shipped_catalog), "build", "--host", "workstation").exit_code == 0
    trace = json.loads((shipped_catalog / "out" / "workstation" / "explain.json").read_text())
    assert trace["roles"]["planner"]["candidates"][0]["model"] == "phi-3-mini"  # first_fit's first


def test_models_shows_priority_why_and_trial(shipped_catalog: Path):
    stage_candidates(shipped_catalog, {
        "model_id": "HuggingFaceTB/SmolLM2-1.7B-Instruct", "provider": "huggingface", "license": "apache-2.0",
        "source": "huggingface_hub", "popularity_score": 10, "tags": ["chat"], "status": "trial"})
    result = run_cli("-C", str(shipped_catalog), "models", "--host", "laptop-16", "--include-suggestions")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    head = lines[1].split()
    assert head[head.index("TOK/S") + 1:] == ["PRIORITY", "WHY", "INSTALLED"]
    rows = {line.split()[1 if line.startswith("*") else 0]: line for line in lines[2:-1]}
    trial = rows["huggingfacetb/smollm2-1.7b-instruct"]
    # a trial candidate competes at the priority adopt would give it (100), not a staged one's 900
    assert "(trial)" in trial and " 100 " in trial and " 900 " not in trial, trial
    built = compiled(shipped_catalog, "laptop-16")["roles"]
    assert f"picked for {', '.join(sorted(r for r, v in built.items() if v['model'] == 'phi-3-mini'))}" \
        in rows["phi-3-mini"], rows["phi-3-mini"]
    assert " 110 " in rows["phi-3-mini"]
    assert "chat: needs " in rows["gpt-oss-120b"] and "MiB usable" in rows["gpt-oss-120b"]
    listed = json.loads(run_cli("-C", str(shipped_catalog), "models", "--host", "laptop-16", "--json").stdout)
    assert [r["priority"] for r in listed] == sorted(r["priority"] for r in listed)  # the candidates' order
    assert all(r["why"] for r in listed)


def test_models_with_an_unknown_workload_is_a_usage_error(shipped_catalog: Path):
    result = run_cli("-C", str(shipped_catalog), "models", "--workload", "sumarization")
    assert result.exit_code == 2 and "did you mean 'summarization'?" in result.stderr, result.output
    assert run_cli("-C", str(shipped_catalog), "models", "--workload", "summarization").exit_code == 0
