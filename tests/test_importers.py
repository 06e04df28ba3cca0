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
    smol = models["smollm2-135m"]
    assert smol["params_b"] == 0.135 and "sha256" not in smol["artifact"] and "repo" not in smol["artifact"]
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
