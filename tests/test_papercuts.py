"""Papercuts a new user met (issue 13): each message says what happened once, in the words of the lines
beside it, and a mistyped name is an error that guesses what was meant."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO, add_layer, run_cli


def test_explain_of_an_unknown_subject_is_an_error_with_a_guess(shipped_catalog: Path):
    result = run_cli("-C", str(shipped_catalog), "explain", "workstation", "nosuchrole")
    assert result.exit_code == 2, result.output
    assert "is neither a role" in result.stderr
    close = run_cli("-C", str(shipped_catalog), "explain", "workstation", "sumarization")
    assert close.exit_code == 2 and "did you mean 'summarization'?" in close.stderr, close.output
    model = run_cli("-C", str(shipped_catalog), "explain", "workstation", "gpt-oss-20")
    assert model.exit_code == 2 and "did you mean 'gpt-oss-20b'?" in model.stderr, model.output
    assert run_cli("-C", str(shipped_catalog), "explain", "workstation", "gpt-oss-20b").exit_code == 0


def test_diff_words_a_value_one_side_lacks_as_the_lines_beside_it(tmp_path: Path):
    """An optional role that gains a model: its placement, memory and settings read `(none) -> ...`, memory
    in MiB with separators as every memory line, never Python's None or JSON's null."""
    after = json.loads((REPO / "out" / "edge-4" / "models.json").read_text())
    before = json.loads(json.dumps(after))
    role = before["roles"]["chat"]
    served = dict(role)
    for key in ("model", "placement", "memory_mb", "runtime", "fit", "tokens_per_s"):
        role[key] = None
    role["fallback_runtimes"], role["fallbacks"] = {}, []
    for side, document in (("before", before), ("after", after)):
        (tmp_path / side).mkdir()
        (tmp_path / side / "models.json").write_text(json.dumps(document))
    result = run_cli("diff", str(tmp_path / "before"), str(tmp_path / "after"))
    lines = result.stdout.splitlines()
    assert f"  chat placement: (none) -> {served['placement']}" in lines, result.stdout
    assert f"  chat memory: (none) -> {served['memory_mb']:,} MiB" in lines, result.stdout
    assert f"  chat runtime: (none) -> {served['runtime']}" in lines, result.stdout
    assert f"  chat tokens_per_s: (none) -> {served['tokens_per_s']:g}" in lines, result.stdout
    assert f"  chat fallbacks: (none) -> {', '.join(served['fallbacks'])}" in lines, result.stdout
    assert not any(word in result.stdout for word in ("None", "null")), result.stdout


def test_a_model_block_under_roles_is_said_to_be_read_as_a_role(base_catalog: Path):
    add_layer(base_catalog, "20-oops.yaml", "roles:\n  tiny-llm:\n    provider: local\n    params_b: 1.1\n"
              "    workload: chat\n")
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1
    line = next(x for x in result.stderr.splitlines() if "'provider'" in x)
    assert "20-oops.yaml:5:5" in line and "read as a role: it sits under `roles:`" in line, result.stderr
    assert "a model belongs under `models:`" in result.stderr, result.stderr
    assert "'params_b'" in result.stderr


def test_a_dangling_reference_points_at_the_layer_that_deleted_the_model(shipped_catalog: Path):
    path = add_layer(shipped_catalog, "20-drop.yaml", "# no 20b here\nmodels:\n  gpt-oss-20b: null\n")
    result = run_cli("-C", str(shipped_catalog), "validate")
    assert result.exit_code == 1
    errors = [x for x in result.stderr.splitlines() if "unknown model 'gpt-oss-20b'" in x]
    assert errors, result.stderr
    display = path.relative_to(shipped_catalog).as_posix()
    assert f"'gpt-oss-20b' was deleted at {display}:5:3 (`gpt-oss-20b: null`)" in result.stderr, result.stderr
    hints = [x for x in result.stderr.splitlines() if "was deleted at" in x]
    assert len(hints) == len(errors), result.stderr  # one per dangling reference


def test_with_no_ollama_a_chain_asks_once_and_says_why_once(base_catalog: Path, monkeypatch, tmp_path: Path):
    """Every model of the chain on Ollama, none running: one consent question, one sentence in the error."""
    from compiler.executor import loaders

    asked = []

    def refuse(interactive: bool) -> bool:
        asked.append(interactive)
        return False

    monkeypatch.setattr(loaders, "auto_start_allowed", refuse)
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    names = ["one", "two", "three"]
    add_layer(base_catalog, "20-ollama.yaml", "models:\n" + "".join(
        f"  {n}-chat:\n    provider: ollama\n    workloads: [chat]\n    params_b: 0.5\n    quantization: Q4_K_M\n"
        f"    context_window: 4096\n    ollama: {{name: \"{n}:latest\"}}\n" for n in names)
        + "roles:\n  chat: {prefer: [one-chat, two-chat, three-chat], fallback: []}\n")
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-32").exit_code == 0
    result = run_cli("-C", str(base_catalog), "load", "chat", "--host", "box-32", "--backend", "ollama")
    assert result.exit_code == 3, result.output
    assert len(asked) == 1, asked
    error = next(line for line in result.stderr.splitlines() if line.startswith("hostfit: error:"))
    assert error.count("no Ollama server answers") == 1, error
    assert "one-chat, two-chat, three-chat: no Ollama server answers at http://127.0.0.1:9" in error, error
    assert result.stderr.count("no Ollama server answers") == 2, result.stderr  # said as it happens, then in the error
