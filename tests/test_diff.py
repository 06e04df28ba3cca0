"""hostfit diff: per-host semantic differences of compiled output, in every format (snapshots
reviewed like code), exit codes, and --git against a temporary repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import add_layer, run_cli

CHANGES = {
    "model-added": lambda c: add_layer(c, "20-new.yaml", "models:\n  mid-chat: {provider: local, workloads: [chat], "
                                                          "params_b: 3, quantization: Q4_K_M, context_window: 16384, "
                                                          "arch: {layers: 36, kv_heads: 2, head_dim: 128}}\n"),
    "ram-reassigns-a-role": lambda c: (c / "sources" / "hosts.yaml").write_text(
        (c / "sources" / "hosts.yaml").read_text().replace("box-8: {ram_gb: 8", "box-8: {ram_gb: 4")),
    "profile-change": lambda c: (c / "profiles" / "base.yaml").write_text(
        "schema_version: 2\nkind: profile\nname: base\nroles:\n  chat: {strategy: first_fit, prefer: [small-chat]}\n"),
    "host-removed": lambda c: (c / "sources" / "hosts.yaml").write_text(
        "schema_version: 2\nkind: hosts\nhosts:\n  box-32: {ram_gb: 32, profiles: [base]}\n"),
    "field-in-one-layer": lambda c: add_layer(c, "30-patch.yaml", "models:\n  small-chat: {context_window: 4096}\n"),
}


def compile_into(catalog: Path, out: Path) -> None:
    result = run_cli("-C", str(catalog), "build", "--all", "-q", "--out", str(out))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_diff_formats(base_catalog: Path, tmp_path: Path, change: str, fmt: str, snapshot):
    compile_into(base_catalog, tmp_path / "before")
    CHANGES[change](base_catalog)
    compile_into(base_catalog, tmp_path / "after")
    result = run_cli("diff", str(tmp_path / "before"), str(tmp_path / "after"), "--format", fmt, "--exit-code")
    assert result.exit_code == 1, result.output
    assert result.stdout == snapshot


def test_exit_codes(base_catalog: Path, tmp_path: Path):
    compile_into(base_catalog, tmp_path / "a")
    same = run_cli("diff", str(tmp_path / "a"), str(tmp_path / "a"), "--exit-code")
    assert same.exit_code == 0 and same.stdout.strip() == "no changes"
    single = run_cli("diff", str(tmp_path / "a" / "box-8" / "models.json"), str(tmp_path / "a" / "box-8"),
                     "--exit-code")
    assert single.exit_code == 0
    (tmp_path / "junk.json").write_text("{}")
    assert run_cli("diff", str(tmp_path / "a"), str(tmp_path / "junk.json"), "--exit-code").exit_code == 2
    assert run_cli("diff", str(tmp_path / "a")).exit_code == 2


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True,
                   capture_output=True)


def test_diff_against_a_git_ref_explains_with_the_trace(base_catalog: Path):
    git(base_catalog, "init", "-q")
    git(base_catalog, "add", "-A")
    git(base_catalog, "commit", "-q", "-m", "catalog")
    add_layer(base_catalog, "20-roles.yaml", "roles:\n  chat: {requires: {context_min: 16384}}\n"
                                             "models:\n  big-chat: {context_window: 8192}\n"
                                             "  long-chat: {provider: local, workloads: [chat], params_b: 1, "
                                             "quantization: Q4_K_M, context_window: 65536, "
                                             "arch: {layers: 16, kv_heads: 8, head_dim: 64}}\n")
    result = run_cli("-C", str(base_catalog), "diff", "--git", "HEAD", "--format", "json", "--exit-code")
    assert result.exit_code == 1, result.output
    hosts = {h["host"]: h for h in json.loads(result.stdout)["hosts"]}
    chat = next(r for r in hosts["box-32"]["roles"] if r["role"] == "chat")
    assert (chat["old_model"], chat["new_model"]) == ("big-chat", "long-chat")
    assert chat["reason"] == "big-chat context window 8,192 < required 16,384"
    worktrees = subprocess.run(["git", "-C", str(base_catalog), "worktree", "list"], capture_output=True, text=True)
    assert len(worktrees.stdout.strip().splitlines()) == 1, "the temporary worktree is removed"
    assert run_cli("-C", str(base_catalog), "diff", "--git", "no-such-ref").exit_code == 2


def test_github_annotations_and_pre_commit_hooks(base_catalog: Path, tmp_path: Path):
    compile_into(base_catalog, tmp_path / "before")
    CHANGES["ram-reassigns-a-role"](base_catalog)
    compile_into(base_catalog, tmp_path / "after")
    result = run_cli("diff", str(tmp_path / "before"), str(tmp_path / "after"), "--format", "github")
    assert result.stdout.startswith("::notice title=hostfit diff: box-8::host box-8:%0A"
                                    "  host ram_mb: 8,192 -> 4,096 MiB")
    import yaml
    hooks = yaml.safe_load((Path(__file__).parent.parent / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"]: h["entry"] for h in hooks} == {"hostfit-validate": "hostfit validate",
                                                      "hostfit-check": "hostfit build --all --check"}


def test_schema_command_prints_the_shipped_schema():
    result = run_cli("schema", "catalog")
    assert json.loads(result.stdout)["$id"] == "urn:hostfit:schema:catalog.v2"


def test_the_readme_diff_driver_recipe_works(tmp_path: Path, base_catalog: Path):
    import os
    import sys

    repo = tmp_path / "repo"
    compile_into(base_catalog, repo / "out")
    (repo / ".gitattributes").write_text("out/*/models.json diff=hostfit\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    CHANGES["ram-reassigns-a-role"](base_catalog)
    compile_into(base_catalog, repo / "out")
    command = f'sh -c "{sys.executable} -m compiler.cli diff \\"\\$2\\" \\"\\$5\\" || true" hostfit-diff'
    git(repo, "config", "diff.hostfit.command", command)
    shown = subprocess.run(["git", "-C", str(repo), "diff"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert "chat: big-chat -> small-chat: box-8 now has 2.0 GiB usable (was 6.0)" in shown.stdout


def test_a_pick_turning_tight_is_shown(base_catalog: Path, tmp_path: Path):
    add_layer(base_catalog, "20-chat.yaml", "roles:\n  chat: {prefer: [big-chat]}\n")
    compile_into(base_catalog, tmp_path / "before")
    profile = base_catalog / "profiles" / "base.yaml"
    profile.write_text(profile.read_text().replace("max_fill: 0.95", "max_fill: 0.9"))  # big-chat fills ~92% of box-8
    compile_into(base_catalog, tmp_path / "after")
    result = run_cli("diff", str(tmp_path / "before"), str(tmp_path / "after"))
    assert "  chat fit: comfortable -> tight" in result.stdout.splitlines(), result.stdout


def test_a_role_s_gpu_settings_and_speed_changing_are_shown(tmp_path: Path):
    """The same pick with other -ngl / --n-cpu-moe / tensor split (what llama-server.sh passes) or another
    estimated speed is a change a reviewer must see, not a role listed with nothing under it."""
    from conftest import REPO

    before = json.loads((REPO / "out" / "workstation" / "models.json").read_text())
    after = json.loads(json.dumps(before))
    chat = after["roles"]["chat"]
    assert chat["placement"] == "split" and "cpu_moe_layers" in chat
    chat["gpu_layers"] += 1
    chat["cpu_moe_layers"] += 2
    chat["tokens_per_s"] = round(chat["tokens_per_s"] / 2, 1)
    for side, document in (("before", before), ("after", after)):
        (tmp_path / side).mkdir()
        (tmp_path / side / "models.json").write_text(json.dumps(document))
    result = run_cli("diff", str(tmp_path / "before"), str(tmp_path / "after"))
    lines = result.stdout.splitlines()
    old, new = before["roles"]["chat"], chat
    assert f"  chat gpu_layers: {old['gpu_layers']} -> {new['gpu_layers']}" in lines, result.stdout
    assert f"  chat cpu_moe_layers: {old['cpu_moe_layers']} -> {new['cpu_moe_layers']}" in lines, result.stdout
    assert f"  chat tokens_per_s: {old['tokens_per_s']:g} -> {new['tokens_per_s']:g}" in lines, result.stdout
    changes = json.loads(run_cli("diff", "--format", "json", str(tmp_path / "before"), str(tmp_path / "after")).stdout)
    (role,) = changes["hosts"][0]["roles"]
    assert role["cpu_moe_layers"] == {"old": old["cpu_moe_layers"], "new": new["cpu_moe_layers"]}


def test_a_models_memory_is_worded_as_every_memory_line():
    from compiler.diff import HostDiff, render_text
    changed = HostDiff("box", "changed", fields=[{"model": "m", "field": "memory_mb", "old": 6211, "new": 6500},
                                                 {"model": "m", "field": "context_window", "old": 4096, "new": 8192}])
    assert render_text([changed]).splitlines()[1:] == ["  m.memory_mb: 6,211 -> 6,500 MiB (+289)",
                                                       "  m.context_window: 4096 -> 8192"]
