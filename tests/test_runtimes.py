"""Runtimes and formats: the registry, format inference, host runtimes (default, declared, detected),
(model, runtime) candidates and their rejections, the runtime in models.json, `load` following it,
the llama-server export, and a new runtime registered in one line."""

from __future__ import annotations

import json
import pkgutil
from dataclasses import replace
from pathlib import Path

import pytest

from compiler import exports, runtimes, schema
from compiler.executor import loaders
from compiler.hosts import Gpu, Host, declared_hosts
from compiler.importers import llmfit
from compiler.load import load_yaml_text
from compiler.merge import Layer, merge_layers
from compiler.resolve import resolve
from compiler.runtimes import Runtime
from compiler.select import select
from conftest import REPO, add_layer, run_cli

# Needs are declared (above the estimates at 4k), so fits are these round figures.
MODELS = """
schema_version: 2
kind: catalog
models:
  coder-awq:    {provider: local, params_b: 1, context_window: 32768, workloads: [code], memory: {ram_mb: 3000},
                 artifact: {repo: org/coder-AWQ}}  # the repository's name says AWQ
  coder-gguf:   {provider: local, params_b: 1, quantization: Q4_K_M, context_window: 32768, workloads: [code],
                 memory: {ram_mb: 3000}, artifact: {format: gguf, repo: org/coder-GGUF, file: coder.gguf},
                 ollama: {name: "coder:3b"}}
  coder-mlx:    {provider: local, params_b: 1, context_window: 32768, workloads: [code], memory: {ram_mb: 3000},
                 artifact: {format: mlx, repo: mlx-community/coder-4bit}}
  coder-plain:  {provider: huggingface, params_b: 3, quantization: BF16, context_window: 32768, workloads: [code],
                 memory: {ram_mb: 9000}, artifact: {format: safetensors, repo: org/coder}}
  coder-pulled: {provider: ollama, params_b: 1, context_window: 32768, workloads: [code], memory: {ram_mb: 3000},
                 ollama: {name: "coder:pulled"}, artifact: {format: gguf, size_bytes: 1000000000}}
"""


def plan_for(prefer: list[str], host: Host, required: bool = False):
    role = {"workload": "code", "prefer": prefer, "required": required}
    text = MODELS + f"roles:\n  code: {json.dumps(role)}\n"
    catalog, problems = resolve(merge_layers([Layer("sources", load_yaml_text(text, "catalog.yaml"))]))
    assert not [p for p in problems if p.severity == "error"]
    return select(catalog, host)


def host(name="laptop-16", ram_gb=16, gpus=(), runtimes_=None, unified=False) -> Host:
    return Host(name, ram_gb * 1024, tuple(gpus), unified_memory=unified, runtimes=runtimes_)


NVIDIA_24 = Gpu("RTX 4090", 24 * 1024, "nvidia")
APPLE = Gpu("M3 Max", 36 * 1024, "apple")


def reason(plan, model):
    return next(v.describe() for v in plan.roles["code"].candidates if v.model == model)


# ------------------------------------------------------------------------------- the registry

def test_every_runtime_module_is_registered_and_declares_known_words():
    modules = {m.name for m in pkgutil.iter_modules([str(Path(runtimes.__file__).parent)])} - {"base", "formats"}
    assert modules == set(runtimes.REGISTRY), "each runtime module needs its registry line"
    assert {"llamacpp", "ollama", "mlx", "vllm", "transformers"} <= set(runtimes.REGISTRY)
    for name, runtime in runtimes.REGISTRY.items():
        assert runtime.name == name
        assert set(runtime.loads) <= set(runtimes.CONTAINERS)
        assert all(set(methods) <= set(runtimes.METHODS) for methods in runtime.loads.values())
        assert runtime.hardware and set(runtime.hardware) <= set(runtimes.HARDWARE)
        assert runtime.placements and set(runtime.placements) <= set(runtimes.PLACEMENTS)
        assert runtime.sources and set(runtime.sources) <= set(runtimes.base.SOURCES)
        assert set(runtime.exports) <= set(exports.BUILTINS)
        assert runtime.loader or runtime.serve, f"{name}: hostfit must load it or say how to run it"
    assert set(runtimes.LOADABLE) == {"llamacpp", "ollama"}  # the executor's two backends


def test_the_schemas_know_every_container_and_method():
    for kind in ("catalog", "profile"):
        artifact = schema.strict_schema(kind)["$defs"]["artifact"]["properties"]
        assert sorted(artifact["format"]["enum"]) == sorted(runtimes.CONTAINERS)
        assert artifact["quant_method"]["enum"] == list(runtimes.METHODS)
    out = schema.strict_schema("output")["properties"]["models"]["additionalProperties"]["properties"]["artifact"]
    assert out["properties"]["quant_method"]["enum"] == list(runtimes.METHODS)


def test_vllm_is_gpu_only_and_llamacpp_places_anywhere():
    cpu, cuda = frozenset({"cpu"}), frozenset({"cpu", "cuda"})
    vllm, llama = runtimes.REGISTRY["vllm"], runtimes.REGISTRY["llamacpp"]
    assert runtimes.placements(vllm, cpu) == () and runtimes.placements(vllm, cuda) == ("gpu",)
    assert runtimes.placements(llama, cpu) == ("cpu",) and runtimes.placements(llama, cuda) == ("gpu", "split", "cpu")


# --------------------------------------------------------------------------- format inference

@pytest.mark.parametrize("words, expected", [
    (("awq", "AWQ-4bit", "Qwen/Qwen2.5-7B-Instruct-AWQ"), ("safetensors", "awq")),
    ((None, "GPTQ-Int4", "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"), ("safetensors", "gptq")),
    ((None, "Q4_K_M", "RedHatAI/Llama-3.2-1B-Instruct-FP8-dynamic"), ("safetensors", "fp8")),
    ((None, "Q4_K_M", "RedHatAI/Llama-3.2-1B-Instruct-quantized.w8a8"), ("safetensors", "w8a8")),
    ((None, "Q4_K_M", "RedHatAI/Qwen3-8B-quantized.w4a16"), ("safetensors", "w4a16")),
    ((None, "Q4_K_M", "unsloth/Qwen3-0.6B-unsloth-bnb-4bit"), ("safetensors", "bnb")),
    (("autoround", "AutoRound-4bit", "Intel/Qwen3-8B-int4-AutoRound"), ("safetensors", "autoround")),
    ((None, "Q4_K_M", "GadflyII/GLM-4.7-Flash-NVFP4"), ("safetensors", "nvfp4")),
    ((None, "Q4_K_M", "mlx-community/Qwen3-0.6B-4bit"), ("mlx", "plain")),
    ((None, "Q4_K_M", "unsloth/Qwen3-8B-FP8-GGUF"), ("gguf", "plain")),  # a GGUF's types are its own
    ((None, "Q4_K_M", "Qwen/Qwen2.5-7B-Instruct"), (None, "plain")),  # nothing says: the caller's default
])
def test_infer_reads_what_names_and_labels_say(words, expected):
    assert runtimes.infer(words) == expected


def test_model_format_prefers_declarations_and_defaults_to_gguf():
    assert runtimes.model_format({"artifact": {"format": "safetensors", "quant_method": "fp8"}, "name": "x-AWQ"}) \
        == ("safetensors", "fp8")
    assert runtimes.model_format({"artifact": {"format": "gguf", "file": "coder-AWQ.Q4_K_M.gguf"}}) == ("gguf", "plain")
    assert runtimes.model_format({"quantization": "Q4_K_M"}, "qwen2.5-coder-3b-instruct-awq") == ("safetensors", "awq")
    assert runtimes.model_format({"quantization": "Q4_K_M", "name": "Qwen 2.5"}) == ("gguf", "plain")


def test_llmfit_import_records_the_quantization_method_its_source_gives():
    data = json.loads((REPO / "tests" / "data" / "hf_models.json").read_text())
    out = llmfit_import(data)
    by_name = {m["name"]: m for m in out.values()}
    checked = 0
    for entry in data:
        model = by_name.get(entry["name"])
        if model is None or "artifact" not in model:
            continue
        artifact, fmt = model["artifact"], entry.get("format")
        if fmt in ("awq", "gptq", "autoround") and fmt not in entry["name"].lower().replace("auto-round", "autoround"):
            assert artifact["quant_method"] in ("awq", "gptq", "autoround"), entry["name"]
            checked += 1
        elif fmt in ("awq", "gptq", "autoround"):
            assert (artifact["format"], artifact["quant_method"]) == ("safetensors", fmt), entry["name"]
            checked += 1
        elif fmt == "mlx" or entry["name"].lower().startswith("mlx-community/"):
            assert artifact["format"] == "mlx" and "quant_method" not in artifact, entry["name"]
            checked += 1
        elif "-fp8" in entry["name"].lower() and "gguf" not in entry["name"].lower():
            assert (artifact["format"], artifact["quant_method"]) == ("safetensors", "fp8"), entry["name"]
            checked += 1
    assert checked > 300  # the file's AWQ, GPTQ, AutoRound, MLX and FP8 models (about 450 of 1,852)


def llmfit_import(data) -> dict:
    from compiler.importers import Imported

    out = Imported("llmfit", "hf_models.json")
    llmfit.convert(data, out)
    return out.models


# ------------------------------------------------------------------------------------- hosts

def test_host_hardware_from_gpu_vendors():
    def hw(*vendors):
        return runtimes.hardware([Gpu("g", 1024, v) for v in vendors])

    assert hw() == {"cpu"}
    assert hw("nvidia") == hw(None) == {"cpu", "cuda"}  # a GPU without a vendor is taken as NVIDIA
    assert hw("amd") == {"cpu", "rocm"} and hw("apple") == {"cpu", "metal"} and hw("intel") == {"cpu"}


def test_declared_hosts_default_and_declared_runtimes():
    hosts = declared_hosts({
        "plain": {"ram_gb": 16},
        "mac": {"ram_gb": 36, "unified_memory": True, "gpus": [{"name": "M3 Max", "vram_gb": 36, "vendor": "apple"}]},
        "rig": {"ram_gb": 64, "runtimes": ["vllm", "llamacpp"], "gpus": [{"vram_gb": 24, "vendor": "nvidia"}]},
    })
    names = {name: [r.name for r in runtimes.available(h).runtimes] for name, h in hosts.items()}
    assert names == {"plain": ["llamacpp", "ollama"], "mac": ["llamacpp", "ollama", "mlx"], "rig": ["vllm", "llamacpp"]}


def test_an_apple_gpu_is_unified_memory_even_when_the_host_does_not_say_so():
    # its "VRAM" is the RAM: counting both would place a 60 GB model on a 36 GB Mac as a split
    hosts = declared_hosts({
        "mac": {"ram_gb": 36, "gpus": [{"name": "M3 Pro", "vram_gb": 36, "vendor": "apple"}]},
        "rig": {"ram_gb": 64, "gpus": [{"name": "RTX 4090", "vram_gb": 24, "vendor": "nvidia"}]},
    })
    assert hosts["mac"].unified_memory and not hosts["rig"].unified_memory
    plan = plan_for(["coder-plain"], replace(hosts["mac"], runtimes=("transformers",)))
    budget = plan.budget  # one pool: the GPU's share is part of the RAM, never added to it
    assert budget.unified and budget.vram_mb == hosts["mac"].gpu_share_mb <= budget.ram_mb
    assert budget.capacity() == budget.ram_mb and plan.roles["code"].placement != "split"


def test_a_gpu_runtime_places_in_the_one_pool_of_a_unified_memory_nvidia_host():
    # a GB10 (DGX Spark) or Jetson: no VRAM apart from the RAM, which its CUDA GPU computes out of
    spark = host("spark", 128, [Gpu("GB10", 128 * 1024, "nvidia")], ("vllm", "llamacpp"), unified=True)
    role = plan_for(["coder-awq"], spark).roles["code"]
    assert (role.model, role.runtime, role.placement) == ("coder-awq", "vllm", "gpu")  # in the GPU's share
    assert plan_for(["coder-awq"], replace(spark, ram_mb=4 * 1024)).roles["code"].model is None  # still sized


def test_an_unknown_runtime_is_an_error_at_its_line_with_a_guess(base_catalog):
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("box-8: {ram_gb: 8, profiles: [base]}",
                                               "box-8: {ram_gb: 8, profiles: [base],\n"
                                               "        runtimes: [llamacpp, olama]}"))
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1
    lines = hosts.read_text().splitlines()
    line = lines.index("        runtimes: [llamacpp, olama]}")
    where = f"hosts.yaml:{line + 1}:{lines[line].index('olama') + 1}"
    assert f"{where}: error[E241]: host 'box-8' names unknown runtime 'olama'" in result.output
    assert "did you mean 'ollama'?" in result.output


def test_a_runtime_without_its_hardware_is_a_warning(base_catalog):
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("box-8: {ram_gb: 8, profiles: [base]}",
                                               "box-8: {ram_gb: 8, profiles: [base], runtimes: [vllm, llamacpp]}"))
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert result.exit_code == 0, result.output
    assert "warning[W402]: host 'box-8' lists runtime 'vllm', which needs CUDA" in result.stderr


@pytest.mark.parametrize("vendor", ["[nvidia]", "{name: nvidia}"])
def test_a_vendor_that_is_not_a_word_is_a_diagnostic_not_a_traceback(base_catalog, vendor):
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace(
        "box-8: {ram_gb: 8, profiles: [base]}",
        f"box-8: {{ram_gb: 8, profiles: [base], gpus: [{{name: g, vram_gb: 8, vendor: {vendor}}}]}}"))
    for command in ("validate", "build"):
        result = run_cli("-C", str(base_catalog), command)
        assert result.exit_code == 1 and "error[E103]: 'vendor' is" in result.output, result.output


def test_a_gpu_without_a_vendor_counts_as_nvidia_for_the_runtime_check(base_catalog):
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace(
        "box-8: {ram_gb: 8, profiles: [base]}",
        "box-8: {ram_gb: 8, profiles: [base], runtimes: [vllm, llamacpp], gpus: [{name: g, vram_gb: 8}]}"))
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 0 and "W402" not in result.output, result.output


def test_detection_asks_each_runtime_with_this_machines_hardware(monkeypatch):
    seen = []
    for name in runtimes.REGISTRY:
        monkeypatch.setitem(runtimes.REGISTRY, name, replace(
            runtimes.REGISTRY[name], detect=lambda hw, name=name: seen.append(hw) or name in ("ollama", "vllm")))
    assert runtimes.detect(frozenset({"cpu", "cuda"})) == ("ollama", "vllm")
    assert set(seen) == {frozenset({"cpu", "cuda"})} and len(seen) == len(runtimes.REGISTRY)


def test_detected_host_carries_its_runtimes(monkeypatch):
    from compiler import hosts as hostmod

    monkeypatch.setattr(hostmod, "detect_gpus", lambda: [Gpu("L4", 23034, "nvidia")])
    monkeypatch.setattr(runtimes, "detect", lambda hw: ("llamacpp", "vllm") if "cuda" in hw else ())
    detected = hostmod.detect("here")
    assert detected.runtimes == ("llamacpp", "vllm")
    assert hostmod.detect("here", with_runtimes=False).runtimes is None


def test_vllm_and_mlx_detection_need_their_hardware(monkeypatch):
    from compiler.runtimes import mlx, vllm

    monkeypatch.setattr(vllm, "installed", lambda module: True)
    monkeypatch.setattr(mlx, "installed", lambda module: True)
    assert not vllm.detect(frozenset({"cpu"})) and vllm.detect(frozenset({"cpu", "cuda"}))
    assert not mlx.detect(frozenset({"cpu", "cuda"})) and mlx.detect(frozenset({"cpu", "metal"}))


def test_ollama_is_detected_when_it_answers_and_quickly_not_when_absent(monkeypatch):
    import time

    from ollama_server import FakeOllama

    fake = FakeOllama().start()
    try:
        monkeypatch.setenv("OLLAMA_HOST", fake.base)
        assert runtimes.REGISTRY["ollama"].detect(frozenset({"cpu"}))
    finally:
        fake.stop()
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.monotonic()
    assert not runtimes.REGISTRY["ollama"].detect(frozenset({"cpu"}))
    assert time.monotonic() - started < 5


# ------------------------------------------------------------------------ (model, runtime) pairs

def test_awq_on_a_cpu_laptop_is_rejected_with_the_reason():
    plan = plan_for(["coder-awq", "coder-gguf"], host())
    assert plan.roles["code"].model == "coder-gguf" and plan.roles["code"].runtime == "llamacpp"
    assert reason(plan, "coder-awq") == "AWQ needs vllm on CUDA; laptop-16 has llamacpp, ollama"


def test_a_listed_runtime_without_its_gpu_is_named_in_the_reason():
    plan = plan_for(["coder-awq"], host(runtimes_=("vllm", "llamacpp")))
    assert plan.roles["code"].model is None
    assert reason(plan, "coder-awq") == "AWQ needs vllm on CUDA; laptop-16 has vllm but no CUDA GPU"


def test_awq_runs_on_vllm_on_a_cuda_host_in_vram_only():
    rig = host("rig", 64, [NVIDIA_24], ("llamacpp", "ollama", "vllm"))
    plan = plan_for(["coder-awq"], rig)
    role = plan.roles["code"]
    assert (role.model, role.runtime, role.placement) == ("coder-awq", "vllm", "gpu")
    small_gpu = host("rig", 64, [Gpu("T4", 3500, "nvidia")], ("vllm",))  # 2,476 MiB usable VRAM, RAM plenty
    plan = plan_for(["coder-awq"], small_gpu)
    verdict = plan.roles["code"].candidates[0]
    assert verdict.verdict == "rejected" and verdict.capacity == 3500 - 1024  # vLLM cannot spill into RAM


def test_the_first_runtime_that_can_place_it_wins():
    big = host("rig", 64, [Gpu("T4", 4096, "nvidia")], ("vllm", "transformers"))
    role = plan_for(["coder-plain"], big).roles["code"]  # 9,000 MiB: not in 3 GiB of VRAM, so not vLLM
    assert (role.runtime, role.placement) == ("transformers", "split")
    roomy = host("rig", 64, [NVIDIA_24], ("vllm", "transformers"))
    assert plan_for(["coder-plain"], roomy).roles["code"].runtime == "vllm"  # host order when both can
    assert plan_for(["coder-plain"], replace(roomy, runtimes=("transformers", "vllm"))).roles["code"].runtime \
        == "transformers"


def test_host_order_decides_between_runtimes_that_load_the_same_format():
    assert plan_for(["coder-gguf"], host(runtimes_=("ollama", "llamacpp"))).roles["code"].runtime == "ollama"
    assert plan_for(["coder-gguf"], host(runtimes_=("llamacpp", "ollama"))).roles["code"].runtime == "llamacpp"


def test_a_model_pulled_into_ollama_runs_on_ollama_only():
    role = plan_for(["coder-pulled"], host()).roles["code"]
    assert role.runtime == "ollama"
    plan = plan_for(["coder-pulled"], host(runtimes_=("llamacpp",)))
    assert reason(plan, "coder-pulled") == "GGUF from Ollama needs ollama; laptop-16 has llamacpp"


def test_an_ollama_model_without_its_ollama_name_says_so():
    text = MODELS + """  nameless: {provider: ollama, params_b: 1, context_window: 32768, workloads: [code], memory: {ram_mb: 3000}}
roles:
  code: {workload: code, prefer: [nameless]}
"""
    catalog, problems = resolve(merge_layers([Layer("sources", load_yaml_text(text, "catalog.yaml"))]))
    assert not [p for p in problems if p.severity == "error"]
    assert reason(select(catalog, host()), "nameless") \
        == "provider ollama, but no ollama.name: nothing for Ollama to run (laptop-16 has llamacpp, ollama)"


def test_mlx_runs_on_apple_silicon_only():
    mac = host("mac-36", 36, [APPLE], unified=True)
    role = plan_for(["coder-mlx"], mac).roles["code"]
    assert (role.runtime, role.placement) == ("mlx", "gpu")  # within the share of the RAM the GPU may wire
    assert reason(plan_for(["coder-mlx"], host()), "coder-mlx") \
        == "MLX needs mlx on Metal; laptop-16 has llamacpp, ollama"


def test_fallbacks_record_their_runtimes():
    rig = host("rig", 64, [NVIDIA_24], ("llamacpp", "ollama", "vllm"))
    role = plan_for(["coder-awq", "coder-gguf", "coder-pulled"], rig).roles["code"]
    assert role.output()["runtime"] == "vllm"
    assert role.output()["fallback_runtimes"] == {"coder-gguf": "llamacpp", "coder-pulled": "ollama"}


def test_a_resident_model_shared_by_two_roles_keeps_the_runtime_it_was_packed_on():
    # role a fills most of the GPU, so b's safetensors model goes to transformers (split), not vLLM;
    # c takes the same model, already resident: it is the one loaded copy, on transformers
    text = """
schema_version: 2
kind: catalog
models:
  big: {provider: local, params_b: 1, context_window: 32768, workloads: [chat], memory: {ram_mb: 20000},
        artifact: {format: gguf, repo: o/big-GGUF, file: big.gguf}}
  st: {provider: huggingface, params_b: 1, quantization: BF16, context_window: 32768, workloads: [code, chat],
       memory: {ram_mb: 8000}, artifact: {format: safetensors, repo: o/st}}
roles:
  a: {workload: chat, prefer: [big], resident: true}
  b: {workload: code, prefer: [st], resident: true}
  c: {workload: chat, prefer: [st], resident: true}
"""
    catalog, problems = resolve(merge_layers([Layer("sources", load_yaml_text(text, "catalog.yaml"))]))
    assert not [p for p in problems if p.severity == "error"]
    plan = select(catalog, host("rig", 64, [NVIDIA_24], ("llamacpp", "vllm", "transformers")))
    assert (plan.roles["a"].runtime, plan.roles["a"].placement) == ("llamacpp", "gpu")
    assert (plan.roles["b"].runtime, plan.roles["b"].placement) == ("transformers", "split")
    assert (plan.roles["c"].runtime, plan.roles["c"].placement) == ("transformers", "split")
    chosen = next(v for v in plan.roles["c"].candidates if v.model == "st")
    assert chosen.to_dict()["runtime"] == "transformers"  # explain shows the same


def test_models_fit_column_agrees_with_build_on_runtimes(base_catalog):
    add_layer(base_catalog, "20-more.yaml", """models:
  small-awq: {provider: local, params_b: 1, context_window: 8192, workloads: [chat],
              artifact: {repo: org/small-AWQ}}
""")
    rows = {r["id"]: r for r in json.loads(run_cli("-C", str(base_catalog), "models", "--host", "box-8",
                                                   "--json").stdout)}
    assert rows["small-awq"]["fit"] == "no runtime"  # build rejects it: AWQ needs vllm on CUDA
    assert rows["small-chat"]["fit"] == "cpu" and rows["cloud-mini"]["fit"] == "cloud"
    built = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert built.exit_code == 0, built.output
    trace = json.loads((base_catalog / "out" / "box-8" / "explain.json").read_text())["roles"]["chat"]
    [verdict] = [c for c in trace["candidates"] if c["model"] == "small-awq"]
    assert verdict["verdict"] == "rejected" and verdict["reason"].startswith("AWQ needs vllm on CUDA")


def test_a_required_role_nothing_can_run_names_the_reason():
    plan = plan_for(["coder-awq", "coder-mlx"], host(), required=True)
    [problem] = plan.diagnostics
    assert problem.code == "E300" and "coder-awq: AWQ needs vllm on CUDA; laptop-16 has llamacpp, ollama" \
        in problem.message


# ----------------------------------------------------------------- models.json, explain, exports

def test_models_json_records_each_roles_runtime_and_the_export_follows(base_catalog):
    models = MODELS.split("kind: catalog\n", 1)[1]
    add_layer(base_catalog, "20-more.yaml", models + """  small-chat: {ollama: {name: "small:1b"}}
roles:
  code: {workload: code, prefer: [coder-awq, coder-pulled, coder-gguf]}
  summarization: {prefer: [small-chat]}
""")
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text() + "  rig: {ram_gb: 64, profiles: [base], runtimes: [ollama, llamacpp, vllm],\n"
                                         "        gpus: [{name: RTX 4090, vram_gb: 24, vendor: nvidia}]}\n")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8", "--host", "rig")
    assert result.exit_code == 0, result.output
    box = json.loads((base_catalog / "out" / "box-8" / "models.json").read_text())
    rig = json.loads((base_catalog / "out" / "rig" / "models.json").read_text())
    assert box["host"]["runtimes"] == ["llamacpp", "ollama"]
    assert rig["host"]["runtimes"] == ["ollama", "llamacpp", "vllm"]
    assert (box["roles"]["code"]["model"], box["roles"]["code"]["runtime"]) == ("coder-pulled", "ollama")
    assert box["roles"]["code"]["fallback_runtimes"] == {"coder-gguf": "llamacpp"}
    assert box["roles"]["summarization"]["runtime"] == "llamacpp"
    assert (rig["roles"]["code"]["model"], rig["roles"]["code"]["runtime"]) == ("coder-awq", "vllm")
    assert rig["roles"]["summarization"]["runtime"] == "ollama"  # the rig lists ollama first
    script = (base_catalog / "out" / "rig" / "exports" / "llama-server.sh").read_text()
    assert "summarization)" not in script and "code)" not in script  # neither role runs on llama.cpp there
    assert "summarization)" in (base_catalog / "out" / "box-8" / "exports" / "llama-server.sh").read_text()
    explained = run_cli("-C", str(base_catalog), "explain", "box-8", "code")
    assert "chosen: coder-pulled on ollama" in explained.output
    assert "rejected  coder-awq: AWQ needs vllm on CUDA; box-8 has llamacpp, ollama" in explained.output


# ------------------------------------------------------------------------------------- load

COMPILED = {
    "host": {"name": "rig", "vram_mb": 24576},
    "roles": {"code": {"model": "coder-awq", "runtime": "vllm", "fallbacks": ["coder-gguf", "coder-pulled"],
                       "fallback_runtimes": {"coder-gguf": "llamacpp", "coder-pulled": "ollama"},
                       "placement": "gpu", "memory_mb": 3000, "context": 16384}},
    "models": {name: {"provider": "local", "context_window": 32768, **extra} for name, extra in {
        "coder-awq": {"artifact": {"format": "safetensors", "repo": "org/coder-AWQ", "quant_method": "awq"}},
        "coder-gguf": {"artifact": {"format": "gguf", "file": "coder.gguf"}},
        "coder-pulled": {"ollama": {"name": "coder:pulled"}}}.items()},
}


@pytest.fixture
def backends(monkeypatch):
    calls = []

    def llamacpp(path, settings, prompt, max_tokens=8, probe=None, decode_all=False):
        calls.append(("llamacpp", str(path)))
        return 0.5, 0.1, "hi"

    def ollama(name, settings, prompt, progress=None, interactive=False, keep_alive="30m"):
        calls.append(("ollama", name))
        return 0.5, 0.1, "hi"

    monkeypatch.setattr(loaders, "llamacpp_load", llamacpp)
    monkeypatch.setattr(loaders, "ollama_load", ollama)
    return calls


def test_load_uses_each_models_runtime_and_names_the_command_hostfit_cannot_run(backends):
    said = []
    loaded = loaders.load_role(COMPILED, "code", None, "hello", lambda model_id: Path(f"/cache/{model_id}.gguf"), {},
                               say=said.append)
    assert (loaded.model_id, loaded.backend) == ("coder-gguf", "llamacpp")
    assert backends == [("llamacpp", "/cache/coder-gguf.gguf")]
    assert said[0] == ("code: coder-awq runs on vllm: hostfit has no loader for vllm; "
                       "run it yourself: vllm serve org/coder-AWQ --max-model-len 16384")


def test_the_vllm_command_spans_the_hosts_gpus_and_holds_to_the_planned_memory(backends):
    # vLLM takes 90% of one GPU by default: on two 24 GB GPUs a model placed in their VRAM needs
    # tensor parallelism across both, and a share that leaves the rest to what hostfit packed beside it
    compiled = json.loads(json.dumps(COMPILED))
    compiled["host"] = {"name": "rig", "vram_mb": 49152, "gpus": [{"name": "3090", "vram_mb": 24576}] * 2}
    compiled["models"]["coder-awq"]["memory_mb"] = 30000
    said = []
    loaders.load_role(compiled, "code", None, "hello", lambda model_id: Path("/c/x.gguf"), {}, say=said.append)
    assert said[0].endswith("vllm serve org/coder-AWQ --max-model-len 16384 --tensor-parallel-size 2 "
                            "--gpu-memory-utilization 0.62")  # 30,000 of 49,152 MiB, rounded up


def test_load_follows_an_ollama_runtime_and_backend_overrides(backends):
    compiled = json.loads(json.dumps(COMPILED))
    compiled["roles"]["code"].update(model="coder-pulled", runtime="ollama", fallbacks=[], fallback_runtimes={})
    loaded = loaders.load_role(compiled, "code", None, "hello", lambda model_id: None, {}, say=lambda text: None)
    assert (loaded.backend, backends) == ("ollama", [("ollama", "coder:pulled")])
    compiled["roles"]["code"].update(model="coder-gguf", runtime="ollama")
    loaded = loaders.load_role(compiled, "code", "llamacpp", "hello", lambda model_id: Path("/c/x.gguf"), {},
                               say=lambda text: None)
    assert loaded.backend == "llamacpp" and backends[-1] == ("llamacpp", "/c/x.gguf")


def test_load_of_an_older_models_json_without_runtimes_uses_llamacpp(backends):
    compiled = json.loads(json.dumps(COMPILED))
    role = compiled["roles"]["code"]
    role.update(model="coder-gguf", fallbacks=[])
    del role["runtime"], role["fallback_runtimes"]
    loaded = loaders.load_role(compiled, "code", None, "hello", lambda model_id: Path("/c/x.gguf"), {},
                               say=lambda text: None)
    assert loaded.backend == "llamacpp"


def test_a_gguf_repository_without_a_file_says_what_to_add_in_fetch_and_load(base_catalog):
    # llmfit's import points at a GGUF repository (gguf_sources) without naming one of its files
    add_layer(base_catalog, "20-more.yaml", """models:
  repo-only: {provider: local, params_b: 1, quantization: Q4_K_M, context_window: 8192, workloads: [summarization],
              arch: {layers: 16, kv_heads: 8, head_dim: 64}, artifact: {format: gguf, repo: example/repo-only-GGUF}}
roles:
  digest: {workload: summarization, prefer: [repo-only]}
""")
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    want = "repo-only: artifact names repository example/repo-only-GGUF but no file"
    fetched = run_cli("-C", str(base_catalog), "fetch", "--host", "box-8", "--role", "digest")  # lock plans alike
    assert fetched.exit_code == 0 and want in fetched.stderr, fetched.output
    assert "set artifact.file to the Q4_K_M .gguf in it, or artifact.files" in fetched.stderr
    loaded = run_cli("-C", str(base_catalog), "load", "digest", "--host", "box-8")
    assert loaded.exit_code == 3 and want in loaded.stderr and "has no artifact to fetch" not in loaded.stderr


def test_load_fails_clearly_when_no_runtime_of_the_chain_has_a_loader(backends):
    compiled = json.loads(json.dumps(COMPILED))
    compiled["roles"]["code"].update(fallbacks=[], fallback_runtimes={})
    with pytest.raises(loaders.RuntimeFailure) as caught:
        loaders.load_role(compiled, "code", None, "hello", lambda model_id: None, {}, say=lambda text: None)
    assert "coder-awq: hostfit has no loader for vllm; run it yourself: vllm serve org/coder-AWQ" in str(caught.value)
    assert backends == []


# ------------------------------------------------------------------- a new runtime in one line

def test_a_new_runtime_is_one_record_and_one_registry_line(base_catalog, monkeypatch):
    onnx = Runtime(name="onnxrt", title="ONNX Runtime", loads={"onnx": ("plain",)}, hardware=("cpu", "cuda"),
                   placements=("gpu", "cpu"), detect=lambda hw: True, serve="onnxrt-serve {repo}")
    monkeypatch.setitem(runtimes.REGISTRY, onnx.name, onnx)  # the registry line
    add_layer(base_catalog, "20-onnx.yaml", """models:
  tagger: {provider: local, params_b: 0.1, context_window: 512, workloads: [classification],
           memory: {ram_mb: 800}, artifact: {format: onnx, repo: org/tagger-onnx}}
roles:
  classification: {workload: classification}
""")
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("box-8: {ram_gb: 8, profiles: [base]}",
                                               "box-8: {ram_gb: 8, profiles: [base], runtimes: [llamacpp, onnxrt]}"))
    result = run_cli("-C", str(base_catalog), "build", "--all")
    assert result.exit_code == 0, result.output
    box8 = json.loads((base_catalog / "out" / "box-8" / "models.json").read_text())
    role = box8["roles"]["classification"]
    assert (role["model"], role["runtime"]) == ("tagger", "onnxrt")
    box32 = json.loads((base_catalog / "out" / "box-32" / "models.json").read_text())
    assert box32["roles"]["classification"]["model"] is None  # the default runtimes load no ONNX
    explained = run_cli("-C", str(base_catalog), "explain", "box-32", "classification").output
    assert "ONNX needs onnxrt; box-32 has llamacpp, ollama" in explained
    assert runtimes.detect(frozenset({"cpu"}))[-1] == "onnxrt"



def test_diff_shows_a_roles_runtime_change(base_catalog, tmp_path):
    import shutil

    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    shutil.copytree(base_catalog / "out", tmp_path / "before")
    add_layer(base_catalog, "20-ollama.yaml", "models:\n  small-chat: {ollama: {name: \"small:1b\"}}\n")
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("box-8: {ram_gb: 8, profiles: [base]}",
                                               "box-8: {ram_gb: 8, profiles: [base], runtimes: [ollama, llamacpp]}"))
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    result = run_cli("diff", str(tmp_path / "before"), str(base_catalog / "out"))
    assert "summarization runtime: llamacpp -> ollama" in result.output


def test_a_machine_with_no_runtime_detected_compiles_for_the_default_and_warns(base_catalog, monkeypatch):
    monkeypatch.setattr(runtimes, "detect", lambda hw: ())
    result = run_cli("-C", str(base_catalog), "build", "--host", "local")
    assert result.exit_code == 0, result.output
    assert "warning[W403]: no runtime detected here" in result.stderr
    compiled = json.loads((base_catalog / "out" / "local" / "models.json").read_text())
    assert compiled["host"]["runtimes"] == ["llamacpp", "ollama"] and compiled["roles"]["chat"]["runtime"] == "llamacpp"
    monkeypatch.setattr(runtimes, "detect", lambda hw: ("transformers", "llamacpp"))  # a rebuild sees the change
    result = run_cli("-C", str(base_catalog), "build", "--host", "local")
    assert result.exit_code == 0 and "W403" not in result.stderr
    compiled = json.loads((base_catalog / "out" / "local" / "models.json").read_text())
    assert compiled["host"]["runtimes"] == ["transformers", "llamacpp"]


def test_the_no_runtime_warning_names_the_default_it_compiles_for_on_apple_silicon(base_catalog, monkeypatch):
    from compiler import hosts as hostmod

    monkeypatch.setattr(runtimes, "detect", lambda hw: ())
    monkeypatch.setattr(hostmod, "apple_silicon", lambda: True)
    monkeypatch.setattr(hostmod, "detect_gpus", lambda: [])
    result = run_cli("-C", str(base_catalog), "build", "--host", "local")
    assert result.exit_code == 0, result.output
    compiled = json.loads((base_catalog / "out" / "local" / "models.json").read_text())
    assert compiled["host"]["runtimes"] == ["llamacpp", "ollama", "mlx"]
    assert "compiling for the default runtimes, llamacpp, ollama, mlx" in result.stderr


def test_llamacpp_on_apple_silicon_offloads_every_layer_to_metal(base_catalog, backends):
    # within the GPU's share of the one pool a Mac's model is placed `gpu`, every layer offloaded;
    # -ngl 0 would run it on the CPU cores
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text() + "  mac-16: {ram_gb: 16, unified_memory: true, profiles: [base],\n"
                     "           gpus: [{name: M2, vram_gb: 16, vendor: apple}]}\n")
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    mac = json.loads((base_catalog / "out" / "mac-16" / "models.json").read_text())
    role = mac["roles"]["summarization"]
    assert (role["runtime"], role["placement"], role["gpu_layers"]) == ("llamacpp", "gpu", -1)
    script = (base_catalog / "out" / "mac-16" / "exports" / "llama-server.sh").read_text()
    assert "-ngl 999" in script and "-ngl 0 " not in script
    assert "-ngl 0 " in (base_catalog / "out" / "box-8" / "exports" / "llama-server.sh").read_text()  # no GPU
    assert loaders.settings_for(role, {}, None, None, True, False).gpu_layers == -1
    box = json.loads((base_catalog / "out" / "box-8" / "models.json").read_text())
    assert loaders.settings_for(box["roles"]["summarization"], {}, None, None, True, False).gpu_layers == 0


def test_a_resident_model_shared_by_a_longer_context_role_takes_the_extra_cache():
    # one loaded copy serves both roles, so it needs the longer context's cache: the difference must
    # fit beside the other resident models, or the longer role cannot share it
    small = {"provider": "local", "params_b": 1, "quantization": "Q4_K_M", "context_window": 32768,
             "workloads": ["chat"], "arch": {"layers": 16, "kv_heads": 8, "head_dim": 64}}

    def plan(filler: int):
        text = f"""
schema_version: 2
kind: catalog
models:
  filler: {json.dumps(small | {"memory": {"ram_mb": filler}})}
  small: {json.dumps(small)}
roles:
  a-filler: {{workload: chat, prefer: [filler], resident: true}}
  b-short: {{workload: chat, prefer: [small], resident: true, requires: {{context_min: 4096}}}}
  c-long: {{workload: chat, prefer: [small], resident: true, requires: {{context_min: 32768}}}}
"""
        catalog, problems = resolve(merge_layers([Layer("sources", load_yaml_text(text, "catalog.yaml"))]))
        assert not [p for p in problems if p.severity == "error"]
        return select(catalog, host("box-8", 8))

    roomy = plan(1000)
    budget, short, long_ = roomy.budget.ram_mb, roomy.roles["b-short"].memory_mb, roomy.roles["c-long"].memory_mb
    assert long_ - short >= 800  # 896 MiB more f16 cache at 32k
    for room, served in ((100, False), (long_ - short + 100, True)):
        tight = plan(budget - short - room)
        assert tight.roles["b-short"].model == "small"
        assert (tight.roles["c-long"].model == "small") is served, room


def test_what_is_detected_here_never_reaches_a_declared_hosts_output(base_catalog, monkeypatch):
    # a build on a machine whose name is declared compiles the declaration: the same bytes whether
    # this machine has vLLM and a GPU or nothing at all
    from compiler import hosts as hostmod

    outputs = []
    for found, gpus in (((), []), (("vllm", "transformers", "mlx"), [Gpu("H100", 81559, "nvidia")])):
        monkeypatch.setattr(runtimes, "detect", lambda hw, found=found: found)
        monkeypatch.setattr(hostmod, "detect_gpus", lambda gpus=gpus: gpus)
        monkeypatch.setenv("HOST", "box-8")
        result = run_cli("-C", str(base_catalog), "build")
        assert result.exit_code == 0 and "W403" not in result.stderr, result.output
        outputs.append((base_catalog / "out" / "box-8" / "models.json").read_bytes())
        (base_catalog / "out" / "box-8" / "models.json").unlink()
    assert outputs[0] == outputs[1] and json.loads(outputs[0])["host"]["runtimes"] == ["llamacpp", "ollama"]
