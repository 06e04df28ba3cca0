"""Importers over the full real catalogs of tests/data (see tests/data/SOURCES.md): counts, exact sample values, and
that every imported layer compiles with the shipped roles for every shipped host."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
import yaml

from compiler import importers
from compiler.cli import IMPORT_FORMATS
from compiler.options import BuildOptions
from compiler.pipeline import Project

from conftest import REPO, copy_catalog, run_cli

REALDATA = REPO / "tests" / "data"


def imported(fmt: str, path: Path):
    result = importers.run(fmt, path, path.name)
    return result, yaml.safe_load(importers.render(result))["models"]


REAL_FILES = {"llmfit": "hf_models.json", "litellm": "model_prices_and_context_window.json",
              "openrouter": "openrouter_models.json", "gpt4all": "models3.json"}


@functools.cache
def real(fmt: str):
    """Each real file imported once per test session."""
    return imported(fmt, REALDATA / REAL_FILES[fmt])


def counts(result) -> dict:
    return {reason: len(names) for reason, names in result.skipped.items()}


def test_cli_formats_match_the_importers():
    assert IMPORT_FORMATS == importers.FORMATS


def test_llmfit_artifacts_are_what_a_runtime_could_fetch():
    """llmfit rates every repository as if a Q4_K_M GGUF of it were at hand: the import points at the
    GGUF repository llmfit names, or says the checkpoint is 16-bit safetensors; MLX names their bits."""
    _, models = real("llmfit")
    converted = models["qwen/qwen2.5-7b-instruct"]  # gguf_sources: bartowski's first
    assert converted["artifact"] == {"format": "gguf", "repo": "bartowski/Qwen2.5-7B-Instruct-GGUF"}
    assert converted["hf_repo"] == "Qwen/Qwen2.5-7B-Instruct" and converted["quantization"] == "Q4_K_M"
    checkpoint = models["baidu/ernie-4.5-21b-a3b-thinking"]  # no GGUF named anywhere
    assert checkpoint["artifact"] == {"format": "safetensors", "repo": "baidu/ERNIE-4.5-21B-A3B-Thinking"}
    assert checkpoint.get("quantization") is None  # sized as 16-bit weights, not llmfit's Q4_K_M
    assert models["unsloth/qwen3-14b-gguf"]["artifact"]["format"] == "gguf"  # a GGUF repository itself
    mlx = models["lmstudio-community/ernie-4.5-21b-a3b-mlx-6bit"]
    assert (mlx["artifact"]["format"], mlx["quantization"]) == ("mlx", "MLX_6BIT")


def test_llmfit():
    result, models = real("llmfit")
    assert len(models) == 1788
    assert counts(result) == {"test repository with random weights": 38,
                              "implausible context window (below 128 or above 10,000,000 tokens)": 26}
    assert result.suffixed == [("microsoft/Phi-3-mini-4k-instruct", "microsoft/phi-3-mini-4k-instruct-2")]
    qwen = models["qwen/qwen2.5-coder-7b-instruct"]
    assert (qwen["params_b"], qwen["context_window"], qwen["quantization"]) == (7.615617, 32768, "Q4_K_M")
    assert qwen["arch"] == {"layers": 28, "kv_heads": 4, "head_dim": 128, "hidden_size": 3584,
                            "heads": 28, "vocab_size": 152064}
    assert qwen["memory"] == {"ram_mb": 4404} and qwen["workloads"] == ["code", "chat", "summarization", "extraction"]
    assert qwen["x-llmfit"]["recommended_ram_gb"] == 7.1
    raw = next(e for e in json.loads((REALDATA / "hf_models.json").read_text()) if e["name"] == "Qwen/Qwen2.5-Coder-7B-Instruct")
    assert qwen["downloads"] == raw["hf_downloads"] > 0  # best_fit's tie-breaker, a documented field
    oss = models["openai/gpt-oss-120b"]
    assert oss["arch"]["experts"] == 128 and oss["arch"]["active_params_b"] == 9.5954
    assert oss["x-llmfit"]["is_moe"] is True
    assert models["thebloke/mistral-7b-instruct-v0.2-awq"]["quantization"] == "AWQ_4BIT"
    assert "bigscience/bigscience-small-testing" in result.skipped[
        "implausible context window (below 128 or above 10,000,000 tokens)"]


def test_importers_mark_code_specialists_and_llmfit_keeps_release_dates():
    """A code model by its model name (not its publisher's, which llmfit's use case follows); a general
    model whose use case also names code (phi-4) is not one. llmfit's release_date is kept for best_fit."""
    _, models = real("llmfit")
    for coder in ("qwen/qwen3-coder-next", "deepseek-ai/deepseek-coder-v2-lite-instruct",
                  "lmstudio-community/devstral-small-2507-mlx-4bit", "ibm-granite/granite-8b-code-instruct-128k"):
        assert models[coder]["specialty"] == "code", coder
    for general in ("microsoft/phi-4", "qwen/qwen3.6-35b-a3b", "coder3101/gemma-4-26b-a4b-it-heretic"):
        assert "specialty" not in models[general], general
    assert "code" in models["microsoft/phi-4"]["workloads"]  # it still serves code roles
    assert (models["qwen/qwen3.6-35b-a3b"]["release_date"], models["qwen/qwen3.5-35b-a3b"]["release_date"]) == \
        ("2026-04-15", "2026-02-24")
    assert "release_date" not in models["qwen/qwen3.6-35b-a3b"]["x-llmfit"]
    _, models = real("gpt4all")
    assert {m for m, model in models.items() if model.get("specialty") == "code"} == {
        "qwen2.5-coder-7b-instruct-q4_0", "replit-code-v1_5-3b-newbpe-q4_0", "rift-coder-v0-7b-q4_0",
        "starcoder-newbpe-q4_0"}


def test_litellm():
    result, models = real("litellm")
    assert len(models) == 2547
    skipped = counts(result)
    assert skipped["documentation of the format, not a model"] == 1
    assert skipped["fallback rules, not a model"] == 1
    assert skipped["no mode (a pricing tier, not a model)"] == 8
    assert skipped["mode 'image_generation' is not a text workload"] == 209
    assert result.merged == [("together_ai/BAAI/bge-base-en-v1.5", "together_ai/baai/bge-base-en-v1.5")]
    mini = models["gpt-4o-mini"]
    assert mini == {"name": "gpt-4o-mini", "context_window": 128000, "provider": "openai",
                    "workloads": ["chat", "summarization", "extraction"], "type": "vision-language",
                    "capabilities": {"tools": True, "vision": True},
                    "pricing": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}, "api_key_env": "OPENAI_API_KEY"}
    assert models["azure/eu/gpt-4o-2024-08-06"]["deprecation_date"] == "2026-02-27"
    assert models["azure/eu/gpt-4o-2024-08-06"]["provider"] == "azure"
    assert any(m["workloads"] == ["embedding"] for m in models.values())
    assert all(isinstance(m.get("context_window", 1), int) for m in models.values()), "float limits become ints"


def test_openrouter():
    result, models = real("openrouter")
    assert len(models) == 331 and counts(result) == {"router model (price -1: routes to other models)": 5}
    flash = models["deepseek/deepseek-v4-flash-0731"]
    assert flash["pricing"] == {"input_per_mtok": 0.14, "output_per_mtok": 0.28}
    assert flash["hf_repo"] == "deepseek-ai/DeepSeek-V4-Flash-0731" and flash["context_window"] == 1048576
    assert flash["api_key_env"] == "OPENROUTER_API_KEY" and flash["capabilities"]["tools"] is True
    latest = models["anthropic/claude-opus-latest"]
    assert latest["x-openrouter"]["id"] == "~anthropic/claude-opus-latest"
    assert sum(1 for model_id in models if model_id.endswith(":free")) == 14
    assert all("hf_repo" not in m or "/" in m["hf_repo"] for m in models.values()), "empty ids are dropped"


def test_gpt4all():
    result, models = real("gpt4all")
    assert len(models) == 32 and result.skipped == {}
    reasoner = models["qwen2.5-coder-7b-instruct-q4_0"]
    assert (reasoner["name"], reasoner["params_b"], reasoner["quantization"]) == ("Reasoner v1", 8.0, "Q4_0")
    assert reasoner["memory"] == {"ram_mb": 8192} and reasoner["family"] == "qwen2"
    assert reasoner["artifact"] == {
        "format": "gguf", "file": "qwen2.5-coder-7b-instruct-q4_0.gguf", "size_bytes": 4431390720,
        "md5": "a54c08a7b90e4029a8c2ab5b5dc936aa",
        "url": "https://huggingface.co/Qwen/Qwen2.5-Coder-7B-Instruct-GGUF/resolve/main/qwen2.5-coder-7b-instruct-q4_0.gguf"}
    assert reasoner["description"].startswith("Based on Qwen2.5-Coder 7B Uses built-in javascript")
    embed = models["nomic-embed-text-v1.f16"]
    assert embed["workloads"] == ["embedding"] and embed["params_b"] == 0.137 and embed["quantization"] == "F16"
    assert models["all-minilm-l6-v2-f16"]["status"] == "retired"
    assert sum(1 for m in models.values() if "sha256" in m["artifact"]) == 4
    assert sum(1 for m in models.values() if "md5" in m["artifact"]) == 28


def test_gpt4all_older_models2_layout(tmp_path: Path):
    old = []
    for entry in json.loads((REALDATA / "models3.json").read_text())[:6]:
        entry = {k: v for k, v in entry.items() if k not in ("chatTemplate", "sha256sum", "removedIn")}
        old.append({**entry, "isDefault": "true", "bestLLaMA": "false"})
    path = tmp_path / "models2.json"
    path.write_text(json.dumps(old))
    result, models = imported("gpt4all", path)
    assert len(models) == 6 and result.unmapped["isDefault"] == 6
    assert models["qwen2.5-coder-7b-instruct-q4_0"]["params_b"] == 8.0


def test_registry(tmp_path: Path):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps([
        {"ID": "Qwen2.5-Coder-3B", "Name": "Qwen2.5 Coder 3B", "Family": "Qwen", "Parameters": "3B",
         "Quantization": "q4_k_m", "ContextWindow": 32768, "FileSizeMB": 1930, "RAMRequiredMB": 3072,
         "HuggingFaceRepo": "Qwen/Qwen2.5-Coder-3B-Instruct-GGUF", "Filename": "qwen2.5-coder-3b-instruct-q4_k_m.gguf",
         "SHA256": "A" * 64, "Recommended": True, "Description": "small coder", "Tags": "code, chat"},
        {"ID": "SmolLM2-135M", "Name": "SmolLM2", "Family": "llama", "Parameters": "135M", "Quantization": "Q8_0",
         "ContextWindow": 8192, "FileSizeMB": 145, "RAMRequiredMB": 512, "HuggingFaceRepo": "",
         "Filename": "smollm2-135m-q8_0.gguf", "SHA256": "not-a-hash", "Recommended": False, "Tags": ["tiny"]},
        {"ID": "broken", "ContextWindow": 7},
    ]))
    result, models = imported("registry", path)
    assert counts(result) == {"implausible context window (below 128 or above 10,000,000 tokens)": 1}
    coder = models["qwen2.5-coder-3b"]
    assert coder["params_b"] == 3.0 and coder["quantization"] == "Q4_K_M" and coder["recommended"] is True
    assert coder["workloads"] == ["chat", "code", "summarization", "extraction"] and coder["memory"] == {"ram_mb": 3072}
    assert coder["artifact"]["sha256"] == "a" * 64 and coder["artifact"]["size_bytes"] == 1930 * 1024 * 1024
    assert coder["specialty"] == "code"  # its name says coder: best_fit gives chat to a general model first
    smol = models["smollm2-135m"]
    assert smol["params_b"] == 0.135 and "sha256" not in smol["artifact"] and "repo" not in smol["artifact"]
    assert "specialty" not in smol
    assert result.unmapped["SHA256 (not 64 hex digits)"] == 1


@pytest.mark.parametrize("fmt, name", [("llmfit", "hf_models.json"),
                                       ("litellm", "model_prices_and_context_window.json"),
                                       ("openrouter", "openrouter_models.json"), ("gpt4all", "models3.json")])
def test_every_import_compiles_for_every_shipped_host(fmt: str, name: str, tmp_path: Path):
    catalog = copy_catalog(REPO, tmp_path / "catalog")
    output = catalog / "sources" / "50-imported.yaml"
    result = run_cli("import", fmt, str(REALDATA / name), "-o", str(output))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("imported ") and f"wrote {output}" in result.stdout
    first = output.read_bytes()
    assert run_cli("import", fmt, str(REALDATA / name), "-o", str(output)).exit_code == 0
    assert output.read_bytes() == first, "imports are deterministic"
    report = Project(catalog).compile(BuildOptions(all_hosts=True), write=False)
    assert report.ok, report.errors[:3]
    assert len(report.results) == 5


def test_import_to_stdout_and_bad_input(tmp_path: Path):
    result = run_cli("import", "gpt4all", str(REALDATA / "models3.json"))
    assert result.exit_code == 0 and result.stdout.startswith("# Imported by `hostfit import gpt4all models3.json`")
    assert result.stderr.startswith("imported 32 models")
    wrong = run_cli("import", "openrouter", str(REALDATA / "models3.json"))
    assert wrong.exit_code == 1 and "error[E015]: not a catalog in openrouter format" in wrong.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [')
    bad = run_cli("import", "openrouter", str(broken))
    assert bad.exit_code == 1 and "broken.json:1:11: error[E002]" in bad.stderr
    shutil.rmtree(tmp_path)


REGISTRY_VARIANTS = REPO / "tests" / "fixtures" / "registry" / "qwen2.5-coder-14b.json"


def test_registry_files_of_one_model_import_as_variants_each_host_compiles_its_own(tmp_path: Path):
    """Three quantized files of Qwen2.5-Coder-14B (one repository, one name) are one model with three
    variants; a 16 GB laptop compiles to Q4_K_M, a 64 GB host with a 24 GB GPU to Q8_0."""
    root = tmp_path / "catalog"
    (root / "sources").mkdir(parents=True)
    result = run_cli("import", "registry", str(REGISTRY_VARIANTS), "-o", str(root / "sources" / "50-imported.yaml"))
    assert result.exit_code == 0, result.output
    assert "imported as variants: Qwen2.5-Coder-14B-Instruct (Q4_K_M, Q5_K_M, Q8_0)" in result.stdout
    model = yaml.safe_load((root / "sources" / "50-imported.yaml").read_text())["models"]
    assert list(model) == ["qwen2.5-coder-14b-instruct"]
    coder = model["qwen2.5-coder-14b-instruct"]
    assert (coder["params_b"], coder["context_window"], coder["family"]) == (14.77, 32768, "qwen2")
    assert "artifact" not in coder and "quantization" not in coder  # each file is its variant's
    assert {q: v["artifact"]["file"] for q, v in coder["variants"].items()} == {
        q: f"qwen2.5-coder-14b-instruct-{q.lower()}.gguf" for q in ("Q4_K_M", "Q5_K_M", "Q8_0")}
    # the registry states no geometry; a later layer adds the published one (as `hostfit inspect --write`
    # would from the file), so the KV cache is computed rather than bounded
    (root / "sources" / "60-arch.yaml").write_text(
        "schema_version: 2\nkind: catalog\nmodels:\n  qwen2.5-coder-14b-instruct:\n    arch: {layers: 48, heads: 40, "
        "kv_heads: 8, head_dim: 128, hidden_size: 5120, vocab_size: 152064}\n")
    (root / "sources" / "10-roles.yaml").write_text(
        "schema_version: 2\nkind: catalog\nroles:\n  code:\n    workload: code\n    required: true\n"
        "    requires: {context_min: 12288, speed_min: 2}\n")
    (root / "sources" / "hosts.yaml").write_text(
        "schema_version: 2\nkind: hosts\nhosts:\n  laptop-16: {ram_gb: 16, memory_class: ddr4}\n"
        "  workstation: {ram_gb: 64, gpus: [{name: RTX 4090, vram_gb: 24, vendor: nvidia}]}\n")
    built = run_cli("-C", str(root), "build", "--all")
    assert built.exit_code == 0, built.output
    picks = {host: json.loads((root / "out" / host / "models.json").read_text())["roles"]["code"]
             for host in ("laptop-16", "workstation")}
    assert {host: (pick["model"], pick["variant"]) for host, pick in picks.items()} == {
        "laptop-16": ("qwen2.5-coder-14b-instruct:q4_k_m", "Q4_K_M"),
        "workstation": ("qwen2.5-coder-14b-instruct:q8_0", "Q8_0")}


def test_group_variants_keeps_each_files_facts_and_separates_models_whose_facts_differ(tmp_path: Path):
    """Each variant keeps its file's size, checksum and memory; entries whose shared facts differ (a
    context window), or that are two files of one quantization, stay separate models, and the summary
    says why. Sizes and checksums here are synthetic test values."""
    def entry(name, quant, context=32768, repo="bartowski/Qwen2.5-7B-Instruct-GGUF", size=None, sha=""):
        return {"ID": f"{name}-{quant}", "Name": name, "Family": "Qwen2", "Parameters": "7.62B",
                "Quantization": quant, "ContextWindow": context, "FileSizeMB": size,
                "RAMRequiredMB": size and size + 512,
                "HuggingFaceRepo": repo, "Filename": f"{name}-{quant}.gguf", "SHA256": sha, "Tags": "chat"}

    path = tmp_path / "registry.json"
    path.write_text(json.dumps([
        entry("Qwen2.5-7B-Instruct", "Q4_K_M", size=1000, sha="1" * 64),
        entry("Qwen2.5-7B-Instruct", "Q8_0", size=2000, sha="2" * 64),
        entry("Qwen2.5-7B-Instruct", "Q6_K", repo="Qwen/Qwen2.5-7B-Instruct-GGUF"),  # another repository: alone
        entry("Qwen2.5-3B-Instruct", "Q4_K_M", context=32768),
        entry("Qwen2.5-3B-Instruct", "Q8_0", context=8192),  # a shared fact differs: two models
        entry("Qwen2.5-1.5B-Instruct", "Q4_K_M"), entry("Qwen2.5-1.5B-Instruct", "q4_k_m"),
    ]))
    result, models = imported("registry", path)
    seven = models["qwen2.5-7b-instruct"]
    assert seven["variants"] == {
        "Q4_K_M": {"artifact": {"format": "gguf", "repo": "bartowski/Qwen2.5-7B-Instruct-GGUF", "revision": "main",
                                "file": "Qwen2.5-7B-Instruct-Q4_K_M.gguf", "size_bytes": 1000 << 20,
                                "sha256": "1" * 64},
                   "memory": {"ram_mb": 1512}},
        "Q8_0": {"artifact": {"format": "gguf", "repo": "bartowski/Qwen2.5-7B-Instruct-GGUF", "revision": "main",
                              "file": "Qwen2.5-7B-Instruct-Q8_0.gguf", "size_bytes": 2000 << 20, "sha256": "2" * 64},
                 "memory": {"ram_mb": 2512}}}
    assert seven["params_b"] == 7.62 and "memory" not in seven and "quantization" not in seven
    assert models["qwen2.5-7b-instruct-q6_k"]["artifact"]["repo"] == "Qwen/Qwen2.5-7B-Instruct-GGUF"
    assert {models[m]["context_window"] for m in ("qwen2.5-3b-instruct-q4_k_m", "qwen2.5-3b-instruct-q8_0")} == \
        {32768, 8192}
    assert "variants" not in models["qwen2.5-1.5b-instruct-q4_k_m"]
    assert result.ungrouped == [
        ("Qwen2.5-3B-Instruct-Q4_K_M, Qwen2.5-3B-Instruct-Q8_0", "they differ in context_window"),
        ("Qwen2.5-1.5B-Instruct-Q4_K_M, Qwen2.5-1.5B-Instruct-q4_k_m", "two files of one quantization")]
    assert "not imported as variants of one model: Qwen2.5-3B-Instruct-Q4_K_M, Qwen2.5-3B-Instruct-Q8_0: " \
        "they differ in context_window" in result.summary()
