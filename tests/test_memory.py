"""Memory: the documented formula, method by method; a declaration may raise the need, never lower it (W301)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from compiler import importers
from compiler.load import load_file
from compiler.memory import MIB, RUNTIME_OVERHEAD_MB, declared_shortfall, estimate
from compiler.merge import Layer, merge_layers
from compiler.resolve import resolve

from conftest import REPO, add_layer, run_cli

QWEN7 = {"provider": "local", "params_b": 7.62, "quantization": "Q5_K_M", "context_window": 32768,
         "arch": {"layers": 28, "kv_heads": 4, "head_dim": 128}}


def test_a_declaration_above_the_estimate_wins():
    need = estimate({**QWEN7, "memory": {"ram_mb": 9000}}, 4096)
    assert (need.mb, need.method, need.declared_mb) == (9000, "declared", 9000)
    assert need.estimated_mb == estimate(QWEN7, 4096).mb < 9000  # the estimate is still computed, and shown
    assert need.to_dict()["declared_mb"] == 9000


def test_a_declaration_below_the_estimate_does_not_lower_the_need():
    alone = estimate(QWEN7, 8192)
    need = estimate({**QWEN7, "memory": {"ram_mb": 2000}}, 8192)
    assert (need.mb, need.method, need.declared_mb) == (alone.mb, "estimated", 2000) and need.mb > 2000
    sized = {**QWEN7, "artifact": {"size_bytes": 5 * 1024 * MIB}}
    assert estimate({**sized, "memory": {"ram_mb": 100}}, 4096).method == "gguf"
    assert estimate({**sized, "memory": {"ram_mb": 100}}, 4096).mb == estimate(sized, 4096).mb
    assert declared_shortfall(need) and not declared_shortfall(estimate({**QWEN7, "memory": {"ram_mb": 9000}}, 4096))
    assert "declared_mb" not in alone.to_dict()  # outputs of catalogs without declarations keep their shape


def test_a_declaration_far_below_the_estimate_is_w301_once_per_model(base_catalog: Path):
    layer = add_layer(base_catalog, "30-declared.yaml",
                      "models:\n  big-chat:\n    memory: {ram_mb: 2048}\n  small-chat:\n    memory: {ram_mb: 3000}\n")
    expected = (f"{layer.relative_to(base_catalog)}:5:14: warning[W301]: 'big-chat' declares memory.ram_mb 2,048 MiB, "
                "65% below hostfit's estimate of 5,874 MiB at 4,096 tokens of context "
                "(weights 4,850 + kv 512 + overhead 512); it needs the estimate")
    for command in (["validate"], ["build", "--all"]):
        result = run_cli("-C", str(base_catalog), *command)
        assert result.exit_code == 0, result.output
        assert expected in result.stderr, result.stderr
        assert result.stderr.count("W301") == 1, "once per model, not per host; small-chat is within 15%"
    # the need is the estimate on both hosts: big-chat (5,874 MiB) still fits box-8's 6 GiB
    for host in ("box-8", "box-32"):
        document = json.loads((base_catalog / "out" / host / "models.json").read_text())
        assert (document["models"]["big-chat"]["memory_mb"], document["models"]["big-chat"]["memory_method"]) == \
            (5874, "estimated")
    shown = run_cli("-C", str(base_catalog), "explain", "box-8", "chat").stdout
    assert "big-chat: largest_fit: fits (cpu) [5,874 MiB: estimated 5,874 = weights 4,850 + kv 512 (exact) + overhead 512 " \
           "at 4,096 tokens; wins over the declared 2,048]" in shown


def test_a_declaration_above_the_estimate_can_make_a_model_not_fit(base_catalog: Path):
    add_layer(base_catalog, "30-declared.yaml", "models:\n  big-chat:\n    memory: {ram_mb: 7000}\n")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert result.exit_code == 0 and "W301" not in result.stderr, result.output
    document = json.loads((base_catalog / "out" / "box-8" / "models.json").read_text())
    assert document["roles"]["chat"]["model"] == "small-chat"
    shown = run_cli("-C", str(base_catalog), "explain", "box-8", "chat").stdout
    assert "big-chat: needs 7,000 MiB, 6,144 MiB usable [7,000 MiB: declared 7,000 wins over the estimate 5,874 = " \
           "weights 4,850 + kv 512 (exact) + overhead 512 at 4,096 tokens]" in shown


def test_llmfit_min_ram_gb_is_weights_only_and_never_the_need(tmp_path: Path):
    """Nemotron-Super-49B as llmfit ships it: min_ram_gb 27.9 (its weights at Q4), while its 80 layers of
    64 KV heads alone need 20 GiB of f16 cache at 8k. Imported and compiled, the need is the estimate."""
    [entry] = [e for e in json.loads((REPO / "tests" / "data" / "hf_models.json").read_text())
               if e["name"] == "nvidia/Llama-3_3-Nemotron-Super-49B-v1"]
    assert entry["min_ram_gb"] == 27.9
    source = tmp_path / "hf_models.json"
    source.write_text(json.dumps([entry]))
    result = importers.run("llmfit", source, source.name)
    [(model_id, model)] = yaml.safe_load(importers.render(result))["models"].items()
    assert model["memory"] == {"ram_mb": 28570}  # the importer keeps writing the declaration
    layer = tmp_path / "10-llmfit.yaml"
    layer.write_text(importers.render(result))
    merged = merge_layers([Layer("sources", load_file(layer, "sources/10-llmfit.yaml", "sources"))])
    catalog, problems = resolve(merged)
    need = estimate(catalog.models[model_id], 8192)
    embedding = 128256 * 8192  # vocab_size x hidden_size: the output matrix, at Q6_K in a Q4_K_M file
    weights = math.ceil(((49.867145216e9 - embedding) * 4.85 + embedding * 6.5625) / 8 / MIB + 128256 * 80 / MIB)
    assert (need.method, need.weights_mb, need.kv_mb) == ("estimated", weights, 20480)  # 2 x 80 x 8k x 64 x 128 x 2
    assert need.mb == weights + 20480 + RUNTIME_OVERHEAD_MB > 49000
    [warning] = [p for p in problems if p.code == "W301"]
    assert (warning.path, warning.severity) == ("sources/10-llmfit.yaml", "warning") and warning.line > 1
    assert "declares memory.ram_mb 28,570 MiB" in warning.message


def test_params_times_bits_per_weight_plus_exact_kv():
    need = estimate(QWEN7, 8192)
    # no vocab_size/hidden_size: the output matrix is assumed 30% of the parameters, at most 1.1B, at Q6_K
    weights = ((7.62e9 - 1.1e9) * 5.7 + 1.1e9 * 6.5625) / 8 / MIB
    assert 2 * 28 * 8192 * 4 * 128 * 2 / MIB == 448  # 2 x layers x context x kv_heads x head_dim x f16
    assert need.method == "estimated" and need.kv_method == "exact"
    assert need.weights_mb == pytest.approx(weights, abs=1)
    assert need.kv_mb == 448
    assert need.mb == need.weights_mb + 448 + RUNTIME_OVERHEAD_MB


def test_artifact_size_is_the_weights_when_known():
    need = estimate({**QWEN7, "artifact": {"size_bytes": 5 * 1024 * MIB}}, 4096)
    assert need.method == "gguf" and need.weights_mb == 5120


def test_context_is_capped_by_the_model_window_and_kv_falls_back_to_a_heuristic():
    small = {"provider": "huggingface", "params_b": 0.4, "quantization": "F32", "context_window": 1024}
    need = estimate(small, 8192)
    assert need.context == 1024 and need.kv_method == "heuristic"
    assert need.weights_mb == pytest.approx(0.4e9 * 4 / MIB, abs=1)


def test_unknown_quantization_is_assumed_unquantized_and_cloud_needs_nothing():
    assert estimate({"provider": "local", "params_b": 1, "quantization": "WEIRD9"}, 1024).weights_mb == \
        estimate({"provider": "local", "params_b": 1, "quantization": "F16"}, 1024).weights_mb
    assert estimate({"provider": "openai"}, 4096).to_dict()["method"] == "cloud"
