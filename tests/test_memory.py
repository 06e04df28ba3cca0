"""Memory: the documented formula, method by method; a declaration may raise the need, never lower it (W301)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml

from compiler import importers
from compiler.load import load_file
from compiler.memory import (KV_CACHE_BYTES, MIB, QUANT_BITS, RUNTIME_OVERHEAD_MB, TOKENIZER_BYTES, declared_shortfall,
                             estimate, estimated_weight_bytes, kv_mib, overhead_mib)
from compiler.merge import Layer, merge_layers
from compiler.resolve import resolve

from conftest import REPO, add_layer, run_cli

QWEN7 = {"provider": "local", "params_b": 7.62, "quantization": "Q5_K_M", "context_window": 32768,
         "arch": {"layers": 28, "kv_heads": 4, "head_dim": 128}}


def _fixture_model(catalog: Path, model_id: str) -> dict:
    return yaml.safe_load((catalog / "sources" / "00-models.yaml").read_text())["models"][model_id]


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
                      "models:\n  big-chat:\n    memory: {ram_mb: 2048}\n  small-chat:\n    memory: {ram_mb: 1800}\n")
    big = estimate(_fixture_model(base_catalog, "big-chat"), 4096)
    # 8.0B at Q4_K_M with a 128,256 x 4,096 embedding: (8e9 - E) x 4.85 + E x 6.5625 bits (the output at
    # Q6_K) plus 80 bytes a token of vocabulary = 4,743 MiB; f16 KV 2 x 32 x 4,096 x 8 x 128 x 2 = 512 MiB
    assert (big.weights_mb, big.kv_mb) == (4743, 512) and big.mb == 4743 + 512 + big.overhead_mb < 6144
    expected = (f"{layer.relative_to(base_catalog)}:5:14: warning[W301]: 'big-chat' declares memory.ram_mb 2,048 MiB, "
                f"{round(100 * (1 - 2048 / big.mb))}% below hostfit's estimate of {big.mb:,} MiB at 4,096 tokens of "
                f"context (weights {big.weights_mb:,} + kv 512 + overhead {big.overhead_mb:,}); it needs the estimate")
    for command in (["validate"], ["build", "--all"]):
        result = run_cli("-C", str(base_catalog), *command)
        assert result.exit_code == 0, result.output
        assert expected in result.stderr, result.stderr
        assert result.stderr.count("W301") == 1, "once per model, not per host; small-chat is within 15%"
    # the need is the estimate on both hosts: big-chat still fits box-8's 6 GiB
    for host in ("box-8", "box-32"):
        document = json.loads((base_catalog / "out" / host / "models.json").read_text())
        assert (document["models"]["big-chat"]["memory_mb"], document["models"]["big-chat"]["memory_method"]) == \
            (big.mb, "estimated")
    shown = run_cli("-C", str(base_catalog), "explain", "box-8", "chat").stdout
    line = next(line for line in shown.splitlines() if "big-chat: best_fit" in line)  # then why it won
    assert f"big-chat: best_fit: fits (cpu, comfortable: fills {big.mb / 6144:.0%} of 6,144 MiB cpu)" in line
    assert (f" [{big.mb:,} MiB: estimated {big.mb:,} = weights {big.weights_mb:,} + kv 512 (exact) "
            f"+ overhead {big.overhead_mb:,} at 4,096 tokens; wins over the declared 2,048]") in line


def test_a_declaration_above_the_estimate_can_make_a_model_not_fit(base_catalog: Path):
    add_layer(base_catalog, "30-declared.yaml", "models:\n  big-chat:\n    memory: {ram_mb: 7000}\n")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert result.exit_code == 0 and "W301" not in result.stderr, result.output
    document = json.loads((base_catalog / "out" / "box-8" / "models.json").read_text())
    assert document["roles"]["chat"]["model"] == "small-chat"
    shown = run_cli("-C", str(base_catalog), "explain", "box-8", "chat").stdout
    big = estimate(_fixture_model(base_catalog, "big-chat"), 4096)
    assert (f"big-chat: needs 7,000 MiB, 6,144 MiB usable [7,000 MiB: declared 7,000 wins over the estimate {big.mb:,} = "
            f"weights {big.weights_mb:,} + kv 512 (exact) + overhead {big.overhead_mb:,} at 4,096 tokens]") in shown


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
    # llmfit names no GGUF conversion of it: the repository's 16-bit checkpoint is what there is to run
    assert model["artifact"]["format"] == "safetensors" and model.get("quantization") is None
    weights = math.ceil((49.867145216e9 * 16 / 8 + 128256 * 80) / MIB)
    assert (need.method, need.weights_mb, need.kv_mb) == ("estimated", weights, 20480)  # 2 x 80 x 8k x 64 x 128 x 2
    assert need.mb == weights + 20480 + need.overhead_mb > 49000
    assert need.overhead_mb == math.ceil(overhead_mib(catalog.models[model_id], 8192, RUNTIME_OVERHEAD_MB))
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
    assert need.mb == need.weights_mb + 448 + math.ceil(overhead_mib(QWEN7, 8192, RUNTIME_OVERHEAD_MB))


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


# --- weights calibrated on real GGUF files, KV by cache type and sliding window, the bound without arch ---

DATA = REPO / "tests" / "data"
CALIBRATION_CONTEXT = 4096


def gpt4all_calibration() -> list[dict]:
    """GPT4All's 32 files as its importer reads them (exact sizes), with true counts and arch from the
    calibration table; the declarations are dropped, as the comparison is of hostfit's own figures."""
    result = importers.run("gpt4all", DATA / "models3.json", "models3.json")
    imported = {m["artifact"]["file"]: m for m in yaml.safe_load(importers.render(result))["models"].values()}
    table = yaml.safe_load((DATA / "gpt4all_calibration.yaml").read_text())["files"]
    assert sorted(table) == sorted(imported), "every GPT4All file has a row, and no other"
    rows = []
    for name, facts in table.items():
        model = {key: value for key, value in imported[name].items() if key != "memory"}
        model.update(params_b=facts["params"] / 1e9, arch=facts["arch"])
        rows.append({"file": name, "sized": model, "unsized": {**model, "artifact": {}}, "note": facts.get("note", "")})
    return rows


def test_weights_without_file_sizes_match_gpt4all_files_within_2_percent_median():
    """Memory without the file size vs with it, at 4k context (same KV and overhead on both sides): the
    acceptance of issue 10 is median |error| <= 2%, worst <= 8%. `pytest -s` prints the table."""
    rows = gpt4all_calibration()
    lines = [f"{'file':<44} {'quant':<5} {'params':>7} {'file MiB':>9} {'est MiB':>8} {'weights':>8} {'memory':>7}"]
    errors = []
    for row in rows:
        sized = estimate(row["sized"], CALIBRATION_CONTEXT)
        unsized = estimate(row["unsized"], CALIBRATION_CONTEXT)
        assert (sized.method, unsized.method) == ("gguf", "estimated")
        assert (sized.kv_mb, sized.overhead_mb) == (unsized.kv_mb, unsized.overhead_mb)
        error = (unsized.estimated_mb - sized.estimated_mb) / sized.estimated_mb
        errors.append(abs(error))
        weights = (unsized.weights_mb - sized.weights_mb) / sized.weights_mb
        lines.append(f"{row['file']:<44} {row['sized']['quantization']:<5} {row['sized']['params_b']:>6.2f}B "
                     f"{sized.weights_mb:>9,} {unsized.weights_mb:>8,} {weights:>+8.2%} {error:>+7.2%}"
                     + (f"  ({row['note'].split(';')[0]})" if row["note"] else ""))
    median, worst = statistics.median(errors), max(errors)
    lines.append(f"{len(errors)} files: median |error| {median:.2%}, worst {worst:.2%}")
    print("\n" + "\n".join(lines))
    assert len(errors) == 32
    assert median <= 0.02 and worst <= 0.08  # issue 10's acceptance
    # and what the tensor-group model achieves (0.03% and 2.04%, the newbpe files that store a tied
    # embedding twice; a flat 4.5 bits for Q4_0 gave 0.78% and 5.44% with a 512 MiB overhead, more now)
    assert median <= 0.0025 and worst <= 0.025


def test_without_vocab_and_hidden_size_the_weights_assume_a_large_output_matrix():
    """Without vocab_size and hidden_size the output matrix is taken as 30% of the parameters (at most
    1.1B): over the same files that errs high, never more than 1% low (F16 files' metadata)."""
    for row in gpt4all_calibration():
        arch = {k: v for k, v in row["unsized"]["arch"].items() if k not in ("vocab_size", "hidden_size")}
        fallback = estimate({**row["unsized"], "arch": arch}, CALIBRATION_CONTEXT).weights_mb
        informed = estimate(row["unsized"], CALIBRATION_CONTEXT).weights_mb
        real = estimate(row["sized"], CALIBRATION_CONTEXT).weights_mb
        assert fallback >= real * 0.99, row["file"]
        if row["sized"]["quantization"] != "F16":  # the output matrix is at Q6_K/Q8_0, above the body
            assert fallback >= informed, row["file"]


def test_small_models_with_big_vocabularies_average_well_above_the_body_bits():
    """Llama 3.2 1B at Q4_0: the 262M-parameter tied embedding is the output, kept at Q6_K."""
    model = {"provider": "local", "params_b": 1.2358144, "quantization": "Q4_0",
             "arch": {"hidden_size": 2048, "vocab_size": 128256}}
    matrix = 2048 * 128256
    bits = estimated_weight_bytes(model) * 8 / 1.2358144e9
    assert bits > 4.9  # the body is 4.5
    assert estimated_weight_bytes(model) == pytest.approx(
        ((1.2358144e9 - matrix) * 4.5 + matrix * 6.5625) / 8 + 128256 * TOKENIZER_BYTES)
    # a hidden size that is not a multiple of 256 keeps the output at Q8_0 (llama.cpp's K-block rule)
    unaligned = {**model, "arch": {"hidden_size": 2000, "vocab_size": 128256}}
    matrix = 2000 * 128256
    assert estimated_weight_bytes(unaligned) == pytest.approx(
        ((1.2358144e9 - matrix) * 4.5 + matrix * 8.5) / 8 + 128256 * TOKENIZER_BYTES)


def test_awq_and_gptq_keep_the_embedding_and_lm_head_at_16_bits():
    """Qwen2.5-7B as AWQ: 4-bit body with group scales, both 545M-parameter ends at 16 bits (untied)."""
    arch = {"hidden_size": 3584, "vocab_size": 152064}
    matrix = 3584 * 152064
    for name in ("AWQ_4BIT", "GPTQ_INT4", "AUTOROUND_4BIT"):
        model = {"provider": "local", "params_b": 7.615616512, "quantization": name, "arch": arch}
        expected = ((7.615616512e9 - 2 * matrix) * 4.25 + 2 * matrix * 16) / 8 + 152064 * TOKENIZER_BYTES
        assert estimated_weight_bytes(model) == pytest.approx(expected)
        assert estimated_weight_bytes(model) * 8 / 7.615616512e9 > 5.9  # not 4 bits a weight
    eight = {"provider": "local", "params_b": 7.615616512, "quantization": "GPTQ_INT8", "arch": arch}
    assert estimated_weight_bytes(eight) == pytest.approx(
        ((7.615616512e9 - 2 * matrix) * 8.25 + 2 * matrix * 16) / 8 + 152064 * TOKENIZER_BYTES)


def imported_llmfit() -> tuple[dict, list]:
    result = importers.run("llmfit", DATA / "hf_models.json", "hf_models.json")
    return yaml.safe_load(importers.render(result))["models"], result


def test_llmfit_heads_and_vocab_reach_arch_and_its_quantizations_have_bits(tmp_path: Path):
    models, result = imported_llmfit()
    qwen = models["qwen/qwen2.5-coder-7b-instruct"]
    assert qwen["arch"] == {"layers": 28, "kv_heads": 4, "head_dim": 128, "hidden_size": 3584, "heads": 28,
                            "vocab_size": 152064}
    names = {m["quantization"] for m in models.values() if m.get("quantization")}
    # llmfit's own labels, and what MLX conversions' names say (16-bit checkpoints carry none)
    assert {"Q4_K_M", "AWQ_4BIT", "GPTQ_INT4", "AWQ_8BIT", "GPTQ_INT8", "AUTOROUND_4BIT", "MLX_4BIT",
            "MLX_8BIT"} <= names
    assert names <= set(QUANT_BITS)
    layer = tmp_path / "10-llmfit.yaml"
    layer.write_text(importers.render(result))
    merged = merge_layers([Layer("sources", load_file(layer, "sources/10-llmfit.yaml", "sources"))])
    _, problems = resolve(merged)
    assert not [p for p in problems if p.code == "W300"]
    unknown = {**qwen, "quantization": "EXL2_5BPW"}  # W300 still fires for a name without an entry
    layer.write_text(yaml.safe_dump({"schema_version": 2, "kind": "catalog", "models": {"odd": unknown}}))
    merged = merge_layers([Layer("sources", load_file(layer, "sources/10-llmfit.yaml", "sources"))])
    _, problems = resolve(merged)
    assert [p.code for p in problems if p.code == "W300"] == ["W300"]


def test_the_kv_bound_without_arch_is_never_below_the_standard_formula_for_llmfit_models():
    """Every llmfit model with arch, through both: its standard formula, and the bound it would get without
    its geometry (MoE facts kept). `pytest -s` prints the count and the tightest ratio."""
    models, _ = imported_llmfit()
    ratios = []
    for model_id, model in models.items():
        arch = model.get("arch") or {}
        if not (arch.get("layers") and arch.get("kv_heads") and arch.get("head_dim")):
            continue
        standard, method = kv_mib(model, CALIBRATION_CONTEXT)
        assert method == "exact"
        assert standard == 2 * arch["layers"] * CALIBRATION_CONTEXT * arch["kv_heads"] * arch["head_dim"] * 2 / MIB
        bare = {**model, "arch": {k: v for k, v in arch.items() if k in ("experts", "active_params_b")}}
        bound, method = kv_mib(bare, CALIBRATION_CONTEXT)
        assert method == "heuristic"
        ratios.append((bound / standard, model_id))
    worst = min(ratios)
    print(f"\n{len(ratios)} llmfit models with arch; bound / standard formula: lowest {worst[0]:.3f} ({worst[1]}), "
          f"median {sorted(ratios)[len(ratios) // 2][0]:.1f}")
    assert len(ratios) > 1500
    assert worst[0] >= 1, worst


def test_a_mixture_of_experts_weighs_its_total_but_its_kv_bound_does_not_grow_with_it():
    dense = {"provider": "local", "params_b": 22, "quantization": "Q4_K_M"}
    moe = {"provider": "local", "params_b": 235, "quantization": "Q4_K_M",
           "arch": {"experts": 128, "experts_used": 8, "active_params_b": 22}}
    assert estimate(moe, 4096).weights_mb == estimate({**moe, "arch": {}}, 4096).weights_mb  # total parameters
    assert estimate(moe, 4096).weights_mb > 10 * estimate(dense, 4096).weights_mb
    growth = estimate(moe, 4096).kv_mb / estimate(dense, 4096).kv_mb
    assert growth == pytest.approx(math.sqrt(235 / 22), rel=0.01) and growth < 235 / 22 / 3
    # with its geometry the cache is exact and ignores parameters altogether
    exact = {**moe, "arch": {**moe["arch"], "layers": 94, "kv_heads": 4, "head_dim": 128}}
    assert estimate(exact, 4096).kv_mb == 2 * 94 * 4096 * 4 * 128 * 2 // MIB == 752


def test_a_quantized_kv_cache_takes_ggml_block_bytes():
    f16 = estimate(QWEN7, 8192)
    assert f16.kv_mb == 448 and f16.kv_cache_type == "f16" and "kv_cache_type" not in f16.to_dict()
    for name, block, values in (("q8_0", 34, 32), ("q5_1", 24, 32), ("q5_0", 22, 32), ("q4_1", 20, 32),
                                ("q4_0", 18, 32)):
        need = estimate(QWEN7, 8192, kv_cache_type=name)
        assert need.kv_mb == math.ceil(2 * 28 * 8192 * 4 * 128 * block / values / MIB)
        assert need.weights_mb == f16.weights_mb and need.to_dict()["kv_cache_type"] == name
    assert estimate(QWEN7, 8192, kv_cache_type="f32").kv_mb == 896
    assert estimate(QWEN7, 8192, kv_cache_type="bf16").kv_mb == 448
    bare = {k: v for k, v in QWEN7.items() if k != "arch"}  # the bound scales alike
    assert kv_mib(bare, 8192, "q4_0")[0] == pytest.approx(kv_mib(bare, 8192)[0] * 18 / 64)
    assert set(KV_CACHE_BYTES) == {"f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"}


def test_sliding_window_layers_keep_the_window_plus_a_ubatch_of_cells():
    """gpt-oss-20b: 24 layers, half of them with a 128-token window. llama.cpp (without --swa-full)
    keeps min(n_ctx, pad(128 + 512, 256)) = 768 cells on those, the full context on the others."""
    arch = {"layers": 24, "kv_heads": 8, "head_dim": 64, "sliding_window": 128, "sliding_window_layers": 12}
    model = {"provider": "local", "params_b": 20.9, "quantization": "MXFP4", "arch": arch}
    per_cell = 2 * 8 * 64 * 2
    for context in (512, 4096, 32768):
        kv, method = kv_mib(model, context)
        assert method == "exact"
        assert kv == per_cell * (12 * context + 12 * min(context, 768)) / MIB
    full = {**model, "arch": {k: v for k, v in arch.items() if not k.startswith("sliding")}}
    assert kv_mib(model, 32768)[0] < 0.6 * kv_mib(full, 32768)[0]
    # a window without a count of the layers that use it saves nothing (llama.cpp ignores Mistral's)
    assert kv_mib({**model, "arch": {**arch, "sliding_window_layers": 0}}, 32768) == kv_mib(full, 32768)
    assert kv_mib({**model, "arch": {k: v for k, v in arch.items() if k != "sliding_window_layers"}}, 32768) == \
        kv_mib(full, 32768)


def test_a_role_kv_cache_type_sizes_its_memory_and_reaches_models_json(base_catalog: Path):
    add_layer(base_catalog, "30-cache.yaml",
              "roles:\n  chat:\n    kv_cache_type: q8_0\nselection:\n  kv_cache_type: q4_0\n")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-32")
    assert result.exit_code == 0, result.output
    document = json.loads((base_catalog / "out" / "box-32" / "models.json").read_text())
    chat, summarization = document["roles"]["chat"], document["roles"]["summarization"]
    assert (chat["kv_cache_type"], summarization["kv_cache_type"]) == ("q8_0", "q4_0")  # role, else selection
    big = estimate(_fixture_model(base_catalog, "big-chat"), 4096, kv_cache_type="q8_0")
    assert chat["model"] == "big-chat" and chat["memory_mb"] == big.mb and big.kv_mb == 272  # 512 x 34/64
    shown = run_cli("-C", str(base_catalog), "explain", "box-32", "chat").stdout
    assert "+ kv 272 (exact, q8_0) + overhead" in shown
    # f16 (the default, what load and the exports assume) leaves the key out: unchanged outputs stay unchanged
    plain = run_cli("-C", str(base_catalog), "build", "--host", "box-32", "--set", "selection.kv_cache_type=f16")
    assert plain.exit_code == 0, plain.output
    document = json.loads((base_catalog / "out" / "box-32" / "models.json").read_text())
    roles = document["roles"]
    assert roles["chat"]["kv_cache_type"] == "q8_0" and "kv_cache_type" not in roles["summarization"]


def test_kv_cache_type_takes_llama_cpp_names_only(base_catalog: Path):
    layer = add_layer(base_catalog, "30-cache.yaml", "roles:\n  chat:\n    kv_cache_type: q5_1\n")
    assert run_cli("-C", str(base_catalog), "validate").exit_code == 0
    layer.write_text(layer.read_text().replace("q5_1", "q3_k"))
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1 and "kv_cache_type" in result.output + result.stderr


def test_head_dim_defaults_to_hidden_size_over_heads():
    """config.json's rule when it states no head_dim (llmfit's heads now reach arch)."""
    geometry = {"layers": 28, "kv_heads": 4, "hidden_size": 3584, "heads": 28}
    model = {**QWEN7, "arch": geometry}
    assert kv_mib(model, 8192) == kv_mib(QWEN7, 8192) == (448, "exact")
    assert kv_mib({**QWEN7, "arch": {"layers": 28, "kv_heads": 4, "hidden_size": 3584}}, 8192)[1] == "heuristic"


def test_the_kv_cache_holds_the_context_padded_to_256_cells_as_llama_cpp_allocates_it():
    """llama.cpp rounds n_ctx up to a multiple of 256 before sizing the cache (llama-context.cpp), so a
    4,100-token context holds 4,352 cells: counting 4,100 would under-count the cache."""
    per_cell = 2 * 28 * 4 * 128 * 2 / MIB  # QWEN7, f16
    for context, cells in ((4096, 4096), (4097, 4352), (4100, 4352), (5000, 5120), (100, 256)):
        assert kv_mib(QWEN7, context) == (per_cell * cells, "exact")
        assert estimate(QWEN7, context).context == context  # the context asked for is what load passes
    bare = {k: v for k, v in QWEN7.items() if k != "arch"}
    assert kv_mib(bare, 4100)[0] == kv_mib(bare, 4352)[0]
    # the attention scores without flash attention span the padded cache too
    assert overhead_mib(QWEN7, 4100, 0, flash_attention=False) == overhead_mib(QWEN7, 4352, 0, flash_attention=False)


def test_a_local_model_of_unknown_size_is_rejected_rather_than_counted_as_weightless(base_catalog: Path):
    """No params_b, no file size, no declaration: there is no figure for its weights, and counting them as
    0 would let a 70B model of that shape fit an 8 GB box."""
    add_layer(base_catalog, "30-unsized.yaml",
              "models:\n  mystery:\n    provider: local\n    workloads: [chat, summarization]\n"
              "    quantization: Q4_K_M\n    context_window: 8192\n"
              "    artifact: {format: gguf, repo: example/mystery-GGUF, file: mystery-q4_k_m.gguf}\n"
              "roles:\n  summarization:\n    prefer: [mystery, small-chat]\n")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert result.exit_code == 0, result.output
    document = json.loads((base_catalog / "out" / "box-8" / "models.json").read_text())
    assert document["roles"]["summarization"]["model"] == "small-chat"
    shown = run_cli("-C", str(base_catalog), "explain", "box-8", "summarization").stdout
    assert "mystery: size unknown" in shown, shown
    listed = run_cli("-C", str(base_catalog), "models", "--host", "box-8", "--json").stdout
    row = {row["id"]: row for row in json.loads(listed)}["mystery"]
    assert row["fit"] == "size unknown" and row["memory_mb"] is None  # as build judged it, no made-up figure
    # any one figure is enough to size it
    for known in ("    params_b: 70.0\n", "    memory: {ram_mb: 2000}\n"):
        add_layer(base_catalog, "40-sized.yaml", "models:\n  mystery:\n" + known)
        assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
        chosen = json.loads((base_catalog / "out" / "box-8" / "models.json").read_text())["roles"]["summarization"]
        assert (chosen["model"] == "mystery") == ("ram_mb" in known), chosen


def test_arch_kv_bytes_never_sizes_the_cache_below_the_type_the_runtime_is_given():
    """With no kv_cache_type, load and the exports run llama.cpp with an f16 cache whatever arch.kv_bytes
    says: a kv_bytes of 1 (an FP8 cache elsewhere) must not halve the cache the runtime allocates."""
    f16 = kv_mib(QWEN7, 8192)
    assert kv_mib({**QWEN7, "arch": {**QWEN7["arch"], "kv_bytes": 1}}, 8192) == f16
    assert kv_mib({**QWEN7, "arch": {**QWEN7["arch"], "kv_bytes": 4}}, 8192)[0] == 2 * f16[0]  # it may raise it
    assert kv_mib({**QWEN7, "arch": {**QWEN7["arch"], "kv_bytes": 1}}, 8192, "q4_0")[0] == f16[0] * 18 / 64
