"""Memory: the documented formula, method by method."""

from __future__ import annotations

import pytest

from compiler.memory import MIB, RUNTIME_OVERHEAD_MB, estimate

QWEN7 = {"provider": "local", "params_b": 7.62, "quantization": "Q5_K_M", "context_window": 32768,
         "arch": {"layers": 28, "kv_heads": 4, "head_dim": 128}}


def test_declared_wins():
    assert estimate({**QWEN7, "memory": {"ram_mb": 9000}}, 4096).to_dict()["mb"] == 9000
    assert estimate({**QWEN7, "memory": {"ram_mb": 9000}}, 4096).method == "declared"


def test_params_times_bits_per_weight_plus_exact_kv():
    need = estimate(QWEN7, 8192)
    weights = 7.62e9 * 5.68 / 8 / MIB
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
