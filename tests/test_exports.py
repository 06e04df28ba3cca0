"""Exports: the built-in templates for every shipped host (snapshots), LiteLLM's documented config
shape, catalog templates, per-host choice, --check, and data that is never rendered as a template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from compiler import exports
from compiler.options import BuildOptions
from compiler.pipeline import Project

from conftest import REPO, add_layer, run_cli

HOSTS = ["edge-4", "laptop-8", "laptop-16", "laptop-32", "workstation"]


@pytest.fixture(scope="module")
def shipped():
    report = Project(REPO).compile(BuildOptions(all_hosts=True), write=False)
    assert report.ok
    return {r.host.name: r for r in report.results}


@pytest.mark.parametrize("host", HOSTS)
def test_exports_of_every_shipped_host(shipped, host, snapshot):
    files = shipped[host].exports
    assert "MODELS.md" in files and "litellm-config.yaml" in files and "llama-server.sh" in files
    rendered = "\n".join(f"==> {name} <==\n{data.decode()}" for name, data in sorted(files.items()))
    assert rendered == snapshot
    committed = REPO / "out" / host / "exports"
    assert {str(p.relative_to(committed)): p.read_bytes() for p in committed.rglob("*") if p.is_file()} == files


@pytest.mark.parametrize("host", HOSTS)
def test_litellm_config_has_litellms_documented_shape(shipped, host):
    config = yaml.safe_load(shipped[host].exports["litellm-config.yaml"])
    names = set()
    for entry in config["model_list"]:
        assert set(entry) == {"model_name", "litellm_params", "model_info"}
        params = entry["litellm_params"]
        assert "/" in params["model"], "LiteLLM model strings are provider/model"
        if "api_key" in params:
            assert params["api_key"].startswith("os.environ/"), "keys are named, never written"
        names.add(entry["model_name"])
    for rule in config["router_settings"]["fallbacks"]:
        ((primary, chain),) = rule.items()
        assert primary in names and set(chain) <= names
    roles = shipped[host].output["roles"]
    assert {name for name, role in roles.items() if role["model"]} <= names


def test_values_are_data_never_templates(base_catalog: Path):
    add_layer(base_catalog, "20-evil.yaml",
              "models:\n  big-chat: {description: \"{{ 7 * 7 }} {% for x in range(3) %}x{% endfor %}\"}\n")
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-32").exit_code == 0
    text = (base_catalog / "out" / "box-32" / "exports" / "MODELS.md").read_text()
    assert "{{ 7 \\* 7 }} {% for x in range(3) %}x{% endfor %}" in text and "49" not in text, "(`*` escaped: Markdown)"


def test_catalog_templates_override_and_add_and_hosts_choose(base_catalog: Path):
    templates = base_catalog / "templates"
    templates.mkdir()
    (templates / "MODELS.md.j2").write_text("custom {{ host.name }}: {{ roles | length }} roles\n")
    (templates / "vllm.args.j2").write_text("{% for n, r in roles | dictsort %}{{ n }}={{ r.model }}\n{% endfor %}")
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("box-8: {ram_gb: 8, profiles: [base]}",
                                               "box-8: {ram_gb: 8, profiles: [base], exports: [models-md, vllm.args]}"))
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    box8 = base_catalog / "out" / "box-8" / "exports"
    assert sorted(p.name for p in box8.iterdir()) == ["MODELS.md", "vllm.args"]
    assert (box8 / "MODELS.md").read_text() == "custom box-8: 2 roles\n"
    assert (box8 / "vllm.args").read_text() == "chat=big-chat\nsummarization=small-chat\n"
    assert (base_catalog / "out" / "box-32" / "exports" / "litellm-config.yaml").exists()


def test_check_sees_stale_and_extra_exports(base_catalog: Path):
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    extra = base_catalog / "out" / "box-8" / "exports" / "leftover.txt"
    extra.write_text("old\n")
    result = run_cli("-C", str(base_catalog), "build", "--all", "--check")
    assert result.exit_code == 1 and "stale: out/box-8/exports/leftover.txt" in result.stderr
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    assert not extra.exists(), "a build removes exports it no longer writes"
    assert run_cli("-C", str(base_catalog), "build", "--all", "--check").exit_code == 0


def test_unknown_export_and_broken_template(base_catalog: Path):
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("box-8: {ram_gb: 8, profiles: [base]}",
                                               "box-8: {ram_gb: 8, profiles: [base], exports: [litelm]}"))
    result = run_cli("-C", str(base_catalog), "build", "--all")
    assert result.exit_code == 1 and "error[E214]: unknown export 'litelm'" in result.stderr
    (base_catalog / "templates").mkdir()
    (base_catalog / "templates" / "MODELS.md.j2").write_text("{{ no_such_name }}\n")
    hosts.write_text(hosts.read_text().replace("exports: [litelm]", "exports: [models-md]"))
    result = run_cli("-C", str(base_catalog), "build", "--all")
    assert result.exit_code == 1 and "error[E215]: export 'models-md' cannot be rendered" in result.stderr
    assert "'no_such_name' is undefined" in result.stderr


def test_exports_are_deterministic():
    document = json.loads((REPO / "out" / "workstation" / "models.json").read_text())
    assert exports.render(document, None, None) == exports.render(document, None, None)


def test_editing_a_template_rebuilds(base_catalog: Path):
    templates = base_catalog / "templates"
    templates.mkdir()
    (templates / "MODELS.md.j2").write_text("first\n")
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    (templates / "MODELS.md.j2").write_text("second, and longer\n")
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    assert (base_catalog / "out" / "box-8" / "exports" / "MODELS.md").read_text() == "second, and longer\n"
