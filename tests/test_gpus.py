"""GPUs: unified memory (Apple silicon) within the share macOS lets the GPU wire, splits (layers, or a
mixture of experts' expert tensors in RAM), tensor split over several GPUs, the llama-server export
(one port per role, LiteLLM sent there), `hostfit load`'s settings, and GPU detection here."""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from compiler import hosts as hostmod
from compiler import speed
from compiler.executor import loaders
from compiler.hosts import GIB_IN_MB, Gpu, Host
from compiler.load import load_yaml_text
from compiler.memory import Estimate, expert_weights_mib
from compiler.merge import Layer, merge_layers
from compiler.offload import ALL_LAYERS, Offload, offload, split_layers
from compiler.options import BuildOptions
from compiler.pipeline import Project
from compiler.resolve import resolve
from compiler.select import host_budget, placed_speed, select

from conftest import REPO, add_layer, copy_catalog

# ----------------------------------------------------------------------------- unified memory

MAC = Gpu("Apple M3 Pro", 36 * GIB_IN_MB, "apple")
# Declared needs (memory.ram_mb raises the estimate to these round figures) around the GPU's share.
MODELS = """
schema_version: 2
kind: catalog
models:
  small:  {provider: local, params_b: 7, quantization: Q4_K_M, context_window: 32768, workloads: [chat],
           memory: {ram_mb: 8000}, artifact: {format: gguf, file: small.gguf},
           arch: {layers: 28, kv_heads: 4, head_dim: 128, heads: 28, hidden_size: 3584, vocab_size: 152064}}
  large:  {provider: local, params_b: 32, quantization: Q4_K_M, context_window: 32768, workloads: [chat],
           memory: {ram_mb: 20000}, artifact: {format: gguf, file: large.gguf},
           arch: {layers: 64, kv_heads: 8, head_dim: 128, heads: 40, hidden_size: 5120, vocab_size: 152064}}
  near:   {provider: local, params_b: 32, quantization: Q4_K_M, context_window: 32768, workloads: [chat],
           memory: {ram_mb: 22000}, artifact: {format: gguf, file: near.gguf},
           arch: {layers: 64, kv_heads: 8, head_dim: 128, heads: 40, hidden_size: 5120, vocab_size: 152064}}
  mlxed:  {provider: local, params_b: 32, quantization: MLX_4BIT, context_window: 32768, workloads: [chat],
           memory: {ram_mb: 20000}, artifact: {format: mlx, repo: mlx-community/large-4bit},
           arch: {layers: 64, kv_heads: 8, head_dim: 128, heads: 40, hidden_size: 5120, vocab_size: 152064}}
"""


def plan_on(host: Host, roles: str):
    catalog, problems = resolve(merge_layers([Layer("sources", load_yaml_text(MODELS + "roles:\n" + roles,
                                                                              "catalog.yaml"))]))
    assert not [p for p in problems if p.severity == "error"]
    return select(catalog, host)


def mac(ram_gb: float, fraction: float | None = None) -> Host:
    return Host("mac", int(ram_gb * GIB_IN_MB), (Gpu("Apple", int(ram_gb * GIB_IN_MB), "apple"),),
                unified_memory=True, gpu_memory_fraction=fraction)


@pytest.mark.parametrize("ram_gb, share", [(16, 2 / 3), (36, 2 / 3), (48, 3 / 4), (128, 3 / 4)])
def test_the_gpu_share_of_unified_memory_follows_macos_default(ram_gb, share):
    assert mac(ram_gb).gpu_share_mb == int(ram_gb * GIB_IN_MB * share)
    assert mac(ram_gb, 0.9).gpu_share_mb == int(ram_gb * GIB_IN_MB * 0.9)  # gpu_memory_fraction overrides
    assert Host("pc", int(ram_gb * GIB_IN_MB), (Gpu("RTX", 24 * GIB_IN_MB),)).gpu_share_mb == 0


def test_unified_memory_is_one_pool_with_the_gpu_share_inside_it():
    budget = host_budget(mac(36), {"ram_reserve_gb": 2, "vram_reserve_gb": 1, "basis": "total"})
    assert (budget.ram_mb, budget.vram_mb, budget.unified) == (34 * GIB_IN_MB, 24 * GIB_IN_MB, True)
    assert budget.capacity() == 34 * GIB_IN_MB, "RAM and the GPU share are one pool, not added"
    assert budget.place(20000) == "gpu"
    assert budget.place(30000) == "cpu", "above the GPU share: the CPU, never a split of the one pool"
    assert budget.place(40000) is None
    budget.take(20000, "gpu")  # a GPU placement takes from the one pool ...
    assert (budget.ram_mb, budget.vram_mb) == (34 * GIB_IN_MB - 20000, 24 * GIB_IN_MB - 20000)
    budget.take(10000, "cpu")  # ... and so does a CPU one, which leaves the GPU no more than what is left
    assert budget.ram_mb == 34 * GIB_IN_MB - 30000 and budget.vram_mb == min(24 * GIB_IN_MB - 20000, budget.ram_mb)


def test_a_mac_places_on_its_gpu_up_to_the_share_and_offloads_every_layer():
    plan = plan_on(mac(36), "  a: {workload: chat, prefer: [large]}\n  b: {workload: chat, prefer: [small]}\n")
    for name in "ab":
        role = plan.roles[name]
        assert (role.placement, role.runtime) == ("gpu", "llamacpp")
        assert role.output()["gpu_layers"] == ALL_LAYERS and "tensor_split" not in role.output()
    # 16 GB: the share is 10,922 MiB; 20,000 MiB is above the usable RAM, 8,000 fits the GPU
    plan = plan_on(mac(16), "  a: {workload: chat, prefer: [large, small]}\n")
    assert (plan.roles["a"].model, plan.roles["a"].placement) == ("small", "gpu")
    # the share lowered below the model: the CPU, with no GPU settings
    plan = plan_on(mac(36, 0.2), "  a: {workload: chat, prefer: [small]}\n")
    assert plan.roles["a"].placement == "cpu" and "gpu_layers" not in plan.roles["a"].output()


def test_on_unified_memory_headroom_is_judged_in_the_pool_the_share_only_caps_the_gpu():
    """max_fill keeps room for the OS, an IDE and a browser, which live in the one pool: a model at 90% of
    the GPU's share of a 36 GB Mac leaves a third of the machine free and is comfortable. Judged against
    the share it was tight, and a larger model on the CPU (slower, fuller) looked the better fit."""
    plan = plan_on(mac(36), "  a: {workload: chat, prefer: [near]}\n")
    role = plan.roles["a"]
    assert role.placement == "gpu" and 0.85 < role.memory_mb / (24 * GIB_IN_MB) <= 1
    assert role.fit == "comfortable" and not plan.diagnostics
    chosen = role.candidates[0]
    assert f"of {34 * GIB_IN_MB:,} MiB" in chosen.fill


def test_the_gpu_runtime_context_is_charged_per_discrete_gpu_and_not_on_metal():
    on_mac = plan_on(mac(36), "  a: {workload: chat, prefer: [small]}\n").roles["a"].candidates[0].memory
    nvidia = Host("pc", 36 * GIB_IN_MB, (Gpu("RTX", 24 * GIB_IN_MB, "nvidia"),))
    on_cuda = plan_on(nvidia, "  a: {workload: chat, prefer: [small]}\n").roles["a"].candidates[0].memory
    assert on_cuda.overhead_mb - on_mac.overhead_mb == 600  # selection.gpu_runtime_overhead_mb
    two = Host("pc", 36 * GIB_IN_MB, (Gpu("RTX", 24 * GIB_IN_MB, "nvidia"),) * 2)
    on_two = plan_on(two, "  a: {workload: chat, prefer: [small]}\n").roles["a"].candidates[0].memory
    assert on_two.overhead_mb - on_cuda.overhead_mb == 600, "each GPU holds a CUDA context of its own"


def test_resident_roles_on_a_mac_share_one_pool():
    host = Host("mac", 36 * GIB_IN_MB, (MAC,), unified_memory=True, max_loaded_models=3)
    plan = plan_on(host, "  a: {workload: chat, prefer: [large], resident: true}\n"
                         "  b: {workload: chat, prefer: [small], resident: true}\n")
    # 20,000 on the GPU leaves 4,576 MiB of its share: the 8,000 MiB model goes to the CPU side
    assert (plan.roles["a"].placement, plan.roles["b"].placement) == ("gpu", "cpu")
    assert plan.roles["b"].model == "small", "34 GiB usable hold both: the pool is not counted twice"


def test_mlx_runs_on_the_gpu_within_the_share_only():
    host = Host("mac", 36 * GIB_IN_MB, (MAC,), unified_memory=True, runtimes=("mlx",))
    assert plan_on(host, "  a: {workload: chat, prefer: [mlxed]}\n").roles["a"].placement == "gpu"
    low = Host("mac", 36 * GIB_IN_MB, (MAC,), unified_memory=True, runtimes=("mlx",), gpu_memory_fraction=0.5)
    assert plan_on(low, "  a: {workload: chat, prefer: [mlxed]}\n").roles["a"].model is None


# ---------------------------------------------------------------------------------- offload

def need(mb: int, weights: int, kv: int, overhead: int) -> Estimate:
    return Estimate(mb, "estimated", weights, kv, overhead)


GPT_OSS_120B = {"params_b": 120.41, "quantization": "MXFP4",
                "arch": {"layers": 36, "experts": 128, "active_params_b": 9.6}}


def test_a_dense_split_puts_the_layers_that_fit_beside_the_overhead_on_the_gpu():
    n = need(42000, 38000, 2800, 1200)
    layers = split_layers(80, n, 23552)
    per_layer = (38000 + 2800) / 80
    assert 1200 + layers * per_layer <= 23552 < 1200 + (layers + 1) * per_layer
    assert split_layers(80, n, 500) == 0 and split_layers(80, n, 90000) == 80 and split_layers(0, n, 23552) == 0
    dense = offload({"arch": {"layers": 80}}, n, "split", 23552, (24576,))
    assert (dense.gpu_layers, dense.cpu_moe_layers, dense.tensor_split) == (layers, None, ())


def test_a_mixture_of_experts_split_keeps_the_fewest_expert_layers_in_ram():
    n = need(65498, 60000, 1000, 4498)
    experts = expert_weights_mib(GPT_OSS_120B, n.weights_mb)
    assert experts == pytest.approx((120.41 - 9.6) * 1e9 * 4.4 / 8 / 2**20)
    settings = offload(GPT_OSS_120B, n, "split", 23552, (24576,))
    m = settings.cpu_moe_layers

    def on_gpu(cpu_layers):  # everything but the experts of the first `cpu_layers` layers
        return n.mb - experts * cpu_layers / 36

    assert on_gpu(m) <= 23552 < on_gpu(m - 1), "the GPU holds as many expert layers as fit, no more"
    assert settings.gpu_layers == split_layers(36, n, 23552), "runtimes without expert offload split by layers"
    # when even attention and shared weights do not fit beside the overhead: no expert offload
    assert offload(GPT_OSS_120B, n, "split", 4000, (4096,)).cpu_moe_layers is None
    assert expert_weights_mib({"params_b": 8, "arch": {"layers": 32}}, 4000) == 0  # dense


def test_a_split_reads_what_its_compiled_offload_leaves_in_ram():
    """Speed follows offload.py's layout: a layer split reads gpu_layers / layers on the GPU; with the
    experts of M layers in RAM the CPU reads only the experts a token routes to in those M layers."""
    host = Host("ws", 64 * GIB_IN_MB, (Gpu("RTX 4090", 24 * GIB_IN_MB),))
    model = {**GPT_OSS_120B, "arch": {**GPT_OSS_120B["arch"], "active_params_b": 5.13, "experts_used": 4}}
    by_layers = speed.estimate(model, host, "split", 4096, layout=Offload(12), experts_in_ram=True)
    assert by_layers.gpu_share == pytest.approx(12 / 36, abs=0.001)
    moe = speed.estimate(model, host, "split", 4096, layout=Offload(12, 26), experts_in_ram=True)
    routed = (120.41 - 5.13) * 4 / (128 - 4)  # of the 5.13B active, what the routed experts hold
    assert moe.gpu_share == pytest.approx(1 - routed / 5.13 * 26 / 36 * moe.weights_bytes / moe.bytes_per_token,
                                          abs=0.001)
    assert moe.tokens_per_s > 1.5 * by_layers.tokens_per_s  # the CPU reads ~1.4 GB a token, not ~2.7
    fewer = speed.estimate(model, host, "split", 4096, layout=Offload(12, 20), experts_in_ram=True)
    assert fewer.tokens_per_s > moe.tokens_per_s
    # a runtime that splits by layers (llama-cpp-python, Ollama) gets the layer split's speed
    assert speed.estimate(model, host, "split", 4096, layout=Offload(12, 26)).tokens_per_s == by_layers.tokens_per_s
    # routing unknown (no experts_used): every active weight of those layers, never faster than known
    unknown = {**model, "arch": {k: v for k, v in model["arch"].items() if k != "experts_used"}}
    guessed = speed.estimate(unknown, host, "split", 4096, layout=Offload(12, 26), experts_in_ram=True)
    assert by_layers.tokens_per_s < guessed.tokens_per_s < moe.tokens_per_s
    # layers unknown: offload.py puts none on the GPU, so the whole model is read from RAM
    flat = {"params_b": 8, "quantization": "Q4_K_M"}
    assert (speed.estimate(flat, host, "split", 4096, layout=Offload(0)).tokens_per_s
            == speed.estimate(flat, host, "cpu", 4096).tokens_per_s)


def test_several_gpus_split_tensors_in_proportion_to_their_vram():
    settings = offload({"arch": {"layers": 32}}, need(9000, 8000, 500, 500), "gpu", 40000, (24576, 16384))
    assert settings.to_dict() == {"gpu_layers": ALL_LAYERS, "tensor_split": [24576, 16384]}
    assert offload({}, need(9000, 8000, 500, 500), "cpu", 40000, (24576, 16384)) is None


def test_load_takes_the_compiled_gpu_settings_for_the_model_and_each_fallback():
    role = {"model": "big", "placement": "split", "gpu_layers": 12, "cpu_moe_layers": 26, "tensor_split": [3, 1],
            "fallback_offload": {"mid": {"gpu_layers": -1}}, "context": 4096}
    settings = loaders.settings_for(role, {}, 1, None, True, False, "big")
    assert (settings.gpu_layers, settings.tensor_split) == (12, (3, 1))
    assert loaders.settings_for(role, {}, 1, None, True, False, "mid").gpu_layers == -1
    assert loaders.settings_for(role, {}, 1, None, True, False, "cpu-only").gpu_layers == 0
    assert loaders.settings_for(role, {}, 1, 5, True, False, "big").gpu_layers == 5  # --gpu-layers wins


# ------------------------------------------------------------- exports of three GPU hosts

EXTRA_HOSTS = {
    "mac-36": {"description": "36 GB Apple silicon laptop", "ram_gb": 36, "unified_memory": True,
               "gpus": [{"name": "Apple M3 Pro", "vram_gb": 36, "vendor": "apple"}],
               "profiles": ["coding", "writing"], "max_loaded_models": 2},
    "rig-2x24": {"description": "128 GB with two 24 GB GPUs", "ram_gb": 128,
                 "gpus": [{"name": "RTX 3090", "vram_gb": 24, "vendor": "nvidia"},
                          {"name": "RTX 3090", "vram_gb": 24, "vendor": "nvidia"}],
                 "profiles": ["research"], "max_loaded_models": 3},
}
GPU_HOSTS = ["mac-36", "workstation", "rig-2x24"]


@pytest.fixture(scope="module")
def gpu_hosts(tmp_path_factory):
    """The shipped catalog with a 36 GB Mac and a two-GPU host added to its inventory."""
    root = copy_catalog(REPO, tmp_path_factory.mktemp("gpus"))
    path = root / "sources" / "hosts.yaml"
    inventory = yaml.safe_load(path.read_text())
    inventory["hosts"].update(EXTRA_HOSTS)
    path.write_text(yaml.safe_dump(inventory))
    report = Project(root).compile(BuildOptions(hosts=tuple(GPU_HOSTS)), write=False)
    assert report.ok
    return {r.host.name: r for r in report.results}


@pytest.mark.parametrize("host", GPU_HOSTS)
def test_gpu_host_exports(gpu_hosts, host, snapshot):
    """llama-server.sh, and each role's placement and GPU settings as models.json records them."""
    roles = gpu_hosts[host].output["roles"]
    keys = ("model", "runtime", "placement", "memory_mb", "gpu_layers", "cpu_moe_layers", "tensor_split")
    table = "\n".join(f"{name}: " + json.dumps({k: role[k] for k in keys if k in role})
                      for name, role in sorted(roles.items()))
    assert gpu_hosts[host].exports["llama-server.sh"].decode() + "==> roles <==\n" + table == snapshot


@pytest.mark.parametrize("host", GPU_HOSTS)
def test_no_gpu_left_idle_and_nothing_that_would_not_fit(gpu_hosts, host):
    output = gpu_hosts[host].output
    facts = output["host"]
    vram = facts["vram_mb"] - 1024 if not EXTRA_HOSTS.get(host, {}).get("unified_memory") else \
        int(facts["ram_mb"] * 2 / 3)
    gpus = len(facts["gpus"])
    served = [role for role in output["roles"].values() if role["model"] and role["runtime"] == "llamacpp"]
    assert served
    for role in served:
        model = output["models"][role["model"]]
        if role["placement"] == "gpu":
            assert role["memory_mb"] <= vram and role["gpu_layers"] == ALL_LAYERS
        elif role["placement"] == "split":
            assert role["memory_mb"] > vram
            layers = model["arch"]["layers"]
            assert 0 < role["gpu_layers"] < layers
            if role.get("cpu_moe_layers") is not None:
                assert 0 < role["cpu_moe_layers"] <= layers
        else:  # the CPU: only where the GPU could not hold it beside the resident roles packed before it
            assert "gpu_layers" not in role
            assert role["resident"] or role["memory_mb"] > vram
        if gpus > 1 and role["placement"] in ("gpu", "split"):
            assert role["tensor_split"] == [g["vram_mb"] for g in facts["gpus"]]
    assert any(role["placement"] in ("gpu", "split") for role in served), "the GPU is used"


def test_the_workstation_planner_keeps_gpt_oss_120b_experts_in_ram(gpu_hosts):
    planner = gpu_hosts["workstation"].output["roles"]["planner"]
    assert (planner["model"], planner["placement"]) == ("gpt-oss-120b", "split")
    script = gpu_hosts["workstation"].exports["llama-server.sh"].decode()
    assert f"-ngl 999 --n-cpu-moe {planner['cpu_moe_layers']} " in script


def test_a_split_role_s_speed_is_that_of_its_compiled_offload(gpu_hosts):
    """models.json's tok/s of every split role is the speed of the layers and experts it records,
    the settings llama-server.sh passes (one layout, not a share of memory of its own)."""
    splits = 0
    for result in gpu_hosts.values():
        for name, role in result.output["roles"].items():
            if role["placement"] != "split" or role["runtime"] != "llamacpp":
                continue
            splits += 1
            layout = Offload(role["gpu_layers"], role.get("cpu_moe_layers"), tuple(role.get("tensor_split", ())))
            expected = speed.estimate(result.output["models"][role["model"]], result.host, "split", role["context"],
                                      role.get("kv_cache_type"), layout=layout, experts_in_ram=True)
            assert role["tokens_per_s"] == expected.tokens_per_s, (result.host.name, name)
    assert splits


def test_the_36gb_mac_runs_gpt_oss_20b_and_a_14b_coder_on_its_gpu(gpu_hosts):
    roles = gpu_hosts["mac-36"].output["roles"]
    assert (roles["chat"]["model"], roles["chat"]["placement"]) == ("gpt-oss-20b", "gpu")
    assert roles["code"]["model"].startswith("qwen2.5-coder-14b") and roles["code"]["placement"] == "gpu"
    script = gpu_hosts["mac-36"].exports["llama-server.sh"].decode()
    assert "-ngl 0" not in script


def test_each_served_role_has_its_own_port_and_litellm_goes_there(gpu_hosts):
    for host in GPU_HOSTS:
        files = gpu_hosts[host].exports
        script = files["llama-server.sh"].decode()
        config = yaml.safe_load(files["litellm-config.yaml"])
        entries = {e["model_name"]: e["litellm_params"] for e in config["model_list"]}
        ports = []
        for line in script.splitlines():
            if "--port " in line:
                name = line.split("--alias ", 1)[1].split()[0]
                port = int(line.split("--port ", 1)[1].split()[0])
                ports.append(port)
                assert entries[name] == {"model": f"openai/{name}", "api_base": f"http://127.0.0.1:{port}/v1"}
        assert ports and len(set(ports)) == len(ports)
        roles = gpu_hosts[host].output["roles"]
        assert len(ports) == sum(1 for r in roles.values() if r["model"] and r["runtime"] == "llamacpp")


# ------------------------------------------------------------------------------- detection

def fake_tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


ROCM_JSON = {"card0": {"Card Series": "Radeon RX 7900 XTX", "VRAM Total Memory (B)": "25753026560",
                       "VRAM Total Used Memory (B)": "1"},
             "card1": {"Card Series": "Radeon Pro W7800", "VRAM Total Memory (B)": "34359738368"},
             "system": {"Driver version": "6.8"}}


def test_amd_gpus_are_read_from_rocm_smi_json():
    gpus = hostmod.amd_gpus(json.dumps(ROCM_JSON))
    assert gpus == [Gpu("Radeon RX 7900 XTX", 25753026560 // 2**20, "amd"), Gpu("Radeon Pro W7800", 32768, "amd")]
    assert hostmod.amd_gpus("not json") == [] and hostmod.amd_gpus('["card0"]') == [] and hostmod.amd_gpus(None) == []


def test_the_apple_gpu_is_named_by_system_profiler():
    text = json.dumps({"SPDisplaysDataType": [{"sppci_model": "Apple M3 Pro", "sppci_cores": "18"}]})
    assert hostmod.apple_gpu_name(text) == "Apple M3 Pro"
    assert hostmod.apple_gpu_name("{}") == hostmod.apple_gpu_name("garbage") == "Apple silicon GPU"


@pytest.mark.skipif(os.name != "posix", reason="fake tools are scripts")
def test_detection_runs_the_tools_bounded_and_takes_a_failure_for_no_gpu(tmp_path, monkeypatch):
    fake_tool(tmp_path, "nvidia-smi", "print('NVIDIA L4, 23034')")
    fake_tool(tmp_path, "rocm-smi", f"print({json.dumps(json.dumps(ROCM_JSON))})")
    fake_tool(tmp_path, "sysctl", "print(38654705664)")
    fake_tool(tmp_path, "system_profiler", "import time; time.sleep(30)")  # hangs: bounded by the timeout
    monkeypatch.setenv("PATH", str(tmp_path))
    assert [g.vendor for g in hostmod.detect_gpus()] == ["nvidia", "amd", "amd"]
    assert hostmod.detect_apple_gpu(0, timeout=0.5) == (Gpu("Apple silicon GPU", 36864, "apple"),)
    fake_tool(tmp_path, "rocm-smi", "import sys; sys.exit(3)")
    assert [g.vendor for g in hostmod.detect_gpus()] == ["nvidia"]
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert hostmod.detect_gpus() == [] and hostmod.detect_apple_gpu(16384)[0].vram_mb == 16384


def test_detect_on_apple_silicon_declares_one_unified_gpu(monkeypatch):
    monkeypatch.setattr(hostmod, "apple_silicon", lambda: True)
    monkeypatch.setattr(hostmod, "detect_apple_gpu", lambda ram_mb: (Gpu("Apple M2", ram_mb, "apple"),))
    monkeypatch.setattr(hostmod, "detect_gpus", lambda: pytest.fail("no nvidia-smi/rocm-smi on a Mac"))
    host = hostmod.detect(with_runtimes=False)
    assert host.unified_memory and host.gpus == (Gpu("Apple M2", host.ram_mb, "apple"),)
    assert 0 < host.gpu_share_mb < host.ram_mb
    assert math.isclose(host.gpu_share_mb / host.ram_mb, 2 / 3 if host.ram_mb <= 36 * GIB_IN_MB else 3 / 4,
                        abs_tol=1e-3)


def test_explain_shows_the_offload_arithmetic(gpu_hosts):
    from compiler import explain

    for host, role_name in (("workstation", "planner"), ("mac-36", "code")):
        result = gpu_hosts[host]
        text = explain.render(json.loads(result.explain_bytes), role_name)
        role = result.output["roles"][role_name]
        line = next(line for line in text.splitlines() if line.startswith("  offload: "))
        if role["placement"] == "split":
            assert f"experts of the first {role['cpu_moe_layers']}:" in line
            assert f"{role['gpu_layers']} of {result.output['models'][role['model']]['arch']['layers']} layers" in line
        else:
            assert line.startswith("  offload: every layer on the GPU (") and f"{role['memory_mb']:,} <= " in line


def test_hostfit_host_shows_the_gpu_share_of_a_mac(monkeypatch):
    from conftest import run_cli

    monkeypatch.setattr(hostmod, "apple_silicon", lambda: True)
    monkeypatch.setattr(hostmod, "detect_apple_gpu", lambda ram_mb: (Gpu("Apple M2", ram_mb, "apple"),))
    result = run_cli("host", "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["gpus"][0]["vendor"] == "apple" and 0 < facts["gpu_share_mb"] < facts["ram_mb"]
    assert "gpu share:" in run_cli("host").stdout


def test_a_gpu_memory_fraction_outside_0_1_is_refused_at_its_line(base_catalog):
    from conftest import run_cli

    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text() + "  mac: {ram_gb: 16, unified_memory: true, gpu_memory_fraction: 1.5}\n")
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1
    assert "sources/hosts.yaml:" in result.output and "gpu_memory_fraction" in result.output


@pytest.mark.parametrize("gpu_layers, sent", [(12, {"num_gpu": 12}), (-1, {}), (0, {})])
def test_ollama_gets_the_compiled_layers_of_a_split_and_fits_the_rest_itself(monkeypatch, gpu_layers, sent):
    from ollama_server import FakeOllama

    fake = FakeOllama().start()
    try:
        monkeypatch.setenv("OLLAMA_HOST", fake.base)
        loaders.ollama_load("tiny:latest", loaders.Settings(context=128, threads=1, gpu_layers=gpu_layers), "hi")
        (body,) = [body for path, body in fake.requests if path == "/api/generate"]
        assert body["options"] == {"num_ctx": 128, "num_predict": 8, "temperature": 0, **sent}
    finally:
        fake.stop()


def test_llama_cpp_python_gets_the_compiled_layers_and_tensor_split(monkeypatch, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    seen = {}

    class Recorder:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def __call__(self, prompt, **kwargs):
            return iter([{"choices": [{"text": "hi"}]}])

    monkeypatch.setattr(llama_cpp, "Llama", Recorder)
    role = {"model": "m", "placement": "split", "gpu_layers": 26, "cpu_moe_layers": 11,
            "tensor_split": [24576, 24576], "context": 4096}
    settings = loaders.settings_for(role, {}, 1, None, True, False, "m")
    loaders.llamacpp_load(tmp_path / "m.gguf", settings, "hi")
    assert (seen["n_gpu_layers"], seen["tensor_split"]) == (26, [24576.0, 24576.0])
    loaders.llamacpp_load(tmp_path / "m.gguf", loaders.settings_for({"placement": "cpu"}, {}, 1, None, True, False),
                          "hi")
    assert (seen["n_gpu_layers"], seen["tensor_split"]) == (0, None)


def test_litellm_sends_a_local_fallback_to_the_server_running_it_else_to_a_port_of_its_own():
    from compiler import exports

    gguf = {"provider": "local", "artifact": {"format": "gguf", "file": "x.gguf"}}
    document = {
        "host": {"name": "h"}, "profiles": [], "aliases": {},
        "roles": {"a": {"model": "m1", "fallbacks": ["m2", "hf", "pulled"], "runtime": "llamacpp", "workload": "chat"},
                  "b": {"model": "m2", "fallbacks": [], "runtime": "llamacpp", "workload": "chat"},
                  "c": {"model": "hf", "fallbacks": [], "runtime": "transformers", "workload": "chat"}},
        "models": {"m1": gguf, "m2": gguf, "pulled": {**gguf, "ollama": {"name": "p:1b"}},
                   "hf": {"provider": "huggingface", "artifact": {"format": "safetensors", "repo": "org/hf"}}},
    }
    servers = exports.llama_servers(document)
    assert {name: s["port"] for name, s in servers.items()} == {"a": 8080, "b": 8081}
    assert exports.model_ports(document, servers) == {"m1": {"port": 8080, "served": True},
                                                      "m2": {"port": 8081, "served": True},
                                                      "hf": {"port": 8082, "served": False}}
    config = yaml.safe_load(exports.render(document, ["litellm"], None)["litellm-config.yaml"])
    bases = {e["model_name"]: e["litellm_params"].get("api_base") for e in config["model_list"]}
    assert bases == {"a": "http://127.0.0.1:8080/v1", "a/m2": "http://127.0.0.1:8081/v1",
                     "a/hf": "http://127.0.0.1:8082/v1", "a/pulled": "http://127.0.0.1:11434",
                     "b": "http://127.0.0.1:8081/v1", "c": "http://127.0.0.1:8082/v1"}


def test_the_workstation_s_expert_offload_beats_reading_gpt_oss_120b_from_ram(gpu_hosts):
    """With its experts in RAM only the 4 experts of 128 a token routes to are read by the CPU, so the
    split runs well above the same model on the CPU alone (~20 tok/s on a 4090 and DDR4, not ~8)."""
    result = gpu_hosts["workstation"]
    model = result.output["models"]["gpt-oss-120b"]
    assert model["arch"].get("experts_used"), "a split's CPU reads depend on how many experts a token uses"
    planner = result.output["roles"]["planner"]
    on_cpu = speed.estimate(model, result.host, "cpu", planner["context"]).tokens_per_s
    assert planner["tokens_per_s"] > 1.5 * on_cpu


def test_a_resident_model_shared_by_two_roles_runs_with_the_settings_of_its_one_copy():
    """Two resident roles on one model load one copy, grown to the longer context; in a MoE split the KV
    cache stays on the GPU, so the copy needs the expert layers of the longer context in RAM, and both
    roles carry those settings (the shorter role's would overfill the GPU by the extra cache)."""
    roles = ("  a: {workload: chat, resident: true, prefer: [gpt-oss-120b], requires: {context_min: 4096}}\n"
             "  b: {workload: chat, resident: true, prefer: [gpt-oss-120b], requires: {context_min: 32768}}\n")
    text = yaml.safe_dump({"schema_version": 2, "kind": "catalog", "models": {
        "gpt-oss-120b": yaml.safe_load((REPO / "sources" / "00-models.yaml").read_text())["models"]["gpt-oss-120b"]}})
    catalog, problems = resolve(merge_layers([Layer("sources", load_yaml_text(text + "roles:\n" + roles, "c.yaml"))]))
    assert not [p for p in problems if p.severity == "error"]
    host = Host("ws", 64 * GIB_IN_MB, (Gpu("RTX 4090", 24 * GIB_IN_MB),), max_loaded_models=2)
    plan = select(catalog, host)
    a, b = plan.roles["a"], plan.roles["b"]
    assert a.model == b.model == "gpt-oss-120b" and a.placement == b.placement == "split"
    assert b.memory_mb > a.memory_mb  # b's context grew the one copy
    grown = next(v for v in b.candidates if v.verdict == "chosen").memory
    copy = offload(catalog.models["gpt-oss-120b"], grown, "split", host_budget(host, catalog.selection).vram_mb,
                   (24 * GIB_IN_MB,))
    alone = offload(catalog.models["gpt-oss-120b"], next(v for v in a.candidates if v.verdict == "chosen").memory,
                    "split", host_budget(host, catalog.selection).vram_mb, (24 * GIB_IN_MB,))
    assert copy.cpu_moe_layers > alone.cpu_moe_layers, "the scenario grows the copy past a layer"
    assert a.offload == b.offload == copy
    for role in (a, b):  # and their speeds are read from that layout
        assert role.speed.gpu_share == speed.estimate(catalog.models["gpt-oss-120b"], host, "split", role.context,
                                                      layout=copy, experts_in_ram=True).gpu_share


def test_resident_roles_sharing_a_model_share_its_one_llama_server(tmp_path):
    """The plan loads a resident model once for every resident role on it; llama-server.sh must start it
    once too: the first such role's server, at the longest of their contexts, and the others start that
    same server (one port, where LiteLLM sends them all), never a second copy beside it."""
    root = copy_catalog(REPO, tmp_path)
    add_layer(root, "20-share.yaml", "roles:\n  critic: {prefer: [gpt-oss-120b], requires: {context_min: 4096}}\n")
    report = Project(root).compile(BuildOptions(hosts=("workstation",)), write=False)
    assert report.ok
    (result,) = report.results
    roles = result.output["roles"]
    critic, planner = roles["critic"], roles["planner"]
    assert critic["model"] == planner["model"] == "gpt-oss-120b" and critic["resident"] and planner["resident"]
    script = result.exports["llama-server.sh"].decode()
    starts = [line for line in script.splitlines() if "--alias critic " in line or "--alias planner " in line]
    assert len(starts) == 1, "one copy, one server"  # (chat and the other non-resident roles load on their own)
    assert f"-c {max(critic['context'], planner['context'])} " in starts[0]
    owner = "critic" if "--alias critic " in starts[0] else "planner"
    comment = next(line for line in script.splitlines() if line.startswith(f"  {owner})"))
    assert critic["memory_mb"] != planner["memory_mb"]  # the longer context grew the one copy
    assert f"{max(critic['memory_mb'], planner['memory_mb'])} MiB" in comment  # the copy's, not the owner's
    port = int(starts[0].split("--port ", 1)[1].split()[0])
    config = yaml.safe_load(result.exports["litellm-config.yaml"])
    entries = {e["model_name"]: e["litellm_params"] for e in config["model_list"]}
    assert entries["critic"]["api_base"] == entries["planner"]["api_base"] == f"http://127.0.0.1:{port}/v1"
    assert 'critic)' in script and 'planner)' in script  # either name starts it


def shipped_catalog(roles: str, *ids: str):
    """The shipped models `ids` under `roles`."""
    shipped = yaml.safe_load((REPO / "sources" / "00-models.yaml").read_text())["models"]
    text = yaml.safe_dump({"schema_version": 2, "kind": "catalog", "models": {i: shipped[i] for i in ids}})
    catalog, problems = resolve(merge_layers([Layer("sources", load_yaml_text(text + "roles:\n" + roles, "c.yaml"))]))
    assert not [p for p in problems if p.severity == "error"]
    return catalog


def test_a_resident_fallback_is_laid_out_for_the_vram_its_speed_was_judged_with():
    """A resident role's fallback loads beside the other resident models: its GPU layers are computed for
    the VRAM they leave, the same VRAM its speed was estimated with (not the whole GPU)."""
    roles = ("  a: {workload: chat, resident: true, prefer: [gpt-oss-20b]}\n"
             "  b: {workload: chat, resident: true, prefer: [llama-3.1-8b-instruct, gpt-oss-120b]}\n")
    catalog = shipped_catalog(roles, "gpt-oss-20b", "llama-3.1-8b-instruct", "gpt-oss-120b")
    host = Host("ws", 64 * GIB_IN_MB, (Gpu("RTX 4090", 24 * GIB_IN_MB),), max_loaded_models=3)
    plan = select(catalog, host)
    a, b = plan.roles["a"], plan.roles["b"]
    assert (a.model, a.placement, b.model, b.placement) == ("gpt-oss-20b", "gpu", "llama-3.1-8b-instruct", "gpu")
    fallback = next(v for v in b.candidates if v.model == "gpt-oss-120b")
    assert fallback.verdict == "fallback" and fallback.placement == "split"
    layout = b.fallback_offload["gpt-oss-120b"]
    left = host_budget(host, catalog.selection).vram_mb - a.memory_mb
    assert layout == offload(catalog.models["gpt-oss-120b"], fallback.memory, "split", left, (24 * GIB_IN_MB,))
    assert fallback.speed == placed_speed(catalog.models["gpt-oss-120b"], host, "split", fallback.memory, "llamacpp",
                                          left, None, layout)


def test_a_role_the_shared_copy_leaves_below_its_speed_min_does_not_share_it():
    """The one copy of a resident model shared by roles is laid out for the longest context, which in a MoE
    split keeps more expert layers in RAM: a role whose speed_min that copy misses (though its own layout
    would meet it) is rechecked and may not share it; the longer role keeps the model."""
    roles = ("  a: {workload: chat, resident: true, prefer: [gpt-oss-120b], requires: {context_min: 4096%s}}\n"
             "  b: {workload: chat, resident: true, prefer: [gpt-oss-120b], requires: {context_min: 32768}}\n")
    host = Host("ws", 64 * GIB_IN_MB, (Gpu("RTX 4090", 24 * GIB_IN_MB),), max_loaded_models=2)
    catalog = shipped_catalog(roles % "", "gpt-oss-120b")
    a = select(catalog, host).roles["a"]
    model = catalog.models["gpt-oss-120b"]
    need = next(v for v in a.candidates if v.verdict == "chosen").memory
    alone = placed_speed(model, host, "split", need, "llamacpp", host_budget(host, catalog.selection).vram_mb, None)
    assert a.model == "gpt-oss-120b" and a.speed.tokens_per_s < alone.tokens_per_s  # the copy is slower for a
    speed_min = round((a.speed.tokens_per_s + alone.tokens_per_s) / 2, 2)  # met alone, missed with the copy
    plan = select(shipped_catalog(roles % f", speed_min: {speed_min}", "gpt-oss-120b"), host)
    a, b = plan.roles["a"], plan.roles["b"]
    assert b.model == "gpt-oss-120b" and a.model is None
    (verdict,) = a.candidates
    assert verdict.verdict == "rejected" and verdict.too_slow
    assert "resident copy it would share with role 'b'" in verdict.reason and f"< required {speed_min:g}" in \
        verdict.reason


RESEARCH = ("  planner: {workload: chat, resident: true, required: true, prefer: [gpt-oss-120b],"
            " requires: {context_min: 16384%s}}\n"
            "  critic: {workload: chat, resident: true, prefer: [gpt-oss-20b, llama-3.1-8b-instruct]}\n")


def test_a_resident_moe_split_gives_a_resident_critic_room_on_the_gpu():
    """The workstation's planner (gpt-oss-120b, experts in RAM as llama-server lays it out) would fill the
    24 GB card and leave the resident critic on the CPU at ~6 tok/s. Experts an expert would keep in RAM
    instead (more --n-cpu-moe layers) make room for it on the GPU, as long as the RAM they move to stays
    within max_fill; the planner is laid out for the VRAM it keeps."""
    host = Host("ws", 64 * GIB_IN_MB, (Gpu("RTX 4090", 24 * GIB_IN_MB),), max_loaded_models=3)
    catalog = shipped_catalog(RESEARCH % "", "gpt-oss-120b", "gpt-oss-20b", "llama-3.1-8b-instruct")
    plan = select(catalog, host)
    planner, critic = plan.roles["planner"], plan.roles["critic"]
    budget = host_budget(host, catalog.selection)
    assert planner.placement == "split" and critic.placement == "gpu"
    assert critic.model == "llama-3.1-8b-instruct"  # gpt-oss-20b would push the RAM past max_fill
    assert critic.speed.tokens_per_s >= 2.5 * speed.SPEED_FLOOR
    model = catalog.models["gpt-oss-120b"]
    need = next(v for v in planner.candidates if v.verdict == "chosen").memory
    experts_in_ram = expert_weights_mib(model, need.weights_mb) * planner.offload.cpu_moe_layers / model["arch"]["layers"]
    assert planner.memory_mb - experts_in_ram + critic.memory_mb <= budget.vram_mb  # both on the card
    assert experts_in_ram <= catalog.selection["max_fill"] * budget.ram_mb
    assert planner.offload == offload(model, need, "split", budget.vram_mb - critic.memory_mb, (24 * GIB_IN_MB,))
    # a planner's speed_min the thinner layout misses keeps the whole card for it, the critic on the CPU
    alone = select(shipped_catalog(RESEARCH % "", "gpt-oss-120b"), host).roles["planner"]
    speed_min = round((planner.speed.tokens_per_s + alone.speed.tokens_per_s) / 2, 2)
    plan = select(shipped_catalog(RESEARCH % f", speed_min: {speed_min}", "gpt-oss-120b", "gpt-oss-20b",
                                  "llama-3.1-8b-instruct"), host)
    assert plan.roles["planner"].offload == alone.offload and plan.roles["planner"].speed.tokens_per_s >= speed_min
    assert plan.roles["critic"].placement == "cpu"
