"""Fit levels (compiler/fit.py), decode speed estimates (compiler/speed.py) and the best_fit strategy."""

from __future__ import annotations

import json

import pytest
import yaml

from compiler import fit, speed
from compiler.hosts import GIB_IN_MB, Gpu, Host
from compiler.load import load_yaml_text
from compiler.memory import MIB, QUANT_BITS, kv_mib
from compiler.merge import Layer, merge_layers
from compiler.pipeline import BuildOptions, Project
from compiler.resolve import resolve
from compiler.schema import strict_schema
from compiler.select import placed_mb, select

from conftest import REPO, run_cli

SHIPPED_MODELS = yaml.safe_load((REPO / "sources" / "00-models.yaml").read_text())["models"]


def catalog_with(roles: str, models: dict | None = None, selection: str = ""):
    """The shipped models (or `models`) under the given roles."""
    body = {"schema_version": 2, "kind": "catalog", "models": models or SHIPPED_MODELS}
    text = yaml.safe_dump(body) + "roles:\n" + roles + selection
    catalog, problems = resolve(merge_layers([Layer("sources", load_yaml_text(text, "catalog.yaml"))]))
    assert not [p for p in problems if p.severity == "error"], problems
    return catalog


def cpu_host(ram_gb: int, **facts) -> Host:
    return Host(f"cpu-{ram_gb}", ram_gb * GIB_IN_MB, **facts)


# -- speed ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, entry", [("NVIDIA GeForce RTX 4090", "RTX 4090"), ("RTX 3090 Ti", "RTX 3090 Ti"),
                                         ("RTX 3090", "RTX 3090"), ("NVIDIA H100 PCIe", "H100 PCIe"),
                                         ("NVIDIA H100 80GB HBM3", "H100"), ("Apple M3 Pro", "M3 Pro"),
                                         ("Apple M2", "M2"), ("NVIDIA L4", "L4"), ("NVIDIA L40S", "L40S")])
def test_gpu_bandwidth_is_the_longest_table_entry_named(name, entry):
    assert speed.gpu_bandwidth(name) == speed.GPU_BANDWIDTH_GBS[entry]


def test_an_unknown_gpu_gets_the_documented_default():
    assert speed.gpu_bandwidth("Imaginary Accelerator 9000") is None
    host = Host("x", 64 * GIB_IN_MB, (Gpu("Imaginary Accelerator 9000", 24 * GIB_IN_MB),))
    assert speed.host_bandwidths(host)[0] == speed.GPU_DEFAULT_GBS


def test_tokens_per_second_is_bandwidth_over_bytes_read():
    model = SHIPPED_MODELS["qwen2.5-coder-7b-q5"]
    est = speed.estimate(model, cpu_host(16), "cpu", 8192)
    weights = model["params_b"] * 1e9 * QUANT_BITS[model["quantization"]].body / 8
    kv = kv_mib(model, 8192)[0] * MIB
    ram = speed.CPU_BANDWIDTH_GBS[speed.DEFAULT_MEMORY_CLASS]
    assert est.bytes_per_token == int(weights + kv)
    assert est.tokens_per_s == pytest.approx(ram * 1e9 * speed.CPU_EFFICIENCY / (weights + kv), abs=0.06)
    # a longer context reads a longer cache each token: slower
    assert speed.estimate(model, cpu_host(16), "cpu", 32768).tokens_per_s < est.tokens_per_s


def test_a_mixture_of_experts_reads_its_active_parameters_only():
    moe = SHIPPED_MODELS["gpt-oss-20b"]
    est = speed.estimate(moe, cpu_host(32), "cpu", 4096)
    assert est.active_params_b == moe["arch"]["active_params_b"] < moe["params_b"]
    dense = replace_arch(moe, active_params_b=None)
    assert speed.estimate(dense, cpu_host(32), "cpu", 4096).tokens_per_s < est.tokens_per_s / 4


def replace_arch(model: dict, **arch) -> dict:
    return {**model, "arch": {k: v for k, v in {**model["arch"], **arch}.items() if v is not None}}


def test_bandwidth_comes_from_the_host_declaration_its_class_or_its_gpus():
    model = SHIPPED_MODELS["llama-3.1-8b-instruct"]
    base = speed.estimate(model, cpu_host(16), "cpu", 4096)
    ddr5 = speed.estimate(model, cpu_host(16, memory_class="ddr5"), "cpu", 4096)
    declared = speed.estimate(model, cpu_host(16, memory_bandwidth_gbs=200.0), "cpu", 4096)
    ratio = speed.CPU_BANDWIDTH_GBS["ddr5"] / speed.CPU_BANDWIDTH_GBS[speed.DEFAULT_MEMORY_CLASS]
    assert ddr5.tokens_per_s == pytest.approx(base.tokens_per_s * ratio, rel=0.01)
    assert declared.ram_gbs == 200.0 and "declared" in declared.bandwidth_source
    mac = Host("mac", 36 * GIB_IN_MB, (Gpu("Apple M3 Pro", 36 * GIB_IN_MB, "apple"),), unified_memory=True)
    assert speed.estimate(model, mac, "cpu", 4096).ram_gbs == speed.GPU_BANDWIDTH_GBS["M3 Pro"]
    # a unified-memory chip the table does not know: the declared bandwidth serves its GPU too
    apu = Host("apu", 128 * GIB_IN_MB, (Gpu("Radeon 8060S", 96 * GIB_IN_MB, "amd"),), unified_memory=True,
               memory_bandwidth_gbs=256.0)
    assert speed.host_bandwidths(apu)[:2] == (256.0, 256.0)


def test_a_split_is_between_its_gpu_and_cpu_speeds_and_gpus_in_turn_add_their_times():
    model = SHIPPED_MODELS["gpt-oss-120b"]
    host = Host("ws", 64 * GIB_IN_MB, (Gpu("RTX 4090", 24 * GIB_IN_MB),))
    on_gpu = speed.estimate(model, host, "gpu", 4096).tokens_per_s
    on_cpu = speed.estimate(model, host, "cpu", 4096).tokens_per_s
    half = speed.estimate(model, host, "split", 4096, gpu_share=0.5)
    assert on_cpu < half.tokens_per_s < on_gpu
    # time per token adds: 1/t = 0.5/gpu + 0.5/cpu
    assert 1 / half.tokens_per_s == pytest.approx(0.5 / on_gpu + 0.5 / on_cpu, rel=0.02)
    mixed = Host("m", 64 * GIB_IN_MB, (Gpu("RTX 4090", 24 * GIB_IN_MB), Gpu("RTX 3060", 12 * GIB_IN_MB)))
    expected = 1 / ((24 / 36) / speed.GPU_BANDWIDTH_GBS["RTX 4090"] + (12 / 36) / speed.GPU_BANDWIDTH_GBS["RTX 3060"])
    assert speed.host_bandwidths(mixed)[0] == pytest.approx(expected, abs=0.1)


def test_memory_class_schema_enum_is_the_table():
    schema = strict_schema("hosts")
    entry = schema["$defs"]["host"]["properties"]["memory_class"]
    assert set(entry["enum"]) == set(speed.CPU_BANDWIDTH_GBS) and speed.DEFAULT_MEMORY_CLASS in entry["enum"]


# -- fit levels -------------------------------------------------------------------------------------

def test_fit_level_is_comfortable_up_to_max_fill_and_tight_above():
    assert fit.level(fit.Fill(850, 0, 1000, "cpu", 0.85))[0] == fit.COMFORTABLE
    assert fit.level(fit.Fill(851, 0, 1000, "cpu", 0.85))[0] == fit.TIGHT
    assert fit.level(fit.Fill(500, 400, 1000, "cpu", 0.85))[0] == fit.TIGHT  # beside a resident model


def test_a_new_fit_rule_is_one_entry(monkeypatch):
    rule = fit.FitRule(fit.TIGHT, lambda f: f.placement == "split", lambda f: "split across GPU and RAM")
    monkeypatch.setattr(fit, "FIT_RULES", (*fit.FIT_RULES, rule))
    assert fit.level(fit.Fill(10, 0, 1000, "split", 0.85)) == (fit.TIGHT, "split across GPU and RAM")
    assert fit.level(fit.Fill(10, 0, 1000, "gpu", 0.85))[0] == fit.COMFORTABLE


def test_strategies_take_a_tight_fit_only_when_nothing_comfortable_serves_the_role():
    # laptop-16's budget: 14 GiB usable; 14B Q5 at 16k fills ~93% of it, the 7B ~46%
    roles = ("  first: {workload: code, prefer: [qwen2.5-coder-14b-q5, qwen2.5-coder-7b-q5], "
             "requires: {context_min: 16384}}\n"
             "  largest: {workload: code, prefer: [qwen2.5-coder-14b-q5, qwen2.5-coder-7b-q5], strategy: largest_fit, "
             "requires: {context_min: 16384}}\n"
             "  only: {workload: code, prefer: [qwen2.5-coder-14b-q5], requires: {context_min: 16384}}\n")
    catalog = catalog_with(roles)
    plan = select(catalog, cpu_host(16))
    budget = placed_mb(plan.budget, "cpu")
    big = next(v for v in plan.roles["only"].candidates if v.model == "qwen2.5-coder-14b-q5")
    assert big.memory.mb > fit.MAX_FILL * budget  # the premise: the 14B is tight here
    for name in ("first", "largest"):
        assert plan.roles[name].model == "qwen2.5-coder-7b-q5" and plan.roles[name].fit == fit.COMFORTABLE
        assert plan.roles[name].fallbacks[0] == "qwen2.5-coder-14b-q5"
    assert plan.roles["only"].model == "qwen2.5-coder-14b-q5" and plan.roles["only"].fit == fit.TIGHT
    (warning,) = [d for d in plan.diagnostics if d.code == "W320"]
    assert warning.severity == "warning" and "'only'" in warning.message and "cpu-16" in warning.message
    # max_fill is the line: raised above the 14B's fill, it is comfortable and first again
    roomy = select(catalog_with(roles, selection="selection: {max_fill: 0.99}\n"), cpu_host(16))
    assert roomy.roles["first"].model == "qwen2.5-coder-14b-q5" and roomy.roles["first"].fit == fit.COMFORTABLE
    assert not [d for d in roomy.diagnostics if d.code == "W320"]


# -- best_fit and speed_min ---------------------------------------------------------------------------

def test_best_fit_is_the_default_without_a_prefer_list_and_ranks_scores_then_params_then_bits():
    models = {
        "a-small": {"params_b": 3, "quantization": "Q4_K_M", "workloads": ["chat"], "capabilities": {"reasoning": 0.5}},
        "b-big": {"params_b": 8, "quantization": "Q4_K_M", "workloads": ["chat"], "capabilities": {"reasoning": 0.5}},
        "c-big-q8": {"params_b": 8, "quantization": "Q8_0", "workloads": ["chat"], "capabilities": {"reasoning": 0.5}},
        "d-smart": {"params_b": 1, "quantization": "Q4_K_M", "workloads": ["chat"], "capabilities": {"reasoning": 0.9}},
        "e-unscored": {"params_b": 9, "quantization": "Q4_K_M", "workloads": ["chat"]},
    }
    for model in models.values():
        model.update(provider="local", context_window=8192)
    chat = "  chat: {workload: chat}\n"
    fast = cpu_host(64, memory_bandwidth_gbs=400.0)  # every candidate above selection.speed_floor: quality alone
    plan = select(catalog_with(chat, models), fast)
    assert plan.roles["chat"].strategy == "best_fit" and plan.roles["chat"].model == "d-smart"
    del models["d-smart"]
    assert select(catalog_with(chat, models), fast).roles["chat"].model == "c-big-q8"  # same params: bits
    models["c-big-q8"]["quantization"] = "Q4_K_M"  # a tie on everything: the first id
    assert select(catalog_with(chat, models), fast).roles["chat"].model == "b-big"
    for model in models.values():
        model.pop("capabilities", None)
    assert select(catalog_with(chat, models), fast).roles["chat"].model == "e-unscored"  # params


def test_on_a_32_gb_cpu_host_speed_min_takes_the_q5_14b_over_the_q8():
    host = cpu_host(32)
    q5, q8 = SHIPPED_MODELS["qwen2.5-coder-14b-q5"], SHIPPED_MODELS["qwen2.5-coder-14b-q8"]
    fast, slow = (speed.estimate(m, host, "cpu", 16384).tokens_per_s for m in (q5, q8))
    assert slow < fast / 1.3  # Q8_0 reads ~1.5x the bytes of Q5_K_M a token
    role = ("  code: {workload: code, strategy: best_fit, prefer: [qwen2.5-coder-14b-q8, qwen2.5-coder-14b-q5], "
            "requires: {context_min: 16384%s}}\n")
    models = {**SHIPPED_MODELS, **{m: {**SHIPPED_MODELS[m], "priority": 100} for m in ("qwen2.5-coder-14b-q5",
                                                                                      "qwen2.5-coder-14b-q8")}}
    plan = select(catalog_with(role % "", models), host)  # one priority: quality decides
    assert plan.roles["code"].model == "qwen2.5-coder-14b-q8"  # both fit comfortably: the higher quality
    assert plan.roles["code"].fit == fit.COMFORTABLE
    plan = select(catalog_with(role % f", speed_min: {round((fast + slow) / 2, 1)}", models), host)
    assert plan.roles["code"].model == "qwen2.5-coder-14b-q5"
    assert plan.roles["code"].speed.tokens_per_s == fast
    rejected = {v.model: v for v in plan.roles["code"].candidates}["qwen2.5-coder-14b-q8"]
    assert rejected.verdict == "rejected" and f"~{slow:g} tok/s on cpu < required" in rejected.reason


# -- the shipped catalog ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    report = Project(REPO).compile(BuildOptions(all_hosts=True), write=False)
    assert report.ok, report.errors
    return report


def test_no_shipped_host_runs_a_pick_above_max_fill_without_a_warning(shipped):
    warned = {(d.message.split("'")[3], d.message.split("'")[1]) for d in shipped.warnings if d.code == "W320"}
    for result in shipped.results:
        plan = result.plan
        for name, role in plan.roles.items():
            if role.model is None:
                continue
            chosen = next(v for v in role.candidates if v.verdict == "chosen")
            assert role.fit == chosen.fit in fit.LEVELS
            if role.resident:
                continue  # judged beside the other resident roles: the fill in its reason says so
            over = role.memory_mb > fit.MAX_FILL * placed_mb(plan.budget, role.placement)
            assert (role.fit == fit.TIGHT) == over, (result.host.name, name)
            assert ((result.host.name, name) in warned) == over, (result.host.name, name)
    document = json.loads((REPO / "out" / "laptop-16" / "models.json").read_text())
    assert document["roles"]["code"]["fit"] == fit.COMFORTABLE
    assert document["roles"]["code"]["tokens_per_s"] > 0


def test_every_chosen_role_in_models_json_has_a_level_and_a_speed(shipped):
    for result in shipped.results:
        for name, role in result.output["roles"].items():
            assert (role["fit"] in fit.LEVELS) == (role["model"] is not None), name  # null when unserved
            assert (role["tokens_per_s"] is not None and role["tokens_per_s"] > 0) == (role["model"] is not None), name


def test_a_required_role_no_candidate_is_fast_enough_for_says_so():
    role = "  code: {workload: code, prefer: [qwen2.5-coder-14b-q8], required: true, requires: {speed_min: 1000}}\n"
    plan = select(catalog_with(role), cpu_host(32))
    (error,) = plan.diagnostics
    assert error.code == "E300" and "no candidate meets the requirements" in error.message
    assert "tok/s on cpu < required 1000" in error.message and "relax the role's `requires`" in error.hint


def test_hostfit_models_shows_the_fit_level_and_speed_per_model():
    result = run_cli("-C", str(REPO), "models", "--host", "laptop-16", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert rows["gpt-oss-20b"]["fit"] == "cpu" and rows["gpt-oss-20b"]["fit_level"] == fit.TIGHT
    assert rows["qwen2.5-coder-7b-q5"]["fit_level"] == fit.COMFORTABLE
    assert rows["gpt-oss-20b"]["tokens_per_s"] > rows["qwen2.5-coder-14b-q5"]["tokens_per_s"]  # 3.6B active
    assert rows["gpt-oss-120b"]["fit"] == "no" and rows["gpt-oss-120b"]["fit_level"] is None
    table = run_cli("-C", str(REPO), "models", "--host", "laptop-16").stdout
    assert "TOK/S" in table and "cpu, tight" in table and "cpu, comfortable" in table


def test_best_fit_prefers_an_interactive_speed_over_a_larger_model_that_crawls():
    """A model the catalog cannot tell is a mixture of experts (llmfit lists no active parameters for
    some) is read as dense: 80B at ~1 tok/s. best_fit must not let such a crawl win on parameters alone:
    candidates at selection.speed_floor or faster come first, a slower one only when none is."""
    models = {
        "big-moe-unknown": {"params_b": 80, "quantization": "Q4_K_M", "workloads": ["chat"]},
        "small-fast": {"params_b": 8, "quantization": "Q4_K_M", "workloads": ["chat"]},
    }
    for model in models.values():
        model.update(provider="local", context_window=8192)
    chat = "  chat: {workload: chat}\n"
    host = cpu_host(96, memory_bandwidth_gbs=200.0)
    crawl = speed.estimate(models["big-moe-unknown"], host, "cpu", 4096).tokens_per_s
    floor = select(catalog_with(chat, models), host).roles["chat"]
    assert crawl < 5 and floor.model == "small-fast" and floor.speed.tokens_per_s >= 5
    chosen = next(v for v in floor.candidates if v.verdict == "chosen")
    assert "speed_floor" not in chosen.reason and floor.fallbacks[0] == "big-moe-unknown"  # still a fallback
    # no floor: quality (parameters here) alone, as before
    assert select(catalog_with(chat, models, "selection: {speed_floor: 0}\n"), host).roles["chat"].model == \
        "big-moe-unknown"
    # nothing fast enough: the best of the slow ones, said in its reason
    del models["small-fast"]
    models["mid-slow"] = {**models["big-moe-unknown"], "params_b": 40}
    slow = select(catalog_with(chat, models), host).roles["chat"]
    assert slow.model == "big-moe-unknown"
    assert "below selection.speed_floor" in next(v for v in slow.candidates if v.verdict == "chosen").reason


# -- best_fit without capability scores: speed on a GPU host, size class, downloads ----------------------

def unscored(**models: dict) -> dict:
    for model in models.values():
        model.update(provider="local", context_window=8192, workloads=["chat"])
        model.setdefault("quantization", "Q4_K_M")
    return models


def test_size_classes_keep_common_release_sizes_together_and_apart():
    from compiler.select import size_class
    for same in ((1.3, 1.5, 1.7), (3, 4), (7, 8, 9), (13, 14), (30, 32, 35, 36), (46.7, 70, 72)):
        assert len({size_class(b) for b in same}) == 1, same
    sizes = (0.5, 1.5, 3, 7, 14, 24, 32, 70, 120, 235)
    assert [size_class(b) for b in sizes] == sorted({size_class(b) for b in sizes})  # each its own class, in order


def test_downloads_break_ties_within_a_size_class_never_across_it_nor_over_scores():
    models = unscored(**{"a-finetune": {"params_b": 8, "downloads": 10_000},  # (below 1,000: barely used)
                         "b-official": {"params_b": 7, "downloads": 1_000_000},
                         "c-bigger": {"params_b": 14, "downloads": 1_000}})
    chat, host = "  chat: {workload: chat}\n", cpu_host(64, memory_bandwidth_gbs=400.0)
    assert select(catalog_with(chat, models), host).roles["chat"].model == "c-bigger"  # a larger class first
    del models["c-bigger"]
    plan = select(catalog_with(chat, models), host).roles["chat"]
    assert plan.model == "b-official"  # 7B and 8B: one class, the far more used one over the larger fine-tune
    chosen = next(v for v in plan.candidates if v.verdict == "chosen")
    assert "ahead of a-finetune on downloads (1,000,000+ over 10,000+)" in chosen.reason
    # downloads count by order of magnitude: a conversion 8% more used does not beat more bits
    models["b-official-q8"] = {**models["b-official"], "quantization": "Q8_0"}
    models["b-official"]["downloads"] = 1_080_000
    plan = select(catalog_with(chat, models), host).roles["chat"]
    assert plan.model == "b-official-q8"
    assert "ahead of b-official on bits per weight" in next(v for v in plan.candidates if v.verdict == "chosen").reason
    models["a-finetune"]["capabilities"] = {"reasoning": 0.7}  # a capability score outranks popularity
    assert select(catalog_with(chat, models), host).roles["chat"].model == "a-finetune"


def test_a_coder_serves_the_code_role_and_a_general_model_of_a_nearby_size_serves_chat():
    """A code specialist (`specialty: code`) counts one size class lower for other workloads and below a
    general model of the class it lands in: the 8B general model takes chat from the 16B coder, the coder
    keeps the code role, and a general model two classes down (4B) does not take chat from it."""
    models = unscored(**{"coder-16b": {"params_b": 16, "downloads": 1_000_000, "specialty": "code"},
                         "general-8b": {"params_b": 8, "downloads": 1_000_000},
                         "general-4b": {"params_b": 4, "downloads": 1_000_000}})
    models["coder-16b"]["workloads"] = ["code", "chat"]
    roles, host = "  chat: {workload: chat}\n  code: {workload: code}\n", cpu_host(64, memory_bandwidth_gbs=400.0)
    plan = select(catalog_with(roles, models), host)
    assert plan.roles["chat"].model == "general-8b" and plan.roles["code"].model == "coder-16b"
    chosen = next(v for v in plan.roles["chat"].candidates if v.verdict == "chosen")
    assert "ahead of coder-16b on demotions (none over a specialist off its specialty)" in chosen.reason
    del models["general-8b"]
    plan = select(catalog_with(roles, models), host).roles["chat"]
    assert plan.model == "coder-16b"
    assert ("ahead of general-4b on size class (10-18B counted as 5-10B: a specialist off its specialty over 2-5B)"
            in next(v for v in plan.candidates if v.verdict == "chosen").reason)
    models["general-4b"]["capabilities"] = {"reasoning": 0.5}  # a declared score measures the role first
    assert select(catalog_with(roles, models), host).roles["chat"].model == "general-4b"


def test_a_model_almost_no_one_downloads_or_two_years_behind_counts_a_class_lower():
    """Imported catalogs hold thousands of models: a 16B MoE with 321 downloads a month (Ling-lite) is not
    an expert's pick over Qwen3-8B (11 million), nor a 2023 Mixtral 8x7B over a 2026 80B-A3B of its class's
    neighbour; each counts one class lower (select.DEMOTIONS). Unknown downloads or dates demote nothing."""
    from compiler.select import BARELY_USED, SUPERSEDED_MONTHS
    models = unscored(**{"obscure-16b": {"params_b": 16.8, "downloads": 321},
                         "popular-8b": {"params_b": 8.2, "downloads": 11_000_000}})
    chat, host = "  chat: {workload: chat}\n", cpu_host(64, memory_bandwidth_gbs=400.0)
    plan = select(catalog_with(chat, models), host).roles["chat"]
    assert plan.model == "popular-8b" and BARELY_USED > 321
    assert f"barely used (under {BARELY_USED:,} downloads)" in next(v for v in plan.candidates
                                                                    if v.verdict == "chosen").reason
    del models["obscure-16b"]["downloads"]  # unknown: no demotion, the larger class wins
    assert select(catalog_with(chat, models), host).roles["chat"].model == "obscure-16b"
    models = unscored(**{"old-47b": {"params_b": 46.7, "downloads": 600_000, "release_date": "2023-12-10"},
                         "new-35b": {"params_b": 35, "downloads": 600_000, "release_date": "2026-04-15"}})
    plan = select(catalog_with(chat, models), host).roles["chat"]
    assert plan.model == "new-35b" and SUPERSEDED_MONTHS <= 28
    models["old-47b"]["release_date"] = "2024-06-01"  # 22 months: the same generation, the larger class wins
    assert select(catalog_with(chat, models), host).roles["chat"].model == "old-47b"


def test_the_newer_release_breaks_a_tie_before_the_id_and_an_undated_model_comes_last():
    models = unscored(**{"a-older": {"params_b": 35, "downloads": 3_500_000, "release_date": "2026-02-24"},
                         "b-newer": {"params_b": 35, "downloads": 3_400_000, "release_date": "2026-04-15"},
                         "0-undated": {"params_b": 35, "downloads": 3_600_000}})
    chat, host = "  chat: {workload: chat}\n", cpu_host(64, memory_bandwidth_gbs=400.0)
    plan = select(catalog_with(chat, models), host).roles["chat"]
    assert plan.model == "b-newer"
    assert "ahead of a-older on release date (2026-04-15 over 2026-02-24)" in \
        next(v for v in plan.candidates if v.verdict == "chosen").reason
    del models["b-newer"]  # a dated model before an undated one that ties with it (the undated id sorts first)
    assert select(catalog_with(chat, models), host).roles["chat"].model == "a-older"


def test_on_a_gpu_host_a_model_at_speed_margin_beats_a_larger_one_left_on_the_cpu():
    """The 36 GB Mac: a 47B mixture of experts (13B active) exceeds the GPU's share and runs on the CPU at
    ~10 tok/s; a 35B with 3B active fits the GPU and runs several times faster. On the Mac the fast one
    wins though it is a size class down; on a CPU-only host of the same memory, where both run on the CPU
    and speed mostly mirrors size, the larger one does."""
    from compiler.select import SPEED_MARGIN
    models = unscored(**{  # Mixtral 8x7B's and Qwen3-30B-A3B's published shapes
        "moe-47b": {"params_b": 46.7, "arch": {"active_params_b": 12.9, "experts": 8, "layers": 32, "kv_heads": 8,
                                               "head_dim": 128, "heads": 32, "hidden_size": 4096, "vocab_size": 32000}},
        "moe-35b-a3b": {"params_b": 35, "arch": {"active_params_b": 3.3, "experts": 128, "layers": 48, "kv_heads": 4,
                                                 "head_dim": 128, "heads": 32, "hidden_size": 2048,
                                                 "vocab_size": 151936}}})
    chat = "  chat: {workload: chat}\n"
    mac = Host("mac", 36 * GIB_IN_MB, (Gpu("Apple M3 Pro", 36 * GIB_IN_MB, "apple"),), unified_memory=True)
    plan = select(catalog_with(chat, models), mac).roles["chat"]
    by_id = {v.model: v for v in plan.candidates}
    margin = SPEED_MARGIN * speed.SPEED_FLOOR
    assert by_id["moe-47b"].placement == "cpu" and speed.SPEED_FLOOR <= by_id["moe-47b"].speed.tokens_per_s < margin
    assert plan.model == "moe-35b-a3b" and plan.placement == "gpu"
    assert plan.speed.tokens_per_s >= 3 * by_id["moe-47b"].speed.tokens_per_s
    assert f"ahead of moe-47b on speed on a GPU host (at or above {SPEED_MARGIN:g}x speed_floor" in \
        by_id["moe-35b-a3b"].reason
    cpu_only = cpu_host(36, memory_bandwidth_gbs=150.0)  # the Mac's bandwidth, no GPU
    plan = select(catalog_with(chat, models), cpu_only).roles["chat"]
    assert plan.model == "moe-47b" and plan.speed.tokens_per_s >= speed.SPEED_FLOOR
