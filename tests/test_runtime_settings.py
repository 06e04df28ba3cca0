"""The runtime settings the memory figure assumes (flash attention, KV cache type) reach models.json,
`hostfit load` (llama-cpp-python) and the llama-server export; a quantized V cache without flash
attention is refused (E310), since llama.cpp would refuse it at load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from compiler import exports
from compiler.executor import loaders
from compiler.load import load_file
from compiler.memory import estimate
from compiler.merge import Layer, merge_layers
from compiler.resolve import resolve

from conftest import add_layer, run_cli
from shapedgguf import Shape, llama_log, write_shaped


def test_flash_attention_is_on_by_default_a_role_can_turn_it_off_and_the_memory_follows(base_catalog: Path):
    add_layer(base_catalog, "30-fa.yaml",
              "roles:\n  chat:\n    workload: chat\n    flash_attention: false\n    requires: {context_min: 32768}\n")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-32")
    assert result.exit_code == 0, result.output
    document = json.loads((base_catalog / "out" / "box-32" / "models.json").read_text())
    chat, summarization = document["roles"]["chat"], document["roles"]["summarization"]
    assert (chat["flash_attention"], summarization["flash_attention"]) == (False, True)
    big = yaml.safe_load((base_catalog / "sources" / "00-models.yaml").read_text())["models"]["big-chat"]
    off, on = estimate(big, 32768, flash_attention=False), estimate(big, 32768, flash_attention=True)
    assert chat["model"] == "big-chat" and chat["memory_mb"] == off.mb
    assert off.mb - on.mb > 1800, "32 heads of f32 scores at 32k: about 2 GiB more without flash attention"
    script = (base_catalog / "out" / "box-32" / "exports" / "llama-server.sh").read_text()
    assert "--flash-attn off -ctk f16 -ctv f16 --alias chat" in script
    assert "--flash-attn on -ctk f16 -ctv f16 --alias summarization" in script


def _resolved(tmp_path: Path, text: str):
    layer = tmp_path / "10-roles.yaml"
    layer.write_text(text)
    return resolve(merge_layers([Layer("sources", load_file(layer, "sources/10-roles.yaml", "sources"))]))


def test_a_quantized_kv_cache_without_flash_attention_is_e310_at_the_flag(tmp_path: Path):
    _, problems = _resolved(tmp_path, "schema_version: 2\nkind: catalog\nroles:\n  chat:\n    workload: chat\n"
                                      "    kv_cache_type: q8_0\n    flash_attention: false\n")
    [problem] = [p for p in problems if p.code == "E310"]
    assert (problem.severity, problem.line) == ("error", 7) and "q8_0" in problem.message
    # llama.cpp refuses only a quantized V cache (ggml_is_quantized) without flash attention: f32 is not one
    for fine in ("    kv_cache_type: q8_0\n", "    kv_cache_type: bf16\n    flash_attention: false\n",
                 "    kv_cache_type: f32\n    flash_attention: false\n"):
        _, problems = _resolved(tmp_path, f"schema_version: 2\nkind: catalog\nroles:\n  chat:\n    workload: chat\n{fine}")
        assert not [p for p in problems if p.code == "E310"]


def test_load_settings_follow_the_compiled_role():
    model = {"provider": "local", "context_window": 4096}
    settings = loaders.settings_for({"context": 2048}, model, 1, None, True, False)
    assert (settings.flash_attention, settings.kv_cache_type) == (True, "f16")  # what older models.json assumed
    settings = loaders.settings_for({"flash_attention": False}, model, 1, None, True, False)
    assert settings.flash_attention is False
    with pytest.raises(loaders.LoadFailure, match="only with flash attention"):
        loaders.settings_for({"flash_attention": False, "kv_cache_type": "q4_0"}, model, 1, None, True, False)


@pytest.mark.parametrize("kv_type", ["q8_0", "q4_0", "f16"])
def test_load_passes_flash_attention_and_the_kv_cache_type_to_llama_cpp(kv_type: str, tmp_path: Path):
    pytest.importorskip("llama_cpp")
    # heads of 64 dimensions: a quantized cache stores each head's row in 32-weight blocks
    path = write_shaped(tmp_path / "small.gguf", Shape("small", "llama", 2, 128, 2, 1, 64, 256, 512, False), "F16")
    with llama_log() as lines:
        settings = loaders.Settings(256, 1, 0, flash_attention=True, kv_cache_type=kv_type)
        loaders.llamacpp_load(path, settings, "hello", max_tokens=1)
    log = "".join(lines)
    assert f"K ({kv_type})" in log and f"V ({kv_type})" in log, log[-1500:]


def test_the_llama_server_export_passes_the_role_settings():
    document = {"schema_version": 2, "profiles": [], "aliases": {},
                "host": {"name": "box", "ram_mb": 8192, "usable_mb": 6144, "gpus": [], "detected": False},
                "roles": {"chat": {"model": "m", "fallbacks": [], "placement": "cpu", "memory_mb": 1, "context": 4096,
                                   "flash_attention": True, "kv_cache_type": "q8_0"}},
                "models": {"m": {"provider": "local", "workloads": ["chat"], "memory_mb": 1, "memory_method": "gguf",
                                 "artifact": {"format": "gguf", "file": "m.gguf"}}}}
    script = exports.render(document, ["llamacpp"], None)["llama-server.sh"].decode()
    assert "-c 4096 -np 1 -ngl 0 --flash-attn on -ctk q8_0 -ctv q8_0 --alias chat" in script
    # one slot, as sized: llama-server's default of 4 slots with a unified cache keeps 4 x window + 512
    # cells on each sliding-window layer (llama-kv-cache-iswa.cpp), 3 windows more than the estimate


def test_a_gpu_host_adds_the_gpu_runtime_and_a_cpu_host_does_not(tmp_path: Path):
    from compiler.hosts import Gpu, Host
    from compiler.select import select

    catalog, _ = _resolved(tmp_path, "schema_version: 2\nkind: catalog\nmodels:\n  m:\n    provider: local\n"
                                     "    params_b: 8\n    quantization: Q4_K_M\n    workloads: [chat]\n"
                                     "    arch: {layers: 32, kv_heads: 8, head_dim: 128, heads: 32, hidden_size: 4096,"
                                     " vocab_size: 128256}\nroles:\n  chat: {workload: chat}\n"
                                     "selection: {gpu_runtime_overhead_mb: 700}\n")
    cpu = select(catalog, Host("cpu", 32 * 1024, ())).roles["chat"]
    gpu = select(catalog, Host("gpu", 32 * 1024, (Gpu("RTX", 24 * 1024),))).roles["chat"]
    assert (cpu.placement, gpu.placement) == ("cpu", "gpu")
    assert gpu.memory_mb - cpu.memory_mb == 700


def test_load_passes_the_compiled_settings_to_llama_cpp(monkeypatch, tmp_path: Path):
    """flash attention, the cache type and a sliding-window cache as compiled (llama-cpp-python's own
    default keeps the whole context on sliding-window layers, which the estimate does not count)."""
    import llama_cpp

    seen = {}

    def recorder(**kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(llama_cpp, "Llama", recorder)
    settings = loaders.settings_for({"flash_attention": True, "kv_cache_type": "q8_0", "context": 8192},
                                    {"arch": {"layers": 2}}, 1, None, True, False)
    with pytest.raises(loaders.LoadFailure):
        loaders.llamacpp_load(tmp_path / "m.gguf", settings, "hi")
    assert (seen["flash_attn"], seen["swa_full"], seen["n_ctx"]) == (True, False, 8192)
    assert seen["type_k"] == seen["type_v"] == loaders.KV_CACHE_TYPES["q8_0"]


def test_every_kv_cache_type_a_role_may_compile_is_one_load_passes_to_llama_cpp():
    """The schemas accept f32 and iq4_nl too; load must pass each as ggml's own type id (from gguf),
    not refuse a models.json the compiler wrote."""
    import gguf

    from compiler.memory import KV_CACHE_BYTES

    schema = json.loads((Path(loaders.__file__).parents[1] / "schemas" / "output.v2.json").read_text())
    allowed = schema["properties"]["roles"]["additionalProperties"]["properties"]["kv_cache_type"]["enum"]
    assert set(allowed) == set(KV_CACHE_BYTES)
    for kv_type in allowed:
        assert loaders.KV_CACHE_TYPES.get(kv_type) == int(gguf.GGMLQuantizationType[kv_type.upper()]), kv_type
        settings = loaders.settings_for({"flash_attention": True, "kv_cache_type": kv_type}, {}, 1, None, True, False)
        assert settings.kv_cache_type == kv_type


def test_an_f32_kv_cache_is_not_quantized_so_it_needs_no_flash_attention(tmp_path: Path):
    """llama.cpp refuses only a quantized V cache without flash attention; f32 is as plain as f16."""
    _, problems = _resolved(tmp_path, "schema_version: 2\nkind: catalog\nroles:\n  chat:\n    workload: chat\n"
                                      "    kv_cache_type: f32\n    flash_attention: false\n")
    assert not [p for p in problems if p.code == "E310"]
    settings = loaders.settings_for({"flash_attention": False, "kv_cache_type": "f32"}, {}, 1, None, True, False)
    assert (settings.kv_cache_type, settings.flash_attention) == ("f32", False)
