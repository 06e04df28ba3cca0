"""Acceptance tests of the command line through click's CliRunner."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import add_layer, run_cli, tree_bytes


def test_build_a_declared_host_prints_the_role_table(base_catalog: Path, monkeypatch):
    monkeypatch.setenv("HOST", "box-8")
    result = run_cli("-C", str(base_catalog), "build")
    assert result.exit_code == 0, result.output
    out = base_catalog / "out" / "box-8"
    document = json.loads((out / "models.json").read_text())
    assert document["host"]["name"] == "box-8" and document["host"]["detected"] is False
    assert document["roles"]["chat"]["model"] == "big-chat"
    rows = [line.split() for line in result.stdout.splitlines()]
    speed = document["roles"]["chat"]["tokens_per_s"]
    assert ["chat", "big-chat", "5.5", "GiB", "cpu", "comfortable", f"~{speed:g}", "small-chat,", "cloud-mini"] in rows
    assert (out / "explain.json").is_file()
    # this machine is not 8 GiB: the declared facts win, with a warning at the host's declaration
    assert "sources/hosts.yaml:4:3: warning[W401]: host 'box-8' is declared with 8.0 GiB RAM" in result.stderr


def test_an_undeclared_machine_compiles_detected_facts_into_out_local(base_catalog: Path):
    result = run_cli("-C", str(base_catalog), "build")
    assert result.exit_code == 0, result.output
    document = json.loads((base_catalog / "out" / "local" / "models.json").read_text())
    assert document["host"]["detected"] is True and document["host"]["name"] == "test-machine"
    assert document["profiles"] == ["base"]


def test_personal_user_layer_applies_to_local_builds_only(base_catalog: Path, tmp_path: Path):
    user = tmp_path / "xdg-config" / "hostfit" / "user.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("schema_version: 2\nkind: catalog\nroles:\n  chat: {prefer: [small-chat]}\n")
    run_cli("-C", str(base_catalog), "build")
    run_cli("-C", str(base_catalog), "build", "--host", "box-32")
    local = json.loads((base_catalog / "out" / "local" / "models.json").read_text())
    declared = json.loads((base_catalog / "out" / "box-32" / "models.json").read_text())
    assert local["roles"]["chat"]["model"] == "small-chat"
    assert declared["roles"]["chat"]["model"] == "big-chat"


def test_check_names_stale_outputs_and_writes_nothing(base_catalog: Path):
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    assert run_cli("-C", str(base_catalog), "build", "--all", "--check").exit_code == 0
    models = base_catalog / "sources" / "00-models.yaml"
    models.write_text(models.read_text().replace("context_window: 32768", "context_window: 16384"))
    before = tree_bytes(base_catalog / "out")
    result = run_cli("-C", str(base_catalog), "build", "--all", "--check")
    assert result.exit_code == 1
    assert "stale: out/box-32/models.json" in result.stderr and "stale: out/box-8/models.json" in result.stderr
    assert tree_bytes(base_catalog / "out") == before


def test_noop_rebuild_reuses_outputs_until_an_input_changes(base_catalog: Path):
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    target = base_catalog / "out" / "box-8" / "models.json"
    stamp = target.stat().st_mtime_ns
    again = run_cli("-C", str(base_catalog), "build", "--all")
    assert again.exit_code == 0 and "unchanged" in again.stdout
    assert target.stat().st_mtime_ns == stamp
    roles = base_catalog / "sources" / "10-roles.yaml"
    roles.write_text(roles.read_text().replace("prefer: [small-chat]", "prefer: [big-chat, small-chat]"))
    os.utime(roles, ns=(stamp + 10**9, stamp + 10**9))
    changed = run_cli("-C", str(base_catalog), "build", "--all")
    assert "updated" in changed.stdout
    assert json.loads(target.read_text())["roles"]["summarization"]["model"] == "big-chat"


def test_set_overrides_every_layer(base_catalog: Path):
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-32", "--set", "roles.chat.prefer=[small-chat]",
                     "--set", 'models."small-chat".context_window=4096')
    assert result.exit_code == 0, result.output
    document = json.loads((base_catalog / "out" / "box-32" / "models.json").read_text())
    assert document["roles"]["chat"]["model"] == "small-chat"
    assert document["models"]["small-chat"]["context_window"] == 4096


def test_profile_option_adds_a_profile(base_catalog: Path):
    (base_catalog / "profiles" / "lean.yaml").write_text(
        "schema_version: 2\nkind: profile\nextends: [base]\nroles:\n  chat: {strategy: first_fit, prefer: [small-chat]}\n")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-32", "--profile", "lean")
    assert result.exit_code == 0, result.output
    document = json.loads((base_catalog / "out" / "box-32" / "models.json").read_text())
    assert document["profiles"] == ["base", "lean"] and document["roles"]["chat"]["model"] == "small-chat"
    assert run_cli("-C", str(base_catalog), "build", "--profile", "lena").exit_code == 2


@pytest.mark.parametrize("args, status, text", [
    (("build", "--host", "box-88"), 2, "did you mean 'box-8'?"),
    (("build", "--set", "nonsense"), 2, "expected PATH=VALUE"),
    (("build", "--frobnicate"), 2, "No such option"),
])
def test_usage_errors_exit_2(base_catalog: Path, args, status, text):
    result = run_cli("-C", str(base_catalog), *args)
    assert result.exit_code == status
    assert text in result.output


def test_a_folder_without_sources_is_a_usage_error(tmp_path: Path):
    result = run_cli("-C", str(tmp_path), "validate")
    assert result.exit_code == 2 and "no sources/" in result.stderr


def test_validate_formats(base_catalog: Path):
    ok = run_cli("-C", str(base_catalog), "validate", "--format", "json")
    assert ok.exit_code == 0 and json.loads(ok.stdout) == {"ok": True, "errors": [], "warnings": []}
    (base_catalog / "sources" / "20-bad.yaml").write_text("schema_version: 2\nkind: catalog\nmodels:\n  X: {}\n")
    github = run_cli("-C", str(base_catalog), "validate", "--format", "github")
    assert github.exit_code == 1
    assert github.stdout.startswith("::error file=sources/20-bad.yaml,line=4,col=3,title=E104::'X' is not a valid name")


def test_validate_paths_outside_a_catalog(tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text("schema_version: 2\nkind: hosts\nhosts:\n  a: {ram_gb: 8}\n")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 2, "kind": "hosts", "hosts": {"a": {"ram_gb": "8"}}}')
    assert run_cli("-C", str(tmp_path), "validate", str(good)).exit_code == 0
    result = run_cli("-C", str(tmp_path), "validate", str(good), str(bad))
    assert result.exit_code == 1 and "bad.json:1:56: error[E100]" in result.stderr


def test_explain_role_and_pointer(base_catalog: Path):
    (base_catalog / "profiles" / "base.yaml").write_text(
        "schema_version: 2\nkind: profile\nname: base\nmodels:\n  big-chat: {context_window: 16384}\n"
        "selection: {max_fill: 0.95}\n")  # as the fixture's profile: box-8 keeps big-chat
    role = run_cli("-C", str(base_catalog), "explain", "box-8", "chat")
    assert role.exit_code == 0
    assert "chosen: big-chat" in role.stdout and "fallbacks: small-chat, cloud-mini" in role.stdout
    pointer = run_cli("-C", str(base_catalog), "explain", "box-8", "/models/big-chat/context_window")
    assert pointer.stdout.splitlines() == [
        "/models/big-chat/context_window",
        "     sources/00-models.yaml:16:5 (sources): 32768",
        "  => profiles/base.yaml:5:14 (profile:base): 16384",
    ]


def test_host_prints_detected_facts():
    result = run_cli("host", "--json")
    facts = json.loads(result.stdout)
    assert result.exit_code == 0 and facts["name"] == "test-machine" and facts["ram_mb"] > 0


def test_unknown_quantization_is_a_warning_not_an_error(base_catalog: Path):
    add_layer(base_catalog, "20-iq.yaml",
        "models:\n  small-chat: {quantization: IQ2_XXS}\n")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert result.exit_code == 0
    assert "sources/20-iq.yaml:4:16: warning[W300]: quantization 'IQ2_XXS' of 'small-chat'" in result.stderr


def test_output_changes_only_when_something_the_host_uses_changes(base_catalog: Path):
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    before = tree_bytes(base_catalog / "out")
    add_layer(base_catalog, "05-unrelated.yaml",
        "models:\n  embedder: {provider: local, workloads: [embedding], "
        "params_b: 0.1, aliases: [emb]}\n")
    models = base_catalog / "sources" / "00-models.yaml"
    models.write_text("# a comment moves every line below it\n" + models.read_text())
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    after = tree_bytes(base_catalog / "out")
    assert {k: v for k, v in after.items() if k.endswith("models.json")} == \
        {k: v for k, v in before.items() if k.endswith("models.json")}
    assert after["box-8/explain.json"] != before["box-8/explain.json"], "explain.json carries the new line numbers"


def test_json_layers_and_catalogs_without_profiles(base_catalog: Path):
    import shutil
    shutil.rmtree(base_catalog / "profiles")
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace(", profiles: [base]", ""))
    (base_catalog / "sources" / "20-patch.json").write_text(
        '{\n  "schema_version": 2,\n  "kind": "catalog",\n  "models": {\n    "big-chat": {"priority": 7}\n  }\n}\n')
    result = run_cli("-C", str(base_catalog), "explain", "box-8", "/models/big-chat/priority")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["/models/big-chat/priority",
                                          "  => sources/20-patch.json:5:18 (sources): 7"]


def test_explain_a_model_lists_its_roles_and_provenance(base_catalog: Path):
    result = run_cli("-C", str(base_catalog), "explain", "box-32", "small-chat")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "model small-chat: used by chat, summarization"
    assert "/models/small-chat/aliases" in lines
    summary = run_cli("-C", str(base_catalog), "explain", "box-32")
    assert re.search(r"^  chat: big-chat \[best_fit, comfortable, ~[0-9.]+ tok/s, 2 candidates\]$", summary.stdout, re.M)


def test_validate_checks_profiles_no_host_uses(base_catalog: Path):
    (base_catalog / "profiles" / "unused.yaml").write_text(
        "schema_version: 2\nkind: profile\nroles:\n  chat: {prefer: [big-chta]}\n")
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1
    assert "profiles/unused.yaml:4:19: error[E200]: role 'chat' prefers unknown model 'big-chta'" in result.stderr


def test_explain_shows_why_a_required_role_cannot_be_served(base_catalog: Path):
    add_layer(base_catalog, "20-big.yaml",
        "roles:\n  chat: {prefer: [big-chat], requires: {context_min: 65536}}\n")
    result = run_cli("-C", str(base_catalog), "explain", "box-8", "chat")
    assert result.exit_code == 1
    assert "error[E300]: required role 'chat' cannot be served on host 'box-8'" in result.stderr
    assert "rejected  big-chat: context window 32,768 < required 65,536" in result.stdout


def test_a_disk_failure_exits_3_without_a_traceback(base_catalog: Path):
    blocker = base_catalog / "not-a-folder"
    blocker.write_text("a file where the output folder should go\n")
    result = run_cli("-C", str(base_catalog), "build", "--all", "--out", str(blocker / "out"))
    assert result.exit_code == 3
    assert result.stderr.startswith("hostfit: error: cannot write ") and "Traceback" not in result.output


def test_every_command_is_there_under_python_m():
    """`python -m compiler.cli` runs main() after every command is defined (stats, measured, bench, profile...)."""
    import subprocess
    import sys

    from compiler.cli import main as group

    listed = subprocess.run([sys.executable, "-m", "compiler.cli", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    for name in group.commands:
        assert f"  {name} " in listed.stdout or f"  {name}\n" in listed.stdout, name
