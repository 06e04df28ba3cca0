"""The loop closed: `hostfit load` and `hostfit bench` record into the usage store, `hostfit measured export`
writes the host's measured layer from it (idempotent, 10% hysteresis), and the next build uses the measured
figures. The end-to-end test loads a real tiny GGUF with llama-cpp-python into a temporary store."""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml

from conftest import run_cli, tree_bytes
from test_loaders import catalog_with, llama_available, served_tiny  # noqa: F401 (a fixture)

from compiler import measured, usage

LAYER = Path("sources") / "measured"


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    """A usage store of the test's own (HOSTFIT_STATE)."""
    folder = tmp_path / "state"
    monkeypatch.setenv("HOSTFIT_STATE", str(folder))
    return folder / "usage.sqlite3"


def compiled(catalog: Path, host: str) -> dict:
    return json.loads((catalog / "out" / host / "models.json").read_text())


def export(catalog: Path, *args: str):
    return run_cli("-C", str(catalog), "measured", "export", *args)


def record(path: Path, host: str, model: str, ts: float, **figures) -> None:
    store = usage.Store(path)
    assert store.record_measurement(host, model, runtime="llamacpp", placement="cpu", context=4096, ts=ts,
                                    source="bench", **figures)
    store.close()


# ------------------------------------------------------------------------------- end to end

def test_a_real_load_and_bench_become_the_measured_figures_of_the_next_build(base_catalog, served_tiny, state):
    if not llama_available():
        pytest.skip("llama-cpp-python is not installed (pip install 'hostfit[llama]')")
    server, _ = served_tiny
    catalog = catalog_with(base_catalog, server, ["tiny-llama"])
    assert compiled(catalog, "box-8")["models"]["tiny-llama"]["memory_method"] != "measured"

    loaded = run_cli("-C", str(catalog), "load", "chat", "--host", "box-8")
    assert loaded.exit_code == 0, loaded.output
    benched = run_cli("-C", str(catalog), "bench", "chat", "--host", "box-8", "--tokens", "24")
    assert benched.exit_code == 0, benched.output
    assert "tiny-llama on box-8 (llamacpp" in benched.stdout and "decode tok/s (23 tokens)" in benched.stdout
    assert "llama.cpp buffers: " in benched.stdout

    rows = usage.Store(state).measurements(host="box-8")
    assert [(r["model"], r["source"], r["ok"]) for r in rows] == [("tiny-llama", "load", True),
                                                                 ("tiny-llama", "bench", True)]
    load, bench = rows
    assert load["decode_tps"] is None, "a load's few tokens are no speed measurement"
    assert bench["decode_tps"] > 0 and bench["load_s"] > 0 and bench["ttft_s"] > 0
    # no GPU in this llama-cpp-python build: llama.cpp's buffers are all in RAM, and no GPU figure is made up
    assert {r["placement"] for r in rows} == {"cpu"} and bench["gpu_mib"] is None
    # the context llama.cpp allocated: the compiled one, or above it (llama.cpp pads it to whole blocks)
    [context] = {r["context"] for r in rows}
    assert context >= compiled(catalog, "box-8")["roles"]["chat"]["context"]
    assert f"{context:,} tokens of context" in benched.stdout

    result = export(catalog, "--host", "box-8")
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((catalog / LAYER / "box-8.yaml").read_text())
    assert written == measured.export_layer("box-8", rows, None), "the export is the store's rows, as they are"
    [run] = written["models"]["tiny-llama"]
    assert run["memory_mb"] == math.ceil(max(r["peak_rss_mib"] for r in rows))
    assert run["tokens_per_s"] == round(bench["decode_tps"], 1) and run["samples"] == 2
    assert result.stdout.startswith("+ tiny-llama on llamacpp, cpu, ")

    rebuilt = run_cli("-C", str(catalog), "build", "--host", "box-8")
    assert rebuilt.exit_code == 0, rebuilt.output
    model = compiled(catalog, "box-8")["models"]["tiny-llama"]
    assert model["memory_method"] == "measured"
    # measured at the padded context, scaled by memory.py to the role's: this model's KV cache is a few KiB
    assert abs(model["memory_mb"] - run["memory_mb"]) <= 1

    again = export(catalog, "--host", "box-8")
    assert again.exit_code == 0 and "unchanged" in again.stderr


def test_bench_names_a_model_or_refuses_what_the_host_does_not_use(base_catalog, served_tiny, state):
    if not llama_available():
        pytest.skip("llama-cpp-python is not installed (pip install 'hostfit[llama]')")
    server, _ = served_tiny
    catalog = catalog_with(base_catalog, server, ["broken-model", "tiny-llama"])
    # a fallback of chat, by its id in another case: benched alone, with the chain's settings
    result = run_cli("-C", str(catalog), "bench", "TINY-LLAMA", "--host", "box-8", "--tokens", "8",
                     "--context", "512")
    assert result.exit_code == 0, result.output
    assert "broken-model" not in result.output, "a named model is benched alone, not its chain"
    [row] = usage.Store(state).measurements(host="box-8")
    assert (row["model"], row["context"], row["source"]) == ("tiny-llama", 512, "bench")
    refused = run_cli("-C", str(catalog), "bench", "no-such-thing", "--host", "box-8")
    assert refused.exit_code == 2 and "neither a role of box-8 nor a model" in refused.stderr


# ---------------------------------------------------------------------------- the export command

def test_export_is_idempotent_and_keeps_still_under_ten_percent(base_catalog: Path, state: Path):
    record(state, "box-32", "big-chat", 1_790_000_000.0, peak_rss_mib=5000.0, decode_tps=6.0)
    first = export(base_catalog, "--host", "box-32")
    assert first.exit_code == 0, first.output
    path = base_catalog / LAYER / "box-32.yaml"
    assert yaml.safe_load(path.read_text())["models"]["big-chat"][0]["memory_mb"] == 5000
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    layer, out = tree_bytes(base_catalog / LAYER), tree_bytes(base_catalog / "out")
    stamp = path.stat().st_mtime_ns

    again = export(base_catalog, "--host", "box-32")  # nothing new measured: nothing written
    assert again.exit_code == 0 and "unchanged" in again.stderr and again.stdout.startswith("= big-chat")
    assert path.stat().st_mtime_ns == stamp and tree_bytes(base_catalog / LAYER) == layer

    record(state, "box-32", "big-chat", 1_790_100_000.0, peak_rss_mib=5250.0, decode_tps=5.7)  # +5%, -5%
    still = export(base_catalog, "--host", "box-32")
    assert still.exit_code == 0 and "unchanged" in still.stderr
    assert tree_bytes(base_catalog / LAYER) == layer
    assert run_cli("-C", str(base_catalog), "build", "--all", "--check").exit_code == 0
    assert tree_bytes(base_catalog / "out") == out

    record(state, "box-32", "big-chat", 1_790_200_000.0, peak_rss_mib=5750.0, decode_tps=6.0)  # +15%
    dry = export(base_catalog, "--host", "box-32", "--dry-run")
    assert dry.exit_code == 0 and "would be written" in dry.stderr
    assert "~ big-chat on llamacpp, cpu, 4,096 tokens: memory_mb 5000 -> 5750" in dry.stdout
    assert tree_bytes(base_catalog / LAYER) == layer, "a dry run writes nothing"
    moved = export(base_catalog, "--host", "box-32")
    assert moved.exit_code == 0 and "written" in moved.stderr
    run = yaml.safe_load(path.read_text())["models"]["big-chat"][0]
    assert (run["memory_mb"], run["samples"]) == (5750, 3)
    assert run["tokens_per_s"] == 6.0, "the median moved under 10%: the committed speed stays"
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    assert compiled(base_catalog, "box-32")["models"]["big-chat"]["memory_mb"] == 5750


def test_export_defaults_to_this_machine_and_says_when_there_is_nothing(base_catalog: Path, state: Path):
    nothing = export(base_catalog)  # HOST=test-machine (conftest), which hosts.yaml does not declare
    assert nothing.exit_code == 0 and "W640 no measurements of host 'test-machine'" in nothing.stderr
    record(state, "box-8", "big-chat", 1_790_000_000.0, peak_rss_mib=3000.0)
    hint = export(base_catalog)
    assert "(it holds box-8; --host H)" in hint.stderr
    assert tree_bytes(base_catalog / LAYER) == {}
    record(state, "test-machine", "small-chat", 1_790_000_000.0, peak_rss_mib=1200.0)
    store = usage.Store(state)  # a fallback's load recorded without a placement: not exportable
    store.record_measurement("test-machine", "small-chat", runtime="llamacpp", context=4096, peak_rss_mib=1.0)
    # an application's own vocabulary: no placement the layer knows, no runtime the registry knows
    store.record_measurement("test-machine", "small-chat", runtime="llamacpp", placement="metal", context=4096)
    store.record_measurement("test-machine", "small-chat", runtime="llama.cpp", placement="cpu", context=4096)
    store.close()
    mine = export(base_catalog)
    assert mine.exit_code == 0, mine.output
    assert "W641 3 measurement(s) of test-machine left out" in mine.stderr
    [run] = yaml.safe_load((base_catalog / LAYER / "test-machine.yaml").read_text())["models"]["small-chat"]
    assert (run["memory_mb"], run["samples"]) == (1200, 1)
    assert export(base_catalog, "--host", "../etc").exit_code == 2


def test_the_export_reads_the_store_s_own_rows():
    """One vocabulary: every key export_layer reads is a column of the store."""
    row = dict.fromkeys(usage.MEASUREMENT_FIELDS) | {
        "host": "h", "model": "m", "runtime": "llamacpp", "placement": "split", "context": 2048, "ok": True,
        "ts": 1_790_000_000.0, "peak_rss_mib": 1000.4, "gpu_mib": 3000.0, "decode_tps": 33.33, "ttft_s": 0.25,
        "load_s": 1.5, "kv_cache_type": "q8_0", "source": "bench"}
    [run] = measured.export_layer("h", [row], None)["models"]["m"]
    assert run == {"runtime": "llamacpp", "placement": "split", "context": 2048, "kv_cache_type": "q8_0",
                   "memory_mb": math.ceil(1000.4 + 3000.0), "rss_mb": 1001, "gpu_mb": 3000,
                   "tokens_per_s": round(statistics.median([33.33]), 1), "ttft_s": 0.25, "load_s": 1.5,
                   "success_rate": 1.0, "samples": 1,
                   "measured_at": dt.datetime.fromtimestamp(row["ts"], dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


# ------------------------------------------------------------------ GPU figures, without a GPU

# llama.cpp's log lines as it prints them loading a model on one CUDA GPU with 20 of 28 layers offloaded
CUDA_LOG = """load_tensors: offloading 20 repeating layers to GPU
load_tensors:        CUDA0 model buffer size =  3120.50 MiB
load_tensors:   CPU_Mapped model buffer size =  1283.00 MiB
llama_context:  CUDA_Host  output buffer size =     0.58 MiB
llama_kv_cache:      CUDA0 KV buffer size =   320.00 MiB
llama_kv_cache:        CPU KV buffer size =   128.00 MiB
llama_context:      CUDA0 compute buffer size =   304.00 MiB
llama_context:  CUDA_Host compute buffer size =    16.01 MiB
"""


def test_llama_cpp_buffers_are_read_per_device_and_only_a_gpu_s_count_as_vram():
    from compiler.executor.loaders import buffers, placement_and_gpu
    from compiler.memory import GPU_RUNTIME_OVERHEAD_MB

    found = buffers(CUDA_LOG)
    assert found == {"CUDA0": round(3120.50 + 320.00 + 304.00, 2), "CPU_Mapped": 1283.00, "CPU": 128.00,
                     "CUDA_Host": round(0.58 + 16.01, 2)}
    split = placement_and_gpu(found, gpu_layers=20, layers=28, smi_mib=None)
    assert split == {"placement": "split", "gpu_mib": round(found["CUDA0"] + GPU_RUNTIME_OVERHEAD_MB, 1),
                     "gpu_source": "llama.cpp buffers"}
    assert placement_and_gpu(found, gpu_layers=-1, layers=28, smi_mib=4410.0) == {
        "placement": "gpu", "gpu_mib": 4410.0, "gpu_source": "nvidia-smi"}
    # asked for the GPU, but llama.cpp kept everything in RAM (a build without GPU support): cpu, no guess
    ram_only = buffers("load_tensors:   CPU_Mapped model buffer size =  1283.00 MiB\n")
    assert placement_and_gpu(ram_only, gpu_layers=-1, layers=28, smi_mib=None) == {"placement": "cpu"}


def test_a_load_with_no_layer_on_the_gpu_is_cpu_beside_a_gpu_builds_compute_buffer():
    """A GPU build of llama.cpp keeps a compute buffer on the GPU for a load with no layer there (it copies
    weights over for large batches): the compile's cpu placement, measured as such (its RAM sizes it)."""
    from compiler.executor.loaders import buffers, placement_and_gpu

    found = buffers("load_tensors:   CPU_Mapped model buffer size =  1283.00 MiB\n"
                    "llama_kv_cache:        CPU KV buffer size =   224.00 MiB\n"
                    "llama_context:      CUDA0 compute buffer size =   298.50 MiB\n")
    figures = placement_and_gpu(found, gpu_layers=0, layers=28, smi_mib=350.0)
    assert figures["placement"] == "cpu", "no layer on the GPU"
    assert figures["gpu_mib"] == 350.0, "what the GPU held is still reported"


def test_nvidia_smi_s_figure_is_this_process_s_and_absent_without_it(tmp_path, monkeypatch):
    from compiler.executor.loaders import nvidia_smi_mib

    monkeypatch.setenv("PATH", str(tmp_path))
    assert nvidia_smi_mib(1234) is None, "no nvidia-smi: no figure"
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '999, 100\\n1234, 4410\\n1234, 512\\n12345, 7\\n'\n")
    fake.chmod(0o755)
    assert nvidia_smi_mib(1234) == 4410 + 512, "both GPUs of the process, no other process"
    assert nvidia_smi_mib(42) is None


def test_a_fallbacks_load_records_no_peak_memory_an_earlier_attempt_may_have_set():
    """ru_maxrss is the process's peak: after a model of the chain failed to load, it may be that model's."""
    from compiler import usage
    from compiler.executor.loaders import Loaded

    document = {"host": {"name": "box"}, "roles": {"chat": {"model": "big", "placement": "cpu", "context": 512}}}
    alone = usage.record_load(document, "chat", Loaded("big", "llamacpp", 0.1, 0.2, "hi"))
    fallback = usage.record_load(document, "chat", Loaded("small", "llamacpp", 0.1, 0.2, "hi",
                                                          attempts=[("big", "out of memory while loading")]))
    assert alone["peak_rss_mib"] is not None and fallback["peak_rss_mib"] is None
    assert [row["peak_rss_mib"] is None for row in usage.measurements(host="box")] == [False, True]
