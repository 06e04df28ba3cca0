"""Select: candidates, requirements, strategies, GPU placement, resident packing, fallbacks."""

from __future__ import annotations

from compiler.hosts import Gpu, Host
from compiler.load import load_yaml_text
from compiler.merge import Layer, merge_layers
from compiler.resolve import resolve
from compiler.select import select

# Each declared memory.ram_mb is above hostfit's estimate at 4k (a declaration can only raise the
# need), so the needs are these round figures; `arch` keeps the KV cache and compute buffer exact and small.
MODELS = """
schema_version: 2
kind: catalog
models:
  tiny:   {provider: local, params_b: 0.5, quantization: Q4_K_M, context_window: 32768, workloads: [chat],
           capabilities: {reasoning: 0.2}, memory: {ram_mb: 1000},
           arch: {layers: 24, kv_heads: 2, head_dim: 64, heads: 14, hidden_size: 896, vocab_size: 151936}}
  mid:    {provider: local, params_b: 7, quantization: Q4_K_M, context_window: 32768, workloads: [chat, code],
           capabilities: {reasoning: 0.6, coding: 0.8, tools: true}, memory: {ram_mb: 6000},
           arch: {layers: 28, kv_heads: 4, head_dim: 128, heads: 28, hidden_size: 3584, vocab_size: 152064}}
  big:    {provider: local, params_b: 14, quantization: Q5_K_M, context_window: 8192, workloads: [chat, code],
           capabilities: {reasoning: 0.8, coding: 0.9}, memory: {ram_mb: 12000}, recommended: true,
           arch: {layers: 48, kv_heads: 8, head_dim: 128, heads: 40, hidden_size: 5120, vocab_size: 152064}}
  huge:   {provider: local, params_b: 70, quantization: Q4_K_S, context_window: 131072, workloads: [chat],
           capabilities: {reasoning: 0.9}, memory: {ram_mb: 42000},
           arch: {layers: 80, kv_heads: 8, head_dim: 128, heads: 64, hidden_size: 8192, vocab_size: 128256}}
  old:    {provider: local, params_b: 1, quantization: Q4_0, workloads: [chat], status: retired,
           memory: {ram_mb: 2000}, arch: {layers: 16, kv_heads: 8, head_dim: 64}}
  cloudy: {provider: openai, workloads: [chat, code], context_window: 128000}
"""


def plan_for(roles: str, ram_gb: float, gpus=(), max_loaded=None, extra: str = ""):
    text = MODELS + "roles:\n" + roles + extra
    merged = merge_layers([Layer("sources", load_yaml_text(text, "catalog.yaml"))])
    catalog, problems = resolve(merged)
    assert not problems
    host = Host("h", int(ram_gb * 1024), tuple(gpus), max_loaded_models=max_loaded)
    return select(catalog, host)


def verdicts(plan, role):
    return [(v.model, v.verdict) for v in plan.roles[role].candidates]


def test_largest_fit_takes_the_largest_survivor_recommended_first():
    plan = plan_for("  chat: {workload: chat, strategy: largest_fit}\n", ram_gb=16)  # 14 GiB usable
    assert plan.roles["chat"].model == "big"
    assert plan.roles["chat"].fallbacks == ["mid", "tiny"]
    assert ("huge", "rejected") in verdicts(plan, "chat") and ("old", "rejected") not in verdicts(plan, "chat")


def test_first_fit_follows_the_prefer_list_and_cloud_only_falls_back():
    plan = plan_for("  chat: {workload: chat, prefer: [cloudy, huge, mid, big], fallback: [cloudy]}\n", ram_gb=16)
    role = plan.roles["chat"]
    assert role.strategy == "first_fit" and role.model == "mid"
    assert role.fallbacks == ["big", "cloudy"]
    assert verdicts(plan, "chat")[:2] == [("cloudy", "rejected"), ("huge", "rejected")]


def test_requirements_reject_with_reasons():
    plan = plan_for("  code: {workload: code, requires: {context_min: 16384, coding_min: 0.85, tools: true}}\n", 64)
    reasons = {v.model: v.reason for v in plan.roles["code"].candidates}
    assert reasons["big"] == "context window 8,192 < required 16,384"
    assert reasons["mid"] == "coding 0.8 < required 0.85"
    assert plan.roles["code"].model is None


def test_gpu_placement_gpu_split_cpu():
    rtx = Gpu("RTX", 24 * 1024)
    plan = plan_for("  a: {workload: chat, prefer: [big]}\n  b: {workload: chat, prefer: [huge]}\n", 64, [rtx])
    assert plan.roles["a"].placement == "gpu"   # 12,000 MiB <= 23 GiB usable VRAM
    assert plan.roles["b"].placement == "split"  # 42,000 MiB > VRAM, fits VRAM + RAM
    plan = plan_for("  a: {workload: chat, prefer: [big]}\n", 64)
    assert plan.roles["a"].placement == "cpu"


def test_resident_roles_share_one_budget():
    roles = ("  planner: {workload: chat, prefer: [big, mid, tiny], resident: true, required: true}\n"
             "  critic:  {workload: chat, prefer: [big, mid, tiny], resident: true}\n"
             "  coder:   {workload: code, prefer: [mid, tiny], resident: true}\n")
    plan = plan_for(roles, ram_gb=24)  # 22 GiB usable = 22,528 MiB
    assert plan.roles["planner"].model == "big"   # 12,000
    assert plan.roles["critic"].model == "big"    # the same model counts once
    assert plan.roles["coder"].model == "mid"     # 6,000: 18,000 in all, 80% (comfortable)
    alone = plan_for(roles.replace("resident: true", "resident: false"), ram_gb=24)
    assert alone.roles["coder"].model == "mid"
    squeezed = plan_for(roles, ram_gb=18)  # 16,384 MiB: big + mid do not fit together
    assert squeezed.roles["coder"].model == "tiny"
    reason = dict((v.model, v.reason) for v in squeezed.roles["coder"].candidates)["mid"]
    assert "left beside the resident roles" in reason


def test_max_loaded_models_limits_resident_roles():
    roles = ("  a: {workload: chat, prefer: [mid], resident: true}\n"
             "  b: {workload: chat, prefer: [tiny], resident: true}\n")
    plan = plan_for(roles, ram_gb=64, max_loaded=1)
    assert plan.roles["a"].model == "mid" and plan.roles["b"].model is None
    assert "max_loaded_models (1)" in plan.roles["b"].candidates[0].reason


def test_unservable_required_role_names_the_smallest_candidate_and_the_shortfall():
    plan = plan_for("  chat: {workload: chat, prefer: [huge, big], required: true}\n", ram_gb=8)
    (diag,) = plan.diagnostics
    assert diag.code == "E300"
    assert "'big' needs 12,000 MiB, 5,856 MiB more than the 6,144 MiB usable" in diag.message
    optional = plan_for("  chat: {workload: chat, prefer: [huge, big]}\n", ram_gb=8)
    assert optional.diagnostics == [] and optional.roles["chat"].model is None


def test_allow_cloud_false_keeps_cloud_out_of_the_chain():
    plan = plan_for("  chat: {workload: chat, prefer: [tiny], fallback: [cloudy]}\n", ram_gb=8,
                    extra="selection: {allow_cloud: false}\n")
    assert plan.roles["chat"].fallbacks == []
    assert "allow_cloud" in plan.roles["chat"].note


def test_reserve_and_available_basis():
    host = Host("h", 16 * 1024, available_mb=6 * 1024, ram_reserve_gb=1)
    text = MODELS + "roles:\n  chat: {workload: chat}\nselection: {basis: available}\n"
    catalog, _ = resolve(merge_layers([Layer("s", load_yaml_text(text, "c.yaml"))]))
    plan = select(catalog, host)
    assert plan.budget.ram_mb == 5 * 1024
    assert plan.roles["chat"].model == "tiny"
