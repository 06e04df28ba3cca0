"""The measured layer: sources/measured/<host>.yaml, built from measurement rows by export_layer, replaces the
memory and speed estimates for that host (memory_method / speed_method: measured), keeps still under 10%
(hysteresis against the committed layer), is checked at file:line:col, and hostfit diff names it.

The rows are the kind the usage store records; expected figures are computed from the rows and from
memory.py's own terms, never written in."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
import yaml

from conftest import add_layer, run_cli, tree_bytes

from compiler import diff, measured, memory, usage
from compiler.pipeline import Project

FAST_ROLE = ("roles:\n  fast:\n    workload: chat\n    strategy: first_fit\n    prefer: [big-chat, small-chat]\n"
             "    requires: {speed_min: 8}\n")


def build(catalog: Path, *args: str) -> None:
    result = run_cli("-C", str(catalog), "build", "--all", *args)
    assert result.exit_code == 0, result.output


def compiled(catalog: Path, host: str) -> dict:
    return json.loads((catalog / "out" / host / "models.json").read_text())


def explained(catalog: Path, host: str) -> dict:
    return json.loads((catalog / "out" / host / "explain.json").read_text())


def row(model: str, host: str = "box-8", **figures) -> dict:
    """A measurement as the usage store returns it (usage.MEASUREMENT_FIELDS: one vocabulary)."""
    base = dict.fromkeys(usage.MEASUREMENT_FIELDS) | {
        "host": host, "model": model, "runtime": "llamacpp", "placement": "cpu", "context": 4096, "ok": True,
        "ts": "2026-11-29T10:00:00Z"}
    unknown = set(figures) - set(base)
    assert not unknown, f"not a measurement field: {unknown}"
    return base | figures


def export(catalog: Path, host: str, rows: list[dict]) -> tuple[Path, bool]:
    return measured.export(catalog, host, rows)


# ------------------------------------------------------------------------------- export_layer

def test_export_layer_summarizes_rows_per_model_runtime_placement_and_context():
    rows = [row("big-chat", peak_rss_mib=5000.2, decode_tps=6.0, ttft_s=0.5, load_s=2.0),
            row("big-chat", peak_rss_mib=5100.0, decode_tps=7.0, ttft_s=0.7, load_s=3.0, ts="2026-11-29T11:00:00Z"),
            row("big-chat", peak_rss_mib=9999.0, decode_tps=1.0, ok=False),  # failed: counts in the rate only
            row("big-chat", placement="gpu", gpu_mib=4800, peak_rss_mib=900, decode_tps=80.0),
            row("big-chat", placement="split", gpu_mib=3000, peak_rss_mib=2500),
            row("big-chat", host="elsewhere", peak_rss_mib=1.0),
            row("small-chat", context=8192, peak_rss_mib=1500, kv_cache_type="q8_0", ts=1764410400)]
    layer = measured.export_layer("box-8", rows, None)
    assert (layer["schema_version"], layer["kind"], layer["host"]) == (2, "measured", "box-8")
    assert list(layer["models"]) == ["big-chat", "small-chat"]
    runs = {run["placement"]: run for run in layer["models"]["big-chat"]}
    assert [run["placement"] for run in layer["models"]["big-chat"]] == ["gpu", "split", "cpu"]
    assert runs["cpu"]["memory_mb"] == math.ceil(5100.0)  # the peak of the successful runs
    assert runs["cpu"]["tokens_per_s"] == round(statistics.median([6.0, 7.0]), 1)
    assert (runs["cpu"]["ttft_s"], runs["cpu"]["load_s"]) == (statistics.median([0.5, 0.7]), 2.5)
    assert (runs["cpu"]["samples"], runs["cpu"]["success_rate"]) == (3, round(2 / 3, 3))
    assert runs["cpu"]["measured_at"] == "2026-11-29T11:00:00Z"  # the latest
    assert runs["gpu"]["memory_mb"] == 4800 and runs["gpu"]["rss_mb"] == 900  # VRAM is what a gpu placement needs
    assert runs["split"]["memory_mb"] == 3000 + 2500  # both pools
    small = layer["models"]["small-chat"][0]
    assert small["kv_cache_type"] == "q8_0" and small["measured_at"] == "2025-11-29T10:00:00Z"
    assert "tokens_per_s" not in small  # not measured: the estimate stays


def test_export_layer_keeps_what_the_rows_do_not_cover_and_refuses_broken_rows():
    previous = measured.export_layer("box-8", [row("small-chat", peak_rss_mib=1500)], None)
    layer = measured.export_layer("box-8", [row("big-chat", peak_rss_mib=5000)], previous)
    assert set(layer["models"]) == {"small-chat", "big-chat"}
    assert layer["models"]["small-chat"] == previous["models"]["small-chat"]
    for broken, words in (({"model": None}, "no model"), ({"placement": "disk"}, "placement"),
                          ({"context": 0}, "context"), ({"ts": None}, "ts")):
        with pytest.raises(ValueError, match=words):
            measured.export_layer("box-8", [row("big-chat") | broken], None)


def test_a_loads_figures_do_not_erase_a_bench_s():
    """`hostfit load` records memory and load time but no tok/s: the committed tok/s stays."""
    previous = measured.export_layer("box-8", [row("big-chat", peak_rss_mib=5000, decode_tps=6.0)], None)
    layer = measured.export_layer("box-8", [row("big-chat", peak_rss_mib=6000, load_s=2.0)], previous)
    run = layer["models"]["big-chat"][0]
    assert (run["memory_mb"], run["tokens_per_s"], run["load_s"]) == (6000, 6.0, 2.0)


@pytest.mark.parametrize("factor, moves", [(1.05, False), (0.95, False), (1.09, False), (1.10, True),
                                           (0.85, True)])
def test_hysteresis_keeps_a_figure_within_ten_percent(factor: float, moves: bool):
    first = [row("big-chat", peak_rss_mib=5000, decode_tps=10.0, ts="2026-11-01T00:00:00Z")]
    previous = measured.export_layer("box-8", first, None)
    again = [row("big-chat", peak_rss_mib=5000 * factor, decode_tps=10.0 * factor, ts="2026-11-29T00:00:00Z")] * 2
    layer = measured.export_layer("box-8", again, previous)
    run = layer["models"]["big-chat"][0]
    if moves:
        assert (run["memory_mb"], run["tokens_per_s"]) == (math.ceil(5000 * factor), round(10.0 * factor, 1))
        assert run["samples"] == 2 and run["measured_at"] == "2026-11-29T00:00:00Z"
    else:  # nothing moved enough: the measurement stays as committed, date and count included
        assert layer == previous


def test_hysteresis_is_per_figure():
    previous = measured.export_layer("box-8", [row("big-chat", peak_rss_mib=5000, decode_tps=10.0)], None)
    layer = measured.export_layer("box-8", [row("big-chat", peak_rss_mib=5200, decode_tps=14.0)], previous)
    run = layer["models"]["big-chat"][0]
    assert (run["memory_mb"], run["tokens_per_s"]) == (5000, 14.0)  # memory moved 4%: kept


# ---------------------------------------------------------------------------------- the compile

def test_measured_heavier_no_longer_fits(base_catalog: Path):
    build(base_catalog)
    before = compiled(base_catalog, "box-8")
    assert before["roles"]["chat"]["model"] == "big-chat"  # the estimate fits it
    usable = before["host"]["usable_mb"]
    path, changed = export(base_catalog, "box-8", [row("big-chat", peak_rss_mib=usable + 300, decode_tps=5.5),
                                                   row("big-chat", peak_rss_mib=usable + 100, decode_tps=5.9)])
    assert changed and path == base_catalog / "sources" / "measured" / "box-8.yaml"
    assert yaml.safe_load(path.read_text())["models"]["big-chat"][0]["memory_mb"] == usable + 300
    build(base_catalog)
    after = compiled(base_catalog, "box-8")
    assert after["roles"]["chat"]["model"] == "small-chat"
    assert "big-chat" not in after["models"]
    trace = {c["model"]: c for c in explained(base_catalog, "box-8")["roles"]["chat"]["candidates"]}
    assert trace["big-chat"]["verdict"] == "rejected"
    assert (trace["big-chat"]["memory"]["method"], trace["big-chat"]["memory_mb"]) == ("measured", usable + 300)
    # another host's figures are its own
    assert compiled(base_catalog, "box-32")["models"]["big-chat"]["memory_method"] == "estimated"
    text = run_cli("-C", str(base_catalog), "explain", "box-8", "chat").stdout
    assert f"measured {usable + 300:,} at 4,096 tokens" in text


def test_measured_faster_meets_speed_min(base_catalog: Path):
    add_layer(base_catalog, "20-fast.yaml", FAST_ROLE)
    build(base_catalog)
    before = compiled(base_catalog, "box-32")
    assert before["roles"]["fast"]["model"] == "small-chat"
    trace = {c["model"]: c for c in explained(base_catalog, "box-32")["roles"]["fast"]["candidates"]}
    assert trace["big-chat"]["verdict"] == "rejected" and trace["big-chat"]["speed"]["tokens_per_s"] < 8
    context = before["roles"]["fast"]["context"]
    export(base_catalog, "box-32", [row("big-chat", "box-32", context=context, decode_tps=t) for t in (11.5, 12.0, 12.5)])
    build(base_catalog)
    after = compiled(base_catalog, "box-32")
    role = after["roles"]["fast"]
    assert (role["model"], role["tokens_per_s"], role["speed_method"]) == ("big-chat", 12.0, "measured")
    assert after["models"]["big-chat"]["memory_method"] == "estimated"  # no memory measured: the estimate stays
    assert "speed_method" not in after["roles"]["summarization"]
    text = run_cli("-C", str(base_catalog), "explain", "box-32", "fast").stdout
    assert "12 tok/s measured (12 at" in text
    table = run_cli("-C", str(base_catalog), "build", "--host", "box-32").stdout
    fast = next(line for line in table.splitlines() if line.startswith("fast "))
    assert " 12 " in fast and "~12" not in fast, fast  # the build's table marks estimates only


def test_measured_speed_is_for_its_runtime_and_placement_only(base_catalog: Path):
    add_layer(base_catalog, "20-fast.yaml", FAST_ROLE)
    export(base_catalog, "box-32", [row("big-chat", "box-32", placement="gpu", gpu_mib=5000, decode_tps=90.0)])
    build(base_catalog)
    role = compiled(base_catalog, "box-32")["roles"]["fast"]
    assert role["model"] == "small-chat" and "speed_method" not in role  # box-32 has no GPU: cpu, estimated


def scaled(model: dict, mb: int, at: int, to: int) -> int:
    """What memory.py's context-dependent terms add from `at` to `to` tokens (flash attention on)."""
    def part(context: int) -> float:
        return memory.kv_mib(model, context)[0] + memory.compute_buffer_mib(model, context)
    return math.ceil(mb + part(to) - part(at))


@pytest.mark.parametrize("at", [2048, 16384])
def test_measured_memory_is_scaled_to_the_role_context_by_memory_py(base_catalog: Path, at: int):
    build(base_catalog)
    model = compiled(base_catalog, "box-32")["models"]["big-chat"]
    context = compiled(base_catalog, "box-32")["roles"]["chat"]["context"]
    export(base_catalog, "box-32", [row("big-chat", "box-32", context=at, peak_rss_mib=5000)])
    build(base_catalog)
    after = compiled(base_catalog, "box-32")
    assert after["roles"]["chat"]["model"] == "big-chat"
    assert after["models"]["big-chat"]["memory_method"] == "measured"
    assert after["roles"]["chat"]["memory_mb"] == scaled(model, 5000, at, context) != 5000


def test_a_kv_bound_is_never_subtracted(base_catalog: Path):
    """Without arch the KV term is an upper bound: a figure measured at a longer context is not lowered."""
    add_layer(base_catalog, "20-loose.yaml", "models:\n  loose-chat: {provider: local, workloads: [chat], "
                                             "params_b: 3, quantization: Q4_K_M, context_window: 32768}\n"
                                             "roles:\n  loose: {workload: chat, prefer: [loose-chat]}\n")
    export(base_catalog, "box-32", [row("loose-chat", "box-32", context=16384, peak_rss_mib=3000)])
    build(base_catalog)
    assert compiled(base_catalog, "box-32")["roles"]["loose"]["memory_mb"] == 3000


def test_a_measurement_may_name_a_model_by_alias(base_catalog: Path):
    export(base_catalog, "box-32", [row("TINY", "box-32", peak_rss_mib=999)])
    build(base_catalog)
    model = compiled(base_catalog, "box-32")["models"]["small-chat"]
    assert (model["memory_method"], model["memory_mb"]) == ("measured", 999)


# ------------------------------------------------------------------------ hysteresis end to end

def test_a_five_percent_change_does_not_churn_models_json(base_catalog: Path):
    first = [row("big-chat", "box-32", peak_rss_mib=5000, decode_tps=6.0)]
    export(base_catalog, "box-32", first)
    build(base_catalog)
    layer, out = tree_bytes(base_catalog / "sources" / "measured"), tree_bytes(base_catalog / "out" / "box-32")
    assert compiled(base_catalog, "box-32")["models"]["big-chat"]["memory_mb"] == 5000
    _, changed = export(base_catalog, "box-32", [row("big-chat", "box-32", peak_rss_mib=5250, decode_tps=5.7,
                                                     ts="2026-11-30T10:00:00Z")])
    assert not changed and tree_bytes(base_catalog / "sources" / "measured") == layer
    assert run_cli("-C", str(base_catalog), "build", "--all", "--check").exit_code == 0
    build(base_catalog)
    assert tree_bytes(base_catalog / "out" / "box-32") == out
    # 15% moves it
    _, changed = export(base_catalog, "box-32", [row("big-chat", "box-32", peak_rss_mib=5750, decode_tps=6.0)])
    assert changed
    assert run_cli("-C", str(base_catalog), "build", "--all", "--check").exit_code == 1
    build(base_catalog)
    assert compiled(base_catalog, "box-32")["models"]["big-chat"]["memory_mb"] == 5750


def test_build_all_check_is_deterministic_with_measured_layers(base_catalog: Path, tmp_path: Path):
    export(base_catalog, "box-8", [row("small-chat", peak_rss_mib=1400, decode_tps=30.0), row("big-chat", peak_rss_mib=7000)])
    export(base_catalog, "box-32", [row("big-chat", "box-32", peak_rss_mib=5000, decode_tps=6.5)])
    build(base_catalog)
    first = tree_bytes(base_catalog / "out")
    assert run_cli("-C", str(base_catalog), "build", "--all", "--check").exit_code == 0
    clone = tmp_path / "clone"
    shutil.copytree(base_catalog / "sources", clone / "sources")
    shutil.copytree(base_catalog / "profiles", clone / "profiles")
    build(clone)
    models = {name: data for name, data in first.items() if name.endswith("models.json")}
    assert {name: data for name, data in tree_bytes(clone / "out").items() if name.endswith("models.json")} == models


# ------------------------------------------------------------------------------------- diff

def test_diff_says_measured_on_the_host(base_catalog: Path):
    add_layer(base_catalog, "20-fast.yaml", FAST_ROLE)
    before = diff.compiled_side(Project(base_catalog))
    usable = before.documents["box-8"]["host"]["usable_mb"]
    export(base_catalog, "box-8", [row("big-chat", peak_rss_mib=usable + 300)])
    export(base_catalog, "box-32", [row("big-chat", "box-32", decode_tps=12.0)])
    after = diff.compiled_side(Project(base_catalog))
    changes = {(d.host, r["role"]): r for d in diff.diff(before, after) for r in d.roles}
    assert changes[("box-8", "chat")]["reason"].startswith("measured on box-8: big-chat needs")
    assert changes[("box-32", "fast")]["reason"].startswith("measured on box-32: big-chat runs at 12 tok/s (was ~")
    # from models.json alone (two out/ folders): the new pick's measured speed
    bare = diff.diff(diff.Side(before.documents), diff.Side(after.documents))
    reasons = {(d.host, r["role"]): r.get("reason") for d in bare for r in d.roles}
    assert reasons[("box-32", "fast")] == "measured on box-32: big-chat runs at 12 tok/s"
    text = diff.render_text(diff.diff(before, after))
    assert "measured on box-8" in text and "measured on box-32" in text


def test_diff_does_not_blame_a_measurement_it_did_not_make(base_catalog: Path):
    export(base_catalog, "box-32", [row("big-chat", "box-32", peak_rss_mib=5000)])
    before = diff.compiled_side(Project(base_catalog))
    (base_catalog / "sources" / "hosts.yaml").write_text(
        (base_catalog / "sources" / "hosts.yaml").read_text().replace("box-8: {ram_gb: 8", "box-8: {ram_gb: 4"))
    after = diff.compiled_side(Project(base_catalog))
    reasons = [r.get("reason") or "" for d in diff.diff(before, after) for r in d.roles]
    assert reasons and not any("measured" in reason for reason in reasons)


# ------------------------------------------------------------------------------- bad input

LAYER = "schema_version: 2\nkind: measured\nhost: box-8\nmodels:\n"
RUN = "  - {runtime: llamacpp, placement: cpu, context: 4096, memory_mb: 100, samples: 1, measured_at: '2026-11-29'}\n"


@pytest.mark.parametrize("name, body, where, code", [
    ("box-32.yaml", LAYER + "  big-chat:\n" + RUN, ":3:1", "E620"),
    ("box-8.yaml", LAYER + "  big-chat:\n" + RUN + RUN, ":7:5", "E621"),
    ("box-8.yaml", LAYER + "  big-chat:\n" + RUN.replace("llamacpp", "llama.cpp"), ":6:6", "E622"),
    ("box-8.yaml", LAYER + "  big-chat:\n" + RUN.replace("cpu", "disk"), ":6:25", "E103"),
    ("box-8.yaml", LAYER + "  big-chat:\n" + RUN.replace("memory_mb: 100", "memory_mb: null"), ":6:"
     , "E100"),
    ("box-8.yaml", "schema_version: 2\nkind: catalog\nmodels: {}\n", ":2:1", "E013"),
])
def test_a_broken_layer_is_reported_at_its_position_and_nothing_is_written(base_catalog: Path, name: str, body: str,
                                                                           where: str, code: str):
    folder = base_catalog / "sources" / "measured"
    folder.mkdir()
    (folder / name).write_text(body)
    for command in (("validate",), ("build", "--all")):
        result = run_cli("-C", str(base_catalog), *command)
        assert result.exit_code == 1, result.output
        assert f"sources/measured/{name}{where}" in result.stderr and f"error[{code}]" in result.stderr, result.stderr
        assert "Traceback" not in result.output
    assert not (base_catalog / "out").exists()


def test_unknown_models_and_hosts_are_warnings(base_catalog: Path):
    folder = base_catalog / "sources" / "measured"
    folder.mkdir()
    (folder / "box-8.yaml").write_text(LAYER + "  gone-chat:\n" + RUN)
    (folder / "nowhere.yaml").write_text(LAYER.replace("box-8", "nowhere") + "  big-chat:\n" + RUN)
    result = run_cli("-C", str(base_catalog), "build", "--all")
    assert result.exit_code == 0, result.output
    assert "sources/measured/box-8.yaml:5:3: warning[W621]" in result.stderr
    assert "sources/measured/nowhere.yaml:3:1: warning[W620]" in result.stderr


def test_export_refuses_a_broken_committed_layer(base_catalog: Path):
    from compiler.errors import InputError

    folder = base_catalog / "sources" / "measured"
    folder.mkdir()
    (folder / "box-8.yaml").write_text(LAYER + "  big-chat:\n" + RUN + RUN)
    with pytest.raises(InputError) as caught:
        export(base_catalog, "box-8", [row("big-chat", peak_rss_mib=5000)])
    assert [d.code for d in caught.value.diagnostics] == ["E621"]


def test_a_variant_is_measured_by_its_id(tmp_path: Path):
    """A measured variant is judged on its figures: the desktop's q5_k_m measured below the role's speed_min
    gives way to q4_k_m. The model declaring the variants names none of them: W621."""
    from test_variants import project

    root = project(tmp_path)
    build(root)
    before = compiled(root, "desktop-32")["roles"]["code"]
    assert before["model"] == "qwen2.5-coder-14b:q5_k_m"
    measured.write(root, measured.export_layer("desktop-32", [
        row("qwen2.5-coder-14b:q5_k_m", "desktop-32", context=before["context"], decode_tps=1.5),
        row("qwen2.5-coder-14b", "desktop-32", peak_rss_mib=100)], None))
    result = run_cli("-C", str(root), "build", "--all")
    assert result.exit_code == 0, result.output
    assert "warning[W621]: measurements of 'qwen2.5-coder-14b'" in result.stderr
    after = compiled(root, "desktop-32")["roles"]["code"]
    assert after["model"] == "qwen2.5-coder-14b:q4_k_m" and "speed_method" not in after
    rejected = {c["model"]: c for c in explained(root, "desktop-32")["roles"]["code"]["candidates"]}
    assert rejected["qwen2.5-coder-14b:q5_k_m"]["reason"].startswith("measured 1.5 tok/s on cpu < required 2")


def test_which_measurement_sizes_and_times_a_candidate():
    def run(runtime="llamacpp", placement="cpu", context=4096, at="2026-11-01", mb=1000, tps=10.0):
        return measured.Run(runtime, placement, context, mb, tps, None, 1, at)

    ollama, cpu_8k, gpu_2k, cpu_4k_old, cpu_4k_new = (run("ollama"), run(context=8192), run(placement="gpu",
                                                      context=2048), run(), run(at="2026-11-29"))
    runs = (ollama, cpu_8k, gpu_2k, cpu_4k_old, cpu_4k_new)
    # the host's first runtime that runs it, then the first placement a budget tries
    assert measured.for_memory(runs, ("llamacpp", "ollama"), 4096) is gpu_2k
    assert measured.for_memory(runs, ("ollama", "llamacpp"), 4096) is ollama
    # without gpu: at or above the role's context, the nearest, the latest of equals
    cpus = (ollama, cpu_8k, cpu_4k_old, cpu_4k_new)
    assert measured.for_memory(cpus, ("llamacpp",), 4096) is cpu_4k_new
    assert measured.for_memory(cpus, ("llamacpp",), 6000) is cpu_8k
    assert measured.for_memory(cpus, ("llamacpp",), 16384) is cpu_8k  # none above: the largest below
    assert measured.for_memory((run(mb=None),), ("llamacpp",), 4096) is None
    # speed: that runtime and placement only
    assert measured.for_speed(runs, "llamacpp", "gpu", 4096) is gpu_2k
    assert measured.for_speed(runs, "llamacpp", "split", 4096) is None
    assert measured.for_speed(runs, "llamacpp", "cpu", 4096) is cpu_4k_new


def test_export_layer_writes_only_figures_the_schema_holds(base_catalog: Path):
    """Zero, negative, NaN and infinite figures were not measured; names merge case-insensitively."""
    rows = [row("Big-Chat", peak_rss_mib=0, decode_tps=float("nan"), ttft_s=-1.0, load_s=float("inf")),
            row("big-chat", peak_rss_mib=None, decode_tps=0.0, kv_cache_type="f16")]
    layer = measured.export_layer("box-8", rows, None)
    assert layer["models"] == {"big-chat": [{"runtime": "llamacpp", "placement": "cpu", "context": 4096,
                                             "rss_mb": 0, "success_rate": 1.0, "samples": 2,
                                             "measured_at": "2026-11-29T10:00:00Z"}]}
    path, changed = measured.write(base_catalog, layer)
    assert changed and yaml.safe_load(path.read_text()) == layer


def test_models_lists_what_the_build_picks_with_the_hosts_measurements(base_catalog: Path):
    """`hostfit models` selects with the host's measured layer, so its WHY names the build's picks."""
    build(base_catalog)
    usable = compiled(base_catalog, "box-8")["host"]["usable_mb"]
    export(base_catalog, "box-8", [row("big-chat", peak_rss_mib=usable + 300, decode_tps=5.5)])
    build(base_catalog)
    assert compiled(base_catalog, "box-8")["roles"]["chat"]["model"] == "small-chat"
    listed = run_cli("-C", str(base_catalog), "models", "--host", "box-8", "--json")
    assert listed.exit_code == 0, listed.output
    why = {r["id"]: r["why"] for r in json.loads(listed.stdout)}
    assert "chat" in why["small-chat"] and "picked for" in why["small-chat"], why
    assert "picked for chat" not in why["big-chat"], why
