"""Resolve: references through case-insensitive aliases, download URLs, declared templates only."""

from __future__ import annotations

from compiler.load import load_yaml_text
from compiler.merge import Layer, merge_layers
from compiler.resolve import resolve


def resolved(text: str):
    doc = load_yaml_text("schema_version: 2\nkind: catalog\n" + text, "c.yaml")
    return resolve(merge_layers([Layer("sources", doc)]))


def test_references_resolve_through_aliases_case_insensitively():
    catalog, problems = resolved(
        "models:\n  qwen2.5-coder-7b-q5: {provider: local, workloads: [code], aliases: [Qwen-Coder]}\n"
        "roles:\n  coder: {workload: code, prefer: [QWEN-CODER], fallback: [qwen-coder]}\n")
    assert problems == []
    assert catalog.roles["coder"]["prefer"] == ["qwen2.5-coder-7b-q5"]
    assert catalog.roles["coder"]["fallback"] == ["qwen2.5-coder-7b-q5"]
    assert catalog.aliases() == {"qwen-coder": "qwen2.5-coder-7b-q5"}


def test_download_url_is_derived_from_repo_revision_and_file():
    catalog, _ = resolved(
        "models:\n  m: {provider: local, workloads: [chat],\n"
        "      artifact: {repo: Org/Repo-GGUF, revision: abc123, file: m-q4_k_m.gguf}}\n"
        "  given: {provider: local, workloads: [chat], artifact: {url: 'https://mirror.test/x.gguf', file: x.gguf}}\n")
    assert catalog.models["m"]["artifact"]["url"] == "https://huggingface.co/Org/Repo-GGUF/resolve/abc123/m-q4_k_m.gguf"
    assert catalog.models["given"]["artifact"]["url"] == "https://mirror.test/x.gguf"


def test_only_declared_templates_render_sandboxed_and_strict():
    catalog, problems = resolved(
        "models:\n  m:\n    provider: local\n    workloads: [chat]\n    description: 'literal {{ 7 * 7 }}'\n"
        "    artifact: {repo: o/r, file: m.gguf, url_template: 'https://mirror.test/{{ repo }}/{{ file }}'}\n")
    assert problems == []
    assert catalog.models["m"]["artifact"]["url"] == "https://mirror.test/o/r/m.gguf"
    assert catalog.models["m"]["description"] == "literal {{ 7 * 7 }}"
    _, problems = resolved(
        "models:\n  m:\n    provider: local\n    workloads: [chat]\n"
        "    artifact: {file: m.gguf, url_template: 'https://x.test/{{ nope }}/{{ file.__class__ }}'}\n")
    (problem,) = problems
    assert (problem.code, problem.line, problem.col) == ("E207", 7, 30)
    assert "'nope' is undefined" in problem.message
    _, problems = resolved(
        "models:\n  m:\n    provider: local\n    workloads: [chat]\n"
        "    artifact: {file: m.gguf, url_template: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"}\n")
    assert [p.code for p in problems] == ["E207"], "the sandbox refuses attribute escapes"
